"""Reads epochs out of the store's per-recording ``.npy`` arrays with ``os.preadv``, a bounded set of open files.

Why not a memory map per file: a map holds a file handle for as long as it lives and its pages
stay mapped in the reader, so a DataLoader worker touring 20,000 recordings runs out of handles
(``EMFILE`` at a 1,024 limit) and piles up resident pages; a cold page fault also reads the
kernel's whole readahead window (megabytes) around a 46 KB epoch. ``preadv`` copies exactly the
bytes of the epochs asked for into the batch buffer, needs no map, and is safe on a descriptor
shared with forked workers (it never moves the file offset). Descriptors are kept in a small LRU
(``max_open_files``, default 16), opened with ``POSIX_FADV_RANDOM`` so the kernel does not read
ahead. ``benchmarks/bench_store_scale.py`` measures this against maps (cached, or an LRU with
``MADV_RANDOM``).
"""

from __future__ import annotations

import io
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from osf import config

EPOCH_SHAPE = (config.NUM_CHANNELS, config.EPOCH_SAMPLES)
MAX_OPEN_FILES = 16


class ArrayReader:
    """Batched reads of ``[n, 12, 1920]`` float16 arrays by (file, row), at most ``max_open_files`` handles."""

    def __init__(self, root: Path, paths: np.ndarray, lengths: np.ndarray, dtype: np.dtype,
                 max_open_files: int = MAX_OPEN_FILES):
        """``paths`` (relative to ``root``) and ``lengths`` (epochs) per file id; ``dtype`` as stored."""
        if max_open_files < 1:
            raise ValueError(f"max_open_files must be >= 1, got {max_open_files}")
        self.root = Path(root)
        self.paths = paths
        self.lengths = lengths
        self.dtype = np.dtype(dtype)
        self.max_open_files = int(max_open_files)
        self.epoch_bytes = int(np.prod(EPOCH_SHAPE)) * self.dtype.itemsize
        self._fds: OrderedDict[int, tuple[int, int]] = OrderedDict()  # file id -> (fd, data offset)
        self._offsets: dict[int, int] = {}  # file id -> data offset, once its header was checked
        self._stage: np.ndarray | None = None
        self._pid = os.getpid()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_fds"] = OrderedDict()  # handles are per process
        state["_stage"] = None
        return state

    def staging(self, n: int) -> np.ndarray:
        """A reused ``[n, 12, 1920]`` buffer of the stored dtype: its pages are faulted in once, not per batch."""
        if self._stage is None or self._stage.shape[0] < n:
            self._stage = np.empty((n, *EPOCH_SHAPE), dtype=self.dtype)
        return self._stage[:n]

    def close(self) -> None:
        """Close every open handle."""
        while self._fds:
            fd, _ = self._fds.popitem(last=False)[1]
            if self._pid == os.getpid():
                os.close(fd)
        self._pid = os.getpid()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    @property
    def open_files(self) -> int:
        """Handles held now (never more than ``max_open_files``)."""
        return len(self._fds)

    def _handle(self, file_id: int) -> tuple[int, int]:
        if self._pid != os.getpid():  # forked: the inherited handles are the parent's to close
            self._fds.clear()
            self._pid = os.getpid()
        hit = self._fds.get(file_id)
        if hit is not None:
            self._fds.move_to_end(file_id)
            return hit
        while len(self._fds) >= self.max_open_files:
            os.close(self._fds.popitem(last=False)[1][0])
        path = self.root / self.paths[file_id]
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            raise ValueError(f"{path}: cannot open the signal array ({exc})") from exc
        try:
            offset = self._offsets.get(file_id)
            if offset is None:
                offset = self._offsets[file_id] = self._locate(fd, path, int(self.lengths[file_id]))
            if hasattr(os, "posix_fadvise"):
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        except BaseException:
            os.close(fd)
            raise
        self._fds[file_id] = (fd, offset)
        return fd, offset

    def _locate(self, fd: int, path: Path, n_epochs: int) -> int:
        """Where the data starts. A file of exactly the size ``StoreWriter`` writes for this index entry
        (its .npy 1.0 header + the epochs) is taken as written, without reading its header: a cold open
        then costs no I/O beyond the epochs read. Any other size has its header parsed and checked."""
        expected = _header_bytes(self.dtype, n_epochs)
        if os.fstat(fd).st_size == expected + n_epochs * self.epoch_bytes:
            return expected
        return self._check_header(fd, path, n_epochs)

    def _check_header(self, fd: int, path: Path, n_epochs: int) -> int:
        """Parse the .npy header; returns where the data starts, refuses a dtype/shape unlike the index's."""
        head = io.BytesIO(os.pread(fd, 65536, 0))
        try:
            version = np.lib.format.read_magic(head)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(head)
        except (ValueError, OSError) as exc:
            raise ValueError(f"{path}: cannot open the signal array ({exc})") from exc
        expected = (n_epochs, *EPOCH_SHAPE)
        if dtype != self.dtype or tuple(shape) != expected or fortran:
            raise ValueError(
                f"{path}: expected {self.dtype.name} {expected} as in the index, found {dtype} {tuple(shape)}"
            )
        size = os.fstat(fd).st_size
        offset = head.tell()
        if size < offset + n_epochs * self.epoch_bytes:
            raise ValueError(f"{path}: truncated: {size} bytes, the index needs {offset + n_epochs * self.epoch_bytes}")
        return offset

    def read_sorted(self, file_ids: np.ndarray, file_rows: np.ndarray, out: np.ndarray,
                    dst: np.ndarray | None = None) -> np.ndarray:
        """Read rows sorted by (file, row) into ``out[dst]`` (stored dtype ``[n, 12, 1920]``; ``dst`` defaults
        to the sorted order): one ``preadv`` per run of consecutive rows, scattering straight to the
        destination rows (no second pass to put them in order)."""
        n = file_ids.size
        if n == 0:
            return out
        dst = np.arange(n) if dst is None else dst
        breaks = np.flatnonzero((np.diff(file_ids) != 0) | (np.diff(file_rows) != 1)) + 1
        flat = out.reshape(out.shape[0], -1).view(np.uint8)
        for a, b in zip(np.r_[0, breaks].tolist(), np.r_[breaks, n].tolist()):
            fid = int(file_ids[a])
            fd, offset = self._handle(fid)
            for lo in range(a, b, _IOV_MAX):
                hi = min(b, lo + _IOV_MAX)
                targets = dst[lo:hi]
                if hi - lo == 1 or (targets[-1] - targets[0] == hi - lo - 1 and (np.diff(targets) == 1).all()):
                    buffers = [memoryview(flat[targets[0] : targets[-1] + 1]).cast("B")]
                else:
                    buffers = [memoryview(flat[t]) for t in targets.tolist()]
                want = (hi - lo) * self.epoch_bytes
                got = os.preadv(fd, buffers, offset + int(file_rows[lo]) * self.epoch_bytes)
                if got != want:
                    raise ValueError(f"{self.root / self.paths[fid]}: short read ({got} of {want} bytes): truncated?")
        return out


_IOV_MAX = 1024  # buffers per preadv (POSIX IOV_MAX on Linux)


def _header_bytes(dtype: np.dtype, n_epochs: int) -> int:
    """Length of the .npy 1.0 header ``StoreWriter`` writes for ``[n_epochs, 12, 1920]`` of ``dtype``."""
    buf = io.BytesIO()
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (n_epochs, *EPOCH_SHAPE)}
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.tell()


def read_rows(reader: ArrayReader, file_ids: np.ndarray, file_rows: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Read rows in any order into float32 ``out``: read in (file, row) order, each row landing in its place."""
    order = np.lexsort((file_rows, file_ids))
    stage = reader.staging(file_ids.size)
    reader.read_sorted(file_ids[order], file_rows[order], stage, dst=order)
    # One contiguous cast to float32; torch's vectorised half->float conversion is ~7x numpy's here.
    torch.from_numpy(out).copy_(torch.from_numpy(stage))
    return out

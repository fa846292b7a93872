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
        self._pid = os.getpid()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_fds"] = OrderedDict()  # handles are per process
        return state

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
            offset = self._check_header(fd, path, int(self.lengths[file_id]))
            if hasattr(os, "posix_fadvise"):
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        except BaseException:
            os.close(fd)
            raise
        self._fds[file_id] = (fd, offset)
        return fd, offset

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

    def read_sorted(self, file_ids: np.ndarray, file_rows: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Read rows sorted by (file, row) into ``out`` (stored dtype, ``[n, 12, 1920]``); one preadv per run of rows."""
        n = file_ids.size
        if n == 0:
            return out
        breaks = np.flatnonzero((np.diff(file_ids) != 0) | (np.diff(file_rows) != 1)) + 1
        starts, stops = np.r_[0, breaks], np.r_[breaks, n]
        flat = out.reshape(n, -1).view(np.uint8)
        for a, b in zip(starts.tolist(), stops.tolist()):
            fid = int(file_ids[a])
            fd, offset = self._handle(fid)
            pos = offset + int(file_rows[a]) * self.epoch_bytes
            want = (b - a) * self.epoch_bytes
            got = os.preadv(fd, [memoryview(flat[a:b]).cast("B")], pos)
            if got != want:
                raise ValueError(f"{self.root / self.paths[fid]}: short read ({got} of {want} bytes): truncated?")
        return out


def read_rows(reader: ArrayReader, file_ids: np.ndarray, file_rows: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Read rows in any order into float32 ``out``: sorted by (file, row) for the reads, written back in order."""
    order = np.lexsort((file_rows, file_ids))
    stage = np.empty((file_ids.size, *EPOCH_SHAPE), dtype=reader.dtype)
    reader.read_sorted(file_ids[order], file_rows[order], stage)
    out[order] = stage
    return out

"""The epoch store: per-recording float16 arrays, one parquet index, one manifest.

Layout of a store folder::

    signals/<dataset>/<recording_id>.npy      float16 [n_epochs, 12, 1920]
    signals/<dataset>/<recording_id>.parquet  that recording's index rows (+ provenance in the
                                              parquet metadata); its presence marks the recording done
    failures.jsonl                            files that could not be ingested, one JSON line each
    index/recordings.parquet, index/*.npy     the index as a recordings table + memory-mapped per-epoch
                                              columns (`store_index`), rebuilt by `StoreWriter.finalize`
    index.parquet                             all rows, one per epoch (portable), rebuilt by `finalize`
    manifest.json                             contract, splits, provenance summary, rebuilt by `finalize`

A recording is written array first, sidecar second, each to a temp name then `os.replace`d, so a
killed run leaves either a finished recording or an orphan array that the next run overwrites.
Every file gets the mode `open()` would give it (0o666 minus the umask), arrays included.

Concurrent writers (`store_lock`): a run that may delete or clean what others write (`--overwrite`,
`--finalize`) holds an exclusive lock on `.osf-store.lock`; runs that write recordings (an unsharded
ingestion, e.g. one per cohort at once, and shards) share it, and rebuild the index one at a time
under `index_lock` (`.osf-index.lock`, held only while the index and manifest are written); shards (`--shard K/N`, which write only
their own recordings and a marker `shards/<dataset>/<K>-of-<N>.json`) share it. A writer that cannot
get its lock is refused at once with a message naming the holders (pid, host, command). Holders of
the exclusive lock remove the temporary files and orphan arrays that killed runs left behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from osf import config
from osf.datasets.manifest import (
    SIGNAL_DTYPE,
    STORE_FORMAT_VERSION,
    FailureRecord,
    RecordingMeta,
    ShardMarker,
    StoreManifest,
    utc_now,
)
from osf.datasets.array_reader import MAX_OPEN_FILES, ArrayReader, read_rows
from osf.datasets.recording import LABEL_FIELDS, QUALITY_FIELDS, RecordingEpochs, pack_bits, unpack_bits
from osf.datasets.splits import resolve_cohort_groups, split_for_rows
from osf.datasets.store_index import (
    INDEX_DIR,
    RECORDING_KEYS,
    RECORDINGS_FILE,
    ROW_COLUMNS,
    UPGRADE_COMMAND,
    StoreIndex,
    read_recordings,
    recordings_from_manifest,
    write_index,
    write_index_parquet,
)
from osf.utils.atomic import atomic_open, atomic_path, atomic_write_bytes

try:  # POSIX; elsewhere stores are not locked (documented in store_lock)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)
_SIDECAR_META_KEY = b"osf_recording"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=@-]*$")

INDEX_COLUMNS: tuple[str, ...] = (
    "dataset",
    "recording_id",
    "subject_id",
    "visit",
    "epoch_index",
    *LABEL_FIELDS,
    "channel_mask",
    *QUALITY_FIELDS,
    "split",
    "cohort_group",
    "path",
    "row",
)


def pack_channel_mask(mask: np.ndarray) -> np.ndarray:
    """Bool `[n, 12]` -> uint16 `[n]` (bit i = `config.CHANNELS[i]` present)."""
    return pack_bits(mask)


def unpack_channel_mask(bits: np.ndarray) -> np.ndarray:
    """uint16 `[n]` -> bool `[n, 12]`, inverse of `pack_channel_mask`."""
    return unpack_bits(bits, config.NUM_CHANNELS)


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer, np.floating, np.bool_)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (Path, os.PathLike)):
        return os.fspath(obj)
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    return str(obj)


LOCK_FILE = ".osf-store.lock"
HOLDERS_DIR = ".osf-lock-holders"
SHARDS_DIR = "shards"
INDEX_LOCK_FILE = ".osf-index.lock"
INDEX_LOCK_WAIT_S = 600.0  # how long a finishing run waits for another one's index update
_LOCK_ENTRIES = frozenset({LOCK_FILE, HOLDERS_DIR, INDEX_LOCK_FILE})


class StoreLockedError(ValueError):
    """Another run holds the store's lock; the message names it (pid, host, what it runs, since when)."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class LockHolder:
    """A run holding the store's lock: the record it leaves in ``.osf-lock-holders/`` (JSON)."""

    pid: int
    host: str
    mode: str  # "exclusive" or "shared"
    what: str  # the command line, shown to runs that are refused
    since: str = field(default_factory=utc_now)

    @classmethod
    def this_process(cls, shared: bool, what: str = "") -> LockHolder:
        """The record of the calling process."""
        return cls(os.getpid(), socket.gethostname(), "shared" if shared else "exclusive", what or " ".join(sys.argv))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LockHolder:
        """Parse a record (fields it lacks read as None)."""
        return cls(data.get("pid"), data.get("host"), data.get("mode"), data.get("what"), data.get("since"))

    def to_dict(self) -> dict[str, Any]:
        """The record's JSON object."""
        return asdict(self)

    def is_dead(self) -> bool:
        """A holder on this host whose process no longer runs (killed)."""
        return self.host == socket.gethostname() and not _pid_alive(int(self.pid if self.pid is not None else -1))

    def describe(self) -> str:
        """One phrase for a refusal message."""
        return f"pid {self.pid} on {self.host} ({self.mode}: {self.what}, since {self.since})"


def lock_holders(root: str | os.PathLike) -> list[LockHolder]:
    """Who holds the store's lock: one record per live holder (pid, host, mode, what, since).

    Records of processes on this host that no longer run (killed holders) are removed.
    """
    folder = Path(root) / HOLDERS_DIR
    out = []
    for f in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            holder = LockHolder.from_dict(json.loads(f.read_text()))
        except (OSError, json.JSONDecodeError, AttributeError):
            continue
        if holder.is_dead():
            f.unlink(missing_ok=True)
            continue
        out.append(holder)
    return out


def _describe_holders(root: Path) -> str:
    holders = lock_holders(root)
    if not holders:
        return "another process (it left no record)"
    return "; ".join(h.describe() for h in holders)


def _write_text(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)  # the umask applies, as for open()
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


@contextlib.contextmanager
def store_lock(root: str | os.PathLike, shared: bool = False, what: str = ""):
    """Hold the store's lock for the block: exclusive (writes the index) or ``shared`` (a shard).

    Never waits: raises :class:`StoreLockedError` naming the holders when the lock is taken. Uses
    ``fcntl.flock``, which the kernel releases when a process dies, so a killed run never leaves
    the store locked (on network filesystems it needs working flock support, as NFSv4 and Lustre
    with ``flock`` mounts have). ``what`` (e.g. the command line) is shown to runs that are refused.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if fcntl is None:  # pragma: no cover
        yield
        return
    fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreLockedError(
            f"{root}: cannot write the store: it is in use by {_describe_holders(root)}; wait until that run ends "
            "(a killed run releases it at once) or choose another --output_dir"
        ) from None
    (root / HOLDERS_DIR).mkdir(exist_ok=True)
    record = root / HOLDERS_DIR / f"{socket.gethostname()}-{os.getpid()}-{time.monotonic_ns()}.json"
    _write_text(record, json.dumps(LockHolder.this_process(shared, what).to_dict()))
    try:
        yield
    finally:
        record.unlink(missing_ok=True)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@contextlib.contextmanager
def index_lock(root: str | os.PathLike, wait_s: float = INDEX_LOCK_WAIT_S):
    """Hold the store's index lock while the index and manifest are rebuilt (``StoreWriter.finalize``).

    Recordings are separate files, so runs writing different recordings share the store lock; only
    rebuilding the index must be done by one at a time. Waits (polling) up to ``wait_s`` seconds for
    another run's update, then raises :class:`StoreLockedError`.
    """
    root = Path(root)
    if fcntl is None:  # pragma: no cover
        yield
        return
    fd = os.open(root / INDEX_LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    deadline = time.monotonic() + wait_s
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise StoreLockedError(
                        f"{root}: another run has been rebuilding the index for over {wait_s:g} s; run again later "
                        "(finished recordings are kept and skipped)"
                    ) from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def shard_of(dataset: str, recording_id: str, n_shards: int) -> int:
    """The shard (0..n_shards-1) a recording belongs to: a hash of its dataset and id, stable across runs and machines."""
    digest = hashlib.sha256(f"{dataset}/{recording_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % n_shards


def _check_name(kind: str, value: str) -> str:
    value = str(value)
    if not _SAFE_NAME.match(value):
        raise ValueError(
            f"{kind} {value!r} cannot be used as a file name in the store: use letters, digits and ._+=@- "
            "(not starting with a dot or dash)"
        )
    return value


class StoreWriter:
    """Writes recordings into a store folder; resumable; `finalize()` builds index, splits and manifest."""

    def __init__(
        self, root: str | os.PathLike, overwrite: bool = False, pipeline: Mapping[str, Any] | None = None
    ):
        """Open (or create) a store at `root`; `overwrite=True` deletes an existing one first.

        `pipeline` (version + settings of the preprocessing, JSON-serialisable) is stored with every
        recording this writer writes and summarised in the manifest.
        """
        self.root = Path(root)
        if overwrite and self.root.exists():
            # The lock file stays: the caller may hold it (ingest_recordings does), and a new file
            # would be a second, independent lock.
            entries = [p for p in self.root.iterdir() if p.name not in _LOCK_ENTRIES]
            if not (self.root / "signals").is_dir() and entries:
                raise ValueError(f"refusing to overwrite {self.root}: it is not empty and not an epoch store")
            for entry in entries:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        (self.root / "signals").mkdir(parents=True, exist_ok=True)
        self.pipeline = json.loads(json.dumps(dict(pipeline or {}), default=_json_default))

    def _paths(self, dataset: str, recording_id: str) -> tuple[Path, Path]:
        folder = self.root / "signals" / _check_name("dataset", dataset)
        rid = _check_name("recording_id", recording_id)
        return folder / f"{rid}.npy", folder / f"{rid}.parquet"

    def has_recording(self, dataset: str, recording_id: str) -> bool:
        """True when the recording was completely written (its sidecar exists)."""
        return self._paths(dataset, recording_id)[1].is_file()

    def write_recording(
        self,
        dataset: str,
        recording_id: str,
        subject_id: str,
        visit: int,
        epochs: RecordingEpochs,
        source: Mapping[str, Any] | None = None,
    ) -> Path:
        """Atomically write one recording's float16 array and its index rows; returns the array path.

        `source` describes where it came from, e.g. `{"edf": path, "annotations": path}`; every value
        that is an existing file gets its SHA-256 recorded unless `source["sha256"]` is given.
        """
        array_path, sidecar_path = self._paths(dataset, recording_id)
        epochs.validate(f"{dataset}/{recording_id}")
        if not np.isfinite(epochs.signals).all():
            raise ValueError(f"{dataset}/{recording_id} ({epochs.source_path}): signals contain NaN or inf")
        array_path.parent.mkdir(parents=True, exist_ok=True)
        n = epochs.n_epochs

        source = dict(source or {})
        if "sha256" not in source:
            source["sha256"] = {
                k: file_sha256(v)
                for k, v in source.items()
                if isinstance(v, (str, os.PathLike)) and Path(v).is_file()
            }
        qc = dict(epochs.qc)
        meta = RecordingMeta(
            dataset=dataset,
            recording_id=recording_id,
            subject_id=str(subject_id),
            visit=int(visit),
            n_epochs=n,
            duration_s=float(epochs.duration_s),
            source_path=None if epochs.source_path is None else os.fspath(epochs.source_path),
            source=source,
            pipeline=self.pipeline,
            channel_map=qc.pop("channel_map", None),
            unknown_event_names=dict(Counter(qc.pop("unknown_event_names", None) or {})),
            qc=qc,
        )
        meta_json = json.dumps(meta.to_dict(), default=_json_default)

        # Array first (an orphan array without sidecar is simply rewritten on resume). Written through
        # write(2), not a memory map: on a full disk a page fault in a map kills the whole process
        # with SIGBUS, while write(2) raises ENOSPC, which fails this recording only.
        signals = np.ascontiguousarray(epochs.signals, dtype=SIGNAL_DTYPE)
        with atomic_open(array_path, suffix=".npy") as fh:
            np.lib.format.write_array_header_1_0(fh, np.lib.format.header_data_from_array_1_0(signals))
            fh.write(signals.data)  # file.write keeps ENOSPC's errno; ndarray.tofile drops it

        columns: dict[str, Any] = {
            "dataset": np.full(n, dataset, dtype=object),
            "recording_id": np.full(n, recording_id, dtype=object),
            "subject_id": np.full(n, str(subject_id), dtype=object),
            "visit": np.full(n, int(visit), dtype=np.int16),
            "epoch_index": np.arange(n, dtype=np.int32),
        }
        for col in LABEL_FIELDS:
            columns[col] = epochs.label_array(col)
        columns["channel_mask"] = pack_channel_mask(epochs.channel_mask)
        for col in QUALITY_FIELDS:
            columns[col] = epochs.quality_array(col)
        table = pa.Table.from_pandas(pd.DataFrame(columns), preserve_index=False)
        table = table.replace_schema_metadata(
            {**(table.schema.metadata or {}), _SIDECAR_META_KEY: meta_json.encode()}
        )
        with atomic_path(sidecar_path) as tmp_sidecar:
            pq.write_table(table, tmp_sidecar)
        return array_path

    def record_failure(self, dataset: str, source_path: str | os.PathLike, reason: str) -> None:
        """Note a file that could not be ingested; it appears under `excluded` in the manifest."""
        line = json.dumps(FailureRecord(dataset, os.fspath(source_path), str(reason)).to_dict())
        # One short O_APPEND write per line: parallel workers do not interleave lines.
        fd = os.open(self.root / "failures.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)  # minus the umask
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)

    def clean_stale(self) -> list[Path]:
        """Remove temp files and orphan arrays (no sidecar) that killed runs left; returns what was removed.

        Call only while holding the exclusive lock (``store_lock``): a running writer's temp files
        look the same.
        """
        removed = []
        folders = [self.root, *sorted(p for p in (self.root / "signals").glob("*") if p.is_dir())]
        for folder in folders:
            for f in folder.iterdir():
                stale_tmp = f.name.startswith(".") and ".tmp" in f.name and f.is_file()
                orphan = f.suffix == ".npy" and not f.name.startswith(".") and not f.with_suffix(".parquet").is_file()
                if stale_tmp or (orphan and folder != self.root):
                    f.unlink(missing_ok=True)
                    removed.append(f)
        return removed

    def write_shard_marker(self, marker: ShardMarker) -> Path:
        """Mark a shard done: ``shards/<dataset>/<k>-of-<n>.json``."""
        path = self.root / SHARDS_DIR / _check_name("dataset", marker.dataset) / f"{marker.shard}-of-{marker.n_shards}.json"
        return atomic_write_bytes(path, json.dumps(marker.to_dict(), indent=2, default=_json_default).encode())

    def shard_markers(self) -> list[ShardMarker]:
        """Every shard marker in the store (see ``write_shard_marker``)."""
        out = []
        for f in sorted((self.root / SHARDS_DIR).glob("*/*-of-*.json")):
            try:
                out.append(ShardMarker.from_dict(json.loads(f.read_text())))
            except (OSError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
                raise ValueError(f"{f}: unreadable shard marker ({exc})") from exc
        return out

    def missing_shards(self) -> dict[str, list[str]]:
        """Dataset -> shards ("K/N") not yet finished, for datasets ingested in shards none of whose
        shardings (an N) is complete."""
        done: dict[str, dict[int, set[int]]] = {}
        for m in self.shard_markers():
            done.setdefault(m.dataset, {}).setdefault(m.n_shards, set()).add(m.shard)
        missing = {}
        for dataset, by_n in done.items():
            if any(len(ks) == n for n, ks in by_n.items()):
                continue
            missing[dataset] = [f"{k}/{n}" for n, ks in sorted(by_n.items()) for k in range(n) if k not in ks]
        return missing

    def _read_sidecars(self) -> list[tuple[RecordingMeta, dict[str, np.ndarray], str]]:
        """Every written recording: its provenance, its per-epoch columns and its array path, in index order."""
        out = []
        for sidecar in sorted((self.root / "signals").glob("*/*.parquet")):
            try:
                meta = RecordingMeta.from_dict(json.loads(pq.read_schema(sidecar).metadata[_SIDECAR_META_KEY]))
                table = pq.read_table(sidecar)
                have = set(table.column_names)
                columns = {c: table.column(c).to_numpy() for c in ROW_COLUMNS if c in have}
            except Exception as exc:
                raise ValueError(f"{sidecar}: unreadable recording sidecar ({exc})") from exc
            array_path = sidecar.with_suffix(".npy")
            if not array_path.is_file():
                raise ValueError(f"{sidecar}: its signal array {array_path.name} is missing")
            n = table.num_rows
            for c, dtype in ROW_COLUMNS.items():  # columns added after the recording was written
                columns[c] = np.asarray(columns.get(c, np.full(n, -1 if c in LABEL_FIELDS else 0)), dtype=dtype)
            out.append((meta, columns, array_path.relative_to(self.root).as_posix()))
        out.sort(key=lambda item: (item[0].dataset, item[0].recording_id))
        return out

    def finalize(
        self,
        split_fractions: Sequence[float] = (0.8, 0.1, 0.1),
        seed: int = 0,
        cohort_groups: Mapping[str, str] | None = None,
    ) -> Path:
        """Rebuild the index from the sidecars, assign subject splits and cohort groups, write the manifest.

        Writes ``index/`` (recordings table + per-epoch columns), the portable ``index.parquet``, then
        ``manifest.json``. Returns the store root. `cohort_groups` maps dataset -> "pretrain" |
        "downstream" | "both" (datasets not named are "both").
        """
        written = self._read_sidecars()
        if not written:
            raise ValueError(f"{self.root}: no recordings were written; nothing to finalize")
        metas = [m for m, _, _ in written]
        lengths = np.array([len(cols["epoch_index"]) for _, cols, _ in written], dtype=np.int64)
        recordings = pd.DataFrame([m.manifest_entry() for m in metas])
        recordings["n_epochs"] = lengths
        recordings["path"] = [path for _, _, path in written]
        recordings["start"] = np.r_[0, np.cumsum(lengths)[:-1]].astype(np.int64)
        # Splits are per subject: assigned over recordings, not over every epoch.
        recordings["split"] = split_for_rows(recordings["dataset"], recordings["subject_id"], split_fractions, seed)
        groups = resolve_cohort_groups(recordings["dataset"], cohort_groups)
        missing = sorted(set(cohort_groups or {}) - set(groups))
        recordings["cohort_group"] = recordings["dataset"].map(groups)
        recordings = recordings[[*RECORDING_KEYS, *(c for c in recordings if c not in RECORDING_KEYS)]]
        columns = {c: np.concatenate([cols[c] for _, cols, _ in written]) for c in ROW_COLUMNS}
        write_index(self.root, recordings, columns)
        index = StoreIndex(recordings, columns, self.root / INDEX_DIR)
        write_index_parquet(self.root, index, INDEX_COLUMNS)

        excluded = self._failures_not_written(metas)
        splits = _split_summary(recordings, split_fractions, seed)
        manifest = StoreManifest.build(metas, index.n_rows, splits, groups, missing, excluded)
        atomic_write_bytes(
            self.root / "manifest.json", json.dumps(manifest.to_dict(), indent=2, default=_json_default).encode()
        )
        return self.root

    def failures(self) -> list[FailureRecord]:
        """Every line of ``failures.jsonl`` in order (lines cut by a killed process are skipped)."""
        path = self.root / "failures.jsonl"
        records = []
        for line in path.read_text().splitlines() if path.is_file() else []:
            try:
                if line.strip():
                    records.append(FailureRecord.from_dict(json.loads(line)))
            except json.JSONDecodeError:
                continue  # a line cut by a killed process; the file is re-tried on the next run anyway
        return records

    def _failures_not_written(self, metas: list[RecordingMeta]) -> list[FailureRecord]:
        """The latest failure per file, leaving out files a later run managed to ingest."""
        written = set().union(*(m.files() for m in metas))
        latest = {(f.dataset, f.source_path): f for f in self.failures() if f.source_path not in written}
        return list(latest.values())


def _split_summary(recordings: pd.DataFrame, split_fractions: Sequence[float], seed: int) -> dict[str, Any]:
    """The manifest's ``splits``: fractions, seed and per dataset/split counts (from the recordings table)."""
    per_split = recordings.groupby(["dataset", "split"]).agg(
        epochs=("n_epochs", "sum"), recordings=("recording_id", "nunique"), subjects=("subject_id", "nunique")
    )
    return {
        "fractions": list(map(float, split_fractions)),
        "seed": int(seed),
        "by": "subject",
        "counts": {f"{d}/{s}": {k: int(v) for k, v in row.items()} for (d, s), row in per_split.iterrows()},
    }


class EpochStore:
    """Read-only view of a finalized store: `.manifest`, the codes and columns of `.rows`, batched `.read(rows)`.

    Rows are positions in the index (sorted by dataset, recording_id, epoch_index). The index is
    held as codes and memory-mapped columns (`StoreIndex`, shared between processes through the
    page cache); `.index` builds the per-row DataFrame on demand for small stores. Signals are read
    with `preadv` through at most `max_open_files` handles per process (`ArrayReader`); handles are
    not pickled, so DataLoader workers open their own.
    """

    def __init__(self, root: str | os.PathLike, max_open_files: int = MAX_OPEN_FILES):
        """Open the store at `root` (a `manifest.json` and its index; see the module docstring)."""
        self.root = Path(root)
        index_path, manifest_path = self.root / "index.parquet", self.root / "manifest.json"
        has_columns = (self.root / INDEX_DIR / RECORDINGS_FILE).is_file()
        for p in (manifest_path,) if has_columns else (index_path, manifest_path):
            if not p.is_file():
                raise FileNotFoundError(
                    f"{self.root} is not a finalized epoch store: {p.name} is missing "
                    "(write recordings with StoreWriter, then call finalize())"
                )
        try:
            self.manifest: dict[str, Any] = json.loads(manifest_path.read_text())  # as written (hashed by caches)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{manifest_path}: not valid JSON ({exc})") from exc
        self.manifest_record: StoreManifest = StoreManifest.from_dict(self.manifest, manifest_path)
        self.rows: StoreIndex = StoreIndex.open(self.root) if has_columns else self._legacy_index(index_path)
        self._frame: pd.DataFrame | None = None
        self._digest: str | None = None
        self.reader = ArrayReader(self.root, self.rows.paths, self.rows.n_epochs, SIGNAL_DTYPE, max_open_files)

    def _legacy_index(self, index_path: Path) -> StoreIndex:
        """A format-1 store: the per-row index.parquet turned into codes, in memory."""
        if self.manifest.get("format_version") != 1:
            raise ValueError(f"{self.root}: {INDEX_DIR}/{RECORDINGS_FILE} is missing; rebuild the index with "
                             + UPGRADE_COMMAND.format(root=self.root))
        index = pd.read_parquet(index_path)
        missing = sorted(set(INDEX_COLUMNS) - set(index.columns))
        if missing:
            raise ValueError(f"{index_path}: missing index column(s) {missing}")
        log.info("%s: store format 1, index held in memory; %s writes its memory-mapped index",
                 self.root, UPGRADE_COMMAND.format(root=self.root))
        return StoreIndex.from_frame(index, index_path)

    @property
    def index(self) -> pd.DataFrame:
        """The whole index, one row per epoch with the columns of ``index.parquet`` (strings per row:
        built on first use; at NSRR scale use ``.rows`` codes and columns instead)."""
        if self._frame is None:
            self._frame = self.rows.frame()
        return self._frame

    @property
    def recordings(self) -> pd.DataFrame:
        """One row per recording: index keys and provenance (source files, QC)."""
        if (self.root / INDEX_DIR / RECORDINGS_FILE).is_file():
            return read_recordings(self.root)
        provenance = recordings_from_manifest(self.manifest)
        keys = self.rows.recordings
        extra = [c for c in provenance.columns if c not in keys.columns]
        return keys.merge(provenance[["dataset", "recording_id", *extra]], on=["dataset", "recording_id"], how="left") if extra else keys

    def content_digest(self) -> str:
        """SHA-256 of what identifies the store's content: ``manifest.json`` and the recordings table (cached)."""
        if self._digest is None:
            h = hashlib.sha256((self.root / "manifest.json").read_bytes())
            table = self.root / INDEX_DIR / RECORDINGS_FILE
            if table.is_file():
                h.update(table.read_bytes())
            self._digest = h.hexdigest()
        return self._digest

    def column(self, name: str) -> np.ndarray:
        """One per-epoch numeric column (labels, channel_mask, quality, epoch_index) over all rows, read-only."""
        if name not in self.rows.columns:
            raise KeyError(f"{self.root}: no per-epoch column {name!r}; columns: {list(self.rows.columns)}")
        return self.rows.columns[name]

    def __len__(self) -> int:
        return self.rows.n_rows

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_frame"] = None  # rebuilt on demand; workers do not need it
        return state

    def _check_rows(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(
                f"{self.root}: rows must be in [0, {len(self)}), got min {rows.min()} max {rows.max()}"
            )
        return rows

    def read(self, rows: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Signals of index rows as float32 `[len(rows), 12, 1920]`, in the order given.

        Rows are grouped by file and read in ascending order per file, one `preadv` per run of
        consecutive rows, which keeps page-cache reads sequential.
        """
        rows = self._check_rows(rows)
        shape = (rows.size, config.NUM_CHANNELS, config.EPOCH_SAMPLES)
        if out is None:
            out = np.empty(shape, dtype=np.float32)
        elif out.shape != shape or out.dtype != np.float32:
            raise ValueError(f"out must be float32 {shape}, got {out.dtype} {out.shape}")
        if rows.size == 0:
            return out
        file_ids = self.rows.recording_of(rows)
        return read_rows(self.reader, file_ids, rows - self.rows.start[file_ids], out)

    def channel_masks(self, rows: np.ndarray) -> np.ndarray:
        """Channel presence of index rows as bool `[len(rows), 12]`."""
        return unpack_channel_mask(np.asarray(self.rows.columns["channel_mask"][self._check_rows(rows)]))


def upgrade_store(root: str | os.PathLike) -> bool:
    """Write ``index/`` and a format-2 manifest for a format-1 store in place; False when already format 2.

    Rows, splits and cohort groups are kept exactly (taken from ``index.parquet``); the manifest's
    per-recording list moves into ``index/recordings.parquet``. Holds the store's exclusive lock.
    """
    root = Path(root)
    manifest_path = root / "manifest.json"
    if not manifest_path.is_file() or not (root / "index.parquet").is_file():
        raise FileNotFoundError(f"{root}: not a finalized epoch store (manifest.json or index.parquet missing)")
    with store_lock(root, shared=False, what="upgrade_store"):
        store = EpochStore(root)  # checks the contract; a format-1 store builds its index in memory
        if store.manifest.get("format_version") == STORE_FORMAT_VERSION and (root / INDEX_DIR).is_dir():
            return False
        write_index(root, store.recordings, store.rows.columns)
        manifest = {k: v for k, v in store.manifest.items() if k != "recordings"}
        manifest["format_version"] = STORE_FORMAT_VERSION
        atomic_write_bytes(manifest_path, json.dumps(manifest, indent=2, default=_json_default).encode())
    return True

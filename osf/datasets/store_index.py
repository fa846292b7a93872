"""The store's index as bytes, not objects: one table of recordings and memory-mapped per-epoch columns.

Layout (format 2, written by ``StoreWriter.finalize`` next to the portable ``index.parquet``)::

    index/recordings.parquet   one row per recording, in index order: dataset, recording_id,
                               subject_id, visit, path, start (first index row), n_epochs, split,
                               cohort_group and the provenance the manifest used to list
    index/<column>.npy         one value per epoch (index row): epoch_index, the labels,
                               channel_mask and the quality columns, memory-mapped read-only

The rows of one recording are contiguous (the index is sorted by dataset, recording_id,
epoch_index), so the recording of a row is ``searchsorted(start, row)``: names (recording, subject,
dataset, split) live once per recording and become strings only for the rows a batch shows.
Memory-mapped columns are shared between processes through the page cache, so DataLoader workers
hold no private copy of the index. Stores of format 1 (no ``index/`` folder) open from
``index.parquet`` in memory; ``upgrade_store`` writes their ``index/`` in place.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from osf import config
from osf.datasets.recording import LABEL_FIELDS, QUALITY_FIELDS
from osf.datasets.splits import SPLITS
from osf.utils.atomic import atomic_open, atomic_write_bytes

INDEX_DIR = "index"
RECORDINGS_FILE = "recordings.parquet"
UPGRADE_COMMAND = "python main_pipelines/main_preprocess.py --upgrade_store --output_dir {root}"

# Per-epoch columns kept as .npy files, with their stored dtypes.
ROW_COLUMNS: dict[str, np.dtype] = {
    "epoch_index": np.dtype(np.int32),
    **{c: np.dtype(np.int8) for c in LABEL_FIELDS},
    "channel_mask": np.dtype(np.uint16),
    **QUALITY_FIELDS,
}


def added_label_columns() -> list[str]:
    """Label columns of tasks registered after import (a new task's), kept as optional ``index/<column>.npy``."""
    return [c for c in config.LABEL_COLUMNS.values() if c not in ROW_COLUMNS]


def map_columns(folder: Path) -> dict[str, np.ndarray]:
    """Every per-row column of an ``index/`` folder, memory-mapped read-only (added label columns if present)."""
    names = [*ROW_COLUMNS, *(c for c in added_label_columns() if (folder / f"{c}.npy").exists())]
    return {name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in names}


# Per-recording columns of recordings.parquet that the index needs (the rest is provenance).
RECORDING_KEYS: tuple[str, ...] = (
    "dataset", "recording_id", "subject_id", "visit", "path", "start", "n_epochs", "split", "cohort_group",
)
# Provenance columns stored as JSON text (nested values).
JSON_COLUMNS: tuple[str, ...] = ("source", "qc")


def _codes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique names and the int32 code of every value."""
    names, codes = np.unique(np.asarray(values, dtype=object).astype(str), return_inverse=True)
    return names.astype(object), codes.astype(np.int32)


class StoreIndex:
    """Names per recording, codes per row, numeric columns memory-mapped (or in memory for format 1)."""

    def __init__(self, recordings: pd.DataFrame, columns: Mapping[str, np.ndarray], where: str | os.PathLike):
        """``recordings`` in index order with ``RECORDING_KEYS``; ``columns`` one array per ``ROW_COLUMNS``."""
        self.where = os.fspath(where)
        missing = [k for k in RECORDING_KEYS if k not in recordings.columns]
        if missing:
            raise ValueError(f"{self.where}: recordings table lacks column(s) {missing}")
        self.recordings = recordings.reset_index(drop=True)
        self.start = np.append(self.recordings["start"].to_numpy(np.int64), 0)
        self.n_epochs = self.recordings["n_epochs"].to_numpy(np.int64)
        self.n_rows = int(self.n_epochs.sum())
        self.start[-1] = self.n_rows
        if len(self.recordings) and not (np.diff(self.start) == self.n_epochs).all():
            raise ValueError(f"{self.where}: recordings' start rows and n_epochs do not tile the index")
        self.columns = dict(columns)
        for name in dict.fromkeys([*ROW_COLUMNS, *self.columns]):
            col = self.columns.get(name)
            if col is None or col.shape != (self.n_rows,):
                got = None if col is None else col.shape
                raise ValueError(f"{self.where}: index column {name!r} is {got}, expected ({self.n_rows},)")
        self.paths = self.recordings["path"].to_numpy(dtype=object)
        self.dataset_names, self.rec_dataset = _codes(self.recordings["dataset"].to_numpy())
        subject_keys = (self.recordings["dataset"].astype(str) + "/" + self.recordings["subject_id"].astype(str))
        self.subject_names, self.rec_subject = _codes(subject_keys.to_numpy())
        self.split_names = np.array(SPLITS, dtype=object)
        self.rec_split = _code_of(self.recordings["split"].to_numpy(), self.split_names, self.where, "split")
        self.group_names, self.rec_group = _codes(self.recordings["cohort_group"].to_numpy())

    @classmethod
    def open(cls, root: str | os.PathLike) -> StoreIndex:
        """Open a format-2 index folder, its columns memory-mapped read-only."""
        folder = Path(root) / INDEX_DIR
        try:
            recordings = pd.read_parquet(folder / RECORDINGS_FILE, columns=list(RECORDING_KEYS))
            columns = map_columns(folder)
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise ValueError(f"{folder}: unreadable store index ({exc}); {_rebuild_hint(root)}") from exc
        index = cls(recordings, columns, folder)
        index.mapped_from = folder
        return index

    mapped_from: Path | None = None  # the index/ folder whose columns are memory-mapped

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if self.mapped_from is not None:  # a pickled memmap would copy its data: reopen instead
            state["columns"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self.columns is None:
            self.columns = map_columns(self.mapped_from)

    @classmethod
    def from_frame(cls, index: pd.DataFrame, where: str | os.PathLike) -> StoreIndex:
        """Build from a full per-row index (``index.parquet`` of a format-1 store), in memory."""
        path = index["path"].to_numpy(dtype=object)
        change = np.flatnonzero(path[1:] != path[:-1]) + 1 if len(path) else np.zeros(0, dtype=np.int64)
        starts = np.r_[0, change] if len(path) else change
        if len(set(path[starts].tolist())) != len(starts):
            raise ValueError(f"{where}: the rows of a recording are not contiguous; {_rebuild_hint(Path(where).parent)}")
        first = index.iloc[starts]
        recordings = pd.DataFrame({k: first[k].to_numpy() for k in RECORDING_KEYS if k not in ("start", "n_epochs")})
        recordings["start"] = starts.astype(np.int64)
        recordings["n_epochs"] = np.diff(np.r_[starts, len(path)]).astype(np.int64)
        columns = {name: index[name].to_numpy(dtype) for name, dtype in ROW_COLUMNS.items()}
        columns.update({name: index[name].to_numpy(np.int8) for name in added_label_columns() if name in index})
        rows = index["row"].to_numpy(np.int64)
        if not (rows == np.arange(len(rows)) - np.repeat(starts, recordings["n_epochs"].to_numpy())).all():
            raise ValueError(f"{where}: array rows are not in order within a recording; {_rebuild_hint(Path(where).parent)}")
        return cls(recordings[list(RECORDING_KEYS)], columns, where)

    # --- rows -> codes ------------------------------------------------------------------------------
    def recording_of(self, rows: np.ndarray) -> np.ndarray:
        """Recording code (position in ``recordings``) of each row."""
        return (np.searchsorted(self.start, rows, side="right") - 1).astype(np.int64)

    def per_row(self, per_recording: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """Broadcast a per-recording array to every row (or to ``rows``)."""
        if rows is None:
            return np.repeat(per_recording, self.n_epochs)
        return per_recording[self.recording_of(rows)]

    def names(self, column: str, rows: np.ndarray) -> list[str]:
        """``recording_id`` / ``subject_id`` / ``dataset`` / ``split`` of ``rows`` as strings (a batch's worth)."""
        return self.recordings[column].to_numpy(dtype=object)[self.recording_of(rows)].astype(str).tolist()

    def frame(self) -> pd.DataFrame:
        """The whole index as one DataFrame with the columns of ``index.parquet`` (strings per row: small stores)."""
        rec = self.recordings
        out = {k: np.repeat(rec[k].to_numpy(), self.n_epochs) for k in ("dataset", "recording_id", "subject_id")}
        out["visit"] = np.repeat(rec["visit"].to_numpy(np.int16), self.n_epochs)
        out.update({name: np.asarray(col) for name, col in self.columns.items()})
        for k in ("split", "cohort_group", "path"):
            out[k] = np.repeat(rec[k].to_numpy(dtype=object), self.n_epochs)
        out["row"] = (np.arange(self.n_rows) - np.repeat(self.start[:-1], self.n_epochs)).astype(np.int32)
        return pd.DataFrame(out)


def _code_of(values: np.ndarray, names: np.ndarray, where: str, what: str) -> np.ndarray:
    lookup = {n: i for i, n in enumerate(names.tolist())}
    try:
        return np.array([lookup[v] for v in values.tolist()], dtype=np.int8)
    except KeyError as exc:
        raise ValueError(f"{where}: unknown {what} {exc.args[0]!r}; expected one of {list(names)}") from None


def _rebuild_hint(root: str | os.PathLike) -> str:
    return "rebuild it with " + UPGRADE_COMMAND.format(root=root)


def write_index(root: str | os.PathLike, recordings: pd.DataFrame, columns: Mapping[str, np.ndarray]) -> Path:
    """Write ``index/`` (recordings table + per-row .npy columns) atomically file by file; returns the folder."""
    folder = Path(root) / INDEX_DIR
    folder.mkdir(parents=True, exist_ok=True)
    for name, dtype in ROW_COLUMNS.items():
        arr = np.ascontiguousarray(columns[name], dtype=dtype)
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": arr.shape}
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(buf, header)
        atomic_write_bytes(folder / f"{name}.npy", buf.getvalue() + arr.tobytes())
    table = recordings.copy()
    for col in JSON_COLUMNS:
        if col in table:
            table[col] = [json.dumps(v, default=str) for v in table[col]]
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pandas(table, preserve_index=False), sink)
    atomic_write_bytes(folder / RECORDINGS_FILE, sink.getvalue().to_pybytes())
    return folder


def read_recordings(root: str | os.PathLike) -> pd.DataFrame:
    """The full recordings table (index keys + provenance), JSON columns parsed."""
    table = pd.read_parquet(Path(root) / INDEX_DIR / RECORDINGS_FILE)
    for col in JSON_COLUMNS:
        if col in table:
            table[col] = [json.loads(v) for v in table[col]]
    return table


def _index_chunks(index: StoreIndex, chunk_rows: int):
    """The per-row ``index.parquet`` table in chunks of ``chunk_rows``: strings taken from the recording names."""
    rec = index.recordings
    rec_code = np.arange(len(rec), dtype=np.int32)
    names = {k: pa.array(rec[k].astype(str).tolist(), type=pa.string())
             for k in ("dataset", "recording_id", "subject_id", "split", "cohort_group", "path")}
    visit = rec["visit"].to_numpy(np.int16)
    for lo in range(0, index.n_rows, chunk_rows):
        rows = np.arange(lo, min(lo + chunk_rows, index.n_rows), dtype=np.int64)
        code = rec_code[index.recording_of(rows)]
        taken = pa.array(code)
        arrays = {k: names[k].take(taken) for k in ("dataset", "recording_id", "subject_id")}
        arrays["visit"] = pa.array(visit[code])
        for name in dict.fromkeys([*ROW_COLUMNS, *index.columns]):
            arrays[name] = pa.array(np.asarray(index.columns[name][lo : lo + rows.size]))
        for k in ("split", "cohort_group", "path"):
            arrays[k] = names[k].take(taken)
        arrays["row"] = pa.array((rows - index.start[code]).astype(np.int32))
        yield pa.table(arrays)


def write_index_parquet(root: str | os.PathLike, index: StoreIndex, columns_order: Sequence[str],
                        chunk_rows: int = 1 << 20) -> Path:
    """Write the portable ``index.parquet`` (the columns of format 1) chunk by chunk, memory bounded."""
    target = Path(root) / "index.parquet"
    with atomic_open(target) as fh:
        writer = None
        for chunk in _index_chunks(index, chunk_rows):
            chunk = chunk.select(list(columns_order))
            if writer is None:
                writer = pq.ParquetWriter(fh, chunk.schema)
            writer.write_table(chunk)
        if writer is not None:
            writer.close()
    return target


def recordings_from_manifest(manifest: Mapping[str, Any]) -> pd.DataFrame:
    """Provenance per recording of a format-1 store (its manifest's ``recordings`` list)."""
    return pd.DataFrame(list(manifest.get("recordings") or []))


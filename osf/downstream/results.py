"""Run records: one JSON per run and an append-only ``results.csv``, both written atomically.

A sweep runs many processes against one ``results.csv``; appends take an exclusive ``flock`` on a
sidecar lock file and replace the CSV with ``os.replace`` so a crash never leaves a half-written
table, and rows written earlier are never lost.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from osf.utils.atomic import atomic_write_text


@dataclass
class RunIdentity:
    """The columns that identify a run in ``results.csv``; they come first, in this order."""

    run_id: str
    timestamp: str
    method: str
    model_name: str
    encoder_name: str | None
    ckpt_path: str
    ckpt_hash: str
    dataset: str
    task: str
    setting: str
    eval_channels: str
    train_channels: str
    pooling: str
    k_shot: int | None
    train_data_pct: float
    pretrain_samples: int | None
    seed: int
    n_seeds: int
    split_hash: str


ID_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(RunIdentity))


def utc_timestamp() -> str:
    """Run timestamp: UTC, to the microsecond, e.g. ``20250101T120000123456Z`` (sortable, unique per run)."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")


def results_row(identity: RunIdentity, metrics: Mapping[str, Mapping[str, Any]], **columns: Any) -> dict[str, Any]:
    """One ``results.csv`` row: the identity columns, the flattened metrics, then ``columns`` in order."""
    return {**asdict(identity), **flatten_metrics(metrics), **columns}


# Keys every run JSON carries (``tests/test_downstream_results.py`` checks a real run against it).
RUN_JSON_KEYS: tuple[str, ...] = (
    "run_id",
    "timestamp",
    "config",
    "backbone",
    "ckpt_hash",
    "split_hash",
    "task",
    "class_names",
    "setting",
    "selection",
    "timings",
    "metrics",
    "artifacts",
)


def to_jsonable(obj: Any) -> Any:
    """Plain-JSON copy: numpy scalars/arrays to Python, NaN/inf to ``None``, paths to str, sets to lists.

    Anything else that JSON cannot hold (a timestamp, say) becomes its ``repr``.
    """
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        obj = obj.tolist()
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):  # np.float32, np.int64, np.bool_, ...
        obj = obj.item()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    return repr(obj)


def write_run_json(record: Mapping[str, Any], path: str | Path) -> Path:
    """Write one run record as JSON (atomically); NaN becomes ``null``."""
    missing = [k for k in RUN_JSON_KEYS if k not in record]
    if missing:
        raise ValueError(f"run record for {path} lacks keys {missing}")
    return atomic_write_text(path, json.dumps(to_jsonable(record), indent=2, sort_keys=False) + "\n")


@dataclass
class RunSummary:
    """What summaries read back from a written run JSON: its metrics and, for a sequence run, the comparison."""

    run_id: str | None
    metrics: dict[str, dict[str, Any]]  # split -> metric -> value
    comparison: dict[str, Any] | None = None  # sequence head vs per-epoch probe: metric, delta, delta_ci95
    kappa_by_preset: dict[str, dict[str, float]] | None = None  # --mask_train_presets: split -> preset -> kappa

    @property
    def test(self) -> dict[str, Any]:
        """Test-split metrics."""
        return self.metrics.get("test", {})

    @classmethod
    def read(cls, path: str | Path) -> RunSummary:
        """Read the run JSON at ``path``."""
        record = json.loads(Path(path).read_text())
        return cls(record.get("run_id"), record.get("metrics", {}), record.get("comparison"),
                   record.get("kappa_by_preset"))


def best_on_validation(runs: Mapping[str, str | Path], metric: str) -> str:
    """The key of ``runs`` (name -> run JSON) whose validation ``metric`` is highest; the first on ties."""
    scores = {name: float(RunSummary.read(path).metrics["val"][metric]) for name, path in runs.items()}
    return max(scores, key=scores.__getitem__)


def flatten_metrics(metrics: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """``{"test": {"kappa": .., "kappa_ci95": [lo, hi], "per_class_f1": {...}}}`` -> flat CSV columns.

    Gives ``test_kappa``, ``test_kappa_ci_low``, ``test_kappa_ci_high``, ``test_f1_<class>``; matrices
    and other nested values stay in the JSON only. Few-shot aggregates ``{"mean", "std"}`` become
    ``<split>_<metric>`` (the mean) and ``<split>_<metric>_std``.
    """
    flat: dict[str, Any] = {}
    for split, values in metrics.items():
        for key, val in values.items():
            col = f"{split}_{key}"
            if key.endswith("_ci95") and isinstance(val, (list, tuple)) and len(val) == 2:
                base = f"{split}_{key[: -len('_ci95')]}"
                flat[f"{base}_ci_low"], flat[f"{base}_ci_high"] = val
            elif key == "per_class_f1" and isinstance(val, Mapping):
                for cls, f1 in val.items():
                    flat[f"{split}_f1_{cls}"] = f1
            elif isinstance(val, Mapping) and "mean" in val:
                flat[col] = val["mean"]
                flat[f"{col}_std"] = val.get("std")
            elif isinstance(val, (int, float, np.integer, np.floating)) and not isinstance(val, bool):
                flat[col] = val
    return to_jsonable(flat)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    lock_path = path.with_name(path.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def append_results_row(csv_path: str | Path, row: Mapping[str, Any]) -> Path:
    """Append one row to ``results.csv`` (new columns are added; existing rows are kept as they are)."""
    csv_path = Path(csv_path)
    with _locked(csv_path):
        if csv_path.exists() and csv_path.stat().st_size > 0:
            try:
                table = pd.read_csv(csv_path)
            except (pd.errors.ParserError, UnicodeDecodeError) as err:
                raise ValueError(f"{csv_path}: cannot append, the existing results table is unreadable: {err}") from err
            table = pd.concat([table, pd.DataFrame([dict(row)])], ignore_index=True)
        else:
            table = pd.DataFrame([dict(row)])
        first = [c for c in ID_COLUMNS if c in table.columns]
        table = table[first + [c for c in table.columns if c not in first]]
        atomic_write_text(csv_path, table.to_csv(index=False))
    return csv_path


def read_results(csv_path: str | Path) -> pd.DataFrame:
    """Read a ``results.csv`` with a clear error when it is missing or empty."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(f"results table {csv_path} does not exist; run main_finetune.py first")
    table = pd.read_csv(csv_path)
    if table.empty:
        raise ValueError(f"results table {csv_path} has no rows")
    return table

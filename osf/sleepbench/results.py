"""``results.csv`` of SleepBench-mini: one row per (seed, method, preset, task, setting), CIs by subject.

Each row carries the test metric with its subject-bootstrap CI, and two paired differences on the
same test epochs (CI of the difference, subjects resampled jointly): against the random-init
backbone on the same preset (``vs_random``) and against the same model on the full montage
(``vs_full``, the degradation when channels are missing).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd

from osf.downstream.ceilings import PREDICTIONS_FILE, RESULT_FILE
from osf.downstream.metrics import load_predictions, paired_difference
from osf.sleepbench.config import RANDOM, SleepBenchConfig
from osf.sleepbench.steps import SleepBenchLayout, pretrain_samples
from osf.tasks import get_task
from osf.utils.atomic import atomic_write_text

NAN = math.nan
BOOT_SEED = 0  # every paired bootstrap's draws, whichever training seed: a seed's row is its seed-level per-seed row


@dataclass
class BenchRow:
    """One evaluated cell."""

    seed: int
    method: str  # an objective, random_init, or a ceiling (handcrafted / supervised)
    kind: str  # pretrained | random | ceiling | scaling
    preset: str
    task: str
    setting: str  # linear_probe | linear_probe_<k>shot | handcrafted | supervised
    backbone: str
    pooling: str
    train_fraction: float
    pretrain_samples: float
    metric: str
    value: float
    ci_low: float
    ci_high: float
    value_std: float  # over k-shot draws
    n_test_subjects: float
    n_test_positive: float
    vs_random: float = NAN
    vs_random_low: float = NAN
    vs_random_high: float = NAN
    vs_full: float = NAN
    vs_full_low: float = NAN
    vs_full_high: float = NAN
    predictions: str = ""


COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(BenchRow))


def _row_from_metrics(test: dict, pred_path: Path, seed: int, method: str, kind: str, preset: str, task: str,
                      **extra) -> BenchRow:
    metric = get_task(task).reporting_metric
    value = test.get(metric)
    std = value.get("std", NAN) if isinstance(value, dict) else NAN  # k-shot: over draws
    low, high = test.get(f"{metric}_ci95") or (NAN, NAN)
    cm = test.get("confusion_matrix")
    positive = float(sum(cm[1])) if cm is not None and len(cm) == 2 else NAN
    base = {"setting": "linear_probe", "backbone": "", "pooling": "", "train_fraction": 1.0,
            "pretrain_samples": NAN, **extra}
    return BenchRow(seed, method, kind, preset, task, metric=metric, value=_num(value), ci_low=_num(low),
                    ci_high=_num(high), value_std=_num(std), n_test_subjects=_num(test.get("n_subjects")),
                    n_test_positive=positive, predictions=str(pred_path), **base)


def _num(x) -> float:
    if isinstance(x, dict):  # a k-shot aggregate over draws
        x = x.get("mean")
    return float(x) if x is not None else NAN


def collect_rows(cfg: SleepBenchConfig) -> list[BenchRow]:
    """Every finished cell of the run as a row (unfinished cells are left out)."""
    at = SleepBenchLayout(cfg)
    rows: list[BenchRow] = []
    for seed in range(cfg.seeds):
        rows += _grid_rows(cfg, at, seed)
        rows += _kshot_rows(cfg, at, seed)
        rows += _scaling_rows(cfg, at, seed)
        rows += _ceiling_rows(cfg, at, seed)
    return rows


def _probe_row(folder: Path, seed: int, method: str, kind: str, preset: str, task: str, **extra) -> BenchRow | None:
    json_path, pred = folder / "probe.json", folder / "probe_test_predictions.npz"
    if not (json_path.exists() and pred.exists()):
        return None
    record = json.loads(json_path.read_text())
    return _row_from_metrics(record["metrics"]["test"], pred, seed, method, kind, preset, task,
                             pooling=record["setting"]["pooling"], **extra)


def _grid_rows(cfg: SleepBenchConfig, at: SleepBenchLayout, seed: int) -> list[BenchRow]:
    rows = []
    for method in (*cfg.methods, RANDOM):
        kind = "random" if method == RANDOM else "pretrained"
        for preset in cfg.presets:
            for task in cfg.tasks:
                try:
                    folder = at.probe_dir(method, preset, task, seed)
                except (FileNotFoundError, KeyError):  # pooling not chosen yet
                    continue
                row = _probe_row(folder, seed, method, kind, preset, task, backbone=cfg.backbone)
                rows += [row] if row else []
    return rows


def _kshot_rows(cfg: SleepBenchConfig, at: SleepBenchLayout, seed: int) -> list[BenchRow]:
    rows = []
    for method in (*cfg.methods, RANDOM):
        for k in cfg.kshots:
            row = _probe_row(at.kshot_dir(method, k, seed), seed, method, "random" if method == RANDOM else "pretrained",
                             "full", "Stage", setting=f"linear_probe_{k}shot", backbone=cfg.backbone)
            rows += [row] if row else []
    return rows


def _scaling_rows(cfg: SleepBenchConfig, at: SleepBenchLayout, seed: int) -> list[BenchRow]:
    rows, samples_of = [], {}  # each fraction's sample count reads the store once, not per size and task
    for size in cfg.scaling_sizes:
        for fraction in cfg.scaling_fractions:
            run = at.scaling_run(size, fraction)
            for task in cfg.tasks:
                folder = at.scaling_probe_dir(run, task, seed)
                if not (folder / "probe.json").exists():
                    continue
                if fraction not in samples_of:
                    samples_of[fraction] = pretrain_samples(at.store, fraction, seed)
                samples = samples_of[fraction]
                row = _probe_row(folder, seed, cfg.scaling_method, "scaling", "full", task, backbone=size,
                                 train_fraction=fraction, pretrain_samples=float(samples))
                rows += [row] if row else []
    return rows


def _ceiling_rows(cfg: SleepBenchConfig, at: SleepBenchLayout, seed: int) -> list[BenchRow]:
    rows = []
    for kind in cfg.ceilings:
        for preset in cfg.presets:
            for task in cfg.tasks:
                folder = at.ceiling_dir(kind, preset, task, seed)
                json_path, pred = folder / RESULT_FILE, folder / PREDICTIONS_FILE
                if json_path.exists() and pred.exists():
                    test = json.loads(json_path.read_text())["metrics"]
                    rows.append(_row_from_metrics(test, pred, seed, kind, "ceiling", preset, task, setting=kind))
    return rows


# --- paired differences ------------------------------------------------------------------------
def add_differences(rows: list[BenchRow], n_boot: int) -> None:
    """Fill ``vs_random`` and ``vs_full`` (paired, on shared test epochs) where both runs exist.

    k-shot rows average several draws while their predictions are the best draw's: no paired difference.
    """
    randoms = {(r.seed, r.preset, r.task): r for r in rows if r.kind == "random" and r.setting == "linear_probe"}
    by_cell = {(r.seed, r.method, r.preset, r.task, r.setting): r for r in rows if r.kind != "scaling"}
    for r in rows:
        if r.kind in ("pretrained", "ceiling") and r.setting in ("linear_probe", r.method):
            _paired(r, randoms.get((r.seed, r.preset, r.task)), "vs_random", n_boot)
        if r.preset != "full" and r.kind != "scaling":
            _paired(r, by_cell.get((r.seed, r.method, "full", r.task, r.setting)), "vs_full", n_boot)


def _paired(row: BenchRow, other: BenchRow | None, name: str, n_boot: int) -> None:
    if other is None or other is row:
        return
    diff = paired_difference(load_predictions(row.predictions), load_predictions(other.predictions),
                             n_boot=n_boot, seed=BOOT_SEED)[row.metric]
    setattr(row, name, diff["diff"])
    setattr(row, f"{name}_low", diff["low"])
    setattr(row, f"{name}_high", diff["high"])


def results_table(cfg: SleepBenchConfig) -> pd.DataFrame:
    """The run's rows with their paired differences, as a DataFrame in :data:`COLUMNS` order."""
    rows = collect_rows(cfg)
    add_differences(rows, cfg.n_boot)
    return pd.DataFrame([asdict(r) for r in rows], columns=list(COLUMNS))


def write_results(cfg: SleepBenchConfig) -> tuple[Path, pd.DataFrame]:
    """Write ``<output_dir>/results.csv`` (atomically) and return its path and table."""
    table = results_table(cfg)
    path = Path(cfg.output_dir).resolve() / "results.csv"
    atomic_write_text(path, table.to_csv(index=False, float_format="%.6g"))
    return path, table


def verdict(low: float, high: float) -> str:
    """``better`` / ``worse`` when the CI of a difference excludes 0, else ``n.s.``; ``–`` without one."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return "–"
    return "better" if low > 0 else "worse" if high < 0 else "n.s."

"""The evaluation protocol of one run (one seed): every model x task x setting, probes chosen on validation.

For a store and a set of backbones (the pre-trained one and its own random init), the protocol

1. extracts each backbone's features once per channel view (every channel, then each missing-channel
   preset), every pooling from the same pass, through the feature cache;
2. computes the baseline features (``power48``, ``yasa_style``) once, on every channel (a preset keeps
   its channels' columns: each column comes from one channel);
3. for every task and setting (``osf.evaluation.settings``) fits the logistic-regression grid
   (``osf.evaluation.probes``: poolings x penalties, the best on validation) per model and writes the
   test predictions in the probes' ``.npz`` format, so any two models pair up by
   ``osf.evaluation.seeds.seed_level_difference``.

Runs of several seeds are then compared by :func:`compare_runs`: per setting and task, model ``a`` minus
model ``b`` with per-seed rows, the hierarchical-bootstrap CI and the t-test across seeds.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from osf import config
from osf.datasets.channelset import ChannelSet
from osf.datasets.datamodule import SleepDataModule, task_labels
from osf.datasets.store import EpochStore
from osf.downstream.features import backbone_hash, cached_features
from osf.downstream.inputs import SPLITS, dataset_split_hash, full_loader
from osf.downstream.metrics import load_predictions, save_predictions
from osf.evaluation.baselines import has_eeg, power48, yasa_style, yasa_style_columns
from osf.evaluation.probes import MAX_IN_MEMORY_GIB, PENALTIES, ProbeFit, Split, fit_probe_grid
from osf.evaluation.seeds import SeedLevelDifference, format_seed_rows, seed_level_difference
from osf.evaluation.settings import (
    K_SHOTS,
    LABEL_FRACTIONS,
    MISSING_PRESETS,
    EpochTable,
    Setting,
    standard_settings,
)
from osf.tasks import get_task, studied_tasks
from osf.utils.atomic import atomic_write_text

POOLINGS: tuple[str, ...] = ("cls", "groups", "cls_groups", "groups_std")
BASELINES: tuple[str, ...] = ("power48", "yasa_style")
CEILING = "supervised"  # the supervised per-epoch CNN (osf.downstream.ceilings), full montage, every training label
CEILING_SETTING = "labels_100pct"  # the one setting it is trained for: the ceiling of the all-labels probes
CEILING_STEPS = 400  # as bench_realism.py's ceiling
RESULT_FILE = "protocol.json"
_READ_CHUNK = 512


@dataclass
class ProtocolConfig:
    """What the protocol measures; the defaults are the issue's settings."""

    tasks: tuple[str, ...] = field(default_factory=studied_tasks)  # the task registry's studied tasks
    poolings: tuple[str, ...] = POOLINGS
    penalties: tuple[float, ...] = PENALTIES
    max_in_memory_gib: float = MAX_IN_MEMORY_GIB  # training features beyond this go to the streamed torch head
    baselines: tuple[str, ...] = BASELINES
    label_fractions: tuple[float, ...] = LABEL_FRACTIONS
    k_shots: tuple[int, ...] = K_SHOTS
    presets: tuple[str, ...] = MISSING_PRESETS
    masked: bool = True  # also train and select with each preset's channels only (else: missing at test time only)
    cross_cohort: bool = True
    ceiling_steps: int = CEILING_STEPS  # training steps of the supervised CNN ceiling per task (0: no ceiling)
    seed: int = 0  # draws of the label-fraction subjects and k-shot epochs, and the ceiling's training
    batch_size: int = 128


# --- features ----------------------------------------------------------------------------------------
@dataclass
class ModelFeatures:
    """One model's feature views: ``views[channel_view][feature_view] -> [N, D]`` over the protocol's epochs."""

    name: str
    views: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)


def protocol_datamodule(store: EpochStore) -> SleepDataModule:
    """The store's subject splits restricted to scored epochs (known stage): the epochs every task is read on.

    The same data module (and so the same feature-cache keys) as a Stage probe of ``main_finetune.py``: a
    quick start's cached features of the pre-trained and random-init backbones are read, not recomputed.
    """
    dm = SleepDataModule(store.root, task="downstream", eval_label="Stage", stage_classes=4)
    dm.store = store
    dm.setup()
    return dm


def backbone_features(name: str, backbone: torch.nn.Module, dm: SleepDataModule, channel_views: Sequence[str],
                      poolings: Sequence[str], cache_dir: Path, batch_size: int = 128,
                      view_splits: Mapping[str, Sequence[str]] | None = None,
                      log: Callable[[str], None] = print) -> ModelFeatures:
    """Every pooling of ``backbone`` over the data module's splits for each channel view, one pass per view.

    Features go through the feature cache in ``cache_dir`` (the first pooling's miss writes every pooling's
    file). ``view_splits`` names the splits a view needs (default all three; a view only tested on needs
    "test"); rows of the other splits are NaN (never read).
    """
    digest = backbone_hash(backbone)
    keys = {split: {"backbone_hash": digest, "split_hash": dataset_split_hash(dm, split, with_labels=False)}
            for split in SPLITS}
    out = ModelFeatures(name)
    for view in channel_views:
        t0 = time.perf_counter()
        channels = None if view == "full" else ChannelSet.from_spec(view)
        wanted = (view_splits or {}).get(view, SPLITS)
        parts: dict[str, list[np.ndarray]] = {p: [] for p in poolings}
        for split in SPLITS:
            n = len(dm.datasets[split])
            for pooling in poolings:
                if split not in wanted:
                    parts[pooling].append(np.full((n, 1), np.nan, np.float32))
                    continue
                fs, _ = cached_features(cache_dir, keys[split], backbone, full_loader(dm, split, batch_size),
                                        pooling=pooling, channels=channels,
                                        also_poolings=[p for p in poolings if p != pooling])
                parts[pooling].append(fs.features)
        out.views[view] = {p: _stack(parts[p]) for p in poolings}
        log(f"  features: {name}, {view} channels, {len(poolings)} poolings ({time.perf_counter() - t0:.0f} s)")
    return out


def _stack(parts: list[np.ndarray]) -> np.ndarray:
    """Split blocks one under the other; a skipped split's NaN block takes the others' width."""
    width = max(p.shape[1] for p in parts)
    return np.concatenate([p if p.shape[1] == width else np.full((p.shape[0], width), np.nan, np.float32)
                           for p in parts])


def _read_signals(store: EpochStore, rows: np.ndarray, fn: Callable[[np.ndarray, np.ndarray], np.ndarray]
                  ) -> np.ndarray:
    parts = [fn(store.read(rows[i:i + _READ_CHUNK]), store.channel_masks(rows[i:i + _READ_CHUNK]))
             for i in range(0, rows.size, _READ_CHUNK)]
    return np.concatenate(parts)


def _yasa_only(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """YASA-style features with only YASA's channels computed (the others cost time and are dropped)."""
    from osf.evaluation.baselines import YASA_CHANNELS

    keep = np.isin(np.asarray(config.CHANNELS), YASA_CHANNELS)
    return yasa_style(x, mask & keep)


BASELINE_CHANNELS: dict[str, Callable[[], np.ndarray]] = {
    "power48": lambda: np.repeat(np.arange(config.NUM_CHANNELS), 4),
    "yasa_style": lambda: __import__("osf.downstream.ceilings", fromlist=["feature_channels"]).feature_channels()[
        yasa_style_columns()],
}


def baseline_features(name: str, store: EpochStore, rows: np.ndarray, channel_views: Sequence[str]) -> ModelFeatures:
    """A baseline's features on every channel, and each view's copy with the absent channels' columns zeroed."""
    full = _read_signals(store, rows, power48 if name == "power48" else _yasa_only)
    column_channel = BASELINE_CHANNELS[name]()
    out = ModelFeatures(name)
    for view in channel_views:
        keep = ChannelSet.from_spec(view).mask
        if name == "yasa_style" and not has_eeg(keep):
            continue  # YASA-style features need EEG: no row for this view
        out.views[view] = {name: np.where(keep[column_channel], full, 0.0).astype(np.float32)}
    return out


# --- fitting -----------------------------------------------------------------------------------------
def _splits(model: ModelFeatures, setting: Setting, labels: np.ndarray) -> tuple[dict, dict, dict] | None:
    if setting.train_view not in model.views or setting.test_view not in model.views:
        return None
    train_views, test_views = model.views[setting.train_view], model.views[setting.test_view]
    train = {v: Split(x[setting.train], labels[setting.train]) for v, x in train_views.items()}
    val = {v: Split(x[setting.val], labels[setting.val]) for v, x in train_views.items()}
    test = {v: x[setting.test] for v, x in test_views.items()}
    return train, val, test


def fit_setting(model: ModelFeatures, setting: Setting, labels: np.ndarray, num_classes: int,
                penalties: Sequence[float], seed: int = 0, fitted: dict | None = None,
                max_in_memory_gib: float = MAX_IN_MEMORY_GIB) -> ProbeFit | None:
    """The grid of ``model``'s feature views on ``setting`` (None when the model has no such channel view).

    ``fitted`` (a dict kept across settings) holds the fits by model, training rows and channel view: a
    setting that differs from an earlier one only in its test channels reuses that head (same choice).
    """
    parts = _splits(model, setting, labels)
    if parts is None:
        return None
    key = (model.name, setting.train_view, setting.train.tobytes(), setting.val.tobytes())
    if fitted is not None and key in fitted:
        return fitted[key].on_other_test(parts[2])
    fit = fit_probe_grid(*parts, num_classes=num_classes, penalties=penalties, seed=seed,
                         max_in_memory_gib=max_in_memory_gib)
    if fitted is not None:
        fitted[key] = fit
    return fit


@dataclass
class EpochIds:
    """Per-epoch identity of the protocol's rows (what a predictions file carries)."""

    subject_ids: np.ndarray
    recording_ids: np.ndarray
    epoch_index: np.ndarray
    dataset: np.ndarray
    split: np.ndarray

    @classmethod
    def of(cls, store: EpochStore, rows: np.ndarray) -> EpochIds:
        """Ids of ``rows`` of the store's index."""
        index = store.index.iloc[rows]
        # recording ids as the probes' predictions files carry them, so the two pair up epoch by epoch
        return cls(index["subject_id"].to_numpy(dtype=str), index["recording_id"].to_numpy(dtype=str),
                   index["epoch_index"].to_numpy(np.int64), index["dataset"].to_numpy(dtype=str),
                   index["split"].to_numpy(dtype=str))


def _save(out: Path, ids: EpochIds, setting: Setting, labels: np.ndarray, fit: ProbeFit) -> Path:
    rows = setting.test
    pred = {"labels": labels[rows], "proba": fit.proba["test"].astype(np.float32), "subject_ids": ids.subject_ids[rows],
            "recording_ids": ids.recording_ids[rows], "epoch_index": ids.epoch_index[rows]}
    return save_predictions(pred, out, fit.threshold)


def _test_score(task: str, labels: np.ndarray, proba: np.ndarray, threshold: float | None) -> float:
    from osf.downstream.metrics import binary_scalars, multiclass_scalars

    keep = labels >= 0
    scores = (binary_scalars(labels[keep], proba[keep], threshold if threshold is not None else 0.5)
              if proba.shape[1] == 2 else multiclass_scalars(labels[keep], proba[keep]))
    return scores[get_task(task).reporting_metric]


def run_task(task: str, models: Sequence[ModelFeatures], ids: EpochIds, store: EpochStore, rows: np.ndarray,
             cfg: ProtocolConfig, out_dir: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Every setting of one task for every model; predictions under ``out_dir/<task>/<setting>/``."""
    labels, names = task_labels(store.index[config.LABEL_COLUMNS[task]].to_numpy()[rows], task, 4)
    table = EpochTable(ids.split, ids.subject_ids, ids.dataset, labels)
    settings, skipped = standard_settings(table, len(names), cfg.seed, cfg.label_fractions, cfg.k_shots, cfg.presets,
                                          cfg.cross_cohort, cfg.masked)
    record: dict[str, Any] = {"metric": get_task(task).reporting_metric, "classes": list(names), "skipped": skipped, "settings": {}}
    fitted: dict = {}
    for setting in settings:
        entry = record["settings"].setdefault(setting.name, {"n_train": int(setting.train.size),
                                                             "n_test": int(setting.test.size), "models": {}})
        for model in models:
            t0 = time.perf_counter()
            try:
                fit = fit_setting(model, setting, labels, len(names), cfg.penalties, cfg.seed, fitted,
                                  cfg.max_in_memory_gib)
            except ValueError as err:  # e.g. one subject's epochs hold one class: recorded, not fatal
                entry["models"][model.name] = {"skipped": str(err)}
                continue
            if fit is None:
                continue
            path = _save(out_dir / config.LABEL_COLUMNS[task] / setting.name / f"{model.name}.npz", ids, setting,
                         labels, fit)
            entry["models"][model.name] = {"test": _test_score(task, labels[setting.test], fit.proba["test"], fit.threshold),
                                           "predictions": str(path.relative_to(out_dir)),
                                           "seconds": time.perf_counter() - t0, **fit.record()}
        log(f"  {task:20s} {setting.name:34s} " + "  ".join(
            f"{m}={v['test']:.3f}" for m, v in entry["models"].items() if "test" in v))
    return record


def supervised_ceiling(store_dir: str | Path, task: str, cfg: ProtocolConfig, ceiling_dir: Path,
                       log: Callable[[str], None] = print) -> dict[str, Any]:
    """The supervised CNN on the full montage with every training label: its test score and predictions.

    Kept in ``ceiling_dir/<task>/`` and reused while its steps and seed are the same: it depends on the store
    only, so every training seed of one corpus reads the same ceiling.
    """
    from osf.downstream.ceilings import RESULT_FILE as CEILING_RESULT
    from osf.downstream.ceilings import run_ceiling

    out = ceiling_dir / config.LABEL_COLUMNS[task]
    made = {"steps": cfg.ceiling_steps, "seed": cfg.seed, "store": str(Path(store_dir).resolve())}
    stamp = out / "protocol_ceiling.json"
    if not (stamp.is_file() and json.loads(stamp.read_text()) == made and (out / CEILING_RESULT).is_file()):
        t0 = time.perf_counter()
        run_ceiling(CEILING, store_dir, "full", task, seed=cfg.seed, max_steps=cfg.ceiling_steps, output_dir=out)
        atomic_write_text(stamp, json.dumps(made) + "\n")
        log(f"  ceiling: {task}, supervised CNN, {cfg.ceiling_steps} steps ({time.perf_counter() - t0:.0f} s)")
    path = Path(json.loads((out / CEILING_RESULT).read_text())["predictions_path"]).resolve()
    pred = load_predictions(path)
    threshold = float(pred["threshold"])
    return {"test": _test_score(task, pred["labels"], pred["proba"], threshold if math.isfinite(threshold) else None),
            "predictions": str(path), "steps": cfg.ceiling_steps}


def run_protocol(store_dir: str | Path, backbones: Mapping[str, torch.nn.Module], out_dir: str | Path,
                 cfg: ProtocolConfig | None = None, cache_dir: str | Path | None = None,
                 log: Callable[[str], None] = print, meta: Mapping[str, Any] | None = None,
                 ceiling_dir: str | Path | None = None) -> dict[str, Any]:
    """The protocol on ``store_dir`` for ``backbones`` (name -> module) and the baselines; writes ``protocol.json``.

    With ``cfg.ceiling_steps`` the supervised CNN ceiling joins the all-labels setting, kept in ``ceiling_dir``
    (default ``out_dir/ceilings``; give the corpus's own folder to share it between training seeds).
    """
    cfg = cfg or ProtocolConfig()
    out_dir = Path(out_dir)
    store = EpochStore(store_dir)
    dm = protocol_datamodule(store)
    rows = np.concatenate([dm.datasets[s].rows for s in SPLITS])
    views = ("full", *cfg.presets)
    # a preset only tested on (no masked setting) needs the test split's features alone
    view_splits = {p: SPLITS if cfg.masked else ("test",) for p in cfg.presets}
    t0 = time.perf_counter()
    cache = Path(cache_dir) if cache_dir is not None else out_dir / "feature_cache"
    models = [backbone_features(n, b, dm, views, cfg.poolings, cache, cfg.batch_size, view_splits, log)
              for n, b in backbones.items()]
    models += [baseline_features(n, store, rows, views) for n in cfg.baselines]
    ids = EpochIds.of(store, rows)
    record: dict[str, Any] = {"config": asdict(cfg), "store": str(store_dir), "meta": dict(meta or {}),
                              "models": [m.name for m in models], "features_s": time.perf_counter() - t0, "tasks": {}}
    out_dir.mkdir(parents=True, exist_ok=True)
    for task in cfg.tasks:  # the record is rewritten after each task: a killed run keeps the tasks it finished
        record["tasks"][task] = run_task(task, models, ids, store, rows, cfg, out_dir, log)
        if cfg.ceiling_steps > 0 and CEILING_SETTING in record["tasks"][task]["settings"]:
            ceiling = supervised_ceiling(store_dir, task, cfg, Path(ceiling_dir or out_dir / "ceilings"), log)
            record["tasks"][task]["settings"][CEILING_SETTING]["models"][CEILING] = ceiling
        record["elapsed_s"] = time.perf_counter() - t0
        atomic_write_text(out_dir / RESULT_FILE, json.dumps(record, indent=1, default=float) + "\n")
    return record


# --- across seeds ------------------------------------------------------------------------------------
def compare_runs(run_dirs: Sequence[str | Path], a: str, b: str, n_boot: int = 1000, seed: int = 0
                 ) -> dict[str, dict[str, SeedLevelDifference]]:
    """``a - b`` per task and setting over protocol runs (one per seed), where every run has both models."""
    records = [(Path(d), json.loads((Path(d) / RESULT_FILE).read_text())) for d in run_dirs]
    out: dict[str, dict[str, SeedLevelDifference]] = {}
    for task, task_record in records[0][1]["tasks"].items():
        for setting in task_record["settings"]:
            pairs, labels = [], []
            for d, rec in records:
                models = rec["tasks"].get(task, {}).get("settings", {}).get(setting, {}).get("models", {})
                if "predictions" in models.get(a, {}) and "predictions" in models.get(b, {}):
                    pairs.append((load_predictions(d / models[a]["predictions"]),
                                  load_predictions(d / models[b]["predictions"])))
                    labels.append(str(rec.get("meta", {}).get("seed", d.name)))
            if pairs:
                out.setdefault(task, {})[setting] = seed_level_difference(
                    pairs, get_task(task).reporting_metric, labels, n_boot=n_boot, seed=seed)
    return out


def format_comparison(comparison: Mapping[str, Mapping[str, SeedLevelDifference]], a: str, b: str) -> str:
    """Text table: per task and setting the per-seed rows, then the seed-level verdict."""
    lines = [(f"{a} minus {b} (test; per seed: subject-bootstrap CI; pooled: hierarchical bootstrap over seeds "
             "then subjects, and the t-test across seeds)")]
    for task, settings in comparison.items():
        lines.append(f"\n{task} ({next(iter(settings.values())).metric})      {a:>7s} {b:>7s}    diff")
        for setting, result in settings.items():
            rows = format_seed_rows(result, setting)
            lines += rows if result.n_seeds > 1 else rows[-1:]
    return "\n".join(lines)


def mean_test(run_dirs: Sequence[str | Path]) -> dict[str, dict[str, dict[str, float]]]:
    """Mean test metric over runs per task, setting and model (the table's model columns)."""
    sums: dict[str, dict[str, dict[str, list[float]]]] = {}
    for d in run_dirs:
        rec = json.loads((Path(d) / RESULT_FILE).read_text())
        for task, t in rec["tasks"].items():
            for setting, s in t["settings"].items():
                for model, m in s["models"].items():
                    if "test" in m and math.isfinite(m["test"]):
                        sums.setdefault(task, {}).setdefault(setting, {}).setdefault(model, []).append(m["test"])
    return {t: {s: {m: float(np.mean(v)) for m, v in ms.items()} for s, ms in ss.items()} for t, ss in sums.items()}

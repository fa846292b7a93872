"""The night-level run (``main_finetune.py --eval_level night``): one JSON, ``results.csv`` row and model per night model."""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from osf import config
from osf.downstream.inputs import record_header, run_identity
from osf.downstream.metrics import choose_threshold
from osf.downstream.night.metrics import evaluate_nights
from osf.downstream.night.models import NightFit, predict_nights, save_night_model, train_night_model
from osf.downstream.night.nights import (
    EpochFeatures,
    NightSet,
    check_night_counts,
    load_epoch_features,
    night_sets,
)
from osf.downstream.night.tables import NightTarget, check_variable, load_subject_tables
from osf.downstream.results import append_results_row, results_row, utc_timestamp, write_run_json
from osf.downstream.run_config import NIGHT_MODELS, DownstreamConfig, NightConfig

log = logging.getLogger(__name__)


def check_night_config(cfg: DownstreamConfig) -> tuple[NightTarget, list[str]]:
    """Flag checks of a night-level run (before any feature is extracted); returns target and night models."""
    night = cfg.night
    if not night.target_variable:
        raise ValueError("--eval_level night needs --target_variable (e.g. nsrr_ahi_hp3r_aasm15, nsrr_age)")
    if not night.subject_tables:
        raise ValueError("--eval_level night needs --subject_tables: the raw data folder holding "
                         "<cohort>/datasets/*.csv (the --input_dir given to main_preprocess.py)")
    if cfg.finetune_backbone or cfg.n_train_samples:
        raise ValueError("--eval_level night trains on cached frozen features: drop --finetune_backbone / --n_train_samples")
    if cfg.mask_train_presets:
        raise ValueError("--eval_level night trains on the features of one montage: drop --mask_train_presets")
    models = night.model_list
    bad = [m for m in models if m not in NIGHT_MODELS]
    if bad or not models:
        raise ValueError(f"unknown --night_models {bad or night.models!r}; choose from {list(NIGHT_MODELS)}")
    if night.max_steps < 1 or night.eval_every < 1:
        raise ValueError(f"night models need --max_steps and --eval_every >= 1, got {night.max_steps} and "
                         f"{night.eval_every}")
    config.resolve_channel_preset(cfg.eval_channels)
    return NightTarget(night.target_variable, night.target_threshold), models


def _fit_and_evaluate(night: NightConfig, kind: str, sets: dict[str, NightSet], class_names: tuple[str, ...] | None,
                      *, seed: int, device: str, n_boot: int) -> tuple[NightFit, dict, float | None]:
    """Train the night model ``kind`` with ``night``'s settings; threshold on validation; val and test metrics."""
    fit = train_night_model(
        sets["train"], sets["val"], kind, None if class_names is None else len(class_names),
        max_steps=night.max_steps, lr=night.lr, weight_decay=night.weight_decay, eval_every=night.eval_every,
        batch_size=night.batch_size, d_model=night.d_model, seed=seed, device=device)
    preds = {s: predict_nights(fit, sets[s].features, device=device) for s in ("val", "test")}
    threshold = None
    if class_names is not None and len(class_names) == 2:
        threshold = choose_threshold(sets["val"].y, preds["val"])
    train_mean = float(np.mean(sets["train"].y)) if class_names is None else 0.0
    metrics = {s: evaluate_nights(sets[s].y, preds[s], sets[s].subject_ids, class_names, threshold, train_mean,
                                  n_boot, seed) for s in ("val", "test")}
    return fit, metrics, threshold


@dataclass
class NightData:
    """The nights of a run per split with their targets, and what was skipped or counted on the way."""

    target: NightTarget
    sets: dict[str, NightSet]
    class_names: tuple[str, ...] | None  # None: regression
    skipped: dict[str, Any]  # per split: nights without a target
    counts: dict[str, dict]  # per split: subjects per class (or subjects, regression)
    datasets: list[str]  # the cohorts whose subject tables were read


def _night_datasets(cfg: DownstreamConfig) -> list[str]:
    """The cohorts of the run: ``--downstream_dataset_name``, else every non-pretrain dataset of the store."""
    index_path = Path(cfg.data_dir) / "index.parquet"
    if not index_path.is_file():
        raise FileNotFoundError(f"{cfg.data_dir}: not an epoch store (no index.parquet)")
    index = pd.read_parquet(index_path, columns=["dataset", "cohort_group"])
    return cfg.datasets or sorted(index.loc[index["cohort_group"] != "pretrain", "dataset"].unique())


def _run_id(cfg: DownstreamConfig, ef: EpochFeatures, target: NightTarget, kind: str, timestamp: str) -> str:
    if cfg.run_name:
        return f"{cfg.run_name}_{kind}"
    task = re.sub(r"[^A-Za-z0-9_.=-]+", "", target.name.replace(">=", "_ge"))
    return f"{ef.inputs.model_name(cfg)}_{task}_night_{kind}_s{cfg.seed}_{timestamp}"


def _run_night_model(cfg: DownstreamConfig, ef: EpochFeatures, data: NightData, kind: str, t_start: float
                     ) -> dict[str, Any]:
    """Train and evaluate one night model; write ``night_<kind>.pt``, its run JSON and ``results.csv`` row."""
    fit, metrics, threshold = _fit_and_evaluate(cfg.night, kind, data.sets, data.class_names, seed=cfg.seed,
                                                device=cfg.device, n_boot=cfg.n_boot)
    timestamp, setting, target = utc_timestamp(), f"night_{kind}", data.target
    identity = run_identity(cfg, ef.inputs, run_id=_run_id(cfg, ef, target, kind, timestamp), timestamp=timestamp,
                            task=target.name, setting=setting, pretrain_samples=cfg.pretrain_samples,
                            dataset=cfg.downstream_dataset_name or "+".join(data.datasets), train_channels="full")
    output_dir = Path(cfg.output_dir)
    model_path = save_night_model(fit, output_dir / f"night_{kind}.pt", target, data.class_names, threshold,
                                  ef.inputs.metadata)
    json_path = output_dir / f"{identity.run_id}.json"
    record = {
        **record_header(cfg, ef.inputs, identity),
        "task": {"eval_level": "night", "target_variable": target.variable, "target_threshold": target.threshold,
                 "kind": "regression" if data.class_names is None else "classification", "name": target.name},
        "class_names": list(data.class_names) if data.class_names else None,
        "setting": {"name": setting, "night_model": kind, "pooling": cfg.pooling, "eval_channels": cfg.eval_channels},
        "selection": {"metric": fit.selection_metric, "best_step": fit.best_step, "best_val_score": fit.best_score,
                      "threshold": threshold, "history": fit.history},
        "timings": {**ef.inputs.timings, "train_s": fit.train_seconds, "total_s": time.perf_counter() - t_start},
        "metrics": metrics, "nights": {"subjects_per_class": data.counts, "skipped_missing_target": data.skipped},
        "artifacts": {"night_model": str(model_path), "results_csv": str(cfg.results_csv_path), "json": str(json_path)},
    }
    write_run_json(record, json_path)
    append_results_row(cfg.results_csv_path, results_row(
        identity, metrics, n_skipped_nights=sum(v["n_skipped"] for v in data.skipped.values()),
        train_s=fit.train_seconds, total_s=time.perf_counter() - t_start, json_path=str(json_path)))
    log.info("night-level %s: wrote %s and a row of %s", kind, json_path, cfg.results_csv_path)
    return record


def run_night_level(cfg: DownstreamConfig) -> dict[str, Any]:
    """Night-level run: one JSON, one ``results.csv`` row and one ``night_<model>.pt`` per night model.

    Returns ``{"runs": [record per model], "skipped": ..., "counts": ...}``.
    """
    t_start = time.perf_counter()
    target, models = check_night_config(cfg)
    present = _night_datasets(cfg)
    tables = {d: load_subject_tables(d, cfg.night.subject_tables) for d in present}
    check_variable(target.variable, tables)  # before the backbone runs
    ef = load_epoch_features(cfg)
    sets, class_names, skipped = night_sets(ef, tables, target)
    data = NightData(target, sets, class_names, skipped, check_night_counts(sets, class_names), present)
    Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
    runs = [_run_night_model(cfg, ef, data, kind, t_start) for kind in models]
    return {"runs": runs, "skipped": skipped, "counts": data.counts, "run_id": runs[0]["run_id"],
            "metrics": runs[0]["metrics"]}

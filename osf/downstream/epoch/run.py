"""The epoch-level run: linear probe (default), full fine-tuning or k-shot, evaluated and written.

Everything that can be wrong with the inputs (checkpoint, eval label, splits, k, channel preset) is
checked before any feature is extracted or any step is trained. The steps:

1. :func:`~osf.downstream.inputs.load_inputs`: backbone, store (opened once), splits;
2. per seed, :class:`ProbeSeeds` (``cfg.probe``) or :class:`FinetuneSeeds` (``cfg.finetune``) trains a
   :class:`SeedFit`, which :func:`evaluate_seed` turns into a :class:`SeedResult`; :class:`BestSeed`
   keeps the seed with the best validation score (its classifier is the one exported);
3. :func:`write_outputs`: the run JSON, a ``results.csv`` row, the test predictions and ``classifier.pt``.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from osf import config
from osf.downstream.classifier import SleepClassifier, save_classifier
from osf.downstream.epoch.fewshot import aggregate_over_seeds, sample_k_per_class
from osf.downstream.epoch.linear_probe import default_selection_metric, predict_proba, train_linear_probe
from osf.downstream.epoch.presets import VALIDATION_KEY, preset_kappas
from osf.downstream.features import FeatureSet
from osf.downstream.inputs import (
    SPLITS,
    DownstreamInputs,
    build_datamodule,
    check_splits,
    extract_features,
    full_loader,
    load_inputs,
    preset_datamodule,
    record_header,
    run_identity,
)
from osf.downstream.metrics import choose_threshold, evaluate_predictions, save_predictions
from osf.downstream.results import RunIdentity, append_results_row, results_row, utc_timestamp, write_run_json
from osf.downstream.run_config import (
    DownstreamConfig,
    FinetuneConfig,
    ProbeConfig,
    train_presets,
    validate_config,
)

__all__ = [
    "BestSeed", "FinetuneSeeds", "ProbeSeeds", "SeedFit", "SeedResult", "SeedRuns", "Selection", "evaluate_seed",
    "run_epoch_level", "run_seeds", "write_outputs",
]

log = logging.getLogger(__name__)
Predictions = dict[str, np.ndarray]  # proba, labels, subject_ids, recording_ids, epoch_index of one split


# --- typed records of a run -----------------------------------------------------------------------
@dataclass
class Selection:
    """How one seed's model was picked on validation."""

    metric: str
    best_step: int
    best_val_score: float
    history: list[dict]


@dataclass
class SeedFit:
    """One seed's trained model and its val/test predictions."""

    head: nn.Module
    backbone: nn.Module
    selection: Selection
    predictions: dict[str, Predictions]  # "val", "test"
    train_seconds: float


@dataclass
class SeedResult:
    """One seed's evaluation (an entry of ``metrics_per_seed``)."""

    seed: int
    metrics: dict[str, dict]  # "val", "test" -> metric -> value
    selection: Selection
    threshold: float | None  # binary tasks: chosen on validation
    train_s: float
    eval_s: float
    run_s: float


@dataclass
class BestSeed:
    """The seed with the best validation score: what the exported classifier holds."""

    result: SeedResult
    head: nn.Module  # a CPU copy: later seeds train the same modules again
    test_predictions: Predictions
    backbone_state: dict[str, torch.Tensor] | None  # fine-tuning with several seeds: this seed's backbone

    def beaten_by(self, result: SeedResult) -> bool:
        """True when ``result`` has a finite validation score above this one's."""
        score = result.selection.best_val_score
        return bool(np.isfinite(score) and not score <= self.result.selection.best_val_score)


# --- the two settings -------------------------------------------------------------------------------
class ProbeSeeds:
    """Linear probe (optionally k-shot) on the cached features of the frozen backbone, one seed at a time.

    With ``--mask_train_presets`` the probe trains on every training epoch seen through each preset and is
    selected on the validation epochs seen through each (one head for every montage); its reported val/test
    metrics stay those of ``--eval_channels``, and the kappa per preset goes into the classifier file.
    """

    def __init__(self, cfg: DownstreamConfig, inputs: DownstreamInputs) -> None:
        self.probe: ProbeConfig = cfg.probe
        self.k_shot, self.loss_type, self.device = cfg.n_train_samples, cfg.loss_type, cfg.device
        self.inputs = inputs
        bs, presets = cfg.probe.batch_size, train_presets(cfg)
        # shared by every seed; with presets the run's own training split (each epoch through a random one) is unused
        self.features = extract_features(cfg, inputs, bs, splits=("val", "test") if presets else SPLITS)
        self.fit_features = [extract_features(cfg, inputs, bs, preset_datamodule(cfg, inputs.store, p, bs),
                                              ("train", "val"), tag=p) for p in presets]
        self.fit_features = self.fit_features or [self.features]  # what the head trains and is selected on

    def fit(self, seed: int) -> SeedFit:
        """Train the probe of ``seed`` (its k-shot draw) and predict val and test."""
        probe, feats = self.probe, self.features
        trains = [f["train"] for f in self.fit_features]
        if self.k_shot:  # one draw of epochs, seen through each preset
            idx = sample_k_per_class(trains[0].labels, self.k_shot, seed, len(self.inputs.class_names),
                                     self.inputs.class_names)
            trains = [t.subset(idx) for t in trains]
        train, val = FeatureSet.concat(trains), FeatureSet.concat([f["val"] for f in self.fit_features])
        res = train_linear_probe(train.features, train.labels, val.features, val.labels,
                                 len(self.inputs.class_names), max_steps=probe.max_steps, lr=probe.lr,
                                 batch_size=probe.batch_size, weight_decay=probe.weight_decay,
                                 loss_type=self.loss_type, eval_every=probe.eval_every, seed=seed, device=self.device)
        preds = {split: {"proba": predict_proba(res.head, feats[split].features), "labels": feats[split].labels,
                         "subject_ids": feats[split].subject_ids, "recording_ids": feats[split].recording_ids,
                         "epoch_index": feats[split].epoch_index} for split in ("val", "test")}
        selection = Selection(res.selection_metric, res.best_step, res.best_score, res.history)
        return SeedFit(res.head, self.inputs.backbone, selection, preds, res.train_seconds)


class FinetuneSeeds:
    """Full fine-tuning with Lightning, one seed at a time, each from the same initial backbone.

    The data module already hides the channels outside the preset (val/test, and train with
    ``mask_train_channels``), so the module applies no preset itself.
    """

    def __init__(self, cfg: DownstreamConfig, inputs: DownstreamInputs) -> None:
        self.cfg, self.inputs = cfg, inputs
        several = len(cfg.seeds) > 1
        self.initial_state = copy.deepcopy(inputs.backbone.state_dict()) if several else None

    def fit(self, seed: int) -> SeedFit | None:
        """Fine-tune from the initial backbone with ``seed``; None on non-zero DDP ranks (they predict nothing)."""
        if self.initial_state is not None:
            self.inputs.backbone.load_state_dict(self.initial_state)
        dm = self.inputs.dm
        if self.cfg.n_train_samples:  # the data module draws the same k-shot epochs as the probe path does
            dm = build_datamodule(self.cfg, self.inputs.store, self.cfg.finetune.batch_size, seed,
                                  self.cfg.n_train_samples)
        return _finetune(self.cfg, dm, self.inputs.backbone, seed)


def _finetune(cfg: DownstreamConfig, dm: Any, backbone: nn.Module, seed: int) -> SeedFit | None:
    """Lightning fit of one seed (``cfg.finetune``'s settings); the module ends at its best validation step."""
    import pytorch_lightning as pl

    from osf.downstream.epoch.finetune import FinetuneModule, predict_loader, start_head_from_probe
    from osf.utils.quiet import quiet_lightning

    quiet_lightning()  # no Lightning banners/tips or third-party deprecations in the run's output
    t0 = time.perf_counter()
    pl.seed_everything(seed, workers=True)
    backbone.freeze_unused_()  # parameters unused by forward: DDP would wait for their gradient
    ft = cfg.finetune
    module = FinetuneModule(
        backbone, dm.num_classes, pooling=cfg.pooling, head_lr=ft.lr, backbone_lr=ft.lr * ft.backbone_lr_scale,
        layer_decay=ft.layer_decay, weight_decay=ft.weight_decay, warmup_steps=ft.warmup_steps,
        max_steps=ft.max_steps, loss_type=cfg.loss_type, class_counts=np.asarray(dm.class_counts).tolist(),
        selection_metric=default_selection_metric(dm.num_classes),
    )
    if ft.init_head:
        start_head_from_probe(module, ft.init_head, config.LABEL_COLUMNS[cfg.eval_label])
    trainer = _finetune_trainer(ft, cfg)
    trainer.fit(module, datamodule=dm)
    module.restore_best()
    if not trainer.is_global_zero:
        return None
    preds = {split: predict_loader(module, full_loader(dm, split, ft.batch_size, cfg.num_workers), device=cfg.device)
             for split in ("val", "test")}
    selection = Selection(module.selection_metric, module.best_step, module.best_score, module.history)
    return SeedFit(module.head, module.backbone, selection, preds, time.perf_counter() - t0)


def _finetune_trainer(ft: FinetuneConfig, cfg: DownstreamConfig) -> Any:
    """The Lightning Trainer of fine-tuning: validation every ``eval_every`` steps, curves as CSV, no checkpoints.

    ``ft`` sets the run's length and selection, ``cfg`` the hardware and the output folder.
    """
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import EarlyStopping, LearningRateMonitor
    from pytorch_lightning.loggers import CSVLogger

    callbacks: list[pl.Callback] = [LearningRateMonitor(logging_interval="step")]
    if ft.early_stopping:
        callbacks.append(EarlyStopping(monitor="val_select", mode="max", patience=ft.patience))
    return pl.Trainer(
        max_steps=ft.max_steps, accelerator=cfg.accelerator, devices=cfg.num_devices,
        strategy="ddp" if cfg.num_devices > 1 else "auto", precision=cfg.precision,
        val_check_interval=ft.eval_every, check_val_every_n_epoch=None, num_sanity_val_steps=0,
        # Training curves (loss, LR per group, validation selection metric) as CSV beside the run JSON.
        logger=CSVLogger(cfg.output_dir, name="finetune_logs"), log_every_n_steps=max(1, min(50, ft.eval_every)),
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=callbacks, default_root_dir=cfg.output_dir,
    )


# --- evaluation and best-seed bookkeeping -------------------------------------------------------------
def evaluate_seed(cfg: DownstreamConfig, fit: SeedFit, seed: int, class_names: tuple[str, ...], t0: float) -> SeedResult:
    """Metrics of val and test (a binary task's threshold chosen on validation); ``t0``: when the seed started."""
    t_eval = time.perf_counter()
    val = fit.predictions["val"]
    labelled = val["labels"] >= 0
    threshold = choose_threshold(val["labels"][labelled], val["proba"][labelled]) if len(class_names) == 2 else None
    metrics = {split: evaluate_predictions(pred["labels"], pred["proba"], pred["subject_ids"], pred["recording_ids"],
                                           class_names, threshold=threshold, n_boot=cfg.n_boot, seed=cfg.seed)
               for split, pred in fit.predictions.items()}
    return SeedResult(seed, metrics, fit.selection, threshold, fit.train_seconds, time.perf_counter() - t_eval,
                      time.perf_counter() - t0)


def _keep_if_best(best: BestSeed | None, result: SeedResult, fit: SeedFit, keep_backbone: bool) -> BestSeed:
    """``best``, or a new :class:`BestSeed` holding copies of ``fit``'s weights when ``result`` beats it."""
    if best is not None and not best.beaten_by(result):
        return best
    state = {k: v.detach().cpu().clone() for k, v in fit.backbone.state_dict().items()} if keep_backbone else None
    return BestSeed(result, copy.deepcopy(fit.head).cpu(), fit.predictions["test"], state)


@dataclass
class SeedRuns:
    """Every seed's result, the best seed, and the backbone its classifier is built on."""

    results: list[SeedResult]
    best: BestSeed
    backbone: nn.Module

    @property
    def metrics(self) -> dict[str, dict]:
        """The single seed's metrics, or mean / std / n over the seeds."""
        if len(self.results) == 1:
            return self.results[0].metrics
        return {split: aggregate_over_seeds([r.metrics[split] for r in self.results]) for split in ("val", "test")}


def run_seeds(cfg: DownstreamConfig, inputs: DownstreamInputs) -> SeedRuns | None:
    """Train and evaluate every seed; None on non-zero DDP ranks (they train, rank 0 writes)."""
    seeds = FinetuneSeeds(cfg, inputs) if cfg.finetune_backbone else ProbeSeeds(cfg, inputs)
    keep_backbone = cfg.finetune_backbone and len(cfg.seeds) > 1
    results: list[SeedResult] = []
    best, fit = None, None
    for seed in cfg.seeds:
        t0 = time.perf_counter()
        fit = seeds.fit(seed)
        if fit is None:
            continue
        results.append(evaluate_seed(cfg, fit, seed, inputs.class_names, t0))
        best = _keep_if_best(best, results[-1], fit, keep_backbone)
    if fit is None:
        return None
    if best.backbone_state is not None:
        fit.backbone.load_state_dict(best.backbone_state)
    return SeedRuns(results, best, fit.backbone)


# --- outputs ------------------------------------------------------------------------------------------
def _train_channels(cfg: DownstreamConfig, eval_channels: tuple[str, ...]) -> list[str]:
    return list(eval_channels) if cfg.mask_train_channels else list(config.CHANNELS)


def _classifier(cfg: DownstreamConfig, inputs: DownstreamInputs, runs: SeedRuns, eval_channels: tuple[str, ...],
                run_id: str) -> SleepClassifier:
    """The exported classifier: backbone + the best seed's head, label names, channel contract, threshold."""
    task = config.LABEL_COLUMNS[cfg.eval_label]
    threshold = runs.best.result.threshold
    return SleepClassifier(
        runs.backbone.cpu(), {task: runs.best.head}, {task: list(inputs.class_names)}, pooling=cfg.pooling,
        channels=_train_channels(cfg, eval_channels), backbone_metadata=inputs.metadata,
        thresholds={task: threshold} if threshold is not None else None,
        info={"run_id": run_id, "eval_label": cfg.eval_label, "setting": cfg.setting, "ckpt_hash": inputs.ckpt_hash,
              "seed": runs.best.result.seed, **_validated_on(cfg, runs)},
    )


def _validated_on(cfg: DownstreamConfig, runs: SeedRuns) -> dict[str, Any]:
    """The validation kappa of the montage the run was evaluated on (``--mask_train_presets`` adds every preset's)."""
    kappa = runs.best.result.metrics.get("val", {}).get("kappa")
    if not isinstance(kappa, (int, float)) or cfg.eval_channels not in config.CHANNEL_PRESETS:
        return {}
    return {VALIDATION_KEY: {cfg.eval_channels: float(kappa)}}


def _run_record(cfg: DownstreamConfig, inputs: DownstreamInputs, runs: SeedRuns, eval_channels: tuple[str, ...],
                identity: RunIdentity, timings: dict[str, Any], artifacts: dict[str, str | None]) -> dict[str, Any]:
    """The run JSON."""
    best = runs.best.result
    names = inputs.class_names
    per_seed = [{"seed": r.seed, "metrics": r.metrics, "best_step": r.selection.best_step} for r in runs.results]
    return {
        **record_header(cfg, inputs, identity),
        "data": inputs.dm.summary(),
        "task": {"eval_label": cfg.eval_label, "column": config.LABEL_COLUMNS[cfg.eval_label], "num_classes": len(names)},
        "class_names": list(names),
        "setting": {"name": cfg.setting, "finetune_backbone": cfg.finetune_backbone, "k_shot": cfg.n_train_samples,
                    "seeds": cfg.seeds, "pooling": cfg.pooling, "eval_channels": list(eval_channels),
                    "train_channels": _train_channels(cfg, eval_channels)},
        "selection": {**asdict(best.selection), "seed": best.seed, "threshold": best.threshold},
        "timings": timings,
        "metrics": runs.metrics,
        "metrics_per_seed": per_seed if len(per_seed) > 1 else None,
        "artifacts": artifacts,
    }


def _identity(cfg: DownstreamConfig, inputs: DownstreamInputs, n_seeds: int) -> RunIdentity:
    """The results-table identity of an epoch-level run (its run id is built here)."""
    timestamp = utc_timestamp()
    task = config.LABEL_COLUMNS[cfg.eval_label]
    run_id = cfg.run_name or (f"{inputs.model_name(cfg)}_{task}_{cfg.setting}_{cfg.eval_channels.replace(',', '+')}_"
                              f"s{cfg.seed}_{timestamp}")
    pretrain_samples = cfg.pretrain_samples if cfg.pretrain_samples is not None else inputs.metadata.get("pretrain_samples")
    return run_identity(cfg, inputs, run_id=run_id, timestamp=timestamp, task=cfg.eval_label, setting=cfg.setting,
                        pretrain_samples=pretrain_samples, k_shot=cfg.n_train_samples, n_seeds=n_seeds)


def _preset_scores(cfg: DownstreamConfig, inputs: DownstreamInputs, clf: SleepClassifier) -> dict | None:
    """With ``--mask_train_presets``: kappa per preset on val and test; the val ones go into ``clf.info``."""
    presets = train_presets(cfg)
    if not presets:
        return None
    task = config.LABEL_COLUMNS[cfg.eval_label]
    scores = preset_kappas(clf, task, inputs.dm, presets, batch_size=cfg.epoch_head.batch_size, device=cfg.device)
    clf.info[VALIDATION_KEY] = scores["val"]
    clf.info["train_presets"] = list(presets)
    return scores


def write_outputs(cfg: DownstreamConfig, inputs: DownstreamInputs, runs: SeedRuns, eval_channels: tuple[str, ...],
                  t_start: float) -> dict[str, Any]:
    """Write ``classifier.pt``, the test predictions, the run JSON and a ``results.csv`` row; return the record."""
    output_dir = Path(cfg.output_dir)
    timings = {**inputs.timings, "train_s": float(sum(r.train_s for r in runs.results)),
               "eval_s": float(sum(r.eval_s for r in runs.results))}
    identity = _identity(cfg, inputs, len(runs.results))
    output_dir.mkdir(parents=True, exist_ok=True)
    clf_path = None
    clf = _classifier(cfg, inputs, runs, eval_channels, identity.run_id)
    by_preset = _preset_scores(cfg, inputs, clf)
    if cfg.export_classifier:
        clf_path = save_classifier(clf, output_dir / "classifier.pt")
    json_path = output_dir / f"{identity.run_id}.json"
    # Per-epoch test predictions: paired comparisons of two runs on the same epochs (metrics.paired_difference).
    pred_path = save_predictions(runs.best.test_predictions, output_dir / f"{identity.run_id}_test_predictions.npz",
                                 threshold=runs.best.result.threshold)
    timings["total_s"] = time.perf_counter() - t_start
    artifacts = {"classifier": str(clf_path) if clf_path else None, "results_csv": str(cfg.results_csv_path),
                 "json": str(json_path), "test_predictions": str(pred_path)}
    record = _run_record(cfg, inputs, runs, eval_channels, identity, timings, artifacts)
    record["kappa_by_preset"] = by_preset
    write_run_json(record, json_path)
    append_results_row(cfg.results_csv_path, results_row(identity, record["metrics"], train_s=timings["train_s"],
                                                         total_s=timings["total_s"], json_path=str(json_path)))
    log.info("wrote %s, %s and a row of %s", json_path, clf_path, cfg.results_csv_path)
    return record


# --- the run ------------------------------------------------------------------------------------------
def run_epoch_level(cfg: DownstreamConfig) -> dict[str, Any] | None:
    """Probe or fine-tune (every seed), evaluate, and write the JSON, ``results.csv`` row and ``classifier.pt``.

    Returns the run record (``None`` on non-zero DDP ranks, which write nothing).
    """
    t_start = time.perf_counter()
    eval_channels = validate_config(cfg)
    inputs = load_inputs(cfg, cfg.epoch_head.batch_size)
    check_splits(inputs.dm, cfg.n_train_samples)
    runs = run_seeds(cfg, inputs)
    if runs is None:
        return None
    return write_outputs(cfg, inputs, runs, eval_channels, t_start)

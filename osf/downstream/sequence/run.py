"""A sequence-context run (``main_finetune.py --context_epochs K``): per-epoch probe and sequence head side by side.

Both heads train on the same cached features of the frozen backbone; each gets a run JSON and a
``results.csv`` row, the sequence head's with the test-metric difference to the per-epoch probe and
its paired subject-bootstrap CI. The exported ``classifier.pt`` carries both heads.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from osf import config, tasks
from osf.downstream.classifier import SleepClassifier, save_classifier
from osf.downstream.epoch.linear_probe import ProbeResult, predict_proba, train_linear_probe
from osf.downstream.features import FeatureSet
from osf.downstream.inputs import (
    DownstreamInputs,
    check_splits,
    extract_features,
    load_inputs,
    record_header,
    run_identity,
)
from osf.downstream.metrics import choose_threshold, evaluate_predictions
from osf.downstream.results import append_results_row, results_row, utc_timestamp, write_run_json
from osf.downstream.run_config import SEQUENCE_MODELS, DownstreamConfig, ProbeConfig, SequenceConfig
from osf.downstream.sequence.heads import (
    SequenceFit,
    paired_difference,
    predict_sequence_proba,
    train_sequence_head,
)

log = logging.getLogger(__name__)


def check_sequence_config(cfg: DownstreamConfig) -> None:
    """Flag checks of a sequence-context run (before any feature is extracted)."""
    seq = cfg.sequence
    if seq.context_epochs < 1:
        raise ValueError(f"--context_epochs must be >= 1, got {seq.context_epochs}")
    if seq.model not in SEQUENCE_MODELS:
        raise ValueError(f"unknown --sequence_model {seq.model!r}; choose from {list(SEQUENCE_MODELS)}")
    for name, level in (("probe", cfg.probe), ("sequence head", seq)):
        if level.max_steps < 1 or level.eval_every < 1:
            raise ValueError(f"the {name} needs --max_steps and --eval_every >= 1, got {level.max_steps} and "
                             f"{level.eval_every}")
    if cfg.finetune_backbone or cfg.n_train_samples:
        raise ValueError("--context_epochs trains on cached frozen features: drop --finetune_backbone / --n_train_samples")
    if cfg.mask_train_presets:
        raise ValueError("--context_epochs trains on the features of one montage: drop --mask_train_presets")
    if cfg.eval_label not in config.LABEL_COLUMNS:
        raise ValueError(f"unknown --eval_label {cfg.eval_label!r}; choose one of {list(config.LABEL_COLUMNS)}")
    config.resolve_channel_preset(cfg.eval_channels)


def _fit_heads(probe: ProbeConfig, seq: SequenceConfig, feats: dict[str, FeatureSet], num_classes: int, *,
               loss_type: str, seed: int, device: str) -> tuple[ProbeResult, SequenceFit]:
    """The per-epoch linear probe (``probe``) and the sequence head (``seq``) on the same features."""
    linear = train_linear_probe(
        feats["train"].features, feats["train"].labels, feats["val"].features, feats["val"].labels, num_classes,
        max_steps=probe.max_steps, lr=probe.lr, batch_size=probe.batch_size, weight_decay=probe.weight_decay,
        loss_type=loss_type, eval_every=probe.eval_every, seed=seed, device=device)
    sequence = train_sequence_head(
        feats["train"], feats["val"], num_classes, seq.context_epochs, seq.model, max_steps=seq.max_steps, lr=seq.lr,
        weight_decay=seq.weight_decay, batch_size=seq.batch_size, eval_every=seq.eval_every, d_model=seq.d_model,
        seed=seed, device=device)
    return linear, sequence


@dataclass
class HeadRun:
    """One of the two heads of a sequence-context run, evaluated on the same features as the other."""

    key: str  # "linear_probe" or "sequence"
    setting: str  # results-table setting, e.g. sequence_transformer_k10
    fit: ProbeResult | SequenceFit
    proba: dict[str, np.ndarray]  # "val", "test" -> [N, C]
    threshold: float | None  # binary tasks: chosen on validation
    metrics: dict[str, dict]  # "val", "test" -> metric -> value

    @property
    def selection(self) -> dict[str, Any]:
        """The record's ``selection`` entry."""
        return {"metric": self.fit.selection_metric, "best_step": self.fit.best_step,
                "best_val_score": self.fit.best_score, "threshold": self.threshold, "history": self.fit.history}


def _evaluate_head(cfg: DownstreamConfig, key: str, setting: str, fit: ProbeResult | SequenceFit,
                   proba: dict[str, np.ndarray], feats: dict[str, FeatureSet], names: tuple[str, ...]) -> HeadRun:
    """Threshold on validation (binary tasks) and the metrics of val and test."""
    val = feats["val"].labels
    threshold = choose_threshold(val[val >= 0], proba["val"][val >= 0]) if len(names) == 2 else None
    metrics = {s: evaluate_predictions(feats[s].labels, proba[s], feats[s].subject_ids, feats[s].recording_ids, names,
                                       threshold=threshold, n_boot=cfg.n_boot, seed=cfg.seed) for s in ("val", "test")}
    return HeadRun(key, setting, fit, proba, threshold, metrics)


def _compare(cfg: DownstreamConfig, per_epoch: HeadRun, sequence: HeadRun, test: FeatureSet, binary: bool
             ) -> dict[str, Any]:
    """Test metric of the sequence head minus the per-epoch probe's, with its paired subject-bootstrap CI."""
    metric = tasks.reporting_metric("epoch", "binary" if binary else "multiclass")
    return paired_difference(test.labels, per_epoch.proba["test"], sequence.proba["test"], test.subject_ids, metric,
                             per_epoch.threshold or 0.5, sequence.threshold or 0.5, cfg.n_boot, cfg.seed)


def _export(cfg: DownstreamConfig, inputs: DownstreamInputs, per_epoch: HeadRun, sequence: HeadRun) -> Path | None:
    """``classifier.pt``: the backbone, the per-epoch head and the sequence head (which prediction applies)."""
    if not cfg.export_classifier:
        return None
    task = config.LABEL_COLUMNS[cfg.eval_label]
    names = list(inputs.class_names)
    channels = config.resolve_channel_preset(cfg.eval_channels) if cfg.mask_train_channels else config.CHANNELS
    clf = SleepClassifier(
        inputs.backbone.cpu(), {task: per_epoch.fit.head}, {task: names}, pooling=cfg.pooling, channels=list(channels),
        backbone_metadata=inputs.metadata,
        thresholds={task: sequence.threshold} if len(names) == 2 else None,
        info={"eval_label": cfg.eval_label, "setting": sequence.setting, "ckpt_hash": inputs.ckpt_hash},
        sequence_heads={task: sequence.fit.head})
    return save_classifier(clf, Path(cfg.output_dir) / "classifier.pt")


def _write_head(cfg: DownstreamConfig, inputs: DownstreamInputs, head: HeadRun, comparison: dict[str, Any],
                clf_path: Path | None, t_start: float) -> dict[str, Any]:
    """The run JSON and ``results.csv`` row of one head; returns the record."""
    is_sequence = head.key == "sequence"
    model_name = inputs.model_name(cfg)
    timestamp = utc_timestamp()
    task = config.LABEL_COLUMNS[cfg.eval_label]
    run_id = f"{cfg.run_name}_{head.setting}" if cfg.run_name else f"{model_name}_{task}_{head.setting}_s{cfg.seed}_{timestamp}"
    identity = run_identity(cfg, inputs, run_id=run_id, timestamp=timestamp, task=cfg.eval_label, setting=head.setting,
                            pretrain_samples=cfg.pretrain_samples)
    json_path = Path(cfg.output_dir) / f"{run_id}.json"
    context = cfg.sequence.context_epochs if is_sequence else 0
    record = {
        **record_header(cfg, inputs, identity), "data": inputs.dm.summary(),
        "task": {"eval_label": cfg.eval_label, "column": task, "num_classes": len(inputs.class_names)},
        "class_names": list(inputs.class_names),
        "setting": {"name": head.setting, "context_epochs": context,
                    "sequence_model": cfg.sequence.model if is_sequence else None, "pooling": cfg.pooling},
        "selection": head.selection,
        "timings": {**inputs.timings, "train_s": head.fit.train_seconds, "total_s": time.perf_counter() - t_start},
        "metrics": head.metrics, "comparison": {"against": "linear_probe", **comparison} if is_sequence else None,
        "artifacts": {"classifier": str(clf_path) if clf_path else None, "results_csv": str(cfg.results_csv_path),
                      "json": str(json_path)},
    }
    write_run_json(record, json_path)
    row = results_row(identity, head.metrics, context_epochs=context, train_s=head.fit.train_seconds,
                      total_s=time.perf_counter() - t_start, json_path=str(json_path))
    if is_sequence:
        metric = comparison["metric"]
        row.update({f"test_{metric}_delta": comparison["delta"], f"test_{metric}_delta_ci_low": comparison["delta_ci95"][0],
                    f"test_{metric}_delta_ci_high": comparison["delta_ci95"][1]})
    append_results_row(cfg.results_csv_path, row)
    return record


def run_sequence_level(cfg: DownstreamConfig) -> dict[str, Any]:
    """Per-epoch probe and sequence head side by side: a JSON + ``results.csv`` row each, one ``classifier.pt``.

    Returns the sequence head's record (with ``comparison``: the metric difference and its CI).
    """
    t_start = time.perf_counter()
    check_sequence_config(cfg)
    batch_size = cfg.probe.batch_size  # feature extraction, as the probe's cache
    inputs = load_inputs(cfg, batch_size)
    check_splits(inputs.dm, None)
    feats = extract_features(cfg, inputs, batch_size)
    names = inputs.class_names
    linear, seq = _fit_heads(cfg.probe, cfg.sequence, feats, len(names), loss_type=cfg.loss_type, seed=cfg.seed,
                             device=cfg.device)
    seq_setting = f"sequence_{cfg.sequence.model}_k{cfg.sequence.context_epochs}"
    per_epoch = _evaluate_head(cfg, "linear_probe", "linear_probe", linear,
                               {s: predict_proba(linear.head, feats[s].features) for s in ("val", "test")}, feats, names)
    sequence = _evaluate_head(cfg, "sequence", seq_setting, seq,
                              {s: predict_sequence_proba(seq.head, feats[s]) for s in ("val", "test")}, feats, names)
    comparison = _compare(cfg, per_epoch, sequence, feats["test"], len(names) == 2)
    Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
    clf_path = _export(cfg, inputs, per_epoch, sequence)
    records = {head.key: _write_head(cfg, inputs, head, comparison, clf_path, t_start) for head in (per_epoch, sequence)}
    log.info("sequence context: test %s %+.3f over the per-epoch probe (95%% CI %s)", comparison["metric"],
             comparison["delta"], comparison["delta_ci95"])
    return {**records["sequence"], "per_epoch": records["linear_probe"]}

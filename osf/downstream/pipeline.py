"""One downstream run end to end: load a backbone, probe / fine-tune / k-shot, evaluate, write results.

:func:`run_downstream` is what ``main_pipelines/main_finetune.py`` calls. Everything that can be
wrong with the inputs (checkpoint, eval label, splits, k, channel preset) is checked before any
feature is extracted or any step is trained.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

import config
import train_config
from osf.datasets.datamodule import EvalSampler, SleepDataModule, collate_epochs
from osf.datasets.store import EpochStore
from osf.downstream.classifier import SleepClassifier, save_classifier
from osf.downstream.features import backbone_hash, cached_features, split_hash
from osf.downstream.fewshot import aggregate_over_seeds, sample_k_per_class
from osf.downstream.finetune import FinetuneModule, predict_loader
from osf.downstream.linear_probe import (
    check_labels,
    default_selection_metric,
    predict_proba,
    train_linear_probe,
)
from osf.downstream.loading import load_any_backbone
from osf.downstream.losses import LOSS_TYPES
from osf.downstream.metrics import choose_threshold, evaluate_predictions, save_predictions
from osf.downstream.results import append_results_row, flatten_metrics, write_run_json

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
# Fields left at None take train_config.DOWNSTREAM_DEFAULTS[linear_probe | finetune].
PER_SETTING_FIELDS = ("lr", "max_steps", "batch_size", "weight_decay", "eval_every", "layer_decay", "warmup_steps")


@dataclass
class DownstreamConfig:
    """Everything a downstream run depends on (the CLI flags of ``main_finetune.py``)."""

    data_dir: str
    output_dir: str
    ckpt_path: str = "none"
    psg_encoder_name: str | None = None
    model_name: str | None = None  # method label in the results table; default: the checkpoint's model_name
    downstream_dataset_name: str | None = None  # comma-separated datasets; None = every downstream cohort
    eval_label: str = "Stage"
    stage_classes: int = 4
    train_data_pct: float = 1.0
    n_train_samples: int | None = None  # k-shot: labelled epochs per class
    n_seeds: int | None = None  # default: 3 for k-shot, else 1
    max_steps: int | None = None
    lr: float | None = None  # head lr (fine-tuning: the backbone gets lr * backbone_lr_scale)
    backbone_lr_scale: float = 0.1
    layer_decay: float | None = None
    weight_decay: float | None = None
    warmup_steps: int | None = None
    batch_size: int | None = None
    eval_every: int | None = None
    finetune_backbone: bool = False
    use_mean_pool: bool = False  # the published flag: same as pooling="mean"
    pooling: str = "cls"  # cls, mean or groups (osf.downstream.features.POOLINGS)
    loss_type: str = "ce"
    eval_channels: str = "full"
    mask_train_channels: bool = False
    num_devices: int = 1
    accelerator: str = "auto"
    precision: str = "32-true"
    seed: int = 0
    early_stopping: bool = False
    patience: int = 5
    num_workers: int = 0
    n_boot: int = 1000
    feature_cache_dir: str | None = None  # default <output_dir>/feature_cache; "off" disables
    results_csv: str | None = None  # default <output_dir>/results.csv
    pretrain_samples: int | None = None  # for scaling plots; default from checkpoint metadata
    run_name: str | None = None
    export_classifier: bool = True
    # Night level and sequence context (osf/downstream/night.py, osf/downstream/sequence.py).
    eval_level: str = "epoch"  # "night": predict --target_variable of each night from its epoch embeddings
    context_epochs: int = 0  # > 0: epoch heads read +-K neighbouring epoch embeddings
    sequence_model: str = "transformer"  # "transformer" or "bigru" (with --context_epochs)
    night_models: str = "mean_std,attention,transformer"
    target_variable: str | None = None  # a subject-table variable, e.g. nsrr_ahi_hp3r_aasm15
    target_threshold: float | None = None  # binary task: target_variable >= threshold
    subject_tables: str | None = None  # raw data folder with <cohort>/datasets/*.csv
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.use_mean_pool:
            self.pooling = "mean"

    @property
    def setting(self) -> str:
        """``linear_probe`` / ``finetune``, with ``_<k>shot`` for few-shot runs."""
        base = "finetune" if self.finetune_backbone else "linear_probe"
        return f"{base}_{self.n_train_samples}shot" if self.n_train_samples else base

    @property
    def seeds(self) -> list[int]:
        """Seeds of the repeated runs (k-shot draws differ per seed)."""
        n = self.n_seeds if self.n_seeds is not None else (3 if self.n_train_samples else 1)
        return [self.seed + i for i in range(max(1, n))]


    def resolved(self) -> DownstreamConfig:
        """A copy with every unset per-setting field taken from ``train_config.DOWNSTREAM_DEFAULTS``."""
        defaults = train_config.DOWNSTREAM_DEFAULTS["finetune" if self.finetune_backbone else "linear_probe"]
        return replace(self, **{f: defaults[f] for f in PER_SETTING_FIELDS if getattr(self, f) is None})


# --- input checks (all before training) ---------------------------------------------------------
def validate_config(cfg: DownstreamConfig) -> tuple[str, ...]:
    """Check flag values of a resolved config; returns the eval channel names. Raises ``ValueError``."""
    if cfg.eval_label not in config.LABEL_COLUMNS:
        raise ValueError(f"unknown --eval_label {cfg.eval_label!r}; choose one of {list(config.LABEL_COLUMNS)}")
    if cfg.loss_type not in LOSS_TYPES:
        raise ValueError(f"unknown --loss_type {cfg.loss_type!r}; choose one of {list(LOSS_TYPES)}")
    if cfg.max_steps < 1:
        raise ValueError(f"--max_steps must be >= 1, got {cfg.max_steps}")
    if cfg.n_train_samples is not None and cfg.n_train_samples < 1:
        raise ValueError(f"--n_train_samples (k per class) must be >= 1, got {cfg.n_train_samples}")
    if not 0.0 < cfg.train_data_pct <= 1.0:
        raise ValueError(f"--train_data_pct must be in (0, 1], got {cfg.train_data_pct}")
    return config.resolve_channel_preset(cfg.eval_channels)  # raises on an empty / unknown preset


def check_store_has_label(store: EpochStore, eval_label: str, datasets: list[str] | None) -> None:
    """Raise when the store (restricted to ``datasets``) has no known value of ``eval_label``."""
    column = config.LABEL_COLUMNS[eval_label]
    index = store.index if datasets is None else store.index[store.index["dataset"].isin(datasets)]
    if column not in index.columns or not (index[column].to_numpy() >= 0).any():
        have = [name for name, col in config.LABEL_COLUMNS.items()
                if col in index.columns and (index[col].to_numpy() >= 0).any()]
        raise ValueError(
            f"{store.root}: the store has no {eval_label!r} labels (column {column!r} is all -1"
            f"{' in datasets ' + str(datasets) if datasets else ''}); labels it has: {have}"
        )


def check_splits(dm: SleepDataModule, k: int | None) -> dict[str, np.ndarray]:
    """Class counts per split; raises for a one-class split or k above a class size."""
    counts = {}
    for split in SPLITS:
        ds = dm.datasets[split]
        where = f"{dm.data_dir} {split} split ({dm.eval_label})"
        if len(ds) == 0:
            raise ValueError(f"{where}: no labelled epochs; the store's subject split left it empty")
        counts[split] = check_labels(ds.labels, dm.num_classes, where)
    if k is not None and k > counts["train"].min():
        short = {n: int(c) for n, c in zip(dm.label_names, counts["train"]) if c < k}
        raise ValueError(
            f"k-shot: k={k} per class is larger than the class size in the training split: {short}; "
            f"choose --n_train_samples <= {int(counts['train'].min())} or raise --train_data_pct"
        )
    return counts


def full_loader(dm: SleepDataModule, split: str, batch_size: int, num_workers: int = 0) -> DataLoader:
    """Every epoch of ``split`` in order on this process (no DDP sharding, nothing dropped)."""
    ds = dm.datasets[split]
    return DataLoader(ds, batch_size=batch_size, sampler=EvalSampler(ds, 1, 0), drop_last=False,
                      num_workers=num_workers, collate_fn=collate_epochs)


def dataset_split_hash(dm: SleepDataModule, split: str, with_labels: bool = True) -> str:
    """Hash of the epochs a split shows (store content identity + recording/epoch/label + channels).

    ``with_labels=False`` leaves the labels out: the key of the feature cache, whose features do not
    depend on the task, so the probes of several tasks over the same epochs share one extraction.
    """
    ds = dm.datasets[split]
    index = dm.store.index
    rows = ds.rows
    ids = (index["dataset"].to_numpy(dtype=object)[rows] + "/" + index["recording_id"].to_numpy(dtype=object)[rows])
    labels = ds.labels if with_labels else np.zeros(rows.size, dtype=np.int64)
    base = split_hash(ids, index["epoch_index"].to_numpy()[rows], labels)
    manifest = json.dumps(dm.store.manifest, sort_keys=True, default=str)
    keep = "all" if ds.keep_channels is None else "".join("1" if k else "0" for k in ds.keep_channels)
    return hashlib.sha256(f"{base}|{manifest}|{keep}".encode()).hexdigest()[:16]


def _device(cfg: DownstreamConfig) -> str:
    if cfg.accelerator == "cpu" or not torch.cuda.is_available():
        return "cpu"
    return "cuda"


def _autocast_dtype(cfg: DownstreamConfig) -> torch.dtype | None:
    if _device(cfg) != "cuda":
        return None
    return {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(cfg.precision)


def _evaluate_split(pred: dict, names: tuple[str, ...], cfg: DownstreamConfig, threshold: float | None) -> dict:
    return evaluate_predictions(pred["labels"], pred["proba"], pred["subject_ids"], pred["recording_ids"], names,
                                threshold=threshold, n_boot=cfg.n_boot, seed=cfg.seed)


# --- the two settings ------------------------------------------------------------------------------
def _run_probe(
    cfg: DownstreamConfig, dm: SleepDataModule, backbone: torch.nn.Module, bb_hash: str,
    names: tuple[str, ...], seed: int, features_cache: dict, timings: dict,
) -> tuple[torch.nn.Linear, dict, dict, float]:
    """Linear probe (optionally k-shot) on cached features; returns (head, selection info, val/test preds, seconds).

    ``features_cache`` (split -> FeatureSet) carries features across seeds within the run.
    """
    feats = {}
    cache_dir = None if cfg.feature_cache_dir == "off" else (cfg.feature_cache_dir or Path(cfg.output_dir) / "feature_cache")
    for split in SPLITS:
        if split not in features_cache:
            key = {"backbone_hash": bb_hash, "split_hash": dataset_split_hash(dm, split, with_labels=False)}
            fs, info = cached_features(cache_dir, key, backbone, full_loader(dm, split, cfg.batch_size, cfg.num_workers),
                                       pooling=cfg.pooling, device=_device(cfg), autocast_dtype=_autocast_dtype(cfg))
            # The file may come from another task's probe over the same epochs: this task's labels.
            features_cache[split] = replace(fs, labels=np.asarray(dm.datasets[split].labels, dtype=np.int64))
            timings[f"features_{split}_s"] = info.seconds
            timings[f"features_{split}_cache_hit"] = info.hit
        feats[split] = features_cache[split]
    train = feats["train"]
    if cfg.n_train_samples:
        train = train.subset(sample_k_per_class(train.labels, cfg.n_train_samples, seed, dm.num_classes, names))
    res = train_linear_probe(train.features, train.labels, feats["val"].features, feats["val"].labels, dm.num_classes,
                             max_steps=cfg.max_steps, lr=cfg.lr,
                             batch_size=cfg.batch_size, weight_decay=cfg.weight_decay, loss_type=cfg.loss_type,
                             eval_every=cfg.eval_every, seed=seed, device=_device(cfg))
    preds = {}
    for split in ("val", "test"):
        fs = feats[split]
        preds[split] = {"proba": predict_proba(res.head, fs.features), "labels": fs.labels,
                        "subject_ids": fs.subject_ids, "recording_ids": fs.recording_ids, "epoch_index": fs.epoch_index}
    selection = {"metric": res.selection_metric, "best_step": res.best_step, "best_val_score": res.best_score,
                 "history": res.history}
    return res.head, selection, preds, res.train_seconds


def _run_finetune(
    cfg: DownstreamConfig, dm: SleepDataModule, backbone: torch.nn.Module, seed: int, class_counts: np.ndarray,
) -> tuple[FinetuneModule, dict, dict, float, bool]:
    """Full fine-tuning with Lightning; returns (module at its best val step, selection, preds, seconds, is rank 0).

    The data module already hides the channels outside the preset (val/test, and train with
    ``mask_train_channels``), so the module applies no preset itself.
    """
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import EarlyStopping, LearningRateMonitor
    from pytorch_lightning.loggers import CSVLogger

    from osf.utils.quiet import quiet_lightning

    quiet_lightning()  # no Lightning banners/tips or third-party deprecations in the run's output
    t0 = time.perf_counter()
    pl.seed_everything(seed, workers=True)
    if getattr(backbone, "lead_emb", None) is not None:
        backbone.lead_emb.requires_grad_(False)  # unused by forward; DDP would wait for its gradient
    module = FinetuneModule(
        backbone, dm.num_classes, pooling=cfg.pooling, head_lr=cfg.lr, backbone_lr=cfg.lr * cfg.backbone_lr_scale,
        layer_decay=cfg.layer_decay, weight_decay=cfg.weight_decay, warmup_steps=cfg.warmup_steps,
        max_steps=cfg.max_steps, loss_type=cfg.loss_type, class_counts=np.asarray(class_counts).tolist(),
        selection_metric=default_selection_metric(dm.num_classes),
    )
    callbacks: list[pl.Callback] = [LearningRateMonitor(logging_interval="step")]
    if cfg.early_stopping:
        callbacks.append(EarlyStopping(monitor="val_select", mode="max", patience=cfg.patience))
    trainer = pl.Trainer(
        max_steps=cfg.max_steps, accelerator=cfg.accelerator, devices=cfg.num_devices,
        strategy="ddp" if cfg.num_devices > 1 else "auto", precision=cfg.precision,
        val_check_interval=cfg.eval_every, check_val_every_n_epoch=None, num_sanity_val_steps=0,
        # Training curves (loss, LR per group, validation selection metric) as CSV beside the run JSON.
        logger=CSVLogger(cfg.output_dir, name="finetune_logs"), log_every_n_steps=max(1, min(50, cfg.eval_every)),
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=callbacks, default_root_dir=cfg.output_dir,
    )
    trainer.fit(module, datamodule=dm)
    module.restore_best()
    preds = {}
    if trainer.is_global_zero:
        for split in ("val", "test"):
            preds[split] = predict_loader(module, full_loader(dm, split, cfg.batch_size, cfg.num_workers),
                                          device=_device(cfg))
    selection = {"metric": module.selection_metric, "best_step": module.best_step,
                 "best_val_score": module.best_score, "history": module.history}
    return module, selection, preds, time.perf_counter() - t0, trainer.is_global_zero


def run_downstream(cfg: DownstreamConfig) -> dict[str, Any] | None:
    """Run one downstream evaluation and write its JSON, ``results.csv`` row and ``classifier.pt``.

    Returns the run record (``None`` on non-zero DDP ranks, which write nothing).
    """
    if cfg.eval_level == "night":
        from osf.downstream.night import run_night_level
        return run_night_level(cfg)
    if cfg.eval_level != "epoch":
        raise ValueError(f"unknown --eval_level {cfg.eval_level!r}; choose epoch or night")
    if cfg.context_epochs:
        from osf.downstream.sequence import run_sequence_level
        return run_sequence_level(cfg)
    t_start = time.perf_counter()
    timings: dict[str, Any] = {}
    cfg = cfg.resolved()
    eval_channels = validate_config(cfg)
    output_dir = Path(cfg.output_dir)
    datasets = [d.strip() for d in cfg.downstream_dataset_name.split(",")] if cfg.downstream_dataset_name else None

    t0 = time.perf_counter()
    backbone, metadata, ckpt_hash = load_any_backbone(cfg.ckpt_path, cfg.psg_encoder_name, seed=cfg.seed)
    timings["load_backbone_s"] = time.perf_counter() - t0

    store = EpochStore(cfg.data_dir)
    check_store_has_label(store, cfg.eval_label, datasets)
    k_for_dm = cfg.n_train_samples if (cfg.finetune_backbone and cfg.n_train_samples) else None
    dm = SleepDataModule(
        cfg.data_dir, task="downstream", eval_label=cfg.eval_label, include_datasets=datasets,
        batch_size=cfg.batch_size, num_workers=cfg.num_workers, train_data_pct=cfg.train_data_pct,
        n_train_samples=None, channel_preset=cfg.eval_channels, mask_train_channels=cfg.mask_train_channels,
        seed=cfg.seed, stage_classes=cfg.stage_classes,
    )
    dm.setup()
    check_splits(dm, cfg.n_train_samples)
    names = tuple(dm.label_names)
    task = config.LABEL_COLUMNS[cfg.eval_label]
    split_hashes = {s: dataset_split_hash(dm, s) for s in SPLITS}
    bb_hash = backbone_hash(backbone)
    initial_state = copy.deepcopy(backbone.state_dict()) if cfg.finetune_backbone and len(cfg.seeds) > 1 else None

    runs: list[dict] = []
    best: dict | None = None  # the seed whose classifier is exported: best validation score
    features_cache: dict = {}
    is_zero = True
    for seed in cfg.seeds:
        t0 = time.perf_counter()
        if cfg.finetune_backbone:
            if initial_state is not None:
                backbone.load_state_dict(initial_state)
            if k_for_dm:  # the data module draws the same k-shot epochs as the probe path does
                dm_seed = SleepDataModule(
                    cfg.data_dir, task="downstream", eval_label=cfg.eval_label, include_datasets=datasets,
                    batch_size=cfg.batch_size, num_workers=cfg.num_workers, train_data_pct=cfg.train_data_pct,
                    n_train_samples=k_for_dm, channel_preset=cfg.eval_channels,
                    mask_train_channels=cfg.mask_train_channels, seed=seed, stage_classes=cfg.stage_classes,
                )
                dm_seed.setup()
            else:
                dm_seed = dm
            module, selection, preds, train_s, is_zero = _run_finetune(cfg, dm_seed, backbone, seed, dm_seed.class_counts)
            head, model_backbone = module.head, module.backbone
        else:
            head, selection, preds, train_s = _run_probe(cfg, dm, backbone, bb_hash, names, seed,
                                                          features_cache, timings)
            model_backbone = backbone
        if not is_zero:
            continue
        t_eval = time.perf_counter()
        threshold = choose_threshold(preds["val"]["labels"][preds["val"]["labels"] >= 0],
                                     preds["val"]["proba"][preds["val"]["labels"] >= 0]) if len(names) == 2 else None
        metrics = {"val": _evaluate_split(preds["val"], names, cfg, threshold),
                   "test": _evaluate_split(preds["test"], names, cfg, threshold)}
        run = {"seed": seed, "metrics": metrics, "selection": selection, "threshold": threshold,
               "train_s": train_s, "eval_s": time.perf_counter() - t_eval, "run_s": time.perf_counter() - t0}
        runs.append(run)
        score = selection["best_val_score"]
        if best is None or (np.isfinite(score) and not score <= best["selection"]["best_val_score"]):
            # later seeds fine-tune the same module again, so keep a copy of this one's weights
            best = {**run, "head": copy.deepcopy(head).cpu(), "test_predictions": preds["test"],
                    "backbone_state": ({k: v.detach().cpu().clone() for k, v in model_backbone.state_dict().items()}
                                       if cfg.finetune_backbone and len(cfg.seeds) > 1 else None)}
    if not is_zero:
        return None
    if best["backbone_state"] is not None:
        model_backbone.load_state_dict(best["backbone_state"])
    if len(runs) == 1:
        metrics = runs[0]["metrics"]
    else:
        metrics = {split: aggregate_over_seeds([r["metrics"][split] for r in runs]) for split in ("val", "test")}
    timings["train_s"] = float(sum(r["train_s"] for r in runs))
    timings["eval_s"] = float(sum(r["eval_s"] for r in runs))

    model_name = cfg.model_name or metadata.get("model_name") or "unknown"
    timestamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    run_id = cfg.run_name or f"{model_name}_{task}_{cfg.setting}_{cfg.eval_channels.replace(',', '+')}_s{cfg.seed}_{timestamp}"
    output_dir.mkdir(parents=True, exist_ok=True)

    clf = SleepClassifier(
        model_backbone.cpu(), {task: best["head"]}, {task: list(names)}, pooling=cfg.pooling,
        channels=list(eval_channels) if cfg.mask_train_channels else list(config.CHANNELS),
        backbone_metadata=metadata, thresholds={task: best["threshold"]} if best["threshold"] is not None else None,
        info={"run_id": run_id, "eval_label": cfg.eval_label, "setting": cfg.setting, "ckpt_hash": ckpt_hash,
              "seed": best["seed"]},
    )
    clf_path = save_classifier(clf, output_dir / "classifier.pt") if cfg.export_classifier else None
    json_path = output_dir / f"{run_id}.json"
    # Per-epoch test predictions: paired comparisons of two runs on the same epochs (metrics.paired_difference).
    pred_path = save_predictions(best["test_predictions"], output_dir / f"{run_id}_test_predictions.npz",
                                 threshold=best["threshold"])
    csv_path = Path(cfg.results_csv) if cfg.results_csv else output_dir / "results.csv"
    pretrain_samples = cfg.pretrain_samples if cfg.pretrain_samples is not None else metadata.get("pretrain_samples")
    timings["total_s"] = time.perf_counter() - t_start

    record = {
        "run_id": run_id,
        "timestamp": timestamp,
        "config": asdict(cfg),
        "backbone": {**metadata, "backbone_hash": bb_hash},
        "ckpt_hash": ckpt_hash,
        "split_hash": split_hashes,
        "data": dm.summary(),
        "task": {"eval_label": cfg.eval_label, "column": task, "num_classes": len(names)},
        "class_names": list(names),
        "setting": {"name": cfg.setting, "finetune_backbone": cfg.finetune_backbone, "k_shot": cfg.n_train_samples,
                    "seeds": cfg.seeds, "pooling": cfg.pooling, "eval_channels": list(eval_channels),
                    "train_channels": list(eval_channels) if cfg.mask_train_channels else list(config.CHANNELS)},
        "selection": {**best["selection"], "seed": best["seed"], "threshold": best["threshold"]},
        "timings": timings,
        "metrics": metrics,
        "metrics_per_seed": [{"seed": r["seed"], "metrics": r["metrics"], "best_step": r["selection"]["best_step"]}
                             for r in runs] if len(runs) > 1 else None,
        "artifacts": {"classifier": str(clf_path) if clf_path else None, "results_csv": str(csv_path), "json": str(json_path),
                      "test_predictions": str(pred_path)},
    }
    write_run_json(record, json_path)
    row = {
        "run_id": run_id, "timestamp": timestamp, "method": model_name, "model_name": model_name,
        "encoder_name": metadata.get("encoder_name"), "ckpt_path": str(cfg.ckpt_path), "ckpt_hash": ckpt_hash,
        "dataset": cfg.downstream_dataset_name or "+".join(dm.summary()["datasets"]), "task": cfg.eval_label,
        "setting": cfg.setting, "eval_channels": cfg.eval_channels,
        "train_channels": cfg.eval_channels if cfg.mask_train_channels else "full", "pooling": cfg.pooling,
        "k_shot": cfg.n_train_samples, "train_data_pct": cfg.train_data_pct, "pretrain_samples": pretrain_samples,
        "seed": cfg.seed, "n_seeds": len(runs), "split_hash": split_hashes["test"],
        **flatten_metrics(metrics), "train_s": timings["train_s"], "total_s": timings["total_s"],
        "json_path": str(json_path),
    }
    append_results_row(csv_path, row)
    log.info("wrote %s, %s and a row of %s", json_path, clf_path, csv_path)
    return record

"""What a downstream run reads before it trains: the backbone, the store (opened once), the splits, features.

Shared by the three kinds of run (``pipeline``: epoch-level probe / fine-tuning / k-shot,
``sequence``: sequence-context heads, ``night``: night-level targets), so that they load, check and
cache the same way: a Stage probe and a night-level run over the same epochs share one extraction.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn
from torch.utils.data import DataLoader

from osf import config
from osf.datasets.datamodule import EvalSampler, SleepDataModule, collate_epochs, freeze_before_fork
from osf.datasets.store import EpochStore
from osf.downstream.epoch.linear_probe import check_labels
from osf.downstream.features import FeatureSet, backbone_hash, cached_features
from osf.downstream.loading import load_any_backbone
from osf.downstream.results import RunIdentity
from osf.downstream.run_config import DownstreamConfig, train_presets

SPLITS = ("train", "val", "test")


# --- checks of the data against the task ----------------------------------------------------------
def check_store_has_label(store: EpochStore, eval_label: str, datasets: list[str] | None) -> None:
    """Raise when the store (restricted to ``datasets``) has no known value of ``eval_label``."""
    column = config.LABEL_COLUMNS[eval_label]
    rows = store.rows
    chosen = None if datasets is None else rows.per_row(rows.recordings["dataset"].isin(datasets).to_numpy())

    def labelled(col: str) -> bool:  # on the memory-mapped column, no per-row strings
        values = np.asarray(store.column(col))
        return bool((values[chosen] if chosen is not None else values).max(initial=-1) >= 0)

    if column not in rows.columns or not labelled(column):
        have = [name for name, col in config.LABEL_COLUMNS.items() if col in rows.columns and labelled(col)]
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


# --- loaders and identities of the splits ----------------------------------------------------------
def full_loader(dm: SleepDataModule, split: str, batch_size: int, num_workers: int = 0) -> DataLoader:
    """Every epoch of ``split`` in order on this process (no DDP sharding, nothing dropped)."""
    ds = dm.datasets[split]
    if num_workers > 0:
        freeze_before_fork()
    return DataLoader(ds, batch_size=batch_size, sampler=EvalSampler(ds, 1, 0), drop_last=False,
                      num_workers=num_workers, collate_fn=collate_epochs)


def dataset_split_hash(dm: SleepDataModule, split: str, with_labels: bool = True) -> str:
    """Hash of the epochs a split shows (store content identity + recording/epoch/label + channels).

    ``with_labels=False`` leaves the labels out: the key of the feature cache, whose features do not
    depend on the task, so the probes of several tasks over the same epochs share one extraction.
    Computed from integer codes (the store's recording of each row), not per-row strings.
    """
    ds = dm.datasets[split]
    store, rows = dm.store, ds.rows
    labels = ds.labels if with_labels else np.zeros(rows.size, dtype=np.int64)
    h = hashlib.sha256(store.content_digest().encode())
    for values in (store.rows.recording_of(rows), np.asarray(store.column("epoch_index"))[rows], labels):
        h.update(np.ascontiguousarray(values, dtype=np.int64).tobytes())
    keep = "all" if ds.keep_channels is None else "".join("1" if k else "0" for k in ds.keep_channels)
    h.update(keep.encode())
    return h.hexdigest()[:16]


def build_datamodule(cfg: DownstreamConfig, store: EpochStore, batch_size: int, seed: int,
                     n_train_samples: int | None = None) -> SleepDataModule:
    """The downstream data module of ``cfg`` on an already open ``store``, set up."""
    dm = SleepDataModule(
        cfg.data_dir, task="downstream", eval_label=cfg.eval_label, include_datasets=cfg.datasets,
        batch_size=batch_size, num_workers=cfg.num_workers, train_data_pct=cfg.train_data_pct,
        n_train_samples=n_train_samples, channel_preset=cfg.eval_channels,
        mask_train_channels=cfg.mask_train_channels, seed=seed, stage_classes=cfg.stage_classes,
        train_presets=train_presets(cfg),
    )
    dm.store = store  # opened (and its labels checked) once per run
    dm.setup()
    return dm


# --- the inputs of a run ------------------------------------------------------------------------------
@dataclass
class DownstreamInputs:
    """The backbone and the data of a run, loaded once, with what identifies them in the run record."""

    backbone: nn.Module
    metadata: dict[str, Any]
    ckpt_hash: str
    backbone_hash: str
    store: EpochStore
    dm: SleepDataModule
    split_hashes: dict[str, str]
    timings: dict[str, Any]
    feature_keys: dict[str, str] = dataclasses.field(default_factory=dict)  # split hashes without labels  # load_backbone_s, then features_<split>_s / _cache_hit once extracted

    @property
    def class_names(self) -> tuple[str, ...]:
        """Class names of the task (``eval_label``)."""
        return tuple(self.dm.label_names)

    def model_name(self, cfg: DownstreamConfig) -> str:
        """Method name of the results table: ``--model_name``, else the checkpoint's."""
        return cfg.model_name or self.metadata.get("model_name") or "unknown"


def load_inputs(cfg: DownstreamConfig, batch_size: int) -> DownstreamInputs:
    """Load the backbone, open the store, check it has the task's labels, and build the splits."""
    t0 = time.perf_counter()
    backbone, metadata, ckpt_hash = load_any_backbone(cfg.ckpt_path, cfg.psg_encoder_name, seed=cfg.seed)
    timings: dict[str, Any] = {"load_backbone_s": time.perf_counter() - t0}
    store = EpochStore(cfg.data_dir)
    check_store_has_label(store, cfg.eval_label, cfg.datasets)
    dm = build_datamodule(cfg, store, batch_size, cfg.seed)
    split_hashes = {s: dataset_split_hash(dm, s) for s in SPLITS}  # once per split and run
    feature_keys = {s: dataset_split_hash(dm, s, with_labels=False) for s in SPLITS}
    return DownstreamInputs(backbone, metadata, ckpt_hash, backbone_hash(backbone), store, dm, split_hashes, timings,
                            feature_keys)


def preset_datamodule(cfg: DownstreamConfig, store: EpochStore, preset: str, batch_size: int) -> SleepDataModule:
    """The run's splits with every epoch, training ones included, seen through the channel ``preset``."""
    through = dataclasses.replace(cfg, eval_channels=preset, mask_train_channels=True, mask_train_presets="")
    return build_datamodule(through, store, batch_size, cfg.seed)


def extract_features(cfg: DownstreamConfig, inputs: DownstreamInputs, batch_size: int,
                     dm: SleepDataModule | None = None, splits: tuple[str, ...] = SPLITS,
                     tag: str = "") -> dict[str, FeatureSet]:
    """Frozen-backbone features of ``splits`` of ``dm`` (default: the run's) through the feature cache, with the
    task's labels; ``tag`` names them in the run's timings (e.g. a preset's)."""
    features = {}
    own = dm is None
    dm = inputs.dm if dm is None else dm
    for split in splits:
        if len(dm.datasets[split]) == 0:
            raise ValueError(f"{cfg.data_dir} {split} split: no epochs; the store's subject split left it empty")
        # the key leaves the labels out: every task over the same epochs shares one extraction
        known = inputs.feature_keys.get(split) if own else None
        key = {"backbone_hash": inputs.backbone_hash,
               "split_hash": known or dataset_split_hash(dm, split, with_labels=False)}
        fs, info = cached_features(cfg.feature_cache, key, inputs.backbone,
                                   full_loader(dm, split, batch_size, cfg.num_workers), pooling=cfg.pooling,
                                   device=cfg.device, autocast_dtype=cfg.autocast_dtype,
                                   also_poolings=cfg.also_poolings)
        # the file may come from another task's run over the same epochs: this task's labels
        features[split] = dataclasses.replace(fs, labels=np.asarray(dm.datasets[split].labels, dtype=np.int64))
        name = f"features_{split}{'_' + tag if tag else ''}"
        inputs.timings[f"{name}_s"], inputs.timings[f"{name}_cache_hit"] = info.seconds, info.hit
    return features


# --- what identifies a run in its record and in results.csv --------------------------------------------
def run_identity(cfg: DownstreamConfig, inputs: DownstreamInputs, *, run_id: str, timestamp: str, task: str,
                 setting: str, pretrain_samples: int | None, dataset: str | None = None,
                 train_channels: str | None = None, k_shot: int | None = None, n_seeds: int = 1) -> RunIdentity:
    """The ``results.csv`` identity columns of a run on ``inputs`` (dataset: the flag, else the store's)."""
    model_name = inputs.model_name(cfg)
    return RunIdentity(
        run_id, timestamp, model_name, model_name, inputs.metadata.get("encoder_name"), str(cfg.ckpt_path),
        inputs.ckpt_hash, dataset or cfg.downstream_dataset_name or "+".join(inputs.dm.summary()["datasets"]), task,
        setting, cfg.eval_channels, train_channels or cfg.train_channels, cfg.pooling, k_shot, cfg.train_data_pct,
        pretrain_samples, cfg.seed, n_seeds, inputs.split_hashes["test"])


def record_header(cfg: DownstreamConfig, inputs: DownstreamInputs, identity: RunIdentity) -> dict[str, Any]:
    """The first keys of every run JSON: run id, timestamp, config, backbone, checkpoint and split hashes."""
    return {"run_id": identity.run_id, "timestamp": identity.timestamp, "config": cfg.to_record(),
            "backbone": {**inputs.metadata, "backbone_hash": inputs.backbone_hash}, "ckpt_hash": inputs.ckpt_hash,
            "split_hash": inputs.split_hashes}

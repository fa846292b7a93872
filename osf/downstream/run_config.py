"""The configuration of a downstream run (the flags of ``main_pipelines/main_finetune.py``).

Fields left at ``None`` among :data:`PER_SETTING_FIELDS` take the defaults of the setting (linear
probe or fine-tuning) in ``DOWNSTREAM_DEFAULTS``; :meth:`DownstreamConfig.resolved` fills them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from osf import config, train_config
from osf.downstream.features import check_pooling
from osf.downstream.losses import LOSS_TYPES

# Fields left at None take DOWNSTREAM_DEFAULTS[linear_probe | finetune].
PER_SETTING_FIELDS = ("lr", "max_steps", "batch_size", "weight_decay", "eval_every", "layer_decay", "warmup_steps")


def setting_defaults(setting: str) -> dict[str, Any]:
    """Per-setting defaults (``linear_probe`` or ``finetune``) of the unset flags."""
    return train_config.DOWNSTREAM_DEFAULTS[setting]


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
    init_head: str | None = None  # fine-tuning: a linear probe's classifier.pt the head starts from (LP-FT)
    use_mean_pool: bool = False  # the published flag: same as pooling="mean"
    pooling: str = "cls"  # osf.downstream.features.POOLINGS
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
    cache_poolings: str | None = None  # comma-separated poolings also cached from the same backbone pass
    results_csv: str | None = None  # default <output_dir>/results.csv
    pretrain_samples: int | None = None  # for scaling plots; default from checkpoint metadata
    run_name: str | None = None
    export_classifier: bool = True
    # Night level and sequence context (osf/downstream/night.py, osf/downstream/sequence.py).
    eval_level: str = "epoch"  # "night": predict --target_variable of each night from its epoch embeddings
    context_epochs: int = 0  # > 0: epoch heads read +-K neighbouring epoch embeddings
    sequence_model: str = "transformer"  # "transformer" or "bigru" (with --context_epochs)
    night_models: str = "mean_std,stage_profile,attention,transformer"
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

    @property
    def datasets(self) -> list[str] | None:
        """``downstream_dataset_name`` as a list (None = every downstream cohort of the store)."""
        if not self.downstream_dataset_name:
            return None
        return [d.strip() for d in self.downstream_dataset_name.split(",")]

    @property
    def device(self) -> str:
        """Torch device of the probes and of prediction: ``cuda`` unless the CPU was asked for or is all there is."""
        return "cpu" if self.accelerator == "cpu" or not torch.cuda.is_available() else "cuda"

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """Mixed-precision dtype of feature extraction (CUDA only), from ``precision``."""
        if self.device != "cuda":
            return None
        return {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(self.precision)

    @property
    def feature_cache(self) -> Path | None:
        """Folder of the feature cache (None: ``feature_cache_dir`` is ``off``)."""
        if self.feature_cache_dir == "off":
            return None
        return Path(self.feature_cache_dir) if self.feature_cache_dir else Path(self.output_dir) / "feature_cache"

    @property
    def also_poolings(self) -> tuple[str, ...]:
        """``cache_poolings`` as a tuple (each checked): the feature cache gets them from the probe's backbone pass."""
        return tuple(check_pooling(p.strip()) for p in (self.cache_poolings or "").split(",") if p.strip())

    @property
    def results_csv_path(self) -> Path:
        """The results table rows are appended to."""
        return Path(self.results_csv) if self.results_csv else Path(self.output_dir) / "results.csv"

    @property
    def train_channels(self) -> str:
        """Channels seen in training, as the results table names them."""
        return self.eval_channels if self.mask_train_channels else "full"

    def resolved(self) -> DownstreamConfig:
        """A copy with every unset per-setting field taken from ``train_config.DOWNSTREAM_DEFAULTS``."""
        defaults = setting_defaults("finetune" if self.finetune_backbone else "linear_probe")
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
    if cfg.init_head and not cfg.finetune_backbone:
        raise ValueError("--init_head starts fine-tuning at a probe's head: it needs --finetune_backbone")
    if cfg.init_head and not Path(cfg.init_head).is_file():
        raise ValueError(f"--init_head {cfg.init_head}: no such file")
    return config.resolve_channel_preset(cfg.eval_channels)  # raises on an empty / unknown preset

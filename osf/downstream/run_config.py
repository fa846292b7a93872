"""The configuration of a downstream run, typed per level, and the flags of ``main_finetune.py`` built from it.

A :class:`DownstreamConfig` holds what every level shares (backbone, data, task, hardware, outputs)
and one sub-configuration per level, each owning its defaults with ``option()``:
:class:`ProbeConfig` (linear probe on cached features), :class:`FinetuneConfig` (full fine-tuning),
:class:`SequenceConfig` (a sequence-context head, ``--context_epochs``) and :class:`NightConfig`
(night-level prediction, ``--eval_level night``). :func:`build_parser` makes the flags from these
dataclasses (names, types, choices, help, defaults); a flag name shared by several levels
(``--lr``, ``--max_steps``, ...) is one flag.

The one rule for unset flags (:func:`resolve_downstream_config`): a flag left unset (``None``) leaves
every level at its own default; a given flag, whatever its value (``0`` included), sets that field in
every level that has it.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from osf import config
from osf.downstream.features import POOLINGS, check_pooling
from osf.downstream.losses import LOSS_TYPES
from osf.utils.config_fields import Flag, add_flag, flags_of, option, to_record, with_overrides

__all__ = [
    "LEVELS", "NIGHT_MODELS", "SEQUENCE_MODELS", "DownstreamConfig", "FinetuneConfig", "NightConfig", "ProbeConfig",
    "SequenceConfig", "build_parser", "config_from_args", "downstream_flags", "resolve_downstream_config",
    "validate_config",
]

SEQUENCE_MODELS: tuple[str, ...] = ("transformer", "bigru")
NIGHT_MODELS: tuple[str, ...] = ("mean_std", "stage_profile", "attention", "transformer")
GROUPS: tuple[str, ...] = ("backbone", "data", "training", "night level and sequence context", "hardware", "outputs")
_CONTEXT = "night level and sequence context"

# The help texts of the training fields every level has (each level its own default).
_STEPS = "optimizer steps"
_LR = "learning rate of the head (fine-tuning: the backbone gets lr x --backbone_lr_scale)"
_WD = "AdamW weight decay"
_EVERY = "validate (model selection) every N steps"


# --- one sub-configuration per level --------------------------------------------------------------
@dataclass
class ProbeConfig:
    """Linear probe on standardised cached frozen features (hence the large lr)."""

    max_steps: int = option(500, help=_STEPS, group="training")
    lr: float = option(1e-2, help=_LR, group="training")
    batch_size: int = option(256, help="batch size of training and of feature extraction", group="data")
    weight_decay: float = option(1e-4, help=_WD, group="training")
    eval_every: int = option(50, help=_EVERY, group="training")


@dataclass
class FinetuneConfig:
    """Full fine-tuning (``--finetune_backbone``) with Lightning: backbone and head, layer-wise lr decay."""

    max_steps: int = option(2000, help=_STEPS, group="training")
    lr: float = option(1e-3, help=_LR, group="training")
    batch_size: int = option(64, help="batch size of training and of feature extraction", group="data")
    weight_decay: float = option(0.05, help=_WD, group="training")
    eval_every: int = option(100, help=_EVERY, group="training")
    layer_decay: float = option(0.75, help="fine-tuning: layer-wise lr decay, 1 = off", group="training")
    warmup_steps: int = option(100, help="fine-tuning: linear warm-up steps before the cosine", group="training")
    backbone_lr_scale: float = option(0.1, help="fine-tuning: backbone lr = lr x this", group="training")
    early_stopping: bool = option(False, help="fine-tuning: stop when validation has not improved for --patience "
                                              "checks", group="training")
    patience: int = option(5, help="fine-tuning: validation checks without improvement before --early_stopping "
                                   "stops", group="training")
    init_head: str | None = option(None, help="fine-tuning: start the head at this linear probe's (its classifier.pt; "
                                              "same backbone, pooling and task), i.e. LP-FT", group="training")


@dataclass
class SequenceConfig:
    """A sequence head over +-K neighbouring cached epoch embeddings (``--context_epochs K``), beside the probe."""

    context_epochs: int = option(0, help="epoch level: > 0 trains a sequence head over +-K neighbouring epoch "
                                         "embeddings, beside the per-epoch probe", group=_CONTEXT)
    model: str = option("transformer", flag="sequence_model", choices=SEQUENCE_MODELS,
                        help="sequence head for --context_epochs", group=_CONTEXT)
    max_steps: int = option(600, help=_STEPS, group="training")
    lr: float = option(1e-3, help=_LR, group="training")
    weight_decay: float = option(0.01, help=_WD, group="training")
    eval_every: int = option(50, help=_EVERY, group="training")
    batch_size: int = option(64, help="windows per step", cli=False)
    d_model: int = option(64, help="width of the sequence head", cli=False)


@dataclass
class NightConfig:
    """Night-level prediction of a subject-table variable from each night's epoch embeddings (a night is a sample)."""

    target_variable: str | None = option(None, help="night level: a subject-table variable, e.g. nsrr_ahi_hp3r_aasm15, "
                                                    "nsrr_age, nsrr_sex", group=_CONTEXT)
    target_threshold: float | None = option(None, help="night level: binary task target_variable >= threshold (e.g. 15 "
                                                       "for AHI); unset: regression for a numeric variable, "
                                                       "classification for a 0/1 or text one", group=_CONTEXT)
    subject_tables: str | None = option(None, help="night level: raw data folder holding <cohort>/datasets/*.csv "
                                                   "(main_preprocess.py's --input_dir)", group=_CONTEXT)
    models: str = option(",".join(NIGHT_MODELS), flag="night_models", group=_CONTEXT,
                         help="night level: comma-separated night models (mean_std, stage_profile, attention, "
                              "transformer; stage_profile pools a stage probe's epoch probabilities, so it needs "
                              "--eval_label Stage)")
    # Few samples (nights): small models, strong decay.
    max_steps: int = option(300, help=_STEPS, group="training")
    lr: float = option(1e-3, help=_LR, group="training")
    weight_decay: float = option(0.05, help=_WD, group="training")
    eval_every: int = option(10, help=_EVERY, group="training")
    batch_size: int = option(32, help="nights per step", cli=False)
    d_model: int = option(64, help="width of the attention / transformer night models", cli=False)

    @property
    def model_list(self) -> list[str]:
        """``models`` as a list."""
        return [m.strip() for m in self.models.split(",") if m.strip()]


LEVELS: dict[str, type] = {"probe": ProbeConfig, "finetune": FinetuneConfig, "sequence": SequenceConfig,
                           "night": NightConfig}


# --- the run --------------------------------------------------------------------------------------
@dataclass
class DownstreamConfig:
    """Everything a downstream run depends on: the shared fields and one sub-configuration per level."""

    data_dir: str | None = option(None, required=True, group="data",
                                  help="epoch store folder (main_preprocess.py output)")
    output_dir: str | None = option(None, required=True, group="outputs",
                                    help="folder for the run JSON, results.csv and classifier.pt")
    ckpt_path: str = option("none", group="backbone",
                            help="Lightning .ckpt, exported .pth/.safetensors, a Hub file hf://org/repo[@rev]/file "
                                 "(e.g. hf://yang-ai-lab/OSF-Base/osf_backbone.pth), or 'none' for random init")
    psg_encoder_name: str | None = option(None, group="backbone", help="architecture for --ckpt_path none (e.g. "
                                          "vit_base); otherwise only checked against the checkpoint")
    model_name: str | None = option(None, group="backbone",
                                    help="method name for the results table (default: the checkpoint's model_name)")
    downstream_dataset_name: str | None = option(None, group="data", help="dataset(s) of the store to evaluate on, "
                                                 "comma-separated (default: every downstream cohort)")
    eval_label: str = option("Stage", choices=tuple(config.LABEL_COLUMNS), group="data", help="the epoch-level task")
    stage_classes: int = option(4, choices=(4, 5), group="data", help="Stage task: 4 (W/Light/Deep/REM) or 5 classes")
    train_data_pct: float = option(1.0, group="data", help="fraction of training subjects used (0, 1]")
    n_train_samples: int | None = option(None, group="data", help="k-shot: labelled training epochs per class")
    n_seeds: int | None = option(None, group="data",
                                 help="repeats with seeds seed..seed+n-1 (default 3 for k-shot, else 1)")
    eval_channels: str = option("full", group="data", help=f"montage preset ({', '.join(config.CHANNEL_PRESETS)}) or "
                                "comma-separated channels present at test time")
    mask_train_channels: bool = option(False, group="data",
                                       help="also hide the channels outside --eval_channels during training")
    mask_train_presets: str = option("", group="data",
                                     help="train over these channel presets (comma list; 'all' = every preset), so "
                                          "one classifier stages each montage: fine-tuning shows each training epoch "
                                          "through one, drawn at random; a probe trains on every epoch through each "
                                          "and is selected on the validation epochs through each; the validation "
                                          "kappa per preset goes into the classifier file")
    num_workers: int = option(0, group="data", help="DataLoader workers")
    finetune_backbone: bool = option(False, group="training",
                                     help="full fine-tuning, instead of a linear probe on cached frozen features")
    pooling: str = option("cls", choices=POOLINGS, group="training",
                          help="backbone features: cls token, mean of patch tokens, per-channel-group means (groups), "
                               "or the cls token beside the group means (cls_groups), or each group's mean and std "
                               "over time (groups_std)")
    use_mean_pool: bool = option(False, group="training", help="same as --pooling mean (kept for the published scripts)")
    loss_type: str = option("ce", choices=LOSS_TYPES, group="training", help="loss of the epoch-level heads")
    seed: int = option(0, group="training", help="seed (k-shot draws, head init, batches)")
    eval_level: str = option("epoch", choices=("epoch", "night"), group=_CONTEXT,
                             help="epoch: per-epoch labels; night: --target_variable of each night from its epoch "
                                  "embeddings")
    num_devices: int = option(1, group="hardware", help="devices for fine-tuning (DDP when > 1)")
    accelerator: str = option("auto", group="hardware", help="auto, cpu, gpu")
    precision: str = option("32-true", group="hardware", help="Lightning precision, e.g. 32-true, bf16-mixed")
    results_csv: str | None = option(None, group="outputs",
                                     help="results table to append to (default OUTPUT_DIR/results.csv)")
    feature_cache_dir: str | None = option(None, group="outputs", help="linear-probe feature cache (default "
                                           "OUTPUT_DIR/feature_cache; 'off' disables)")
    cache_poolings: str | None = option(None, group="outputs", help="comma-separated poolings also written to the "
                                        "feature cache from the same backbone pass (e.g. --pooling cls "
                                        "--cache_poolings mean: a later mean-pooled probe finds its features)")
    export_classifier: bool = option(True, group="outputs", help="write OUTPUT_DIR/classifier.pt (backbone + head + "
                                     "label names + channel contract)")
    n_boot: int = option(1000, group="outputs", help="bootstrap resamples (by subject) for the 95% CIs")
    pretrain_samples: int | None = option(None, group="outputs", help="pre-training sample count, for scaling plots "
                                          "(default: from the checkpoint's metadata)")
    run_name: str | None = option(None, group="outputs",
                                  help="run id (default: built from method, task, setting, preset, seed)")
    probe: ProbeConfig = option(help="linear probe", cli=False, default_factory=ProbeConfig)
    finetune: FinetuneConfig = option(help="fine-tuning", cli=False, default_factory=FinetuneConfig)
    sequence: SequenceConfig = option(help="sequence context", cli=False, default_factory=SequenceConfig)
    night: NightConfig = option(help="night level", cli=False, default_factory=NightConfig)
    extra: dict[str, Any] = option(help="free-form notes kept in the run record", cli=False, default_factory=dict)

    def __post_init__(self) -> None:
        if self.use_mean_pool:
            self.pooling = "mean"

    @property
    def epoch_head(self) -> ProbeConfig | FinetuneConfig:
        """The training configuration of an epoch-level run: fine-tuning's or the probe's."""
        return self.finetune if self.finetune_backbone else self.probe

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
        if self.mask_train_presets:
            return "presets:" + self.mask_train_presets.replace(",", "+")
        return self.eval_channels if self.mask_train_channels else "full"

    def to_record(self) -> dict[str, Any]:
        """Plain nested dicts (the run JSON's ``config``)."""
        return to_record(self)


# --- resolution: the one rule for unset flags ------------------------------------------------------
def downstream_flags() -> dict[str, list[tuple[str | None, Flag]]]:
    """Flag name -> ``(level or None for a shared field, flag)`` of every field it sets."""
    out: dict[str, list[tuple[str | None, Flag]]] = {}
    for level, cls in ((None, DownstreamConfig), *LEVELS.items()):
        for flag in flags_of(cls):
            out.setdefault(flag.name, []).append((level, flag))
    for name, targets in out.items():
        if len({(f.kind, f.nargs, f.choices) for _, f in targets}) > 1:
            raise TypeError(f"--{name} has different types or choices across levels; one flag cannot set them all")
    return out


def resolve_downstream_config(values: Mapping[str, Any]) -> DownstreamConfig:
    """The run described by flat flag values (``None`` = not given: the field keeps its level's default).

    A given value sets the field in every level that has it; an unknown name is refused, naming the flags.
    """
    flags = downstream_flags()
    extra = {k: v for k, v in values.items() if k == "extra"}
    unknown = sorted(set(values) - set(flags) - {"extra"})
    if unknown:
        raise ValueError(f"unknown downstream flag(s) {unknown}; main_finetune.py takes {sorted(flags)}")
    shared: dict[str, Any] = dict(extra)
    per_level: dict[str, dict[str, Any]] = {level: {} for level in LEVELS}
    for name, value in values.items():
        if value is None or name == "extra":
            continue
        for level, flag in flags[name]:
            (shared if level is None else per_level[level])[flag.field] = value
    levels = {level: with_overrides(cls(), per_level[level]) for level, cls in LEVELS.items()}
    return DownstreamConfig(**shared, **levels)


def _shown(value: Any) -> str:
    return ("yes" if value else "no") if isinstance(value, bool) else str(value)


def _default_text(targets: list[tuple[str | None, Flag]]) -> str | None:
    """The default of a flag: one value, or each level's (``0.01 probe, 0.001 finetune, ...``)."""
    defaults = {level: getattr(DownstreamConfig() if level is None else LEVELS[level](), flag.field)
                for level, flag in targets}
    shown = {_shown(v) for v in defaults.values()}
    if len(shown) == 1:
        value = next(iter(defaults.values()))
        return None if value is None else _shown(value)
    return ", ".join(f"{_shown(v)} {level}" for level, v in defaults.items())


def build_parser(description: str | None = None) -> argparse.ArgumentParser:
    """The flags of ``main_finetune.py``, built from the configuration dataclasses (published names kept)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    groups = {name: parser.add_argument_group(name) for name in GROUPS}
    for targets in downstream_flags().values():
        flag = targets[0][1]
        add_flag(groups[flag.group or "training"], flag, _default_text(targets))
    return parser


def config_from_args(args: argparse.Namespace) -> DownstreamConfig:
    """The run of a parsed command line (unset flags: each level's default)."""
    return resolve_downstream_config(vars(args))


# --- input checks (all before training) ---------------------------------------------------------
def validate_config(cfg: DownstreamConfig) -> tuple[str, ...]:
    """Check the flag values of an epoch-level run; returns the eval channel names. Raises ``ValueError``."""
    head = cfg.epoch_head
    if cfg.eval_label not in config.LABEL_COLUMNS:
        raise ValueError(f"unknown --eval_label {cfg.eval_label!r}; choose one of {list(config.LABEL_COLUMNS)}")
    if cfg.loss_type not in LOSS_TYPES:
        raise ValueError(f"unknown --loss_type {cfg.loss_type!r}; choose one of {list(LOSS_TYPES)}")
    if head.max_steps < 1:
        raise ValueError(f"--max_steps must be >= 1, got {head.max_steps}")
    if cfg.n_train_samples is not None and cfg.n_train_samples < 1:
        raise ValueError(f"--n_train_samples (k per class) must be >= 1, got {cfg.n_train_samples}")
    if not 0.0 < cfg.train_data_pct <= 1.0:
        raise ValueError(f"--train_data_pct must be in (0, 1], got {cfg.train_data_pct}")
    if cfg.finetune.init_head and not cfg.finetune_backbone:
        raise ValueError("--init_head starts fine-tuning at a probe's head: it needs --finetune_backbone")
    if cfg.finetune.init_head and not Path(cfg.finetune.init_head).is_file():
        raise ValueError(f"--init_head {cfg.finetune.init_head}: no such file")
    _check_train_presets(cfg)
    return config.resolve_channel_preset(cfg.eval_channels)


def train_presets(cfg: DownstreamConfig) -> tuple[str, ...]:
    """The presets of ``--mask_train_presets`` ('all': every ``config.CHANNEL_PRESETS``), in the order given."""
    names = [p.strip() for p in cfg.mask_train_presets.split(",") if p.strip()]
    return tuple(config.CHANNEL_PRESETS) if names == ["all"] else tuple(names)


def _check_train_presets(cfg: DownstreamConfig) -> None:
    presets = train_presets(cfg)
    if not presets:
        return
    if cfg.mask_train_channels:
        raise ValueError("--mask_train_presets and --mask_train_channels exclude each other: give one")
    unknown = [p for p in presets if p not in config.CHANNEL_PRESETS]
    if unknown:
        raise ValueError(f"--mask_train_presets: unknown preset(s) {unknown}; choose from {list(config.CHANNEL_PRESETS)} or 'all'")

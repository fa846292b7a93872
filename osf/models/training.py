"""Pre-training driver behind ``main_pipelines/main_pretrain.py``: config resolution, Trainer, run.

``resolve_pretrain_config`` fills a flat dict of CLI values with the defaults of ``train_config``
(run, method, backbone size) and checks the method's parameters; ``run_pretrain`` seeds, builds the
data module, method and Trainer (DDP when more than one device or node), trains, and returns where
the run's files are. The resolved config is written to ``<run_dir>/config.yaml`` and stored in every
checkpoint (``checkpoint["osf"]["run_config"]``).
"""

from __future__ import annotations

import inspect
import logging
import os
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import yaml
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint, TQDMProgressBar

import config
import train_config
from osf.models.base import NonFiniteLossError, PretrainModule
from osf.models.registry import METHODS, create_method, resolve_method_name
from osf.utils.atomic import atomic_write_text
from osf.utils.resumable import DataPosition

__all__ = ["LOGGERS", "PretrainResult", "build_trainer", "method_parameters", "resolve_pretrain_config", "run_pretrain"]

log = logging.getLogger(__name__)

LOGGERS: tuple[str, ...] = ("wandb", "csv", "tensorboard", "none")
PRECISION_ALIASES: dict[str, str] = {"bf16": "bf16-mixed", "16": "16-mixed", "32": "32-true", "fp32": "32-true"}
# Keys of the flat config that are backbone constructor arguments (CLI name -> create_backbone name).
BACKBONE_KEYS: dict[str, str] = {"patch_size_time": "patch_size", "patch_size_ch": "patch_size_ch", "lead_wise": "lead_wise",
                                 "drop_path_rate": "drop_path_rate", "attn_impl": "attn_impl"}


@dataclass
class PretrainResult:
    """Where a finished run left its files, plus the trained module."""

    run_dir: Path
    last_checkpoint: Path | None
    best_checkpoint: Path | None
    config: dict[str, Any]
    model: PretrainModule


def method_parameters(method_cls: type) -> set[str]:
    """Keyword arguments accepted by a method's constructor chain (subclass up to PretrainModule)."""
    names: set[str] = set()
    for klass in method_cls.__mro__:
        if not issubclass(klass, PretrainModule):
            break
        for name, p in inspect.signature(klass.__init__).parameters.items():
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and name != "self":
                names.add(name)
    return names - {"backbone_name", "backbone_kwargs"}


def resolve_pretrain_config(cli: dict[str, Any]) -> dict[str, Any]:
    """Fill unset (None) CLI values from train_config; returns the flat resolved config.

    ``cli["method_kwargs"]`` holds method parameters given on the command line; they are checked
    against the method's constructor so a typo or a flag of another method fails loudly.
    """
    cfg = dict(cli)
    method = resolve_method_name(cfg["model_name"])
    cfg["model_name"] = method
    backbone = cfg["psg_encoder_name"]
    from osf.backbone.vit1d_cls import BACKBONES, list_backbones

    if backbone not in BACKBONES:
        raise ValueError(f"unknown --psg_encoder_name {backbone!r}; registered: {list_backbones()}")
    size_defaults = train_config.BACKBONE_DEFAULTS.get(backbone, {})
    recipe_name = cfg.get("recipe") or "osf"
    if recipe_name not in train_config.RECIPES:
        raise ValueError(f"unknown --recipe {recipe_name!r}; choose one of {sorted(train_config.RECIPES)}")
    cfg["recipe"] = recipe_name
    recipe = train_config.RECIPES[recipe_name]
    for key, value in {**train_config.PRETRAIN_RUN_DEFAULTS, **size_defaults, **recipe.get("run", {})}.items():
        if cfg.get(key) is None:
            cfg[key] = value
    cfg["precision"] = PRECISION_ALIASES.get(str(cfg["precision"]), str(cfg["precision"]))
    if cfg.get("max_steps") is None:
        cfg["max_steps"] = -1
    if cfg["max_steps"] <= 0 and not cfg.get("max_epochs"):
        raise ValueError("set --max_steps or --max_epochs: the schedules need a finite run length")

    accepted = method_parameters(METHODS[method])
    method_kwargs = {**train_config.METHOD_DEFAULTS.get(method, {}), **recipe.get("methods", {}).get(method, {})}
    unknown_defaults = sorted(set(method_kwargs) - accepted)
    if unknown_defaults:
        raise ValueError(f"train_config.METHOD_DEFAULTS[{method!r}] has keys {method} does not take: {unknown_defaults}")
    given = {k: v for k, v in (cfg.get("method_kwargs") or {}).items() if v is not None}
    not_accepted = sorted(set(given) - accepted)
    if not_accepted:
        raise ValueError(f"method {method!r} has no parameter(s) {not_accepted}; it takes {sorted(accepted)}")
    method_kwargs.update(given)
    if cfg.get("lr") is not None:
        method_kwargs["lr"] = cfg["lr"]
    cfg["lr"] = method_kwargs.get("lr")
    if cfg.get("lr_base_batch"):
        # --lr is per lr_base_batch samples (DINO: lr x B / 256): the rate applied follows the global batch.
        global_batch = (int(cfg["batch_size"]) * int(cfg.get("num_devices") or 1) * int(cfg.get("num_nodes") or 1)
                        * int(cfg.get("accumulate_grad_batches") or 1))
        cfg["base_lr"] = cfg["lr"]
        cfg["lr"] = method_kwargs["lr"] = cfg["lr"] * global_batch / int(cfg["lr_base_batch"])
    method_kwargs["seed"] = cfg["seed"]
    method_kwargs["compile_backbone"] = bool(cfg.get("compile"))
    cfg["method_kwargs"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in method_kwargs.items()}
    cfg["backbone_kwargs"] = {
        "num_leads": config.NUM_CHANNELS,
        "seq_len": config.EPOCH_SAMPLES,
        **{BACKBONE_KEYS[k]: cfg[k] for k in BACKBONE_KEYS if cfg.get(k) is not None},
    }
    loggers = [s.strip() for s in str(cfg.get("logger") or "none").split(",") if s.strip()]
    bad = [s for s in loggers if s not in LOGGERS]
    if bad:
        raise ValueError(f"unknown --logger {bad}; choose from {list(LOGGERS)} (comma-separated)")
    cfg["logger"] = ",".join(loggers)
    return cfg


def _run_dir(cfg: dict[str, Any]) -> Path:
    if cfg.get("run_name"):
        return Path(cfg["output_dir"]) / cfg["run_name"]
    ckpt = cfg.get("ckpt_path")
    if ckpt and Path(ckpt).parent.name == "checkpoints":
        return Path(ckpt).parent.parent  # resuming continues in the original run folder
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return Path(cfg["output_dir"]) / f"{cfg['model_name']}_{cfg['psg_encoder_name']}_{stamp}"


def _loggers(cfg: dict[str, Any], run_dir: Path) -> list:
    out = []
    for name in cfg["logger"].split(","):
        if name == "csv":
            out.append(pl.loggers.CSVLogger(str(run_dir), name="csv_logs"))
        elif name == "tensorboard":
            out.append(pl.loggers.TensorBoardLogger(str(run_dir), name="tb_logs"))
        elif name == "wandb":
            # Offline unless the user opted in (WANDB_MODE=online + wandb login): no account needed.
            os.environ.setdefault("WANDB_MODE", "offline")
            out.append(pl.loggers.WandbLogger(save_dir=str(run_dir), project=cfg.get("wandb_project") or "osf",
                                              name=run_dir.name, offline=os.environ["WANDB_MODE"] == "offline"))
    return out


def build_trainer(cfg: dict[str, Any], run_dir: Path, has_val: bool, extra_callbacks: list | None = None) -> pl.Trainer:
    """Trainer for a resolved config: DDP (no unused-parameter search; gloo on CPU) above one device."""
    from osf.utils.quiet import quiet_lightning

    quiet_lightning()  # no Lightning banners/tips or third-party deprecations in the run's output
    ckpt_dir = run_dir / "checkpoints"
    loggers = _loggers(cfg, run_dir)
    callbacks: list = [
        ModelCheckpoint(dirpath=ckpt_dir, filename="step{step:08d}", auto_insert_metric_name=False,
                        every_n_train_steps=cfg["ckpt_every_n_steps"], save_top_k=-1, save_last=True),
        *(extra_callbacks or []),
    ]
    if loggers:  # LearningRateMonitor refuses to run without a logger
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    if has_val:
        callbacks.append(ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor="val/loss", mode="min",
                                         save_top_k=1, auto_insert_metric_name=False, enable_version_counter=False))
    if cfg.get("progress_bar", True):
        callbacks.append(TQDMProgressBar(refresh_rate=max(1, int(cfg.get("log_every_n_steps") or 1))))
    distributed = int(cfg["num_devices"]) > 1 or int(cfg["num_nodes"]) > 1
    strategy: Any = "auto"
    if distributed:
        backend = "gloo" if cfg["accelerator"] == "cpu" else None
        strategy = pl.strategies.DDPStrategy(find_unused_parameters=False, process_group_backend=backend)
    accumulate = int(cfg.get("accumulate_grad_batches") or 1)
    # Lightning counts val_check_interval in batches, the flag (like checkpoints) in optimizer steps.
    val_every = int(cfg.get("val_every_n_steps") or cfg["ckpt_every_n_steps"]) * accumulate
    return pl.Trainer(
        accelerator=cfg["accelerator"],
        devices=int(cfg["num_devices"]),
        num_nodes=int(cfg["num_nodes"]),
        strategy=strategy,
        precision=cfg["precision"],
        max_epochs=cfg.get("max_epochs") if cfg["max_steps"] <= 0 else None,
        max_steps=int(cfg["max_steps"]),
        accumulate_grad_batches=accumulate,
        val_check_interval=val_every if has_val else None,
        check_val_every_n_epoch=None if has_val else 1,
        limit_val_batches=cfg.get("limit_val_batches") if cfg.get("limit_val_batches") is not None else 1.0,
        num_sanity_val_steps=0,
        log_every_n_steps=int(cfg["log_every_n_steps"]),
        logger=loggers or False,
        callbacks=callbacks,
        enable_progress_bar=bool(cfg.get("progress_bar", True)),
        enable_model_summary=False,
        default_root_dir=str(run_dir),
        # The data module builds rank-aware samplers itself; Lightning must not replace them.
        use_distributed_sampler=False,
    )


def _save_config(cfg: dict[str, Any], run_dir: Path) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(cfg, sort_keys=True))


def build_datamodule(cfg: dict[str, Any]) -> pl.LightningDataModule:
    """The pre-training SleepDataModule for a resolved config (probe labels when the store has them)."""
    from osf.datasets.datamodule import SleepDataModule

    include = cfg.get("include_datasets")
    if isinstance(include, str):
        include = [s.strip() for s in include.split(",") if s.strip()]
    return SleepDataModule(
        cfg["data_dir"], task="pretrain", eval_label=cfg.get("probe_label") or None, include_datasets=include,
        batch_size=int(cfg["batch_size"]), num_workers=int(cfg.get("num_workers") or 0),
        train_data_pct=float(cfg.get("train_data_pct") or 1.0), seed=int(cfg["seed"]),
        pin_memory=cfg["accelerator"] not in ("cpu",),
    )


def _diagnostics(cfg: dict[str, Any], run_dir: Path) -> list[pl.Callback]:
    """The learning-diagnostics callback (``diag_every_n_steps`` 0 turns it off)."""
    from osf.models.diagnostics import DEFAULT_BATCH_SIZE, DEFAULT_EVERY_N_STEPS, LearningDiagnostics

    every = cfg.get("diag_every_n_steps")
    every = DEFAULT_EVERY_N_STEPS if every is None else int(every)
    if every <= 0:
        return []
    return [LearningDiagnostics(run_dir, every, int(cfg.get("diag_batch_size") or DEFAULT_BATCH_SIZE))]


def run_pretrain(
    cfg: dict[str, Any], datamodule: pl.LightningDataModule | None = None, callbacks: list | None = None
) -> PretrainResult:
    """Train one method from a resolved config (see :func:`resolve_pretrain_config`); ``callbacks`` are added."""
    run_dir = _run_dir(cfg)
    cfg = {**cfg, "run_dir": str(run_dir)}
    pl.seed_everything(int(cfg["seed"]), workers=True, verbose=False)
    if datamodule is None:
        datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    method_kwargs = dict(cfg["method_kwargs"])
    n_classes = getattr(datamodule, "num_classes", 0)
    if n_classes:
        method_kwargs.setdefault("probe_num_classes", n_classes)
    model = create_method(cfg["model_name"], cfg["psg_encoder_name"], backbone_kwargs=cfg["backbone_kwargs"], **method_kwargs)
    model.run_config = cfg

    position = DataPosition()
    datamodule.train_dataloader = position.wrap(datamodule.train_dataloader)
    # Lightning warns that a mid-epoch resume repeats data unless the loader is stateful; DataPosition
    # makes the resumed loader skip exactly the consumed batches (tested), so the warning is moot.
    warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch ended")
    val_ds = getattr(datamodule, "datasets", {}).get("val")
    has_val = val_ds is not None and len(val_ds) > 0
    trainer = build_trainer(cfg, run_dir, has_val, extra_callbacks=[position, *_diagnostics(cfg, run_dir), *(callbacks or [])])
    if trainer.is_global_zero:
        _save_config(cfg, run_dir)
    periodic = trainer.checkpoint_callbacks[0]
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True)
    except NonFiniteLossError as err:
        last = run_dir / "checkpoints" / "last.ckpt"
        raise NonFiniteLossError(f"{err}. Last good checkpoint: {last if last.exists() else 'none written yet'}") from err
    # A run whose length is not a multiple of the checkpoint period still ends with its final state.
    if getattr(periodic, "_last_global_step_saved", None) != trainer.global_step:
        trainer.save_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    best = None
    for cb in trainer.checkpoint_callbacks:
        if getattr(cb, "monitor", None) == "val/loss" and cb.best_model_path:
            best = Path(cb.best_model_path)
    last = run_dir / "checkpoints" / "last.ckpt"
    return PretrainResult(run_dir, last if last.exists() else None, best, cfg, model)

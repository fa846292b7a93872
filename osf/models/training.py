"""Pre-training driver behind ``main_pipelines/main_pretrain.py``: Trainer and run of a typed config.

The configuration (:class:`~osf.models.pretrain_config.PretrainConfig`) is resolved by
:mod:`osf.models.pretrain_config`; ``run_pretrain`` seeds, builds the data module, method and
Trainer (DDP when more than one device or node), trains, and returns where the run's files are. The
config's record is written to ``<run_dir>/config.yaml`` and stored in every checkpoint
(``checkpoint["osf"]["run_config"]``). ``pretrain_from_argv`` is the whole command line as a function.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import yaml
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint, TQDMProgressBar
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from osf.models.base import NonFiniteLossError, PretrainModule
from osf.models.cluster import (
    AtomicCheckpointIO,
    LaunchError,
    RunFolder,
    check_launch,
    find_resume_checkpoint,
    remove_partial_writes,
    resume_record,
)
from osf.models.pretrain_config import (
    LOGGERS,
    PretrainConfig,
    build_parser,
    config_from_args,
    resolve_pretrain_config,
)
from osf.models.registry import METHODS
from osf.models.throughput import Throughput
from osf.utils.atomic import atomic_write_text
from osf.utils.resumable import DataPosition

__all__ = [
    "LOGGERS",
    "LaunchError",
    "NonFiniteLossError",
    "PretrainResult",
    "build_trainer",
    "pretrain_from_argv",
    "resolve_pretrain_config",
    "run_pretrain",
]

log = logging.getLogger(__name__)


@dataclass
class PretrainResult:
    """Where a finished run left its files, plus the trained module."""

    run_dir: Path
    last_checkpoint: Path | None
    best_checkpoint: Path | None
    config: PretrainConfig
    model: PretrainModule


def _run_dir(cfg: PretrainConfig) -> Path:
    run = cfg.run
    if run.run_name:
        return Path(run.output_dir) / run.run_name
    if run.ckpt_path and Path(run.ckpt_path).parent.name == "checkpoints":
        return Path(run.ckpt_path).parent.parent  # resuming continues in the original run folder
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return Path(run.output_dir) / f"{cfg.method_name}_{cfg.backbone.name}_{stamp}"


def _loggers(cfg: PretrainConfig, run_dir: Path) -> list:
    out = []
    for name in cfg.run.loggers:
        if name == "csv":
            out.append(pl.loggers.CSVLogger(str(run_dir), name="csv_logs"))
        elif name == "tensorboard":
            out.append(pl.loggers.TensorBoardLogger(str(run_dir), name="tb_logs"))
        elif name == "wandb":
            # Offline unless the user opted in (WANDB_MODE=online + wandb login): no account needed.
            os.environ.setdefault("WANDB_MODE", "offline")
            out.append(pl.loggers.WandbLogger(save_dir=str(run_dir), project=cfg.run.wandb_project,
                                              name=run_dir.name, offline=os.environ["WANDB_MODE"] == "offline"))
    return out


def _callbacks(cfg: PretrainConfig, ckpt_dir: Path, has_val: bool, has_logger: bool, extra: list) -> list:
    """Periodic + last checkpoints, ``extra``, LR monitor (with a logger), best-val checkpoint, progress bar."""
    run = cfg.run
    callbacks: list = [
        # No version counter: a resumed run rewrites its own last.ckpt instead of adding last-v1.ckpt.
        ModelCheckpoint(dirpath=ckpt_dir, filename="step{step:08d}", auto_insert_metric_name=False,
                        every_n_train_steps=run.ckpt_every_n_steps, save_top_k=-1, save_last=True,
                        enable_version_counter=False),
        *extra,
    ]
    if has_logger:  # LearningRateMonitor refuses to run without a logger
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    if has_val:
        callbacks.append(ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor="val/loss", mode="min",
                                         save_top_k=1, auto_insert_metric_name=False, enable_version_counter=False))
    if run.progress_bar:
        callbacks.append(TQDMProgressBar(refresh_rate=max(1, run.log_every_n_steps)))
    return callbacks


def _strategy(cfg: PretrainConfig) -> Any:
    """DDP without unused-parameter search (gloo on CPU) above one device, else Lightning's choice."""
    run = cfg.run
    if run.num_devices <= 1 and run.num_nodes <= 1:
        return "auto"
    backend = "gloo" if run.accelerator == "cpu" else None
    return pl.strategies.DDPStrategy(find_unused_parameters=False, process_group_backend=backend)


def build_trainer(cfg: PretrainConfig, run_dir: Path, has_val: bool, extra_callbacks: list | None = None,
                  sync_batchnorm: bool = False) -> pl.Trainer:
    """Trainer for a resolved config: DDP (no unused-parameter search; gloo on CPU) above one device."""
    from osf.utils.quiet import quiet_lightning

    quiet_lightning()  # no Lightning banners/tips or third-party deprecations in the run's output
    run = cfg.run
    loggers = _loggers(cfg, run_dir)
    # Lightning counts val_check_interval in batches, the flag (like checkpoints) in optimizer steps.
    val_every = (run.val_every_n_steps or run.ckpt_every_n_steps) * run.accumulate_grad_batches
    return pl.Trainer(
        accelerator=run.accelerator,
        devices=run.num_devices,
        num_nodes=run.num_nodes,
        strategy=_strategy(cfg),
        precision=run.precision,
        max_epochs=run.max_epochs if run.max_steps <= 0 else None,
        max_steps=run.max_steps,
        accumulate_grad_batches=run.accumulate_grad_batches,
        val_check_interval=val_every if has_val else None,
        check_val_every_n_epoch=None if has_val else 1,
        limit_val_batches=run.limit_val_batches if run.limit_val_batches is not None else 1.0,
        num_sanity_val_steps=0,
        sync_batchnorm=sync_batchnorm,
        plugins=[AtomicCheckpointIO()],  # a job killed while saving keeps its previous checkpoint
        log_every_n_steps=run.log_every_n_steps,
        logger=loggers or False,
        callbacks=_callbacks(cfg, run_dir / "checkpoints", has_val, bool(loggers), list(extra_callbacks or [])),
        enable_progress_bar=run.progress_bar,
        enable_model_summary=False,
        default_root_dir=str(run_dir),
        # The data module builds rank-aware samplers itself; Lightning must not replace them.
        use_distributed_sampler=False,
    )


def _save_config(record: dict[str, Any], run_dir: Path) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(record, sort_keys=True))


def build_datamodule(cfg: PretrainConfig) -> pl.LightningDataModule:
    """The pre-training SleepDataModule for a resolved config (probe labels when the store has them)."""
    from osf.datasets.datamodule import SleepDataModule

    run = cfg.run
    include = run.include_datasets
    if isinstance(include, str):
        include = [s.strip() for s in include.split(",") if s.strip()]
    return SleepDataModule(
        run.data_dir, task="pretrain", eval_label=run.probe_label or None, include_datasets=include,
        batch_size=run.batch_size, num_workers=run.num_workers, train_data_pct=run.train_data_pct,
        seed=cfg.method.seed, pin_memory=run.accelerator not in ("cpu",),
    )


def _diagnostics(cfg: PretrainConfig, run_dir: Path) -> list[pl.Callback]:
    """The learning-diagnostics callback (``diag_every_n_steps`` 0 turns it off)."""
    from osf.models.diagnostics import LearningDiagnostics

    if cfg.run.diag_every_n_steps <= 0:
        return []
    return [LearningDiagnostics(run_dir, cfg.run.diag_every_n_steps, cfg.run.diag_batch_size)]


def _build_model(cfg: PretrainConfig, datamodule: pl.LightningDataModule, record: dict[str, Any]) -> PretrainModule:
    """The method of ``cfg``; its online probe gets the data's classes unless the config names them."""
    method = cfg.method
    n_classes = getattr(datamodule, "num_classes", 0)
    if n_classes and method.probe_num_classes is None:
        method = replace(method, probe_num_classes=n_classes)
    model = METHODS[cfg.method_name](method)
    model.run_config = record
    return model


def _fit(trainer: pl.Trainer, model: PretrainModule, datamodule: pl.LightningDataModule, cfg: PretrainConfig,
         run_dir: Path) -> None:
    """``trainer.fit`` (resuming from ``ckpt_path``), then the final state saved if no checkpoint holds it."""
    periodic = trainer.checkpoint_callbacks[0]
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.run.ckpt_path, weights_only=True)
    except NonFiniteLossError as err:
        last = run_dir / "checkpoints" / "last.ckpt"
        raise NonFiniteLossError(f"{err}. Last good checkpoint: {last if last.exists() else 'none written yet'}") from err
    # A run whose length is not a multiple of the checkpoint period still ends with its final state.
    if getattr(periodic, "_last_global_step_saved", None) != trainer.global_step:
        trainer.save_checkpoint(Path(periodic.dirpath) / "last.ckpt")  # rank 0's folder (broadcast by Lightning)


def _best_checkpoint(trainer: pl.Trainer) -> Path | None:
    for cb in trainer.checkpoint_callbacks:
        if getattr(cb, "monitor", None) == "val/loss" and cb.best_model_path:
            return Path(cb.best_model_path)
    return None


def _resumed(cfg: PretrainConfig, run_dir: Path) -> PretrainConfig:
    """``cfg`` resuming from a previous attempt's newest checkpoint when it names its run and no ``ckpt_path``.

    A requeued or restarted job (same ``--run_name``) continues where it stopped instead of training from
    step 0 into the same folder; a run without ``--run_name`` gets a new folder and starts fresh.
    """
    if cfg.run.ckpt_path or not cfg.run.run_name:
        return cfg
    found = find_resume_checkpoint(run_dir)
    if found is None:
        return cfg
    if rank_zero_only.rank == 0:
        remove_partial_writes(run_dir)  # a write the previous attempt did not finish
    return replace(cfg, run=replace(cfg.run, ckpt_path=str(found)))


def _sync_batchnorm(cfg: PretrainConfig, model: PretrainModule) -> bool:
    """SyncBatchNorm when the method has BatchNorm, more than one device, and an accelerator torch syncs on.

    torch's SyncBatchNorm runs on accelerators only: gloo on CPU keeps per-process statistics.
    """
    run = cfg.run
    on_cpu = run.accelerator == "cpu" or (run.accelerator == "auto" and not torch.cuda.is_available())
    has_bn = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    return has_bn and run.num_devices * run.num_nodes > 1 and not on_cpu


def _announce_resume(resumed: dict[str, Any], cfg: PretrainConfig) -> None:
    """One line (rank 0) saying what the run resumes from and whether the global batch changed."""
    if rank_zero_only.rank != 0:
        return
    line = f"resuming from {resumed['checkpoint']} at step {resumed['step']}"
    old = resumed.get("global_batch")
    if old and old != cfg.run.global_batch:
        line += (f"; global batch {old} -> {cfg.run.global_batch}: the lr and schedule follow this run's "
                 f"config (lr {cfg.method.lr:.6g})")
    world = cfg.run.num_devices * cfg.run.num_nodes
    if resumed.get("world_size", world) != world:
        line += f"; {resumed['world_size']} -> {world} ranks: the interrupted epoch's remaining items are resharded"
    print(line, flush=True)


def run_pretrain(
    cfg: PretrainConfig, datamodule: pl.LightningDataModule | None = None, callbacks: list | None = None
) -> PretrainResult:
    """Train one method from a resolved config (see :func:`resolve_pretrain_config`); ``callbacks`` are added.

    Refuses a launch whose process count is not devices x nodes (:class:`LaunchError`); a rerun of a named
    run resumes from its own newest checkpoint.
    """
    check_launch(cfg.run.num_devices, cfg.run.num_nodes)
    run_dir = _run_dir(cfg)
    cfg = _resumed(cfg, run_dir)
    record = {**cfg.to_record(), "run_dir": str(run_dir)}
    if cfg.run.ckpt_path:
        record["resumed_from"] = resume_record(Path(cfg.run.ckpt_path))
        _announce_resume(record["resumed_from"], cfg)
        # Resuming continues in the run's own folder: its checkpoints are expected there.
        warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    pl.seed_everything(cfg.method.seed, workers=True, verbose=False)
    if datamodule is None:
        datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    model = _build_model(cfg, datamodule, record)
    record["sync_batchnorm"] = _sync_batchnorm(cfg, model)

    position = DataPosition()
    datamodule.train_dataloader = position.wrap(datamodule.train_dataloader)
    # Lightning warns that a mid-epoch resume repeats data unless the loader is stateful; DataPosition
    # makes the resumed loader skip exactly the consumed batches (tested), so the warning is moot.
    warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch ended")
    # val/* are reduced over ranks by the module itself, once per validation (PretrainModule.on_validation_epoch_end).
    warnings.filterwarnings("ignore", message=r"It is recommended to use `self.log\('val/")
    val_ds = getattr(datamodule, "datasets", {}).get("val")
    # Every rank needs a validation batch: a rank without one skips the loop and its reduction.
    has_val = val_ds is not None and len(val_ds) >= cfg.run.num_devices * cfg.run.num_nodes
    folder = RunFolder(run_dir)
    extra = [folder, position, Throughput(run_dir, cfg.run.log_every_n_steps), *_diagnostics(cfg, run_dir),
             *(callbacks or [])]
    trainer = build_trainer(cfg, run_dir, has_val, extra_callbacks=extra, sync_batchnorm=record["sync_batchnorm"])
    if trainer.is_global_zero:
        _save_config(record, run_dir)
    _fit(trainer, model, datamodule, cfg, run_dir)
    run_dir = folder.run_dir  # rank 0's, on every rank
    last = run_dir / "checkpoints" / "last.ckpt"
    return PretrainResult(run_dir, last if last.exists() else None, _best_checkpoint(trainer), cfg, model)


def pretrain_from_argv(argv: list[str] | None = None, description: str | None = None) -> PretrainResult:
    """``main_pretrain.py`` as a function: parse ``argv``, resolve the config, train."""
    return run_pretrain(resolve_pretrain_config(config_from_args(build_parser(description).parse_args(argv))))

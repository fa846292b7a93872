"""What a pre-training job on a cluster needs besides the training itself: the launch contract, one run
folder for all ranks, and automatic resume.

- :func:`check_launch`: a launcher that started more or fewer processes than ``--num_devices x
  --num_nodes`` (``torchrun --nproc_per_node 2`` without ``--num_devices 2``, an ``srun`` with another task
  count) is refused in one line. Lightning would otherwise run independent single-process trainings
  that overwrite each other's checkpoints, or wait for ranks that never come.
- :class:`RunFolder`: every rank uses rank 0's run folder (a timestamped default differs between ranks
  that start in different seconds).
- :func:`find_resume_checkpoint`: a rerun of a named run (a SLURM requeue, a crashed job started again)
  resumes from the newest of its checkpoints (``last.ckpt``, ``stepN.ckpt``, the ``hpc_ckpt_N.ckpt`` that
  Lightning writes on SIGUSR1) instead of training from step 0 into the same folder.
- :class:`AtomicCheckpointIO`: checkpoints are written to a temporary sibling and renamed, so a job
  killed while writing (preemption, time limit) leaves the previous ``last.ckpt`` whole for the resume.
- :func:`resume_record`: what the run resumes from (checkpoint, step, world size and global batch of the
  run that wrote it), stored in the run's record so a resume on another world size is visible.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins import TorchCheckpointIO

from osf.utils.atomic import atomic_path

__all__ = ["AtomicCheckpointIO", "LaunchError", "RunFolder", "check_launch", "find_resume_checkpoint", "launched_processes",
           "remove_partial_writes", "resume_record"]


class LaunchError(RuntimeError):
    """The processes a launcher started do not match the run's devices x nodes."""


def launched_processes(env: Mapping[str, str] | None = None) -> tuple[int, str] | None:
    """``(processes, source)`` a launcher started this job with, or ``None`` for a plain single process.

    ``WORLD_SIZE`` is set by torchrun (and by Lightning for the ranks it starts itself); ``SLURM_NTASKS``
    counts when Lightning will take its ranks from SLURM (``srun`` in a batch job, not an interactive shell).
    """
    env = os.environ if env is None else env
    if env.get("WORLD_SIZE"):
        return int(env["WORLD_SIZE"]), f"WORLD_SIZE={env['WORLD_SIZE']}"
    if env.get("SLURM_NTASKS") and env.get("SLURM_JOB_NAME", "") not in ("bash", "interactive"):
        return int(env["SLURM_NTASKS"]), f"SLURM_NTASKS={env['SLURM_NTASKS']}"
    return None


def check_launch(num_devices: int, num_nodes: int, env: Mapping[str, str] | None = None) -> None:
    """Refuse (one line) a launch whose process count is not ``num_devices x num_nodes``."""
    launched = launched_processes(env)
    expected = int(num_devices) * int(num_nodes)
    if launched is None or launched[0] == expected:
        return
    processes, source = launched
    raise LaunchError(
        f"the launcher started {processes} processes ({source}) but --num_devices {num_devices} x --num_nodes "
        f"{num_nodes} = {expected}; pass --num_devices (per node) and --num_nodes that multiply to {processes}, "
        "or start one process and let Lightning start the others"
    )


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, writing a temporary sibling that replaces the file only when complete."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        """Write ``checkpoint`` to ``path`` atomically (local paths; others as Lightning writes them)."""
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        with atomic_path(path) as tmp:
            super().save_checkpoint(checkpoint, tmp)


class RunFolder(pl.Callback):
    """Holds the run folder; at setup every rank takes rank 0's (broadcast), before anything is written."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Broadcast rank 0's folder and point the module's record at it."""
        self.run_dir = Path(trainer.strategy.broadcast(str(self.run_dir), src=0))
        if getattr(pl_module, "run_config", None) is not None:
            pl_module.run_config["run_dir"] = str(self.run_dir)


def find_resume_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint a previous attempt of this run left (``checkpoints/last.ckpt``, ``stepN.ckpt`` or
    ``hpc_ckpt_N.ckpt``), by modification time; a job killed between writing ``stepN.ckpt`` and ``last.ckpt``
    resumes from the former. Checkpoints are written atomically (:class:`AtomicCheckpointIO`): each is whole."""
    run_dir = Path(run_dir)
    ckpt_dir = run_dir / "checkpoints"
    candidates = [*ckpt_dir.glob("last.ckpt"), *ckpt_dir.glob("step*.ckpt"), *run_dir.glob("hpc_ckpt_*.ckpt")]
    candidates = [p for p in candidates if p.is_file()]
    return max(candidates, key=lambda p: p.stat().st_mtime_ns) if candidates else None


def remove_partial_writes(run_dir: Path) -> list[Path]:
    """Remove the temporary files of checkpoint writes a killed job left (``.NAME.XXXX.tmp``, never complete)."""
    leftovers = [p for d in (Path(run_dir), Path(run_dir) / "checkpoints") for p in d.glob(".*.ckpt.*.tmp")]
    for path in leftovers:
        path.unlink(missing_ok=True)
    return leftovers


def _load(path: Path) -> dict[str, Any]:
    """A checkpoint memory-mapped (safe loader): reading its counters costs little even for a large model."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:
        return torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) files cannot be mapped


def _global_batch(record: Mapping[str, Any] | None) -> int | None:
    if not record:
        return None
    keys = ("batch_size", "num_devices", "num_nodes", "accumulate_grad_batches")
    if not all(record.get(k) for k in keys):
        return None
    return int(record["batch_size"]) * int(record["num_devices"]) * int(record["num_nodes"]) * int(record["accumulate_grad_batches"])


def resume_record(path: Path) -> dict[str, Any]:
    """What resuming from ``path`` means: its step, and the world size, global batch and lr of the run that wrote it."""
    ckpt = _load(Path(path))
    old = (ckpt.get("osf") or {}).get("run_config") or {}
    out: dict[str, Any] = {"checkpoint": str(path), "step": int(ckpt.get("global_step", 0))}
    if old:
        out.update(world_size=int(old.get("num_devices", 1)) * int(old.get("num_nodes", 1)),
                   global_batch=_global_batch(old), lr=(old.get("method_kwargs") or {}).get("lr"))
    return out

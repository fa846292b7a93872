"""One downstream run end to end: :func:`run_downstream` is what ``main_pipelines/main_finetune.py`` calls.

The run's level picks the module that does it, each reading its own part of the configuration
(:mod:`osf.downstream.run_config`):

- epoch level (default): :func:`osf.downstream.epoch.run.run_epoch_level` (``cfg.probe`` or ``cfg.finetune``);
- sequence context (``--context_epochs K``): :func:`osf.downstream.sequence.run.run_sequence_level`
  (``cfg.probe`` and ``cfg.sequence``);
- night level (``--eval_level night``): :func:`osf.downstream.night.run.run_night_level` (``cfg.night``).
"""

from __future__ import annotations

from typing import Any

from osf.downstream.epoch.run import run_epoch_level
from osf.downstream.night.run import run_night_level
from osf.downstream.run_config import DownstreamConfig
from osf.downstream.sequence.run import run_sequence_level

__all__ = ["run_downstream"]


def run_downstream(cfg: DownstreamConfig) -> dict[str, Any] | None:
    """Run one downstream evaluation and write its JSON, ``results.csv`` row(s) and model file(s).

    Returns the run record (``None`` on non-zero DDP ranks, which write nothing).
    """
    if cfg.eval_level == "night":
        return run_night_level(cfg)
    if cfg.eval_level != "epoch":
        raise ValueError(f"unknown --eval_level {cfg.eval_level!r}; choose epoch or night")
    if cfg.sequence.context_epochs:
        return run_sequence_level(cfg)
    return run_epoch_level(cfg)

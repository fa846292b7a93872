"""Momentum (EMA) teacher shared by the DINO-style methods."""

from __future__ import annotations

import copy

import torch
from torch import nn

from osf.utils.schedules import cosine_schedule

__all__ = ["cosine_momentum", "ema_update", "make_momentum_copy"]


def cosine_momentum(step: int, total_steps: int, base: float = 0.996, final: float = 1.0) -> float:
    """Teacher momentum at optimizer ``step`` of ``total_steps``: cosine from ``base`` to ``final``.

    ``total_steps`` must be the optimizer steps of the whole run (``trainer.estimated_stepping_batches``)
    whether the run is limited by epochs or by steps; OSF's release used the epoch count in the
    epoch-limited case and so never approached ``final``.
    """
    return cosine_schedule(step, total_steps, base, final)


def make_momentum_copy(module: nn.Module) -> nn.Module:
    """Deep copy of ``module`` with gradients off: the teacher starts equal to the student."""
    teacher = copy.deepcopy(module)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """``teacher = momentum * teacher + (1 - momentum) * student`` over matching parameters."""
    t_params = [p for p in teacher.parameters()]
    s_params = [p.detach() for p in student.parameters()]
    if len(t_params) != len(s_params):
        raise ValueError(f"teacher has {len(t_params)} parameters, student {len(s_params)}: not a momentum copy")
    if momentum >= 1.0:
        return
    # Foreach kernels: one launch per parameter list instead of one per tensor (matters for big ViTs).
    torch._foreach_lerp_(t_params, s_params, 1.0 - momentum)

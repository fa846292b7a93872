"""Training schedules as explicit functions of the optimizer step.

Every schedule takes the step and the total number of optimizer steps of the run
(``trainer.estimated_stepping_batches``), so a run defined by epochs and one defined by steps follow
the same curve, and a resumed run continues where it stopped (the step is all the state there is).
"""

from __future__ import annotations

import math

__all__ = ["cosine_schedule", "linear_warmup_then_constant", "warmup_cosine_factor", "warmup_steps_from"]


def _check(step: int, total_steps: int) -> None:
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")


def cosine_schedule(step: int, total_steps: int, start: float, end: float) -> float:
    """Half-cosine from ``start`` (step 0) to ``end`` (last step ``total_steps - 1``), then ``end``."""
    _check(step, total_steps)
    if total_steps == 1:
        return end
    progress = min(step / (total_steps - 1), 1.0)
    return end + 0.5 * (start - end) * (1.0 + math.cos(math.pi * progress))


def linear_warmup_then_constant(step: int, warmup_steps: int, start: float, end: float) -> float:
    """Linear from ``start`` (step 0) to ``end`` (step ``warmup_steps``), constant afterwards."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if warmup_steps <= 0 or step >= warmup_steps:
        return end
    return start + (end - start) * step / warmup_steps


def warmup_cosine_factor(step: int, total_steps: int, warmup_steps: int, min_ratio: float = 0.0) -> float:
    """LR multiplier: linear warm-up ``(step+1)/warmup`` then cosine from 1 to ``min_ratio`` at the end.

    The warm-up starts at ``1/warmup`` rather than 0 so the very first step already moves the
    weights (an LR of exactly 0 wastes a step and makes "parameters change" checks meaningless).
    """
    _check(step, total_steps)
    warmup_steps = min(warmup_steps, total_steps)
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = total_steps - warmup_steps
    if decay_steps <= 1:
        return 1.0 if step < total_steps else min_ratio
    progress = min((step - warmup_steps) / (decay_steps - 1), 1.0)
    return min_ratio + 0.5 * (1.0 - min_ratio) * (1.0 + math.cos(math.pi * progress))


def warmup_steps_from(total_steps: int, warmup_frac: float = 0.0, warmup_steps: int | None = None) -> int:
    """Resolve a warm-up length given either as a step count or as a fraction of the run."""
    if warmup_steps is not None:
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        return int(warmup_steps)
    if not 0.0 <= warmup_frac <= 1.0:
        raise ValueError(f"warmup_frac must be in [0, 1], got {warmup_frac}")
    return round(warmup_frac * total_steps)

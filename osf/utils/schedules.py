"""Training schedules indexed by the optimizer step: one type, :class:`CosineScheduler`.

Learning rate, teacher momentum, teacher temperature (and a weight decay, were one scheduled) all
follow the same shape, as in DINOv2's ``CosineScheduler``: an optional linear warm-up, then a
half-cosine from the peak to the final value reached at the last step. Every schedule takes the total
number of optimizer steps of the run (``trainer.estimated_stepping_batches``), so a run defined by
epochs and one defined by steps follow the same curve, and a resumed run continues where it stopped
(the step is all the state there is). The functions below are the named uses of that one type.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["CosineScheduler", "cosine_schedule", "linear_warmup_then_constant", "warmup_cosine_factor", "warmup_steps_from"]


@dataclass(frozen=True)
class CosineScheduler:
    """Value at optimizer step ``step`` (``scheduler(step)``).

    Steps ``0 .. warmup_steps - 1`` rise linearly from ``warmup_start`` to ``peak`` (both included);
    the remaining steps follow a half-cosine from ``peak`` to ``final`` at step ``total_steps - 1``;
    later steps stay at ``final``. A decay of a single step stays at ``peak`` (the step must train).
    """

    peak: float
    final: float
    total_steps: int
    warmup_steps: int = 0
    warmup_start: float = 0.0

    def __post_init__(self) -> None:
        if self.total_steps <= 0:
            raise ValueError(f"total_steps must be positive, got {self.total_steps}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")

    def __call__(self, step: int) -> float:
        """The scheduled value at ``step`` (0-based)."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        warmup = min(self.warmup_steps, self.total_steps)
        if step < warmup:
            return self._warmup_value(step, warmup)
        decay_steps = self.total_steps - warmup
        if decay_steps <= 1:
            return self.peak if step < self.total_steps else self.final
        progress = min((step - warmup) / (decay_steps - 1), 1.0)
        return self.final + 0.5 * (self.peak - self.final) * (1.0 + math.cos(math.pi * progress))

    def _warmup_value(self, step: int, warmup: int) -> float:
        if warmup == 1:
            return self.warmup_start
        return self.warmup_start + (self.peak - self.warmup_start) * step / (warmup - 1)


def cosine_schedule(step: int, total_steps: int, start: float, end: float) -> float:
    """Half-cosine from ``start`` (step 0) to ``end`` (last step ``total_steps - 1``), then ``end``."""
    return CosineScheduler(start, end, total_steps)(step)


def linear_warmup_then_constant(step: int, warmup_steps: int, start: float, end: float) -> float:
    """Linear from ``start`` (step 0) to ``end`` (step ``warmup_steps``), constant afterwards."""
    # The ramp's last point (``end``) is step ``warmup_steps``, hence warmup_steps + 1 ramp steps.
    ramp = warmup_steps + 1 if warmup_steps > 0 else 0
    return CosineScheduler(end, end, max(ramp, 1), ramp, start)(step)


def warmup_cosine_factor(step: int, total_steps: int, warmup_steps: int, min_ratio: float = 0.0) -> float:
    """LR multiplier: linear warm-up ``(step+1)/warmup`` then cosine from 1 to ``min_ratio`` at the end.

    The warm-up starts at ``1/warmup`` rather than 0 so the very first step already moves the
    weights (an LR of exactly 0 wastes a step and makes "parameters change" checks meaningless).
    """
    warmup = min(warmup_steps, total_steps)
    return CosineScheduler(1.0, min_ratio, total_steps, warmup, 1.0 / warmup if warmup else 0.0)(step)


def warmup_steps_from(total_steps: int, warmup_frac: float = 0.0, warmup_steps: int | None = None) -> int:
    """Resolve a warm-up length given either as a step count or as a fraction of the run."""
    if warmup_steps is not None:
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        return int(warmup_steps)
    if not 0.0 <= warmup_frac <= 1.0:
        raise ValueError(f"warmup_frac must be in [0, 1], got {warmup_frac}")
    return round(warmup_frac * total_steps)

"""Model selection on validation: the training loop shared by the heads trained on cached features.

The linear probe, the sequence-context head and the night models all train with AdamW and a cosine
decay to zero, validate every ``eval_every`` steps (and at the last step), and keep the weights of
the step with the best validation score. :func:`train_with_validation` is that loop;
:class:`ValidationSelection` is its record (also used by the closed-form night readout, which
selects a penalty instead of a step).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from osf.utils.schedules import CosineScheduler


@dataclass
class ValidationSelection:
    """Validation history of a training run and the best step so far, with its weights."""

    metric: str
    best_step: int = 0
    best_score: float = -math.inf
    history: list[dict[str, Any]] = field(default_factory=list)
    best_state: dict[str, torch.Tensor] | None = field(default=None, repr=False)

    @classmethod
    def start(cls, model: nn.Module, metric: str) -> ValidationSelection:
        """A selection whose fallback is ``model``'s current weights (kept when no score is finite)."""
        return cls(metric, best_state=copy.deepcopy(model.state_dict()))

    def record(self, model: nn.Module, step: int, score: float, **logged: float) -> None:
        """Log ``score`` at ``step`` (with ``logged`` values first) and keep ``model``'s weights if it is the best."""
        self.history.append({"step": step, **logged, f"val_{self.metric}": score})
        if score > self.best_score:  # NaN never wins
            self.best_state, self.best_score, self.best_step = copy.deepcopy(model.state_dict()), score, step

    def restore_best(self, model: nn.Module) -> None:
        """Load the best weights seen into ``model``."""
        if self.best_state is not None:
            model.load_state_dict(self.best_state)


def cosine_adamw(model: nn.Module, lr: float, weight_decay: float, max_steps: int
                 ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over every parameter of ``model`` and a per-step cosine decay from ``lr`` to 0 over ``max_steps``.

    The one cosine schedule (``CosineScheduler``) as a factor of ``lr``: it reaches 0 at step ``max_steps``,
    one step after the last one trained, so that step still moves the weights.
    """
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, CosineScheduler(1.0, 0.0, total_steps=max_steps + 1))
    return opt, sched


def train_with_validation(
    model: nn.Module,
    batch_loss: Callable[[], torch.Tensor],
    validation_score: Callable[[], float],
    metric: str,
    *,
    max_steps: int,
    eval_every: int,
    lr: float,
    weight_decay: float,
) -> ValidationSelection:
    """Train ``model`` for ``max_steps`` on ``batch_loss()`` (one batch per call); keep the best validated step.

    ``validation_score()`` is called every ``eval_every`` steps and at the last step; ``model`` ends
    with the weights of the best one (its initial weights when no score was finite).
    """
    opt, sched = cosine_adamw(model, lr, weight_decay, max_steps)
    selection = ValidationSelection.start(model, metric)
    for step in range(1, max_steps + 1):
        model.train()
        loss = batch_loss()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % eval_every == 0 or step == max_steps:
            selection.record(model, step, validation_score(), train_loss=float(loss.detach()))
    selection.restore_best(model)
    return selection

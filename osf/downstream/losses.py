"""Classification losses for downstream heads: cross-entropy, focal, balanced softmax."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LOSS_TYPES: tuple[str, ...] = ("ce", "focal", "balanced_softmax")


class FocalLoss(nn.Module):
    """Focal loss (Lin et al. 2017): ``-(1 - p_t)^gamma log p_t``; down-weights easy epochs."""

    def __init__(self, gamma: float = 2.0) -> None:
        super().__init__()
        self.gamma = float(gamma)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean focal loss of ``logits`` ``[B, C]`` against class ids ``target`` ``[B]``."""
        log_p = F.log_softmax(logits, dim=-1).gather(1, target[:, None]).squeeze(1)
        return (-((1.0 - log_p.exp()) ** self.gamma) * log_p).mean()


class BalancedSoftmaxLoss(nn.Module):
    """Balanced softmax (Ren et al. 2020): CE on ``logits + log prior``; at inference use raw logits.

    Adding the training prior during training makes the raw logits estimate a class-balanced
    posterior, which suits rare events (arousals, apneas) without resampling.
    """

    def __init__(self, class_counts: torch.Tensor) -> None:
        super().__init__()
        counts = torch.as_tensor(class_counts, dtype=torch.float32).clamp_min(1.0)
        self.register_buffer("log_prior", (counts / counts.sum()).log())

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of prior-shifted ``logits`` ``[B, C]`` against ``target`` ``[B]``."""
        return F.cross_entropy(logits + self.log_prior.to(logits.dtype), target)


def make_loss(loss_type: str, class_counts: torch.Tensor | None = None) -> nn.Module:
    """Build the loss named ``loss_type`` (``class_counts`` needed by ``balanced_softmax``)."""
    if loss_type == "ce":
        return nn.CrossEntropyLoss()
    if loss_type == "focal":
        return FocalLoss()
    if loss_type == "balanced_softmax":
        if class_counts is None:
            raise ValueError("balanced_softmax needs the training class counts")
        return BalancedSoftmaxLoss(class_counts)
    raise ValueError(f"unknown loss_type {loss_type!r}; choose one of {list(LOSS_TYPES)}")

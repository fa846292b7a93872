"""DINO self-distillation loss with teacher centering (Caron et al., 2021).

The loss between a student view ``s`` and a teacher view ``t`` is the cross-entropy
``-sum_k softmax((t_k - c_k) / tau_t) * log_softmax(s_k / tau_s)``, averaged over the batch and over the
(student view, teacher view) pairs that count. The center ``c`` is an EMA of the teacher's batch mean
logit, all-reduced across ranks so every rank centers with the same vector.

DINOv2 (Oquab et al., 2023) replaces the centering by a Sinkhorn-Knopp normalisation of the teacher
(:class:`SinkhornKnopp`): ``Q = exp(t / tau_t)`` is rescaled, alternately over prototypes and over the
batch, until every prototype carries ``1/K`` of the batch and every row sums to 1. A sharp teacher then
cannot put the whole batch on a few prototypes.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

__all__ = ["CENTERINGS", "Centering", "DINOLoss", "SinkhornKnopp", "dino_cross_entropy", "make_centering", "view_pairs"]

CENTERINGS: tuple[str, ...] = ("ema", "sinkhorn")


def _all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        x = x.clone()
        dist.all_reduce(x)
        x /= dist.get_world_size()
    return x


class Centering(nn.Module):
    """EMA center of teacher logits; the buffer is part of the state dict (saved and resumed)."""

    def __init__(self, dim: int, momentum: float = 0.9) -> None:
        super().__init__()
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"center momentum must be in [0, 1), got {momentum}")
        self.momentum = momentum
        self.register_buffer("center", torch.zeros(1, dim))

    @torch.no_grad()
    def update(self, teacher_logits: torch.Tensor) -> None:
        """Move the center towards the mean of ``teacher_logits`` ``[..., dim]`` over all ranks."""
        batch_center = _all_reduce_mean(teacher_logits.detach().float().reshape(-1, teacher_logits.shape[-1]).mean(0, keepdim=True))
        self.center.mul_(self.momentum).add_(batch_center, alpha=1.0 - self.momentum)

    def teacher_probs(self, teacher_logits: torch.Tensor, temperature: float, gather: bool = True) -> torch.Tensor:
        """Softmax of centered, sharpened teacher logits (no gradient; ``gather`` unused: no collective)."""
        return F.softmax((teacher_logits.detach().float() - self.center) / temperature, dim=-1)


def _local(x: torch.Tensor) -> torch.Tensor:
    return x


def _all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(x)
    return x


def _all_reduce_max(x: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(x, op=dist.ReduceOp.MAX)
    return x


class SinkhornKnopp(nn.Module):
    """Teacher probabilities with equal prototype mass over the global batch (DINOv2); no state to update."""

    def __init__(self, n_iterations: int = 3) -> None:
        super().__init__()
        self.n_iterations = n_iterations

    def update(self, teacher_logits: torch.Tensor) -> None:
        """Nothing to track: each batch is normalised on its own."""

    @torch.no_grad()
    def teacher_probs(self, teacher_logits: torch.Tensor, temperature: float, gather: bool = True) -> torch.Tensor:
        """Rows of ``teacher_logits`` ``[..., K]`` (all ranks' rows together) as equipartitioned probabilities.

        ``gather=False`` normalises this rank's rows alone, with no collective: for validation (shards
        may be uneven) and for the learning diagnostics (rank 0 only), where an all-reduce would hang.
        """
        shape = teacher_logits.shape
        reduce_sum, reduce_max = (_all_reduce_sum, _all_reduce_max) if gather else (_local, _local)
        scaled = teacher_logits.detach().float().reshape(-1, shape[-1]) / temperature
        # exp(t / tau) overflows float32 for a sharp teacher; a shared shift cancels in the normalisation.
        shift = reduce_max(scaled.max() if scaled.numel() else scaled.new_tensor(-torch.inf))
        q = torch.exp(scaled - shift).t()  # [K, B]
        n_rows = reduce_sum(torch.tensor(float(q.shape[1]), device=q.device))
        q /= reduce_sum(q.sum())
        for _ in range(self.n_iterations):
            q /= reduce_sum(q.sum(dim=1, keepdim=True)) * q.shape[0]  # each prototype: 1/K of the mass
            q /= q.sum(dim=0, keepdim=True) * n_rows  # each row: 1/B
        return (q * n_rows).t().reshape(shape)


def make_centering(kind: str, dim: int, momentum: float = 0.9) -> Centering | SinkhornKnopp:
    """The teacher normalisation ``kind`` (:data:`CENTERINGS`): EMA centering or Sinkhorn-Knopp."""
    if kind == "ema":
        return Centering(dim, momentum)
    if kind == "sinkhorn":
        return SinkhornKnopp()
    raise ValueError(f"unknown teacher centering {kind!r}; choose one of {list(CENTERINGS)}")


def dino_cross_entropy(student_logits: torch.Tensor, teacher_probs: torch.Tensor, student_temp: float) -> torch.Tensor:
    """Mean over rows of ``-sum(teacher_probs * log_softmax(student_logits / student_temp))``."""
    return torch.sum(-teacher_probs * F.log_softmax(student_logits.float() / student_temp, dim=-1), dim=-1).mean()


def view_pairs(n_student: int, n_teacher: int, same_view_pairs: bool) -> list[tuple[int, int]]:
    """(student view, teacher view) pairs; view ``i < n_teacher`` of the student is teacher view ``i``."""
    if n_teacher > n_student:
        raise ValueError(f"{n_teacher} teacher views but only {n_student} student views")
    return [(s, t) for t in range(n_teacher) for s in range(n_student) if same_view_pairs or s != t]


class DINOLoss(nn.Module):
    """DINO loss over views; ``same_view_pairs`` counts (view i, view i) pairs as OSF does."""

    def __init__(self, out_dim: int, center_momentum: float = 0.9, same_view_pairs: bool = False,
                 centering: str = "ema") -> None:
        super().__init__()
        self.centering = make_centering(centering, out_dim, center_momentum)
        self.same_view_pairs = same_view_pairs

    def forward(
        self,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor,
        student_temp: float,
        teacher_temp: float,
        update_center: bool = True,
    ) -> torch.Tensor:
        """``student_logits`` ``[S, B, K]`` (teacher views first), ``teacher_logits`` ``[T, B, K]`` → scalar.

        Without ``update_center`` (validation) nothing is all-reduced: each rank normalises its own rows.
        """
        if student_logits.ndim != 3 or teacher_logits.ndim != 3:
            raise ValueError(
                f"expected [views, B, K] logits, got student {list(student_logits.shape)}, teacher {list(teacher_logits.shape)}"
            )
        probs = self.centering.teacher_probs(teacher_logits, teacher_temp, gather=update_center)
        pairs = view_pairs(student_logits.shape[0], teacher_logits.shape[0], self.same_view_pairs)
        if not pairs:
            raise ValueError("no (student, teacher) view pairs: need more student views or same_view_pairs=True")
        log_p = F.log_softmax(student_logits.float() / student_temp, dim=-1)
        s_idx = torch.tensor([s for s, _ in pairs], device=log_p.device)
        t_idx = torch.tensor([t for _, t in pairs], device=log_p.device)
        # One gather-and-reduce over all pairs instead of a Python loop of small kernels.
        loss = -(probs[t_idx] * log_p[s_idx]).sum(-1).mean()
        if update_center:
            self.centering.update(teacher_logits)
        return loss

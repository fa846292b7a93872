"""iBOT masked-patch self-distillation loss (Zhou et al., 2022).

The student sees a view with some patch tokens replaced by a mask token; the teacher sees the same
view unmasked. On the masked positions, the student's patch logits are trained to match the teacher's
centered, sharpened patch distribution. Each sample's masked tokens are averaged first, then samples,
so samples with many masked tokens do not dominate.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from osf.losses.dino import make_centering

__all__ = ["IBOTPatchLoss", "random_token_mask"]


def random_token_mask(batch: int, num_tokens: int, ratio: float, generator: torch.Generator | None = None,
                      device: torch.device | str = "cpu") -> torch.Tensor:
    """Bool ``[batch, num_tokens]`` with exactly ``round(ratio * num_tokens)`` (>= 1) True per row."""
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"mask ratio must be in (0, 1), got {ratio}")
    n_mask = max(1, round(ratio * num_tokens))
    noise = torch.rand(batch, num_tokens, generator=generator, device=device)
    ranks = noise.argsort(dim=1).argsort(dim=1)
    return ranks < n_mask


class IBOTPatchLoss(nn.Module):
    """Cross-entropy between teacher and student patch distributions on the masked tokens only."""

    def __init__(self, out_dim: int, center_momentum: float = 0.9, centering: str = "ema") -> None:
        super().__init__()
        self.centering = make_centering(centering, out_dim, center_momentum)

    def forward(
        self,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor,
        sample_index: torch.Tensor,
        n_samples: int,
        student_temp: float,
        teacher_temp: float,
        update_center: bool = True,
    ) -> torch.Tensor:
        """Logits ``[M, K]`` of the M masked tokens, ``sample_index`` long ``[M]`` (their sample) → scalar.

        Only masked tokens go through the heads (``logits = head(tokens[token_mask])``), which keeps
        the prototype layer's cost proportional to the mask ratio.
        """
        if student_logits.shape != teacher_logits.shape or student_logits.ndim != 2 or sample_index.shape != student_logits.shape[:1]:
            raise ValueError(
                f"shape mismatch: student {list(student_logits.shape)}, teacher {list(teacher_logits.shape)}, "
                f"sample_index {list(sample_index.shape)}"
            )
        probs = self.centering.teacher_probs(teacher_logits, teacher_temp, gather=update_center)  # no collective in validation
        per_token = torch.sum(-probs * F.log_softmax(student_logits.float() / student_temp, dim=-1), dim=-1)
        counts = torch.bincount(sample_index, minlength=n_samples)
        per_sample = torch.zeros(n_samples, device=per_token.device).index_add_(0, sample_index, per_token)
        has_masked = counts > 0
        per_sample = per_sample[has_masked] / counts[has_masked]
        if update_center:
            self.centering.update(teacher_logits)
        return per_sample.mean()

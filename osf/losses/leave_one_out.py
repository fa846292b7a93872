"""SleepFM's leave-one-out contrastive loss (Thapa et al., 2024) with missing modalities masked out.

Each of ``M`` modalities of an epoch has an embedding ``z[m, b]`` (L2-normalised here). For modality
``k`` the target of sample ``b`` is the mean of the *other* modalities' embeddings of that sample,
re-normalised:

    t[k, b] = normalize( sum_{j != k, present[j, b]} z[j, b] )

and InfoNCE, in both directions as in SleepFM's code (CLIP-style), makes ``z[k, b]`` pick its own
target among the targets of the batch and ``t[k, b]`` pick its own modality embedding among those of
the batch (the other samples are the negatives), with a learnable temperature ``s = exp(logit_scale)``
(clamped at 100):

    to_target_k = mean_b -log( exp(s <z[k,b], t[k,b]>) / sum_{b'} exp(s <z[k,b], t[k,b']>) )
    to_anchor_k = mean_b -log( exp(s <t[k,b], z[k,b]>) / sum_{b'} exp(s <t[k,b], z[k,b']>) )
    loss_k = (to_target_k + to_anchor_k) / 2
    loss   = sum_k loss_k

Remaining differences from SleepFM's ``2_pretrain.py`` (Thapa et al., 2024): its target is the plain
mean of the other embeddings (here re-normalised, so the logits are cosines and the temperature means
the same for 2 or 5 modalities); its temperature starts at 1 (``exp(0)``) and is only kept >= 1 in
scale, here it starts at ``init_temperature`` (0.07, CLIP's) and the scale is clamped at 100; it
averages the 2M directional terms, here the per-modality means are summed (M times its value, the
gradient scale the lr of ``sleepfm`` was set with).

Missing modalities (``present[m, b]`` False): an absent modality contributes neither to targets nor
as an anchor; a sample whose modality ``k`` is absent, or that has no *other* modality, is not an
anchor of ``loss_k``, and its undefined target is not a negative. A modality with no valid anchor in
the batch adds 0 (with a graph, so every parameter still receives a gradient, as DDP requires).
Under ``torch.distributed`` the targets are gathered from every rank with their gradient.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from osf.losses.ntxent import gather_with_grad

__all__ = ["LeaveOneOutLoss", "leave_one_out_loss", "leave_one_out_targets"]

MAX_LOGIT_SCALE: float = 100.0  # CLIP's clamp: temperature never below 0.01


def leave_one_out_targets(z: torch.Tensor, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets ``[M, B, D]`` (normalised mean of the other present modalities) and their validity ``[M, B]``."""
    weights = present.to(z.dtype).unsqueeze(-1)  # [M, B, 1]
    total = (z * weights).sum(0, keepdim=True)  # [1, B, D]
    others = total - z * weights  # sum over j != k of the present ones
    n_others = present.sum(0, keepdim=True) - present.long()  # [M, B]
    return F.normalize(others, dim=-1), n_others > 0


def leave_one_out_loss(
    embeddings: torch.Tensor, present: torch.Tensor, logit_scale: torch.Tensor, gather: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed leave-one-out InfoNCE of ``embeddings`` ``[M, B, D]``; ``present`` bool ``[M, B]``.

    Returns ``(loss, per_modality [M])``; ``logit_scale`` is the log of the inverse temperature.
    """
    if embeddings.ndim != 3 or present.shape != embeddings.shape[:2] or present.dtype != torch.bool:
        raise ValueError(
            f"expected embeddings [M, B, D] and bool present [M, B], got {list(embeddings.shape)} and "
            f"{present.dtype} {list(present.shape)}"
        )
    n_modalities = embeddings.shape[0]
    if n_modalities < 2:
        raise ValueError(f"leave-one-out needs at least 2 modalities, got {n_modalities}")
    z = F.normalize(embeddings.float(), dim=-1)
    targets, target_valid = leave_one_out_targets(z, present)
    pairs = present & target_valid  # samples with both an anchor and a target: the positives
    scale = logit_scale.float().exp().clamp(max=MAX_LOGIT_SCALE)
    per_modality = [
        (_info_nce(z[k], targets[k], target_valid[k], pairs[k], scale, gather)
         + _info_nce(targets[k], z[k], present[k], pairs[k], scale, gather)) / 2
        for k in range(n_modalities)
    ]
    per_modality_t = torch.stack(per_modality)
    return per_modality_t.sum(), per_modality_t


def _info_nce(queries: torch.Tensor, keys: torch.Tensor, key_valid: torch.Tensor, rows: torch.Tensor,
              scale: torch.Tensor, gather: bool) -> torch.Tensor:
    """Mean over the ``rows`` of ``-log softmax(scale <query_b, keys>)`` at key ``b`` (keys gathered over ranks).

    Invalid keys are no negatives; with no valid row it is 0 with a graph (DDP: every parameter gets a gradient).
    """
    offset = 0
    if gather:
        keys, offset = gather_with_grad(keys)
        key_valid, _ = gather_with_grad(key_valid)
    logits = (scale * queries @ keys.t()).masked_fill(~key_valid.unsqueeze(0), float("-inf"))  # [B, B_global]
    if not bool(rows.any()):
        return 0.0 * (queries.sum() + keys.sum()) + 0.0 * scale
    positive = torch.arange(queries.shape[0], device=queries.device)[rows] + offset
    return F.cross_entropy(logits[rows], positive)


class LeaveOneOutLoss(nn.Module):
    """:func:`leave_one_out_loss` with its learnable temperature (``logit_scale``, a parameter)."""

    def __init__(self, init_temperature: float = 0.07, learnable: bool = True, gather: bool = True) -> None:
        super().__init__()
        if init_temperature <= 1.0 / MAX_LOGIT_SCALE:
            raise ValueError(f"init_temperature must be > {1.0 / MAX_LOGIT_SCALE}, got {init_temperature}")
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)), requires_grad=learnable)
        self.gather = gather

    @property
    def temperature(self) -> float:
        """Current temperature ``1 / exp(logit_scale)`` (after the clamp)."""
        return 1.0 / min(float(self.logit_scale.detach().exp()), MAX_LOGIT_SCALE)

    def forward(
        self, embeddings: torch.Tensor, present: torch.Tensor, gather: bool | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss, per_modality)`` for ``embeddings`` ``[M, B, D]``, ``present`` ``[M, B]``; ``gather`` overrides."""
        return leave_one_out_loss(embeddings, present, self.logit_scale, self.gather if gather is None else gather)

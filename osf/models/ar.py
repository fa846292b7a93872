"""Autoregressive next-patch prediction (``ar``) with attention causal along time.

Tokens are (channel group g, time patch t) in the backbone's group-major order. In pre-training a
token at time ``t`` attends to every channel group at times ``<= t`` (:func:`time_causal_attn_bias`)
and predicts, through a linear head, the signal of its own group's next patch ``(g, t + 1)``; the
loss is the MSE on those next patches over recorded channels (tokens at the last time step have no
target). Outputs at time ``t`` therefore depend on no input after ``t``.

The CLS token acts as a start / attention-sink token: it attends only to itself (so it carries no
information about the epoch and leaks nothing) and every patch token may attend to it.

Downstream use: the exported backbone is a standard :class:`~osf.backbone.vit1d_cls.ViT1D` and is
used like every other method's, *bidirectionally* (plain ``forward_encoding``, no mask) with the
**mean of the patch tokens** pooled (``pooling="mean"`` / ``--use_mean_pool``): in pre-training the
CLS never saw the signal, so it is not a summary of the epoch. For causal features, pass
``attn_bias=time_causal_attn_bias(backbone)`` to ``forward_encoding``. The online probe reads the
mean of the (causal) patch outputs of the training step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from osf.backbone.vit1d_cls import ViT1D
from osf.losses.mae import masked_patch_mse
from osf.models.base import MethodConfig, PretrainModule, SSLStepOutput
from osf.models.mae import patch_dim, patch_weights, patchify
from osf.models.registry import register_method

__all__ = ["AR", "ARConfig", "next_patch_targets", "time_causal_attn_bias"]


@dataclass
class ARConfig(MethodConfig):
    """Next-patch prediction: the shared settings only (the baselines' AdamW recipe)."""


def time_causal_attn_bias(backbone: ViT1D, device: torch.device | str | None = None) -> torch.Tensor:
    """Bool ``[N+1, N+1]`` (True = may attend): patch (g, t) sees the CLS and all groups at times <= t."""
    time = torch.arange(backbone.num_tokens, device=device) % backbone.num_time_patches  # group-major tokens
    n = backbone.num_tokens
    bias = torch.zeros(n + 1, n + 1, dtype=torch.bool, device=device)
    bias[1:, 1:] = time.unsqueeze(0) <= time.unsqueeze(1)  # [query, key]
    bias[:, 0] = True  # everybody sees the CLS, which sees only itself
    return bias


def next_patch_targets(patches: torch.Tensor, backbone: ViT1D) -> tuple[torch.Tensor, torch.Tensor]:
    """``(targets [B, N, P], has_target [N])``: token (g, t) -> patch (g, t + 1); no target at the last t."""
    time = torch.arange(backbone.num_tokens, device=patches.device) % backbone.num_time_patches
    # In group-major order token n + 1 is (g, t + 1) whenever t is not the last time step.
    return torch.roll(patches, shifts=-1, dims=1), time < backbone.num_time_patches - 1


@register_method("ar", rank=6)
class AR(PretrainModule):
    """Next-patch prediction with time-causal attention (see module doc)."""

    embedding_pooling = "mean"  # the patch tokens are what the objective trains (module doc)

    config_type = ARConfig
    cfg: ARConfig

    def __init__(self, cfg: ARConfig | None = None, **fields: Any) -> None:
        """See :class:`ARConfig` (``fields`` override single fields of ``cfg``)."""
        super().__init__(cfg, **fields)
        if self.backbone.num_time_patches < 2:
            raise ValueError("ar needs at least 2 time patches per epoch")
        self.head = nn.Linear(self.width, patch_dim(self.backbone))
        self.register_buffer("attn_bias", time_causal_attn_bias(self.backbone), persistent=False)

    def ssl_step(self, batch: dict[str, Any], generator: torch.Generator, update_state: bool) -> SSLStepOutput:
        """MSE between each token's prediction and its group's next patch (recorded channels)."""
        x, channel_mask = batch["signal"], batch.get("channel_mask")
        _, tokens = self.encode(self.backbone, x, channel_mask=channel_mask, attn_bias=self.attn_bias)
        pred = self.head(tokens)
        targets, has_target = next_patch_targets(patchify(x, self.backbone), self.backbone)
        weights = patch_weights(channel_mask, x, self.backbone)
        if weights is not None:
            weights = torch.roll(weights, shifts=-1, dims=1)
        loss = masked_patch_mse(pred, targets, has_target.expand(x.shape[0], -1), weights)
        return SSLStepOutput(loss=loss, probe_features=tokens.mean(1))

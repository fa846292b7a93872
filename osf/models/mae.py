"""Masked autoencoder (``mae``; He et al., 2022) on PSG patch tokens, plus the patch utilities of the
reconstruction methods (MAE, VQ-VAE, AR).

A patch is what one backbone token sees: ``patch_size_ch`` channels x ``patch_size`` samples with the
released layout (``lead_wise=1``: 3 channel groups x 30 time patches = 90 tokens of 4 x 64 = 256
samples), all channels x ``patch_size`` with ``lead_wise=0``. :func:`patchify` cuts a signal into
patches in the backbone's token order (group-major), so token ``n`` of the encoder and patch ``n``
describe the same samples.

MAE: ``mask_ratio`` of the patch tokens (exactly ``round(mask_ratio * N)`` per sample, 68 of 90 at
0.75) are removed; the backbone encodes CLS + the visible tokens only (``keep_tokens``); a light
decoder (``decoder_depth`` pre-norm blocks of width ``decoder_width``, its own learned position
embeddings and mask token) sees the encoded visible tokens and the CLS, with mask tokens at the
removed positions, and predicts every patch. The loss is the MSE on the masked patches only, over
recorded channels (absent, zero-filled channels are never targets), optionally against per-patch
normalised targets (``norm_target``, MAE's ``norm_pix_loss``; off by default because flat PSG
patches have near-zero variance).

Downstream use: the exported backbone is used bidirectionally on all tokens (standard
``forward_encoding``); the CLS takes part in decoding so it is trained, and the mean of the patch
tokens is the usual MAE alternative. The online probe reads the CLS of the *masked* encoding
(the one the step computes anyway), so its accuracy understates that of the full input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from einops import rearrange
from torch import nn

from osf.backbone.vit1d_cls import Block, ViT1D, _init_weights
from osf.losses.ibot import random_token_mask
from osf.losses.mae import masked_patch_mse
from osf.models.base import MethodConfig, PretrainModule, SSLStepOutput
from osf.models.registry import register_method
from osf.utils.config_fields import option

__all__ = ["MAE", "MAEConfig", "PatchDecoder", "patch_dim", "patch_weights", "patchify", "random_keep_indices"]


def patch_dim(backbone: ViT1D) -> int:
    """Samples per token: channels per group x samples per time patch."""
    return (backbone.num_leads // backbone.num_groups) * backbone.patch_size


def patchify(x: torch.Tensor, backbone: ViT1D) -> torch.Tensor:
    """``[B, C, T]`` -> ``[B, N, P]`` patches in the backbone's token order (group-major)."""
    return rearrange(x, "b (g c) (t p) -> b (g t) (c p)", g=backbone.num_groups, p=backbone.patch_size)


def patch_weights(channel_mask: torch.Tensor | None, x: torch.Tensor, backbone: ViT1D) -> torch.Tensor | None:
    """``[B, N, P]`` float: 1 where the patch sample belongs to a recorded channel (``None`` if all are)."""
    if channel_mask is None or bool(channel_mask.all()):
        return None
    return patchify(channel_mask.unsqueeze(-1).to(x.dtype).expand_as(x), backbone)


def random_keep_indices(
    batch: int, num_tokens: int, mask_ratio: float, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(keep [B, K] long, sorted; masked [B, N] bool)`` with exactly ``round(ratio * N)`` masked per row."""
    masked = random_token_mask(batch, num_tokens, mask_ratio, generator, device)
    if int(masked[0].sum()) >= num_tokens:
        raise ValueError(f"mask_ratio={mask_ratio} leaves no visible token out of {num_tokens}")
    # Stable sort puts the visible (False) positions first, in increasing order.
    keep = masked.to(torch.int8).argsort(dim=1, stable=True)[:, : num_tokens - int(masked[0].sum())]
    return keep, masked


class PatchDecoder(nn.Module):
    """Light transformer decoder: embed tokens, own position embeddings, blocks, norm, patch head.

    ``forward(tokens [B, K, in_dim], keep=None | long [B, K], cls=None | [B, in_dim])``: with ``keep``,
    the ``K`` tokens sit at those positions and a learned mask token fills the others (MAE); without,
    ``K`` must be the number of tokens. Returns patch predictions ``[B, N, patch_dim]``.
    """

    def __init__(
        self,
        in_dim: int,
        num_tokens: int,
        patch_dim: int,
        width: int = 256,
        depth: int = 4,
        heads: int = 8,
        use_mask_token: bool = False,
        attn_impl: str = "sdpa",
    ) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"decoder width {width} is not divisible by {heads} heads")
        self.num_tokens, self.width = num_tokens, width
        self.embed = nn.Linear(in_dim, width)
        self.pos_embedding = nn.Parameter(torch.zeros(1, num_tokens + 1, width))  # index 0: CLS
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width)) if use_mask_token else None
        self.blocks = nn.ModuleList(
            Block(width, heads, width // heads, 4 * width, 0.0, 0.0, 0.0, attn_impl) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, patch_dim)
        self.apply(_init_weights)
        nn.init.trunc_normal_(self.pos_embedding, std=0.02)
        if self.mask_token is not None:
            nn.init.trunc_normal_(self.mask_token, std=0.02)

    def no_weight_decay(self) -> set[str]:
        """The decoder's position embeddings and mask token are spared from weight decay, as the backbone's."""
        return {"pos_embedding"} | ({"mask_token"} if self.mask_token is not None else set())

    def forward(self, tokens: torch.Tensor, keep: torch.Tensor | None = None, cls: torch.Tensor | None = None) -> torch.Tensor:
        """Patch predictions ``[B, N, patch_dim]`` (see class doc)."""
        x = self.embed(tokens)
        batch = x.shape[0]
        if keep is not None:
            if self.mask_token is None:
                raise ValueError("PatchDecoder was built without a mask token; cannot fill removed positions")
            full = self.mask_token.to(x.dtype).expand(batch, self.num_tokens, self.width)
            x = full.scatter(1, keep.unsqueeze(-1).expand(-1, -1, self.width), x)
        elif x.shape[1] != self.num_tokens:
            raise ValueError(f"decoder expects {self.num_tokens} tokens without keep indices, got {x.shape[1]}")
        x = x + self.pos_embedding[:, 1:]
        if cls is not None:
            x = torch.cat([self.embed(cls).unsqueeze(1) + self.pos_embedding[:, :1], x], dim=1)
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        return self.head(x[:, 1:] if cls is not None else x)


@dataclass
class MAEConfig(MethodConfig):
    """Masked autoencoding of patch tokens with a light decoder."""

    mask_ratio: float = option(0.75, help="fraction of patch tokens masked")
    decoder_width: int = option(256, help="decoder width")
    decoder_depth: int = option(4, help="decoder blocks")
    decoder_heads: int = option(8, help="decoder attention heads")
    norm_target: bool = option(False, help="per-patch normalised reconstruction targets (MAE's norm_pix_loss)")


@register_method("mae", rank=4)
class MAE(PretrainModule):
    """Masked autoencoding of patch tokens with a light decoder (see module doc)."""

    config_type = MAEConfig
    cfg: MAEConfig

    def __init__(self, cfg: MAEConfig | None = None, **fields: Any) -> None:
        """See :class:`MAEConfig` (``fields`` override single fields of ``cfg``)."""
        super().__init__(cfg, **fields)
        cfg = self.cfg
        if not 0.0 < cfg.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in (0, 1), got {cfg.mask_ratio}")
        self.decoder = PatchDecoder(
            self.width, self.backbone.num_tokens, patch_dim(self.backbone), cfg.decoder_width, cfg.decoder_depth,
            cfg.decoder_heads,
            use_mask_token=True, attn_impl=self.backbone.attn_impl,
        )

    def ssl_step(self, batch: dict[str, Any], generator: torch.Generator, update_state: bool) -> SSLStepOutput:
        """Encode the visible tokens, decode all, MSE on the masked patches of recorded channels."""
        x, channel_mask = batch["signal"], batch.get("channel_mask")
        keep, masked = random_keep_indices(x.shape[0], self.backbone.num_tokens, self.cfg.mask_ratio, generator, x.device)
        cls, visible = self.encode(self.backbone, x, channel_mask=channel_mask, keep_tokens=keep)
        pred = self.decoder(visible, keep=keep, cls=cls)
        loss = masked_patch_mse(
            pred, patchify(x, self.backbone), masked, patch_weights(channel_mask, x, self.backbone),
            normalize_target=self.cfg.norm_target,
        )
        return SSLStepOutput(loss=loss, logs={"mask_frac": masked.float().mean()}, probe_features=cls)

"""VQ-VAE (``vqvae``; van den Oord et al., 2017) with the ViT as encoder of PSG patch tokens.

The backbone encodes the full epoch; each patch token is projected to ``code_dim`` (factorised
codes, as in ViT-VQGAN), replaced by its nearest of ``codebook_size`` codes
(:class:`osf.losses.vq.VectorQuantizer`: EMA codebook by default, or a learned one with the
codebook loss; commitment weight 0.25; dead-code restarts; straight-through gradient), and a light
transformer decoder (:class:`osf.models.mae.PatchDecoder`, own position embeddings) reconstructs the
patch signals. Loss: MSE of the reconstruction over recorded channels + the quantiser loss. Logged:
``recon_loss``, ``vq_loss``, ``vq_perplexity`` (exp of the code entropy in the batch) and
``vq_usage`` (fraction of codes used in the batch).

Defaults: a codebook of 8192 codes x 32 dimensions (tests use 32 codes to stay light on CPU).

Downstream use: the exported backbone is used bidirectionally (standard ``forward_encoding``). The
CLS is not decoded, so it learns only through the patch tokens attending to it; mean-pooling the
patch tokens (``pooling="mean"``) is the representation the objective trains. The online probe
reads the CLS of the (full-input) encoding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from osf.losses.mae import masked_patch_mse
from osf.losses.vq import VectorQuantizer
from osf.models.base import MethodConfig, PretrainModule, SSLStepOutput
from osf.models.mae import MAEConfig, PatchDecoder, patch_dim, patch_weights, patchify
from osf.models.registry import register_method
from osf.utils.config_fields import field_of, option

__all__ = ["VQVAE", "VQVAEConfig"]


@dataclass
class VQVAEConfig(MethodConfig):
    """ViT encoder, vector quantiser and transformer decoder of patch signals."""

    codebook_size: int = option(8192, help="number of codes")
    code_dim: int = option(32, help="code dimension")
    commitment_weight: float = option(0.25, help="commitment loss weight")
    vq_ema: bool = option(True, help="EMA codebook updates instead of a learned codebook with the codebook loss")
    ema_decay: float = option(0.99, help="decay of the EMA codebook")
    dead_code_threshold: float = option(1.0, help="codes used less than this (EMA count) are restarted")
    decoder_width: int = field_of(MAEConfig, "decoder_width")
    decoder_depth: int = field_of(MAEConfig, "decoder_depth")
    decoder_heads: int = field_of(MAEConfig, "decoder_heads")


@register_method("vqvae", rank=5)
class VQVAE(PretrainModule):
    """ViT encoder, vector quantiser and transformer decoder of patch signals (see module doc)."""

    embedding_pooling = "mean"  # the patch tokens are what the objective trains (module doc)

    config_type = VQVAEConfig
    cfg: VQVAEConfig

    def __init__(self, cfg: VQVAEConfig | None = None, **fields: Any) -> None:
        """See :class:`VQVAEConfig` (``fields`` override single fields of ``cfg``)."""
        super().__init__(cfg, **fields)
        cfg = self.cfg
        self.pre_quant = nn.Linear(self.width, cfg.code_dim)
        self.quantizer = VectorQuantizer(cfg.codebook_size, cfg.code_dim, cfg.commitment_weight, cfg.vq_ema,
                                         cfg.ema_decay, dead_code_threshold=cfg.dead_code_threshold)
        self.decoder = PatchDecoder(cfg.code_dim, self.backbone.num_tokens, patch_dim(self.backbone), cfg.decoder_width,
                                    cfg.decoder_depth, cfg.decoder_heads, attn_impl=self.backbone.attn_impl)

    def ssl_step(self, batch: dict[str, Any], generator: torch.Generator, update_state: bool) -> SSLStepOutput:
        """Reconstruction MSE through the quantised bottleneck + quantiser loss."""
        x, channel_mask = batch["signal"], batch.get("channel_mask")
        cls, patches = self.encode(self.backbone, x, channel_mask=channel_mask)
        vq = self.quantizer(self.pre_quant(patches), update=update_state and self.training, generator=generator)
        pred = self.decoder(vq.quantized)
        recon = masked_patch_mse(pred, patchify(x, self.backbone), weight=patch_weights(channel_mask, x, self.backbone))
        logs = {"recon_loss": recon.detach(), "vq_loss": vq.loss.detach(), "vq_perplexity": vq.perplexity,
                "vq_usage": vq.usage}
        return SSLStepOutput(loss=recon + vq.loss, logs=logs, probe_features=cls)

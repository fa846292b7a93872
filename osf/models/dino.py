"""DINO (Caron et al., 2021) on PSG epochs with time-series augmentations; base of the OSF method.

Views: ``n_global_views`` crops of 50-100% of the epoch and ``n_local_views`` of 20-50%, each resized
back to the full length, amplitude-scaled, noised and shifted. Global views go to the momentum
teacher and the student, local views to the student only. Optional iBOT (masked patches of the
global views, same head) and KoLeo (on the student's global CLS) are computed only when their weight
is > 0, unless ``compute_zero_weight_losses`` (benchmark baseline: OSF's release computes them always).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from osf.augmentations.timeseries import TimeSeriesAugment
from osf.losses.dino import DINOLoss
from osf.losses.ibot import IBOTPatchLoss, random_token_mask
from osf.losses.koleo import koleo_loss
from osf.models.base import PretrainModule, SSLStepOutput
from osf.models.heads import DINOHead
from osf.models.momentum import make_momentum_copy
from osf.models.registry import register_method
from osf.utils.schedules import linear_warmup_then_constant

__all__ = ["DINO"]


@register_method("dino")
class DINO(PretrainModule):
    """Self-distillation with a momentum teacher, a DINO head and centering."""

    def __init__(
        self,
        dino_out_dim: int = 2048,
        dino_hidden_dim: int = 2048,
        dino_bottleneck_dim: int = 256,
        student_temp: float = 0.1,
        teacher_temp: float = 0.07,
        warmup_teacher_temp: float = 0.04,
        teacher_temp_warmup_frac: float = 0.1,
        center_momentum: float = 0.9,
        same_view_pairs: bool = False,
        n_global_views: int = 2,
        n_local_views: int = 2,
        ibot_lambda: float = 0.0,
        ibot_mask_ratio: float = 0.3,
        koleo_lambda: float = 0.0,
        compute_zero_weight_losses: bool = False,
        global_crop_scale: tuple[float, float] = (0.5, 1.0),
        local_crop_scale: tuple[float, float] = (0.2, 0.5),
        **base_kwargs: Any,
    ) -> None:
        self._use_ibot = ibot_lambda > 0 or compute_zero_weight_losses
        if self._use_ibot:
            kwargs = dict(base_kwargs.get("backbone_kwargs") or {})
            kwargs["use_mask_token"] = True
            base_kwargs["backbone_kwargs"] = kwargs
        super().__init__(**base_kwargs)
        if n_global_views < 1 or n_local_views < 0:
            raise ValueError(f"need >= 1 global and >= 0 local views, got {n_global_views}, {n_local_views}")
        self._use_koleo = koleo_lambda > 0 or compute_zero_weight_losses
        self.head = DINOHead(self.width, dino_out_dim, dino_hidden_dim, dino_bottleneck_dim)
        self.teacher_backbone = make_momentum_copy(self.backbone)
        self.teacher_head = make_momentum_copy(self.head)
        self.dino_loss = DINOLoss(dino_out_dim, center_momentum, same_view_pairs)
        self.ibot_loss = IBOTPatchLoss(dino_out_dim, center_momentum) if self._use_ibot else None

    # --- teacher ------------------------------------------------------------------------------------
    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """Backbone and head are both EMA copies of the student."""
        return [(self.teacher_backbone, self.backbone), (self.teacher_head, self.head)]

    def train(self, mode: bool = True) -> DINO:
        """The teacher always runs in eval mode (no stochastic depth / dropout)."""
        super().train(mode)
        self.teacher_backbone.eval()
        self.teacher_head.eval()
        return self

    def teacher_temp_at(self, step: int) -> float:
        """Teacher temperature: linear warm-up over the first ``teacher_temp_warmup_frac`` of the steps."""
        warmup = round(self.hparams.teacher_temp_warmup_frac * self.total_steps)
        return linear_warmup_then_constant(step, warmup, self.hparams.warmup_teacher_temp, self.hparams.teacher_temp)

    # --- views --------------------------------------------------------------------------------------
    def make_views(self, x: torch.Tensor, channel_mask: torch.Tensor | None, generator: torch.Generator) -> torch.Tensor:
        """All views stacked view-major ``[V*B, C, T]``; the first ``n_global_views`` are global."""
        h = self.hparams
        global_aug = TimeSeriesAugment(crop_min_scale=h.global_crop_scale[0], crop_max_scale=h.global_crop_scale[1])
        local_aug = TimeSeriesAugment(crop_min_scale=h.local_crop_scale[0], crop_max_scale=h.local_crop_scale[1])
        views = [global_aug(x.repeat(h.n_global_views, 1, 1), generator)]
        if h.n_local_views:
            views.append(local_aug(x.repeat(h.n_local_views, 1, 1), generator))
        views = torch.cat(views)
        if channel_mask is not None:
            # The additive noise would make absent (zero-filled) channels look recorded; keep them zero
            # as the backbone sees them at inference.
            n_views = h.n_global_views + h.n_local_views
            views = views.masked_fill(~channel_mask.repeat(n_views, 1).unsqueeze(-1), 0.0)
        return views

    # --- step ---------------------------------------------------------------------------------------
    def ssl_step(self, batch: dict[str, Any], generator: torch.Generator, update_state: bool) -> SSLStepOutput:
        """DINO (+ iBOT, KoLeo) loss over the views of ``batch['signal']``."""
        h = self.hparams
        x = batch["signal"]
        batch_size, n_global = x.shape[0], h.n_global_views
        n_views = n_global + h.n_local_views
        views = self.make_views(x, batch.get("channel_mask"), generator)
        global_views = views[: n_global * batch_size]
        step = self.global_step
        teacher_temp = self.teacher_temp_at(step)

        with torch.no_grad():
            t_cls, t_patches = self.encode(self.teacher_backbone, global_views)
            t_logits = self.teacher_head(t_cls)

        token_mask = None
        if self._use_ibot:
            n_tokens = self.backbone.num_tokens
            token_mask = random_token_mask(global_views.shape[0], n_tokens, h.ibot_mask_ratio, generator, x.device)
            s_cls, s_patches = self.encode(self.backbone, global_views, token_mask=token_mask)
            if h.n_local_views:
                s_cls_local, _ = self.encode(self.backbone, views[n_global * batch_size :])
                s_cls = torch.cat([s_cls, s_cls_local])
        else:
            s_cls, _ = self.encode(self.backbone, views)
        s_logits = self.head(s_cls)

        loss_dino = self.dino_loss(
            s_logits.view(n_views, batch_size, -1), t_logits.view(n_global, batch_size, -1),
            h.student_temp, teacher_temp, update_center=update_state,
        )
        loss = loss_dino
        logs: dict[str, Any] = {"dino_loss": loss_dino.detach(), "teacher_temp": teacher_temp}
        if self._use_ibot:
            sample_index = token_mask.nonzero(as_tuple=True)[0]
            s_patch_logits = self.head(s_patches[token_mask])
            with torch.no_grad():
                t_patch_logits = self.teacher_head(t_patches[token_mask])
            loss_ibot = self.ibot_loss(
                s_patch_logits, t_patch_logits, sample_index, global_views.shape[0], h.student_temp, teacher_temp,
                update_center=update_state,
            )
            loss = loss + h.ibot_lambda * loss_ibot
            logs["ibot_loss"] = loss_ibot.detach()
        if self._use_koleo:
            s_cls_global = s_cls[: n_global * batch_size].view(n_global, batch_size, -1)
            loss_koleo = sum(koleo_loss(s_cls_global[i]) for i in range(n_global)) / n_global
            loss = loss + h.koleo_lambda * loss_koleo
            logs["koleo_loss"] = loss_koleo.detach()
        return SSLStepOutput(loss=loss, logs=logs, probe_features=t_cls[:batch_size])

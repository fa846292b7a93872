"""DINO (Caron et al., 2021) on PSG epochs with time-series augmentations; base of the OSF method.

Views: ``n_global_views`` crops of 50-100% of the epoch and ``n_local_views`` of 20-50%, each resized
back to the full length, amplitude-scaled, noised and shifted. Global views go to the momentum
teacher and the student, local views to the student only. Optional iBOT (masked patches of the
global views, same head) and KoLeo (on what the student's head reads from the global views) are
computed only when their weight is > 0, unless ``compute_zero_weight_losses`` (benchmark baseline:
OSF's release computes them always).
The head reads the CLS token (the released recipe), the mean of the patch tokens (``head_pooling="mean"``)
or, in the small-scale recipe, each channel group's mean token as its own head input (``"groups"``: the
teacher of group g on one view is matched by the student's group g on the other; the features the probes
read are what is trained); ``freeze_last_layer_frac`` keeps the prototypes fixed at first.
Every training step also logs the teacher's entropy on its views (``train/teacher_entropy`` per
epoch, ``train/teacher_batch_entropy`` of the batch mean; log K = uniform, nothing distilled); the
learning diagnostics (:mod:`osf.models.diagnostics`) add both softmaxes on a fixed batch.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from einops import rearrange
from torch import nn

from osf.augmentations.timeseries import TimeSeriesAugment
from osf.losses.dino import CENTERINGS, DINOLoss
from osf.losses.ibot import IBOTPatchLoss, random_token_mask
from osf.losses.koleo import koleo_loss
from osf.models.base import MethodConfig, PretrainModule, SSLStepOutput
from osf.models.diagnostics import entropy, prototype_usage, softmax_metrics
from osf.models.heads import DINOHead
from osf.models.momentum import make_momentum_copy
from osf.models.registry import register_method
from osf.utils.config_fields import field_of, option
from osf.utils.schedules import linear_warmup_then_constant

__all__ = ["DINO", "DINOConfig"]

HEAD_POOLINGS: tuple[str, ...] = ("cls", "mean", "groups")


@dataclass
class DINOConfig(MethodConfig):
    """DINO with the published OSF optimisation (lr 5e-5, weight decay 0.2) and DINO's head and temperatures."""

    lr: float = field_of(MethodConfig, "lr", 5e-5)
    weight_decay: float = field_of(MethodConfig, "weight_decay", 0.2)
    dino_out_dim: int = option(2048, help="number of DINO prototypes")
    dino_hidden_dim: int = option(2048, help="DINO head MLP width")
    dino_bottleneck_dim: int = option(256, help="DINO head bottleneck before the prototypes")
    student_temp: float = option(0.1, help="student softmax temperature")
    teacher_temp: float = option(0.07, help="teacher temperature after warm-up")
    warmup_teacher_temp: float = option(0.04, help="teacher temperature at step 0")
    teacher_temp_warmup_frac: float = option(0.1, help="fraction of steps over which the teacher temperature warms up")
    center_momentum: float = option(0.9, help="EMA momentum of the DINO center")
    teacher_centering: str = option("ema", choices=CENTERINGS,
                                    help="teacher normalisation: ema (DINO's center) or sinkhorn (DINOv2's Sinkhorn-Knopp)")
    same_view_pairs: bool = option(False, help="count (view i, view i) student/teacher pairs in the DINO loss (OSF "
                                               "does; DINO does not)")
    n_global_views: int = option(2, help="views seen by teacher and student")
    n_local_views: int = option(2, help="extra views seen by the student only")
    ibot_lambda: float = option(0.0, help="weight of the iBOT masked-patch loss (computed only when > 0)")
    ibot_mask_ratio: float = option(0.3, help="fraction of patch tokens masked for iBOT")
    koleo_lambda: float = option(0.0, help="weight of the KoLeo regulariser (computed only when > 0)")
    # DINO freezes the prototypes for its first epoch; the OSF release does not.
    freeze_last_layer_frac: float = option(0.0, help="fraction of the steps at the start in which the prototypes "
                                                     "stay fixed")
    # What the head reads: the released recipe trains the CLS token.
    head_pooling: str = option("cls", help="the DINO head reads the cls token (OSF), the mean of the patch tokens, "
                                           "or each channel group's mean token (groups: small recipe)",
                               choices=HEAD_POOLINGS)
    compute_zero_weight_losses: bool = option(False, help="compute iBOT and KoLeo even at weight 0 (as OSF's "
                                                          "release; benchmark baseline)")
    global_crop_scale: tuple[float, float] = option((0.5, 1.0), help="DINO global views: crop length range, "
                                                                     "fraction of the epoch")

    @property
    def computes_ibot(self) -> bool:
        """Whether the iBOT loss is computed: weighted, or always for the benchmark baseline."""
        return self.ibot_lambda > 0 or self.compute_zero_weight_losses

    @property
    def computes_koleo(self) -> bool:
        """Whether the KoLeo regulariser is computed: weighted, or always for the benchmark baseline."""
        return self.koleo_lambda > 0 or self.compute_zero_weight_losses
    local_crop_scale: tuple[float, float] = option((0.2, 0.5), help="DINO local views: crop length range, "
                                                                    "fraction of the epoch")


@register_method("dino", rank=1)
class DINO(PretrainModule):
    """Self-distillation with a momentum teacher, a DINO head and centering."""

    config_type = DINOConfig
    cfg: DINOConfig

    def __init__(self, cfg: DINOConfig | None = None, **fields: Any) -> None:
        """See :class:`DINOConfig` (``fields`` override single fields of ``cfg``)."""
        super().__init__(cfg, **fields)
        cfg = self.cfg
        if cfg.n_global_views < 1 or cfg.n_local_views < 0:
            raise ValueError(f"need >= 1 global and >= 0 local views, got {cfg.n_global_views}, {cfg.n_local_views}")
        self._use_ibot, self._use_koleo = cfg.computes_ibot, cfg.computes_koleo
        if cfg.head_pooling not in HEAD_POOLINGS:
            raise ValueError(f"head_pooling must be one of {HEAD_POOLINGS}, got {cfg.head_pooling!r}")
        # What the head (and so the objective) reads; also what diagnostics and probes should pool.
        self.embedding_pooling = cfg.head_pooling
        # Head inputs per epoch: one per channel group when the head reads each group's mean token.
        self.head_rows = int(self.backbone.num_groups) if cfg.head_pooling == "groups" else 1
        self.head = DINOHead(self.width, cfg.dino_out_dim, cfg.dino_hidden_dim, cfg.dino_bottleneck_dim)
        self.teacher_backbone = make_momentum_copy(self.backbone)
        self.teacher_head = make_momentum_copy(self.head)
        self.dino_loss = DINOLoss(cfg.dino_out_dim, cfg.center_momentum, cfg.same_view_pairs, cfg.teacher_centering)
        self.ibot_loss = (IBOTPatchLoss(cfg.dino_out_dim, cfg.center_momentum, cfg.teacher_centering)
                          if self._use_ibot else None)

    def prepare_config(self, cfg: DINOConfig) -> DINOConfig:
        """iBOT needs the backbone's mask token."""
        if cfg.computes_ibot:
            return replace(cfg, backbone=replace(cfg.backbone, use_mask_token=True))
        return cfg

    # --- teacher ------------------------------------------------------------------------------------
    def last_layer_frozen_steps(self) -> int:
        """Steps at the start in which the prototypes (``head.last_layer``) get no update (DINO's
        ``freeze_last_layer``: while the backbone is near random, moving prototypes chase noise)."""
        return round(self.cfg.freeze_last_layer_frac * self.total_steps)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Drop the prototype gradients during the first :meth:`last_layer_frozen_steps` steps."""
        super().on_before_optimizer_step(optimizer)
        if self.global_step < self.last_layer_frozen_steps():
            for p in self.head.last_layer.parameters():
                p.grad = None

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
        return linear_warmup_then_constant(step, self.teacher_temp_warmup_steps(), self.cfg.warmup_teacher_temp,
                                           self.cfg.teacher_temp)

    def teacher_temp_warmup_steps(self) -> int:
        """Steps of the teacher-temperature warm-up."""
        return round(self.cfg.teacher_temp_warmup_frac * self.total_steps)

    # --- learning diagnostics -------------------------------------------------------------------------
    def diagnostic_warmup_steps(self) -> int:
        """Collapse is judged after both the LR and the teacher-temperature warm-ups."""
        return max(super().diagnostic_warmup_steps(), self.teacher_temp_warmup_steps())

    def head_diagnostics(self, embeddings: dict[str, torch.Tensor]) -> dict[str, float]:
        """Teacher (centred, at this step's temperature) and student softmax entropies; prototype usage."""
        # gather=False: diagnostics run on rank 0 alone, so no collective (Sinkhorn would all-reduce and hang).
        t_probs = self.dino_loss.centering.teacher_probs(self.teacher_head(embeddings[""]), self.teacher_temp_at(self.global_step),
                                                         gather=False)
        s_probs = torch.softmax(self.head(embeddings["student_"]).float() / self.cfg.student_temp, dim=-1)
        return {**softmax_metrics(s_probs, "student"), **softmax_metrics(t_probs, "teacher"),
                "proto_usage": prototype_usage(t_probs)}

    def pool(self, cls: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        """What the DINO head reads: the CLS token ``[N, D]``, the patch mean ``[N, D]``, or the group means
        ``[N * groups, D]`` (sample-major: the rows of one epoch are its groups in order).

        ``mean`` and ``groups`` are for short runs: at initialisation the CLS outputs of different epochs are
        nearly parallel (mean pairwise cosine ~0.9 for vit_nano on the synthetic cohort, ~0.3 for the patch
        mean), so a teacher reading CLS stays uniform after centering until the backbone has trained for long.
        """
        if self.embedding_pooling == "groups":
            return rearrange(patches, "b (g t) d -> (b g) t d", g=self.head_rows).mean(1)
        return patches.mean(1) if self.embedding_pooling == "mean" else cls

    def pooled_embedding(self, module: nn.Module, x: torch.Tensor, channel_mask: torch.Tensor | None = None) -> torch.Tensor:
        """What the head reads (:meth:`pool`): ``[B, width]``, or ``[B * groups, width]`` for ``groups``."""
        return self.pool(*module.forward_encoding(x, channel_mask=channel_mask))

    # --- views --------------------------------------------------------------------------------------
    def make_views(self, x: torch.Tensor, channel_mask: torch.Tensor | None, generator: torch.Generator) -> torch.Tensor:
        """All views stacked view-major ``[V*B, C, T]``; the first ``n_global_views`` are global."""
        h = self.cfg
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

    def teacher_views(
        self, x: torch.Tensor, global_views: torch.Tensor, channel_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """What the teacher encodes, ``[n_global_views*B, C, T]`` view-major: the student's global views."""
        return global_views

    # --- step ---------------------------------------------------------------------------------------
    def ssl_step(self, batch: dict[str, Any], generator: torch.Generator, update_state: bool) -> SSLStepOutput:
        """DINO (+ iBOT, KoLeo) loss over the views of ``batch['signal']``."""
        h = self.cfg
        x = batch["signal"]
        batch_size, n_global = x.shape[0], h.n_global_views
        n_views = n_global + h.n_local_views
        views = self.make_views(x, batch.get("channel_mask"), generator)
        global_views = views[: n_global * batch_size]
        step = self.global_step
        teacher_temp = self.teacher_temp_at(step)

        with torch.no_grad():
            t_cls, t_patches = self.encode(self.teacher_backbone,
                                           self.teacher_views(x, global_views, batch.get("channel_mask")))
            t_emb = self.pool(t_cls, t_patches)
            t_logits = self.teacher_head(t_emb)

        token_mask = None
        if self._use_ibot:
            n_tokens = self.backbone.num_tokens
            token_mask = random_token_mask(global_views.shape[0], n_tokens, h.ibot_mask_ratio, generator, x.device)
            s_cls, s_patches = self.encode(self.backbone, global_views, token_mask=token_mask)
            s_emb = self.pool(s_cls, s_patches)
            if h.n_local_views:
                s_emb = torch.cat([s_emb, self.pool(*self.encode(self.backbone, views[n_global * batch_size :]))])
        else:
            s_emb = self.pool(*self.encode(self.backbone, views))
        s_logits = self.head(s_emb)

        t_entropy: dict[str, torch.Tensor] = {}
        if update_state:  # the teacher's entropies on this step's views, before the center moves (tensors: no sync)
            t_probs = self.dino_loss.centering.teacher_probs(t_logits, teacher_temp)
            t_entropy = {"teacher_entropy": entropy(t_probs).mean(), "teacher_batch_entropy": entropy(t_probs.mean(0))}
        head_batch = batch_size * self.head_rows  # head inputs per view
        loss_dino = self.dino_loss(
            s_logits.view(n_views, head_batch, -1), t_logits.view(n_global, head_batch, -1),
            h.student_temp, teacher_temp, update_center=update_state,
        )
        loss = loss_dino
        logs: dict[str, Any] = {"dino_loss": loss_dino.detach(), "teacher_temp": teacher_temp, **t_entropy}
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
            s_emb_global = s_emb[: n_global * head_batch].view(n_global, head_batch, -1)
            loss_koleo = sum(koleo_loss(s_emb_global[i]) for i in range(n_global)) / n_global
            loss = loss + h.koleo_lambda * loss_koleo
            logs["koleo_loss"] = loss_koleo.detach()
        probe_features = t_emb[:head_batch].view(batch_size, self.head_rows, -1).mean(1)
        return SSLStepOutput(loss=loss, logs=logs, probe_features=probe_features)

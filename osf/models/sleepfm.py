"""SleepFM leave-one-out contrastive learning (``sleepfm``; Thapa et al., 2024) on our 12 channels.

The channels are split into the modalities of ``config.MODALITIES`` (brain activity: EEG, EOG, chin
and leg EMG; cardiac: ECG; respiratory: ABD, THX, NP, SN). Each modality of an epoch is encoded on
its own: by default the shared backbone sees the epoch with every channel outside that modality
zero-filled (``channel_mask``); with ``separate_backbones`` each modality has its own backbone. A
linear projection per modality maps the CLS to ``proj_dim``; the leave-one-out InfoNCE
(:mod:`osf.losses.leave_one_out`: symmetric as in SleepFM, learnable temperature, summed over modalities) pulls each
modality towards the mean of the other modalities of the same epoch, against the rest of the
(global) batch.

A modality is present in an epoch when at least one of its channels is recorded (``channel_mask``);
absent modalities are masked out of the loss, so epochs without ECG, say, still train the other two.

Downstream use: the exported backbone is used bidirectionally (standard ``forward_encoding``), CLS
pooled. With the shared backbone that is the default export; note that in pre-training it only ever
saw one modality at a time. With ``separate_backbones`` the export is the first modality's
(``brain``) backbone (``self.backbone``); the others are in ``self.modality_backbones``. The online
probe reads the mean CLS over the present modalities.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from osf import config
from osf.losses.leave_one_out import LeaveOneOutLoss
from osf.models.base import MethodConfig, PretrainModule, SSLStepOutput
from osf.models.registry import register_method
from osf.utils.config_fields import option

__all__ = ["SleepFM", "SleepFMConfig", "modality_channel_masks"]


@dataclass
class SleepFMConfig(MethodConfig):
    """SleepFM leave-one-out contrastive learning across modalities."""

    proj_dim: int = option(128, help="per-modality projection width")
    init_temperature: float = option(0.07, help="initial temperature of the leave-one-out InfoNCE")
    learn_temperature: bool = option(True, help="learn the InfoNCE temperature")
    separate_backbones: bool = option(False, help="one backbone per modality instead of one shared "
                                                  "backbone with the other channels masked")


def modality_channel_masks(modalities: dict[str, tuple[str, ...]] | None = None) -> torch.Tensor:
    """Bool ``[M, 12]``: row m marks the channels (``config.CHANNELS`` order) of modality m."""
    modalities = config.MODALITIES if modalities is None else modalities
    masks = torch.zeros(len(modalities), config.NUM_CHANNELS, dtype=torch.bool)
    for m, channels in enumerate(modalities.values()):
        unknown = [c for c in channels if c not in config.CHANNEL_INDEX]
        if unknown:
            raise ValueError(f"modality {list(modalities)[m]!r} names unknown channels {unknown}; known: {list(config.CHANNELS)}")
        masks[m, [config.CHANNEL_INDEX[c] for c in channels]] = True
    return masks


@register_method("sleepfm", rank=3)
class SleepFM(PretrainModule):
    """Leave-one-out contrastive learning across modality groups (see module doc)."""

    config_type = SleepFMConfig
    cfg: SleepFMConfig

    def __init__(self, cfg: SleepFMConfig | None = None, **fields: Any) -> None:
        """See :class:`SleepFMConfig` (``fields`` override single fields of ``cfg``)."""
        super().__init__(cfg, **fields)
        cfg = self.cfg
        self.modality_names = list(config.MODALITIES)
        if self.backbone.num_leads != config.NUM_CHANNELS:
            raise ValueError(f"sleepfm needs the {config.NUM_CHANNELS}-channel contract, backbone has {self.backbone.num_leads} leads")
        self.register_buffer("modality_masks", modality_channel_masks(), persistent=False)
        self.modality_backbones = nn.ModuleDict()
        if cfg.separate_backbones:
            for name in self.modality_names[1:]:
                self.modality_backbones[name] = self.build_backbone().freeze_unused_()  # as the base backbone (DDP)
        self.projectors = nn.ModuleDict({name: nn.Linear(self.width, cfg.proj_dim) for name in self.modality_names})
        self.loo_loss = LeaveOneOutLoss(cfg.init_temperature, learnable=cfg.learn_temperature)

    def modality_presence(self, channel_mask: torch.Tensor | None, batch_size: int) -> torch.Tensor:
        """Bool ``[M, B]``: modality m has at least one recorded channel in epoch b."""
        if channel_mask is None:
            return torch.ones(len(self.modality_names), batch_size, dtype=torch.bool, device=self.modality_masks.device)
        return (channel_mask.unsqueeze(0) & self.modality_masks.unsqueeze(1)).any(-1)

    def encode_modalities(self, x: torch.Tensor, channel_mask: torch.Tensor | None) -> torch.Tensor:
        """CLS of each modality's view, ``[M, B, width]``."""
        n_mod, batch = len(self.modality_names), x.shape[0]
        present = torch.ones_like(self.modality_masks[0]).expand(batch, -1) if channel_mask is None else channel_mask
        masks = present.unsqueeze(0) & self.modality_masks.unsqueeze(1)  # [M, B, C]
        if not self.cfg.separate_backbones:
            cls, _ = self.encode(self.backbone, x.repeat(n_mod, 1, 1), channel_mask=masks.reshape(n_mod * batch, -1))
            return cls.view(n_mod, batch, -1)
        out = []
        for m, name in enumerate(self.modality_names):
            module = self.backbone if m == 0 else self.modality_backbones[name]
            out.append(self.encode(module, x, channel_mask=masks[m])[0])
        return torch.stack(out)

    def ssl_step(self, batch: dict[str, Any], generator: torch.Generator, update_state: bool) -> SSLStepOutput:
        """Leave-one-out InfoNCE over the modality embeddings of the batch."""
        x, channel_mask = batch["signal"], batch.get("channel_mask")
        cls = self.encode_modalities(x, channel_mask)
        z = torch.stack([self.projectors[name](cls[m]) for m, name in enumerate(self.modality_names)])
        present = self.modality_presence(channel_mask, x.shape[0])
        # Validation shards may differ in length between ranks, so targets are gathered in training only.
        loss, per_modality = self.loo_loss(z, present, gather=update_state)
        logs: dict[str, Any] = {"temperature": self.loo_loss.temperature}
        for m, name in enumerate(self.modality_names):
            logs[f"loo_{name}"] = per_modality[m].detach()
        weights = present.t().unsqueeze(-1).to(cls.dtype)  # [B, M, 1]
        probe = (cls.transpose(0, 1) * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return SSLStepOutput(loss=loss, logs=logs, probe_features=probe)

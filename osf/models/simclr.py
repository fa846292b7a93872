"""SimCLR (``simclr``; Chen et al., 2020) on PSG epochs.

Two views of every epoch are drawn independently with the time-series augmentations of DINO's global
views (crop of ``crop_min_scale``-1 of the epoch resized back, amplitude scaling, Gaussian noise, time
shift; no channel dropping). Both go through the backbone (CLS) and a projection MLP
``width -> proj_hidden_dim -> BN -> ReLU -> proj_output_dim``; NT-Xent with ``temperature`` (0.1)
pulls the two views of an epoch together against every other view of the global batch (negatives
are gathered across ranks with their gradient; in validation each rank uses its own batch).

Downstream use: the backbone's CLS, bidirectional (standard ``forward_encoding``); the projection head
is dropped. The online probe reads the CLS of the first view.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from osf.augmentations.timeseries import TimeSeriesAugment
from osf.losses.ntxent import nt_xent_loss
from osf.models.base import MethodConfig, PretrainModule, SSLStepOutput
from osf.models.registry import register_method
from osf.utils.config_fields import field_of, option

__all__ = ["ProjectionMLP", "SimCLR", "SimCLRConfig"]


@dataclass
class SimCLRConfig(MethodConfig):
    """SimCLR: two augmented views, projection MLP, NT-Xent (MoCo v3's weight decay 0.1 for ViTs)."""

    weight_decay: float = field_of(MethodConfig, "weight_decay", 0.1)
    temperature: float = option(0.1, help="NT-Xent temperature")
    proj_hidden_dim: int = option(2048, help="projection MLP hidden width")
    proj_output_dim: int = option(128, help="projection output width")
    crop_min_scale: float = option(0.5, help="shortest crop, fraction of the epoch")
    noise_std: float = option(0.05, help="std of the additive Gaussian noise")


class ProjectionMLP(nn.Module):
    """SimCLR projection head: Linear, BatchNorm, ReLU, Linear."""

    def __init__(self, in_dim: int, hidden_dim: int = 2048, out_dim: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True),
                                 nn.Linear(hidden_dim, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Projections ``[B, out_dim]`` of features ``[B, in_dim]``."""
        return self.net(x)


@register_method("simclr", rank=2)
class SimCLR(PretrainModule):
    """Two augmented views, projection MLP, NT-Xent with cross-rank negatives."""

    config_type = SimCLRConfig
    cfg: SimCLRConfig

    def __init__(self, cfg: SimCLRConfig | None = None, **fields: Any) -> None:
        """See :class:`SimCLRConfig` (``fields`` override single fields of ``cfg``)."""
        super().__init__(cfg, **fields)
        cfg = self.cfg
        if cfg.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {cfg.temperature}")
        self.projector = ProjectionMLP(self.width, cfg.proj_hidden_dim, cfg.proj_output_dim)
        self.augment = TimeSeriesAugment(crop_min_scale=cfg.crop_min_scale, crop_max_scale=1.0, noise_std=cfg.noise_std)

    def ssl_step(self, batch: dict[str, Any], generator: torch.Generator, update_state: bool) -> SSLStepOutput:
        """NT-Xent between the projections of two augmented views of every epoch."""
        x, channel_mask = batch["signal"], batch.get("channel_mask")
        batch_size = x.shape[0]
        views = self.augment(x.repeat(2, 1, 1), generator)  # [2B, C, T], view-major
        mask = None if channel_mask is None else channel_mask.repeat(2, 1)
        cls, _ = self.encode(self.backbone, views, channel_mask=mask)
        z = self.projector(cls)
        # Validation shards may differ in length between ranks, so negatives are gathered in training only.
        loss = nt_xent_loss(z[:batch_size], z[batch_size:], self.cfg.temperature, gather=update_state)
        return SSLStepOutput(loss=loss, probe_features=cls[:batch_size])

"""OSF (``dino_ours``, alias ``osf``): DINO with channel-invariant views.

Every view (``n_global_views`` for teacher and student, ``n_local_views`` more for the student
only) zeroes each of the 12 channels independently with ``channel_drop_p`` (at least one recorded
channel kept), then zeroes one contiguous span of ``span_min_frac``-``span_max_frac`` of the epoch in
every channel. There is no crop: all views are full 30 s epochs, so a channel-dropped view must be
matched to a view that saw other channels at the same time, which is what makes the embedding
robust to missing channels.

Defaults follow OSF: same-view pairs count in the loss (``same_view_pairs=True``; DINO excludes them).
With ``teacher_views="full"`` the teacher instead encodes the epoch as recorded (every channel, no span
mask) and the student's channel-dropped views must predict it: a cross-channel distillation target
that asks each view for the full montage's embedding rather than for another partial view's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from osf.augmentations.channel_drop import random_channel_drop
from osf.augmentations.span_mask import random_span_mask
from osf.models.dino import DINO, DINOConfig
from osf.models.registry import register_method
from osf.utils.config_fields import field_of, option, value_problem

__all__ = ["OSFDINO", "TEACHER_VIEWS", "OSFDINOConfig"]

TEACHER_VIEWS: tuple[str, ...] = ("same", "full")


@dataclass
class OSFDINOConfig(DINOConfig):
    """The OSF recipe: DINO counting same-view pairs, on channel-drop + span-mask views."""

    same_view_pairs: bool = field_of(DINOConfig, "same_view_pairs", True)
    channel_drop_p: float = option(0.5, help="OSF views: probability of zeroing each channel")
    span_min_frac: float = option(0.3, help="OSF views: shortest zeroed span, fraction of the epoch")
    span_max_frac: float = option(0.6, help="OSF views: longest zeroed span, fraction of the epoch")
    teacher_views: str = option("same", choices=TEACHER_VIEWS,
                                help="what the teacher encodes: the student's global views (same) or the "
                                     "epoch as recorded, every channel and no span mask (full)")

    def __post_init__(self) -> None:
        problem = value_problem(type(self), "teacher_views", self.teacher_views)  # the field's choices, one place
        if problem:
            raise ValueError(f"teacher_views {problem}")


@register_method("dino_ours", aliases=("osf",), rank=0)
class OSFDINO(DINO):
    """The OSF recipe: DINO self-distillation with channel-drop + span-mask views."""

    config_type = OSFDINOConfig
    cfg: OSFDINOConfig

    def make_views(self, x: torch.Tensor, channel_mask: torch.Tensor | None, generator: torch.Generator) -> torch.Tensor:
        """``[V*B, C, T]`` view-major: channel drop then one span per channel, independently per view."""
        h = self.cfg
        n_views = h.n_global_views + h.n_local_views
        mask = None if channel_mask is None else channel_mask.repeat(n_views, 1)
        views, _ = random_channel_drop(x.repeat(n_views, 1, 1), h.channel_drop_p, mask, generator)
        views, _ = random_span_mask(views, h.span_min_frac, h.span_max_frac, generator)
        return views

    def teacher_views(
        self, x: torch.Tensor, global_views: torch.Tensor, channel_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """The student's global views, or with ``teacher_views="full"`` the recorded epoch once per global view."""
        if self.cfg.teacher_views == "same":
            return global_views
        full = x if channel_mask is None else x.masked_fill(~channel_mask.unsqueeze(-1), 0.0)
        return full.repeat(self.cfg.n_global_views, 1, 1)

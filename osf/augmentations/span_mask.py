"""Temporal span masking (OSF): in every channel, zero one contiguous span of the epoch."""

from __future__ import annotations

import math

import torch

__all__ = ["random_span_mask"]


def random_span_mask(
    x: torch.Tensor,
    min_frac: float = 0.3,
    max_frac: float = 0.6,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero one span per (sample, channel) of ``x`` ``[B, C, T]``; length uniform in [min_frac, max_frac]·T.

    Returns the masked signal and the bool ``[B, C, T]`` mask of zeroed samples (True = zeroed).
    """
    if x.ndim != 3:
        raise ValueError(f"expected [B, C, T], got {list(x.shape)}")
    if not 0.0 < min_frac <= max_frac <= 1.0:
        raise ValueError(f"need 0 < min_frac <= max_frac <= 1, got {min_frac}, {max_frac}")
    batch, channels, length = x.shape
    lo, hi = math.ceil(min_frac * length), math.floor(max_frac * length)
    if hi < lo:
        raise ValueError(f"no integer span length in [{min_frac}, {max_frac}] x {length}")
    span = torch.randint(lo, hi + 1, (batch, channels, 1), generator=generator, device=x.device)
    start = (torch.rand(batch, channels, 1, generator=generator, device=x.device) * (length - span + 1)).long()
    t = torch.arange(length, device=x.device)
    masked = (t >= start) & (t < start + span)
    return x.masked_fill(masked, 0.0), masked

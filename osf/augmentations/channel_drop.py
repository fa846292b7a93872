"""Channel dropout for channel-invariant views (OSF): zero each channel independently."""

from __future__ import annotations

import torch

__all__ = ["random_channel_drop"]


def random_channel_drop(
    x: torch.Tensor,
    p: float = 0.5,
    channel_mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero each channel of ``x`` ``[B, C, T]`` with probability ``p``, keeping at least one.

    ``channel_mask`` bool ``[B, C]`` (True = recorded) restricts both the drop and the "at least one"
    rule to recorded channels: an absent channel stays zero and is never the one kept. Returns the
    dropped signal and the bool ``[B, C]`` mask of channels that remain (recorded and not dropped).
    """
    if x.ndim != 3:
        raise ValueError(f"expected [B, C, T], got {list(x.shape)}")
    if not 0.0 <= p < 1.0:
        raise ValueError(f"drop probability must be in [0, 1), got {p}")
    batch, channels, _ = x.shape
    present = torch.ones(batch, channels, dtype=torch.bool, device=x.device) if channel_mask is None else channel_mask.bool()
    keep = (torch.rand(batch, channels, generator=generator, device=x.device) >= p) & present
    # Rows that lost every recorded channel get one recorded channel back, chosen uniformly.
    empty = ~keep.any(dim=1)
    if empty.any():
        scores = torch.rand(batch, channels, generator=generator, device=x.device).masked_fill(~present, -1.0)
        rescue = torch.zeros_like(keep).scatter_(1, scores.argmax(dim=1, keepdim=True), True) & present
        keep = torch.where(empty.unsqueeze(1), rescue, keep)
    return x * keep.unsqueeze(-1).to(x.dtype), keep

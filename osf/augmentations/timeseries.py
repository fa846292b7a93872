"""Generic time-series augmentations for DINO on PSG: crop-resize, amplitude scaling, noise, shift.

All functions act on a batch ``[B, C, T]``, draw one set of parameters per sample (shared by the
channels of a sample, so cross-channel timing is preserved) and take an explicit ``generator`` so a
resumed run draws the same views.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["TimeSeriesAugment", "gaussian_noise", "random_amplitude_scale", "random_crop_resize", "random_time_shift"]


def _uniform(shape: tuple[int, ...], low: float, high: float, generator, device) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=generator, device=device)


def random_crop_resize(x: torch.Tensor, min_scale: float = 0.5, max_scale: float = 1.0,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """Crop a random window of ``scale·T`` samples per sample and resample it back to ``T`` (linear)."""
    if not 0.0 < min_scale <= max_scale <= 1.0:
        raise ValueError(f"need 0 < min_scale <= max_scale <= 1, got {min_scale}, {max_scale}")
    batch, _, length = x.shape
    scale = _uniform((batch,), min_scale, max_scale, generator, x.device)
    start = torch.rand(batch, generator=generator, device=x.device) * (1.0 - scale)
    # Sampling grid in [-1, 1] over the crop; grid_sample does the per-sample resize in one call.
    pos = torch.linspace(0.0, 1.0, length, device=x.device)
    grid_x = (start[:, None] + scale[:, None] * pos[None, :]) * 2.0 - 1.0
    grid = torch.stack([grid_x, torch.zeros_like(grid_x)], dim=-1).unsqueeze(1).to(x.dtype)  # [B, 1, T, 2]
    out = F.grid_sample(x.unsqueeze(2), grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out.squeeze(2)


def random_amplitude_scale(x: torch.Tensor, low: float = 0.8, high: float = 1.2,
                           generator: torch.Generator | None = None) -> torch.Tensor:
    """Multiply each sample by a factor uniform in ``[low, high]``."""
    return x * _uniform((x.shape[0], 1, 1), low, high, generator, x.device).to(x.dtype)


def gaussian_noise(x: torch.Tensor, std: float = 0.05, generator: torch.Generator | None = None) -> torch.Tensor:
    """Add white Gaussian noise of standard deviation ``std`` (signals are z-scored, so in SD units)."""
    return x + std * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def random_time_shift(x: torch.Tensor, max_frac: float = 0.1, generator: torch.Generator | None = None) -> torch.Tensor:
    """Circularly shift each sample by up to ``max_frac·T`` samples either way."""
    batch, _, length = x.shape
    max_shift = int(max_frac * length)
    if max_shift == 0:
        return x
    shift = torch.randint(-max_shift, max_shift + 1, (batch, 1, 1), generator=generator, device=x.device)
    index = (torch.arange(length, device=x.device).view(1, 1, -1) - shift) % length
    return torch.gather(x, 2, index.expand_as(x))


@dataclass
class TimeSeriesAugment:
    """DINO view maker: crop-resize, then amplitude scale, noise and shift."""

    crop_min_scale: float = 0.5
    crop_max_scale: float = 1.0
    scale_low: float = 0.8
    scale_high: float = 1.2
    noise_std: float = 0.05
    max_shift_frac: float = 0.1

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One augmented view of ``x`` ``[B, C, T]``."""
        x = random_crop_resize(x, self.crop_min_scale, self.crop_max_scale, generator)
        x = random_amplitude_scale(x, self.scale_low, self.scale_high, generator)
        x = gaussian_noise(x, self.noise_std, generator)
        return random_time_shift(x, self.max_shift_frac, generator)

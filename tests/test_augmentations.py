"""View makers: OSF channel drop and span masks, DINO time-series augmentations."""

from __future__ import annotations

import math

import pytest
import torch

from osf.augmentations.channel_drop import random_channel_drop
from osf.augmentations.span_mask import random_span_mask
from osf.augmentations.timeseries import (
    TimeSeriesAugment,
    gaussian_noise,
    random_amplitude_scale,
    random_crop_resize,
    random_time_shift,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_channel_drop_rate_near_half_and_never_empty():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4000, 12, 8) + 3.0  # no exact zeros in the input
    out, keep = random_channel_drop(x, 0.5, generator=g)
    zeroed = (out == 0).all(dim=-1)
    assert torch.equal(zeroed, ~keep)
    assert abs(zeroed.float().mean().item() - 0.5) < 0.02  # 48000 Bernoulli draws: SD ~0.002
    assert keep.any(dim=1).all()
    torch.testing.assert_close(out[keep.unsqueeze(-1).expand_as(x)], x[keep.unsqueeze(-1).expand_as(x)])
    _, keep_high = random_channel_drop(x, 0.95, generator=g)  # almost everything dropped: rescue kicks in
    assert keep_high.any(dim=1).all() and (keep_high.sum(1) == 1).float().mean() > 0.4


def test_channel_drop_respects_absent_channels():
    g = torch.Generator().manual_seed(1)
    present = torch.zeros(500, 12, dtype=torch.bool)
    present[:, [0, 4]] = True  # only ECG and ABD recorded
    _, keep = random_channel_drop(torch.randn(500, 12, 8), 0.9, channel_mask=present, generator=g)
    assert not (keep & ~present).any()  # an absent channel is never "kept"
    assert keep.any(dim=1).all()


def test_span_mask_one_contiguous_span_per_channel_within_bounds():
    g = torch.Generator().manual_seed(2)
    length = 1920
    x = torch.randn(64, 12, length) + 5.0
    out, masked = random_span_mask(x, 0.3, 0.6, generator=g)
    assert torch.equal(out == 0, masked)
    lengths = masked.sum(-1)
    assert lengths.min() >= math.ceil(0.3 * length) and lengths.max() <= math.floor(0.6 * length)
    edges = masked.int().diff(dim=-1).abs().sum(-1) + masked[..., 0].int() + masked[..., -1].int()
    assert (edges == 2).all()  # exactly one run of True per channel
    assert lengths.float().std() > 50  # lengths vary across channels
    starts = masked.int().argmax(-1)
    assert (starts[:, 0] != starts[:, 1]).any()  # independent per channel


def test_views_are_reproducible_from_the_generator():
    x = torch.randn(3, 12, 640)
    a = random_span_mask(random_channel_drop(x, generator=torch.Generator().manual_seed(5))[0],
                         generator=torch.Generator().manual_seed(6))[0]
    b = random_span_mask(random_channel_drop(x, generator=torch.Generator().manual_seed(5))[0],
                         generator=torch.Generator().manual_seed(6))[0]
    torch.testing.assert_close(a, b)


def test_crop_resize_identity_at_full_scale_and_stretches_otherwise():
    x = torch.randn(2, 3, 256)
    torch.testing.assert_close(random_crop_resize(x, 1.0, 1.0), x, atol=1e-4, rtol=1e-4)
    ramp = torch.linspace(0, 1, 256).expand(2, 3, 256).contiguous()
    out = random_crop_resize(ramp, 0.5, 0.5, torch.Generator().manual_seed(0))
    span = out[..., -1] - out[..., 0]
    torch.testing.assert_close(span, torch.full_like(span, 0.5), atol=1e-3, rtol=0)  # half the ramp, stretched


def test_scale_noise_shift():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 2, 100)
    ratio = random_amplitude_scale(x, 0.8, 1.2, g) / x
    per_sample = ratio[:, 0, 0]
    assert per_sample.min() >= 0.8 and per_sample.max() <= 1.2
    torch.testing.assert_close(ratio, per_sample[:, None, None].expand_as(ratio))  # one factor per sample
    noise = gaussian_noise(torch.zeros(20, 12, 1000), 0.05, g)
    assert abs(noise.std().item() - 0.05) < 0.002
    shifted = random_time_shift(x, 0.1, g)
    k = next(s for s in range(-10, 11) if torch.equal(shifted[0], torch.roll(x[0], s, dims=-1)))
    assert abs(k) <= 10
    out = TimeSeriesAugment()(x, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and not torch.allclose(out, x)
    with pytest.raises(ValueError):
        random_crop_resize(x, 0.0, 1.0)

"""Polyphase resampling of one channel to the model rate (64 Hz) from any source rate.

``scipy.signal.resample_poly`` upsamples by ``up``, applies a Kaiser-windowed FIR low-pass at
``min(1/up, 1/down) * Nyquist`` (the anti-alias filter) and decimates by ``down``. The ratio
``64 / rate`` is taken as an exact fraction for the usual PSG rates (1, 8, 10, 32, 50, 100, 125,
200, 250, 256, 500, 512 Hz -> e.g. 500 Hz: up 16, down 125) and as the closest fraction with a
denominator <= ``MAX_FACTOR`` (10,000) otherwise, so odd header rates (e.g. 199.98 Hz) still work;
the polyphase cost per output sample stays ~20 * max(up, down) / up multiply-adds.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
from scipy.signal import resample_poly

from osf import config

MAX_FACTOR = 10_000
# Relative rate error above which the approximated ratio would drift by more than ~0.1 s over a night.
MAX_RELATIVE_RATE_ERROR = 4e-6


def resampling_ratio(rate_in: float, rate_out: int = config.SAMPLE_RATE) -> tuple[int, int]:
    """Return ``(up, down)`` with ``rate_in * up / down == rate_out`` (exact or within 4 ppm)."""
    if not np.isfinite(rate_in) or rate_in <= 0:
        raise ValueError(f"sampling rate must be a positive number, got {rate_in!r}")
    exact = Fraction(rate_out) / Fraction(rate_in)  # exact for float rates (binary fractions)
    ratio = exact.limit_denominator(MAX_FACTOR)
    error = abs(float(ratio) - float(exact)) / float(exact)
    if error > MAX_RELATIVE_RATE_ERROR:
        raise ValueError(
            f"cannot resample {rate_in} Hz to {rate_out} Hz with a rational ratio of factors <= "
            f"{MAX_FACTOR} (relative error {error:.1e})"
        )
    return ratio.numerator, ratio.denominator


def resample_to_model_rate(x: np.ndarray, rate_in: float, rate_out: int = config.SAMPLE_RATE) -> np.ndarray:
    """Anti-alias and resample a 1-D signal from ``rate_in`` to ``rate_out`` Hz (float64 out).

    The output has ``floor(len(x) * rate_out / rate_in)`` samples, sample ``k`` at time ``k / rate_out``
    s, so epochs cut from it stay aligned with the EDF start.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"expected a 1-D signal, got shape {x.shape}")
    up, down = resampling_ratio(rate_in, rate_out)
    n_out = (len(x) * up) // down
    if up == down:
        return x.copy()
    if len(x) == 0:
        return np.zeros(0)
    # padtype="line": the edges are extended along the first-to-last-sample trend instead of with
    # zeros, so the filter does not ring at the recording's start and end.
    y = resample_poly(x, up, down, padtype="line")
    return y[:n_out]


def source_to_output_mask(bad: np.ndarray, rate_in: float, n_out: int, rate_out: int = config.SAMPLE_RATE) -> np.ndarray:
    """Map a per-source-sample boolean mask to the ``rate_out`` grid (an output sample is bad when any
    source sample within its period is bad)."""
    bad = np.asarray(bad, dtype=bool)
    out = np.zeros(n_out, dtype=bool)
    idx = np.flatnonzero(bad)
    if idx.size == 0 or n_out == 0:
        return out
    # The source sample at t = i / rate_in covers output samples floor(t * rate_out) .. ceil((t + 1/rate_in) * rate_out) - 1.
    first = np.floor(idx * (rate_out / rate_in)).astype(np.int64)
    last = np.ceil((idx + 1) * (rate_out / rate_in)).astype(np.int64) - 1
    last = np.maximum(last, first)
    diff = np.zeros(n_out + 1, dtype=np.int64)
    np.add.at(diff, np.clip(first, 0, n_out), 1)
    np.add.at(diff, np.clip(last + 1, 0, n_out), -1)
    return np.cumsum(diff[:-1]) > 0

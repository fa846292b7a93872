"""Robust per-recording, per-channel normalisation.

Each channel of a recording is centred on its median and divided by its inter-quartile range
(IQR = q75 - q25), both computed over the whole night (finite samples only), then clipped to
[-6, 6]: ``z = clip((x - median) / IQR, -6, 6)``. For Gaussian noise the IQR is 1.35 sigma, so the clip
sits at ~8 sigma and only real artefacts saturate. Channels whose IQR is zero but which are not
constant (sparse signals such as snore bursts on a silent baseline) fall back to the standard
deviation; constant channels are reported as flat and are not scaled.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

CLIP_VALUE = 6.0
# Below this the spread is numerically zero relative to the signal's own magnitude (float64 noise).
_RELATIVE_EPS = 1e-9


@dataclass(frozen=True)
class RobustScale:
    """Centre and scale of one channel; ``method`` is "iqr", "std" or "flat" (constant channel)."""

    center: float
    scale: float
    method: str

    def as_dict(self) -> dict[str, float | str]:
        """JSON-serialisable form for the QC report."""
        return asdict(self)


def robust_scale(x: np.ndarray, valid: np.ndarray | None = None) -> RobustScale:
    """Median and IQR of ``x`` over the ``valid`` samples (std fallback, "flat" when constant)."""
    values = np.asarray(x)
    if valid is not None and not valid.all():
        values = values[valid]
    finite = np.isfinite(values)
    if not finite.all():
        values = values[finite]
    if values.size == 0:
        return RobustScale(0.0, 1.0, "flat")
    q25, median, q75 = np.percentile(values, (25, 50, 75))
    magnitude = max(float(np.max(np.abs(values))), 1.0e-30)
    iqr = float(q75 - q25)
    if iqr > _RELATIVE_EPS * magnitude:
        return RobustScale(float(median), iqr, "iqr")
    std = float(np.std(values))
    if std > _RELATIVE_EPS * magnitude:
        return RobustScale(float(median), std, "std")
    return RobustScale(float(median), 1.0, "flat")


def apply_scale(x: np.ndarray, scale: RobustScale) -> np.ndarray:
    """Return ``(x - center) / scale`` as float32 (not clipped: callers measure clipping first)."""
    # Centre in float64: a large DC offset next to a small spread would lose digits in float32.
    return ((np.asarray(x, dtype=np.float64) - scale.center) / scale.scale).astype(np.float32)

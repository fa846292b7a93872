"""Per-epoch, per-channel quality flags, computed on the normalised signal before clipping.

Definitions (one bit per channel, bit i = ``config.CHANNELS[i]``, packed into uint16 per epoch):
- ``flat``: the channel's median absolute deviation within the epoch is below ``FLAT_MAD`` (1 % of
  the recording's IQR), i.e. no signal, whatever its level. The MAD (not the standard deviation)
  so that the resampler's ringing at the edges of a flat stretch does not hide it.
- ``nan``: at least one source sample in the epoch was NaN or +-inf (those samples are zeroed).
- ``disconnected``: the electrode looks off or saturated: at least ``DISCONNECTED_CLIP_FRAC`` of the
  epoch lies beyond the clip value, or the epoch is flat and pinned away from the median
  (``|level| >= DISCONNECTED_LEVEL``, an amplifier rail).
``clipped_frac`` is the fraction of the epoch's samples (all 12 channels) beyond +-6, as the store
documents it (``osf.datasets.recording.QUALITY_FIELDS``); absent channels are zero and never clip.
A channel counts as present in an epoch (``channel_mask``) when it is mapped, not flat, not
disconnected and not mostly (>= 50 %) non-finite in that epoch. Epochs found dead on the raw signal
(``raw_checks``: stuck at one value, or on the rails) are added to ``flat`` and ``disconnected``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from osf.datasets.preprocess.normalise import CLIP_VALUE
from osf.datasets.recording import pack_bits

FLAT_MAD = 0.01
DISCONNECTED_CLIP_FRAC = 0.5
DISCONNECTED_LEVEL = 3.0
MOSTLY_NONFINITE = 0.5


@dataclass
class EpochQuality:
    """Quality flags of every epoch and channel of a recording (``[n, C]`` each, ``clipped_frac_epoch`` ``[n]``)."""

    channel_mask: np.ndarray  # bool: the channel carries usable signal in the epoch
    flat: np.ndarray  # bool
    nan: np.ndarray  # bool
    disconnected: np.ndarray  # bool
    clipped_frac: np.ndarray  # float32: fraction of the channel's samples beyond the clip value
    clipped_frac_epoch: np.ndarray  # float32 [n]: over all channels, absent ones counting as unclipped

    @property
    def columns(self) -> dict[str, np.ndarray]:
        """The store's per-epoch quality columns (``osf.datasets.recording.QUALITY_FIELDS``)."""
        return {
            "flat_mask": pack_bits(self.flat),
            "clipped_frac": self.clipped_frac_epoch,
            "nan_mask": pack_bits(self.nan),
            "disconnected_mask": pack_bits(self.disconnected),
        }


def epoch_quality(
    epochs: np.ndarray,
    nonfinite: np.ndarray,
    present: np.ndarray,
    stuck: np.ndarray | None = None,
    railed: np.ndarray | None = None,
) -> EpochQuality:
    """Quality flags of normalised, unclipped ``epochs`` ``[n, C, S]``.

    ``nonfinite`` bool ``[n, C, S]`` marks samples that were NaN/inf at the source; ``present`` bool
    ``[C]`` marks channels mapped for the recording; ``stuck`` / ``railed`` bool ``[n, C]`` (optional)
    are the raw-signal dead epochs.
    """
    n, c, _ = epochs.shape
    present_nc = np.broadcast_to(np.asarray(present, dtype=bool)[None, :], (n, c))
    level = np.median(epochs, axis=2, keepdims=True)
    mad = np.median(np.abs(epochs - level), axis=2)
    level = level[..., 0]
    clipped_frac_ch = (np.abs(epochs) > CLIP_VALUE).mean(axis=2, dtype=np.float32)
    nonfinite_frac = nonfinite.mean(axis=2, dtype=np.float32)

    flat = present_nc & (mad < FLAT_MAD)
    if stuck is not None:
        flat |= present_nc & stuck
    nan = present_nc & (nonfinite_frac > 0)
    disconnected = present_nc & (
        (clipped_frac_ch >= DISCONNECTED_CLIP_FRAC) | (flat & (np.abs(level) >= DISCONNECTED_LEVEL))
    )
    if railed is not None:
        disconnected |= present_nc & railed
    channel_mask = present_nc & ~flat & ~disconnected & (nonfinite_frac < MOSTLY_NONFINITE)
    clipped_frac = np.where(present_nc, clipped_frac_ch, 0.0).mean(axis=1).astype(np.float32)
    return EpochQuality(channel_mask, flat, nan, disconnected, clipped_frac_ch, clipped_frac)

"""Baseline features that every pre-trained result stands beside.

- ``power48``: per channel, the log-variance over the 30 s epoch and the std / min / max of the
  log-variances of its six 5 s windows (12 channels x 4 = 48 numbers). On the synthetic cohort,
  where every label lives in per-channel power, it beats every backbone on staging (kappa 0.879)
  and arousal (AUROC 0.992): a backbone that does not beat it has learned nothing a power meter
  does not know.
- ``yasa_style``: the handcrafted set of ``osf.downstream.ceilings`` (log band powers, Hjorth
  mobility / complexity, kurtosis) on the channels YASA's stager reads (EEG, EOG, chin EMG); only
  where EEG is present.

Both are fitted by the same logistic-regression grid as the backbones' features
(``osf.evaluation.probes``), so a baseline row differs from a backbone row in the features only.
"""

from __future__ import annotations

import numpy as np

from osf import config
from osf.downstream.ceilings import POWER48_WINDOWS as POWER_WINDOWS  # 5 s windows of a 30 s epoch

POWER_STATS: tuple[str, ...] = ("logvar", "win_std", "win_min", "win_max")
YASA_CHANNELS: tuple[str, ...] = ("EEG_C3_A2", "EEG_C4_A1", "EOG_E1_A2", "EOG_E2_A1", "EMG_Chin")


def power48_names() -> list[str]:
    """Column names of :func:`power48`, ``<channel>:<stat>``, channel-major."""
    return [f"{ch}:{s}" for ch in config.CHANNELS for s in POWER_STATS]


def power48(x: np.ndarray, channel_mask: np.ndarray) -> np.ndarray:
    """``[B, 48]`` power summary of epochs ``x [B, 12, 1920]``; an absent channel's four numbers are 0.

    The computation is the ceilings' (``osf.downstream.ceilings.power48_features``, the ``power48`` ceiling
    kind): one definition; this adds the check of the input's shape.
    """
    from osf.downstream.ceilings import power48_features

    x = np.asarray(x, dtype=np.float64)
    mask = np.asarray(channel_mask, dtype=bool)
    if x.ndim != 3 or x.shape[1] != config.NUM_CHANNELS or x.shape[2] % POWER_WINDOWS or mask.shape != x.shape[:2]:
        raise ValueError(f"power48: expected x [B, {config.NUM_CHANNELS}, T] (T a multiple of {POWER_WINDOWS}) and "
                         f"mask [B, {config.NUM_CHANNELS}], got {x.shape} and {mask.shape}")
    return power48_features(x, mask)


def has_eeg(keep: np.ndarray) -> bool:
    """Whether a channel-presence vector ``[12]`` keeps an EEG channel (the YASA-style baseline needs one)."""
    return any(bool(keep[config.CHANNEL_INDEX[c]]) for c in config.CHANNELS if c.startswith("EEG_"))


def yasa_style_columns() -> np.ndarray:
    """Columns of ``osf.downstream.ceilings.handcrafted_features`` computed from YASA's channels."""
    from osf.downstream.ceilings import feature_names

    return np.asarray([i for i, name in enumerate(feature_names()) if name.split(":")[0] in YASA_CHANNELS])


def yasa_style(x: np.ndarray, channel_mask: np.ndarray) -> np.ndarray:
    """Handcrafted EEG / EOG / chin-EMG features of epochs ``x [B, 12, 1920]`` (absent channels 0)."""
    from osf.downstream.ceilings import handcrafted_features

    return handcrafted_features(x, channel_mask)[:, yasa_style_columns()]


BASELINE_FEATURES = {"power48": power48, "yasa_style": yasa_style}

"""Does a predicted night look like a night? Plausibility flags for the QC report, and lights-off / lights-on.

A staging model always answers; these checks say when the answer should not be trusted as it is:

- ``day_time_recording``: the recording is much longer than a night (> ``NIGHT_MAX_H`` h), so it holds
  day-time wake that sleep statistics would count as time in bed (Sleep-EDF cassettes run ~22 h);
- ``trailing_wake``: the predicted (or scored) hypnogram ends in >= ``TRAILING_WAKE_H`` h of wake;
- ``sleep_efficiency_implausible``: sleep efficiency >= ``SE_MAX_PCT`` % over more than ``NIGHT_MAX_H`` h
  (nobody sleeps a whole day: the model calls wake sleep);
- ``one_stage_dominates``: one stage holds more than ``ONE_STAGE_MAX_FRAC`` of the epochs;
- ``most_channels_missing``: the night has fewer than half the channels the classifier was trained on;
- ``low_confidence``: most epochs have a stage confidence under the threshold.

Trimming to lights-off / lights-on (``--lights``) is what sleep tools do for such recordings: given as
clock times ``HH:MM-HH:MM`` or detected from the signal (``auto``: the longest stretch of low
high-frequency activity over the EEG/EOG/EMG channels, smoothed over ``AUTO_SMOOTH_MIN`` minutes).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import median_filter

from osf import config

NIGHT_MAX_H = 12.0
TRAILING_WAKE_H = 2.0
SE_MAX_PCT = 97.0
ONE_STAGE_MAX_FRAC = 0.95
LOW_CONFIDENCE_FRAC = 0.5
AUTO_SMOOTH_MIN = 30.0
AUTO_MARGIN_MIN = 15.0
# What a scorer reads for sleep vs wake: the EEG/EOG group and the chin EMG.
BRAIN_CHANNELS: tuple[str, ...] = (*config.CHANNEL_GROUPS["eog_eeg"], "EMG_Chin")
BRAIN_INDEX: list[int] = [config.CHANNEL_INDEX[c] for c in BRAIN_CHANNELS]


@dataclass(frozen=True)
class LightsWindow:
    """Epochs [first, stop) between lights off and lights on, and how they were found."""

    first: int
    stop: int
    method: str  # "given" or "auto"

    def as_dict(self, epoch_sec: float = config.EPOCH_SEC) -> dict:
        """JSON form: epochs and seconds from the EDF start."""
        return {"method": self.method, "first_epoch": self.first, "stop_epoch": self.stop,
                "lights_off_s": self.first * epoch_sec, "lights_on_s": self.stop * epoch_sec}


def _trailing_run_h(stages: np.ndarray, value: int, epoch_sec: float) -> float:
    """Hours of the run of ``value`` that ends the hypnogram (0 when it ends otherwise)."""
    if len(stages) == 0 or stages[-1] != value:
        return 0.0
    other = np.flatnonzero(stages != value)
    n = len(stages) - (other[-1] + 1 if other.size else 0)
    return n * epoch_sec / 3600.0


def plausibility_flags(
    stages: np.ndarray,
    stage_names: Sequence[str],
    confidence: np.ndarray,
    present: Sequence[str],
    classifier_channels: Sequence[str],
    scored: np.ndarray | None = None,
    low_confidence: float = 0.5,
    epoch_sec: float = config.EPOCH_SEC,
) -> dict[str, str]:
    """Flag name -> one-line reason, for every check the night fails (empty when it looks like a night)."""
    stages = np.asarray(stages)
    hours = len(stages) * epoch_sec / 3600.0
    wake = list(stage_names).index("W") if "W" in stage_names else -1
    flags: dict[str, str] = {}
    if hours > NIGHT_MAX_H:
        flags["day_time_recording"] = (
            f"the recording lasts {hours:.1f} h, much longer than a night (> {NIGHT_MAX_H:g} h): it holds day-time "
            "wake that counts as time in bed; trim it with --lights auto or --lights HH:MM-HH:MM"
        )
    for what, hyp in (("predicted", stages), ("scored", scored)):
        tail = _trailing_run_h(np.asarray(hyp), wake, epoch_sec) if hyp is not None and len(hyp) else 0.0
        if tail >= TRAILING_WAKE_H:
            flags[f"trailing_wake_{what}"] = f"the {what} hypnogram ends in {tail:.1f} h of wake (lights on long before the end)"
    if len(stages):
        se = 100.0 * float(np.mean(stages != wake))
        if se >= SE_MAX_PCT and hours > NIGHT_MAX_H:
            flags["sleep_efficiency_implausible"] = (
                f"sleep efficiency {se:.0f}% over {hours:.1f} h: nobody sleeps that long without waking; "
                "the classifier calls wake sleep on this recording"
            )
        counts = np.bincount(stages, minlength=len(stage_names)) / len(stages)
        top = int(counts.argmax())
        if counts[top] > ONE_STAGE_MAX_FRAC:
            flags["one_stage_dominates"] = f"{100 * counts[top]:.0f}% of the epochs are {stage_names[top]}"
        low = float(np.mean(np.asarray(confidence) < low_confidence))
        if low > LOW_CONFIDENCE_FRAC:
            flags["low_confidence"] = f"{100 * low:.0f}% of epochs have stage confidence below {low_confidence}"
    used = [c for c in classifier_channels if c in present]
    if classifier_channels and len(used) < len(classifier_channels) / 2:
        flags["most_channels_missing"] = (
            f"only {len(used)} of the classifier's {len(classifier_channels)} channels are present ({', '.join(used) or 'none'})"
        )
    return flags


def parse_lights(spec: str) -> str | tuple[dt.time, dt.time]:
    """``"auto"`` or ``"HH:MM-HH:MM"`` (lights off - lights on, clock times); a clear error otherwise."""
    if spec.strip().lower() == "auto":
        return "auto"
    try:
        off, on = (dt.time.fromisoformat(part.strip()) for part in spec.split("-"))
    except ValueError:
        raise ValueError(f"--lights must be 'auto' or 'HH:MM-HH:MM' (lights off - lights on), got {spec!r}") from None
    return off, on


def given_window(off: dt.time, on: dt.time, start: dt.datetime | None, n_epochs: int, epoch_sec: float = config.EPOCH_SEC) -> LightsWindow:
    """Epochs between two clock times (lights on may be on the next day) of a recording starting at ``start``."""
    if start is None:
        raise ValueError("--lights HH:MM-HH:MM needs the EDF's start time, which its header does not give; use --lights auto")
    off_dt = dt.datetime.combine(start.date(), off)
    if off_dt < start - dt.timedelta(hours=1):
        off_dt += dt.timedelta(days=1)
    on_dt = dt.datetime.combine(off_dt.date(), on)
    if on_dt <= off_dt:
        on_dt += dt.timedelta(days=1)
    first = max(int(np.floor((off_dt - start).total_seconds() / epoch_sec)), 0)
    stop = min(int(np.ceil((on_dt - start).total_seconds() / epoch_sec)), n_epochs)
    if stop - first < 1:
        raise ValueError(f"--lights {off:%H:%M}-{on:%H:%M} holds no epoch of a recording from {start:%H:%M} lasting "
                         f"{n_epochs * epoch_sec / 3600:.1f} h")
    return LightsWindow(first, stop, "given")


def epoch_activity(signals: np.ndarray, channel_mask: np.ndarray) -> np.ndarray:
    """Per-epoch log high-frequency activity (std of the first difference) averaged over present EEG/EOG/EMG."""
    idx = BRAIN_INDEX
    out = np.zeros(len(signals))
    for start in range(0, len(signals), 512):  # memory-mapped nights: a block at a time
        block = np.asarray(signals[start : start + 512][:, idx], dtype=np.float32)
        mask = np.asarray(channel_mask[start : start + 512][:, idx], dtype=bool)
        act = np.log(np.std(np.diff(block, axis=-1), axis=-1) + 1e-3)
        out[start : start + len(block)] = np.where(mask, act, 0.0).sum(1) / np.maximum(mask.sum(1), 1)
    return out


def detect_lights(
    signals: np.ndarray, channel_mask: np.ndarray, epoch_sec: float = config.EPOCH_SEC
) -> LightsWindow | None:
    """Lights off / on from the signal: the longest low-activity stretch (smoothed), widened by a margin.

    None when the night has no EEG/EOG/EMG channel or no clear quiet stretch (then nothing is trimmed).
    """
    present = np.asarray(channel_mask)[:, BRAIN_INDEX].any(1)
    if not present.any() or len(signals) < 4:
        return None
    width = max(int(AUTO_SMOOTH_MIN * 60 / epoch_sec) | 1, 3)
    act = median_filter(epoch_activity(signals, channel_mask), size=width, mode="nearest")
    lo, hi = np.percentile(act, [10, 90])
    if hi - lo < 0.1:  # no contrast between quiet and active stretches
        return None
    quiet = act < (lo + hi) / 2
    edges = np.flatnonzero(np.diff(np.concatenate([[0], quiet.astype(int), [0]])))
    starts, stops = edges[::2], edges[1::2]
    k = int(np.argmax(stops - starts))
    margin = int(AUTO_MARGIN_MIN * 60 / epoch_sec)
    return LightsWindow(max(int(starts[k]) - margin, 0), min(int(stops[k]) + margin, len(signals)), "auto")

"""Plausibility flags of a predicted night and the lights-off / lights-on window (osf.predict.plausibility)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from osf import config
from osf.predict.plausibility import detect_lights, given_window, parse_lights, plausibility_flags

NAMES = list(config.STAGE_NAMES_4)
PER_HOUR = 120


def _night(wake_h: float, light_h: float, deep_h: float, rem_h: float, tail_wake_h: float = 0.0) -> np.ndarray:
    parts = [(0, wake_h), (1, light_h), (2, deep_h), (1, light_h / 2), (3, rem_h), (0, tail_wake_h)]
    return np.concatenate([np.full(int(h * PER_HOUR), s) for s, h in parts])


def test_a_plausible_night_raises_no_flag() -> None:
    stages = _night(0.3, 3.0, 1.0, 1.5, 0.2)
    assert plausibility_flags(stages, NAMES, np.full(len(stages), 0.9), config.CHANNELS, config.CHANNELS) == {}


def test_the_issue_night_staged_as_light_for_22_h_is_flagged() -> None:
    """Sleep-EDF SC4001 as the full-montage classifier staged it: 22 h, 'Light' throughout."""
    stages = np.ones(22 * PER_HOUR, dtype=int)
    scored = _night(8.5, 3.0, 1.0, 1.5, 7.5)
    flags = plausibility_flags(stages, NAMES, np.full(len(stages), 0.4), ["EOG_E1_A2", "EEG_C3_A2", "EEG_C4_A1"],
                               config.CHANNELS, scored=scored)
    assert set(flags) == {"day_time_recording", "sleep_efficiency_implausible", "one_stage_dominates", "low_confidence",
                          "most_channels_missing", "trailing_wake_scored"}
    assert "22.0 h" in flags["day_time_recording"] and "100% of the epochs are Light" in flags["one_stage_dominates"]
    assert "only 3 of the classifier's 12 channels" in flags["most_channels_missing"]
    assert "7.5 h of wake" in flags["trailing_wake_scored"]


def test_given_lights_window_crosses_midnight_and_is_checked() -> None:
    start = dt.datetime(2020, 1, 1, 16, 13)
    off, on = parse_lights("23:00-07:30")
    window = given_window(off, on, start, 22 * PER_HOUR)
    assert window.first == (6 * 60 + 47) * 2 and window.stop == (15 * 60 + 17) * 2
    with pytest.raises(ValueError, match="--lights must be 'auto' or 'HH:MM-HH:MM'"):
        parse_lights("tonight")
    with pytest.raises(ValueError, match="needs the EDF's start time"):
        given_window(off, on, None, 100)
    with pytest.raises(ValueError, match="holds no epoch"):
        given_window(*parse_lights("10:00-11:00"), start, 4 * PER_HOUR)


def test_auto_lights_find_the_quiet_stretch_and_stay_out_without_brain_channels() -> None:
    rng = np.random.default_rng(0)
    n = 10 * PER_HOUR
    signals = np.zeros((n, config.NUM_CHANNELS, config.EPOCH_SAMPLES), dtype=np.float32)
    mask = np.zeros((n, config.NUM_CHANNELS), dtype=bool)
    eeg = config.CHANNEL_INDEX["EEG_C3_A2"]
    mask[:, eeg] = True
    night = slice(3 * PER_HOUR, 8 * PER_HOUR)
    signals[:, eeg] = rng.standard_normal((n, config.EPOCH_SAMPLES))  # white: high-frequency activity (awake)
    signals[night, eeg] = np.cumsum(rng.standard_normal((5 * PER_HOUR, config.EPOCH_SAMPLES)), axis=1) * 0.05  # slow
    window = detect_lights(signals, mask)
    assert abs(window.first - (night.start - 30)) <= 20 and abs(window.stop - (night.stop + 30)) <= 20
    assert detect_lights(signals, np.zeros_like(mask)) is None  # no EEG/EOG/EMG: nothing is trimmed

"""Baseline features (issue 26): power-48 on a known signal, the YASA-style set on EEG channels."""

from __future__ import annotations

import numpy as np
import pytest

from osf import config
from osf.evaluation.baselines import has_eeg, power48, power48_names, yasa_style, yasa_style_columns


def test_power48_on_a_known_signal():
    t = np.arange(config.EPOCH_SAMPLES) / config.SAMPLE_RATE
    x = np.zeros((2, config.NUM_CHANNELS, config.EPOCH_SAMPLES))
    amplitude = np.repeat([1.0, 1.0, 2.0, 1.0, 1.0, 4.0], config.EPOCH_SAMPLES // 6)  # 5 s windows
    x[:, 0] = amplitude * np.sin(2 * np.pi * 8.0 * t)  # 8 Hz: 40 whole cycles per 5 s window
    x[:, 1] = 3.0 * np.sin(2 * np.pi * 2.0 * t)
    mask = np.ones((2, config.NUM_CHANNELS), bool)
    mask[1, 1] = False  # channel 1 absent in the second epoch
    f = power48(x, mask)
    assert f.shape == (2, 48) and power48_names()[:4] == ["ECG:logvar", "ECG:win_std", "ECG:win_min", "ECG:win_max"]
    win = np.log(amplitude[::320] ** 2 / 2)  # a sine's variance is A^2 / 2
    np.testing.assert_allclose(f[0, :4], [np.log(np.mean(amplitude[::320] ** 2) / 2), win.std(), win.min(), win.max()],
                               atol=1e-4)
    np.testing.assert_allclose(f[0, 4:8], [np.log(4.5), 0.0, np.log(4.5), np.log(4.5)], atol=1e-4)
    assert np.all(f[1, 4:8] == 0)  # the absent channel
    flat = f[0, 8:].reshape(-1, 4)  # flat channels: the floor, not -inf, and no spread
    np.testing.assert_allclose(flat[:, [0, 2, 3]], np.log(1e-6), atol=1e-3)
    assert np.all(np.abs(flat[:, 1]) < 1e-6)
    with pytest.raises(ValueError, match="power48: expected"):
        power48(x[:, :11], mask[:, :11])


def test_yasa_style_features_come_from_eeg_eog_and_chin_emg_only():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, config.NUM_CHANNELS, config.EPOCH_SAMPLES)).astype(np.float32)
    mask = np.ones((3, config.NUM_CHANNELS), bool)
    base = yasa_style(x, mask)
    assert base.shape == (3, yasa_style_columns().size) and np.isfinite(base).all()
    other = x.copy()
    other[:, config.CHANNEL_INDEX["ECG"]] *= 10  # a channel YASA does not read changes nothing
    np.testing.assert_array_equal(yasa_style(other, mask), base)
    other[:, config.CHANNEL_INDEX["EEG_C3_A2"]] *= 10
    assert not np.allclose(yasa_style(other, mask), base)
    keep = np.ones(config.NUM_CHANNELS, bool)
    assert has_eeg(keep)
    keep[[config.CHANNEL_INDEX["EEG_C3_A2"], config.CHANNEL_INDEX["EEG_C4_A1"]]] = False
    assert not has_eeg(keep)

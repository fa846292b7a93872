"""ChannelSet: one type for presets, channel lists and masks, with one-line errors naming the valid choices."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import config
from osf.datasets.channelset import ChannelSet


def test_preset_list_and_mask_spellings_agree():
    preset = ChannelSet.from_spec("cardio_respiratory")
    listed = ChannelSet.from_spec(" ECG, ABD,THX , NP,SN ")
    masked = ChannelSet.from_mask(preset.mask)
    assert preset.preset == "cardio_respiratory" and listed.preset is None
    assert preset.names == listed.names == masked.names == config.CHANNEL_PRESETS["cardio_respiratory"]
    np.testing.assert_array_equal(preset.mask, [c in preset.names for c in config.CHANNELS])
    assert preset.keep_indices.tolist() == [config.CHANNEL_INDEX[c] for c in preset.names]
    assert ChannelSet.full().is_full and not preset.is_full and preset.bits() == "100011110000"
    assert ChannelSet.coerce("ecg_only") == ChannelSet.from_spec("ecg_only")
    assert ChannelSet.coerce(["ECG"]).names == ("ECG",) and ChannelSet.coerce(torch.tensor(preset.mask)).names == preset.names
    assert config.resolve_channel_preset("no_eeg") == ChannelSet.from_spec("no_eeg").names


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: ChannelSet.from_spec("EEG_C3_A2,Fpz"), r"unknown channel\(s\) \['Fpz'\] in preset .*known presets: .*channels: "),
        (lambda: ChannelSet.from_spec(" , "), r"empty channel preset ' , '; choose one of \["),
        (lambda: ChannelSet.from_names(["ECG", "EEG_Fz"]), r"unknown channel\(s\) \['EEG_Fz'\]; channels are \['ECG'"),
        (lambda: ChannelSet.from_names([]), r"empty channel set"),
        (lambda: ChannelSet.from_mask(np.ones(11, dtype=bool)), r"channel mask must be bool \[12\], got shape \(11,\)"),
        (lambda: ChannelSet(("ECG",), preset="ekg"), r"unknown channel preset 'ekg'; known presets: \["),
    ],
)
def test_invalid_sets_raise_one_line_errors(build, message):
    with pytest.raises(ValueError, match=message) as err:
        build()
    assert "\n" not in str(err.value)


def test_apply_zeroes_and_masks_outside_the_set_without_touching_inputs():
    signal, mask = torch.randn(3, 12, 8), torch.ones(3, 12, dtype=torch.bool)
    mask[0, config.CHANNEL_INDEX["ECG"]] = False  # already absent in one row
    keep = ChannelSet.from_spec("ecg_only")
    out, out_mask = keep.apply(signal, mask)
    assert out_mask.tolist() == [[False] * 12, [True] + [False] * 11, [True] + [False] * 11]
    assert out[0].abs().sum() == 0 and torch.equal(out[1, 0], signal[1, 0]) and out[1, 1:].abs().sum() == 0
    assert mask.all(1)[1:].all() and signal.abs().sum() > 0  # inputs untouched
    np.testing.assert_array_equal(keep.restrict(np.ones((2, 12), dtype=bool)), np.tile(keep.mask, (2, 1)))

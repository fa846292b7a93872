"""Signal pipeline of one recording: resampling, EMG filter, normalisation, epoching, QC, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.signal import welch

import config
from osf.datasets.io.errors import ChannelMapError, IngestionError
from osf.datasets.io.scoring import Scoring
from osf.datasets.preprocess import (
    NoUsableSignalError,
    RecordingTooShortError,
    epochs_from_signals,
    process_recording,
)
from osf.datasets.preprocess.filters import emg_bandpass, emg_filter_description
from osf.datasets.preprocess.normalise import robust_scale
from osf.datasets.preprocess.resample import resample_to_model_rate, resampling_ratio, source_to_output_mask
from osf.datasets.recording import pack_bits, unpack_bits

CH = config.CHANNEL_INDEX
PSG_RATES = (1, 8, 10, 32, 50, 100, 125, 200, 250, 256, 500, 512)


# --- resampling -----------------------------------------------------------------------------------
@pytest.mark.parametrize("rate", PSG_RATES)
def test_resample_keeps_a_tone_and_the_time_axis(rate: int) -> None:
    """A tone below both Nyquists comes out as the same tone sampled on the 64 Hz grid from t = 0."""
    f = min(0.2 * rate, 5.0)
    n = int(120 * rate)
    x = np.sin(2 * np.pi * f * np.arange(n) / rate + 0.3)
    y = resample_to_model_rate(x, rate)
    assert len(y) == n * 64 // rate
    t = np.arange(len(y)) / 64
    expected = np.sin(2 * np.pi * f * t + 0.3)
    core = slice(64 * 10, len(y) - 64 * 10)  # away from the edges
    assert np.max(np.abs(y[core] - expected[core])) < 0.02


def test_resample_ratio_is_exact_for_psg_rates_and_close_for_odd_ones() -> None:
    for rate in PSG_RATES:
        up, down = resampling_ratio(rate)
        assert rate * up == 64 * down
    up, down = resampling_ratio(199.98)  # odd header rate: within 4 ppm
    assert abs(199.98 * up / down - 64) / 64 < 4e-6
    for bad in (0, -5, float("nan")):
        with pytest.raises(ValueError, match="positive"):
            resampling_ratio(bad)


def test_resample_anti_aliases() -> None:
    """A 40 Hz tone at 256 Hz would alias to 24 Hz at 64 Hz; the polyphase filter removes it."""
    rate, n = 256, 256 * 60
    t = np.arange(n) / rate
    y = resample_to_model_rate(np.sin(2 * np.pi * 40 * t) + np.sin(2 * np.pi * 5 * t), rate)
    freqs, power = welch(y, fs=64, nperseg=512)
    alias = power[np.argmin(np.abs(freqs - 24))]
    kept = power[np.argmin(np.abs(freqs - 5))]
    assert alias < 1e-4 * kept
    naive = np.sin(2 * np.pi * 40 * t)[::4]  # what decimation without a filter would give
    assert np.std(naive) > 0.5


def test_nonfinite_mask_maps_to_the_output_samples_it_feeds() -> None:
    bad = np.zeros(256 * 10, dtype=bool)
    bad[400] = True
    out = source_to_output_mask(bad, 256, 640)
    assert np.flatnonzero(out).tolist() == [100]
    bad = np.zeros(100, dtype=bool)
    bad[5] = True  # 10 Hz: sample 5 covers t in [0.5, 0.6) s -> 64 Hz samples 32..38
    assert np.flatnonzero(source_to_output_mask(bad, 10, 640)).tolist() == list(range(32, 39))


# --- EMG filter and normalisation -----------------------------------------------------------------
def test_emg_bandpass_keeps_10_to_30_hz_only() -> None:
    rate = 512
    t = np.arange(rate * 20) / rate
    tone = {f: np.sin(2 * np.pi * f * t) for f in (2, 20, 100)}
    core = slice(rate * 2, -rate * 2)
    gain = {f: np.std(emg_bandpass(x, rate)[core]) / np.std(x[core]) for f, x in tone.items()}
    assert gain[20] > 0.9 and gain[2] < 0.01 and gain[100] < 0.01
    assert "bandpass 10-30" in emg_filter_description(512)
    assert "highpass 10" in emg_filter_description(50)  # Nyquist 25 Hz: only the high-pass edge fits


def test_robust_scale_ignores_outliers_and_handles_sparse_and_constant_channels() -> None:
    rng = np.random.default_rng(0)
    x = 10 + 3 * rng.standard_normal(100_000)
    x[::100] = 1e6  # 1 % huge artefacts
    s = robust_scale(x)
    assert s.method == "iqr"
    assert s.center == pytest.approx(10, abs=0.1)
    assert s.scale == pytest.approx(3 * 1.349, rel=0.03)
    sparse = np.zeros(10_000)
    sparse[::50] = 1.0  # IQR is 0 but the channel is not silent
    assert robust_scale(sparse).method == "std"
    assert robust_scale(np.full(1000, 7.0)).method == "flat"
    valid = np.ones(1000, dtype=bool)
    valid[:500] = False
    assert robust_scale(np.r_[np.full(500, 1e9), rng.standard_normal(500)], valid).center == pytest.approx(0, abs=0.2)


def test_bit_packing_matches_the_config_contract() -> None:
    rng = np.random.default_rng(1)
    flags = rng.random((50, 12)) < 0.4
    bits = pack_bits(flags)
    assert bits.dtype == np.uint16
    assert bits.tolist() == [config.channel_mask_bits(list(row)) for row in flags]
    assert np.array_equal(unpack_bits(bits, 12), flags)


# --- the pipeline on in-memory signals ------------------------------------------------------------
def _tones(seconds: float, rates: dict[str, int], seed: int = 0) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    signals = {}
    for label, rate in rates.items():
        t = np.arange(int(seconds * rate)) / rate
        signals[label] = 50 * np.sin(2 * np.pi * 1.5 * t + rng.uniform(0, 6)) + rng.standard_normal(t.size)
    return signals, {label: float(r) for label, r in rates.items()}


def test_epochs_shapes_alignment_and_trailing_partial_epoch_dropped() -> None:
    signals, rates = _tones(95, {"C4-M1": 200, "Abdomen": 10})
    out = epochs_from_signals(signals, rates, 95.0, {"EEG_C4_A1": "C4-M1", "ABD": "Abdomen"})
    assert out.signals.shape == (3, 12, 1920) and out.signals.dtype == np.float32
    assert out.qc["dropped_tail_s"] == pytest.approx(5.0)
    present = {CH["EEG_C4_A1"], CH["ABD"]}
    assert out.channel_mask.all(axis=0).tolist() == [i in present for i in range(12)]
    absent = [i for i in range(12) if i not in present]
    assert not out.signals[:, absent].any()
    # Epoch k holds [30k, 30k+30) s of the source: compare with the normalised source on the 64 Hz grid.
    src = signals["C4-M1"][: 90 * 200]
    s = robust_scale(resample_to_model_rate(src, 200))
    t64 = np.arange(90 * 64) / 64
    expected = (src[(t64 * 200).astype(int)] - s.center) / s.scale
    got = out.signals[:, CH["EEG_C4_A1"]].reshape(-1)
    core = slice(64, -64)
    assert np.corrcoef(got[core], expected[core])[0, 1] > 0.99
    assert np.abs(out.signals).max() <= 6.0
    assert all((v == -1).all() for v in out.labels.values())


def test_derivation_equals_normalised_difference() -> None:
    signals, rates = _tones(60, {"C3": 256, "M2": 256})
    out = epochs_from_signals(signals, rates, 60.0, {"EEG_C3_A2": ("C3", "M2")})
    diff = resample_to_model_rate(signals["C3"] - signals["M2"], 256)
    s = robust_scale(diff)
    expected = np.clip((diff - s.center) / s.scale, -6, 6)
    np.testing.assert_allclose(out.signals[:, CH["EEG_C3_A2"]].reshape(-1), expected, atol=1e-4)
    # Different rates: each side resampled first, then subtracted (linear, so the same signal).
    signals2 = {"C3": signals["C3"], "M2": signals["M2"][::2]}
    out2 = epochs_from_signals(signals2, {"C3": 256.0, "M2": 128.0}, 60.0, {"EEG_C3_A2": ("C3", "M2")})
    a, b = out.signals[:, CH["EEG_C3_A2"]].ravel(), out2.signals[:, CH["EEG_C3_A2"]].ravel()
    assert np.corrcoef(a[64:-64], b[64:-64])[0, 1] > 0.99


def test_nan_and_inf_are_zeroed_flagged_and_do_not_leak() -> None:
    signals, rates = _tones(150, {"C4-M1": 256, "Abdomen": 10})
    clean = epochs_from_signals(signals, rates, 150.0, {"EEG_C4_A1": "C4-M1", "ABD": "Abdomen"})
    dirty = {k: v.copy() for k, v in signals.items()}
    dirty["C4-M1"][256 * 70 : 256 * 71] = np.nan  # epoch 2
    dirty["C4-M1"][256 * 100] = np.inf  # epoch 3
    dirty["Abdomen"][10 * 130 :] = -np.inf  # the last 20 s of epoch 4: mostly non-finite
    out = epochs_from_signals(dirty, rates, 150.0, {"EEG_C4_A1": "C4-M1", "ABD": "Abdomen"})
    assert np.isfinite(out.signals).all()
    eeg, abd = CH["EEG_C4_A1"], CH["ABD"]
    nan = unpack_bits(out.quality["nan_mask"], 12)
    assert np.flatnonzero(nan[:, eeg]).tolist() == [2, 3]
    assert np.flatnonzero(nan[:, abd]).tolist() == [4]
    assert not out.signals[2, eeg, (70 - 60) * 64 : (71 - 60) * 64].any()  # the NaN second is zero
    assert out.channel_mask[:, eeg].all()  # one bad second does not mask the epoch
    assert not out.channel_mask[4, abd] and not out.signals[4, abd].any()  # mostly NaN: masked
    # Epochs without NaN are unchanged (up to the robust statistics moving slightly).
    np.testing.assert_allclose(out.signals[0, eeg], clean.signals[0, eeg], atol=0.05)
    assert out.qc["nonfinite_source_samples"] == {"EEG_C4_A1": 257, "ABD": 200}


def test_all_zero_channel_is_masked_and_the_recording_kept() -> None:
    signals, rates = _tones(90, {"C4-M1": 256, "ECG": 256})
    signals["ECG"][:] = 0.0
    out = epochs_from_signals(signals, rates, 90.0, {"EEG_C4_A1": "C4-M1", "ECG": "ECG"})
    assert out.qc["flat_channels"] == ["ECG"]
    assert not out.channel_mask[:, CH["ECG"]].any() and not out.signals[:, CH["ECG"]].any()
    assert out.channel_mask[:, CH["EEG_C4_A1"]].all()


def test_flat_and_disconnected_epochs_are_flagged_and_masked() -> None:
    signals, rates = _tones(150, {"C4-M1": 256, "ECG": 256})
    signals["C4-M1"][256 * 30 : 256 * 60] = 3.0  # epoch 1: flat near the baseline
    signals["C4-M1"][256 * 90 : 256 * 120] = 5000.0  # epoch 3: pinned at a rail
    out = epochs_from_signals(signals, rates, 150.0, {"EEG_C4_A1": "C4-M1", "ECG": "ECG"})
    eeg = CH["EEG_C4_A1"]
    flat = unpack_bits(out.quality["flat_mask"], 12)[:, eeg]
    disc = unpack_bits(out.quality["disconnected_mask"], 12)[:, eeg]
    assert np.flatnonzero(flat).tolist() == [1, 3]
    assert np.flatnonzero(disc).tolist() == [3]
    assert out.channel_mask[:, eeg].tolist() == [True, False, True, False, True]
    assert out.quality["clipped_frac"][3] == pytest.approx(1 / 12, rel=0.05)  # one channel of 12, all clipped
    assert out.quality["clipped_frac"][0] == 0


def test_nothing_usable_and_too_short_are_refused() -> None:
    signals, rates = _tones(90, {"C4-M1": 256})
    signals["C4-M1"][:] = 1.0
    with pytest.raises(NoUsableSignalError, match="rec.edf.*no channel carries usable signal"):
        epochs_from_signals(signals, rates, 90.0, {"EEG_C4_A1": "C4-M1"}, source_path="rec.edf")
    signals, rates = _tones(20, {"C4-M1": 256})
    with pytest.raises(RecordingTooShortError, match="rec.edf.*shorter than one 30 s epoch"):
        epochs_from_signals(signals, rates, 20.0, {"EEG_C4_A1": "C4-M1"}, source_path="rec.edf")


def _scoring(stages: list[int], events: list[tuple[float, float, str]]) -> Scoring:
    frame = pd.DataFrame(events, columns=["onset", "duration", "label"])
    frame["name"] = frame["label"]
    return Scoring(stages=np.array(stages, dtype=np.int8), events=frame, source=Path("s.xml"), format="nsrr_xml")


@pytest.mark.parametrize("n_scored", [2, 4, 7])
def test_scoring_shorter_or_longer_than_the_signal(n_scored: int) -> None:
    signals, rates = _tones(120, {"C4-M1": 256})
    stages = [0, 2, 3, 4, 1, 2, 2][:n_scored]
    scoring = _scoring(stages, [(35.0, 10.0, "Arousal"), (170.0, 10.0, "Hypopnea")])
    out = epochs_from_signals(signals, rates, 120.0, {"EEG_C4_A1": "C4-M1"}, scoring=scoring)
    expected = (stages + [-1] * 4)[:4]
    assert out.labels["stage"].tolist() == expected
    assert out.labels["arousal"].tolist() == [0, 1, 0, 0]
    assert out.labels["hypopnea"].tolist() == [0, 0, 0, 0]  # the event lies past the signal end
    report = out.qc["scoring"]
    assert report["status"] == {2: "scoring_shorter", 4: "match", 7: "scoring_longer"}[n_scored]
    assert report["signal_epochs_without_scoring"] == max(4 - n_scored, 0)
    assert report["scored_epochs_past_signal_end"] == max(n_scored - 4, 0)
    assert report["events_past_signal_end"] == 1


# --- the pipeline from EDF files ------------------------------------------------------------------
def _montage_edf(write_test_edf, path: Path, seconds: int = 120, drop: tuple[str, ...] = ()) -> Path:
    rates = {"C3": 256, "M2": 256, "C4-M1": 200, "E1-M2": 125, "E2-M1": 50, "ECG": 500, "Chin1": 512,
             "Chin2": 512, "Thor": 10, "Abdo": 10, "Nasal Pressure": 32, "Snore": 100, "SaO2": 1}
    signals, _ = _tones(seconds, {k: v for k, v in rates.items() if k not in drop})
    return write_test_edf(path, {k: (x, rates[k]) for k, x in signals.items()})


def test_process_recording_multi_rate_edf(write_test_edf, tmp_path: Path) -> None:
    edf = _montage_edf(write_test_edf, tmp_path / "night.edf", seconds=125)
    out = process_recording(edf)
    assert out.n_epochs == 4
    present = {n for n in config.CHANNELS if n not in ("EMG_LLeg", "EMG_RLeg")}
    assert {n for n in config.CHANNELS if out.channel_mask[:, CH[n]].all()} == present
    assert out.qc["missing_channels"] == ["EMG_LLeg", "EMG_RLeg"]
    assert out.qc["channel_map"]["EEG_C3_A2"] == ["C3", "M2"]
    assert out.qc["derived_channels"]["EEG_C3_A2"] == "C3 - M2"
    assert out.qc["resampling"]["ECG"].endswith("up=16 down=125")
    assert "bandpass 10-30" in out.qc["filters"]["EMG_Chin"]
    assert out.qc["unused_labels"] == ["SaO2"]
    for name in present:  # every channel is normalised: median ~0, IQR ~1
        x = out.signals[:, CH[name]].ravel()
        q25, q50, q75 = np.percentile(x, (25, 50, 75))
        assert abs(q50) < 0.1 and q75 - q25 == pytest.approx(1.0, abs=0.1), name


def test_process_recording_missing_required_label(write_test_edf, tmp_path: Path) -> None:
    """Missing EEG: the recording is kept with the EEG channels masked."""
    edf = _montage_edf(write_test_edf, tmp_path / "noeeg.edf", drop=("C3", "M2", "C4-M1"))
    out = process_recording(edf)
    assert not out.channel_mask[:, [CH["EEG_C3_A2"], CH["EEG_C4_A1"]]].any()
    assert out.channel_mask[:, CH["ECG"]].all()
    assert {"EEG_C3_A2", "EEG_C4_A1"} <= set(out.qc["missing_channels"])


def test_process_recording_channel_map_overrides_registry(write_test_edf, tmp_path: Path) -> None:
    edf = _montage_edf(write_test_edf, tmp_path / "night.edf")
    out = process_recording(edf, channel_map={"EEG_C4_A1": "C4-M1", "EMG_Chin": ["Chin2", "Chin1"]})
    assert out.channel_mask.all(axis=0).tolist() == [n in ("EEG_C4_A1", "EMG_Chin") for n in config.CHANNELS]
    assert out.qc["channel_rules"] == {"EMG_Chin": "channel_map", "EEG_C4_A1": "channel_map"}
    with pytest.raises(ChannelMapError, match=r"night\.edf.*'Fpz-Cz', which is not in the file"):
        process_recording(edf, channel_map={"EEG_C4_A1": "Fpz-Cz"})


def test_process_recording_refuses_files_without_any_model_channel(write_test_edf, tmp_path: Path) -> None:
    edf = write_test_edf(tmp_path / "oxi.edf", {"SaO2": (np.linspace(90, 99, 120), 1), "Pleth": (np.ones(120), 1)})
    with pytest.raises(NoUsableSignalError, match=r"oxi\.edf.*none of the 12 model channels"):
        process_recording(edf)
    not_edf = tmp_path / "notes.edf"
    not_edf.write_text("this is not an EDF file" * 20)
    with pytest.raises(IngestionError, match=r"notes\.edf.*not an EDF"):
        process_recording(not_edf)


def test_clock_time_scoring_is_anchored_at_the_edf_start(write_test_edf, tmp_path) -> None:
    """A STAGES-style CSV with clock-time onsets is placed using the EDF header's start time."""
    rng = np.random.default_rng(0)
    edf = write_test_edf(tmp_path / "BOGN00007.edf", {"C4-M1": (rng.standard_normal(120 * 128), 128)})
    csv = tmp_path / "BOGN00007.csv"  # the test EDF starts at 00:00:00
    csv.write_text("Start Time,Duration (seconds),Event\n00:00:00,60,Wake\n00:01:00,30,Stage2\n00:01:30,30,REM\n"
                   "00:01:05,12,Obstructive Apnea\n")
    epochs = process_recording(edf, csv)
    assert epochs.labels["stage"].tolist() == [0, 0, 2, 4]
    assert epochs.labels["apnea"].tolist() == [0, 0, 1, 0]


def test_scoring_with_another_start_time_is_flagged(write_test_edf, tmp_path) -> None:
    """A stated start a little off is warned about; tens of minutes off is refused unless accepted."""
    import datetime as dt

    from osf.datasets.io.errors import ScoringMismatchError
    from osf.datasets.synthetic.xml_writer import write_nsrr_xml

    rng = np.random.default_rng(0)
    edf = write_test_edf(tmp_path / "n.edf", {"C4-M1": (rng.standard_normal(90 * 128), 128)})  # starts 00:00:00
    stages = np.array([0, 2, 4], dtype=np.int8)

    def xml_starting(clock: str) -> Path:
        start = dt.datetime.combine(dt.date(2020, 1, 1), dt.time.fromisoformat(clock))
        return write_nsrr_xml(tmp_path / "n-nsrr.xml", stages, [], start, {})

    for clock, flagged in (("23:59:59.5", False), ("00:02:00", True)):
        qc = process_recording(edf, xml_starting(clock)).qc
        warnings = [w for w in qc.get("scoring_warnings", []) if "recording start" in w]
        assert bool(warnings) == flagged, (clock, qc.get("scoring_warnings"))
        assert set(warnings) <= set(qc["warnings"])  # what the console shows
    assert "00:02:00" in warnings[0] and "00:00:00" in warnings[0] and "n-nsrr.xml" in warnings[0]
    xml = xml_starting("22:30:00")
    with pytest.raises(ScoringMismatchError, match=r"n-nsrr\.xml: does not fit the recording .*n\.edf.*22:30:00.*"
                       r"00:00:00.*--accept_scoring_mismatch"):
        process_recording(edf, xml)
    qc = process_recording(edf, xml, accept_scoring_mismatch=True).qc
    assert any("22:30:00" in w and "(accepted)" in w for w in qc["warnings"])
    assert qc["scoring_problems"] and qc["scoring"]["labelled"]


"""Bad inputs that used to pass as good data: dead/flat/railed channels, scoring that does not belong to
the recording, unbounded onsets and durations, UTF-8 labels. Each builds the bad input, checks the
message and that nothing is lost or half-written."""

from __future__ import annotations

import json
import time
from pathlib import Path

import edfio
import numpy as np
import pytest

import config
from osf.datasets.ingest import ingest_dataset
from osf.datasets.io import edf as edf_module
from osf.datasets.io.edf import read_edf, read_edf_header
from osf.datasets.io.errors import MalformedScoringError, ScoringMismatchError
from osf.datasets.io import read_scoring
from osf.datasets.preprocess import NoUsableSignalError, process_recording
from osf.datasets.recording import unpack_bits
from osf.datasets.store import EpochStore

REPO = Path(__file__).resolve().parents[1]
from main_pipelines import main_preprocess

CH = config.CHANNEL_INDEX
SECONDS = 120  # 4 epochs


def _edf(path: Path, signals: dict[str, tuple[np.ndarray, float, tuple[float, float]]]) -> Path:
    """EDF with explicit physical ranges: label -> (samples, rate, (physical min, max))."""
    sigs = [edfio.EdfSignal(x, rate, label=label, physical_dimension="uV", physical_range=rng)
            for label, (x, rate, rng) in signals.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    edfio.Edf(sigs).write(path)
    return path


def _eeg(rate: float = 200.0, seed: int = 0) -> np.ndarray:
    t = np.arange(int(SECONDS * rate)) / rate
    rng = np.random.default_rng(seed)
    return 40 * np.sin(2 * np.pi * 7 * t) + 10 * rng.standard_normal(t.size)


def _patch_header(path: Path, field_offset: int, signal: int, text: str, width: int) -> None:
    """Overwrite one signal-header field (offset per signal block, see read_edf_header)."""
    data = bytearray(path.read_bytes())
    ns = int(data[252:256])
    at = 256 + field_offset * ns + signal * width
    data[at : at + width] = text.encode("utf-8").ljust(width)[:width]
    path.write_bytes(bytes(data))


# --- 1. dead, flat and railed channels ----------------------------------------------------------
def test_channel_stuck_at_digital_minimum_is_dead_and_masked(tmp_path: Path) -> None:
    # 200 Hz does not divide 64 Hz: the resampler used to turn this constant into a ripple.
    edf = _edf(tmp_path / "n.edf", {"C4-M1": (_eeg(), 200, (-500, 500)),
                                    "ECG": (np.full(SECONDS * 200, -500.0), 200, (-500, 500))})
    out = process_recording(edf)
    assert out.qc["dead_channels"] == {"ECG": "constant (stuck at one value) in every epoch"}
    assert "ECG" not in out.qc["present_channels"] and "EEG_C4_A1" in out.qc["present_channels"]
    assert not out.channel_mask[:, CH["ECG"]].any() and not out.signals[:, CH["ECG"]].any()
    assert out.channel_mask[:, CH["EEG_C4_A1"]].all()
    assert any("channel ECG (ECG) is dead" in w and "n.edf" in w for w in out.qc["warnings"])


def test_rail_to_rail_channel_is_dead(tmp_path: Path) -> None:
    square = np.where((np.arange(SECONDS * 100) // 50) % 2 == 0, 800.0, -800.0)  # 1 Hz, saturated both ways
    edf = _edf(tmp_path / "n.edf", {"C4-M1": (_eeg(100), 100, (-500, 500)), "Abdomen": (square, 100, (-800, 800))})
    out = process_recording(edf)
    assert out.qc["dead_channels"] == {"ABD": "on the rails of its physical range (saturated or disconnected) in every epoch"}
    assert not out.channel_mask[:, CH["ABD"]].any()


def test_dead_epochs_are_masked_and_do_not_inflate_the_scale(tmp_path: Path) -> None:
    eeg = _eeg(256)
    eeg[: 3 * 30 * 256] = 0.0  # dead (zero) for 3 of the 4 epochs
    edf = _edf(tmp_path / "n.edf", {"C4-M1": (eeg, 256, (-500, 500)), "ECG": (_eeg(256, 1), 256, (-500, 500))})
    out = process_recording(edf)
    i = CH["EEG_C4_A1"]
    assert out.channel_mask[:, i].tolist() == [False, False, False, True]
    assert unpack_bits(out.quality["flat_mask"])[:, i].tolist() == [True, True, True, False]
    assert out.qc["dead_epochs"]["EEG_C4_A1"] == {"stuck": 3, "railed": 0}
    assert any("stuck or railed in 3 of 4 epochs" in w for w in out.qc["warnings"])
    live = out.signals[3, i]
    # Scaled by the live epoch's IQR (~1); the whole night's (mostly zeros) would have blown it up ~4x.
    assert 0.8 < np.subtract(*np.percentile(live, [75, 25])) < 1.25
    assert not out.signals[:3, i].any()


def test_a_night_with_every_channel_dead_is_refused_and_the_batch_goes_on(tmp_path: Path) -> None:
    d = tmp_path / "in"
    _edf(d / "dead.edf", {"C4-M1": (np.zeros(SECONDS * 200), 200, (-500, 500)),
                          "ECG": (np.full(SECONDS * 200, 500.0), 200, (-500, 500))})
    _edf(d / "live.edf", {"C4-M1": (_eeg(), 200, (-500, 500))})
    with pytest.raises(NoUsableSignalError, match=r"dead\.edf: no channel carries usable signal.*refused") as err:
        process_recording(d / "dead.edf")
    assert "EEG_C4_A1: constant" in str(err.value) and "ECG: constant" in str(err.value)
    store = tmp_path / "store"
    report = ingest_dataset("generic", d, store, progress=False)
    assert report.written == ["live"] and list(report.failed) == [str(d / "dead.edf")]
    assert sorted(p.name for p in (store / "signals" / "generic").iterdir()) == ["live.npy", "live.parquet"]
    assert set(EpochStore(store).index["recording_id"]) == {"live"}


def test_one_channel_with_an_unusable_header_is_absent_not_fatal(tmp_path: Path) -> None:
    edf = _edf(tmp_path / "n.edf", {"C4-M1": (_eeg(), 200, (-500, 500)), "ECG": (_eeg(200, 1), 200, (-500, 500))})
    _patch_header(edf, 112, 1, "-500", 8)  # ECG physical max := physical min
    out = process_recording(edf)
    assert "invalid calibration" in out.qc["bad_header_channels"]["ECG"]
    assert not out.channel_mask[:, CH["ECG"]].any() and out.channel_mask[:, CH["EEG_C4_A1"]].all()
    assert any("channel ECG is absent" in w for w in out.qc["warnings"])
    _patch_header(edf, 112, 0, "-500", 8)  # now no channel is usable: refused, naming the file and why
    with pytest.raises(NoUsableSignalError, match=r"n\.edf: no model channel has a usable header.*ECG"):
        process_recording(edf)


# --- 6. UTF-8 labels ----------------------------------------------------------------------------
def test_utf8_labels_are_decoded_and_can_be_mapped(tmp_path: Path, monkeypatch) -> None:
    edf = _edf(tmp_path / "n.edf", {"C3xM2": (_eeg(), 200, (-500, 500)), "Schnarch": (_eeg(200, 2), 200, (-500, 500))})
    _patch_header(edf, 0, 0, "EEG C3–M2", 16)  # en dash: 3 bytes in UTF-8
    _patch_header(edf, 0, 1, "Schnarchen Mikrö", 16)  # 17 bytes: the field cuts the 2-byte 'ö' in half
    _patch_header(edf, 96, 0, "µV", 8)
    header = read_edf_header(edf)
    assert header.labels == ["EEG C3–M2", "Schnarchen Mikr"]  # the half character is dropped, not garbled
    assert header.signals[0].unit == "µV"
    cmap = {"EEG_C3_A2": "EEG C3–M2", "SN": "Schnarchen Mikr"}
    out = process_recording(edf, channel_map=cmap)
    assert out.qc["present_channels"] == ["SN", "EEG_C3_A2"]
    edfio_data = read_edf(edf, ["EEG C3–M2"]).signals["EEG C3–M2"]

    def refuse(*args, **kwargs):
        raise ValueError("edfio refuses this file")

    monkeypatch.setattr(edf_module, "_read_with_edfio", refuse)  # MNE spells the label in latin-1
    rec = read_edf(edf, ["EEG C3–M2"])
    assert rec.reader == "mne"
    np.testing.assert_allclose(rec.signals["EEG C3–M2"], edfio_data, atol=0.02)


# --- 2. scoring that does not belong to the recording -------------------------------------------
def _xml(path: Path, events: list[tuple[str, str, float, float]], clock: str = "00.00.00", duration: float = SECONDS) -> Path:
    rows = [(f"<ScoredEvent><EventType/><EventConcept>Recording Start Time</EventConcept><Start>0</Start>"
             f"<Duration>{duration}</Duration><ClockTime>00.00.00 {clock}</ClockTime></ScoredEvent>")]
    rows += [f"<ScoredEvent><EventType>{t}</EventType><EventConcept>{c}</EventConcept><Start>{s}</Start>"
             f"<Duration>{d}</Duration></ScoredEvent>" for t, c, s, d in events]
    path.write_text('<?xml version="1.0"?><PSGAnnotation><ScoredEvents>' + "".join(rows) + "</ScoredEvents></PSGAnnotation>")
    return path


STAGES = [("Stages|Stages", "Wake|0", 0, 30), ("Stages|Stages", "Stage 2 sleep|2", 30, 60), ("Stages|Stages", "REM sleep|5", 90, 30)]
AROUSAL = [("Arousals|Arousals", "Arousal|Arousal ()", 40, 10)]


@pytest.fixture()
def night_dir(tmp_path: Path) -> Path:
    """A generic folder holding one good night ('good') and one whose scoring is replaced per test ('bad')."""
    d = tmp_path / "in"
    for name, seed in (("good", 0), ("bad", 1)):
        _edf(d / f"{name}.edf", {"C4-M1": (_eeg(200, seed), 200, (-500, 500))})
        _xml(d / f"{name}.xml", STAGES + AROUSAL)
    return d


@pytest.mark.parametrize(
    ("events", "clock", "message", "labelled"),
    [
        (STAGES, "23.20.00", r"states a recording start at 23:20:00 but the EDF starts at 00:00:00 \(2400 s apart\)", True),
        ([("Stages|Stages", "Sleep stage X|9", 0, 120)], "00.00.00", r"no usable sleep stage label at all .*'Sleep stage X\|9'", False),
        ([], "00.00.00", r"no events at all", False),
        ([*STAGES, ("Stages|Stages", "Wake|0", 120 + 7200, 30)], "00.00.00", r"stages run to 7350 s but the recording lasts 120 s", True),
    ],
    ids=["start_40_min_off", "stage_names_all_unknown", "no_events", "far_past_the_end"],
)
def test_mismatched_scoring_is_refused_by_default_and_accepted_with_the_flag(
    night_dir: Path, tmp_path: Path, capsys, events, clock, message, labelled
) -> None:
    xml = _xml(night_dir / "bad.xml", events, clock)
    with pytest.raises(ScoringMismatchError, match=rf"bad\.xml: does not fit the recording .*bad\.edf: .*{message}"):
        process_recording(night_dir / "bad.edf", xml)

    store = tmp_path / "store"
    argv = ["--dataset", "generic", "--input_dir", str(night_dir), "--output_dir", str(store), "--no-progress"]
    assert main_preprocess.main(argv) == 1
    err = capsys.readouterr().err
    assert "failed:" in err and "bad.xml" in err and "--accept_scoring_mismatch" in err
    assert set(EpochStore(store).index["recording_id"]) == {"good"}  # the good night is in, nothing half-written
    assert not (store / "signals" / "generic" / "bad.npy").exists()

    assert main_preprocess.main([*argv, "--accept_scoring_mismatch"]) == 0
    err = capsys.readouterr().err
    assert "warning:" in err and "(accepted)" in err and "bad.xml" in err
    index = EpochStore(store).index
    bad = index[index.recording_id == "bad"].sort_values("epoch_index")
    qc = EpochStore(store).recordings.set_index("recording_id").loc["bad", "qc"]
    assert qc["scoring_problems"] and qc["scoring"]["labelled"] == labelled
    columns = ["stage", "arousal", "hypopnea", "oxygen_desaturation", "apnea"]
    if labelled:
        assert bad["stage"].tolist() == [0, 2, 2, 4] and bad["arousal"].tolist() == [0, 0, 0, 0]
    else:  # no usable stage: the night never counts as labelled, nor claims "no arousal anywhere"
        assert (bad[columns] == -1).all().all()


def test_small_start_offset_and_unknown_names_are_warned_on_the_console(night_dir: Path, tmp_path: Path, capsys) -> None:
    _xml(night_dir / "bad.xml", [*STAGES, ("Misc|Misc", "Mystery marker", 10, 1)], clock="00.02.00")
    argv = ["--dataset", "generic", "--input_dir", str(night_dir), "--output_dir", str(tmp_path / "s"), "--no-progress"]
    assert main_preprocess.main(argv) == 0
    err = capsys.readouterr().err
    assert "warning:" in err and "00:02:00" in err and "(120 s apart)" in err
    assert "'Mystery marker' x1" in err


# --- 3. unbounded onsets and durations -----------------------------------------------------------
@pytest.mark.parametrize(
    ("events", "field"),
    [
        ([("Stages|Stages", "Stage 2 sleep|2", 0, 3e16)], "duration"),
        ([*STAGES, ("Arousals|Arousals", "Arousal|Arousal ()", 1e12, 3)], "onset"),
        ([*STAGES, ("Arousals|Arousals", "Arousal|Arousal ()", 60, 1e300)], "duration"),
    ],
)
def test_unbounded_onsets_and_durations_are_refused_without_allocating(tmp_path: Path, events, field) -> None:
    xml = _xml(tmp_path / "huge.xml", events)
    t0 = time.perf_counter()
    with pytest.raises(MalformedScoringError, match=rf"huge\.xml: .*field '{field}' is .*beyond any recording"):
        read_scoring(xml)
    assert time.perf_counter() - t0 < 2.0


def test_unbounded_csv_values_are_refused(tmp_path: Path) -> None:
    csv = tmp_path / "n.csv"
    csv.write_text("onset,duration,description\n0,30,Sleep stage W\n30,3e16,Sleep stage 2\n")
    with pytest.raises(MalformedScoringError, match=r"n\.csv: stage event \(N2\) at onset 30 s: field 'duration' is 3e\+16 s"):
        read_scoring(csv)
    csv.write_text("onset,duration,description\n0,30,Sleep stage W\n1e13,3,Arousal\n")
    with pytest.raises(MalformedScoringError, match=r"n\.csv: scored event 'Arousal' at onset 1e\+13 s: field 'onset'"):
        read_scoring(csv)

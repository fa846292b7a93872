"""Real recordings as they come (issue 29): tolerant where the data is intact, strict where it is not."""

from __future__ import annotations

import warnings
from pathlib import Path

import edfio
import numpy as np
import pytest

from osf.datasets.io.edf import EdfRepairWarning, read_edf, read_edf_header
from osf.datasets.io.errors import EdfHeaderError, ScoringMismatchError, TruncatedEdfError
from osf.datasets.preprocess import process_recording
from osf.datasets.preprocess.pipeline import RecordingTooShortError

RATE = 100


def _edf(path: Path, seconds: int, start: str = "22.00.00") -> Path:
    rng = np.random.default_rng(0)
    sig = edfio.EdfSignal(rng.standard_normal(RATE * seconds) * 20, sampling_frequency=RATE, label="C4-M1",
                          physical_dimension="uV", physical_range=(-200, 200))
    import datetime as dt

    edf = edfio.Edf([sig], data_record_duration=1.0, starttime=dt.time.fromisoformat(start.replace(".", ":")))
    path.parent.mkdir(parents=True, exist_ok=True)
    edf.write(path)
    return path


def _hypnogram(path: Path, runs: list[tuple[float, float, str]], start: str = "22.00.00") -> Path:
    import datetime as dt

    annotations = [edfio.EdfAnnotation(onset, duration, text) for onset, duration, text in runs]
    edfio.Edf([], annotations=annotations, starttime=dt.time.fromisoformat(start.replace(".", ":"))).write(path)
    return path


@pytest.mark.parametrize("stray", [1, 7, 2 * RATE - 1])
def test_stray_bytes_after_the_last_record_are_dropped_with_a_warning(tmp_path: Path, stray: int) -> None:
    path = _edf(tmp_path / "night.edf", 120)
    clean = read_edf(path).signals["C4-M1"]
    with path.open("ab") as f:
        f.write(b"\x07" * stray)  # less than one 200-byte record: a stray byte or a record never finished
    header = read_edf_header(path)
    assert header.num_records == 120 and len(header.notes) == 1 and f"{stray} stray bytes" in header.notes[0]
    with pytest.warns(EdfRepairWarning, match=rf"night\.edf: {stray} stray bytes after the last of its 120"):
        rec = read_edf(path)
    np.testing.assert_array_equal(rec.signals["C4-M1"], clean)  # the intact data, unchanged
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # ingestion keeps it in the QC, not as a Python warning
        qc = process_recording(path).qc
    assert qc["edf_notes"] == list(header.notes)
    assert any("stray bytes" in w and "night.edf" in w for w in qc["warnings"])


def test_missing_or_extra_whole_records_stay_refused(tmp_path: Path) -> None:
    path = _edf(tmp_path / "night.edf", 120)
    raw = path.read_bytes()
    path.write_bytes(raw[:-1])  # one byte short of the last record: truncated, not stray
    with pytest.raises(TruncatedEdfError, match="holds only 119 complete records and 199 stray bytes"):
        read_edf_header(path)
    path.write_bytes(raw + raw[-200:])  # one more complete record than declared
    with pytest.raises(EdfHeaderError, match="declares 120 data records but the file holds 121"):
        read_edf_header(path)


def test_an_unscored_tail_past_the_signal_is_no_mismatch(tmp_path: Path) -> None:
    """Sleep-EDF cassette hypnograms run to 24 h; past the PSG they hold one 'Sleep stage ?' (SC4001: 1.9 h)."""
    edf = _edf(tmp_path / "night.edf", 600)
    hyp = _hypnogram(tmp_path / "night-Hypnogram.edf", [
        (0, 300, "Sleep stage W"), (300, 300, "Sleep stage 2"), (600, 6900, "Sleep stage ?"),
    ])
    rec = process_recording(edf, hyp)
    assert rec.labels["stage"].tolist() == [0] * 10 + [2] * 10
    assert not rec.qc["scoring_problems"]
    assert any("1.9 h past the recording's end" in w and "unscored" in w for w in rec.qc["scoring_warnings"])
    # Movement time in the tail is not scored sleep either.
    _hypnogram(hyp, [(0, 600, "Sleep stage W"), (600, 3990, "Movement time"), (4590, 3000, "Sleep stage ?")])
    assert not process_recording(edf, hyp).qc["scoring_problems"]


def test_scored_stages_past_the_end_and_another_nights_scoring_stay_refused(tmp_path: Path) -> None:
    edf = _edf(tmp_path / "night.edf", 600)
    hyp = _hypnogram(tmp_path / "night-Hypnogram.edf", [
        (0, 600, "Sleep stage W"), (600, 3000, "Sleep stage ?"), (3600, 1200, "Sleep stage 2"),
    ])
    with pytest.raises(ScoringMismatchError, match=r"scored stages run to 4800 s but the recording lasts 600 s"):
        process_recording(edf, hyp)
    _hypnogram(hyp, [(0, 600, "Sleep stage W"), (600, 6900, "Sleep stage ?")], start="03.10.00")
    with pytest.raises(ScoringMismatchError, match=r"belongs to another recording"):
        process_recording(edf, hyp)


def test_an_edf_shorter_than_an_epoch_is_refused_for_that_even_with_a_scoring(tmp_path: Path) -> None:
    edf = _edf(tmp_path / "short.edf", 20)
    hyp = _hypnogram(tmp_path / "short-Hypnogram.edf", [(0, 30, "Sleep stage W")])
    with pytest.raises(RecordingTooShortError, match=r"short\.edf: recording lasts 20 s, shorter than one 30 s epoch"):
        process_recording(edf, hyp)


def test_the_real_sleep_edf_cassette_hypnogram_fits_its_79500_s_psg(shared_dir: Path) -> None:
    """SC4001: PSG 79500 s; its hypnogram runs to 86400 s, the last 6900 s one 'Sleep stage ?' (the issue's night)."""
    import datetime as dt

    from osf.datasets.io.scoring_formats import read_scoring
    from osf.datasets.preprocess.scoring_checks import check_scoring

    scoring = read_scoring(shared_dir / "fixtures" / "annotations" / "sleep_edf" / "SC4001EC-Hypnogram.edf")
    check = check_scoring(scoring, dt.datetime(1989, 4, 24, 16, 13), 79500.0)
    assert check.problems == [] and any("1.9 h past the recording's end" in w for w in check.warnings)
    late = check_scoring(scoring, dt.datetime(1989, 4, 24, 16, 13), 40000.0)  # cut inside the scored night
    assert any("scored stages run to 79500 s" in p for p in late.problems)

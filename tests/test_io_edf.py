"""EDF reading: native rates, physical values, MNE fallback, and every kind of broken file."""

from __future__ import annotations

from pathlib import Path

import edfio
import numpy as np
import pytest

from osf.datasets.io import (
    DiscontinuousEdfError,
    DuplicateLabelError,
    EdfHeaderError,
    IngestionError,
    MissingChannelError,
    NotEdfError,
    TruncatedEdfError,
    edf_labels,
    read_edf,
    read_edf_header,
)
from osf.datasets.io import edf as edf_module

DURATION_S = 8
RATES = {"C3-M2": 256, "ABD": 10, "SpO2": 1, "ECG": 200}


def _signals(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {lab: rng.uniform(-50, 50, rate * DURATION_S) for lab, rate in RATES.items()}


def write_edf(path: Path, labels: list[str] | None = None, annotations: bool = False, seed: int = 0) -> dict:
    """A small mixed-rate EDF; returns the written physical values by label."""
    data = _signals(seed)
    labels = labels or list(RATES)
    sigs = [
        edfio.EdfSignal(
            data[orig], RATES[orig], label=lab, physical_dimension="uV", physical_range=(-100, 100)
        )
        for lab, orig in zip(labels, RATES)
    ]
    ann = [edfio.EdfAnnotation(1.0, None, "note")] if annotations else ()
    edfio.Edf(sigs, annotations=ann).write(path)
    return {lab: data[orig] for lab, orig in zip(labels, RATES)}


def _patch(path: Path, offset: int, text: str, width: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset : offset + width] = text.ljust(width).encode()
    path.write_bytes(bytes(raw))


@pytest.fixture()
def mixed_edf(tmp_path: Path) -> tuple[Path, dict]:
    path = tmp_path / "night.edf"
    return path, write_edf(path)


def test_reads_only_wanted_signals_at_native_rates(mixed_edf):
    path, written = mixed_edf
    rec = read_edf(path, ["ABD", "C3-M2"])
    assert list(rec.signals) == ["ABD", "C3-M2"]
    assert rec.rates == {"ABD": 10.0, "C3-M2": 256.0}
    assert rec.signals["ABD"].shape == (10 * DURATION_S,) and rec.signals["C3-M2"].shape == (
        256 * DURATION_S,
    )
    assert rec.signals["ABD"].dtype == np.float64
    step = 200 / 65535  # physical range / digital range: the EDF quantisation step
    for lab in ("ABD", "C3-M2"):
        np.testing.assert_allclose(rec.signals[lab], written[lab], atol=step)
    assert rec.units["ABD"] == "uV" and rec.duration_s == DURATION_S and rec.reader == "edfio"
    assert rec.labels == list(RATES) == edf_labels(path)


def test_read_all_and_start_time(mixed_edf):
    path, _ = mixed_edf
    rec = read_edf(path)
    assert list(rec.signals) == list(RATES)
    assert {lab: len(x) for lab, x in rec.signals.items()} == {k: r * DURATION_S for k, r in RATES.items()}
    header = read_edf_header(path)
    assert header.num_records * header.record_duration == DURATION_S and header.file_type == "EDF"


def test_mne_fallback_matches_edfio(mixed_edf, monkeypatch):
    path, _ = mixed_edf
    reference = read_edf(path, ["ECG", "SpO2"])

    def refuse(*args, **kwargs):
        raise ValueError("edfio refuses this file")

    monkeypatch.setattr(edf_module, "_read_with_edfio", refuse)
    rec = read_edf(path, ["ECG", "SpO2"])
    assert rec.reader == "mne"
    for lab in ("ECG", "SpO2"):  # MNE keeps the native rate when reading one channel at a time
        assert rec.signals[lab].shape == reference.signals[lab].shape
        np.testing.assert_allclose(rec.signals[lab], reference.signals[lab], rtol=1e-6, atol=1e-6)


def test_both_readers_failing_is_a_clear_error(mixed_edf, monkeypatch):
    path, _ = mixed_edf

    def refuse(*args, **kwargs):
        raise ValueError("nope")

    monkeypatch.setattr(edf_module, "_read_with_edfio", refuse)
    monkeypatch.setattr(edf_module, "_read_with_mne", refuse)
    with pytest.raises(EdfHeaderError, match="unreadable by edfio"):
        read_edf(path, ["ECG"])


def test_truncated_file(mixed_edf):
    path, _ = mixed_edf
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) - 700])  # cut inside the last data records
    with pytest.raises(TruncatedEdfError, match="truncated") as err:
        read_edf(path, ["ABD"])
    assert str(path) in str(err.value)
    assert isinstance(err.value, IngestionError) and isinstance(err.value, ValueError)


def test_header_record_count_mismatch(mixed_edf):
    path, _ = mixed_edf
    n = read_edf_header(path).num_records
    _patch(path, 236, str(n - 2), 8)  # header claims fewer records than the file holds
    with pytest.raises(
        EdfHeaderError, match=f"header declares {n - 2} data records but the file holds {n}"
    ) as err:
        read_edf(path, ["ABD"])
    assert not isinstance(err.value, TruncatedEdfError)
    _patch(path, 236, str(n + 3), 8)  # ... and more than it holds
    with pytest.raises(TruncatedEdfError, match=f"declares {n + 3} data records"):
        edf_labels(path)


def test_unknown_record_count_is_taken_from_the_file_size(mixed_edf):
    path, _ = mixed_edf
    _patch(path, 236, "-1", 8)  # allowed by the EDF spec while a recording is running
    assert read_edf(path, ["ABD"]).signals["ABD"].shape == (10 * DURATION_S,)


@pytest.mark.parametrize(
    "content, match",
    [
        (b"<?xml version='1.0'?><PSGAnnotation/>" + b" " * 300, "not an EDF/BDF file"),
        (b"0       short", "needs at least 256"),
    ],
)
def test_non_edf_files(tmp_path, content, match):
    path = tmp_path / "x.edf"
    path.write_bytes(content)
    with pytest.raises(NotEdfError, match=match):
        read_edf(path)
    with pytest.raises(NotEdfError, match="does not exist"):
        edf_labels(tmp_path / "missing.edf")


def test_header_size_field_inconsistent(mixed_edf):
    path, _ = mixed_edf
    _patch(path, 184, "512", 8)
    with pytest.raises(EdfHeaderError, match="header size field says 512"):
        read_edf_header(path)


def test_invalid_calibration_of_a_wanted_signal(mixed_edf):
    path, _ = mixed_edf
    ns = len(read_edf_header(path).signals)  # edfio adds an 'EDF Annotations' signal
    offset = 256 + ns * (16 + 80 + 8)  # physical minimum of signal 0
    _patch(path, offset, "100", 8)  # now equal to its physical maximum
    with pytest.raises(EdfHeaderError, match="invalid calibration"):
        read_edf(path, ["C3-M2"])
    assert read_edf(path, ["ABD"]).signals["ABD"].size  # other signals stay readable


def test_duplicated_labels(tmp_path):
    path = tmp_path / "dup.edf"
    write_edf(path, labels=["C3-M2", "ABD", "ABD", "ECG"])
    with pytest.raises(DuplicateLabelError, match="'ABD' occurs 2 times"):
        read_edf(path, ["ABD"])
    with pytest.raises(DuplicateLabelError):
        read_edf(path)  # reading everything needs unique labels too
    assert read_edf(path, ["ECG"]).rates["ECG"] == 200  # a duplicate nobody asks for is harmless
    with pytest.raises(DuplicateLabelError, match="more than once"):
        read_edf(path, ["ECG", "ECG"])


def test_missing_label_lists_available(mixed_edf):
    path, _ = mixed_edf
    with pytest.raises(MissingChannelError, match="no signal labelled 'C4-M1'.*ABD"):
        read_edf(path, ["C4-M1"])


def _edf_plus_d(path: Path, gap: bool) -> None:
    write_edf(path, annotations=True)
    raw = bytearray(path.read_bytes())
    raw[192:197] = b"EDF+D"
    if gap:
        i = raw.find(b"+3\x14\x14")  # time-keeping TAL of data record 3
        assert i > 0
        raw[i : i + 2] = b"+5"  # record 3 now starts 2 s late: a gap
    path.write_bytes(bytes(raw))


def test_edf_plus_d_with_gap_is_refused(tmp_path):
    path = tmp_path / "gappy.edf"
    _edf_plus_d(path, gap=True)
    with pytest.raises(DiscontinuousEdfError, match="data record 3 starts at 5 s instead of 3 s"):
        read_edf(path, ["ABD"])


def test_edf_plus_d_without_gap_is_read(tmp_path):
    path = tmp_path / "contiguous.edf"
    _edf_plus_d(path, gap=False)
    assert read_edf_header(path).variant == "EDF+D"
    rec = read_edf(path, ["ABD"])
    assert rec.signals["ABD"].shape == (10 * DURATION_S,) and "EDF Annotations" not in rec.labels


def test_bdf_is_read_at_native_rates(tmp_path):
    path = tmp_path / "night.bdf"
    eeg = np.sin(np.arange(800) / 10) * 50
    edfio.Bdf(
        [
            edfio.BdfSignal(eeg, 100, label="C3-M2", physical_range=(-100, 100)),
            edfio.BdfSignal(np.arange(8.0) + 90, 1, label="SpO2", physical_range=(0, 100)),
        ]
    ).write(path)
    assert read_edf_header(path).file_type == "BDF"
    rec = read_edf(path)
    assert rec.rates == {"C3-M2": 100.0, "SpO2": 1.0}
    np.testing.assert_allclose(rec.signals["C3-M2"], eeg, atol=200 / 2**24)  # 24-bit quantisation
    np.testing.assert_allclose(rec.signals["SpO2"], np.arange(8.0) + 90, atol=100 / 2**24)

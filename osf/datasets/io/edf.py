"""EDF / EDF+ / BDF reading: only the wanted signals, each at its native sampling rate.

MNE's reader resamples every signal of a mixed-rate file to the highest rate (a 1 Hz SpO2 next
to 256 Hz EEG becomes 256 Hz), which costs memory and time and bakes MNE's interpolation into
the data before our own anti-aliased resampling. edfio memory-maps the data records and decodes
single signals at their own rates, so it is the primary reader (``benchmarks/bench_edf_read.py``
measures both). The header is parsed and validated here first, so that broken files fail with a
message naming the file and the problem instead of edfio's warnings ("Updating header") or
silently truncated data. MNE, one channel at a time (which keeps the native rate), is the fallback
for files edfio refuses (e.g. non-ASCII header fields).
"""

from __future__ import annotations

import datetime as _dt
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from osf.datasets.io.errors import (
    DiscontinuousEdfError,
    DuplicateLabelError,
    EdfHeaderError,
    MissingChannelError,
    NotEdfError,
    TruncatedEdfError,
)

ANNOTATION_LABELS: frozenset[str] = frozenset({"EDF Annotations", "BDF Annotations"})
_EDF_VERSION = b"0       "
_BDF_VERSION = b"\xffBIOSEMI"
_BYTES_PER_SAMPLE = {"EDF": 2, "BDF": 3}  # 16-bit / 24-bit samples
# MNE converts these units (as it spells them: latin-1, case-sensitive) to volts; we return the file's
# physical units, so undo exactly its scaling (mne.io.edf.edf._read_edf_header).
_MNE_MICRO_UNITS = ("\u03bcV", "\u00b5V", "\x83\xcaV", "uV")


def _mne_unit_scale(unit: str) -> float:
    """The factor MNE applied to a signal whose unit it read as ``unit``."""
    return 1e-6 if unit in _MNE_MICRO_UNITS else 1e-3 if unit == "mV" else 1.0


@dataclass(frozen=True)
class EdfSignalHeader:
    """Header fields of one signal."""

    index: int
    label: str
    transducer: str
    unit: str
    physical_min: float
    physical_max: float
    digital_min: int
    digital_max: int
    prefilter: str
    samples_per_record: int

    @property
    def is_annotation(self) -> bool:
        """True for the EDF+/BDF+ annotation (TAL) signal."""
        return self.label in ANNOTATION_LABELS

    def calibration_problem(self) -> str | None:
        """Why the physical/digital ranges cannot turn samples into physical values, or None when they can."""
        if self.physical_min == self.physical_max or self.digital_min >= self.digital_max:
            return (
                f"signal {self.label!r} has an invalid calibration: physical [{self.physical_min}, "
                f"{self.physical_max}], digital [{self.digital_min}, {self.digital_max}]"
            )
        return None


@dataclass(frozen=True)
class EdfHeader:
    """The validated header of an EDF/BDF file."""

    path: Path
    file_type: str  # "EDF" or "BDF"
    variant: str  # "", "EDF+C", "EDF+D", "BDF+C", "BDF+D" (reserved field)
    start_time: _dt.datetime | None
    header_bytes: int
    num_records: int
    record_duration: float
    signals: tuple[EdfSignalHeader, ...]
    notes: tuple[str, ...] = ()  # intact-data repairs, e.g. stray bytes after the last record (dropped)

    @property
    def bytes_per_sample(self) -> int:
        """2 for EDF, 3 for BDF."""
        return _BYTES_PER_SAMPLE[self.file_type]

    @property
    def labels(self) -> list[str]:
        """Labels of the ordinary (non-annotation) signals, in file order."""
        return [s.label for s in self.signals if not s.is_annotation]

    @property
    def duration_s(self) -> float:
        """Recorded duration: data records x record duration."""
        return self.num_records * self.record_duration

    def rate(self, sig: EdfSignalHeader) -> float:
        """Sampling rate of a signal in Hz."""
        return sig.samples_per_record / self.record_duration

    def signal(self, label: str) -> EdfSignalHeader:
        """The header of the ordinary signal with this label (must be unique)."""
        hits = [s for s in self.signals if s.label == label and not s.is_annotation]
        if not hits:
            raise MissingChannelError(
                self.path, f"no signal labelled {label!r}; labels in the file: {self.labels}"
            )
        if len(hits) > 1:
            raise DuplicateLabelError(
                self.path, f"label {label!r} occurs {len(hits)} times (signals {[s.index for s in hits]})"
            )
        return hits[0]


@dataclass
class EdfRecording:
    """Signals read from one EDF/BDF file, in physical units at their native rates."""

    path: Path
    signals: dict[str, np.ndarray]  # label -> float64 [n_samples]
    rates: dict[str, float]  # label -> Hz
    units: dict[str, str]  # label -> physical dimension as written in the header
    duration_s: float
    start_time: _dt.datetime | None
    labels: list[str] = field(default_factory=list)  # every ordinary label in the file
    prefilters: dict[str, str] = field(default_factory=dict)
    reader: str = "edfio"  # which library decoded the samples: "edfio" or "mne"
    notes: list[str] = field(default_factory=list)  # what was tolerated (EdfHeader.notes)


class EdfRepairWarning(UserWarning):
    """Intact data read past a harmless defect (stray bytes after the last data record), as MNE does."""


def _text(raw: bytes) -> str:
    """A header field as text: UTF-8 when it decodes as such (vendors write labels like "EEG C3–M2"), else latin-1.

    The standard says ASCII, which both decode alike; latin-1 never fails, so odd vendor bytes do not
    hide the real problem. A multi-byte character cut by the field width is dropped, not garbled.
    """
    try:
        return raw.decode("utf-8").strip()
    except UnicodeDecodeError as err:
        if err.reason == "unexpected end of data" and err.start >= len(raw.rstrip()) - 3:
            return raw[: err.start].decode("utf-8", errors="replace").strip()
        return raw.decode("latin-1").strip()


def _number(path: Path, raw: bytes, what: str, kind: type = float) -> float | int:
    text = _text(raw)
    try:
        return kind(float(text)) if kind is int else float(text)
    except ValueError:
        raise EdfHeaderError(path, f"header field {what} is not a number: {text!r}") from None


def _start_time(date_raw: bytes, time_raw: bytes) -> _dt.datetime | None:
    # EDF spec: dd.mm.yy, hh.mm.ss, years 85-99 are 19xx. Anonymised files carry junk here: no error.
    try:
        d, m, y = (int(x) for x in _text(date_raw).split("."))
        hh, mm, ss = (int(x) for x in _text(time_raw).split("."))
        return _dt.datetime(1900 + y if y >= 85 else 2000 + y, m, d, hh, mm, ss)
    except ValueError:
        return None


@dataclass(frozen=True)
class _FixedHeader:
    """The 256-byte fixed part of an EDF/BDF header, parsed."""

    raw: bytes
    file_type: str
    header_bytes: int
    variant: str
    num_records: int
    record_duration: float
    num_signals: int


# Signal header fields are stored field by field for all signals (EDF spec): widths in bytes.
_SIGNAL_FIELD_WIDTHS = (16, 80, 8, 8, 8, 8, 8, 80, 8, 32)


def read_edf_header(path: str | Path) -> EdfHeader:
    """Parse and validate an EDF/BDF header against the file size (no signal data is read)."""
    path = Path(path)
    if not path.is_file():
        raise NotEdfError(path, "file does not exist")
    size = path.stat().st_size
    with path.open("rb") as f:
        fixed = _read_fixed_header(path, f.read(256), size)
        rest = f.read(256 * fixed.num_signals)
    if len(rest) < 256 * fixed.num_signals:
        raise TruncatedEdfError(
            path, f"file ends inside the signal headers ({size} bytes, header is {fixed.header_bytes})"
        )
    signals = _signal_headers(path, rest, fixed.num_signals)
    _check_signals(path, signals, fixed.record_duration)
    num_records, notes = _checked_record_count(path, fixed, signals, size)
    return EdfHeader(
        path=path,
        file_type=fixed.file_type,
        variant=fixed.variant if fixed.variant.startswith(("EDF+", "BDF+")) else "",
        start_time=_start_time(fixed.raw[168:176], fixed.raw[176:184]),
        header_bytes=fixed.header_bytes,
        num_records=num_records,
        record_duration=fixed.record_duration,
        signals=tuple(signals),
        notes=notes,
    )


def _read_fixed_header(path: Path, fixed: bytes, size: int) -> _FixedHeader:
    """Version, sizes and counts of the fixed header, checked for consistency."""
    if len(fixed) < 256:
        raise NotEdfError(path, f"only {size} bytes; an EDF/BDF header alone needs at least 256")
    version = fixed[:8]
    file_type = {_EDF_VERSION: "EDF", _BDF_VERSION: "BDF"}.get(version)
    if file_type is None:
        raise NotEdfError(path, f"not an EDF/BDF file: version field is {version!r}, expected b'0       '")
    header_bytes = _number(path, fixed[184:192], "'number of bytes in header'", int)
    variant = _text(fixed[192:236])[:5]
    num_records = _number(path, fixed[236:244], "'number of data records'", int)
    record_duration = _number(path, fixed[244:252], "'duration of a data record'")
    ns = _number(path, fixed[252:256], "'number of signals'", int)
    if ns <= 0:
        raise EdfHeaderError(path, f"header declares {ns} signals")
    if header_bytes != 256 * (ns + 1):
        raise EdfHeaderError(path, f"header size field says {header_bytes} bytes but {ns} signals need {256 * (ns + 1)}")
    return _FixedHeader(fixed, file_type, header_bytes, variant, num_records, record_duration, ns)


def _signal_headers(path: Path, rest: bytes, ns: int) -> list[EdfSignalHeader]:
    """The per-signal headers (``ns`` x 256 bytes, stored field by field)."""
    offsets = np.concatenate([[0], np.cumsum(_SIGNAL_FIELD_WIDTHS)[:-1]])
    cols = [
        [rest[int(o) * ns + i * w : int(o) * ns + (i + 1) * w] for i in range(ns)]
        for o, w in zip(offsets, _SIGNAL_FIELD_WIDTHS)
    ]
    return [
        EdfSignalHeader(
            index=i,
            label=_text(cols[0][i]),
            transducer=_text(cols[1][i]),
            unit=_text(cols[2][i]),
            physical_min=_number(path, cols[3][i], f"'physical minimum' of signal {i}"),
            physical_max=_number(path, cols[4][i], f"'physical maximum' of signal {i}"),
            digital_min=_number(path, cols[5][i], f"'digital minimum' of signal {i}", int),
            digital_max=_number(path, cols[6][i], f"'digital maximum' of signal {i}", int),
            prefilter=_text(cols[7][i]),
            samples_per_record=_number(path, cols[8][i], f"'samples per data record' of signal {i}", int),
        )
        for i in range(ns)
    ]


def _check_signals(path: Path, signals: list[EdfSignalHeader], record_duration: float) -> None:
    bad = [s.label for s in signals if s.samples_per_record <= 0]
    if bad:
        raise EdfHeaderError(path, f"signals {bad} declare no samples per data record")
    only_annotations = all(s.is_annotation for s in signals)
    if record_duration < 0 or (record_duration == 0 and not only_annotations):
        raise EdfHeaderError(path, f"data record duration is {record_duration} s")


def _checked_record_count(
    path: Path, fixed: _FixedHeader, signals: list[EdfSignalHeader], size: int
) -> tuple[int, tuple[str, ...]]:
    """The number of data records, checked against the file size (-1, "unknown", takes the file's count).

    Tolerated like MNE and edfio do, with a note: fewer bytes than one data record after the last
    declared record (a stray byte, a partial record the recorder never finished); they are dropped.
    Refused: fewer complete records than declared (truncated), more complete records than declared.
    """
    record_bytes = _BYTES_PER_SAMPLE[fixed.file_type] * sum(s.samples_per_record for s in signals)
    data_bytes = size - fixed.header_bytes
    complete, leftover = divmod(data_bytes, record_bytes)
    num_records = complete if fixed.num_records == -1 else fixed.num_records  # -1: allowed while recording
    if complete < num_records:
        raise TruncatedEdfError(
            path,
            f"truncated: header declares {num_records} data records ({num_records * fixed.record_duration:g} s) "
            f"but the file holds only {complete} complete records"
            + (f" and {leftover} stray bytes" if leftover else ""),
        )
    if complete > num_records:
        raise EdfHeaderError(
            path,
            f"header declares {num_records} data records but the file holds {complete}"
            + (f" plus {leftover} stray bytes" if leftover else "")
            + f" ({data_bytes} data bytes, {record_bytes} per record)",
        )
    if num_records == 0:
        raise EdfHeaderError(path, "the file holds no data records")
    notes = ()
    if leftover:
        notes = (
            f"{leftover} stray bytes after the last of its {num_records} data records (less than one "
            f"{record_bytes}-byte record) were dropped",
        )
    return num_records, notes


def edf_labels(path: str | Path) -> list[str]:
    """Labels of the ordinary signals of an EDF/BDF file, read from the header only."""
    return read_edf_header(path).labels


def _record_onsets(header: EdfHeader) -> np.ndarray:
    """Onset (s) of every data record from the first TAL of each record's annotation signal."""
    annot = next(s for s in header.signals if s.is_annotation)
    bps = header.bytes_per_sample
    record_len = bps * sum(s.samples_per_record for s in header.signals)
    offset = bps * sum(s.samples_per_record for s in header.signals[: annot.index])
    raw = np.memmap(header.path, np.uint8, "r", header.header_bytes, (header.num_records, record_len))
    block = raw[:, offset : offset + bps * annot.samples_per_record]
    onsets = np.empty(header.num_records)
    for r in range(header.num_records):
        tal = bytes(block[r]).split(b"\x14", 1)[0]
        try:
            onsets[r] = float(tal.decode("latin-1"))
        except ValueError:
            raise EdfHeaderError(
                header.path, f"data record {r} has no time-keeping annotation ({tal[:20]!r})"
            ) from None
    return onsets


def check_continuous(header: EdfHeader) -> None:
    """Raise DiscontinuousEdfError if an EDF+D/BDF+D file has gaps between its data records."""
    if not header.variant.endswith("+D") or not any(s.is_annotation for s in header.signals):
        return
    onsets = _record_onsets(header)
    expected = onsets[0] + header.record_duration * np.arange(len(onsets))
    gaps = np.flatnonzero(np.abs(onsets - expected) > 1e-6)
    if gaps.size:
        r = int(gaps[0])
        raise DiscontinuousEdfError(
            header.path,
            f"{header.variant} file with gaps: data record {r} starts at {onsets[r]:g} s instead of "
            f"{expected[r]:g} s ({gaps.size} of {len(onsets)} records off the continuous grid); OSF reads "
            "only continuous recordings, export the segments as separate EDF+C files",
        )


def _read_with_edfio(header: EdfHeader, wanted: list[str]) -> dict[str, np.ndarray]:
    import edfio

    reader = edfio.read_bdf if header.file_type == "BDF" else edfio.read_edf
    with warnings.catch_warnings():
        # Sizes were validated above, so edfio's "Updating header" warnings cannot fire; silence the rest.
        warnings.simplefilter("ignore")
        rec = reader(header.path)
    ordinary = [s for s in header.signals if not s.is_annotation]
    if len(rec.signals) != len(ordinary):
        raise EdfHeaderError(
            header.path, f"edfio sees {len(rec.signals)} signals, the header {len(ordinary)}"
        )
    by_label = {}
    for sig_header, sig in zip(ordinary, rec.signals):
        if sig_header.label in wanted:
            by_label[sig_header.label] = np.asarray(sig.data, dtype=np.float64)
    return by_label


def _read_with_mne(header: EdfHeader, wanted: list[str]) -> dict[str, np.ndarray]:
    import mne

    out = {}
    for label in wanted:
        # One channel per call: MNE would resample a mixed-rate selection to the highest rate.
        # MNE decodes header text as latin-1; a UTF-8 label has that spelling there.
        mne_label = label.encode("utf-8").decode("latin-1")
        raw = (
            mne.io.read_raw_edf(header.path, include=[mne_label], preload=True, verbose="error")
            if header.file_type == "EDF"
            else mne.io.read_raw_bdf(header.path, include=[mne_label], preload=True, verbose="error")
        )
        unit = raw._orig_units.get(raw.ch_names[0], "")
        out[label] = raw.get_data()[0].astype(np.float64) / _mne_unit_scale(unit)
    return out


def read_edf(path: str | Path, wanted_labels: list[str] | tuple[str, ...] | None = None) -> EdfRecording:
    """Read the wanted signals (all ordinary ones if None) in physical units at native rates.

    Raises (all :class:`~osf.datasets.io.errors.IngestionError`): ``NotEdfError`` for a file that
    is not EDF/BDF, ``TruncatedEdfError`` when the file holds fewer records than its header
    declares, ``EdfHeaderError`` for other header/data mismatches (stray bytes, less than one data
    record, after the last record are dropped with an ``EdfRepairWarning`` and kept in ``notes``) and invalid calibration of a
    wanted signal, ``MissingChannelError`` / ``DuplicateLabelError`` for a wanted label that is
    absent or not unique. EDF+D: a file whose records are contiguous (some vendors write EDF+D
    for continuous data) is read like EDF+C; one with gaps is refused with
    ``DiscontinuousEdfError``, because every later step assumes that sample i lies at i / rate
    seconds from the start, which is what the scoring's epoch grid is aligned to.
    """
    header = read_edf_header(path)
    wanted = list(header.labels if wanted_labels is None else wanted_labels)
    dup = [lab for lab, n in Counter(wanted).items() if n > 1]
    if dup:
        raise DuplicateLabelError(header.path, f"labels asked for more than once: {dup}")
    sigs = [header.signal(lab) for lab in wanted]  # raises for missing / duplicated labels
    for s in sigs:
        problem = s.calibration_problem()
        if problem:
            raise EdfHeaderError(header.path, problem)
    check_continuous(header)
    for note in header.notes:
        warnings.warn(f"{header.path}: {note}", EdfRepairWarning, stacklevel=2)
    try:
        data, reader = _read_with_edfio(header, wanted), "edfio"
    except Exception as edfio_err:  # noqa: BLE001 - any edfio refusal means: try MNE, report both if it fails too
        try:
            data, reader = _read_with_mne(header, wanted), "mne"
        except Exception as mne_err:
            raise EdfHeaderError(
                header.path, f"unreadable by edfio ({edfio_err}) and by MNE ({mne_err})"
            ) from mne_err
    rates = {s.label: header.rate(s) for s in sigs}
    for s in sigs:
        expected = s.samples_per_record * header.num_records
        if data[s.label].shape != (expected,):
            raise EdfHeaderError(
                header.path, f"signal {s.label!r}: read {data[s.label].shape[0]} samples, expected {expected}"
            )
    return EdfRecording(
        path=header.path,
        signals={lab: data[lab] for lab in wanted},
        rates=rates,
        units={s.label: s.unit for s in sigs},
        duration_s=header.duration_s,
        start_time=header.start_time,
        labels=header.labels,
        prefilters={s.label: s.prefilter for s in sigs},
        reader=reader,
        notes=list(header.notes),
    )

"""``process_recording``: one EDF (+ scoring) -> normalised 30 s epochs in the 12-channel contract.

Steps, in order (each documented in its module):
0. the scoring is checked against the recording (``scoring_checks``): a clear mismatch is refused
   unless accepted; the rest is warned about;
1. resolve EDF labels to canonical channels (registry aliases and derivations, or a user channel
   map that overrides them); a channel whose header cannot calibrate it is absent; read only the
   others, each at its native rate;
2. per channel: dead epochs (stuck at one value, on the rails) found on the raw samples
   (``raw_checks``); a channel dead all night is absent; then (``channels``) NaN/inf samples replaced
   by the median and flagged; bipolar derivations; EMG band-pass 10-30 Hz at the source rate
   (``filters``); anti-aliased polyphase resampling to 64 Hz (``resample``);
3. robust per-recording normalisation ``(x - median) / IQR`` over the live epochs (``normalise``);
4. 30 s epochs from the EDF start, trailing partial epoch dropped (``epoching``);
5. per-epoch quality flags and channel-present mask (``quality``), then clip to [-6, 6] and zero
   every absent / masked channel-epoch and every NaN/inf-fed sample;
6. labels from the scoring on the same epoch grid (-1 where the scoring does not reach).

A channel the recording lacks is kept absent (zeros, mask False); the recording is refused
(``NoUsableSignalError``) only when no channel carries signal (dead ones included), or when it is
shorter than one epoch (``RecordingTooShortError``). Warnings for the console are in ``qc["warnings"]``. Channels the scoring or the registry cannot place are reported in
``RecordingEpochs.qc``, which the store keeps per recording in its manifest.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from osf import config
from osf.datasets.io.channels import ChannelResolution, resolve_channels
from osf.datasets.io.edf import EdfHeader, EdfRepairWarning, read_edf, read_edf_header
from osf.datasets.io.errors import IngestionError, ScoringMismatchError
from osf.datasets.io.scoring import Scoring
from osf.datasets.io.scoring_formats import read_scoring
from osf.datasets.preprocess import (
    epoching,
    filters,
    normalise,
    quality,
    raw_checks,
    resample,
    scoring_checks,
)
from osf.datasets.preprocess.channels import (
    CanonicalSignal,
    build_canonical_signal,
    describe_source,
    source_labels,
)
from osf.datasets.recording import RecordingEpochs

PIPELINE_VERSION = "1.1"  # 1.1: raw-signal dead-channel checks, scale from live epochs only


class NoUsableSignalError(IngestionError):
    """The recording has no canonical channel that carries signal (nothing to keep)."""


class RecordingTooShortError(IngestionError):
    """The recording is shorter than one 30 s epoch."""


def pipeline_settings() -> dict[str, Any]:
    """Version and settings of the preprocessing, recorded with every recording in the store."""
    return {
        "name": "osf.datasets.preprocess",
        "version": PIPELINE_VERSION,
        "channels": list(config.CHANNELS),
        "sample_rate": config.SAMPLE_RATE,
        "epoch_sec": config.EPOCH_SEC,
        "resampling": "scipy.signal.resample_poly (Kaiser-windowed FIR anti-alias), rational ratio, padtype=line",
        "emg_filter": {
            "channels": list(config.EMG_CHANNELS),
            "band_hz": list(filters.EMG_BAND_HZ),
            "design": f"butterworth order {filters.EMG_FILTER_ORDER}, zero-phase (sosfiltfilt), at the source rate",
        },
        "normalisation": "per recording and channel: (x - median) / IQR over finite samples of live epochs (std if IQR is 0)",
        "raw_checks": {
            "stuck_run_s": raw_checks.STUCK_RUN_S,
            "dead_epoch_frac": raw_checks.DEAD_EPOCH_FRAC,
            "rails": "samples within half a digital step of the header's physical min/max, or beyond",
        },
        "clip": [-normalise.CLIP_VALUE, normalise.CLIP_VALUE],
        "nonfinite": "NaN/inf source samples set to the median before filtering, output samples they feed set to 0, epoch flagged",
        "quality": {
            "flat_mad": quality.FLAT_MAD,
            "disconnected_clip_frac": quality.DISCONNECTED_CLIP_FRAC,
            "disconnected_level": quality.DISCONNECTED_LEVEL,
            "mostly_nonfinite": quality.MOSTLY_NONFINITE,
        },
        "epoching": "epoch k = [30k, 30k+30) s from the EDF start; trailing partial epoch dropped",
        "channel_substitutions": {
            spec.name: [asdict(sub) for sub in spec.substitutions] for spec in config.DATASETS.values() if spec.substitutions
        },
    }


def process_recording(
    edf_path: str | os.PathLike,
    scoring_path: str | os.PathLike | None = None,
    dataset: str = "generic",
    channel_map: Mapping[str, Any] | str | os.PathLike | None = None,
    accept_scoring_mismatch: bool = False,
) -> RecordingEpochs:
    """Preprocess one EDF (+ optional scoring file) into ``RecordingEpochs`` (see the module docstring).

    ``channel_map`` (dict, JSON text or JSON file: canonical channel -> EDF label or [a, b] for
    a - b) replaces the dataset registry's aliases; channels it leaves out are absent. Raises an
    ``IngestionError`` subclass naming the file for unreadable input or when nothing is usable;
    ``ScoringMismatchError`` for a scoring that does not fit the recording (``scoring_checks``)
    unless ``accept_scoring_mismatch``. Every warning is also in ``qc["warnings"]``.
    """
    edf_path = Path(edf_path)
    # Header, then scoring (small; a broken one fails before the expensive signal read). The header's
    # start time anchors scoring files whose onsets are clock times (STAGES CSV).
    header = read_edf_header(edf_path)
    _check_long_enough(edf_path, header.duration_s)  # before the scoring: "no usable stage" would hide why
    labels = header.labels
    scoring, scoring_qc = None, None
    if scoring_path is not None:
        scoring = read_scoring(scoring_path, recording_start=header.start_time)
        scoring_qc = _checked_scoring(scoring, header, accept_scoring_mismatch)
    rates = {sig.label: header.rate(sig) for sig in header.signals if not sig.is_annotation}
    resolution = resolve_channels(labels, dataset, channel_map, path=edf_path, rates=rates)
    if not resolution.present:
        raise NoUsableSignalError(
            edf_path,
            f"none of the {config.NUM_CHANNELS} model channels could be found among the EDF labels {labels} "
            f"(dataset {dataset!r}); pass a channel map naming the labels to use",
        )
    sources = {name: src.labels for name, src in resolution.sources.items() if src.present}
    sources, bad_headers = _drop_uncalibrated(header, sources)
    if not sources:
        raise NoUsableSignalError(
            edf_path, "no model channel has a usable header: " + "; ".join(f"{c}: {w}" for c, w in bad_headers.items())
        )
    needed = sorted({label for src in sources.values() for label in source_labels(src)}, key=labels.index)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EdfRepairWarning)  # kept in the QC warnings below
        recording = read_edf(edf_path, needed)
    calibrations = {
        label: raw_checks.Calibration(s.physical_min, s.physical_max, s.digital_min, s.digital_max)
        for label in needed
        for s in (header.signal(label),)
    }
    epochs = epochs_from_signals(
        recording.signals, recording.rates, recording.duration_s, sources, scoring=scoring, source_path=edf_path,
        calibrations=calibrations,
    )
    epochs.qc.update(_resolution_qc(resolution))
    epochs.qc["bad_header_channels"] = bad_headers
    epochs.qc["warnings"] = [f"{edf_path}: channel {c} is absent: {w}" for c, w in bad_headers.items()] + epochs.qc["warnings"]
    epochs.qc["reader"] = recording.reader
    epochs.qc["edf_notes"] = list(recording.notes)
    epochs.qc["warnings"] += [f"{edf_path}: {note}" for note in recording.notes]
    if scoring is not None:
        epochs.qc["scoring_path"] = os.fspath(scoring_path)
        epochs.qc.update(scoring_qc)
        if scoring_checks.drop_unusable_labels(epochs.labels, scoring):
            epochs.qc["scoring"]["labelled"] = False
        epochs.qc["warnings"] += epochs.qc["scoring_warnings"]
    return epochs


def _checked_scoring(scoring: Scoring, header: EdfHeader, accept_mismatch: bool) -> dict[str, Any]:
    """Check the scoring against the recording (``scoring_checks``): raise for problems unless accepted."""
    check = scoring_checks.check_scoring(scoring, header.start_time, header.duration_s)
    if check.problems and not accept_mismatch:
        raise ScoringMismatchError(
            scoring.source,
            f"does not fit the recording {header.path}: {'; '.join(check.problems)} (pass --accept_scoring_mismatch "
            "to ingest it anyway, with unusable labels left unknown)",
        )
    notes = [f"{scoring.source}: {p} (accepted)" for p in check.problems]
    notes += [f"{scoring.source}: {w}" for w in check.warnings]
    return {"scoring_problems": list(check.problems), "scoring_warnings": notes}


def _drop_uncalibrated(
    header: EdfHeader, sources: Mapping[str, tuple[str, ...]]
) -> tuple[dict[str, tuple[str, ...]], dict[str, str]]:
    """Sources whose labels all have a usable calibration, and canonical channel -> why for the others."""
    kept, bad = {}, {}
    for name, src in sources.items():
        problems = [p for label in source_labels(src) if (p := header.signal(label).calibration_problem())]
        if problems:
            bad[name] = "; ".join(problems)
        else:
            kept[name] = src
    return kept, bad


def _resolution_qc(resolution: ChannelResolution) -> dict[str, Any]:
    return {
        "channel_map": resolution.as_dict(),
        "channel_rules": {c: s.rule for c, s in resolution.sources.items() if s.present},
        "derived_channels": {c: describe_source(s.labels) for c, s in resolution.sources.items() if s.kind == "derived"},
        "missing_channels": resolution.missing,
        "unused_labels": list(resolution.unused_labels),
        "unused_label_reasons": dict(resolution.unused_reasons),
        "substitutions": resolution.substitutions,
        "refused_substitutions": resolution.refused_substitutions,
    }


def _raw_flags(
    source: str | Sequence[str],
    signals: Mapping[str, np.ndarray],
    rates: Mapping[str, float],
    n_epochs: int,
    calibrations: Mapping[str, raw_checks.Calibration],
) -> raw_checks.RawEpochFlags:
    """Dead epochs of a canonical channel: an epoch is dead when any label it is built from is."""
    flags = [
        raw_checks.raw_epoch_flags(signals[label], rates[label], n_epochs, calibrations.get(label))
        for label in source_labels(source)
    ]
    out = flags[0]
    for f in flags[1:]:
        out = out | f
    return out


@dataclass
class SignalQC:
    """QC record of the signal pipeline for one recording; ``to_dict`` is the ``RecordingEpochs.qc`` JSON."""

    source_rates: dict[str, dict[str, float]] = field(default_factory=dict)
    resampling: dict[str, str] = field(default_factory=dict)
    filters: dict[str, str] = field(default_factory=dict)
    normalisation: dict[str, dict[str, Any]] = field(default_factory=dict)
    nonfinite_source_samples: dict[str, int] = field(default_factory=dict)
    flat_channels: list[str] = field(default_factory=list)
    dead_channels: dict[str, str] = field(default_factory=dict)  # channel -> why, for channels dead all night
    dead_epochs: dict[str, dict[str, int]] = field(default_factory=dict)  # channel -> {"stuck": n, "railed": n}
    warnings: list[str] = field(default_factory=list)
    scoring: dict[str, Any] | None = None  # epoching.align_scoring's report; None without a scoring file
    unknown_event_names: dict[str, int] | None = None  # only with a scoring file
    n_epochs: int = 0
    duration_s: float = 0.0
    dropped_tail_s: float = 0.0
    present_channels: list[str] = field(default_factory=list)
    epochs_present: dict[str, int] = field(default_factory=dict)
    epochs_flagged: dict[str, dict[str, int]] = field(default_factory=dict)
    clipped_frac: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``unknown_event_names`` only when there was a scoring file)."""
        out = asdict(self)
        if self.unknown_event_names is None:
            del out["unknown_event_names"]
        return out

    def note_channel(self, name: str, sig: CanonicalSignal, scale: normalise.RobustScale) -> None:
        """What building and scaling channel ``name`` did."""
        self.source_rates[name] = sig.source_rates
        self.resampling[name] = sig.resampling
        if sig.filter is not None:
            self.filters[name] = sig.filter
        self.normalisation[name] = scale.as_dict()
        if sig.nonfinite_source_samples:
            self.nonfinite_source_samples[name] = sig.nonfinite_source_samples

    def note_epochs(self, duration_s: float, present: np.ndarray, q: quality.EpochQuality) -> None:
        """Per-channel counts of the epochs kept and flagged."""
        n_epochs = q.channel_mask.shape[0]
        names = list(config.CHANNELS)
        self.n_epochs, self.duration_s = n_epochs, float(duration_s)
        self.dropped_tail_s = float(duration_s - n_epochs * config.EPOCH_SEC)
        self.present_channels = [n for n, p in zip(names, present) if p]
        self.epochs_present = {n: int(q.channel_mask[:, i].sum()) for i, n in enumerate(names) if present[i]}
        self.epochs_flagged = {
            flag: {n: int(f[:, i].sum()) for i, n in enumerate(names) if f[:, i].any()}
            for flag, f in (("flat", q.flat), ("nan", q.nan), ("disconnected", q.disconnected))
        }
        self.clipped_frac = {n: float(q.clipped_frac[:, i].mean()) for i, n in enumerate(names) if present[i]}


@dataclass
class _EpochArrays:
    """The recording being assembled: normalised epochs and per-sample / per-epoch flags."""

    epochs: np.ndarray  # float32 [n, 12, 1920]
    nonfinite: np.ndarray  # bool [n, 12, 1920]
    present: np.ndarray  # bool [12]
    stuck: np.ndarray  # bool [n, 12]
    railed: np.ndarray  # bool [n, 12]

    @classmethod
    def zeros(cls, n_epochs: int) -> _EpochArrays:
        shape = (n_epochs, config.NUM_CHANNELS, config.EPOCH_SAMPLES)
        flags = (n_epochs, config.NUM_CHANNELS)
        return cls(np.zeros(shape, dtype=np.float32), np.zeros(shape, dtype=bool),
                   np.zeros(config.NUM_CHANNELS, dtype=bool), np.zeros(flags, dtype=bool), np.zeros(flags, dtype=bool))

    @property
    def n_epochs(self) -> int:
        return int(self.epochs.shape[0])


def epochs_from_signals(
    signals: Mapping[str, np.ndarray],
    rates: Mapping[str, float],
    duration_s: float,
    sources: Mapping[str, str | Sequence[str]],
    scoring: Scoring | None = None,
    source_path: str | os.PathLike | None = None,
    calibrations: Mapping[str, raw_checks.Calibration] | None = None,
) -> RecordingEpochs:
    """The signal pipeline on signals already in memory (label -> samples at ``rates[label]`` Hz).

    ``sources`` maps canonical channels to one label or a pair ``(a, b)`` for ``a - b``; canonical
    channels not in it are absent. ``duration_s`` is the recording length (EDF records x duration).
    ``calibrations`` (label -> header ranges) enables the rail check; constant runs are found without.
    """
    where = source_path if source_path is not None else "<signals>"
    arrays = _EpochArrays.zeros(_count_epochs(where, signals, rates, duration_s, sources))
    qc = SignalQC()
    for name, src in sources.items():  # one channel at a time keeps the peak memory low
        _add_channel(arrays, qc, name, src, signals, rates, calibrations or {}, where)
    q = quality.epoch_quality(arrays.epochs, arrays.nonfinite, arrays.present, arrays.stuck, arrays.railed)
    if not q.channel_mask.any():
        dead = "; ".join(f"{c}: {why}" for c, why in qc.dead_channels.items()) or "none"
        raise NoUsableSignalError(
            where,
            f"no channel carries usable signal, so the night is refused (channels found: {sorted(sources)}; "
            f"dead all night: {dead}; flat all night: {qc.flat_channels or 'none'}; the others flat, "
            "stuck, railed, disconnected or NaN in every epoch)",
        )
    epochs = arrays.epochs
    np.clip(epochs, -normalise.CLIP_VALUE, normalise.CLIP_VALUE, out=epochs)
    epochs[arrays.nonfinite] = 0.0
    epochs[~q.channel_mask] = 0.0
    labels = _epoch_labels(scoring, arrays.n_epochs, qc)
    qc.note_epochs(duration_s, arrays.present, q)
    return RecordingEpochs(
        signals=epochs,
        channel_mask=q.channel_mask,
        labels=labels,
        quality=q.columns,
        qc=qc.to_dict(),
        source_path=None if source_path is None else os.fspath(source_path),
        duration_s=float(duration_s),
    )


def _check_long_enough(where: Any, duration_s: float) -> int:
    """Whole epochs in ``duration_s``; refuses a recording shorter than one epoch."""
    n_epochs = int(np.floor(duration_s / config.EPOCH_SEC + 1e-9))
    if n_epochs < 1:
        raise RecordingTooShortError(where, f"recording lasts {duration_s:g} s, shorter than one {config.EPOCH_SEC} s epoch")
    return n_epochs


def _count_epochs(
    where: Any,
    signals: Mapping[str, np.ndarray],
    rates: Mapping[str, float],
    duration_s: float,
    sources: Mapping[str, str | Sequence[str]],
) -> int:
    """Whole 30 s epochs of the recording that every source signal covers; refuses fewer than one."""
    n_epochs = _check_long_enough(where, duration_s)
    unknown = sorted(set(sources) - set(config.CHANNELS))
    if unknown:
        raise ValueError(f"{where}: unknown canonical channel(s) {unknown}")
    for name, src in sources.items():  # a signal shorter than the header duration limits the epochs
        for label in source_labels(src):
            if label not in signals or label not in rates:
                raise ValueError(f"{where}: {name} needs signal {label!r}, which was not read")
            up, down = resample.resampling_ratio(rates[label])
            n_epochs = min(n_epochs, epoching.count_epochs(len(signals[label]) * up // down))
    if n_epochs < 1:
        raise RecordingTooShortError(where, "a channel holds less than one epoch of samples")
    return n_epochs


def _add_channel(
    arrays: _EpochArrays,
    qc: SignalQC,
    name: str,
    src: str | Sequence[str],
    signals: Mapping[str, np.ndarray],
    rates: Mapping[str, float],
    calibrations: Mapping[str, raw_checks.Calibration],
    where: Any,
) -> None:
    """Dead-epoch checks, derivation, filtering, resampling and scaling of one canonical channel."""
    i, n_epochs = config.CHANNEL_INDEX[name], arrays.n_epochs
    # Dead epochs first, on the raw samples at their native rate (raw_checks module docstring).
    flags = _raw_flags(src, signals, rates, n_epochs, calibrations)
    arrays.stuck[:, i], arrays.railed[:, i] = flags.stuck, flags.railed
    if not _note_dead_epochs(qc, name, src, flags, where):
        return
    sig = build_canonical_signal(name, src, signals, rates)
    n_samples = n_epochs * config.EPOCH_SAMPLES
    data, bad = sig.data[:n_samples], sig.nonfinite[:n_samples]
    # Scale from the live epochs only: dead stretches would shrink the IQR and inflate what is left.
    live = np.repeat(~flags.dead, config.EPOCH_SAMPLES)
    scale = normalise.robust_scale(data, valid=~bad & live)
    qc.note_channel(name, sig, scale)
    if scale.method == "flat":  # constant (or entirely NaN) all night: nothing to learn from it
        qc.flat_channels.append(name)
        return
    arrays.present[i] = True
    arrays.epochs[:, i, :] = normalise.apply_scale(data, scale).reshape(n_epochs, config.EPOCH_SAMPLES)
    arrays.nonfinite[:, i, :] = bad.reshape(n_epochs, config.EPOCH_SAMPLES)


def _note_dead_epochs(
    qc: SignalQC, name: str, src: str | Sequence[str], flags: raw_checks.RawEpochFlags, where: Any
) -> bool:
    """Record a channel's dead epochs; False when it is dead all night (then it is absent)."""
    if flags.dead.any():
        qc.dead_epochs[name] = {"stuck": int(flags.stuck.sum()), "railed": int(flags.railed.sum())}
    if flags.dead.all():
        qc.dead_channels[name] = raw_checks.describe_dead(flags)
        if flags.stuck.all():  # constant all night: also what "flat_channels" has always listed
            qc.flat_channels.append(name)
        qc.warnings.append(f"{where}: channel {name} ({describe_source(src)}) is dead: {qc.dead_channels[name]}")
        return False
    if flags.dead.mean() > 0.5:
        qc.warnings.append(
            f"{where}: channel {name} ({describe_source(src)}) is stuck or railed in {int(flags.dead.sum())} "
            f"of {len(flags.dead)} epochs (masked there)"
        )
    return True


def _epoch_labels(scoring: Scoring | None, n_epochs: int, qc: SignalQC) -> dict[str, np.ndarray]:
    """Labels on the epoch grid (all unknown without a scoring), noting the alignment in ``qc``."""
    if scoring is None:
        return epoching.unknown_labels(n_epochs)
    labels, qc.scoring = epoching.align_scoring(scoring, n_epochs)
    qc.scoring["labelled"] = bool((labels["stage"] >= 0).any())
    qc.unknown_event_names = dict(scoring.unknown_event_names)
    return labels

"""``process_recording``: one EDF (+ scoring) -> normalised 30 s epochs in the 12-channel contract.

Steps, in order (each documented in its module):
1. resolve EDF labels to canonical channels (registry aliases and derivations, or a user channel
   map that overrides them) and read only those signals, each at its native rate;
2. per channel (``channels``): NaN/inf samples replaced by the median and flagged; bipolar
   derivations; EMG band-pass 10-30 Hz at the source rate (``filters``); anti-aliased polyphase
   resampling to 64 Hz (``resample``);
3. robust per-recording normalisation ``(x - median) / IQR`` (``normalise``);
4. 30 s epochs from the EDF start, trailing partial epoch dropped (``epoching``);
5. per-epoch quality flags and channel-present mask (``quality``), then clip to [-6, 6] and zero
   every absent / masked channel-epoch and every NaN/inf-fed sample;
6. labels from the scoring on the same epoch grid (-1 where the scoring does not reach).

A channel the recording lacks is kept absent (zeros, mask False); the recording is refused
(``NoUsableSignalError``) only when no channel carries signal, or when it is shorter than one epoch
(``RecordingTooShortError``). Channels the scoring or the registry cannot place are reported in
``RecordingEpochs.qc``, which the store keeps per recording in its manifest.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import config
from osf.datasets.io.channels import ChannelResolution, resolve_channels
from osf.datasets.io.edf import read_edf, read_edf_header
from osf.datasets.io.errors import IngestionError
from osf.datasets.io.scoring import Scoring, read_scoring
from osf.datasets.preprocess import epoching, filters, normalise, quality, resample
from osf.datasets.preprocess.channels import build_canonical_signal, describe_source, source_labels
from osf.datasets.recording import RecordingEpochs

PIPELINE_VERSION = "1.0"


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
        "normalisation": "per recording and channel: (x - median) / IQR over finite samples (std if IQR is 0)",
        "clip": [-normalise.CLIP_VALUE, normalise.CLIP_VALUE],
        "nonfinite": "NaN/inf source samples set to the median before filtering, output samples they feed set to 0, epoch flagged",
        "quality": {
            "flat_mad": quality.FLAT_MAD,
            "disconnected_clip_frac": quality.DISCONNECTED_CLIP_FRAC,
            "disconnected_level": quality.DISCONNECTED_LEVEL,
            "mostly_nonfinite": quality.MOSTLY_NONFINITE,
        },
        "epoching": "epoch k = [30k, 30k+30) s from the EDF start; trailing partial epoch dropped",
    }


def process_recording(
    edf_path: str | os.PathLike,
    scoring_path: str | os.PathLike | None = None,
    dataset: str = "generic",
    channel_map: Mapping[str, Any] | str | os.PathLike | None = None,
) -> RecordingEpochs:
    """Preprocess one EDF (+ optional scoring file) into ``RecordingEpochs`` (see the module docstring).

    ``channel_map`` (dict, JSON text or JSON file: canonical channel -> EDF label or [a, b] for
    a - b) replaces the dataset registry's aliases; channels it leaves out are absent. Raises an
    ``IngestionError`` subclass naming the file for unreadable input or when nothing is usable.
    """
    edf_path = Path(edf_path)
    # Header, then scoring (small; a broken one fails before the expensive signal read). The header's
    # start time anchors scoring files whose onsets are clock times (STAGES CSV).
    header = read_edf_header(edf_path)
    labels = header.labels
    scoring = read_scoring(scoring_path, recording_start=header.start_time) if scoring_path is not None else None
    if scoring is not None:
        mismatch = _start_mismatch(scoring, header.start_time)
        if mismatch:
            scoring.warnings.append(mismatch)
    resolution = resolve_channels(labels, dataset, channel_map, path=edf_path)
    if not resolution.present:
        raise NoUsableSignalError(
            edf_path,
            f"none of the {config.NUM_CHANNELS} model channels could be found among the EDF labels {labels} "
            f"(dataset {dataset!r}); pass a channel map naming the labels to use",
        )
    recording = read_edf(edf_path, resolution.needed_labels)
    sources = {name: src.labels for name, src in resolution.sources.items() if src.present}
    epochs = epochs_from_signals(
        recording.signals, recording.rates, recording.duration_s, sources, scoring=scoring, source_path=edf_path
    )
    epochs.qc.update(_resolution_qc(resolution))
    epochs.qc["reader"] = recording.reader
    if scoring_path is not None:
        epochs.qc["scoring_path"] = os.fspath(scoring_path)
    return epochs


def _start_mismatch(scoring: Scoring, edf_start: _dt.datetime | None) -> str | None:
    """A warning when the scoring file states a start time of day other than the EDF's (> 1 s apart).

    Onsets are read as seconds from the EDF start either way; a different stated start hints that
    the file belongs to another recording or was exported with an offset, so the labels may be shifted.
    """
    if scoring.start_clock is None or edf_start is None:
        return None
    day = _dt.date(2000, 1, 1)
    offset = _dt.datetime.combine(day, scoring.start_clock) - _dt.datetime.combine(day, edf_start.time())
    diff = offset.total_seconds() % 86400.0
    diff = min(diff, 86400.0 - diff)
    if diff <= 1.0:
        return None
    return (
        f"{scoring.source}: the scoring states a recording start at {scoring.start_clock} but the EDF starts at "
        f"{edf_start.time()} ({diff:g} s apart); onsets are taken from the EDF start: check the labels' alignment"
    )


def _resolution_qc(resolution: ChannelResolution) -> dict[str, Any]:
    return {
        "channel_map": resolution.as_dict(),
        "channel_rules": {c: s.rule for c, s in resolution.sources.items() if s.present},
        "derived_channels": {c: describe_source(s.labels) for c, s in resolution.sources.items() if s.kind == "derived"},
        "missing_channels": resolution.missing,
        "unused_labels": list(resolution.unused_labels),
    }


def epochs_from_signals(
    signals: Mapping[str, np.ndarray],
    rates: Mapping[str, float],
    duration_s: float,
    sources: Mapping[str, str | Sequence[str]],
    scoring: Scoring | None = None,
    source_path: str | os.PathLike | None = None,
) -> RecordingEpochs:
    """The signal pipeline on signals already in memory (label -> samples at ``rates[label]`` Hz).

    ``sources`` maps canonical channels to one label or a pair ``(a, b)`` for ``a - b``; canonical
    channels not in it are absent. ``duration_s`` is the recording length (EDF records x duration).
    """
    where = source_path if source_path is not None else "<signals>"
    n_epochs = int(np.floor(duration_s / config.EPOCH_SEC + 1e-9))
    if n_epochs < 1:
        raise RecordingTooShortError(where, f"recording lasts {duration_s:g} s, shorter than one {config.EPOCH_SEC} s epoch")
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
    n_samples = n_epochs * config.EPOCH_SAMPLES

    shape = (n_epochs, config.NUM_CHANNELS, config.EPOCH_SAMPLES)
    epochs = np.zeros(shape, dtype=np.float32)
    nonfinite = np.zeros(shape, dtype=bool)
    present = np.zeros(config.NUM_CHANNELS, dtype=bool)
    qc: dict[str, Any] = {
        "source_rates": {},
        "resampling": {},
        "filters": {},
        "normalisation": {},
        "nonfinite_source_samples": {},
        "flat_channels": [],
    }
    for name, src in sources.items():  # one channel at a time keeps the peak memory low
        sig = build_canonical_signal(name, src, signals, rates)
        i = config.CHANNEL_INDEX[name]
        data, bad = sig.data[:n_samples], sig.nonfinite[:n_samples]
        scale = normalise.robust_scale(data, valid=~bad)
        qc["source_rates"][name] = sig.source_rates
        qc["resampling"][name] = sig.resampling
        if sig.filter is not None:
            qc["filters"][name] = sig.filter
        qc["normalisation"][name] = scale.as_dict()
        if sig.nonfinite_source_samples:
            qc["nonfinite_source_samples"][name] = sig.nonfinite_source_samples
        if scale.method == "flat":  # constant (or entirely NaN) all night: nothing to learn from it
            qc["flat_channels"].append(name)
            continue
        present[i] = True
        epochs[:, i, :] = normalise.apply_scale(data, scale).reshape(n_epochs, config.EPOCH_SAMPLES)
        nonfinite[:, i, :] = bad.reshape(n_epochs, config.EPOCH_SAMPLES)

    quality_columns, channel_mask, per_channel = quality.epoch_quality(epochs, nonfinite, present)
    if not channel_mask.any():
        raise NoUsableSignalError(
            where,
            f"no channel carries usable signal (channels found: {sorted(sources)}; flat all night: "
            f"{qc['flat_channels']}; the others flat, disconnected or NaN in every epoch)",
        )
    np.clip(epochs, -normalise.CLIP_VALUE, normalise.CLIP_VALUE, out=epochs)
    epochs[nonfinite] = 0.0
    epochs[~channel_mask] = 0.0

    if scoring is not None:
        labels, qc["scoring"] = epoching.align_scoring(scoring, n_epochs)
        qc["unknown_event_names"] = dict(scoring.unknown_event_names)
        if scoring.warnings:
            qc["scoring_warnings"] = list(scoring.warnings)
    else:
        labels = epoching.unknown_labels(n_epochs)
        qc["scoring"] = None

    names = list(config.CHANNELS)
    qc.update(
        {
            "n_epochs": n_epochs,
            "duration_s": float(duration_s),
            "dropped_tail_s": float(duration_s - n_epochs * config.EPOCH_SEC),
            "present_channels": [n for n, p in zip(names, present) if p],
            "epochs_present": {n: int(channel_mask[:, i].sum()) for i, n in enumerate(names) if present[i]},
            "epochs_flagged": {
                flag: {n: int(per_channel[flag][:, i].sum()) for i, n in enumerate(names) if per_channel[flag][:, i].any()}
                for flag in ("flat", "nan", "disconnected")
            },
            "clipped_frac": {n: float(per_channel["clipped_frac"][:, i].mean()) for i, n in enumerate(names) if present[i]},
        }
    )
    return RecordingEpochs(
        signals=epochs,
        channel_mask=channel_mask,
        labels=labels,
        quality=quality_columns,
        qc=qc,
        source_path=None if source_path is None else os.fspath(source_path),
        duration_s=float(duration_s),
    )

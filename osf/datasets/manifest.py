"""Typed records of an epoch store: the manifest, one recording's provenance, one failed file.

Each has ``to_dict`` / ``from_dict`` giving exactly the JSON the store has always written
(``manifest.json``, a sidecar's ``osf_recording`` metadata, a ``failures.jsonl`` line), so stores
written before these types existed open unchanged. :meth:`StoreManifest.check_contract` is what
``EpochStore`` runs on open: a store written for another channel list, rate, epoch length or format
is refused with one line naming the store and the field.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from osf import config
from osf.datasets.channelset import ChannelSet

STORE_FORMAT_VERSION = 2
# Format 1 (index.parquet only, recordings listed in manifest.json) still opens, its index in memory;
# format 2 adds index/ (a recordings table and memory-mapped per-epoch columns).
READABLE_FORMATS: tuple[int, ...] = (1, 2)
SIGNAL_DTYPE = np.float16

# Manifest fields that fix how the arrays are read: checked on open against this code's model contract.
CONTRACT_FIELDS: tuple[str, ...] = ("format_version", "channels", "sample_rate", "epoch_samples", "signal_dtype")


class StoreManifestError(ValueError):
    """A store's manifest does not match what this code reads (format, channels, rate, epoch length)."""


def utc_now() -> str:
    """The current UTC time as the store writes it (``2024-01-31T12:00:00Z``)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _known(cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``data`` that are fields of dataclass ``cls``."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in data.items() if k in names}


@dataclass(frozen=True)
class FailureRecord:
    """A file that could not be ingested: one line of ``failures.jsonl``."""

    dataset: str
    source_path: str
    reason: str
    at: str = field(default_factory=utc_now)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of the line."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FailureRecord:
        """Parse one line's object (missing fields read as empty)."""
        return cls(
            dataset=data.get("dataset"), source_path=data.get("source_path"), reason=data.get("reason", ""),
            at=data.get("at", ""),
        )


@dataclass(frozen=True)
class ShardMarker:
    """Shard ``shard`` of ``n_shards`` of a dataset finished: ``shards/<dataset>/<k>-of-<n>.json``."""

    dataset: str
    shard: int
    n_shards: int
    cohort_group: str | None = None  # applied to the dataset when the store is finalized
    written: int = 0
    skipped: int = 0
    failed: int = 0
    finished_at: str = field(default_factory=utc_now)

    def to_dict(self) -> dict[str, Any]:
        """The marker's JSON object."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ShardMarker:
        """Parse a marker (``dataset``, ``shard`` and ``n_shards`` are required)."""
        values = _known(cls, data)
        return cls(**{**values, "shard": int(data["shard"]), "n_shards": int(data["n_shards"]), "dataset": data["dataset"]})


@dataclass
class RecordingMeta:
    """Provenance of one written recording (the sidecar's metadata), aggregated into the manifest."""

    dataset: str
    recording_id: str
    subject_id: str
    visit: int
    n_epochs: int
    duration_s: float
    source_path: str | None
    source: dict[str, Any] = field(default_factory=dict)
    pipeline: dict[str, Any] = field(default_factory=dict)
    channel_map: dict[str, Any] | None = None
    unknown_event_names: dict[str, int] = field(default_factory=dict)
    qc: dict[str, Any] = field(default_factory=dict)
    written_at: str = field(default_factory=utc_now)

    # What the recordings table keeps per recording (the rest is aggregated over recordings in the manifest).
    MANIFEST_KEYS = ("dataset", "recording_id", "subject_id", "visit", "n_epochs", "duration_s", "source_path",
                     "source", "qc")

    def to_dict(self) -> dict[str, Any]:
        """The sidecar's JSON object."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RecordingMeta:
        """Parse a sidecar's object (fields it lacks take their defaults)."""
        values = _known(cls, data)
        for key in ("source", "pipeline", "unknown_event_names"):
            if values.get(key) is None:
                values.pop(key, None)
        return cls(**{"source_path": None, **values})

    def manifest_entry(self) -> dict[str, Any]:
        """This recording's provenance entry (a row of ``index/recordings.parquet``)."""
        return {k: getattr(self, k) for k in self.MANIFEST_KEYS}

    def files(self) -> set[str]:
        """Every source file path this recording was written from (EDF, annotations)."""
        return {os.fspath(v) for v in [self.source_path, *self.source.values()] if isinstance(v, str)}


@dataclass
class StoreManifest:
    """``manifest.json``: the array contract, splits, cohort groups and provenance of a finalized store."""

    format_version: int
    created_at: str
    channels: list[str]
    sample_rate: int
    epoch_samples: int
    signal_dtype: str
    n_epochs: int
    n_recordings: int
    splits: dict[str, Any]
    cohort_groups: dict[str, str]
    cohort_groups_unused: list[str]
    pipeline: list[dict[str, Any]]
    channel_maps: list[dict[str, Any]]
    unknown_event_names: dict[str, dict[str, int]]
    excluded: list[dict[str, Any]]

    @classmethod
    def build(
        cls,
        metas: list[RecordingMeta],
        n_epochs: int,
        splits: dict[str, Any],
        cohort_groups: dict[str, str],
        unused_groups: list[str],
        excluded: list[FailureRecord],
    ) -> StoreManifest:
        """The manifest of a store being finalized with this code's array contract."""
        return cls(
            format_version=STORE_FORMAT_VERSION,
            created_at=utc_now(),
            channels=list(config.CHANNELS),
            sample_rate=config.SAMPLE_RATE,
            epoch_samples=config.EPOCH_SAMPLES,
            signal_dtype=np.dtype(SIGNAL_DTYPE).name,
            n_epochs=n_epochs,
            n_recordings=len(metas),
            splits=splits,
            cohort_groups=cohort_groups,
            cohort_groups_unused=unused_groups,
            pipeline=pipeline_summary(metas),
            channel_maps=channel_map_summary(metas),
            unknown_event_names=unknown_event_summary(metas),
            excluded=[f.to_dict() for f in excluded],
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of ``manifest.json`` (keys in the order the store has always written)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str | os.PathLike = "manifest") -> StoreManifest:
        """Parse and check ``manifest.json`` (see :meth:`check_contract`); fields it lacks read as empty."""
        if not isinstance(data, Mapping):
            raise StoreManifestError(f"{where}: the manifest is a JSON {type(data).__name__}, not an object")
        check_contract(data, where)
        empty: dict[str, Any] = {"created_at": "", "n_epochs": 0, "n_recordings": 0, "splits": {}, "cohort_groups": {},
                                 "cohort_groups_unused": [], "pipeline": [], "channel_maps": [],
                                 "unknown_event_names": {}, "excluded": []}
        return cls(**{**empty, **_known(cls, data)})


def check_contract(data: Mapping[str, Any], where: str | os.PathLike) -> None:
    """Raise :class:`StoreManifestError` naming ``where`` and the field when the manifest's array contract
    (format version, channel list, sample rate, epoch length, sample type) is not this code's."""
    missing = [k for k in CONTRACT_FIELDS if k not in data]
    if missing:
        raise StoreManifestError(f"{where}: manifest lacks {missing}; not a store written by this code (re-ingest it)")
    version = data["format_version"]
    if not isinstance(version, int) or version not in READABLE_FORMATS:
        newer = isinstance(version, int) and version > STORE_FORMAT_VERSION
        why = "newer than this code reads: update osf" if newer else "not one this code reads: re-ingest the store"
        raise StoreManifestError(f"{where}: format_version is {version!r}, expected {STORE_FORMAT_VERSION} ({why})")
    _check_channels(data["channels"], where)
    expected = {"sample_rate": config.SAMPLE_RATE, "epoch_samples": config.EPOCH_SAMPLES,
                "signal_dtype": np.dtype(SIGNAL_DTYPE).name}
    for key, want in expected.items():
        if data[key] != want:
            raise StoreManifestError(
                f"{where}: {key} is {data[key]!r}, expected {want!r} (the model reads {config.SAMPLE_RATE} Hz, "
                f"{config.EPOCH_SEC} s epochs of {config.EPOCH_SAMPLES} samples); re-ingest the store"
            )


def _check_channels(channels: Any, where: str | os.PathLike) -> None:
    if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
        raise StoreManifestError(f"{where}: channels is {channels!r}, expected a list of channel names")
    try:
        stored = ChannelSet.from_names(channels)
    except ValueError as err:
        raise StoreManifestError(f"{where}: channels: {err}") from None
    if list(stored.names) != list(config.CHANNELS):
        raise StoreManifestError(
            f"{where}: channels are {channels}, expected the model's {config.NUM_CHANNELS} channels in order "
            f"{list(config.CHANNELS)}; re-ingest the store"
        )


# --- aggregation over recordings ---------------------------------------------------------------
def pipeline_summary(metas: Iterable[RecordingMeta]) -> list[dict[str, Any]]:
    """Distinct preprocessing settings and, for each, how many recordings per dataset used them."""
    groups: list[tuple[dict[str, Any], Counter]] = []
    for m in metas:
        for settings, datasets in groups:
            if settings == m.pipeline:
                datasets[m.dataset] += 1
                break
        else:
            groups.append((m.pipeline, Counter({m.dataset: 1})))
    return [{"settings": settings, "datasets": dict(datasets)} for settings, datasets in groups]


def channel_map_summary(metas: Iterable[RecordingMeta]) -> list[dict[str, Any]]:
    """Distinct channel maps used and, for each, how many recordings per dataset."""
    groups: dict[str, tuple[dict[str, Any], Counter]] = {}
    for m in metas:
        if m.channel_map is None:
            continue
        key = json.dumps(m.channel_map, sort_keys=True, default=str)
        groups.setdefault(key, (m.channel_map, Counter()))[1][m.dataset] += 1
    return [{"channel_map": cmap, "datasets": dict(datasets)} for cmap, datasets in groups.values()]


def unknown_event_summary(metas: Iterable[RecordingMeta]) -> dict[str, dict[str, int]]:
    """Event names the scoring vocabulary did not know, counted per dataset (most frequent first)."""
    counts: dict[str, Counter] = {}
    for m in metas:
        counts.setdefault(m.dataset, Counter()).update(m.unknown_event_names or {})
    return {d: dict(c.most_common()) for d, c in counts.items() if c}

"""`RecordingEpochs`: one preprocessed night cut into 30 s epochs, the unit ingestion hands to the store.

Produced by `osf.datasets.preprocess.process_recording` (and by `osf.testing.make_random_store`
for tests); consumed by `osf.datasets.store.StoreWriter.write_recording` and by prediction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from osf import config

# Per-epoch label columns of the store index, in index order; -1 = unknown.
LABEL_FIELDS: tuple[str, ...] = tuple(config.LABEL_COLUMNS.values())

# Per-epoch quality columns and their stored dtypes. The *_mask columns are channel bit fields
# (bit i = config.CHANNELS[i], same packing as `channel_mask`); `clipped_frac` is the fraction of
# samples (all channels) that hit the [-6, 6] clip.
QUALITY_FIELDS: dict[str, np.dtype] = {
    "flat_mask": np.dtype(np.uint16),
    "clipped_frac": np.dtype(np.float32),
    "nan_mask": np.dtype(np.uint16),
    "disconnected_mask": np.dtype(np.uint16),
}

_BIT_WEIGHTS = (1 << np.arange(16, dtype=np.uint32)).astype(np.uint16)


def pack_bits(flags: np.ndarray) -> np.ndarray:
    """Pack bool ``[n, C]`` (C <= 16) into uint16 ``[n]``, bit i = column i (the store's channel bits)."""
    flags = np.asarray(flags, dtype=bool)
    if flags.ndim != 2 or flags.shape[1] > 16:
        raise ValueError(f"expected bool [n, C<=16], got shape {flags.shape}")
    return (flags.astype(np.uint16) * _BIT_WEIGHTS[: flags.shape[1]]).sum(axis=1, dtype=np.uint16)


def unpack_bits(bits: np.ndarray, n_channels: int = config.NUM_CHANNELS) -> np.ndarray:
    """Inverse of ``pack_bits``: uint16 ``[n]`` -> bool ``[n, n_channels]``."""
    bits = np.asarray(bits, dtype=np.uint16)
    return (bits[:, None] & _BIT_WEIGHTS[None, :n_channels]) > 0


@dataclass
class RecordingEpochs:
    """A preprocessed recording: signals `[n, 12, 1920]`, presence mask, labels, quality flags, QC notes.

    `qc` is free-form provenance; the store reads two keys from it when present:
    `channel_map` (canonical channel -> EDF label(s) used) and `unknown_event_names`
    (mapping name -> count), both aggregated into the store manifest.
    """

    signals: np.ndarray
    channel_mask: np.ndarray
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    quality: dict[str, np.ndarray] = field(default_factory=dict)
    qc: dict[str, Any] = field(default_factory=dict)
    source_path: str | None = None
    duration_s: float = 0.0

    @property
    def n_epochs(self) -> int:
        """Number of 30 s epochs."""
        return int(self.signals.shape[0])

    def validate(self, name: str = "recording") -> None:
        """Raise ValueError naming `name` if shapes, dtypes or label values break the store contract."""
        where = f"{name} ({self.source_path})" if self.source_path else name
        shape = (config.NUM_CHANNELS, config.EPOCH_SAMPLES)
        sig = self.signals
        if not isinstance(sig, np.ndarray) or sig.ndim != 3 or sig.shape[1:] != shape:
            got = getattr(sig, "shape", type(sig).__name__)
            raise ValueError(
                f"{where}: signals must be an array [n_epochs, {shape[0]}, {shape[1]}], got {got}"
            )
        if sig.shape[0] == 0:
            raise ValueError(f"{where}: no epochs")
        if not np.issubdtype(sig.dtype, np.floating):
            raise ValueError(f"{where}: signals must be floating point, got {sig.dtype}")
        n = sig.shape[0]
        mask = np.asarray(self.channel_mask)
        if mask.shape != (n, config.NUM_CHANNELS) or mask.dtype != bool:
            raise ValueError(
                f"{where}: channel_mask must be bool [{n}, {config.NUM_CHANNELS}], got {mask.dtype} {mask.shape}"
            )
        unknown = sorted(set(self.labels) - set(LABEL_FIELDS))
        if unknown:
            raise ValueError(
                f"{where}: unknown label column(s) {unknown}; expected a subset of {list(LABEL_FIELDS)}"
            )
        for col, values in self.labels.items():
            values = np.asarray(values)
            if values.shape != (n,):
                raise ValueError(f"{where}: label {col!r} has shape {values.shape}, expected ({n},)")
            hi = len(config.STAGE_NAMES_5) - 1 if col == "stage" else 1
            bad = (values < -1) | (values > hi)
            if bad.any():
                raise ValueError(
                    f"{where}: label {col!r} has values outside -1..{hi} "
                    f"(e.g. {values[bad][:5].tolist()} at epochs {np.flatnonzero(bad)[:5].tolist()})"
                )
        unknown = sorted(set(self.quality) - set(QUALITY_FIELDS))
        if unknown:
            raise ValueError(f"{where}: unknown quality column(s) {unknown}; expected {list(QUALITY_FIELDS)}")
        for col, values in self.quality.items():
            if np.shape(values) != (n,):
                raise ValueError(f"{where}: quality {col!r} has shape {np.shape(values)}, expected ({n},)")

    def label_array(self, column: str) -> np.ndarray:
        """Labels of one column as int8, -1 everywhere when the recording has none (e.g. no scoring)."""
        if column in self.labels:
            return np.asarray(self.labels[column]).astype(np.int8)
        return np.full(self.n_epochs, -1, dtype=np.int8)

    def quality_array(self, column: str) -> np.ndarray:
        """Quality flags of one column in their stored dtype; zeros (= no problem found) when not computed."""
        dtype = QUALITY_FIELDS[column]
        if column in self.quality:
            return np.asarray(self.quality[column]).astype(dtype)
        return np.zeros(self.n_epochs, dtype=dtype)

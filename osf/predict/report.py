"""Quality-control report of one predicted night: what went in, what was missing, how sure the model was."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from osf import config
from osf.datasets.store import unpack_channel_mask


class MissingChannelsError(ValueError):
    """The recording has none of the channels the classifier needs: no prediction is possible."""


class MissingChannelsWarning(UserWarning):
    """The recording lacks some of the classifier's channels: the prediction proceeds without them."""


def require_some_channels(
    missing: Sequence[str], required: Sequence[str], present: Sequence[str], source: str | Path
) -> None:
    """Raise :class:`MissingChannelsError` when every channel the classifier needs is ``missing``."""
    if required and set(required) <= set(missing):
        raise MissingChannelsError(
            f"{source}: the recording has none of the channels the classifier needs "
            f"({', '.join(required)}); channels found after mapping: {', '.join(present) or 'none'}. "
            "Pass --channel_map JSON mapping canonical names to this EDF's labels, or use a classifier "
            "trained on the channels this EDF has."
        )


def _per_channel_fraction(bits: np.ndarray) -> dict[str, float]:
    """Fraction of epochs each channel's bit is set, for the channels set at least once."""
    fractions = unpack_channel_mask(bits).mean(axis=0)
    return {name: float(f) for name, f in zip(config.CHANNELS, fractions) if f > 0}


def summarize_quality(quality: Mapping[str, np.ndarray]) -> dict:
    """Reduce per-epoch quality columns: bit masks to per-channel fractions, numbers to mean/max."""
    out: dict = {}
    for column, values in quality.items():
        values = np.asarray(values)
        if values.size == 0:
            continue
        if column.endswith("_mask") and np.issubdtype(values.dtype, np.integer):
            out[column.removesuffix("_mask") + "_epoch_fraction"] = _per_channel_fraction(values)
        elif np.issubdtype(values.dtype, np.number) or values.dtype == bool:
            values = values.astype(np.float64)
            out[column] = {"mean": float(np.nanmean(values)), "max": float(np.nanmax(values))}
    return out


def build_qc_report(
    source: str | Path,
    ingestion_qc: Mapping,
    present: Sequence[str],
    missing: Sequence[str],
    quality: Mapping[str, np.ndarray],
    classifier_channels: Sequence[str],
    stage_probs: np.ndarray,
    low_confidence: float = 0.5,
) -> dict:
    """The QC report of a predicted night (JSON-serialisable)."""
    confidence = np.asarray(stage_probs).max(axis=1)
    warnings: list[str] = []
    if missing:
        warnings.append(
            f"proceeding without {len(missing)} of the classifier's {len(classifier_channels)} channels: "
            f"{', '.join(missing)}; expect lower accuracy"
        )
    low_fraction = float((confidence < low_confidence).mean()) if len(confidence) else 0.0
    if low_fraction > 0.5:
        warnings.append(f"{100 * low_fraction:.0f}% of epochs have stage confidence below {low_confidence}")
    quality_summary = summarize_quality(quality)
    for column in ("flat_epoch_fraction", "disconnected_epoch_fraction", "nan_epoch_fraction"):
        for channel, fraction in quality_summary.get(column, {}).items():
            if fraction > 0.5 and channel in classifier_channels:
                warnings.append(f"{channel} is {column.split('_')[0]} in {100 * fraction:.0f}% of epochs")
    return {
        "source": str(source),
        "n_epochs": len(confidence),
        "substitutions": {
            c: f"{' - '.join(sub['labels'])}: {sub['why']}" for c, sub in ingestion_qc.get("substitutions", {}).items()
        },
        "refused_substitutions": dict(ingestion_qc.get("refused_substitutions", {})),
        "unused_labels": dict(ingestion_qc.get("unused_label_reasons", {})),
        "channels_present": list(present),
        "classifier_channels": list(classifier_channels),
        "missing_classifier_channels": list(missing),
        "channels_used": [c for c in classifier_channels if c in present],
        "low_confidence_threshold": float(low_confidence),
        "low_confidence_fraction": low_fraction,
        "mean_stage_confidence": float(confidence.mean()) if len(confidence) else None,
        "quality": quality_summary,
        "ingestion": dict(ingestion_qc),
        "warnings": warnings,
    }

"""Turning EDF signals into canonical channels: single labels or bipolar differences, at 64 Hz.

A canonical channel comes from one EDF label (already referenced at acquisition, e.g. "C3-M2") or
from the difference of two (``a - b``, e.g. C3 - M2, LChin - RChin). Both resampling and filtering
are linear, so when the two labels share a rate the difference is taken first (one filter pass);
when their rates differ each is filtered and resampled to 64 Hz and the difference is taken there.
Source samples that are NaN or +-inf are replaced by the signal's median before filtering (a filter
would spread them) and reported as a mask on the 64 Hz grid, where the pipeline sets them to 0.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from osf import config
from osf.datasets.preprocess.filters import emg_bandpass, emg_filter_description
from osf.datasets.preprocess.resample import resample_to_model_rate, resampling_ratio, source_to_output_mask


def source_labels(source: str | Sequence[str]) -> tuple[str, ...]:
    """The EDF labels a source reads (1 or 2)."""
    if isinstance(source, str):
        return (source,)
    labels = tuple(source)
    if len(labels) not in (1, 2) or not all(isinstance(lab, str) for lab in labels):
        raise ValueError(f"a channel source is one EDF label or a pair [a, b] for a - b, got {source!r}")
    return labels


def describe_source(source: str | Sequence[str]) -> str:
    """Human-readable form of a source: "C3-M2" or "C3 - M2" (a derivation)."""
    return " - ".join(source_labels(source))


@dataclass
class CanonicalSignal:
    """One canonical channel on the 64 Hz grid, before normalisation."""

    name: str
    data: np.ndarray  # float64 [T64]
    nonfinite: np.ndarray  # bool [T64]: fed by a NaN/inf source sample (zeroed)
    source_rates: dict[str, float]
    resampling: str
    filter: str | None
    nonfinite_source_samples: int


def _resample_description(rate: float) -> str:
    up, down = resampling_ratio(rate)
    if up == down:
        return f"{rate:g} Hz (no resampling)"
    return f"{rate:g} Hz -> {config.SAMPLE_RATE} Hz resample_poly up={up} down={down}"


def _to_model_rate(x: np.ndarray, bad: np.ndarray, rate: float, filt: Callable[[np.ndarray, float], np.ndarray] | None):
    if filt is not None:
        x = filt(x, rate)
    y = resample_to_model_rate(x, rate)
    return y, source_to_output_mask(bad, rate, len(y))


def build_canonical_signal(
    name: str, source: str | Sequence[str], signals: Mapping[str, np.ndarray], rates: Mapping[str, float]
) -> CanonicalSignal:
    """Derive canonical channel ``name`` from ``signals``/``rates`` (label-keyed) and bring it to 64 Hz.

    ``source`` is one label, or a pair ``(a, b)`` for ``a - b`` (``osf.datasets.io.channels``
    ``ChannelSource.labels``).

    EMG channels (``config.EMG_CHANNELS``) are band-passed at the source rate (see ``filters``).
    """
    labels = source_labels(source)
    is_emg = name in config.EMG_CHANNELS
    filt = emg_bandpass if is_emg else None
    parts = []
    for label in labels:
        x = np.array(signals[label], dtype=np.float64)  # a copy: zeroing must not touch the caller's data
        bad = ~np.isfinite(x)
        if bad.any():
            # The median, not 0, so that a DC offset does not turn the gap into a step the filters ring on.
            x[bad] = np.median(x[~bad]) if not bad.all() else 0.0
        parts.append((label, x, bad, float(rates[label])))
    n_bad = int(sum(p[2].sum() for p in parts))
    source_rates = {label: rate for label, _, _, rate in parts}
    if len({p[3] for p in parts}) == 1:
        rate = parts[0][3]
        x = parts[0][1] if len(parts) == 1 else parts[0][1] - parts[1][1]
        bad = parts[0][2] if len(parts) == 1 else parts[0][2] | parts[1][2]
        data, nonfinite = _to_model_rate(x, bad, rate, filt)
        resampling = _resample_description(rate)
        filter_desc = emg_filter_description(rate) if is_emg else None
    else:
        converted = [_to_model_rate(x, bad, rate, filt) for _, x, bad, rate in parts]
        n = min(len(d) for d, _ in converted)
        data = converted[0][0][:n] - converted[1][0][:n]
        nonfinite = converted[0][1][:n] | converted[1][1][:n]
        resampling = "; ".join(f"{label}: {_resample_description(rate)}" for label, _, _, rate in parts)
        filter_desc = "; ".join(f"{label}: {emg_filter_description(rate)}" for label, _, _, rate in parts) if is_emg else None
    return CanonicalSignal(
        name=name,
        data=data,
        nonfinite=nonfinite,
        source_rates=source_rates,
        resampling=resampling,
        filter=filter_desc,
        nonfinite_source_samples=n_bad,
    )

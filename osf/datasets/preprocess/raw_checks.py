"""Dead, flat and railed channels, found on the raw samples at their native rate.

These checks run before any filter or resampler touches the signal: a polyphase resampler turns a
constant into a ripple at rates that do not divide 64 Hz, and the per-recording normalisation
would then scale that ripple (or a rail-to-rail square wave) up to a normal-looking amplitude.

Per 30 s epoch (on the same grid as the model epochs), for each EDF signal:

- ``stuck``: at least ``DEAD_EPOCH_FRAC`` of the epoch's samples lie in runs of identical values
  lasting ``STUCK_RUN_S`` or longer. A live electrode never repeats a 16-bit value for seconds; a
  disconnected input, a zero-filled gap or a signal written as a constant does (any level: zero,
  the digital minimum, anything).
- ``railed``: at least ``DEAD_EPOCH_FRAC`` of the samples sit on (or beyond) the ends of the
  header's physical range, i.e. the amplifier or the ADC is saturated (needs the calibration).

A canonical channel built from two labels (``a - b``) is dead in an epoch when either label is.
A channel dead in every epoch is dead for the night (treated as absent); otherwise its dead epochs
lose their channel-mask bit. A signal whose header cannot calibrate it (physical min = max,
digital min >= max) is absent from the start (``EdfSignalHeader.calibration_problem``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from osf import config

STUCK_RUN_S = 2.0
DEAD_EPOCH_FRAC = 0.5


@dataclass(frozen=True)
class Calibration:
    """The header ranges of one EDF signal (physical units <-> digital codes)."""

    physical_min: float
    physical_max: float
    digital_min: int
    digital_max: int

    @property
    def step(self) -> float:
        """One digital code in physical units."""
        return abs(self.physical_max - self.physical_min) / max(self.digital_max - self.digital_min, 1)

    def rails(self) -> tuple[float, float]:
        """Physical values at or beyond which a sample sits on a rail (half a code inside each end)."""
        lo, hi = sorted((self.physical_min, self.physical_max))
        return lo + self.step / 2, hi - self.step / 2


@dataclass
class RawEpochFlags:
    """Per-epoch dead flags of one signal: bool ``[n_epochs]`` each."""

    stuck: np.ndarray
    railed: np.ndarray

    @property
    def dead(self) -> np.ndarray:
        """Epochs that carry no usable signal."""
        return self.stuck | self.railed

    def __or__(self, other: RawEpochFlags) -> RawEpochFlags:
        return RawEpochFlags(self.stuck | other.stuck, self.railed | other.railed)


def epoch_edges(n_samples: int, rate: float, n_epochs: int) -> np.ndarray:
    """Sample index where each 30 s epoch starts at ``rate`` Hz, plus the end of the last one: ``[n_epochs + 1]``."""
    edges = np.floor(np.arange(n_epochs + 1) * config.EPOCH_SEC * rate + 1e-9).astype(np.int64)
    return np.minimum(edges, n_samples)


def _fraction_per_epoch(flags: np.ndarray, edges: np.ndarray) -> np.ndarray:
    counts = np.concatenate([[0], np.cumsum(flags, dtype=np.int64)])
    lengths = np.maximum(np.diff(edges), 1)
    return (counts[edges[1:]] - counts[edges[:-1]]) / lengths


def stuck_samples(x: np.ndarray, rate: float, min_run_s: float = STUCK_RUN_S) -> np.ndarray:
    """Bool per sample: part of a run of identical values lasting at least ``min_run_s`` (NaNs never are)."""
    x = np.asarray(x)
    if x.size == 0:
        return np.zeros(0, dtype=bool)
    starts = np.flatnonzero(np.concatenate([[True], x[1:] != x[:-1]]))
    lengths = np.diff(np.concatenate([starts, [x.size]]))
    long_run = lengths >= max(2, math.ceil(min_run_s * rate))
    return np.repeat(long_run, lengths)


def raw_epoch_flags(
    x: np.ndarray, rate: float, n_epochs: int, calibration: Calibration | None = None
) -> RawEpochFlags:
    """Stuck and railed epochs of one raw signal (physical units, native ``rate``); see the module docstring."""
    x = np.asarray(x)
    edges = epoch_edges(x.size, rate, n_epochs)
    stuck = _fraction_per_epoch(stuck_samples(x, rate), edges) >= DEAD_EPOCH_FRAC
    if calibration is None:
        railed = np.zeros(n_epochs, dtype=bool)
    else:
        lo, hi = calibration.rails()
        with np.errstate(invalid="ignore"):  # NaN compares False: not on a rail
            on_rail = (x <= lo) | (x >= hi)
        railed = _fraction_per_epoch(on_rail, edges) >= DEAD_EPOCH_FRAC
    # Epochs the signal does not reach (a short channel) are left to the epoch count, not flagged here.
    return RawEpochFlags(stuck=stuck, railed=railed)


def describe_dead(flags: RawEpochFlags) -> str:
    """Why a channel is dead all night, in words for the QC report."""
    if flags.stuck.all():
        return "constant (stuck at one value) in every epoch"
    if flags.railed.all():
        return "on the rails of its physical range (saturated or disconnected) in every epoch"
    return "stuck or on the rails in every epoch"

"""One scoring type for every annotation format (``read_scoring`` in ``scoring_formats`` detects the format).

Formats: current NSRR XML (``EventType``/``EventConcept``), ``PSGAnnotation`` with ``SRO:``
concepts, Compumedics Profusion XML (``CMPStudyConfig``), EDF+ annotation files (Sleep-EDF
hypnograms) and a plain CSV/TSV (onset, duration, description). Event and stage spellings come
from ``config.STAGE_EVENT_NAMES`` / ``config.EVENT_NAMES``; names found in neither are kept with
label ``"other"`` and counted in ``Scoring.unknown_event_names``.

Times are seconds from the recording (EDF) start and stage epoch 0 starts there. Events whose
onset cannot be placed on that axis (an empty ``<Start/>``, or vendor clock timestamps with no
usable reference) keep ``onset = NaN``; ``epoch_labels`` then reports their label column as
unknown (-1) rather than claiming the epochs are event-free.
"""

from __future__ import annotations

import datetime as _dt
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from osf import config
from osf.datasets.io.errors import EpochGridError, MalformedScoringError

EPOCH_SEC = float(config.EPOCH_SEC)
EVENT_COLUMNS: tuple[str, ...] = ("onset", "duration", "label", "name")
FORMATS: tuple[str, ...] = ("nsrr_xml", "sro", "profusion", "edfplus", "csv")
_GRID_TOL = 1e-3  # s; vendors write onsets like 929.9999
# No PSG lasts a week: onsets/durations beyond this are corrupt fields, refused before any allocation.
# (Checked against the recording itself, with a much smaller margin, in preprocess.scoring_checks.)
MAX_SCORING_SPAN_S = 7 * 86400.0


@dataclass
class Scoring:
    """Sleep stages per 30 s epoch plus scored events of one recording."""

    stages: np.ndarray  # int8 [n_scored_epochs], 0..4 or -1, epoch 0 starts at the recording start
    events: pd.DataFrame  # columns onset (s), duration (s), label, name (the original concept)
    source: Path
    format: str
    unknown_event_names: Counter = field(default_factory=Counter)
    scores_events: bool = True  # False for stage-only files: their event columns are unknown, not 0
    start_clock: _dt.time | None = None  # recording start time of day, when the file states it
    warnings: list[str] = field(default_factory=list)

    @property
    def n_untimed_events(self) -> int:
        """Events kept without an onset (see the module docstring)."""
        return int(self.events["onset"].isna().sum())

    def epoch_labels(self, n_epochs: int) -> dict[str, np.ndarray]:
        """Per-epoch int8 labels for ``n_epochs`` epochs: ``stage`` and one 0/1 column per event label.

        Stages beyond the scored range are -1. An event marks every epoch its
        ``[onset, onset + duration)`` interval overlaps (a zero-length event marks the epoch holding
        its onset). A column is all -1 when the file does not score events or holds an event of
        that label whose onset is unknown.
        """
        if n_epochs < 0:
            raise ValueError(f"n_epochs must be >= 0, got {n_epochs}")
        stage = np.full(n_epochs, config.STAGE_UNKNOWN, dtype=np.int8)
        k = min(n_epochs, len(self.stages))
        stage[:k] = self.stages[:k]
        out = {"stage": stage}
        for label, column in config.EVENT_LABEL_COLUMNS.items():
            ev = self.events[self.events["label"] == label]
            if not self.scores_events or ev["onset"].isna().any():
                out[column] = np.full(n_epochs, -1, dtype=np.int8)
                continue
            out[column] = _overlap_mask(ev["onset"].to_numpy(float), ev["duration"].to_numpy(float), n_epochs)
        return out


def _overlap_mask(onset: np.ndarray, duration: np.ndarray, n_epochs: int) -> np.ndarray:
    end = onset + np.maximum(duration, 0.0)
    first = np.floor(onset / EPOCH_SEC).astype(np.int64)
    # Tolerance: an event ending exactly on a boundary (float noise included) does not touch the next epoch.
    last = np.maximum(first, np.ceil(end / EPOCH_SEC - 1e-9).astype(np.int64) - 1)
    keep = (last >= 0) & (first < n_epochs)
    first, last = np.clip(first[keep], 0, None), np.clip(last[keep], None, n_epochs - 1)
    diff = np.zeros(n_epochs + 1, dtype=np.int64)
    np.add.at(diff, first, 1)
    np.add.at(diff, last + 1, -1)
    return (np.cumsum(diff[:-1]) > 0).astype(np.int8)


def _stage_name(code: int) -> str:
    return config.STAGE_NAMES_5[code] if 0 <= code < len(config.STAGE_NAMES_5) else f"code {code}"


@lru_cache(maxsize=1)
def _name_tables() -> tuple[dict[str, int], dict[str, str]]:
    stages = {
        config.normalize_label(n): code for code, names in config.STAGE_EVENT_NAMES.items() for n in names
    }
    events = {config.normalize_label(n): label for label, names in config.EVENT_NAMES.items() for n in names}
    return stages, events


def classify_event_name(name: str) -> tuple[str, int | str] | None:
    """``("stage", code)`` or ``("event", label)`` for a known name (NSRR "A|B" tried whole, then by part); else None."""
    stages, events = _name_tables()
    candidates = [name] + ([p for p in name.split("|") if p.strip()] if "|" in name else [])
    for cand in candidates:
        key = config.normalize_label(cand)
        if key in stages:
            return "stage", stages[key]
        if key in events:
            return "event", events[key]
    return None


def check_time_fields(path: Path, onset: float, duration: float, what: str) -> None:
    """Refuse an onset / duration that is not a finite number within ``MAX_SCORING_SPAN_S`` (NaN onset = untimed)."""
    for field_name, value in (("onset", onset), ("duration", duration)):
        if field_name == "onset" and np.isnan(value):
            continue
        if not np.isfinite(value) or abs(value) > MAX_SCORING_SPAN_S:
            raise MalformedScoringError(
                path,
                f"{what} at onset {onset:g} s: field {field_name!r} is {value:g} s, beyond any recording "
                f"(limit {MAX_SCORING_SPAN_S:g} s); the file is corrupt or not in seconds",
            )
    if np.isfinite(onset) and onset + max(duration, 0.0) > MAX_SCORING_SPAN_S:
        raise MalformedScoringError(
            path,
            f"{what} at onset {onset:g} s: fields 'onset' + 'duration' end at {onset + duration:g} s, beyond any "
            f"recording (limit {MAX_SCORING_SPAN_S:g} s)",
        )


def stages_from_runs(path: Path, runs: list[tuple[float, float, int]]) -> np.ndarray:
    """Stage array from (onset s, duration s, code) runs; each must lie on the 30 s grid from 0."""
    if not runs:
        return np.zeros(0, dtype=np.int8)
    spans = []
    for onset, duration, code in runs:
        check_time_fields(path, onset, duration, f"stage event ({_stage_name(code)})")
        a, n = onset / EPOCH_SEC, duration / EPOCH_SEC
        if (
            onset < -_GRID_TOL
            or abs(a - round(a)) * EPOCH_SEC > _GRID_TOL
            or abs(n - round(n)) * EPOCH_SEC > _GRID_TOL
        ):
            raise EpochGridError(
                path,
                f"stage event at {onset:g} s lasting {duration:g} s is off the {EPOCH_SEC:g} s epoch grid "
                "that starts at the recording start (onset and duration must be multiples of "
                f"{EPOCH_SEC:g} s)",
            )
        spans.append((round(a), round(n), code))
    n_total = max(a + n for a, n, _ in spans)
    stages = np.full(n_total, config.STAGE_UNKNOWN, dtype=np.int8)
    filled = np.zeros(n_total, dtype=bool)
    for a, n, code in spans:
        clash = filled[a : a + n] & (stages[a : a + n] != code)
        if clash.any():
            e = a + int(np.flatnonzero(clash)[0])
            raise MalformedScoringError(
                path,
                f"epoch {e} ({e * EPOCH_SEC:g} s) is scored twice with different stages ({stages[e]} and {code})",
            )
        stages[a : a + n] = code
        filled[a : a + n] = True
    return stages


def stage_runs(stages: np.ndarray) -> list[tuple[int, int, int]]:
    """Runs of equal stages as (stage, first epoch, number of epochs): the inverse of the runs hypnogram files hold."""
    stages = np.asarray(stages)
    if stages.size == 0:
        return []
    edges = np.flatnonzero(np.diff(stages)) + 1
    starts = np.concatenate([[0], edges])
    ends = np.concatenate([edges, [stages.size]])
    return [(int(stages[s]), int(s), int(e - s)) for s, e in zip(starts, ends)]


def build_scoring(
    path: Path,
    fmt: str,
    stage_runs: list[tuple[float, float, int]],
    raw_events: list[tuple[float, float, str]],
    *,
    stages: np.ndarray | None = None,
    scores_events: bool | None = True,
    start_clock: _dt.time | None = None,
    warnings: list[str] | None = None,
    extra_unknown: Counter | None = None,
) -> Scoring:
    """Classify raw (onset, duration, name) events and assemble a :class:`Scoring`.

    ``scores_events=None`` (formats that may hold stages only: CSV, EDF+) infers it: the file scores
    events when at least one event has a label (Arousal, Apnea, ...); lights or position markers
    and unknown names alone do not make "no arousal in any epoch" a fact.
    """
    rows = []
    unknown: Counter = Counter(extra_unknown or {})
    for onset, duration, name in raw_events:
        check_time_fields(path, onset, duration, f"scored event {name!r}")
        kind = classify_event_name(name)
        if kind is None:
            unknown[name] += 1
            label = "other"
        elif kind[0] == "stage":
            label = (
                "other"  # a stage name among events (formats with a separate stage list): known, not a stage
            )
        else:
            label = kind[1]
        rows.append((onset, duration, label, name))
    events = pd.DataFrame(rows, columns=list(EVENT_COLUMNS))
    events = events.astype({"onset": float, "duration": float, "label": str, "name": str})
    events = events.sort_values("onset", kind="stable", na_position="last").reset_index(drop=True)
    if scores_events is None:
        scores_events = bool((events["label"] != "other").any())
    return Scoring(
        stages=stages_from_runs(path, stage_runs) if stages is None else stages.astype(np.int8),
        events=events,
        source=path,
        format=fmt,
        unknown_event_names=unknown,
        scores_events=scores_events,
        start_clock=start_clock,
        warnings=list(warnings or []),
    )


def split_named_events(
    items: list[tuple[float, float, str]],
) -> tuple[list[tuple[float, float, int]], list[tuple[float, float, str]]]:
    """Split (onset, duration, name) items into stage runs and other events."""
    stage_runs, events = [], []
    for onset, duration, name in items:
        kind = classify_event_name(name)
        if kind is not None and kind[0] == "stage":
            stage_runs.append((onset, duration, int(kind[1])))
        else:
            events.append((onset, duration, name))
    return stage_runs, events

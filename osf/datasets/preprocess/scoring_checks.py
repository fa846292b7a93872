"""Does a scoring file belong to its recording? Checks run after the header and the scoring are read,
before the signals are.

Refused by default (``ScoringMismatchError``; ``accept_scoring_mismatch=True`` ingests the night
anyway, with the problems in its QC):

- the scoring states a recording start ``START_REFUSE_S`` (5 min) or more away from the EDF's;
- the file holds no events at all;
- no epoch of the recording gets a known sleep stage (stage names all unknown, or all stages
  outside the recording);
- scored stages (W, N1-N3, REM) or events reach more than ``OVERRUN_REFUSE_S`` (1 h) past the end of
  the recording. Stages past the end that are all unscored / movement (Sleep-EDF cassette
  hypnograms run to 24 h with a closing "Sleep stage ?") are no mismatch: they are noted and dropped.

Only warned about (console and QC): a start 1 s to 5 min off, event or stage names the registry
does not know, a scoring more than one epoch shorter or longer than the signal, and the reader's
own notes (``Scoring.warnings``). A night whose stages are all unknown never counts as labelled:
its stage column is -1, and so are its event columns unless the file scores events by known names.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field

import numpy as np

from osf import config
from osf.datasets.io.scoring import Scoring

# Events every export carries whether or not anything was scored.
NON_SCORING_MARKERS = frozenset({"Recording Start Time"})
START_WARN_S = 1.0
START_REFUSE_S = 300.0
OVERRUN_REFUSE_S = 3600.0


@dataclass
class ScoringCheck:
    """Problems that refuse the scoring by default, and notes that are only warned about."""

    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def start_offset_s(scoring: Scoring, edf_start: _dt.datetime | None) -> float | None:
    """Seconds between the scoring's stated start time of day and the EDF's (across midnight), or None."""
    if scoring.start_clock is None or edf_start is None:
        return None
    day = _dt.date(2000, 1, 1)
    offset = _dt.datetime.combine(day, scoring.start_clock) - _dt.datetime.combine(day, edf_start.time())
    diff = offset.total_seconds() % 86400.0
    return min(diff, 86400.0 - diff)


def _start_check(scoring: Scoring, edf_start: _dt.datetime | None, check: ScoringCheck) -> None:
    diff = start_offset_s(scoring, edf_start)
    if diff is None or diff <= START_WARN_S:
        return
    text = (
        f"the scoring states a recording start at {scoring.start_clock} but the EDF starts at "
        f"{edf_start.time()} ({diff:g} s apart)"
    )
    if diff >= START_REFUSE_S:
        check.problems.append(f"{text}: it belongs to another recording or is shifted by {diff / 60:.0f} min")
    else:
        check.warnings.append(f"{text}; onsets are taken from the EDF start: check the labels' alignment")


def scored_extent_s(scoring: Scoring) -> float:
    """End (s) of the last epoch with a known stage; 0 when none is known."""
    known = np.flatnonzero(np.asarray(scoring.stages) >= 0)
    return float((known[-1] + 1) * config.EPOCH_SEC) if known.size else 0.0


def _extent_check(scoring: Scoring, duration_s: float, check: ScoringCheck) -> None:
    limit = duration_s + OVERRUN_REFUSE_S
    stage_end = len(scoring.stages) * config.EPOCH_SEC
    scored_end = scored_extent_s(scoring)
    if scored_end > limit:
        check.problems.append(
            f"its scored stages run to {scored_end:g} s but the recording lasts {duration_s:g} s "
            f"({(scored_end - duration_s) / 3600:.1f} h past its end)"
        )
    elif stage_end > duration_s + config.EPOCH_SEC and scored_end <= duration_s + config.EPOCH_SEC:
        check.warnings.append(
            f"its stages run {(stage_end - duration_s) / 3600:.1f} h past the recording's end ({duration_s:g} s), "
            "all unscored/movement there: that tail is dropped"
        )
    ev = scoring.events
    ends = ev["onset"].to_numpy(float) + np.maximum(ev["duration"].to_numpy(float), 0.0)
    late = np.flatnonzero(ends > limit)  # NaN onsets compare False
    if late.size:
        first = ev.iloc[int(late[0])]
        check.problems.append(
            f"{late.size} events end more than {OVERRUN_REFUSE_S:g} s past the recording's end ({duration_s:g} s), "
            f"e.g. {first['name']!r} at onset {first['onset']:g} s lasting {first['duration']:g} s"
        )


def _label_check(scoring: Scoring, n_epochs: int, check: ScoringCheck) -> None:
    scored = scoring.events[~scoring.events["name"].isin(NON_SCORING_MARKERS)]
    if len(scoring.stages) == 0 and scored.empty:
        check.problems.append("the file holds no events at all (no sleep stage, no scored event)")
        return
    stages = scoring.epoch_labels(n_epochs)["stage"]
    if (stages < 0).all():
        unknown = ", ".join(repr(n) for n, _ in scoring.unknown_event_names.most_common(5)) or "none"
        where = "inside the recording" if (np.asarray(scoring.stages) >= 0).any() else "at all"
        check.problems.append(
            f"no usable sleep stage label {where} ({len(scoring.stages)} scored epochs, "
            f"{n_epochs} recording epochs; unknown names: {unknown})"
        )


def _note_check(scoring: Scoring, n_epochs: int, check: ScoringCheck) -> None:
    check.warnings.extend(scoring.warnings)
    if scoring.unknown_event_names:
        total = sum(scoring.unknown_event_names.values())
        names = ", ".join(f"{n!r} x{c}" for n, c in scoring.unknown_event_names.most_common(5))
        check.warnings.append(f"{total} events with names OSF does not know, kept as 'other': {names}")
    n_scored = len(scoring.stages)
    if n_scored > n_epochs + 1 and scored_extent_s(scoring) <= (n_epochs + 1) * config.EPOCH_SEC:
        return  # an unscored tail past the signal: _extent_check's note says it
    if n_scored and abs(n_scored - n_epochs) > 1:
        side = "shorter" if n_scored < n_epochs else "longer"
        check.warnings.append(
            f"the scoring is {side} than the signal: {n_scored} scored epochs for {n_epochs} signal epochs"
        )


def check_scoring(scoring: Scoring, edf_start: _dt.datetime | None, duration_s: float) -> ScoringCheck:
    """Everything wrong with ``scoring`` for a recording starting at ``edf_start`` and lasting ``duration_s`` s."""
    check = ScoringCheck()
    n_epochs = int(np.floor(duration_s / config.EPOCH_SEC + 1e-9))
    _start_check(scoring, edf_start, check)
    _extent_check(scoring, duration_s, check)
    _label_check(scoring, n_epochs, check)
    _note_check(scoring, n_epochs, check)
    return check


def scores_known_events(scoring: Scoring) -> bool:
    """True when the file scores events and at least one has a known label (Arousal, Apnea, ...)."""
    return bool(scoring.scores_events and (scoring.events["label"] != "other").any())


def drop_unusable_labels(labels: dict[str, np.ndarray], scoring: Scoring) -> bool:
    """With no known stage in any epoch, set the stage column and (unless events are scored by known names)
    the event columns to -1 in place, so the night never counts as labelled. Returns True if it did."""
    if not (labels["stage"] < 0).all():
        return False
    keep_events = scores_known_events(scoring)
    for name, column in labels.items():
        if name == "stage" or not keep_events:
            column[:] = config.STAGE_UNKNOWN
    return True

"""``<PSGAnnotation>`` XML: the current NSRR dialect (``EventType``/``EventConcept``) and the older
one with ``SRO:`` concepts and no ``EventType``.

Quirks of real files handled here:

- Stage events are runs (one event may span many epochs) and must lie on the 30 s grid.
- Some exports (Embla) leave every ``<Start/>`` empty and list stage epochs in order, 30 s
  each: stages are then placed consecutively from 0 s (noted in ``Scoring.warnings``); other
  events without a start keep ``onset = NaN``.
- Some exports (Embla) write starts as vendor clock timestamps (seconds since 2000-01-01) that
  cannot be tied to the EDF start without knowing the time zone; such events are kept untimed.
"""

from __future__ import annotations

import datetime as _dt
import math
import xml.etree.ElementTree as ET
from pathlib import Path

from osf.datasets.io.errors import MalformedScoringError
from osf.datasets.io.scoring import Scoring, build_scoring, classify_event_name

_WEEK_S = 7 * 86400.0
# Vendor clock stamps count seconds since 2000; anything past a century of them is a corrupt field,
# left for build_scoring to refuse rather than quietly kept as an untimed event.
_CLOCK_STAMP_MAX_S = 100 * 365.25 * 86400.0


def parse_xml(path: Path) -> ET.Element:
    """Parse an XML file, turning syntax errors into MalformedScoringError."""
    try:
        return ET.parse(path).getroot()
    except ET.ParseError as err:
        raise MalformedScoringError(path, f"malformed XML: {err}") from None


def number(path: Path, text: str | None, what: str, index: int) -> float | None:
    """A float from an XML field; None when empty; MalformedScoringError when not a finite number."""
    if text is None or not text.strip():
        return None
    try:
        value = float(text)
    except ValueError:
        raise MalformedScoringError(
            path, f"scored event {index}: {what} is not a number: {text.strip()!r}"
        ) from None
    if not math.isfinite(value):
        raise MalformedScoringError(path, f"scored event {index}: {what} is {value}")
    return value


def _clock(text: str | None) -> _dt.time | None:
    # "dd.mm.yy hh.mm.ss"; the date is often "00.00.00", so keep the time of day only.
    if not text:
        return None
    try:
        hh, mm, ss = (int(x) for x in text.split()[-1].split("."))
        return _dt.time(hh, mm, ss)
    except ValueError:
        return None


def read_psg_annotation(path: str | Path) -> Scoring:
    """Read an NSRR / SRO ``<PSGAnnotation>`` file."""
    path = Path(path)
    root = parse_xml(path)
    if root.tag != "PSGAnnotation":
        raise MalformedScoringError(path, f"root element is <{root.tag}>, expected <PSGAnnotation>")
    container = root.find("ScoredEvents")
    if container is None:
        raise MalformedScoringError(path, "no <ScoredEvents> element")
    has_event_type = False
    sro = False
    start_clock = None
    record_duration = None
    items = []  # (onset or None, duration, concept, is_stage, stage code)
    for i, ev in enumerate(container.findall("ScoredEvent")):
        concept = (ev.findtext("EventConcept") or "").strip()
        if not concept:
            raise MalformedScoringError(path, f"scored event {i} has no <EventConcept>")
        has_event_type |= bool((ev.findtext("EventType") or "").strip())
        sro |= concept.startswith("SRO:")
        start = number(path, ev.findtext("Start"), "<Start>", i)
        duration = number(path, ev.findtext("Duration"), "<Duration>", i)
        if duration is None:
            raise MalformedScoringError(path, f"scored event {i} ({concept!r}) has no <Duration>")
        if duration < 0:
            raise MalformedScoringError(
                path, f"scored event {i} ({concept!r}) has a negative duration {duration:g}"
            )
        if concept == "Recording Start Time":
            start_clock = _clock(ev.findtext("ClockTime"))
            record_duration = duration
        kind = classify_event_name(concept)
        is_stage = kind is not None and kind[0] == "stage"
        items.append((start, duration, concept, is_stage, int(kind[1]) if is_stage else 0))

    warnings = []
    # Relative starts never exceed the recording length; much larger ones are vendor clock stamps.
    limit = (record_duration + 86400.0) if record_duration else _WEEK_S
    absolute = [it for it in items if it[0] is not None and limit < it[0] <= _CLOCK_STAMP_MAX_S]
    if absolute:
        warnings.append(
            f"{len(absolute)} events have starts like {absolute[0][0]:.1f} s, far beyond the recording "
            "length: vendor clock timestamps with no usable reference to the EDF start; kept without onset"
        )
        items = [(None if it[0] is not None and limit < it[0] <= _CLOCK_STAMP_MAX_S else it[0], *it[1:]) for it in items]

    stage_items = [it for it in items if it[3]]
    untimed_stages = [it for it in stage_items if it[0] is None]
    stage_runs = []
    if untimed_stages and len(untimed_stages) == len(stage_items):
        cursor = 0.0
        for _, duration, _, _, code in stage_items:
            stage_runs.append((cursor, duration, code))
            cursor += duration
        warnings.append(
            f"{len(stage_items)} stage events carry no <Start>: placed one after another from 0 s in file order"
        )
    elif untimed_stages:
        raise MalformedScoringError(
            path,
            f"{len(untimed_stages)} of {len(stage_items)} stage events have an empty <Start>; cannot place them",
        )
    else:
        stage_runs = [(s, d, code) for s, d, _, _, code in stage_items]
    events = [(math.nan if s is None else s, d, c) for s, d, c, is_stage, _ in items if not is_stage]
    n_untimed = sum(1 for e in events if math.isnan(e[0]))
    if n_untimed and not absolute:
        warnings.append(f"{n_untimed} non-stage events have an empty <Start>: kept without onset")
    return build_scoring(
        path,
        "sro" if sro and not has_event_type else "nsrr_xml",
        stage_runs,
        events,
        start_clock=start_clock,
        warnings=warnings,
    )

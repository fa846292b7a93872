"""``<PSGAnnotation>`` XML: the current NSRR dialect (``EventType``/``EventConcept``) and the older
one with ``SRO:`` concepts and no ``EventType``; and the writer of the current dialect
(:func:`write_psg_annotation`, used by prediction and by the synthetic cohort).

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
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from osf.datasets.io.errors import MalformedScoringError
from osf.datasets.io.scoring import EPOCH_SEC, Scoring, build_scoring, classify_event_name, stage_runs
from osf.utils.atomic import atomic_write_bytes

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


@dataclass(frozen=True)
class _Item:
    """One ``<ScoredEvent>`` as read: onset (None when untimed), duration, concept, stage code (None: not a stage)."""

    onset: float | None
    duration: float
    concept: str
    stage: int | None


@dataclass
class _Document:
    """What a ``<PSGAnnotation>`` file says, before the events are placed on the recording's time axis."""

    items: list[_Item]
    sro: bool  # SRO: concepts and no EventType anywhere: the older dialect
    start_clock: _dt.time | None
    record_duration: float | None


def read_psg_annotation(path: str | Path) -> Scoring:
    """Read an NSRR / SRO ``<PSGAnnotation>`` file."""
    path = Path(path)
    doc = _read_document(path)
    warnings: list[str] = []
    items, stamped = _untime_clock_stamps(doc, warnings)
    runs = _stage_runs(path, [it for it in items if it.stage is not None], warnings)
    events = [(math.nan if it.onset is None else it.onset, it.duration, it.concept) for it in items if it.stage is None]
    n_untimed = sum(1 for e in events if math.isnan(e[0]))
    if n_untimed and not stamped:
        warnings.append(f"{n_untimed} non-stage events have an empty <Start>: kept without onset")
    return build_scoring(
        path, "sro" if doc.sro else "nsrr_xml", runs, events, start_clock=doc.start_clock, warnings=warnings
    )


def _read_document(path: Path) -> _Document:
    """Parse and check every ``<ScoredEvent>`` of the file."""
    root = parse_xml(path)
    if root.tag != "PSGAnnotation":
        raise MalformedScoringError(path, f"root element is <{root.tag}>, expected <PSGAnnotation>")
    container = root.find("ScoredEvents")
    if container is None:
        raise MalformedScoringError(path, "no <ScoredEvents> element")
    has_event_type, sro = False, False
    doc = _Document([], False, None, None)
    for i, ev in enumerate(container.findall("ScoredEvent")):
        item = _read_item(path, ev, i)
        has_event_type |= bool((ev.findtext("EventType") or "").strip())
        sro |= item.concept.startswith("SRO:")
        if item.concept == "Recording Start Time":
            doc.start_clock, doc.record_duration = _clock(ev.findtext("ClockTime")), item.duration
        doc.items.append(item)
    doc.sro = sro and not has_event_type
    return doc


def _read_item(path: Path, ev: ET.Element, i: int) -> _Item:
    """One ``<ScoredEvent>``: concept, start, a non-negative duration, and the stage it scores if any."""
    concept = (ev.findtext("EventConcept") or "").strip()
    if not concept:
        raise MalformedScoringError(path, f"scored event {i} has no <EventConcept>")
    start = number(path, ev.findtext("Start"), "<Start>", i)
    duration = number(path, ev.findtext("Duration"), "<Duration>", i)
    if duration is None:
        raise MalformedScoringError(path, f"scored event {i} ({concept!r}) has no <Duration>")
    if duration < 0:
        raise MalformedScoringError(path, f"scored event {i} ({concept!r}) has a negative duration {duration:g}")
    kind = classify_event_name(concept)
    stage = int(kind[1]) if kind is not None and kind[0] == "stage" else None
    return _Item(start, duration, concept, stage)


def _untime_clock_stamps(doc: _Document, warnings: list[str]) -> tuple[list[_Item], bool]:
    """Items with vendor clock timestamps (far beyond the recording) made untimed, with a warning;
    and whether there were any."""
    # Relative starts never exceed the recording length; much larger ones are vendor clock stamps.
    limit = (doc.record_duration + 86400.0) if doc.record_duration else _WEEK_S

    def is_stamp(it: _Item) -> bool:
        return it.onset is not None and limit < it.onset <= _CLOCK_STAMP_MAX_S

    stamped = [it for it in doc.items if is_stamp(it)]
    if not stamped:
        return doc.items, False
    warnings.append(
        f"{len(stamped)} events have starts like {stamped[0].onset:.1f} s, far beyond the recording "
        "length: vendor clock timestamps with no usable reference to the EDF start; kept without onset"
    )
    return [replace(it, onset=None) if is_stamp(it) else it for it in doc.items], True


def _stage_runs(path: Path, stages: list[_Item], warnings: list[str]) -> list[tuple[float, float, int]]:
    """(onset, duration, stage) runs; stages all without a start are laid end to end from 0 s (Embla)."""
    untimed = [it for it in stages if it.onset is None]
    if not untimed:
        return [(it.onset, it.duration, it.stage) for it in stages]
    if len(untimed) != len(stages):
        raise MalformedScoringError(
            path, f"{len(untimed)} of {len(stages)} stage events have an empty <Start>; cannot place them"
        )
    runs, cursor = [], 0.0
    for it in stages:
        runs.append((cursor, it.duration, it.stage))
        cursor += it.duration
    warnings.append(f"{len(stages)} stage events carry no <Start>: placed one after another from 0 s in file order")
    return runs


# --- writing ----------------------------------------------------------------------------------------
# 5-class stage -> NSRR stage concept.
STAGE_CONCEPTS: dict[int, str] = {
    0: "Wake|0",
    1: "Stage 1 sleep|1",
    2: "Stage 2 sleep|2",
    3: "Stage 3 sleep|3",
    4: "REM sleep|5",
}


@dataclass(frozen=True)
class XmlEvent:
    """A non-stage ``<ScoredEvent>`` to write; ``fields`` are extra child elements (tag, text) in order."""

    event_type: str
    concept: str
    onset: float
    duration: float
    fields: tuple[tuple[str, str], ...] = ()


def _fmt(x: float) -> str:
    return f"{x:.1f}"


def _scored_event(parent: ET.Element, event_type: str, concept: str, start: float, duration: float) -> ET.Element:
    ev = ET.SubElement(parent, "ScoredEvent")
    ET.SubElement(ev, "EventType").text = event_type or None
    ET.SubElement(ev, "EventConcept").text = concept
    ET.SubElement(ev, "Start").text = _fmt(start)
    ET.SubElement(ev, "Duration").text = _fmt(duration)
    return ev


def psg_annotation_xml(
    stages: np.ndarray,
    events: Sequence[XmlEvent] = (),
    start: _dt.datetime | None = None,
    software: str = "OSF",
) -> bytes:
    """A ``<PSGAnnotation>`` document (current NSRR dialect): one stage event per run of 5-class ``stages``
    (0..4), then ``events`` in the order given; ``start`` (default 2000-01-01 00:00) gives the clock time."""
    start = start or _dt.datetime(2000, 1, 1)  # anonymised EDFs carry no usable clock time
    root = ET.Element("PSGAnnotation")
    ET.SubElement(root, "SoftwareVersion").text = software
    ET.SubElement(root, "EpochLength").text = str(int(EPOCH_SEC))
    scored = ET.SubElement(root, "ScoredEvents")
    rec = _scored_event(scored, "", "Recording Start Time", 0.0, len(stages) * EPOCH_SEC)
    ET.SubElement(rec, "ClockTime").text = "00.00.00 " + start.strftime("%H.%M.%S")
    for stage, first, count in stage_runs(stages):
        _scored_event(scored, "Stages|Stages", STAGE_CONCEPTS[stage], first * EPOCH_SEC, count * EPOCH_SEC)
    for ev in events:
        node = _scored_event(scored, ev.event_type, ev.concept, ev.onset, ev.duration)
        for tag, text in ev.fields:
            ET.SubElement(node, tag).text = text
    ET.indent(root, space=" ")
    body = ET.tostring(root, encoding="unicode")
    return ('<?xml version="1.0" encoding="UTF-8" standalone="no"?>\n' + body + "\n").encode("utf-8")


def write_psg_annotation(
    path: str | Path,
    stages: np.ndarray,
    events: Sequence[XmlEvent] = (),
    start: _dt.datetime | None = None,
    software: str = "OSF",
) -> Path:
    """Write :func:`psg_annotation_xml` to ``path`` atomically; returns the path."""
    return atomic_write_bytes(Path(path), psg_annotation_xml(stages, events, start, software))

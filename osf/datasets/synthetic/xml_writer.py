"""NSRR XML (current ``<PSGAnnotation>`` dialect) of a synthetic night: stage runs and scored events."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np

from osf.datasets.synthetic.events import EVENT_XML, ScoredEvent
from osf.datasets.synthetic.hypnogram import EPOCH_SEC, stage_runs
from osf.utils.atomic import atomic_write_bytes

STAGE_CONCEPTS: dict[int, str] = {
    0: "Wake|0",
    1: "Stage 1 sleep|1",
    2: "Stage 2 sleep|2",
    3: "Stage 3 sleep|3",
    4: "REM sleep|5",
}


def _fmt(x: float) -> str:
    return f"{x:.1f}"


def _event(parent: ET.Element, etype: str, concept: str, start: float, duration: float) -> ET.Element:
    ev = ET.SubElement(parent, "ScoredEvent")
    ET.SubElement(ev, "EventType").text = etype or None
    ET.SubElement(ev, "EventConcept").text = concept
    ET.SubElement(ev, "Start").text = _fmt(start)
    ET.SubElement(ev, "Duration").text = _fmt(duration)
    return ev


def nsrr_xml(
    stages: np.ndarray,
    events: list[ScoredEvent],
    start: dt.datetime,
    locations: dict[str, str],
    software: str = "Compumedics",
) -> bytes:
    """The XML document as bytes; ``locations`` maps event kind -> EDF label for <SignalLocation>."""
    root = ET.Element("PSGAnnotation")
    ET.SubElement(root, "SoftwareVersion").text = software
    ET.SubElement(root, "EpochLength").text = str(int(EPOCH_SEC))
    scored = ET.SubElement(root, "ScoredEvents")
    rec = _event(scored, "", "Recording Start Time", 0.0, len(stages) * EPOCH_SEC)
    ET.SubElement(rec, "ClockTime").text = "00.00.00 " + start.strftime("%H.%M.%S")
    for stage, first, count in stage_runs(stages):
        _event(scored, "Stages|Stages", STAGE_CONCEPTS[stage], first * EPOCH_SEC, count * EPOCH_SEC)
    for ev in sorted(events, key=lambda e: (e.onset, e.kind)):
        etype, concept, _ = EVENT_XML[ev.kind]
        node = _event(scored, etype, concept, ev.onset, ev.duration)
        if ev.kind in locations:
            ET.SubElement(node, "SignalLocation").text = locations[ev.kind]
        if ev.kind == "desaturation":
            ET.SubElement(node, "SpO2Nadir").text = _fmt(ev.nadir)
            ET.SubElement(node, "SpO2Baseline").text = _fmt(ev.baseline)
    ET.indent(root, space=" ")
    body = ET.tostring(root, encoding="unicode")
    return ('<?xml version="1.0" encoding="UTF-8" standalone="no"?>\n' + body + "\n").encode("utf-8")


def write_nsrr_xml(path: Path, *args, **kwargs) -> Path:
    """Write :func:`nsrr_xml` to ``path`` atomically."""
    return atomic_write_bytes(path, nsrr_xml(*args, **kwargs))

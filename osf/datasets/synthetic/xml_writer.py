"""NSRR XML of a synthetic night: its scored events as ``XmlEvent``s for the NSRR-XML writer in
``osf.datasets.io.nsrr_xml`` (which also writes predicted hypnograms)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np

from osf.datasets.io.nsrr_xml import XmlEvent, psg_annotation_xml
from osf.datasets.synthetic.events import EVENT_XML, ScoredEvent
from osf.utils.atomic import atomic_write_bytes


def _fmt(x: float) -> str:
    return f"{x:.1f}"


def xml_events(events: list[ScoredEvent], locations: dict[str, str]) -> list[XmlEvent]:
    """The events in time order as ``XmlEvent``s; ``locations`` maps event kind -> EDF label for <SignalLocation>."""
    out = []
    for ev in sorted(events, key=lambda e: (e.onset, e.kind)):
        etype, concept, _ = EVENT_XML[ev.kind]
        fields = [("SignalLocation", locations[ev.kind])] if ev.kind in locations else []
        if ev.kind == "desaturation":
            fields += [("SpO2Nadir", _fmt(ev.nadir)), ("SpO2Baseline", _fmt(ev.baseline))]
        out.append(XmlEvent(etype, concept, ev.onset, ev.duration, tuple(fields)))
    return out


def nsrr_xml(
    stages: np.ndarray,
    events: list[ScoredEvent],
    start: dt.datetime,
    locations: dict[str, str],
    software: str = "Compumedics",
) -> bytes:
    """The XML document of a synthetic night as bytes."""
    return psg_annotation_xml(stages, xml_events(events, locations), start, software)


def write_nsrr_xml(path: Path, *args, **kwargs) -> Path:
    """Write :func:`nsrr_xml` (same arguments after ``path``) to ``path`` atomically."""
    return atomic_write_bytes(path, nsrr_xml(*args, **kwargs))

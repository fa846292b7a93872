"""Compumedics Profusion XML (``<CMPStudyConfig>``): one ``<SleepStage>`` code per epoch and
``<ScoredEvent>`` entries with ``<Name>``, ``<Start>``, ``<Duration>`` (seconds from the start).

``<ScoredEventSettings>`` also holds ``<Name>`` elements (the scoring palette, not events): only
``<ScoredEvents>`` is read.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from osf import config
from osf.datasets.io.errors import EpochGridError, MalformedScoringError
from osf.datasets.io.nsrr_xml import number, parse_xml
from osf.datasets.io.scoring import Scoring, build_scoring


def read_profusion(path: str | Path) -> Scoring:
    """Read a Compumedics Profusion scoring file."""
    path = Path(path)
    root = parse_xml(path)
    if root.tag != "CMPStudyConfig":
        raise MalformedScoringError(path, f"root element is <{root.tag}>, expected <CMPStudyConfig>")
    epoch_text = (root.findtext("EpochLength") or "").strip()
    if epoch_text:
        try:
            epoch_len = float(epoch_text)
        except ValueError:
            raise MalformedScoringError(path, f"<EpochLength> is not a number: {epoch_text!r}") from None
        if epoch_len != config.EPOCH_SEC:
            raise EpochGridError(
                path, f"stages are scored in {epoch_len:g} s epochs; OSF needs {config.EPOCH_SEC} s epochs"
            )
    unknown: Counter = Counter()
    codes = []
    stages_el = root.find("SleepStages")
    for i, el in enumerate(stages_el if stages_el is not None else []):
        text = (el.text or "").strip()
        try:
            code = int(text)
        except ValueError:
            raise MalformedScoringError(path, f"<SleepStage> {i} is not an integer: {text!r}") from None
        if code not in config.PROFUSION_STAGE_CODES:
            unknown[f"SleepStage {code}"] += 1
        codes.append(config.PROFUSION_STAGE_CODES.get(code, config.STAGE_UNKNOWN))
    events = []
    container = root.find("ScoredEvents")
    for i, ev in enumerate(container.findall("ScoredEvent") if container is not None else []):
        name = (ev.findtext("Name") or "").strip()
        if not name:
            raise MalformedScoringError(path, f"scored event {i} has no <Name>")
        start = number(path, ev.findtext("Start"), "<Start>", i)
        duration = number(path, ev.findtext("Duration"), "<Duration>", i)
        if start is None or duration is None:
            raise MalformedScoringError(path, f"scored event {i} ({name!r}) lacks <Start> or <Duration>")
        events.append((start, duration, name))
    return build_scoring(
        path, "profusion", [], events, stages=np.asarray(codes, dtype=np.int8), extra_unknown=unknown
    )

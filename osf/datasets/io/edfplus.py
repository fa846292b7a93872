"""EDF+ annotation files (Sleep-EDF hypnograms): TAL annotations ``Sleep stage W|1|2|3|4|R|?`` and
``Movement time`` with onset and duration in seconds from the file's start.

A Sleep-EDF hypnogram starts at the same clock time as its PSG; ``Scoring.start_clock`` carries
it so the caller can check. A file with stage annotations only does not score events, so its event
columns are unknown (-1), not "no event".
"""

from __future__ import annotations

import warnings
from pathlib import Path

from osf.datasets.io.edf import read_edf_header
from osf.datasets.io.errors import MalformedScoringError
from osf.datasets.io.scoring import Scoring, build_scoring, split_named_events


def read_edfplus_scoring(path: str | Path) -> Scoring:
    """Read the annotations of an EDF+ file as a scoring."""
    import edfio

    path = Path(path)
    header = read_edf_header(path)  # clear errors for non-EDF / truncated files
    if not any(s.is_annotation for s in header.signals):
        raise MalformedScoringError(path, "EDF file without an 'EDF Annotations' signal: no scoring in it")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            annotations = edfio.read_edf(path).annotations
    except Exception as err:  # noqa: BLE001 - edfio raises assorted errors on broken TALs; name the file
        raise MalformedScoringError(path, f"unreadable EDF+ annotations: {err}") from None
    items = [(float(a.onset), float(a.duration or 0.0), a.text) for a in annotations if a.text]
    stage_runs, events = split_named_events(items)
    return build_scoring(
        path,
        "edfplus",
        stage_runs,
        events,
        scores_events=None,
        start_clock=header.start_time.time() if header.start_time else None,
    )

"""Plain event tables: CSV or TSV with a header row naming onset, duration and description columns
(BIDS ``events.tsv`` and NCHSDB use exactly these). Onsets are seconds from the recording start.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from osf.datasets.io.errors import MalformedScoringError
from osf.datasets.io.scoring import Scoring, build_scoring, split_named_events

_COLUMN_NAMES = {
    "onset": ("onset", "start", "onset_s", "start_s", "start (s)", "onset (s)"),
    "duration": ("duration", "duration_s", "duration (s)", "duration (seconds)"),
    "description": ("description", "event", "annotation", "label", "name", "trial_type"),
}


def read_csv_scoring(path: str | Path) -> Scoring:
    """Read an onset/duration/description CSV or TSV."""
    path = Path(path)
    with path.open("r", encoding="utf-8-sig", errors="replace") as f:
        first = f.readline()
    sep = "\t" if "\t" in first else (";" if ";" in first and "," not in first else ",")
    try:
        table = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise MalformedScoringError(path, f"unreadable event table: {err}") from None
    lowered = {c.strip().lower(): c for c in table.columns}
    cols = {}
    for key, options in _COLUMN_NAMES.items():
        hit = next((lowered[o] for o in options if o in lowered), None)
        if hit is None and key != "duration":
            raise MalformedScoringError(
                path, f"no {key!r} column; header is {list(table.columns)}, expected onset, duration, description"
            )
        cols[key] = hit
    items = []
    for row, rec in enumerate(table.to_dict("records"), start=2):  # line 1 is the header
        desc = str(rec[cols["description"]]).strip()
        values = []
        for key in ("onset", "duration"):
            text = str(rec[cols[key]]).strip() if cols[key] else ""
            if key == "duration" and text in ("", "n/a"):
                values.append(0.0)
                continue
            try:
                value = float(text)
            except ValueError:
                raise MalformedScoringError(
                    path, f"line {row}: {key} {text!r} is not a number of seconds from the recording start"
                ) from None
            if not math.isfinite(value) or (key == "duration" and value < 0):
                raise MalformedScoringError(path, f"line {row}: invalid {key} {value}")
            values.append(value)
        if desc:
            items.append((values[0], values[1], desc))
    stage_runs, events = split_named_events(items)
    return build_scoring(path, "csv", stage_runs, events, scores_events=bool(events))

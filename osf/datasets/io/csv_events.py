"""Plain event tables: CSV or TSV with a header row naming onset, duration and description columns
(BIDS ``events.tsv`` and NCHSDB use exactly these). Onsets are seconds from the recording start,
or clock times ``HH:MM:SS[.f]`` (STAGES) which need the recording start time to become seconds; a
clock time earlier than the start is taken to be after midnight.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from pathlib import Path

import pandas as pd

from osf.datasets.io.errors import MalformedScoringError
from osf.datasets.io.scoring import Scoring, build_scoring, split_named_events

_CLOCK = re.compile(r"^(\d{1,2}):(\d{2}):(\d{2}(?:\.\d*)?)$")
_COLUMN_NAMES = {
    "onset": ("onset", "start", "onset_s", "start_s", "start (s)", "onset (s)", "start time"),
    "duration": ("duration", "duration_s", "duration (s)", "duration (seconds)"),
    "description": ("description", "event", "annotation", "label", "name", "trial_type"),
}


def _clock_onset(text: str, start: _dt.time | _dt.datetime | None) -> float | None:
    """Seconds from ``start`` for a clock-time onset; None if ``text`` is not a clock time."""
    m = _CLOCK.match(text)
    if m is None or start is None:
        return None
    start_t = start.time() if isinstance(start, _dt.datetime) else start
    t = int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))
    s = start_t.hour * 3600 + start_t.minute * 60 + start_t.second + start_t.microsecond / 1e6
    return (t - s) % 86400.0


def read_csv_scoring(path: str | Path, recording_start: _dt.time | _dt.datetime | None = None) -> Scoring:
    """Read an onset/duration/description CSV or TSV (clock-time onsets need ``recording_start``)."""
    path = Path(path)
    table = _read_table(path)
    cols = _find_columns(path, table)
    items = []
    for row, rec in enumerate(table.to_dict("records"), start=2):  # line 1 is the header
        desc = str(rec[cols["description"]]).strip()
        onset = _time_field(path, row, "onset", _cell(rec, cols["onset"]), recording_start)
        duration = _time_field(path, row, "duration", _cell(rec, cols["duration"]), recording_start)
        if desc:
            items.append((onset, duration, desc))
    stage_runs, events = split_named_events(items)
    return build_scoring(path, "csv", stage_runs, events, scores_events=None)


def _read_table(path: Path) -> pd.DataFrame:
    """The table as strings, its separator (tab, semicolon or comma) guessed from the header line."""
    with path.open("r", encoding="utf-8-sig", errors="replace") as f:
        first = f.readline()
    sep = "\t" if "\t" in first else (";" if ";" in first and "," not in first else ",")
    try:
        return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise MalformedScoringError(path, f"unreadable event table: {err}") from None


def _find_columns(path: Path, table: pd.DataFrame) -> dict[str, str | None]:
    """Column of each field (``duration`` may be missing: None)."""
    lowered = {c.strip().lower(): c for c in table.columns}
    cols = {}
    for key, options in _COLUMN_NAMES.items():
        hit = next((lowered[o] for o in options if o in lowered), None)
        if hit is None and key != "duration":
            raise MalformedScoringError(
                path,
                f"no {key!r} column; header is {list(table.columns)}, expected onset, duration, description",
            )
        cols[key] = hit
    return cols


def _cell(rec: dict, column: str | None) -> str:
    return str(rec[column]).strip() if column else ""


def _time_field(
    path: Path, row: int, key: str, text: str, recording_start: _dt.time | _dt.datetime | None
) -> float:
    """Seconds of an onset or duration cell (an empty or ``n/a`` duration is 0)."""
    if key == "duration" and text in ("", "n/a"):
        return 0.0
    try:
        value = float(text)
    except ValueError:
        clock = _clock_onset(text, recording_start) if key == "onset" else None
        if clock is None:
            hint = " (a clock time: pass recording_start)" if _CLOCK.match(text) else ""
            raise MalformedScoringError(
                path,
                f"line {row}: {key} {text!r} is not a number of seconds from the recording start{hint}",
            ) from None
        value = clock
    if not math.isfinite(value) or (key == "duration" and value < 0):
        raise MalformedScoringError(path, f"line {row}: invalid {key} {value}")
    return value

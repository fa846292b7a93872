"""The format of a scoring file and its reader: ``detect_format`` and ``read_scoring`` (any supported format).

Each format's reader (``nsrr_xml``, ``profusion``, ``edfplus``, ``csv_events``) builds the one
:class:`~osf.datasets.io.scoring.Scoring` type; this module only picks the reader, so the type does not
import its readers.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

from osf.datasets.io.csv_events import read_csv_scoring
from osf.datasets.io.edfplus import read_edfplus_scoring
from osf.datasets.io.errors import UnknownScoringFormatError
from osf.datasets.io.nsrr_xml import read_psg_annotation
from osf.datasets.io.profusion import read_profusion
from osf.datasets.io.scoring import Scoring

__all__ = ["detect_format", "read_scoring"]


def detect_format(path: str | Path) -> str:
    """The scoring format of a file, from its suffix and (for XML) its root element."""
    path = Path(path)
    if not path.is_file():
        raise UnknownScoringFormatError(path, "file does not exist")
    suffix = path.suffix.lower()
    if suffix in (".edf", ".rec", ".bdf"):
        return "edfplus"
    if suffix in (".csv", ".tsv", ".txt"):
        return "csv"
    with path.open("rb") as f:
        head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"<"):
        if b"<CMPStudyConfig" in head:
            return "profusion"
        if b"<PSGAnnotation" in head:
            return "nsrr_xml"  # the parser tells the SRO dialect apart
        raise UnknownScoringFormatError(
            path,
            "XML file with neither a <PSGAnnotation> nor a <CMPStudyConfig> root: not a scoring file OSF reads",
        )
    if head.startswith(b"0       "):
        return "edfplus"
    raise UnknownScoringFormatError(
        path, f"unrecognised scoring format (suffix {suffix!r}); expected NSRR/Profusion XML, EDF+ or CSV"
    )


def read_scoring(path: str | Path, recording_start: _dt.time | _dt.datetime | None = None) -> Scoring:
    """Read a scoring file of any supported format into a :class:`Scoring` (format auto-detected).

    ``recording_start`` (the EDF start, e.g. ``EdfRecording.start_time``) is needed only for event
    tables whose onsets are clock times (STAGES CSV); other formats carry relative times.
    """
    path = Path(path)
    fmt = detect_format(path)
    if fmt == "nsrr_xml":
        return read_psg_annotation(path)
    if fmt == "profusion":
        return read_profusion(path)
    if fmt == "edfplus":
        return read_edfplus_scoring(path)
    return read_csv_scoring(path, recording_start)

"""Errors raised while reading PSG files; every message starts with the file it is about.

All derive from :class:`IngestionError` (a ``ValueError``), so a batch job can catch one type,
record ``str(err)`` as the reason and go on with the next recording.
"""

from __future__ import annotations

from pathlib import Path


class IngestionError(ValueError):
    """A PSG input file cannot be used; ``path`` names it and the message says why."""

    def __init__(self, path: str | Path | None, problem: str) -> None:
        self.path = None if path is None else Path(path)
        self.problem = problem
        where = str(path) if path is not None else "<input>"
        super().__init__(f"{where}: {problem}")


# --- EDF / BDF ----------------------------------------------------------------------------------
class EdfError(IngestionError):
    """An EDF/BDF file is unreadable or inconsistent."""


class NotEdfError(EdfError):
    """The file is not an EDF/BDF file (wrong version field, too short for a header, ...)."""


class EdfHeaderError(EdfError):
    """The header contradicts itself or the data (record count, sizes, ranges, unparsable fields)."""


class TruncatedEdfError(EdfHeaderError):
    """The file holds fewer data than its header declares (an interrupted copy or recording)."""


class DiscontinuousEdfError(EdfError):
    """An EDF+D/BDF+D file whose data records have gaps; OSF refuses these (see ``read_edf``)."""


# --- channels -----------------------------------------------------------------------------------
class ChannelError(IngestionError):
    """A channel cannot be found or identified unambiguously."""


class DuplicateLabelError(ChannelError):
    """A label needed for ingestion occurs more than once (in the EDF or in a channel map)."""


class MissingChannelError(ChannelError):
    """A label that was asked for is not in the EDF file."""


class ChannelMapError(ChannelError):
    """A user channel map is malformed (unknown canonical name, bad value, label not in the file)."""


# --- scoring ------------------------------------------------------------------------------------
class ScoringError(IngestionError):
    """A scoring (annotation) file cannot be used."""


class UnknownScoringFormatError(ScoringError):
    """The scoring file is none of the formats OSF reads."""


class MalformedScoringError(ScoringError):
    """The scoring file is of a known format but broken (bad XML, missing or non-numeric fields)."""


class EpochGridError(ScoringError):
    """Sleep stages that do not fall on the 30 s epoch grid starting at the recording start."""


class ScoringMismatchError(ScoringError):
    """A scoring file that does not fit its recording (start far off, no usable stage, no events, past the end).

    Refused by default; ``accept_scoring_mismatch=True`` (``--accept_scoring_mismatch``) ingests the
    night anyway, with the problems in its QC and any unusable label column unknown (-1).
    """

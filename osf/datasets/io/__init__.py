"""Readers of PSG files: EDF/EDF+/BDF signals, scoring files of every supported format, channel resolution."""

from osf.datasets.io.channels import ChannelResolution, ChannelSource, load_channel_map, resolve_channels
from osf.datasets.io.edf import EdfHeader, EdfRecording, edf_labels, read_edf, read_edf_header
from osf.datasets.io.errors import (
    ChannelError,
    ChannelMapError,
    DiscontinuousEdfError,
    DuplicateLabelError,
    EdfError,
    EdfHeaderError,
    EpochGridError,
    IngestionError,
    MalformedScoringError,
    MissingChannelError,
    NotEdfError,
    ScoringError,
    ScoringMismatchError,
    TruncatedEdfError,
    UnknownScoringFormatError,
)
from osf.datasets.io.layout import RecordingSource, find_recordings, find_scoring, parse_recording_name
from osf.datasets.io.scoring import Scoring, classify_event_name
from osf.datasets.io.scoring_formats import detect_format, read_scoring

__all__ = [
    "ChannelError",
    "ChannelMapError",
    "ChannelResolution",
    "ChannelSource",
    "DiscontinuousEdfError",
    "DuplicateLabelError",
    "EdfError",
    "EdfHeader",
    "EdfHeaderError",
    "EdfRecording",
    "EpochGridError",
    "IngestionError",
    "MalformedScoringError",
    "MissingChannelError",
    "NotEdfError",
    "RecordingSource",
    "Scoring",
    "ScoringError",
    "ScoringMismatchError",
    "TruncatedEdfError",
    "UnknownScoringFormatError",
    "classify_event_name",
    "detect_format",
    "edf_labels",
    "find_recordings",
    "find_scoring",
    "load_channel_map",
    "parse_recording_name",
    "read_edf",
    "read_edf_header",
    "read_scoring",
    "resolve_channels",
]

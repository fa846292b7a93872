"""Staging one night end to end: EDF -> ingestion -> classifier(s) -> hypnogram, event probabilities,
summary statistics, QC report and a figure (``main_pipelines/main_predict.py`` wraps :func:`predict_night`).

For other sleep tools: ``<stem>_hypnogram.tsv`` (BIDS-style onset, duration, stage),
:func:`hypnogram_annotations` (``mne.Annotations``), and YASA-defined statistics
(:func:`yasa_statistics`, :func:`stage_agreement_statistics`)."""

from osf.predict.night import NightPrediction, predict_night
from osf.predict.report import MissingChannelsError, MissingChannelsWarning
from osf.predict.summary import stage_agreement_statistics, summarize_night, yasa_statistics
from osf.predict.writers import hypnogram_annotations, hypnogram_events, write_bids_hypnogram

__all__ = [
    "MissingChannelsError",
    "MissingChannelsWarning",
    "NightPrediction",
    "hypnogram_annotations",
    "hypnogram_events",
    "predict_night",
    "stage_agreement_statistics",
    "summarize_night",
    "write_bids_hypnogram",
    "yasa_statistics",
]

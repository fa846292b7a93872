"""Staging one night end to end: EDF -> ingestion -> classifier(s) -> hypnogram, event probabilities,
summary statistics, QC report and a figure (``main_pipelines/main_predict.py`` wraps :func:`predict_night`)."""

from osf.predict.night import NightPrediction, predict_night
from osf.predict.report import MissingChannelsError, MissingChannelsWarning
from osf.predict.summary import summarize_night

__all__ = ["MissingChannelsError", "MissingChannelsWarning", "NightPrediction", "predict_night", "summarize_night"]

"""Signal pipeline of one recording: channel mapping and derivations, EMG band-pass, resampling to
64 Hz, robust normalisation, 30 s epochs, quality flags (``process_recording``)."""

from osf.datasets.preprocess.pipeline import (
    PIPELINE_VERSION,
    NoUsableSignalError,
    RecordingTooShortError,
    epochs_from_signals,
    pipeline_settings,
    process_recording,
)

__all__ = [
    "PIPELINE_VERSION",
    "NoUsableSignalError",
    "RecordingTooShortError",
    "epochs_from_signals",
    "pipeline_settings",
    "process_recording",
]

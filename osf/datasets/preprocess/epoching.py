"""Cutting 64 Hz signals into 30 s epochs and aligning scoring labels with them.

Epoch ``k`` covers ``[30 k, 30 (k + 1))`` s from the EDF start, the same grid the scoring uses
(NSRR times are seconds from the EDF start). A trailing partial epoch is dropped. When the scoring
covers fewer epochs than the signal, the uncovered epochs get -1 labels; when it covers more, the
extra scored epochs (and events past the signal end) are dropped. Both cases are reported.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from osf import config
from osf.datasets.io.scoring import Scoring
from osf.datasets.recording import LABEL_FIELDS


def count_epochs(n_samples: int, samples_per_epoch: int = config.EPOCH_SAMPLES) -> int:
    """Number of whole epochs in ``n_samples`` samples (a trailing partial epoch is dropped)."""
    return int(n_samples) // samples_per_epoch


def unknown_labels(n_epochs: int) -> dict[str, np.ndarray]:
    """All label columns at -1 (no scoring)."""
    return {name: np.full(n_epochs, -1, dtype=np.int8) for name in LABEL_FIELDS}


def align_scoring(scoring: Scoring, n_epochs: int) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Per-epoch labels of ``scoring`` on the signal's ``n_epochs`` grid, and a report of the fit.

    The report says how many epochs were scored,
    how many signal epochs had no scoring (-1) and how many scored epochs / events lay past the
    signal end (dropped).
    """
    stages = np.asarray(scoring.stages)
    n_scored = len(stages)
    labels = scoring.epoch_labels(n_epochs)
    out = unknown_labels(n_epochs)
    for name in LABEL_FIELDS:
        if name in labels:
            column = np.asarray(labels[name]).astype(np.int8)
            if column.shape != (n_epochs,):
                raise ValueError(
                    f"{scoring.source}: scoring gave {column.shape[0]} {name!r} labels for {n_epochs} signal epochs"
                )
            out[name] = column
    # NaN onsets (untimed events) compare False: they are not counted as past the end.
    events_past_end = int((scoring.events["onset"].to_numpy(float) >= n_epochs * config.EPOCH_SEC).sum())
    if n_scored == n_epochs:
        status = "match"
    elif n_scored < n_epochs:
        status = "scoring_shorter"
    else:
        status = "scoring_longer"
    report = {
        "status": status,
        "signal_epochs": int(n_epochs),
        "scored_epochs": n_scored,
        "signal_epochs_without_scoring": max(n_epochs - n_scored, 0),
        "scored_epochs_past_signal_end": max(n_scored - n_epochs, 0),
        "events_past_signal_end": events_past_end,
        "stage_counts": {
            name: int((out["stage"] == i).sum()) for i, name in enumerate(config.STAGE_NAMES_5)
        }
        | {"unknown": int((out["stage"] < 0).sum())},
    }
    return out, report

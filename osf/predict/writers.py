"""Writers of a predicted night's files: per-epoch CSV, NSRR-XML, EDF+ and BIDS-style TSV hypnograms, JSON
(all atomic), and the hypnogram as ``mne.Annotations``."""

from __future__ import annotations

import datetime
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from osf import config
from osf.datasets.io.nsrr_xml import write_psg_annotation
from osf.datasets.io.scoring import stage_runs
from osf.downstream.results import to_jsonable
from osf.utils.atomic import atomic_path


def write_json(path: str | Path, payload: dict) -> Path:
    """Write ``payload`` as indented JSON (non-finite numbers as null)."""
    text = json.dumps(to_jsonable(payload), indent=2, allow_nan=False)
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n")
    return Path(path)


def write_table(path: str | Path, table: pd.DataFrame) -> Path:
    """Write a DataFrame as CSV without its index."""
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.5f")
    return Path(path)


# Stage name -> the 5-class stage label written to hypnogram files. The 4-class model's Light (N1+N2)
# and Deep (N3) have no label of their own in NSRR XML or EDF+: they are written as stage 2 and
# stage 3, which read back to Light and Deep under config.STAGE_5_TO_4.
STAGE_TO_5: dict[str, int] = {"W": 0, "N1": 1, "N2": 2, "N3": 3, "REM": 4, "Light": 2, "Deep": 3}
# 5-class stage -> Sleep-EDF's EDF+ annotation text.
EDF_STAGE_TEXT: dict[int, str] = {
    0: "Sleep stage W", 1: "Sleep stage 1", 2: "Sleep stage 2", 3: "Sleep stage 3", 4: "Sleep stage R",
}


def stages_as_5_class(stages: np.ndarray, stage_names: Sequence[str]) -> np.ndarray:
    """Predicted stages (indices into ``stage_names``) as 5-class labels 0..4 for hypnogram files."""
    unknown = [n for n in stage_names if n not in STAGE_TO_5]
    if unknown:
        raise ValueError(f"no hypnogram label for stage(s) {unknown}; known: {sorted(STAGE_TO_5)}")
    stages = np.asarray(stages)
    if (stages < 0).any():
        raise ValueError("hypnogram files hold predicted stages only: found unknown (-1) epochs")
    return np.asarray([STAGE_TO_5[n] for n in stage_names], dtype=np.int64)[stages]


def write_nsrr_xml(
    path: str | Path,
    stages: np.ndarray,
    stage_names: Sequence[str],
    start: datetime.datetime | None = None,
    software: str = "OSF",
) -> Path:
    """Write a hypnogram in the current NSRR XML dialect, one ``ScoredEvent`` per run of a stage."""
    return write_psg_annotation(path, stages_as_5_class(stages, stage_names), start=start, software=software)


def write_edf_hypnogram(
    path: str | Path,
    stages: np.ndarray,
    stage_names: Sequence[str],
    epoch_sec: float = config.EPOCH_SEC,
) -> Path:
    """Write a hypnogram as an annotations-only EDF+ file (Sleep-EDF ``Sleep stage X`` texts, one per run)."""
    from edfio import Edf, EdfAnnotation

    annotations = [
        EdfAnnotation(first * epoch_sec, n * epoch_sec, EDF_STAGE_TEXT[label])
        for label, first, n in stage_runs(stages_as_5_class(stages, stage_names))
    ]
    with atomic_path(path) as tmp:
        Edf([], annotations=annotations).write(tmp)
    return Path(path)


def hypnogram_events(stages: np.ndarray, stage_names: Sequence[str], epoch_sec: float = config.EPOCH_SEC) -> pd.DataFrame:
    """One row per epoch: ``onset`` and ``duration`` in seconds from the recording start, ``stage`` name.

    Unknown (-1) epochs get the BIDS missing value ``n/a``.
    """
    stages = np.asarray(stages)
    labels = np.asarray([*stage_names, "n/a"], dtype=object)  # index -1 picks "n/a"
    return pd.DataFrame({
        "onset": np.arange(len(stages)) * float(epoch_sec),
        "duration": np.full(len(stages), float(epoch_sec)),
        "stage": labels[stages],
    })


def write_bids_hypnogram(
    path: str | Path, stages: np.ndarray, stage_names: Sequence[str], epoch_sec: float = config.EPOCH_SEC
) -> Path:
    """Write a BIDS-style events table (``<name>_hypnogram.tsv``: onset, duration, stage; tab-separated)."""
    with atomic_path(path) as tmp:
        hypnogram_events(stages, stage_names, epoch_sec).to_csv(tmp, sep="\t", index=False, na_rep="n/a")
    return Path(path)


def hypnogram_annotations(
    stages: np.ndarray,
    stage_names: Sequence[str],
    epoch_sec: float = config.EPOCH_SEC,
    orig_time: datetime.datetime | None = None,
):
    """The hypnogram as ``mne.Annotations``, one per run of a stage, with the EDF+ file's texts.

    Descriptions are Sleep-EDF's ``Sleep stage W/1/2/3/R`` (what :func:`write_edf_hypnogram` writes
    and MNE's sleep examples read); ``orig_time`` (the EDF start) anchors them to a recording.
    """
    import mne

    runs = stage_runs(stages_as_5_class(stages, stage_names))
    if orig_time is not None and orig_time.tzinfo is None:
        orig_time = orig_time.replace(tzinfo=datetime.timezone.utc)  # MNE wants an aware time; EDF clocks are UTC
    return mne.Annotations(
        onset=[first * epoch_sec for _, first, _ in runs],
        duration=[n * epoch_sec for _, _, n in runs],
        description=[EDF_STAGE_TEXT[label] for label, _, _ in runs],
        orig_time=orig_time,
    )

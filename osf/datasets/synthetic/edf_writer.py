"""EDF writing of a synthetic night (edfio), deterministic to the byte."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import edfio
import numpy as np

from osf.datasets.synthetic.cohorts import CohortPreset
from osf.utils.atomic import atomic_path


def write_edf(
    path: Path,
    preset: CohortPreset,
    signals: dict[str, np.ndarray],
    start: dt.datetime,
    recording_id: str,
    sex: str,
) -> Path:
    """Write one night as a 16-bit EDF (1 s data records), atomically (temp file then rename)."""
    edf_signals = []
    for ch in preset.channels:
        x = np.asarray(signals[ch.label], dtype=np.float64)
        if x.size % ch.rate:
            raise ValueError(
                f"{path}: signal {ch.label!r} has {x.size} samples, not whole seconds at {ch.rate} Hz"
            )
        lo, hi = ch.physical_range
        edf_signals.append(
            edfio.EdfSignal(
                np.clip(x, lo, hi),
                sampling_frequency=ch.rate,
                label=ch.label,
                transducer_type=ch.transducer,
                physical_dimension=ch.unit,
                physical_range=(lo, hi),
                prefiltering=ch.prefilter,
            )
        )
    edf = edfio.Edf(
        edf_signals,
        patient=edfio.Patient(code=recording_id, sex=sex if sex in ("M", "F") else "X"),
        recording=edfio.Recording(startdate=start.date(), equipment_code="OSF-synthetic"),
        starttime=start.time(),
        data_record_duration=1.0,
    )
    path = Path(path)
    with atomic_path(path, suffix=".edf") as tmp:
        edf.write(tmp)
    return path

"""Sleep statistics of one night from a hypnogram, and event indices from per-epoch event probabilities.

Definitions follow the AASM scoring manual's summary statistics, computed on 30 s epochs with the
recording start taken as lights off and the recording end as lights on (an EDF carries no
lights-off marker):

- time in bed (TIB): the whole recording; total sleep time (TST): epochs of any sleep stage.
- sleep efficiency (SE): TST / TIB in percent.
- sleep-onset latency (SOL): recording start to the first sleep epoch.
- wake after sleep onset (WASO): wake between the first and the last sleep epoch.
- REM latency: first sleep epoch to the first REM epoch.
- stage minutes (every stage, plus ``unknown`` for unscorable epochs, so they add up to TIB) and
  stage percentages of TST (sleep stages) or of TIB (wake).

Event indices are *estimates* from a per-epoch classifier: an event is a run of consecutive sleep
epochs whose probability reaches ``threshold``, so two events inside one 30 s epoch count once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

import config

WAKE = "W"
REM = "REM"

# Task name -> key of its per-hour index in the summary (AASM abbreviations in the comments).
EVENT_INDEX_KEYS: dict[str, str] = {
    "Arousal": "arousal_index",  # ArI
    "Hypopnea": "hypopnea_index",  # HI
    "Apnea": "apnea_index",  # AI
    "Oxygen Desaturation": "oxygen_desaturation_index",  # ODI
}
# Events that make up the respiratory event index (AHI-like): their union, per hour of sleep.
RESPIRATORY_EVENTS: tuple[str, ...] = ("Apnea", "Hypopnea")


def _validate_stages(stages: np.ndarray, stage_names: Sequence[str]) -> np.ndarray:
    stages = np.asarray(stages)
    if stages.ndim != 1:
        raise ValueError(f"stages must be a 1-D array of epoch labels, got shape {stages.shape}")
    if WAKE not in stage_names:
        raise ValueError(f"stage names {list(stage_names)} have no wake stage {WAKE!r}")
    bad = (stages < config.STAGE_UNKNOWN) | (stages >= len(stage_names))
    if bad.any():
        raise ValueError(
            f"stage labels must be -1 (unknown) or 0..{len(stage_names) - 1} ({list(stage_names)}); "
            f"found {sorted(set(stages[bad].tolist()))}"
        )
    return stages.astype(np.int64)


def _minutes(n_epochs: int | np.integer, epoch_sec: float) -> float:
    return float(n_epochs) * epoch_sec / 60.0


def _percent(part: float, whole: float) -> float:
    return 100.0 * part / whole if whole else 0.0


def sleep_statistics(
    stages: np.ndarray, stage_names: Sequence[str], epoch_sec: float = config.EPOCH_SEC
) -> dict:
    """AASM summary statistics (minutes, percent) of a hypnogram; -1 marks unknown epochs."""
    stages = _validate_stages(stages, stage_names)
    wake = stage_names.index(WAKE)
    rem = stage_names.index(REM) if REM in stage_names else None
    known = stages != config.STAGE_UNKNOWN
    asleep = known & (stages != wake)
    sleep_epochs = np.flatnonzero(asleep)
    tib = _minutes(len(stages), epoch_sec)
    tst = _minutes(asleep.sum(), epoch_sec)

    stage_minutes = {name: _minutes((stages == i).sum(), epoch_sec) for i, name in enumerate(stage_names)}
    stage_minutes["unknown"] = _minutes((~known).sum(), epoch_sec)
    stage_percent = {
        name: _percent(stage_minutes[name], tib if i == wake else tst) for i, name in enumerate(stage_names)
    }

    stats: dict = {
        "n_epochs": len(stages),
        "epoch_sec": float(epoch_sec),
        "time_in_bed_min": tib,
        "total_sleep_time_min": tst,
        "sleep_efficiency_pct": _percent(tst, tib),
        "sleep_onset_latency_min": None,
        "wake_after_sleep_onset_min": None,
        "rem_latency_min": None,
        "stage_minutes": stage_minutes,
        "stage_percent": stage_percent,
    }
    if len(sleep_epochs):
        onset, last = int(sleep_epochs[0]), int(sleep_epochs[-1])
        stats["sleep_onset_latency_min"] = _minutes(onset, epoch_sec)
        stats["wake_after_sleep_onset_min"] = _minutes((stages[onset : last + 1] == wake).sum(), epoch_sec)
        if rem is not None:
            rem_epochs = np.flatnonzero(stages == rem)
            if len(rem_epochs):
                stats["rem_latency_min"] = _minutes(int(rem_epochs[0]) - onset, epoch_sec)
    return stats


def count_runs(mask: np.ndarray) -> int:
    """Number of runs of consecutive True values in a 1-D boolean array."""
    mask = np.asarray(mask, dtype=bool)
    if mask.size == 0:
        return 0
    return int(mask[0]) + int(np.count_nonzero(mask[1:] & ~mask[:-1]))


def event_indices(
    event_probs: Mapping[str, np.ndarray],
    sleep_mask: np.ndarray,
    epoch_sec: float = config.EPOCH_SEC,
    threshold: float | Mapping[str, float] = 0.5,
) -> dict:
    """Estimated events and events per hour of sleep from per-epoch event probabilities.

    ``threshold`` is one probability for every task or one per task (missing tasks use 0.5).
    """
    sleep_mask = np.asarray(sleep_mask, dtype=bool)
    tst_hours = sleep_mask.sum() * epoch_sec / 3600.0
    if isinstance(threshold, Mapping):
        thresholds = {t: float(threshold.get(t, 0.5)) for t in event_probs}
    else:
        thresholds = dict.fromkeys(event_probs, float(threshold))
    out: dict = {"event_thresholds": thresholds}
    positives: dict[str, np.ndarray] = {}
    for task, probs in event_probs.items():
        probs = np.asarray(probs, dtype=np.float64)
        if probs.shape != sleep_mask.shape:
            raise ValueError(
                f"event probabilities for {task!r} have shape {probs.shape}, expected {sleep_mask.shape} (one per epoch)"
            )
        positives[task] = (probs >= thresholds[task]) & sleep_mask
        key = EVENT_INDEX_KEYS.get(task, task.lower().replace(" ", "_") + "_index")
        n_events = count_runs(positives[task])
        out[key.replace("_index", "_events")] = n_events
        out[key] = float(n_events / tst_hours) if tst_hours else None
    respiratory = [positives[t] for t in RESPIRATORY_EVENTS if t in positives]
    if respiratory:
        n_events = count_runs(np.logical_or.reduce(respiratory))
        out["respiratory_events"] = n_events
        out["respiratory_event_index"] = float(n_events / tst_hours) if tst_hours else None
        out["respiratory_event_index_from"] = [t for t in RESPIRATORY_EVENTS if t in positives]
    return out


def summarize_night(
    stages: np.ndarray,
    stage_names: Sequence[str],
    event_probs: Mapping[str, np.ndarray] | None = None,
    epoch_sec: float = config.EPOCH_SEC,
    event_threshold: float | Mapping[str, float] = 0.5,
) -> dict:
    """Sleep statistics of a hypnogram plus, when event probabilities are given, event indices."""
    stats = sleep_statistics(stages, stage_names, epoch_sec)
    stats["stage_names"] = list(stage_names)
    if event_probs:
        stages = np.asarray(stages)
        sleep_mask = (stages != config.STAGE_UNKNOWN) & (stages != list(stage_names).index(WAKE))
        stats["events"] = event_indices(event_probs, sleep_mask, epoch_sec, event_threshold)
    return stats

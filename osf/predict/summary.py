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
- sleep period time (SPT): first to last sleep epoch; sleep maintenance efficiency (SME): TST / SPT;
  stage latencies from the recording start (``stage_latency_min``; YASA's ``Lat_REM`` is
  ``rem_latency_min + sleep_onset_latency_min``); SOL to the first 5 minutes of unbroken sleep;
  sleep fragmentation index (SFI): sleep-to-wake transitions per hour of TST.

These are YASA's definitions (``yasa.Hypnogram.sleep_statistics``, unknown epochs as ``UNS``):
:func:`yasa_statistics` renames them to YASA's keys, and :func:`stage_agreement_statistics` gives
the epoch-by-epoch agreement of ``yasa.EpochByEpochAgreement`` (unknown epochs in either hypnogram
excluded); ``tests/test_predict_outputs.py`` checks both against YASA where it is installed.

Event indices are *estimates* from a per-epoch classifier: an event is a run of consecutive sleep
epochs whose probability reaches ``threshold``, so two events inside one 30 s epoch count once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from sklearn import metrics as skm

from osf import config, tasks
from osf.datasets.io.scoring import stage_runs

WAKE = "W"
REM = "REM"

# Events that make up the respiratory event index (AHI-like): their union, per hour of sleep.
RESPIRATORY_EVENTS: tuple[str, ...] = ("Apnea", "Hypopnea")
# Stage name -> yasa.Hypnogram label (5 stages, or 4 with LIGHT/DEEP); unknown epochs are "UNS".
YASA_STAGES: dict[str, str] = {"W": "WAKE", "N1": "N1", "N2": "N2", "N3": "N3", "REM": "REM", "Light": "LIGHT",
                               "Deep": "DEEP"}
SOL_RUN_MIN = 5.0  # minutes of unbroken sleep for the persistent sleep onset latency


def event_index_key(task: str) -> str:
    """Key of a task's per-hour index in the summary: its registered ``summary_key`` (``osf.tasks``), else
    ``<name>_index``."""
    registered = tasks.TASKS.get(task)
    return (registered.summary_key if registered and registered.summary_key
            else task.lower().replace(" ", "_") + "_index")


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
    stats.update(_sleep_period_statistics(stages, stage_names, asleep, wake, epoch_sec))
    return stats


def _sleep_period_statistics(
    stages: np.ndarray, stage_names: Sequence[str], asleep: np.ndarray, wake: int, epoch_sec: float
) -> dict:
    """SPT, SME, stage latencies from the start, persistent SOL and SFI (YASA's definitions)."""
    sleep_epochs = np.flatnonzero(asleep)
    tst = _minutes(asleep.sum(), epoch_sec)
    spt = _minutes(sleep_epochs[-1] + 1 - sleep_epochs[0], epoch_sec) if len(sleep_epochs) else 0.0
    latency = {}
    for i, name in enumerate(stage_names):
        if i != wake:
            first = np.flatnonzero(stages == i)
            latency[name] = _minutes(int(first[0]), epoch_sec) if len(first) else None
    # The run length is rounded up to whole epochs (3 epochs of 2 min for a 5 min run).
    min_epochs = math.ceil(SOL_RUN_MIN * 60 / epoch_sec - 1e-9)
    persistent = [first for is_sleep, first, n in stage_runs(asleep.astype(np.int64)) if is_sleep and n >= min_epochs]
    wake_after_sleep = int(np.count_nonzero(asleep[:-1] & (stages[1:] == wake)))
    return {
        "sleep_period_time_min": spt,
        "sleep_maintenance_efficiency_pct": _percent(tst, spt) if spt else None,
        "stage_latency_min": latency,
        "persistent_sleep_onset_latency_min": _minutes(persistent[0], epoch_sec) if persistent else None,
        "sleep_fragmentation_index": wake_after_sleep / (tst / 60.0) if tst else None,
    }


def yasa_statistics(stats: Mapping) -> dict[str, float]:
    """:func:`sleep_statistics` output under ``yasa.Hypnogram.sleep_statistics`` keys (NaN for undefined)."""

    def nan(value: float | None) -> float:
        return float("nan") if value is None else float(value)

    names = list(stats["stage_names"]) if "stage_names" in stats else list(stats["stage_percent"])
    out = {
        "TIB": stats["time_in_bed_min"], "SPT": stats["sleep_period_time_min"],
        "WASO": nan(stats["wake_after_sleep_onset_min"]), "TST": stats["total_sleep_time_min"],
        "SE": stats["sleep_efficiency_pct"], "SME": nan(stats["sleep_maintenance_efficiency_pct"]),
        "SFI": nan(stats["sleep_fragmentation_index"]), "SOL": nan(stats["sleep_onset_latency_min"]),
        "SOL_5min": nan(stats["persistent_sleep_onset_latency_min"]),
    }
    if REM in names:
        out["Lat_REM"] = nan(stats["stage_latency_min"][REM])
    for name in names:
        out[YASA_STAGES[name]] = stats["stage_minutes"][name]
    if stats["stage_minutes"]["unknown"]:
        out["UNS"] = stats["stage_minutes"]["unknown"]
    for name in names:
        if name != WAKE:
            out[f"%{YASA_STAGES[name]}"] = stats["stage_percent"][name] if out["TST"] else float("nan")
    return out


def stage_agreement_statistics(predicted: np.ndarray, scored: np.ndarray, stage_names: Sequence[str]) -> dict:
    """Epoch-by-epoch agreement of two hypnograms as ``yasa.EpochByEpochAgreement`` defines it.

    Epochs unknown (-1) in either are excluded; percentages are 0-100 like YASA's. Overall:
    accuracy, balanced accuracy, Cohen's kappa, Matthews correlation, support-weighted precision
    and F1; per stage present in either hypnogram: precision, recall, F1, specificity, NPV and
    support (the number of scored epochs of that stage).
    """
    predicted, scored = np.asarray(predicted), np.asarray(scored)
    if predicted.shape != scored.shape:
        raise ValueError(f"hypnograms differ in length: {predicted.shape} predicted vs {scored.shape} scored")
    valid = (predicted >= 0) & (scored >= 0)
    if not valid.any():
        return {"n_epochs": 0}
    true, pred = scored[valid], predicted[valid]
    labels = np.union1d(true, pred)
    overall = {
        "n_epochs": int(valid.sum()),
        "accuracy_pct": 100 * skm.accuracy_score(true, pred),
        "balanced_accuracy_pct": 100 * skm.balanced_accuracy_score(true, pred),
        "cohen_kappa": float(skm.cohen_kappa_score(true, pred)),
        "mcc": float(skm.matthews_corrcoef(true, pred)),
        "precision_weighted_pct": 100 * skm.precision_score(true, pred, average="weighted", zero_division=0),
        "f1_weighted_pct": 100 * skm.f1_score(true, pred, average="weighted", zero_division=0),
    }
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        true, pred, labels=labels, average=None, zero_division=np.nan
    )
    cm = skm.confusion_matrix(true, pred, labels=labels)
    tp = np.diag(cm)
    fp, fn = cm.sum(axis=0) - tp, cm.sum(axis=1) - tp
    tn = cm.sum() - tp - fp - fn
    by_stage = {}
    for i, label in enumerate(labels):
        by_stage[stage_names[label]] = {
            "precision_pct": 100 * float(precision[i]), "recall_pct": 100 * float(recall[i]),
            "f1_pct": 100 * float(f1[i]), "specificity_pct": _ratio_pct(tn[i], tn[i] + fp[i]),
            "npv_pct": _ratio_pct(tn[i], tn[i] + fn[i]), "support": int(support[i]),
        }
    return {**{k: float(v) if k != "n_epochs" else v for k, v in overall.items()}, "by_stage": by_stage}


def _ratio_pct(num: float, den: float) -> float:
    return 100 * float(num) / float(den) if den else float("nan")


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
        key = event_index_key(task)
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

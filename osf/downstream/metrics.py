"""Per-epoch evaluation metrics for sleep staging and event detection, with subject-level bootstrap CIs.

The scalar metrics are computed from a confusion matrix and from rank statistics so that a
1000-resample bootstrap over a full test set takes seconds; ``tests/test_metrics.py`` checks every
one of them against scikit-learn on the same predictions.

Conventions:
- ``y_true`` are integer class ids (``-1`` = unknown, removed before anything is computed).
- ``proba`` is ``[N, C]`` class probabilities (binary tasks: ``C == 2``, column 1 = event present).
- Confidence intervals resample *subjects* with replacement (epochs of one subject are correlated, so
  resampling epochs would give intervals that are far too narrow), percentile method.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from scipy.stats import rankdata

CI_LEVEL = 0.95


# --- building blocks ------------------------------------------------------------------------------
def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts ``[C, C]``: rows = true class, columns = predicted class."""
    idx = np.asarray(y_true, dtype=np.int64) * num_classes + np.asarray(y_pred, dtype=np.int64)
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def binary_auroc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve via the Mann-Whitney rank statistic (ties count 1/2, as sklearn)."""
    y = np.asarray(y, dtype=bool)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(score)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def binary_average_precision(y: np.ndarray, score: np.ndarray) -> float:
    """Average precision (area under the step precision-recall curve, sklearn's definition)."""
    y = np.asarray(y, dtype=bool)
    if not y.any():
        return math.nan
    order = np.argsort(-np.asarray(score), kind="mergesort")
    s, ys = np.asarray(score)[order], y[order]
    # one operating point per distinct score: tied samples enter together
    last_of_tie = np.r_[np.flatnonzero(np.diff(s)), ys.size - 1]
    tps = np.cumsum(ys)[last_of_tie]
    precision = tps / (last_of_tie + 1.0)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _nanmean(values: Sequence[float]) -> float:
    arr = np.asarray(values, dtype=np.float64)
    return float(np.nanmean(arr)) if np.isfinite(arr).any() else math.nan


def _f1_from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    denom = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), np.nan)


def kappa_from_confusion(cm: np.ndarray) -> float:
    """Unweighted Cohen's kappa from a confusion matrix."""
    n = cm.sum()
    if n == 0:
        return math.nan
    po = np.trace(cm) / n
    pe = float((cm.sum(0) * cm.sum(1)).sum()) / (n * n)
    if pe >= 1.0:
        return math.nan
    return float((po - pe) / (1.0 - pe))


def stage_fraction_error(
    y_true: np.ndarray, y_pred: np.ndarray, recording_ids: np.ndarray, num_classes: int
) -> tuple[float, np.ndarray]:
    """Per-night |predicted - true| fraction of time in each stage, averaged over nights.

    Returns (mean over nights and stages, per-stage mean over nights ``[C]``). This is what a
    clinician reads off a hypnogram (e.g. "% REM"), which epoch-wise scores do not show.
    """
    nights, inverse = np.unique(np.asarray(recording_ids), return_inverse=True)
    true_counts = np.zeros((nights.size, num_classes))
    pred_counts = np.zeros((nights.size, num_classes))
    np.add.at(true_counts, (inverse, y_true), 1)
    np.add.at(pred_counts, (inverse, y_pred), 1)
    n_per_night = true_counts.sum(1, keepdims=True)
    err = np.abs(pred_counts - true_counts) / n_per_night
    per_stage = err.mean(0)
    return float(per_stage.mean()), per_stage


# --- task metrics ---------------------------------------------------------------------------------
def multiclass_scalars(y_true: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """Scalar multi-class metrics (the ones bootstrapped)."""
    num_classes = proba.shape[1]
    y_pred = proba.argmax(1)
    cm = confusion_matrix(y_true, y_pred, num_classes)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(1)
    predicted = cm.sum(0)
    f1 = _f1_from_counts(tp, predicted - tp, support - tp)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(support > 0, tp / np.maximum(support, 1), np.nan)
    aurocs, auprcs = [], []
    for c in range(num_classes):
        pos = y_true == c
        aurocs.append(binary_auroc(pos, proba[:, c]))
        auprcs.append(binary_average_precision(pos, proba[:, c]))
    return {
        "accuracy": float(tp.sum() / max(cm.sum(), 1)),
        "balanced_accuracy": _nanmean(recall),
        "macro_f1": _nanmean(f1),
        "kappa": kappa_from_confusion(cm),
        "auroc": _nanmean(aurocs),
        "auprc": _nanmean(auprcs),
    }


def binary_scalars(y_true: np.ndarray, proba: np.ndarray, threshold: float) -> dict[str, float]:
    """Scalar binary metrics; F1/sensitivity/specificity at ``threshold`` on P(event)."""
    score = proba[:, 1] if proba.ndim == 2 else proba
    y = np.asarray(y_true) == 1
    pred = score >= threshold
    tp = float(np.sum(pred & y))
    fp = float(np.sum(pred & ~y))
    fn = float(np.sum(~pred & y))
    tn = float(np.sum(~pred & ~y))
    return {
        "auroc": binary_auroc(y, score),
        "auprc": binary_average_precision(y, score),
        "f1": float(_f1_from_counts(np.array(tp), np.array(fp), np.array(fn))),
        "sensitivity": tp / (tp + fn) if tp + fn > 0 else math.nan,
        "specificity": tn / (tn + fp) if tn + fp > 0 else math.nan,
        "accuracy": (tp + tn) / max(y.size, 1),
        "prevalence": float(y.mean()) if y.size else math.nan,
    }


def choose_threshold(y_true: np.ndarray, proba: np.ndarray) -> float:
    """Threshold on P(event) that maximises F1 (chosen on validation, then applied to test)."""
    score = proba[:, 1] if proba.ndim == 2 else np.asarray(proba)
    y = np.asarray(y_true) == 1
    if not y.any() or y.all():
        return 0.5
    order = np.argsort(-score, kind="mergesort")
    s, ys = score[order], y[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s)), ys.size - 1]
    tps = np.cumsum(ys)[last_of_tie]
    fps = last_of_tie + 1 - tps
    f1 = 2 * tps / (2 * tps + fps + (ys.sum() - tps))
    return float(s[last_of_tie[int(np.argmax(f1))]])


# --- bootstrap ------------------------------------------------------------------------------------
def bootstrap_ci(
    metric_fn: Callable[[np.ndarray], dict[str, float]],
    subject_ids: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = CI_LEVEL,
) -> dict[str, tuple[float, float]]:
    """Percentile CIs of every scalar that ``metric_fn(indices)`` returns, resampling subjects.

    ``metric_fn`` receives epoch indices (with repeats: a subject drawn twice counts twice).
    """
    return stratified_bootstrap_ci([metric_fn], [subject_ids], n_boot=n_boot, seed=seed, level=level)


def stratified_bootstrap_ci(
    metric_fns: Sequence[Callable[[np.ndarray], dict[str, float]]],
    subject_ids: Sequence[np.ndarray],
    n_boot: int = 1000,
    seed: int = 0,
    level: float = CI_LEVEL,
    resample_strata: bool = False,
) -> dict[str, tuple[float, float]]:
    """Percentile CIs of the mean over strata of ``metric_fns[s](indices)``, resampling subjects within each.

    A stratum is an independent evaluation (a run with its own subjects, e.g. one seed); each bootstrap
    draw resamples every stratum's subjects with replacement and averages the strata's metrics.
    ``resample_strata``: first draw the strata themselves with replacement (a hierarchical bootstrap:
    seeds, then subjects within each drawn seed; ``osf.evaluation.seeds``); with one stratum nothing
    is drawn at that level.
    """
    strata = [_subject_blocks(ids) for ids in subject_ids]
    rng = np.random.default_rng(seed)
    n_strata = len(strata)
    samples: dict[str, list[float]] = {}
    for _ in range(n_boot):
        chosen = rng.integers(0, n_strata, n_strata) if resample_strata and n_strata > 1 else range(n_strata)
        draws = []
        for s in chosen:
            blocks = strata[s]
            drawn = rng.integers(0, len(blocks), len(blocks))
            draws.append(metric_fns[s](np.concatenate([blocks[i] for i in drawn])))
        for k in draws[0]:
            samples.setdefault(k, []).append(float(np.mean([d[k] for d in draws])))
    lo_q, hi_q = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    out = {}
    for k, vals in samples.items():
        arr = np.asarray(vals, dtype=np.float64)
        arr = arr[np.isfinite(arr)]
        out[k] = (float(np.percentile(arr, lo_q)), float(np.percentile(arr, hi_q))) if arr.size else (math.nan, math.nan)
    return out


def _subject_blocks(subject_ids: np.ndarray) -> list[np.ndarray]:
    """Epoch indices of each subject, in the order of the sorted subject ids."""
    subjects, inverse = np.unique(np.asarray(subject_ids), return_inverse=True)
    order = np.argsort(inverse, kind="mergesort")
    bounds = np.r_[0, np.cumsum(np.bincount(inverse, minlength=subjects.size))]
    return [order[bounds[i] : bounds[i + 1]] for i in range(subjects.size)]


def evaluate_predictions(
    y_true: np.ndarray,
    proba: np.ndarray,
    subject_ids: np.ndarray,
    recording_ids: np.ndarray,
    class_names: Sequence[str],
    threshold: float | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict:
    """All metrics of one split, with ``<name>_ci95 = [low, high]`` beside each bootstrapped scalar.

    Binary tasks (two classes) use ``threshold`` on P(event) (pick it with :func:`choose_threshold`
    on validation; ``None`` = choose on these predictions, which is what validation itself does).
    Epochs with ``y_true == -1`` are dropped first; their count is reported as ``n_unlabelled``.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    proba = np.asarray(proba, dtype=np.float64)
    subject_ids = np.asarray(subject_ids)
    recording_ids = np.asarray(recording_ids)
    if proba.ndim != 2 or proba.shape[0] != y_true.shape[0] or proba.shape[1] != len(class_names):
        raise ValueError(
            f"predictions of shape {proba.shape} do not match {y_true.shape[0]} labels and "
            f"{len(class_names)} classes {list(class_names)}"
        )
    keep = y_true >= 0
    n_unlabelled = int((~keep).sum())
    y_true, proba, subject_ids, recording_ids = y_true[keep], proba[keep], subject_ids[keep], recording_ids[keep]
    if y_true.size == 0:
        raise ValueError("no labelled epochs to evaluate (all labels are -1)")
    if y_true.max() >= len(class_names):
        raise ValueError(f"label {int(y_true.max())} out of range for classes {list(class_names)}")
    num_classes = len(class_names)
    binary = num_classes == 2

    if binary:
        thr = choose_threshold(y_true, proba) if threshold is None else float(threshold)

        def scalars(idx: np.ndarray) -> dict[str, float]:
            return binary_scalars(y_true[idx], proba[idx], thr)
    else:

        def scalars(idx: np.ndarray) -> dict[str, float]:
            return multiclass_scalars(y_true[idx], proba[idx])

    all_idx = np.arange(y_true.size)
    point = scalars(all_idx)
    ci = bootstrap_ci(scalars, subject_ids, n_boot=n_boot, seed=seed) if n_boot > 0 else {}

    out: dict = {}
    for k, v in point.items():
        out[k] = v
        if k in ci:
            out[f"{k}_ci95"] = list(ci[k])
    y_pred = (proba[:, 1] >= thr).astype(np.int64) if binary else proba.argmax(1)
    cm = confusion_matrix(y_true, y_pred, num_classes)
    tp = np.diag(cm).astype(np.float64)
    f1 = _f1_from_counts(tp, cm.sum(0) - tp, cm.sum(1) - tp)
    out["per_class_f1"] = {name: float(f1[i]) for i, name in enumerate(class_names)}
    out["confusion_matrix"] = cm.tolist()
    out["class_names"] = list(class_names)
    if binary:
        out["threshold"] = thr
    else:
        mean_err, per_stage = stage_fraction_error(y_true, y_pred, recording_ids, num_classes)
        out["stage_fraction_mae"] = mean_err
        out["stage_fraction_mae_per_class"] = {name: float(per_stage[i]) for i, name in enumerate(class_names)}
    out["n_epochs"] = int(y_true.size)
    out["n_unlabelled"] = n_unlabelled
    out["n_subjects"] = int(np.unique(subject_ids).size)
    out["n_recordings"] = int(np.unique(recording_ids).size)
    return out


# --- paired comparison of two runs -----------------------------------------------------------------
PREDICTION_KEYS: tuple[str, ...] = ("labels", "proba", "subject_ids", "recording_ids", "epoch_index")


def save_predictions(pred: dict[str, np.ndarray], path: str | Path, threshold: float | None = None) -> Path:
    """Write per-epoch predictions (``PREDICTION_KEYS`` + threshold) to an ``.npz`` (atomically)."""
    from osf.utils.atomic import atomic_path

    arrays = {k: np.asarray(pred[k]) for k in PREDICTION_KEYS}
    arrays["subject_ids"] = arrays["subject_ids"].astype(str)
    arrays["recording_ids"] = arrays["recording_ids"].astype(str)
    with atomic_path(Path(path)) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, threshold=np.nan if threshold is None else float(threshold), **arrays)
    return Path(path)


def load_predictions(path: str | Path) -> dict[str, np.ndarray]:
    """Read a :func:`save_predictions` file; ValueError naming the file if it is not one."""
    try:
        with np.load(path, allow_pickle=False) as data:
            out = {k: data[k] for k in (*PREDICTION_KEYS, "threshold")}
    except (OSError, KeyError, ValueError) as err:
        raise ValueError(f"{path}: not a predictions file ({err})") from err
    return out


def paired_difference(
    a: dict[str, np.ndarray], b: dict[str, np.ndarray], n_boot: int = 1000, seed: int = 0, level: float = CI_LEVEL
) -> dict[str, dict[str, float]]:
    """Metric of ``a`` minus ``b`` on the same labelled epochs, with a subject-bootstrap CI of the difference.

    Both runs are scored on the epochs they share (matched by recording and epoch index), and every
    bootstrap draw resamples the same subjects for both, so the CI is that of the paired difference,
    not of two independent estimates. Returns ``{metric: {a, b, diff, low, high}}``.
    """
    return pooled_paired_difference([(a, b)], n_boot=n_boot, seed=seed, level=level)


def pooled_paired_difference(
    pairs: Sequence[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]], n_boot: int = 1000, seed: int = 0,
    level: float = CI_LEVEL,
) -> dict[str, dict[str, float]]:
    """:func:`paired_difference` over independent pairs (e.g. one per seed, each with its own subjects):
    the mean of the pairs' metrics and differences, with a bootstrap CI resampling subjects within each pair.
    """
    scored = [PairedScores(a, b) for a, b in pairs]
    points = [(s.metrics(s.everything, s.pa, s.thr_a), s.metrics(s.everything, s.pb, s.thr_b)) for s in scored]
    ci = stratified_bootstrap_ci([s.difference for s in scored], [s.subject_ids for s in scored],
                                 n_boot=n_boot, seed=seed, level=level)
    out = {}
    for k in points[0][0]:
        mean_a, mean_b = (float(np.mean([p[i][k] for p in points])) for i in (0, 1))
        out[k] = {"a": mean_a, "b": mean_b, "diff": mean_a - mean_b, "low": ci[k][0], "high": ci[k][1]}
    return out


class PairedScores:
    """Two runs' predictions on the labelled epochs they share, scored on any resample of those epochs."""

    def __init__(self, a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
        key_a = np.char.add(np.char.add(a["recording_ids"].astype(str), "#"), a["epoch_index"].astype(str))
        key_b = np.char.add(np.char.add(b["recording_ids"].astype(str), "#"), b["epoch_index"].astype(str))
        _, ia, ib = np.intersect1d(key_a, key_b, return_indices=True)
        labelled = a["labels"][ia] >= 0
        ia, ib = ia[labelled], ib[labelled]
        if ia.size == 0:
            raise ValueError("the two runs share no labelled epochs: they were not evaluated on the same split")
        if not np.array_equal(a["labels"][ia], b["labels"][ib]):
            raise ValueError("the two runs disagree on the labels of shared epochs: they are not the same task")
        self.y = a["labels"][ia].astype(np.int64)
        self.pa, self.pb = a["proba"][ia].astype(np.float64), b["proba"][ib].astype(np.float64)
        self.thr_a, self.thr_b = a["threshold"], b["threshold"]
        self.subject_ids = a["subject_ids"][ia]
        self.everything = np.arange(self.y.size)

    def metrics(self, idx: np.ndarray, proba: np.ndarray, threshold: np.ndarray) -> dict[str, float]:
        """Scalar metrics of one run on the epochs ``idx``."""
        if proba.shape[1] == 2:
            t = float(threshold) if np.isfinite(threshold) else choose_threshold(self.y[idx], proba[idx])
            return binary_scalars(self.y[idx], proba[idx], t)
        return multiclass_scalars(self.y[idx], proba[idx])

    def difference(self, idx: np.ndarray) -> dict[str, float]:
        """Run a minus run b on the epochs ``idx``."""
        sa, sb = self.metrics(idx, self.pa, self.thr_a), self.metrics(idx, self.pb, self.thr_b)
        return {k: sa[k] - sb[k] for k in sa}

    def score(self, idx: np.ndarray, proba: np.ndarray, threshold: np.ndarray, metric: str) -> float:
        """One metric of one run on ``idx``: the same value as :meth:`metrics` gives, without the others."""
        if metric == "kappa" and proba.shape[1] > 2:
            return kappa_from_confusion(confusion_matrix(self.y[idx], proba[idx].argmax(1), proba.shape[1]))
        if metric == "auroc" and proba.shape[1] == 2:
            return binary_auroc(self.y[idx] == 1, proba[idx, 1])
        return self.metrics(idx, proba, threshold)[metric]

    def difference_of(self, metric: str) -> Callable[[np.ndarray], dict[str, float]]:
        """``idx -> {metric: a - b}``: a bootstrap of one metric scores only that one (the others cost ~10x)."""
        return lambda idx: {metric: self.score(idx, self.pa, self.thr_a, metric) - self.score(idx, self.pb, self.thr_b, metric)}

"""Metrics of night predictions, with subject-bootstrap CIs (``osf.downstream.metrics.bootstrap_ci``)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from osf.downstream.metrics import binary_scalars, bootstrap_ci, choose_threshold, multiclass_scalars


def classification_scalars(y: np.ndarray, proba: np.ndarray, threshold: float) -> dict[str, float]:
    """AUROC, AUPRC, balanced accuracy (+ the binary/multi-class extras) of night predictions."""
    if proba.shape[1] == 2:
        out = binary_scalars(y, proba, threshold)
        sens, spec = out["sensitivity"], out["specificity"]
        out["balanced_accuracy"] = (sens + spec) / 2 if np.isfinite(sens) and np.isfinite(spec) else math.nan
        return out
    return multiclass_scalars(y, proba)


def regression_scalars(y: np.ndarray, pred: np.ndarray, train_mean: float) -> dict[str, float]:
    """MAE, RMSE, Spearman rho, R^2 and the MAE of predicting the training mean (the baseline to beat)."""
    err = pred - y
    base = np.abs(train_mean - y)
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    rho = spearmanr(y, pred).statistic if y.size > 2 and np.ptp(y) > 0 and np.ptp(pred) > 0 else math.nan
    return {"mae": float(np.mean(np.abs(err))), "rmse": float(np.sqrt(np.mean(err ** 2))), "spearman": float(rho),
            "r2": 1.0 - float(np.sum(err ** 2)) / ss_tot if ss_tot > 0 else math.nan,
            "baseline_mae": float(np.mean(base)), "mae_gain": float(np.mean(base) - np.mean(np.abs(err)))}


def evaluate_nights(
    y: np.ndarray, pred: np.ndarray, subject_ids: np.ndarray, class_names: tuple[str, ...] | None,
    threshold: float | None = None, train_mean: float = 0.0, n_boot: int = 1000, seed: int = 0,
) -> dict[str, Any]:
    """Metrics of night predictions with ``<name>_ci95`` (bootstrap over subjects) beside each scalar."""
    if class_names is None:
        def scalars(idx: np.ndarray) -> dict[str, float]:
            return regression_scalars(y[idx], pred[idx], train_mean)
    else:
        thr = (choose_threshold(y, pred) if threshold is None else threshold) if len(class_names) == 2 else 0.5

        def scalars(idx: np.ndarray) -> dict[str, float]:
            return classification_scalars(y[idx], pred[idx], thr)
    point = scalars(np.arange(len(y)))
    ci = bootstrap_ci(scalars, subject_ids, n_boot=n_boot, seed=seed) if n_boot > 0 else {}
    out: dict[str, Any] = {}
    for k, v in point.items():
        out[k] = v
        if k in ci:
            out[f"{k}_ci95"] = list(ci[k])
    if class_names is not None and len(class_names) == 2:
        out["threshold"] = thr
    out["n_nights"] = len(y)
    out["n_subjects"] = int(np.unique(subject_ids).size)
    return out

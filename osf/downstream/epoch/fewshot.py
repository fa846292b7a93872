"""Few-shot evaluation: k labelled epochs per class drawn with a seed, aggregated over seeds."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from osf.datasets.datamodule import k_shot_rows


def sample_k_per_class(
    labels: np.ndarray, k: int, seed: int, num_classes: int, class_names: Sequence[str] | None = None
) -> np.ndarray:
    """Sorted positions of exactly ``k`` epochs per class (``-1`` never drawn); raises if a class is smaller.

    Delegates to the data module's draw, so a probe on cached features of the training split and
    ``SleepDataModule(n_train_samples=k, seed=seed)`` (full fine-tuning) see the same epochs.
    """
    return k_shot_rows(np.asarray(labels), k, num_classes, seed=seed, label_names=class_names)


def aggregate_over_seeds(runs: Sequence[dict]) -> dict[str, dict[str, float]]:
    """Mean and sample std (ddof=1; 0 for one run) of every numeric scalar shared by all ``runs``."""
    if not runs:
        raise ValueError("no runs to aggregate")
    keys = [k for k, v in runs[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    out: dict[str, dict[str, float]] = {}
    for k in keys:
        if not all(k in r for r in runs):
            continue
        vals = np.array([r[k] for r in runs], dtype=np.float64)
        finite = vals[np.isfinite(vals)]
        out[k] = {
            "mean": float(finite.mean()) if finite.size else math.nan,
            "std": float(finite.std(ddof=1)) if finite.size > 1 else 0.0,
            "n": int(finite.size),
        }
    return out

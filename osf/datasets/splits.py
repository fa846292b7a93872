"""Subject-level train/val/test splits and SleepBench-style cohort groups.

A subject's split is a function of (seed, dataset, subject id) alone: its hash is mapped to a point
in [0, 1) and binned by the split fractions. Adding recordings or subjects therefore never moves an
existing subject, and all visits of a subject land in the same split. The one exception keeps small
cohorts usable: when a split with a positive fraction would be empty in a dataset that has enough
subjects, the subject whose hash lies closest to that split's interval is moved into it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

SPLITS: tuple[str, ...] = ("train", "val", "test")
COHORT_GROUPS: tuple[str, ...] = ("pretrain", "downstream", "both")


def subject_hash_unit(dataset: str, subject_id: str, seed: int = 0) -> float:
    """Map (seed, dataset, subject) to a deterministic point in [0, 1)."""
    digest = hashlib.sha256(f"{seed}\x1f{dataset}\x1f{subject_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def _check_fractions(fractions: Sequence[float]) -> np.ndarray:
    fr = np.asarray(fractions, dtype=float)
    if fr.shape != (len(SPLITS),) or (fr < 0).any() or not np.isclose(fr.sum(), 1.0):
        raise ValueError(
            f"split fractions must be 3 non-negative numbers (train, val, test) summing to 1, got {fractions}"
        )
    return fr


def assign_subject_splits(
    subjects: pd.DataFrame, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0
) -> pd.Series:
    """Split label per unique (dataset, subject_id) row of `subjects`, index aligned with `subjects`."""
    fr = _check_fractions(fractions)
    edges = np.concatenate([[0.0], np.cumsum(fr)])
    edges[-1] = 1.0
    out = pd.Series(index=subjects.index, dtype=object)
    for dataset, group in subjects.groupby("dataset", sort=True):
        u = np.array([subject_hash_unit(str(dataset), str(s), seed) for s in group["subject_id"]])
        split = np.searchsorted(edges, u, side="right") - 1
        split = np.clip(split, 0, len(SPLITS) - 1)
        # Smallest cohorts only: fill an empty split that should have subjects, never emptying another.
        wanted = np.flatnonzero(fr > 0)
        if len(u) >= len(wanted):
            for s in wanted:
                if (split == s).any():
                    continue
                counts = np.bincount(split, minlength=len(SPLITS))
                donors = np.flatnonzero(counts[split] > 1)
                lo, hi = edges[s], edges[s + 1]
                dist = np.maximum(lo - u[donors], 0) + np.maximum(u[donors] - hi, 0)
                split[donors[np.argmin(dist)]] = s
        out.loc[group.index] = [SPLITS[i] for i in split]
    return out


def split_for_rows(
    datasets: Iterable[str],
    subject_ids: Iterable[str],
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
) -> np.ndarray:
    """Split name for every row (epoch or recording) given its dataset and subject id."""
    rows = pd.DataFrame({"dataset": list(datasets), "subject_id": list(subject_ids)}).astype(str)
    subjects = rows.drop_duplicates().reset_index(drop=True)
    subjects["split"] = assign_subject_splits(subjects, fractions, seed)
    return rows.merge(subjects, on=["dataset", "subject_id"], how="left")["split"].to_numpy(dtype=object)


def resolve_cohort_groups(
    datasets: Iterable[str], cohort_groups: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Cohort group per dataset: `cohort_groups` entries, every other dataset in "both"."""
    datasets = sorted(set(datasets))
    cohort_groups = dict(cohort_groups or {})
    bad = {d: g for d, g in cohort_groups.items() if g not in COHORT_GROUPS}
    if bad:
        raise ValueError(f"unknown cohort group(s) {bad}; each dataset maps to one of {COHORT_GROUPS}")
    return {d: cohort_groups.get(d, "both") for d in datasets}


def in_cohort(groups: pd.Series | np.ndarray, task: str) -> np.ndarray:
    """Bool mask of rows whose cohort group serves `task` ("pretrain" or "downstream")."""
    if task not in ("pretrain", "downstream"):
        raise ValueError(f"task must be 'pretrain' or 'downstream', got {task!r}")
    groups = np.asarray(groups, dtype=object)
    return (groups == task) | (groups == "both")


def subset_subjects(subject_keys: Sequence[str], fraction: float, seed: int = 0) -> set[str]:
    """A deterministic `fraction` of the given subjects (at least one), nested as the fraction grows."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"train_data_pct must be in (0, 1], got {fraction}")
    keys = sorted(set(subject_keys))
    if fraction >= 1.0:
        return set(keys)
    order = sorted(keys, key=lambda k: subject_hash_unit("subset", k, seed))
    n = max(1, round(fraction * len(keys)))
    return set(order[:n])

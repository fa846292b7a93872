"""Nights from cached epoch features: each night's embeddings in time order, with its identity and target."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from osf.downstream.features import FeatureSet
from osf.downstream.inputs import DownstreamInputs, extract_features, load_inputs
from osf.downstream.night.tables import NightTarget, SubjectTable, encode_target, lookup_target
from osf.downstream.run_config import DownstreamConfig

log = logging.getLogger(__name__)

MIN_TRAIN_SUBJECTS_PER_CLASS = 2
MIN_EVAL_SUBJECTS_PER_CLASS = 1
MIN_REGRESSION_SUBJECTS = {"train": 3, "val": 2, "test": 2}


@dataclass
class NightSet:
    """Epoch embeddings grouped per night, with each night's identity and target."""

    features: list[np.ndarray]  # per night float32 [T, D], epochs in time order
    recording_ids: np.ndarray
    subject_ids: np.ndarray
    y: np.ndarray
    epoch_labels: list[np.ndarray] | None = None  # per night int [T]: the epochs' labels of the run's task

    def __len__(self) -> int:
        return len(self.features)

    def subset(self, keep: np.ndarray) -> NightSet:
        """Nights where ``keep`` is True."""
        idx = np.flatnonzero(keep)
        labels = None if self.epoch_labels is None else [self.epoch_labels[i] for i in idx]
        return NightSet([self.features[i] for i in idx], self.recording_ids[idx], self.subject_ids[idx], self.y[idx],
                        labels)


def _per_night(fs: FeatureSet, values: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """``values`` (one row per epoch of ``fs``) split per recording, in time order; recordings by first appearance."""
    rec = np.asarray(fs.recording_ids).astype(str)
    order = np.lexsort((fs.epoch_index, rec))
    rec_sorted = rec[order]
    starts = np.r_[0, np.flatnonzero(rec_sorted[1:] != rec_sorted[:-1]) + 1, rec_sorted.size]
    grouped = {rec_sorted[starts[i]]: values[order[starts[i]:starts[i + 1]]] for i in range(starts.size - 1)}
    first = list(dict.fromkeys(rec))
    return [grouped[r] for r in first], np.asarray(first)


def group_nights(fs: FeatureSet) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Per recording (in order of first appearance): ``[T, D]`` features sorted by epoch index."""
    feats, first = _per_night(fs, fs.features)
    subj = dict(zip(np.asarray(fs.recording_ids).astype(str), np.asarray(fs.subject_ids).astype(str)))
    return feats, first, np.asarray([subj[r] for r in first])


def group_night_labels(fs: FeatureSet) -> list[np.ndarray]:
    """The epochs' labels per recording, in the order and time order of :func:`group_nights`."""
    return _per_night(fs, np.asarray(fs.labels))[0]


def check_night_counts(sets: dict[str, NightSet], class_names: tuple[str, ...] | None) -> dict[str, dict]:
    """Subjects per class (or per split, regression); raises when a split is too small to train or evaluate."""
    counts: dict[str, dict] = {}
    for split, ns in sets.items():
        if class_names is None:
            n = int(np.unique(ns.subject_ids).size)
            need = MIN_REGRESSION_SUBJECTS[split]
            if n < need:
                raise ValueError(f"{split} split: {n} subject(s) with a target, need >= {need} for a regression; "
                                 "add nights or change the store's --split_fractions")
            counts[split] = {"subjects": n}
            continue
        need = MIN_TRAIN_SUBJECTS_PER_CLASS if split == "train" else MIN_EVAL_SUBJECTS_PER_CLASS
        per = {name: int(np.unique(ns.subject_ids[ns.y == c]).size) for c, name in enumerate(class_names)}
        short = {k: v for k, v in per.items() if v < need}
        if short:
            raise ValueError(f"{split} split: too few subjects per class {per} (need >= {need} each; short: "
                             f"{short}); add nights, change the threshold or the store's --split_fractions")
        counts[split] = per
    return counts


@dataclass
class EpochFeatures:
    """The inputs of a run and the cached frozen-backbone features of every split."""

    inputs: DownstreamInputs
    features: dict[str, FeatureSet]

    @property
    def dm(self) -> Any:
        """The run's data module (set up)."""
        return self.inputs.dm


def load_epoch_features(cfg: DownstreamConfig) -> EpochFeatures:
    """Backbone, data module and per-split features, through the linear probe's cache (same key, shared files)."""
    batch_size = cfg.probe.batch_size  # the probe's extraction: its cache files are shared
    inputs = load_inputs(cfg, batch_size)
    return EpochFeatures(inputs, extract_features(cfg, inputs, batch_size))


def _recording_keys(dm: Any, recording_ids: np.ndarray) -> pd.DataFrame:
    """dataset, subject_id, visit of each recording id (from the store's recordings table, one row each)."""
    index = dm.store.rows.recordings[["dataset", "recording_id", "subject_id", "visit"]].drop_duplicates("recording_id")
    keys = index.set_index("recording_id").loc[list(recording_ids)].reset_index()
    return keys.astype({"dataset": str, "subject_id": str, "visit": int})


def night_sets(ef: EpochFeatures, tables: dict[str, list[SubjectTable]], target: NightTarget
               ) -> tuple[dict[str, NightSet], tuple[str, ...] | None, dict[str, Any]]:
    """Nights per split with their targets; nights without a target are skipped and counted."""
    grouped = {s: group_nights(fs) for s, fs in ef.features.items()}
    keys = {s: _recording_keys(ef.dm, g[1]) for s, g in grouped.items()}
    values = pd.concat([lookup_target(tables, target.variable, k) for k in keys.values()], ignore_index=True)
    enc = encode_target(values, target)  # encoded over all splits at once: one set of class levels
    sets, skipped, start = {}, {}, 0
    for split, (feats, recs, subjects) in grouped.items():
        sl = slice(start, start + len(recs))
        start += len(recs)
        ns = NightSet(feats, recs, subjects, enc.y[sl], group_night_labels(ef.features[split]))
        keep = enc.keep[sl]
        skipped[split] = {"n_skipped": int((~keep).sum()), "recording_ids": [str(r) for r in recs[~keep][:20]]}
        if (~keep).any():
            log.warning("%s split: %d of %d night(s) have no %r and are skipped (e.g. %s)", split, int((~keep).sum()),
                        len(recs), target.variable, skipped[split]["recording_ids"][:3])
        sets[split] = ns.subset(keep)
    return sets, enc.class_names, skipped

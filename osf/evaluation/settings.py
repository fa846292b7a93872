"""The settings where pre-training should pay, as row selections of a store's subject splits.

Each setting says which epochs train the probe, which select it (validation), which test it and which
channels the backbone sees in each; the features come from one pass per backbone and channel view
(``osf.evaluation.protocol``). Every setting is scored for every model on the same test epochs, so the
pre-trained backbone and its random init are paired within a seed.

- ``labels_<p>pct``: a seeded fraction of the training *subjects* (1 %, 10 %, 100 %), nested as it grows;
- ``kshot_<k>``: exactly ``k`` training epochs per class (1, 5, 20), seeded;
- ``missing_<preset>``: the head trained on every channel, tested with only the preset's channels;
- ``masked_<preset>``: train, validation and test all with only the preset's channels;
- ``cohort_<a>_to_<b>``: trained and selected on cohort ``a``'s train / val subjects, tested on every
  night of cohort ``b`` (another montage, gain and noise; its nights were seen, unlabelled, in pre-training).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from osf import config
from osf.datasets.datamodule import k_shot_rows
from osf.datasets.splits import subset_subjects

LABEL_FRACTIONS: tuple[float, ...] = (0.01, 0.1, 1.0)
K_SHOTS: tuple[int, ...] = (1, 5, 20)
MISSING_PRESETS: tuple[str, ...] = tuple(p for p in config.CHANNEL_PRESETS if p != "full")


@dataclass(frozen=True)
class Setting:
    """Rows (positions into the protocol's epoch table) of each split and the channel view of each."""

    name: str
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    train_view: str = "full"  # channel preset the features of train / val were extracted with
    test_view: str = "full"


@dataclass
class EpochTable:
    """The store's epochs the protocol uses: ids, split and one task's labels (-1 unknown)."""

    split: np.ndarray
    subject_ids: np.ndarray
    dataset: np.ndarray
    labels: np.ndarray

    def rows(self, split: str, dataset: str | None = None) -> np.ndarray:
        """Labelled positions of ``split`` (``"all"``: every split), optionally of one dataset."""
        sel = self.labels >= 0
        if split != "all":
            sel &= self.split == split
        if dataset is not None:
            sel &= self.dataset == dataset
        return np.flatnonzero(sel)


def label_fraction(table: EpochTable, fraction: float, seed: int = 0) -> Setting:
    """Training epochs of a seeded ``fraction`` of the training subjects (at least one subject)."""
    train = table.rows("train")
    keep = subset_subjects(table.subject_ids[train], fraction, seed)
    return Setting(f"labels_{fraction * 100:g}pct", train[np.isin(table.subject_ids[train], list(keep))],
                   table.rows("val"), table.rows("test"))


def k_shot(table: EpochTable, k: int, num_classes: int, seed: int = 0) -> Setting:
    """Exactly ``k`` training epochs per class (the data module's seeded draw)."""
    train = table.rows("train")
    return Setting(f"kshot_{k}", train[k_shot_rows(table.labels[train], k, num_classes, seed=seed)],
                   table.rows("val"), table.rows("test"))


def missing_channels(table: EpochTable, preset: str) -> Setting:
    """Trained and selected on every channel; tested with only ``preset``'s channels."""
    return Setting(f"missing_{preset}", table.rows("train"), table.rows("val"), table.rows("test"), "full", preset)


def masked_channels(table: EpochTable, preset: str) -> Setting:
    """Trained, selected and tested with only ``preset``'s channels."""
    return Setting(f"masked_{preset}", table.rows("train"), table.rows("val"), table.rows("test"), preset, preset)


def cross_cohort(table: EpochTable, source: str, target: str) -> Setting:
    """Trained and selected on ``source``'s train / val subjects; tested on every night of ``target``."""
    if source == target:
        raise ValueError(f"cross-cohort transfer needs two cohorts, got {source!r} twice")
    return Setting(f"cohort_{source}_to_{target}", table.rows("train", source), table.rows("val", source),
                   table.rows("all", target))


def standard_settings(table: EpochTable, num_classes: int, seed: int = 0,
                      fractions: Sequence[float] = LABEL_FRACTIONS, k_shots: Sequence[int] = K_SHOTS,
                      presets: Sequence[str] = MISSING_PRESETS, cohorts: bool = True, masked: bool = True
                      ) -> tuple[list[Setting], dict[str, str]]:
    """Every setting this table allows, and the ones it does not with the reason (e.g. k above a class size)."""
    settings, skipped = [], {}
    for fraction in fractions:
        settings.append(label_fraction(table, fraction, seed))
    for k in k_shots:
        try:
            settings.append(k_shot(table, k, num_classes, seed))
        except ValueError as err:
            skipped[f"kshot_{k}"] = str(err)
    for preset in presets:
        settings += [missing_channels(table, preset)] + ([masked_channels(table, preset)] if masked else [])
    datasets = sorted(set(table.dataset.tolist()))
    if cohorts and len(datasets) > 1:
        settings += [cross_cohort(table, datasets[0], target) for target in datasets[1:]]
    elif cohorts:
        skipped["cohort"] = f"one cohort in the store ({datasets}): no transfer to measure"
    return settings, skipped

"""Kappa of an exported classifier on each channel preset: what it was validated on, per montage.

A classifier trained with ``--mask_train_presets`` is meant to stage every montage it saw; these
scores (validation and test split, the same epochs under each preset) go into the run JSON, and the
validation ones into the classifier file (``info["validation_kappa_by_preset"]``), where
``main_predict.py`` reads them to say how far a night is from what the classifier was validated on.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from osf.datasets.channelset import ChannelSet
from osf.datasets.datamodule import EpochDataset, EvalSampler, SleepDataModule, collate_epochs
from osf.downstream.classifier import VALIDATION_KEY, SleepClassifier
from osf.downstream.metrics import confusion_matrix, kappa_from_confusion

__all__ = ["VALIDATION_KEY", "preset_kappas"]


@torch.inference_mode()
def _kappa(clf: SleepClassifier, task: str, dataset: EpochDataset, batch_size: int, device: str) -> float:
    loader = DataLoader(dataset, batch_size=batch_size, sampler=EvalSampler(dataset, 1, 0), collate_fn=collate_epochs)
    preds, labels = [], []
    clf.eval().to(device)
    for batch in loader:
        proba = clf.predict_proba(batch["signal"].to(device), batch["channel_mask"].to(device))[task]
        preds.append(proba.argmax(-1).cpu().numpy())
        labels.append(batch["label"].numpy())
    y, p = np.concatenate(labels), np.concatenate(preds)
    return kappa_from_confusion(confusion_matrix(y, p, len(clf.label_names[task])))


def preset_kappas(
    clf: SleepClassifier, task: str, dm: SleepDataModule, presets: Sequence[str], splits: Sequence[str] = ("val", "test"),
    batch_size: int = 256, device: str = "cpu",
) -> dict[str, dict[str, float]]:
    """split -> preset -> Cohen's kappa of ``clf``'s ``task`` head, the split's epochs seen through each preset."""
    out: dict[str, dict[str, float]] = {}
    for split in splits:
        base = dm.datasets[split]
        out[split] = {
            preset: _kappa(clf, task, EpochDataset(base.store, base.rows, base.labels, ChannelSet.from_spec(preset)),
                           batch_size, device)
            for preset in presets
        }
    return out

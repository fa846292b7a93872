"""Sequence-context epoch heads: stage (or detect events in) an epoch from its +-K neighbours' embeddings.

Every strong stager (U-Sleep, SleepTransformer, L-SeqSleepNet) reads a sequence of epochs; a
per-epoch linear probe reads one. Here a small transformer or a bidirectional GRU reads a window of
``2K + 1`` cached epoch embeddings (the linear probe's feature cache) centred on the epoch to label,
trained in seconds. Nights are kept apart: a window never crosses into another recording (outside
the night it is padded and masked). Training labels every epoch of a window; prediction keeps the
centre epoch's output, so each epoch sees exactly +-K neighbours.

``main_finetune.py --context_epochs K`` (:mod:`osf.downstream.sequence.run`) trains the per-epoch
probe and the sequence head on the same features and reports both side by side, with the difference
and its subject-bootstrap CI; the exported ``classifier.pt`` carries the sequence head, which
``main_predict.py`` applies over the night.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from osf.downstream.epoch.linear_probe import check_labels, default_selection_metric, selection_score
from osf.downstream.features import FeatureSet
from osf.downstream.run_config import SEQUENCE_MODELS
from osf.downstream.selection import train_with_validation

log = logging.getLogger(__name__)



class SequenceHead(nn.Module):
    """Per-epoch logits of a window of epoch embeddings: ``[B, W, D] -> [B, W, C]`` (W = 2K + 1)."""

    def __init__(self, in_dim: int, num_classes: int, context: int, kind: str = "transformer", d_model: int = 64,
                 layers: int = 2, heads: int = 4, dropout: float = 0.1) -> None:
        super().__init__()
        if kind not in SEQUENCE_MODELS:
            raise ValueError(f"unknown sequence model {kind!r}; choose from {list(SEQUENCE_MODELS)}")
        if context < 1:
            raise ValueError(f"context (epochs each side) must be >= 1, got {context}")
        self.kind, self.context = kind, context
        self.config = {"in_dim": in_dim, "num_classes": num_classes, "context": context, "kind": kind,
                       "d_model": d_model, "layers": layers, "heads": heads, "dropout": dropout}
        self.register_buffer("feat_mean", torch.zeros(in_dim))
        self.register_buffer("feat_std", torch.ones(in_dim))
        self.proj = nn.Sequential(nn.Linear(in_dim, d_model), nn.LayerNorm(d_model), nn.Dropout(dropout))
        if kind == "transformer":
            self.pos = nn.Parameter(torch.randn(2 * context + 1, d_model) * 0.02)
            layer = nn.TransformerEncoderLayer(d_model, heads, 2 * d_model, dropout, batch_first=True, norm_first=True)
            self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        else:
            self.gru = nn.GRU(d_model, d_model // 2, num_layers=layers, batch_first=True, bidirectional=True,
                              dropout=dropout if layers > 1 else 0.0)
        self.out = nn.Linear(d_model, num_classes)

    @property
    def window(self) -> int:
        """Epochs per window (2K + 1)."""
        return 2 * self.context + 1

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """``x [B, W, D]`` raw embeddings, ``valid [B, W]`` True = an epoch of the night -> logits ``[B, W, C]``."""
        h = self.proj((x - self.feat_mean) / self.feat_std) * valid.unsqueeze(-1)
        if self.kind == "transformer":
            h = self.encoder(h + self.pos[: h.shape[1]], src_key_padding_mask=~valid)
        else:
            h, _ = self.gru(h)
        return self.out(h)

    @torch.no_grad()
    def predict_night(self, features: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
        """Class probabilities ``[T, C]`` of one night's epochs (``[T, D]``, time order)."""
        layout = NightLayout.from_lengths([features.shape[0]], self.context)
        padded = layout.pad(features.detach().float().cpu())
        return _predict_centres(self, padded, layout, torch.arange(features.shape[0]), batch_size,
                                device=self.feat_mean.device)


@dataclass
class NightLayout:
    """Nights laid end to end with ``K`` pad slots between and around them, so a window never crosses nights."""

    context: int
    position: np.ndarray  # int64 [N]: slot of each (time-ordered) epoch
    total: int  # number of slots

    @classmethod
    def from_lengths(cls, lengths: list[int], context: int) -> NightLayout:
        """Layout of nights with ``lengths`` epochs each, in that order."""
        starts = np.cumsum([0] + [n + context for n in lengths[:-1]]) + context
        position = np.concatenate([s + np.arange(n) for s, n in zip(starts, lengths)]) if lengths else np.zeros(0, int)
        return cls(context, position.astype(np.int64), int(sum(lengths) + context * (len(lengths) + 1)))

    def pad(self, values: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
        """``values`` (epoch order) scattered to their slots; pad slots get ``fill``."""
        out = torch.full((self.total, *values.shape[1:]), fill, dtype=values.dtype)
        out[torch.as_tensor(self.position)] = values
        return out

    def windows(self, centres: torch.Tensor) -> torch.Tensor:
        """Slot indices ``[B, 2K + 1]`` of the windows around epochs ``centres`` (epoch order)."""
        offsets = torch.arange(-self.context, self.context + 1)
        return torch.as_tensor(self.position)[centres].unsqueeze(1) + offsets


@dataclass
class ContextData:
    """A split's features in night/time order, laid out for window gathering."""

    order: np.ndarray  # rows of the FeatureSet in night/time order
    layout: NightLayout
    x: torch.Tensor  # [slots, D]
    valid: torch.Tensor  # [slots] bool
    y: torch.Tensor  # [slots] long, -1 = unknown or pad


def context_data(fs: FeatureSet, context: int) -> ContextData:
    """Lay out a FeatureSet's epochs per recording in time order (see :class:`NightLayout`)."""
    rec = np.asarray(fs.recording_ids).astype(str)
    order = np.lexsort((np.asarray(fs.epoch_index), rec))
    _, lengths = np.unique(rec[order], return_counts=True)  # sorted ids = the lexsort's night order
    layout = NightLayout.from_lengths(lengths.tolist(), context)
    x = layout.pad(torch.as_tensor(fs.features[order], dtype=torch.float32))
    valid = layout.pad(torch.ones(order.size, dtype=torch.bool), fill=False)
    y = layout.pad(torch.as_tensor(np.asarray(fs.labels)[order], dtype=torch.long), fill=-1)
    return ContextData(order, layout, x, valid, y)


@torch.no_grad()
def _predict_centres(head: SequenceHead, x: torch.Tensor, layout: NightLayout, centres: torch.Tensor,
                     batch_size: int, valid: torch.Tensor | None = None, device: str | torch.device = "cpu") -> torch.Tensor:
    if valid is None:
        valid = layout.pad(torch.ones(layout.position.size, dtype=torch.bool), fill=False)
    was_training = head.training
    head.eval()
    outs = []
    for i in range(0, centres.numel(), batch_size):
        win = layout.windows(centres[i: i + batch_size])
        logits = head(x[win].to(device), valid[win].to(device))
        outs.append(logits[:, layout.context].softmax(-1).float().cpu())
    head.train(was_training)
    return torch.cat(outs) if outs else torch.zeros(0, head.config["num_classes"])


def predict_sequence_proba(head: SequenceHead, fs: FeatureSet, batch_size: int = 2048,
                           device: str | torch.device = "cpu") -> np.ndarray:
    """Class probabilities ``[N, C]`` of every row of ``fs`` (in ``fs``'s row order)."""
    data = context_data(fs, head.context)
    proba = _predict_centres(head.to(device), data.x, data.layout, torch.arange(data.order.size), batch_size,
                             data.valid, device)
    out = np.empty((len(fs), proba.shape[1]), dtype=np.float32)
    out[data.order] = proba.numpy()
    return out


@dataclass
class SequenceFit:
    """Trained sequence head and how it was selected."""

    head: SequenceHead
    best_step: int
    best_score: float
    selection_metric: str
    history: list[dict] = field(default_factory=list)
    train_seconds: float = 0.0


def train_sequence_head(
    train: FeatureSet, val: FeatureSet, num_classes: int, context: int, kind: str = "transformer",
    max_steps: int = 600, lr: float = 1e-3, weight_decay: float = 0.01, batch_size: int = 64, eval_every: int = 50,
    d_model: int = 64, seed: int = 0, device: str | torch.device = "cpu",
) -> SequenceFit:
    """Train on windows centred on random labelled epochs (every labelled epoch of a window is a target)."""
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    check_labels(train.labels, num_classes, "train split")
    check_labels(val.labels, num_classes, "val split")
    if not np.isfinite(train.features).all() or not np.isfinite(val.features).all():
        raise ValueError("features contain NaN/inf; check the backbone checkpoint and the input signals")
    data = context_data(train, context)
    head = SequenceHead(train.features.shape[1], num_classes, context, kind, d_model=d_model)
    feats = torch.as_tensor(np.asarray(train.features) if not isinstance(train.features, np.memmap)
                            else np.array(train.features), dtype=torch.float32)  # a cache file: read it in
    head.feat_mean.copy_(feats.mean(0))
    head.feat_std.copy_(feats.std(0, unbiased=False).clamp_min(1e-6))
    head.to(device)
    labelled = torch.as_tensor(np.flatnonzero(np.asarray(train.labels)[data.order] >= 0))
    metric = default_selection_metric(num_classes)

    def batch_loss() -> torch.Tensor:
        centres = labelled[torch.randint(labelled.numel(), (min(batch_size, labelled.numel()),), generator=gen)]
        win = data.layout.windows(centres)
        logits = head(data.x[win].to(device), data.valid[win].to(device))
        return nn.functional.cross_entropy(logits.reshape(-1, num_classes), data.y[win].reshape(-1).to(device),
                                           ignore_index=-1)

    def validation_score() -> float:
        return selection_score(val.labels, predict_sequence_proba(head, val, device=device), metric)

    selection = train_with_validation(head, batch_loss, validation_score, metric, max_steps=max_steps,
                                      eval_every=eval_every, lr=lr, weight_decay=weight_decay)
    return SequenceFit(head.cpu().eval(), selection.best_step, selection.best_score, metric, selection.history,
                       time.perf_counter() - t0)


def sequence_head_payload(head: SequenceHead) -> dict:
    """Weights-only storable form (constructor config + state)."""
    return {"config": dict(head.config), "state_dict": {k: v.detach().cpu().clone() for k, v in head.state_dict().items()}}


def sequence_head_from_payload(payload: dict) -> SequenceHead:
    """Inverse of :func:`sequence_head_payload`."""
    head = SequenceHead(**payload["config"])
    head.load_state_dict(payload["state_dict"])
    return head.eval()



def paired_difference(y: np.ndarray, proba_a: np.ndarray, proba_b: np.ndarray, subject_ids: np.ndarray,
                      metric: str, threshold_a: float = 0.5, threshold_b: float = 0.5, n_boot: int = 1000,
                      seed: int = 0) -> dict[str, Any]:
    """``metric(b) - metric(a)`` on the same epochs (rows), with a CI from resampling subjects (paired)."""
    from osf.downstream.metrics import paired_difference as paired

    rows = np.arange(len(y))

    def run(proba: np.ndarray, threshold: float) -> dict[str, np.ndarray]:
        return {"labels": np.asarray(y), "proba": proba, "subject_ids": np.asarray(subject_ids),
                "recording_ids": rows.astype(str), "epoch_index": rows, "threshold": np.asarray(threshold)}

    out = paired(run(proba_b, threshold_b), run(proba_a, threshold_a), n_boot=max(n_boot, 1), seed=seed)[metric]
    ci = [out["low"], out["high"]] if n_boot > 0 else [math.nan, math.nan]
    return {"metric": metric, "delta": out["diff"], "delta_ci95": ci}

"""Linear probe on cached features: a linear head trained in seconds, selected on validation.

Features are standardised with the training mean/std for optimisation (one learning rate then suits
every backbone), and the standardisation is folded back into the returned ``nn.Linear`` so that the
head applies to raw backbone features, e.g. inside :class:`osf.downstream.classifier.SleepClassifier`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from osf import tasks
from osf.downstream.losses import make_loss
from osf.downstream.metrics import binary_scalars, choose_threshold, multiclass_scalars
from osf.downstream.selection import train_with_validation


def default_selection_metric(num_classes: int) -> str:
    """Validation metric used to pick the best checkpoint: AUPRC for binary events, macro-F1 for stages."""
    return tasks.selection_metric("epoch", tasks.target_kind(num_classes))


def selection_score(y_true: np.ndarray, proba: np.ndarray, metric: str) -> float:
    """Value of ``metric`` on labelled epochs (binary F1 etc. at the F1-optimal threshold)."""
    keep = np.asarray(y_true) >= 0
    y, p = np.asarray(y_true)[keep], np.asarray(proba)[keep]
    if p.shape[1] == 2:
        scores = binary_scalars(y, p, choose_threshold(y, p))
    else:
        scores = multiclass_scalars(y, p)
    if metric not in scores:
        raise ValueError(f"unknown selection metric {metric!r}; available: {sorted(scores)}")
    return scores[metric]


def check_labels(labels: np.ndarray, num_classes: int, where: str) -> np.ndarray:
    """Class counts of the labelled epochs of ``where``; raises when fewer than two classes occur."""
    labels = np.asarray(labels)
    labelled = labels[labels >= 0]
    if labelled.size == 0:
        raise ValueError(f"{where}: no labelled epochs (every label is -1); does the store have this label?")
    if labelled.max() >= num_classes:
        raise ValueError(f"{where}: label {int(labelled.max())} out of range for {num_classes} classes")
    counts = np.bincount(labelled, minlength=num_classes)
    if (counts > 0).sum() < 2:
        present = int(np.flatnonzero(counts)[0])
        raise ValueError(
            f"{where}: only one class ({present}) among {labelled.size} labelled epochs; "
            "a classifier cannot be trained or evaluated on it"
        )
    return counts


@dataclass
class ProbeResult:
    """Trained head (on raw features) and how it was selected."""

    head: nn.Linear
    best_step: int
    best_score: float
    selection_metric: str
    history: list[dict] = field(default_factory=list)
    train_seconds: float = 0.0


def _fold_standardisation(linear: nn.Linear, mean: torch.Tensor, std: torch.Tensor) -> nn.Linear:
    """``W((x - m) / s) + b`` as one linear map ``(W / s) x + (b - W (m / s))``."""
    out = nn.Linear(linear.in_features, linear.out_features)
    with torch.no_grad():
        w = linear.weight / std
        out.weight.copy_(w)
        out.bias.copy_(linear.bias - w @ mean)
    return out


def train_linear_probe(
    train_x: np.ndarray | torch.Tensor,
    train_y: np.ndarray | torch.Tensor,
    val_x: np.ndarray | torch.Tensor,
    val_y: np.ndarray | torch.Tensor,
    num_classes: int,
    max_steps: int = 500,
    lr: float = 1e-2,
    batch_size: int = 256,
    weight_decay: float = 1e-4,
    loss_type: str = "ce",
    eval_every: int = 50,
    selection_metric: str | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    max_train_rows: int | None = None,
) -> ProbeResult:
    """Train a linear head with AdamW + cosine decay on cached features; keep the best on validation.

    Features may be memory-mapped (the feature cache): only the training rows the probe can see
    (``max_train_rows``, default ``max_steps * batch_size``, a seeded subsample when there are more)
    are read into memory, validation is scored in chunks.
    """
    t0 = time.perf_counter()
    metric = selection_metric or default_selection_metric(num_classes)
    train_y = np.asarray(train_y)
    val_y = np.asarray(val_y)
    counts = check_labels(train_y, num_classes, "train split")
    check_labels(val_y, num_classes, "val split")
    # The probe sees at most max_steps * batch_size rows: above that, a seeded subsample of the labelled
    # training rows is all it reads from the (memory-mapped) features; below, every row as always.
    rows = np.flatnonzero(train_y >= 0)
    if max_train_rows is None:
        max_train_rows = max_steps * batch_size
    if rows.size > max_train_rows:
        rows = np.sort(np.random.default_rng(seed).choice(rows, max_train_rows, replace=False))
    x = torch.as_tensor(np.asarray(train_x)[rows] if isinstance(train_x, torch.Tensor) else _gather(train_x, rows),
                        dtype=torch.float32, device=device)
    y = torch.as_tensor(train_y[rows], dtype=torch.long, device=device)
    if not torch.isfinite(x).all() or not _all_finite(val_x):
        raise ValueError("features contain NaN/inf; check the backbone checkpoint and the input signals")

    mean = x.mean(0)
    std = x.std(0, unbiased=False).clamp_min(1e-6)
    xs = x.sub_(mean).div_(std)  # in place: the same numbers as (x - mean) / std without a second copy

    gen = torch.Generator(device="cpu").manual_seed(seed)
    torch.manual_seed(seed)
    linear = nn.Linear(x.shape[1], num_classes).to(device)
    loss_fn = make_loss(loss_type, torch.as_tensor(counts)).to(device)
    batches = _shuffled_batches(xs.shape[0], min(batch_size, xs.shape[0]), gen)

    def batch_loss() -> torch.Tensor:
        idx = next(batches).to(device)
        return loss_fn(linear(xs[idx]), y[idx])

    @torch.no_grad()
    def validation_score() -> float:  # streamed in chunks: the validation features stay on disk
        proba = [linear((torch.as_tensor(chunk, dtype=torch.float32, device=device) - mean) / std).softmax(-1).cpu()
                 for chunk in _chunks(val_x)]
        return selection_score(val_y, torch.cat(proba).numpy(), metric)

    selection = train_with_validation(linear, batch_loss, validation_score, metric, max_steps=max_steps,
                                      eval_every=eval_every, lr=lr, weight_decay=weight_decay)
    head = _fold_standardisation(linear.cpu(), mean.cpu(), std.cpu())
    return ProbeResult(head, selection.best_step, float(selection.best_score), metric, selection.history,
                       time.perf_counter() - t0)


def _shuffled_batches(n: int, batch_size: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless batches of row indices: passes over ``n`` rows, reshuffled when the next batch would not fit."""
    perm, cursor = torch.randperm(n, generator=gen), 0
    while True:
        if cursor + batch_size > n:
            perm, cursor = torch.randperm(n, generator=gen), 0
        yield perm[cursor: cursor + batch_size]
        cursor += batch_size


CHUNK_ROWS = 65536


def _mapped_file(features: np.ndarray) -> tuple[str, int] | None:
    """(file, data offset) of a memory map that covers its whole file (the feature cache), else None."""
    path, offset = getattr(features, "filename", None), getattr(features, "offset", None)
    if not isinstance(features, np.memmap) or path is None or offset is None or not features.flags.c_contiguous:
        return None
    if os.path.getsize(path) != offset + features.nbytes:  # a slice of a map: read through the map
        return None
    return path, offset


def _gather(features: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``features[rows]`` (rows ascending). From a feature-cache file the rows are read with ``preadv``,
    not through the map: pages touched through a map stay in the process's resident set."""
    where = _mapped_file(features)
    if where is None:
        return features[rows]
    out = np.empty((rows.size, *features.shape[1:]), dtype=features.dtype)
    row_bytes = features.strides[0]
    flat = out.reshape(rows.size, -1).view(np.uint8)
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    fd = os.open(where[0], os.O_RDONLY)
    try:
        for lo, hi in zip(np.r_[0, breaks].tolist(), np.r_[breaks, rows.size].tolist()):
            want = (hi - lo) * row_bytes
            if os.preadv(fd, [memoryview(flat[lo:hi]).cast("B")], where[1] + int(rows[lo]) * row_bytes) != want:
                raise ValueError(f"{where[0]}: short read; the feature cache is truncated")
    finally:
        os.close(fd)
    return out


def _chunks(features: np.ndarray | torch.Tensor, rows: int = CHUNK_ROWS) -> Iterator[np.ndarray]:
    """Consecutive row blocks of ``features`` as in-memory arrays (a memory map is read block by block)."""
    mapped = _mapped_file(features) is not None
    for i in range(0, features.shape[0], rows):
        if mapped:
            yield _gather(features, np.arange(i, min(i + rows, features.shape[0])))
        else:
            yield np.asarray(features[i : i + rows])


def _all_finite(features: np.ndarray | torch.Tensor) -> bool:
    return all(np.isfinite(chunk).all() for chunk in _chunks(features))


@torch.no_grad()
def predict_proba(head: nn.Linear, features: np.ndarray | torch.Tensor, batch_size: int = CHUNK_ROWS) -> np.ndarray:
    """Softmax probabilities ``[N, C]`` of a head on raw features (read in chunks: may be memory-mapped)."""
    out = [head(torch.as_tensor(chunk, dtype=torch.float32)).softmax(-1) for chunk in _chunks(features, batch_size)]
    return torch.cat(out).numpy() if out else np.zeros((0, head.out_features), dtype=np.float32)

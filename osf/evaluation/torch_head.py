"""The probes' estimator for features that do not fit in memory: the same L2 logistic regression, streamed.

:class:`TorchLogReg` fits what :class:`osf.evaluation.probes.StandardisedLogReg` fits -- multinomial
(binary: logistic) regression with an L2 penalty on standardised features, scikit-learn's objective
``mean cross-entropy + ||W||^2 / (2 C n)`` (intercept unpenalised) -- but reads the features in row
chunks: the mean and standard deviation in one pass, then full-batch L-BFGS whose every loss and gradient
is accumulated chunk by chunk. A numpy array or a memory map (``np.load(..., mmap_mode="r")``) is never
read whole, so the features may be larger than memory; the result is the same optimum as the in-memory
head's, to the solvers' tolerance.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

# Rows per chunk from the bytes of a float64 chunk: bounded memory whatever the feature width.
CHUNK_MIB = 64
# L-BFGS stops at max |gradient| <= GTOL of the mean-scaled objective; scikit-learn stops at 1e-4, a
# tighter tolerance here keeps the two heads' probabilities within the looser solver's error. A fit that
# ends (iterations or evaluations spent, no progress) above scikit-learn's tolerance is not converged.
GTOL = 1e-6
CONVERGED_GTOL = 1e-4
HISTORY = 20


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Torch's intra-op threads set to ``n`` for the block, then restored."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Split(Protocol):
    """What a fit reads: features ``x`` ``[N, D]`` (an array or a memory map) and labels ``y`` (-1 unknown);
    ``osf.evaluation.probes.Split`` (not imported: the probes import this module)."""

    x: np.ndarray
    y: np.ndarray


def chunk_rows(x: np.ndarray, chunk_mib: float = CHUNK_MIB) -> int:
    """Rows of ``x`` in one chunk of ``chunk_mib`` MiB as float64."""
    width = int(np.prod(x.shape[1:])) or 1
    return max(1, int(chunk_mib * 2**20) // (8 * width))


def chunks(x: np.ndarray, rows: int, keep: np.ndarray | None = None) -> Iterator[tuple[slice, np.ndarray]]:
    """``(rows slice, float64 block)`` over ``x``; with ``keep``, each block's kept rows only."""
    for start in range(0, x.shape[0], rows):
        span = slice(start, min(start + rows, x.shape[0]))
        block = np.asarray(x[span], dtype=np.float64)  # one chunk of a memory map read from disk
        yield span, block if keep is None else block[keep[span]]


def streamed_mean_std(x: np.ndarray, keep: np.ndarray, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Column mean and population std of ``x[keep]`` in one pass (Chan et al.'s pairwise merge of chunks)."""
    n, mean, m2 = 0, np.zeros(x.shape[1]), np.zeros(x.shape[1])
    for _, block in chunks(x, rows, keep):
        if not len(block):
            continue
        k, block_mean = len(block), block.mean(0)
        delta = block_mean - mean
        m2 += ((block - block_mean) ** 2).sum(0) + delta**2 * n * k / (n + k)
        mean += delta * k / (n + k)
        n += k
    return mean, np.sqrt(m2 / max(n, 1))


class TorchLogReg:
    """Streamed standardisation + multinomial L2 logistic regression by L-BFGS over row chunks (CPU, float64)."""

    name = "torch"

    def __init__(self, num_classes: int, seed: int = 0, max_iter: int = 500, chunk_mib: float = CHUNK_MIB,
                 threads: int = 1) -> None:
        # zero initialisation and full-batch steps: no randomness; the seed is kept for the heads' common interface
        self.num_classes, self.seed, self.max_iter, self.chunk_mib = num_classes, seed, max_iter, chunk_mib
        self.threads = threads  # 1 by default: see probes.BLAS_THREADS (a shared machine, small products per chunk)
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None
        self.classes_: np.ndarray | None = None
        self.weight: torch.Tensor | None = None  # [1, D] for two classes (scikit-learn's binary form), else [K, D]
        self.bias: torch.Tensor | None = None
        self.converged = True

    def fit(self, train: Split, c: float) -> TorchLogReg:
        """Fit at penalty ``c``, warm-started from the previous fit; rows labelled -1 are skipped."""
        y = np.asarray(train.y)
        keep = y >= 0
        rows = chunk_rows(train.x, self.chunk_mib)
        if self.mean is None:
            mean, std = streamed_mean_std(train.x, keep, rows)
            self.mean, self.std = mean, np.maximum(std, 1e-6)
            self.classes_ = np.unique(y[keep])
            out = 1 if self.classes_.size == 2 else self.classes_.size
            self.weight = torch.zeros(out, train.x.shape[1], dtype=torch.float64, requires_grad=True)
            self.bias = torch.zeros(out, dtype=torch.float64, requires_grad=True)
        target = np.searchsorted(self.classes_, np.where(keep, y, self.classes_[0]))
        with torch_threads(self.threads):
            self._minimise(train.x, keep, target, float(c) * int(keep.sum()), rows)
        return self

    def _minimise(self, x: np.ndarray, keep: np.ndarray, target: np.ndarray, c_n: float, rows: int) -> None:
        """L-BFGS on ``sum CE / n + ||W||^2 / (2 C n)``, each evaluation one pass over the chunks."""
        params = [self.weight, self.bias]
        opt = torch.optim.LBFGS(params, lr=1.0, max_iter=self.max_iter, max_eval=2 * self.max_iter, history_size=HISTORY,
                                tolerance_grad=GTOL, tolerance_change=1e-12, line_search_fn="strong_wolfe")
        n = int(keep.sum())

        def closure() -> torch.Tensor:
            opt.zero_grad()
            total = 0.0
            for span, block in chunks(x, rows, keep):
                part = self._cross_entropy(torch.from_numpy(block), torch.from_numpy(target[span][keep[span]])) / n
                part.backward()  # gradients accumulate over chunks: the full batch's gradient
                total += part.item()
            penalty = (self.weight**2).sum() / (2 * c_n)
            penalty.backward()
            return torch.tensor(total + penalty.item())

        opt.step(closure)
        closure()  # the gradient at the final point (L-BFGS leaves a line-search trial's in .grad)
        self.converged = max(p.grad.abs().max().item() for p in params) <= CONVERGED_GTOL

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of raw features (standardised here, chunk by chunk)."""
        z = (x - torch.from_numpy(self.mean)) / torch.from_numpy(self.std)
        return z @ self.weight.T + self.bias

    def _cross_entropy(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Summed cross-entropy of a chunk: logistic for two classes, softmax otherwise."""
        logits = self._logits(x)
        if logits.shape[1] == 1:
            return F.binary_cross_entropy_with_logits(logits[:, 0], target.to(logits.dtype), reduction="sum")
        return F.cross_entropy(logits, target, reduction="sum")

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """``[N, num_classes]`` in chunks; classes absent from the training split get probability 0."""
        out = np.zeros((x.shape[0], self.num_classes))
        with torch.no_grad(), torch_threads(self.threads):
            for span, block in chunks(x, chunk_rows(x, self.chunk_mib)):
                logits = self._logits(torch.from_numpy(block))
                if logits.shape[1] == 1:
                    logits = torch.cat([torch.zeros_like(logits), logits], 1)  # P(second class) = sigmoid(logit)
                out[span, self.classes_] = torch.softmax(logits, 1).numpy()
        return out

    def coefficients(self) -> tuple[np.ndarray, np.ndarray]:
        """``(coef, intercept)`` on raw features (the standardisation folded in), scikit-learn's shapes."""
        coef = self.weight.detach().numpy() / self.std
        return coef, self.bias.detach().numpy() - coef @ self.mean

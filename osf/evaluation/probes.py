"""Linear probes as estimators: a grid of L2 logistic regressions on cached features, the best on validation.

The AdamW probe (``osf.downstream.linear_probe``) is a schedule: lr, weight decay, steps and the step
kept decide the number as much as the features do (on the quick start's seed-0 features it gives
random init 0.794 vs pre-trained 0.832 staging kappa, a penalised logistic regression 0.857 vs 0.859).
Here a probe is a well-posed estimator: multinomial logistic regression with an L2 penalty, fitted to
convergence on standardised features (scikit-learn, lbfgs), for every feature view (pooling) x penalty
of one feature pass -- DINOv2's linear evaluation, a grid of heads with the best chosen on validation.

The choice uses the validation split only: :func:`select_on_validation` never sees the test split, and
:func:`fit_probe_grid` hands the test features to the chosen head alone. Binary event tasks then take
their decision threshold from the validation predictions (``choose_threshold``), as the torch probe does.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from osf.downstream.metrics import binary_auroc, choose_threshold, multiclass_scalars

# Inverse L2 strengths C (sklearn: loss + ||w||^2 / (2 C n)), strongest first so each fit warm-starts the next.
PENALTIES: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
MAX_ITER = 500
# BLAS threads per fit: the grid's problems are small (thousands of rows, hundreds of columns), where a
# multi-threaded BLAS only adds synchronisation; on a shared 2-core machine one thread was 30x faster.
BLAS_THREADS = 1


def selection_score(y: np.ndarray, proba: np.ndarray) -> float:
    """The reported headline metric on validation: Cohen's kappa (stages) or AUROC (binary events)."""
    keep = np.asarray(y) >= 0
    y, proba = np.asarray(y)[keep], np.asarray(proba)[keep]
    if proba.shape[1] == 2:
        return binary_auroc(y == 1, proba[:, 1])
    return multiclass_scalars(y, proba)["kappa"]


@dataclass
class Split:
    """Features and labels of one split (labels -1 = unknown, left out of fitting and scoring)."""

    x: np.ndarray
    y: np.ndarray

    def labelled(self) -> Split:
        """Rows with a known label."""
        keep = np.asarray(self.y) >= 0
        return Split(np.asarray(self.x)[keep], np.asarray(self.y)[keep])


class StandardisedLogReg:
    """Training-split standardisation + multinomial L2 logistic regression, probabilities for all classes."""

    def __init__(self, num_classes: int, seed: int = 0) -> None:
        from sklearn.linear_model import LogisticRegression

        self.num_classes = num_classes
        self.model = LogisticRegression(max_iter=MAX_ITER, warm_start=True, random_state=seed)
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None
        self.converged = True

    def standardise(self, x: np.ndarray) -> np.ndarray:
        """``(x - mean) / std`` with the training split's statistics."""
        return (np.asarray(x, dtype=np.float64) - self.mean) / self.std

    def fit(self, train: Split, c: float) -> StandardisedLogReg:
        """Fit at penalty ``c`` (warm-started from the previous fit)."""
        from sklearn.exceptions import ConvergenceWarning

        if self.mean is None:
            x = np.asarray(train.x, dtype=np.float64)
            self.mean, self.std = x.mean(0), np.maximum(x.std(0), 1e-6)
        self.model.set_params(C=c)
        from threadpoolctl import threadpool_limits

        with warnings.catch_warnings(record=True) as caught, threadpool_limits(BLAS_THREADS):
            warnings.simplefilter("always", ConvergenceWarning)
            self.model.fit(self.standardise(train.x), train.y)
        self.converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """``[N, num_classes]``; classes absent from the training split get probability 0."""
        part = self.model.predict_proba(self.standardise(x))
        out = np.zeros((part.shape[0], self.num_classes))
        out[:, self.model.classes_.astype(np.int64)] = part
        return out

    def coefficients(self) -> tuple[np.ndarray, np.ndarray]:
        """``(coef, intercept)`` on raw features (the standardisation folded in)."""
        coef = self.model.coef_ / self.std
        return coef, self.model.intercept_ - coef @ self.mean


@dataclass
class GridPoint:
    """One head of the grid and its validation score."""

    view: str
    c: float
    val_score: float
    converged: bool


@dataclass
class GridSelection:
    """Every head's validation score and the chosen one (highest; the first on ties)."""

    points: list[GridPoint]
    view: str
    c: float
    val_score: float


def select_on_validation(train: Mapping[str, Split], val: Mapping[str, Split], num_classes: int,
                         penalties: Sequence[float] = PENALTIES, seed: int = 0
                         ) -> tuple[GridSelection, StandardisedLogReg]:
    """Fit every view x penalty on ``train`` and score it on ``val``; the grid and the chosen head.

    ``train`` / ``val`` map a view name (a pooling, a baseline's features) to that view's split. Each
    view's penalties are fitted strongest first, each fit warm-started from the previous (the problem
    is convex: the same solution, fewer iterations); the best head is kept as a copy.
    """
    if set(train) != set(val) or not train:
        raise ValueError(f"train and val must name the same views, got {sorted(train)} and {sorted(val)}")
    points: list[GridPoint] = []
    best: tuple[GridPoint, StandardisedLogReg] | None = None
    for view in train:
        tr, va = train[view].labelled(), val[view].labelled()
        if np.unique(tr.y).size < 2:
            raise ValueError(f"view {view!r}: the training split has one class ({np.unique(tr.y)}); no probe")
        head = StandardisedLogReg(num_classes, seed)
        for c in sorted(penalties):
            head.fit(tr, c)
            point = GridPoint(view, float(c), float(selection_score(va.y, head.predict_proba(va.x))), head.converged)
            points.append(point)
            if best is None or point.val_score > best[0].val_score or not math.isfinite(best[0].val_score):
                best = (point, copy.deepcopy(head))  # a NaN score is replaced by the next finite one, never wins
    assert best is not None
    return GridSelection(points, best[0].view, best[0].c, best[0].val_score), best[1]


@dataclass
class ProbeFit:
    """The chosen head's validation and test probabilities, its threshold and the grid that chose it."""

    selection: GridSelection
    proba: dict[str, np.ndarray]  # "val", "test"
    threshold: float | None  # binary tasks: F1-optimal on validation
    head: StandardisedLogReg | None = field(default=None, repr=False)
    info: dict[str, Any] = field(default_factory=dict)

    def on_other_test(self, test: Mapping[str, np.ndarray]) -> ProbeFit:
        """The same head (same choice, same threshold) on other test features, e.g. with channels missing."""
        assert self.head is not None
        proba = dict(self.proba, test=self.head.predict_proba(test[self.selection.view]))
        return ProbeFit(self.selection, proba, self.threshold, self.head, dict(self.info, reused_head=True))

    def record(self) -> dict[str, Any]:
        """JSON-ready record of the choice and the grid."""
        return {"view": self.selection.view, "C": self.selection.c, "val_score": self.selection.val_score,
                "threshold": self.threshold,
                "grid": [{"view": p.view, "C": p.c, "val_score": p.val_score, "converged": p.converged}
                         for p in self.selection.points], **self.info}


def fit_probe_grid(train: Mapping[str, Split], val: Mapping[str, Split], test: Mapping[str, np.ndarray],
                   num_classes: int, penalties: Sequence[float] = PENALTIES, seed: int = 0) -> ProbeFit:
    """:func:`select_on_validation`, then the chosen head on the test features of its view.

    ``test`` maps each view to test features only: labels never enter this function's test side.
    """
    selection, head = select_on_validation(train, val, num_classes, penalties, seed)
    val_split = val[selection.view]
    val_proba = head.predict_proba(val_split.x)
    threshold = None
    if num_classes == 2:
        keep = np.asarray(val_split.y) >= 0
        threshold = float(choose_threshold(np.asarray(val_split.y)[keep], val_proba[keep]))
    test_proba = head.predict_proba(test[selection.view])
    if not np.isfinite(test_proba).all():
        raise ValueError(f"view {selection.view!r}: the chosen head gives non-finite test probabilities")
    return ProbeFit(selection, {"val": val_proba, "test": test_proba}, threshold, head)


def penalty_summary(fit: ProbeFit) -> str:
    """One line: the chosen view and C, and whether the chosen C sits on the grid's edge."""
    cs = sorted({p.c for p in fit.selection.points})
    edge = " (at the grid's edge)" if fit.selection.c in (cs[0], cs[-1]) and len(cs) > 1 else ""
    score = fit.selection.val_score
    return f"{fit.selection.view}, C={fit.selection.c:g}{edge}, val {score:.3f}" if math.isfinite(score) else "n/a"

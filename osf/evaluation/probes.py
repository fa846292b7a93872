"""Linear probes as estimators: a grid of L2 logistic regressions on cached features, the best on validation.

The AdamW probe (``osf.downstream.linear_probe``) is a schedule: lr, weight decay, steps and the step
kept decide the number as much as the features do (on the quick start's seed-0 features it gives
random init 0.794 vs pre-trained 0.832 staging kappa, a penalised logistic regression 0.857 vs 0.859).
Here a probe is a well-posed estimator: multinomial logistic regression with an L2 penalty, fitted to
convergence on standardised features (scikit-learn, lbfgs), for every feature view (pooling) x penalty
of one feature pass -- DINOv2's linear evaluation, a grid of heads with the best chosen on validation.
Training features larger than ``max_in_memory_gib`` (as the float64 copy scikit-learn would hold) go to
the same estimator streamed in chunks (``osf.evaluation.torch_head``, L-BFGS in torch), which reads a
memory map without loading it. A chosen penalty at either end of the grid extends the chosen view's grid
by a decade on that side (up to ``MAX_EXTENSIONS`` times): the optimum is then inside the grid or reported
at its edge.

The choice uses the validation split only: :func:`select_on_validation` never sees the test split, and
:func:`fit_probe_grid` hands the test features to the chosen head alone. Binary event tasks then take
their decision threshold from the validation predictions (``choose_threshold``), as the torch probe does.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from osf.downstream.metrics import binary_auroc, choose_threshold, multiclass_scalars

if TYPE_CHECKING:
    from osf.evaluation.torch_head import TorchLogReg

# Inverse L2 strengths C (sklearn: loss + ||w||^2 / (2 C n)), strongest first so each fit warm-starts the next.
PENALTIES: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
MAX_ITER = 500
# BLAS threads per fit: the grid's problems are small (thousands of rows, hundreds of columns), where a
# multi-threaded BLAS only adds synchronisation; on a shared 2-core machine one thread was 30x faster.
BLAS_THREADS = 1
# Training features above this size (as float64) are fitted by the streamed torch head, not in memory.
MAX_IN_MEMORY_GIB = 2.0
# Decades the grid grows by, one at a time, while the chosen penalty sits at its end.
MAX_EXTENSIONS = 2


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

    name = "sklearn"

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
        """Fit at penalty ``c`` (warm-started from the previous fit); rows labelled -1 are left out."""
        from sklearn.exceptions import ConvergenceWarning

        train = train.labelled()
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


ProbeHead = Union[StandardisedLogReg, "TorchLogReg"]


def features_gib(x: np.ndarray) -> float:
    """GiB of ``x`` as float64, the copy the in-memory head fits on (a memory map's size on disk alike)."""
    return math.prod(x.shape) * 8 / 2**30


def new_head(x: np.ndarray, num_classes: int, seed: int = 0, max_in_memory_gib: float = MAX_IN_MEMORY_GIB
             ) -> ProbeHead:
    """scikit-learn's head for training features within the budget, the streamed torch head beyond it."""
    if features_gib(x) <= max_in_memory_gib:
        return StandardisedLogReg(num_classes, seed)
    from osf.evaluation.torch_head import TorchLogReg

    return TorchLogReg(num_classes, seed, max_iter=MAX_ITER, threads=BLAS_THREADS)


@dataclass
class GridPoint:
    """One head of the grid and its validation score."""

    view: str
    c: float
    val_score: float
    converged: bool
    head: str = StandardisedLogReg.name  # which estimator fitted it: "sklearn" or "torch"
    extension: int = 0  # 0: the given grid; k: the k-th decade added past its edge


@dataclass
class GridSelection:
    """Every head's validation score and the chosen one (highest; the first on ties)."""

    points: list[GridPoint]
    view: str
    c: float
    val_score: float
    head: str = StandardisedLogReg.name
    extended: list[float] = field(default_factory=list)  # penalties added past the grid's edge, in order


def _fit_point(view: str, c: float, head: ProbeHead, train: Split, val: Split, extension: int = 0) -> GridPoint:
    """Fit ``head`` at ``c`` and score it on validation (rows labelled -1 are skipped by both)."""
    head.fit(train, c)
    score = float(selection_score(val.y, head.predict_proba(val.x)))
    return GridPoint(view, float(c), score, head.converged, head.name, extension)


def _better(point: GridPoint, best: GridPoint | None) -> bool:
    """Whether ``point`` replaces ``best``: a higher score; a NaN best is replaced by anything, never wins."""
    return best is None or point.val_score > best.val_score or not math.isfinite(best.val_score)


def beyond_edge(c: float, penalties: Sequence[float]) -> float | None:
    """The penalty a decade past the end of ``penalties`` where ``c`` sits; None inside (or a grid of one)."""
    if len(set(penalties)) < 2:
        return None
    if c == min(penalties):
        return c / 10
    return c * 10 if c == max(penalties) else None


def select_on_validation(train: Mapping[str, Split], val: Mapping[str, Split], num_classes: int,
                         penalties: Sequence[float] = PENALTIES, seed: int = 0,
                         max_in_memory_gib: float = MAX_IN_MEMORY_GIB, max_extensions: int = MAX_EXTENSIONS
                         ) -> tuple[GridSelection, ProbeHead]:
    """Fit every view x penalty on ``train`` and score it on ``val``; the grid and the chosen head.

    ``train`` / ``val`` map a view name (a pooling, a baseline's features) to that view's split. Each
    view's penalties are fitted strongest first, each fit warm-started from the previous (the problem
    is convex: the same solution, fewer iterations); the best head is kept as a copy. While the chosen
    penalty is at an end of its view's grid, that view is refitted a decade further (``max_extensions``).
    """
    if set(train) != set(val) or not train:
        raise ValueError(f"train and val must name the same views, got {sorted(train)} and {sorted(val)}")
    points: list[GridPoint] = []
    best: tuple[GridPoint, ProbeHead] | None = None
    for view in train:
        y = np.asarray(train[view].y)
        known = np.unique(y[y >= 0])
        if known.size < 2:
            raise ValueError(f"view {view!r}: the training split has one class ({known}); no probe")
        head = new_head(train[view].x, num_classes, seed, max_in_memory_gib)
        for c in sorted(penalties):
            points.append(_fit_point(view, c, head, train[view], val[view]))
            if _better(points[-1], best[0] if best else None):
                best = (points[-1], copy.deepcopy(head))
    assert best is not None
    best, extended = _extend_past_edge(best, points, train, val, max_extensions)
    chosen = best[0]
    return GridSelection(points, chosen.view, chosen.c, chosen.val_score, chosen.head, extended), best[1]


def _extend_past_edge(best: tuple[GridPoint, ProbeHead], points: list[GridPoint], train: Mapping[str, Split],
                      val: Mapping[str, Split], max_extensions: int
                      ) -> tuple[tuple[GridPoint, ProbeHead], list[float]]:
    """While the best penalty is at an end of its view's grid, fit that view a decade further (appended to
    ``points``); the best head afterwards and the penalties added."""
    extended: list[float] = []
    for step in range(1, max_extensions + 1):
        view = best[0].view
        c = beyond_edge(best[0].c, [p.c for p in points if p.view == view])
        if c is None:
            break
        head = copy.deepcopy(best[1])  # warm start from the edge's solution, the nearest one
        points.append(_fit_point(view, c, head, train[view], val[view], step))
        extended.append(c)
        if _better(points[-1], best[0]):
            best = (points[-1], head)
    return best, extended


@dataclass
class ProbeFit:
    """The chosen head's validation and test probabilities, its threshold and the grid that chose it."""

    selection: GridSelection
    proba: dict[str, np.ndarray]  # "val", "test"
    threshold: float | None  # binary tasks: F1-optimal on validation
    head: ProbeHead | None = field(default=None, repr=False)
    info: dict[str, Any] = field(default_factory=dict)

    def on_other_test(self, test: Mapping[str, np.ndarray]) -> ProbeFit:
        """The same head (same choice, same threshold) on other test features, e.g. with channels missing."""
        assert self.head is not None
        proba = dict(self.proba, test=self.head.predict_proba(test[self.selection.view]))
        return ProbeFit(self.selection, proba, self.threshold, self.head, dict(self.info, reused_head=True))

    def record(self) -> dict[str, Any]:
        """JSON-ready record of the choice and the grid."""
        return {"view": self.selection.view, "C": self.selection.c, "val_score": self.selection.val_score,
                "head": self.selection.head, "extended_C": self.selection.extended, "threshold": self.threshold,
                "grid": [{("C" if k == "c" else k): v for k, v in asdict(p).items()} for p in self.selection.points],
                **self.info}


def fit_probe_grid(train: Mapping[str, Split], val: Mapping[str, Split], test: Mapping[str, np.ndarray],
                   num_classes: int, penalties: Sequence[float] = PENALTIES, seed: int = 0,
                   max_in_memory_gib: float = MAX_IN_MEMORY_GIB, max_extensions: int = MAX_EXTENSIONS) -> ProbeFit:
    """:func:`select_on_validation`, then the chosen head on the test features of its view.

    ``test`` maps each view to test features only: labels never enter this function's test side.
    """
    selection, head = select_on_validation(train, val, num_classes, penalties, seed, max_in_memory_gib,
                                           max_extensions)
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
    """One line: the chosen view and C, and whether the chosen C sits on its view's (extended) grid's edge."""
    cs = sorted({p.c for p in fit.selection.points if p.view == fit.selection.view})
    edge = " (at the grid's edge)" if fit.selection.c in (cs[0], cs[-1]) and len(cs) > 1 else ""
    score = fit.selection.val_score
    return f"{fit.selection.view}, C={fit.selection.c:g}{edge}, val {score:.3f}" if math.isfinite(score) else "n/a"

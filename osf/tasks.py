"""The task registry: every per-epoch task the toolkit trains and reports, and the only list of them.

A :class:`Task` names its store label column, its kind (``stages``: the sleep stages, multiclass;
``event``: a binary per-epoch event), the test metric results tables report, the validation metric
that selects a head's step, and the key of its per-hour index in a night's summary. The quick start,
SleepBench-mini, the ceilings, the prediction summary, the sweeps and ``osf.config.LABEL_COLUMNS``
(a live view of this registry) read it; adding a task is one :func:`register_task` call (plus the
scoring that fills its label column, and its test entry).

Which metric selects and which reports also depends on the level (per epoch, or per night for the
night-level targets of the subject tables): :data:`SELECTION_METRICS` and :data:`REPORTING_METRICS`
are the one table of those choices.

This module is at the facts layer and imports nothing from ``osf``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

__all__ = ["KINDS", "REPORTING_METRICS", "SELECTION_METRICS", "TASKS", "LabelColumns", "Task", "by_column", "get_task",
           "register_task", "reporting_metric", "selection_metric", "studied_tasks", "target_kind", "unregister_task"]

# Validation metric that selects a model's step, per (level, target kind). Per epoch: macro-F1 over the stages,
# AUPRC for a rare binary event; per night: AUROC (a balanced-ish night target), -MAE for a regression.
SELECTION_METRICS: dict[tuple[str, str], str] = {
    ("epoch", "multiclass"): "macro_f1", ("epoch", "binary"): "auprc",
    ("night", "multiclass"): "macro_f1", ("night", "binary"): "auroc", ("night", "regression"): "neg_mae",
}
# Headline test metric of a results table, per (level, target kind).
REPORTING_METRICS: dict[tuple[str, str], str] = {
    ("epoch", "multiclass"): "kappa", ("epoch", "binary"): "auroc",
    ("night", "multiclass"): "kappa", ("night", "binary"): "auroc", ("night", "regression"): "mae",
}
# Task kind -> target kind of its labels.
KINDS: dict[str, str] = {"stages": "multiclass", "event": "binary"}


def _metric(table: Mapping[tuple[str, str], str], what: str, level: str, kind: str) -> str:
    try:
        return table[(level, kind)]
    except KeyError:
        raise ValueError(f"no {what} metric for level {level!r} and target kind {kind!r}; "
                         f"known: {sorted(table)}") from None


def target_kind(num_classes: int | None, regression: bool = False) -> str:
    """``regression``, ``binary`` (2 classes) or ``multiclass``: the key of the metric tables."""
    return "regression" if regression else "binary" if num_classes == 2 else "multiclass"


def selection_metric(level: str, kind: str) -> str:
    """Validation metric that selects a model's step at ``level`` (epoch / night) for a ``kind`` target."""
    return _metric(SELECTION_METRICS, "selection", level, kind)


def reporting_metric(level: str, kind: str) -> str:
    """Headline test metric at ``level`` (epoch / night) for a ``kind`` target (multiclass / binary / regression)."""
    return _metric(REPORTING_METRICS, "reporting", level, kind)


@dataclass(frozen=True)
class Task:
    """One per-epoch task: its name (``--eval_label``), label column, kind and metrics."""

    name: str  # the command-line spelling, e.g. "Oxygen Desaturation"
    label_column: str  # column of the epoch store's index
    kind: str  # "stages" or "event" (KINDS)
    summary_key: str | None = None  # key of its per-hour index in a night's summary (events)
    studied: bool = True  # one of the evaluated tasks (quick start, SleepBench-mini, ceilings, sweeps)
    reporting_metric: str = field(default="")  # "" -> the kind's (REPORTING_METRICS)
    selection_metric: str = field(default="")  # "" -> the kind's (SELECTION_METRICS)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"task {self.name!r}: kind must be one of {sorted(KINDS)}, got {self.kind!r}")
        if not self.reporting_metric:
            object.__setattr__(self, "reporting_metric", reporting_metric("epoch", self.target_kind))
        if not self.selection_metric:
            object.__setattr__(self, "selection_metric", selection_metric("epoch", self.target_kind))

    @property
    def target_kind(self) -> str:
        """``multiclass`` or ``binary``."""
        return KINDS[self.kind]

    @property
    def is_event(self) -> bool:
        """A binary per-epoch event (its probability becomes events in a night's summary)."""
        return self.kind == "event"


TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    """Add ``task`` to the registry (its name and label column must be new); returns it."""
    if task.name in TASKS:
        raise ValueError(f"task {task.name!r} is already registered")
    taken = [t.name for t in TASKS.values() if t.label_column == task.label_column]
    if taken:
        raise ValueError(f"task {task.name!r}: label column {task.label_column!r} already belongs to {taken[0]!r}")
    TASKS[task.name] = task
    return task


def unregister_task(name: str) -> None:
    """Remove a registered task (tests that register a toy one)."""
    TASKS.pop(name, None)


def get_task(name: str) -> Task:
    """The registered task ``name``; ValueError naming the known ones."""
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; choose one of {list(TASKS)}") from None


def by_column(column: str) -> Task | None:
    """The task whose label column is ``column`` (None when none is)."""
    return next((t for t in TASKS.values() if t.label_column == column), None)


def studied_tasks() -> tuple[str, ...]:
    """Names of the evaluated tasks, stages first (the default task list of the studies)."""
    return tuple(t.name for t in TASKS.values() if t.studied)


class LabelColumns(Mapping):
    """Read-only, live ``task name -> label column`` view of the registry (``osf.config.LABEL_COLUMNS``)."""

    def __getitem__(self, name: str) -> str:
        if name not in TASKS:
            raise KeyError(name)
        return TASKS[name].label_column

    def __iter__(self) -> Iterator[str]:
        return iter(list(TASKS))

    def __len__(self) -> int:
        return len(TASKS)

    def __repr__(self) -> str:
        return repr(dict(self))


register_task(Task("Stage", "stage", "stages"))
register_task(Task("Arousal", "arousal", "event", summary_key="arousal_index"))  # ArI
register_task(Task("Hypopnea", "hypopnea", "event", summary_key="hypopnea_index"))  # HI
register_task(Task("Oxygen Desaturation", "oxygen_desaturation", "event", summary_key="oxygen_desaturation_index"))  # ODI
# Scored, stored and predicted, but not one of the evaluated tasks.
register_task(Task("Apnea", "apnea", "event", summary_key="apnea_index", studied=False))  # AI

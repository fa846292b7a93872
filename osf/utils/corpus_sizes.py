"""Sizes of the synthetic corpus a pipeline generates first: nights per cohort and the worker processes.

Shared by the quick start and SleepBench-mini, whose configs both name a night total, cohorts and
``cpu_workers``. Kept free of heavy imports: the configs are read by ``--help``.
"""

from __future__ import annotations

import os


def night_workers(cpu_workers: int) -> int:
    """Processes for the CPU-bound night generation and preprocessing: ``cpu_workers``, else one per core (at most 4)."""
    return cpu_workers or max(1, min(4, os.cpu_count() or 1))


def nights_per_cohort(nights: int, n_cohorts: int) -> int:
    """Nights generated per cohort so that ``n_cohorts`` cohorts hold at least ``nights`` (at least one each)."""
    return max(1, -(-nights // n_cohorts))

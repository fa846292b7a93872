"""Seeds as the unit of a SleepBench-mini verdict: a cell's paired difference decided over its training seeds.

A cell (method, preset, task, setting) has one ``results.csv`` row per seed. With one seed its verdict is
that run's paired subject-bootstrap CI, as the row states it. With several, the rows' predictions go to
``osf.evaluation.seeds.seed_level_difference``: the mean of the per-seed differences, a hierarchical
bootstrap CI (seeds, then each drawn seed's test subjects) and a t-test across seeds; the per-seed rows
stay beside it. The seeds' subjects are never pooled as one sample.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from functools import lru_cache

import pandas as pd

from osf.downstream.metrics import load_predictions
from osf.evaluation.seeds import SeedLevelDifference, SeedRow, seed_level_difference
from osf.sleepbench.results import BOOT_SEED, verdict

NAN = math.nan


@dataclass
class Comparison:
    """``a - b`` over the seeds both have: the seed-level difference, and each seed's row when there are several."""

    a: str
    b: str
    diff: float
    low: float
    high: float
    per_seed: list[SeedRow] = field(default_factory=list)  # empty with one seed
    p: float = NAN  # t-test across seeds

    @property
    def n_seeds(self) -> int:
        """Seeds behind the verdict."""
        return max(len(self.per_seed), 1)

    @property
    def verdict(self) -> str:
        """better / worse / n.s. for a against b."""
        return verdict(self.low, self.high)

    def seeds_text(self) -> str:
        """``3 seeds, t-test p = 0.04; per seed +0.012 better / ...``; empty with one seed."""
        if self.n_seeds == 1:
            return ""
        rows = " / ".join(f"{r.diff:+.3f} {verdict(r.low, r.high)}" for r in self.per_seed)
        return f"{self.n_seeds} seeds, t-test p = {self.p:.2f}; per seed {rows}"

    def summary(self, ci: bool = True) -> str:
        """``+0.012 [-0.004, +0.030] (n.s.)``; ``ci=False`` leaves out one seed's CI; several seeds add their detail."""
        several = self.n_seeds > 1
        interval = f" [{self.low:+.3f}, {self.high:+.3f}]" if ci or several else ""
        return f"{self.diff:+.3f}{interval} ({self.verdict}{'; ' + self.seeds_text() if several else ''})"

    def text(self) -> str:
        """``a vs b: +0.012 [-0.004, +0.030]``, with the seeds' detail when there are several."""
        detail = f" ({self.seeds_text()})" if self.n_seeds > 1 else ""
        return f"{self.a} vs {self.b}: {self.diff:+.3f} [{self.low:+.3f}, {self.high:+.3f}]{detail}"


def _from_seed_level(a: str, b: str, d: SeedLevelDifference) -> Comparison:
    per_seed = d.per_seed if d.n_seeds > 1 else []
    return Comparison(a, b, d.diff, d.low, d.high, per_seed, d.t_test.p)


def _stamp(path: str) -> tuple[str, int]:
    return path, os.stat(path).st_mtime_ns


@lru_cache(maxsize=4096)
def _seed_level(files: tuple[tuple[tuple[str, int], tuple[str, int]], ...], metric: str, labels: tuple[str, ...],
                n_boot: int) -> SeedLevelDifference:
    """Cached on the prediction files (path and mtime): the report's tables and its findings share the bootstraps."""
    pairs = [(load_predictions(a), load_predictions(b)) for (a, _), (b, _) in files]
    return seed_level_difference(pairs, metric, labels, n_boot=n_boot, seed=BOOT_SEED)


def seed_pairs(a: pd.DataFrame, b: pd.DataFrame) -> list[tuple[pd.Series, pd.Series]]:
    """The rows of ``a`` and ``b`` (one per seed each) matched by seed, in seed order."""
    by_seed = {int(r["seed"]): r for _, r in b.iterrows()}
    return [(r, by_seed[int(r["seed"])]) for _, r in a.sort_values("seed").iterrows() if int(r["seed"]) in by_seed]


def compare(a: pd.DataFrame, b: pd.DataFrame, n_boot: int) -> Comparison | None:
    """``a - b`` over the seeds both cells have (``seed_level_difference``); None when they share no seed."""
    pairs = seed_pairs(a, b)
    if not pairs:
        return None
    first_a, first_b = pairs[0]
    d = _seed_level(tuple((_stamp(str(x["predictions"])), _stamp(str(y["predictions"]))) for x, y in pairs),
                    str(first_a["metric"]), tuple(f"seed {int(x['seed'])}" for x, _ in pairs), n_boot)
    return _from_seed_level(str(first_a["method"]), str(first_b["method"]), d)


def column_comparison(table: pd.DataFrame, cell: pd.DataFrame, name: str, n_boot: int) -> Comparison:
    """A cell's ``vs_random`` / ``vs_full`` over its seeds: one seed reads its row, several are decided over seeds."""
    first = cell.iloc[0]
    if len(cell) == 1:
        return Comparison(str(first["method"]), name, float(first[name]), float(first[f"{name}_low"]),
                          float(first[f"{name}_high"]))
    partners = partner_rows(table, first, name)
    return compare(cell, partners, n_boot) or Comparison(str(first["method"]), name, NAN, NAN, NAN)


def partner_rows(table: pd.DataFrame, row: pd.Series, name: str) -> pd.DataFrame:
    """The rows (one per seed) ``row``'s cell is paired with in ``name``, as ``results.add_differences`` pairs them."""
    if name == "vs_random":
        sel = (table["kind"] == "random") & (table["setting"] == "linear_probe") & (table["preset"] == row["preset"])
    elif name == "vs_full":
        sel = ((table["method"] == row["method"]) & (table["preset"] == "full") & (table["kind"] != "scaling")
               & (table["setting"] == row["setting"]))
    else:
        raise ValueError(f"no paired column {name!r}: vs_random or vs_full")
    return table[sel & (table["task"] == row["task"])]


def basis(comparisons: list[Comparison]) -> str:
    """What the verdicts rest on: ``one seed``, or ``N seeds as the unit (...)``."""
    n = max((c.n_seeds for c in comparisons), default=1)
    return "one seed" if n == 1 else (f"{n} seeds as the unit: mean over seeds, CI of a bootstrap over seeds then "
                                      "their subjects, t-test across seeds")

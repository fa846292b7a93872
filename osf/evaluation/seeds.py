"""Seeds as the unit of a training claim: a paired difference over independent runs, decided across seeds.

A run (one pre-training seed, with its own corpus, subjects and probes) is one draw of everything that
training leaves to chance; its test subjects are a second, nested level. Pooling the runs' subjects as
if they were one sample (``osf.downstream.metrics.pooled_paired_difference``) hides the first level:
three seeds with gains +0.044, +0.049 and -0.005 pool to "+0.029 [+0.012, +0.048], better" while
across seeds t = 1.70, df = 2, p = 0.23. The verdicts here come from

- a **hierarchical bootstrap**: each draw resamples the seeds with replacement, then the subjects within
  each drawn seed's run, and averages the drawn seeds' differences (with one seed it is the subject
  bootstrap of that run, and says so);
- a **one-sample t-test across seeds** on the per-seed differences (two or more seeds),

and every table keeps the per-seed rows beside the pooled one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from osf.downstream.metrics import CI_LEVEL, PairedScores, stratified_bootstrap_ci

Pair = tuple[dict[str, np.ndarray], dict[str, np.ndarray]]


def hierarchical_bootstrap_ci(
    metric_fns: Sequence[Callable[[np.ndarray], dict[str, float]]],
    subject_ids: Sequence[np.ndarray],
    n_boot: int = 1000,
    seed: int = 0,
    level: float = CI_LEVEL,
) -> dict[str, tuple[float, float]]:
    """Percentile CIs of the mean over seeds of ``metric_fns[s](indices)``: seeds resampled, then subjects.

    ``metric_fns[s]`` scores seed ``s``'s run on epoch indices (with repeats); ``subject_ids[s]`` are
    that run's per-epoch subjects. A seed drawn twice gets two independent subject resamples; with one
    seed this is that run's subject bootstrap.
    """
    if not metric_fns or len(metric_fns) != len(subject_ids):
        raise ValueError(f"need one metric function per seed's subjects, got {len(metric_fns)} and {len(subject_ids)}")
    return stratified_bootstrap_ci(metric_fns, subject_ids, n_boot=n_boot, seed=seed, level=level, resample_strata=True)


@dataclass
class SeedTest:
    """One-sample t-test of the per-seed differences against 0 (NaN with fewer than two seeds)."""

    t: float
    df: int
    p: float
    low: float  # t-based CI of the mean difference
    high: float


def seed_t_test(differences: Sequence[float], level: float = CI_LEVEL) -> SeedTest:
    """t-test across seeds: is the mean per-seed difference different from 0?"""
    d = np.asarray(differences, dtype=np.float64)
    d = d[np.isfinite(d)]
    if d.size < 2:
        return SeedTest(math.nan, max(d.size - 1, 0), math.nan, math.nan, math.nan)
    sd = float(d.std(ddof=1))
    if sd == 0.0:  # identical seeds: no spread to test against (a degenerate, not a decided, result)
        return SeedTest(math.copysign(math.inf, d.mean()) if d.mean() else math.nan, d.size - 1,
                        0.0 if d.mean() else 1.0, float(d.mean()), float(d.mean()))
    res = stats.ttest_1samp(d, 0.0)
    half = float(stats.t.ppf((1 + level) / 2, d.size - 1)) * sd / math.sqrt(d.size)
    return SeedTest(float(res.statistic), int(d.size - 1), float(res.pvalue), float(d.mean() - half),
                    float(d.mean() + half))


def verdict(low: float, high: float) -> str:
    """"better" when the CI of a - b is above 0, "worse" when below, else "not separated"."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return "n/a"
    return "better" if low > 0 else "worse" if high < 0 else "not separated"


@dataclass
class SeedRow:
    """One seed's run: both metrics, their difference and its subject-bootstrap CI (paired)."""

    label: str
    a: float
    b: float
    diff: float
    low: float
    high: float
    n_subjects: int


@dataclass
class SeedLevelDifference:
    """``a - b`` of one metric over seeds: per-seed rows, the mean, its hierarchical CI and the t-test."""

    metric: str
    per_seed: list[SeedRow]
    a: float
    b: float
    diff: float
    low: float  # hierarchical bootstrap (seeds, then subjects)
    high: float
    t_test: SeedTest
    level: float = CI_LEVEL
    notes: list[str] = field(default_factory=list)

    @property
    def n_seeds(self) -> int:
        """Independent runs behind the verdict."""
        return len(self.per_seed)

    @property
    def verdict(self) -> str:
        """From the hierarchical CI; a single seed's verdict is about its subjects only (see ``notes``)."""
        return verdict(self.low, self.high)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record, with the verdict."""
        return {**asdict(self), "n_seeds": self.n_seeds, "verdict": self.verdict}


def seed_level_difference(
    pairs: Sequence[Pair], metric: str, labels: Sequence[str] | None = None, n_boot: int = 1000, seed: int = 0,
    level: float = CI_LEVEL,
) -> SeedLevelDifference:
    """``a - b`` of ``metric`` over seeds, each pair one seed's two runs on its own test subjects.

    Within a pair the epochs are matched (``osf.downstream.metrics.paired_difference``); across pairs
    nothing is shared. The CI is the hierarchical bootstrap's; the per-seed rows carry each run's own
    subject-bootstrap CI.
    """
    if not pairs:
        raise ValueError("no runs to compare")
    labels = list(labels) if labels is not None else [f"seed {i}" for i in range(len(pairs))]
    scored = [PairedScores(a, b) for a, b in pairs]
    rows = []
    for label, s in zip(labels, scored):
        sa = s.score(s.everything, s.pa, s.thr_a, metric)
        sb = s.score(s.everything, s.pb, s.thr_b, metric)
        lo, hi = hierarchical_bootstrap_ci([s.difference_of(metric)], [s.subject_ids], n_boot=n_boot, seed=seed,
                                           level=level)[metric]
        rows.append(SeedRow(label, sa, sb, sa - sb, lo, hi, int(np.unique(s.subject_ids).size)))
    if len(rows) == 1:  # one seed: the hierarchical bootstrap is that run's subject bootstrap, already drawn
        lo, hi = rows[0].low, rows[0].high
    else:
        lo, hi = hierarchical_bootstrap_ci([s.difference_of(metric) for s in scored], [s.subject_ids for s in scored],
                                           n_boot=n_boot, seed=seed, level=level)[metric]
    diffs = [r.diff for r in rows]
    notes = [] if len(rows) > 1 else ["one seed: the CI covers this run's test subjects only, not training chance"]
    return SeedLevelDifference(metric, rows, float(np.mean([r.a for r in rows])), float(np.mean([r.b for r in rows])),
                               float(np.mean(diffs)), lo, hi, seed_t_test(diffs, level), level, notes)


def format_seed_rows(result: SeedLevelDifference, name: str = "") -> list[str]:
    """Text rows: one per seed, then the pooled verdict with the t-test across seeds."""
    lines = [f"    {r.label:10s} {r.a:7.3f} {r.b:7.3f} {r.diff:+7.3f} [{r.low:+.3f}, {r.high:+.3f}]  "
             f"({r.n_subjects} test subjects)" for r in result.per_seed]
    t = result.t_test
    across = (f"t = {t.t:.2f}, df = {t.df}, p = {t.p:.2f}" if math.isfinite(t.p) else "t-test needs >= 2 seeds")
    lines.append(f"  {name:12s} {result.a:7.3f} {result.b:7.3f} {result.diff:+7.3f} [{result.low:+.3f}, "
                 f"{result.high:+.3f}]  {result.verdict} over {result.n_seeds} seed(s); {across}")
    return lines

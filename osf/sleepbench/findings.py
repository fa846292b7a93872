"""The OSF paper's findings, checked on a SleepBench-mini run and stated as measured, whichever way.

(0) every objective beats random init on full-montage staging; (1) models degrade when channels are
missing; (2) channel-invariant pre-training (OSF) degrades least / beats the other objectives on
missing channels; (3) more pre-training data and a bigger backbone help. Each sentence counts the
paired comparisons (95% CI by subject) that come out better, worse or not separated (n.s.).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd

from osf.downstream.metrics import load_predictions, paired_difference
from osf.sleepbench.config import SleepBenchConfig
from osf.sleepbench.results import verdict

OSF = "dino_ours"


@dataclass
class Comparison:
    """One paired difference a - b on the same test epochs."""

    a: str
    b: str
    diff: float
    low: float
    high: float

    @property
    def verdict(self) -> str:
        """better / worse / n.s. for a against b."""
        return verdict(self.low, self.high)

    def text(self) -> str:
        """``a vs b: +0.012 [-0.004, +0.030]``."""
        return f"{self.a} vs {self.b}: {self.diff:+.3f} [{self.low:+.3f}, {self.high:+.3f}]"


def _counts(verdicts: list[str]) -> str:
    c = Counter(verdicts)
    return f"{c['better']} better, {c['worse']} worse, {c['n.s.']} not separated"


def _compare(table: pd.DataFrame, a: pd.Series, b: pd.Series, n_boot: int) -> Comparison:
    d = paired_difference(load_predictions(a["predictions"]), load_predictions(b["predictions"]), n_boot=n_boot,
                          seed=int(a["seed"]))[a["metric"]]
    return Comparison(str(a["method"]), str(b["method"]), d["diff"], d["low"], d["high"])


def _probe(table: pd.DataFrame, **match) -> pd.DataFrame:
    sel = (table["setting"] == "linear_probe") & (table["kind"] != "scaling")
    for k, v in match.items():
        sel &= table[k] == v
    return table[sel]


def finding_beats_random(table: pd.DataFrame, cfg: SleepBenchConfig) -> str:
    """(0) Full-montage staging of every objective against random init."""
    rows = _probe(table, preset="full", task="Stage", kind="pretrained")
    if rows.empty:
        return "(0) no full-montage staging probes yet."
    parts = [f"{r.method} {r.vs_random:+.3f} ({verdict(r.vs_random_low, r.vs_random_high)})"
             for r in rows.itertuples() if np.isfinite(r.vs_random)]
    verdicts = [verdict(r.vs_random_low, r.vs_random_high) for r in rows.itertuples()]
    every = all(v == "better" for v in verdicts)
    return (f"(0) Full-montage staging vs random init (kappa difference, paired CI): {'; '.join(parts)}. "
            f"{'Every objective beats random init.' if every else 'Not every objective beats random init: ' + _counts(verdicts) + '.'}")


def finding_degradation(table: pd.DataFrame, cfg: SleepBenchConfig) -> str:
    """(1) Staging change from the full montage per preset, over the objectives."""
    rows = _probe(table, task="Stage", kind="pretrained")
    rows = rows[rows["preset"] != "full"]
    if rows.empty:
        return "(1) no missing-channel staging probes yet."
    per_preset = []
    for preset, sub in rows.groupby("preset", sort=False):
        vs = [verdict(r.vs_full_low, r.vs_full_high) for r in sub.itertuples()]
        per_preset.append(f"{preset}: mean {sub['vs_full'].mean():+.3f}, {Counter(vs)['worse']}/{len(vs)} objectives "
                          f"lose kappa outside the CI")
    return "(1) Staging without channels, change from the full montage: " + "; ".join(per_preset) + "."


def finding_osf_invariance(table: pd.DataFrame, cfg: SleepBenchConfig) -> str:
    """(2) OSF against every other objective on each missing-channel preset (paired, same test epochs)."""
    if OSF not in cfg.methods:
        return "(2) OSF (dino_ours) was not run."
    parts, verdicts = [], []
    for preset in [p for p in cfg.presets if p != "full"]:
        osf = _probe(table, task="Stage", preset=preset, method=OSF)
        others = _probe(table, task="Stage", preset=preset, kind="pretrained")
        for seed_row in osf.itertuples():
            for other in others[(others["method"] != OSF) & (others["seed"] == seed_row.seed)].itertuples():
                c = _compare(table, pd.Series(seed_row._asdict()), pd.Series(other._asdict()), cfg.n_boot)
                verdicts.append(c.verdict)
                parts.append(f"{preset} {c.text()}")
    if not verdicts:
        return "(2) no missing-channel staging probes of OSF and another objective yet."
    return (f"(2) OSF vs the other objectives on missing-channel staging: {_counts(verdicts)} "
            f"(of {len(verdicts)} paired comparisons). " + "; ".join(parts) + ".")


def finding_scaling(table: pd.DataFrame, cfg: SleepBenchConfig) -> str:
    """(3) More pre-training data (largest vs smallest fraction) and a bigger backbone (at all data)."""
    rows = table[(table["kind"] == "scaling") & (table["task"] == "Stage")]
    if rows.empty:
        return "(3) no scaling runs yet."
    parts = []
    for size, sub in rows.groupby("backbone", sort=False):
        sub = sub.sort_values("train_fraction")
        if len(sub) > 1:
            c = _compare(table, sub.iloc[-1], sub.iloc[0], cfg.n_boot)
            parts.append(f"{size}, {sub.iloc[-1]['train_fraction']:g} vs {sub.iloc[0]['train_fraction']:g} of the data: "
                         f"{c.diff:+.3f} [{c.low:+.3f}, {c.high:+.3f}] ({c.verdict})")
    full = rows[rows["train_fraction"] == rows["train_fraction"].max()].sort_values("backbone")
    sizes = [s for s in cfg.scaling_sizes if s in set(full["backbone"])]
    if len(sizes) > 1:
        big, small = (full[full["backbone"] == s].iloc[0] for s in (sizes[-1], sizes[0]))
        c = _compare(table, big, small, cfg.n_boot)
        parts.append(f"{sizes[-1]} vs {sizes[0]} at all data: {c.diff:+.3f} [{c.low:+.3f}, {c.high:+.3f}] ({c.verdict})")
    return "(3) Scaling, staging kappa of OSF: " + ("; ".join(parts) or "one point only") + "."


def findings(table: pd.DataFrame, cfg: SleepBenchConfig) -> list[str]:
    """The four statements, in order."""
    return [f(table, cfg) for f in (finding_beats_random, finding_degradation, finding_osf_invariance, finding_scaling)]

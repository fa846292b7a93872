"""The OSF paper's findings, checked on a SleepBench-mini run and stated as measured, whichever way.

(0) every objective beats random init on full-montage staging; (1) models degrade when channels are
missing; (2) channel-invariant pre-training (OSF) degrades least / beats the other objectives on
missing channels; (3) more pre-training data and a bigger backbone help. Each sentence counts the
paired comparisons that come out better, worse or not separated (n.s.): with one seed by that run's 95% CI
by subject, with several by the seed-level CI (seeds, then subjects; ``osf.sleepbench.seedlevel``), with
the t-test across seeds and the per-seed differences beside it.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd

from osf.sleepbench.config import SleepBenchConfig
from osf.sleepbench.seedlevel import Comparison, basis, column_comparison, compare

OSF = "dino_ours"


def _counts(verdicts: list[str]) -> str:
    c = Counter(verdicts)
    return f"{c['better']} better, {c['worse']} worse, {c['n.s.']} not separated"


def _probe(table: pd.DataFrame, **match) -> pd.DataFrame:
    sel = (table["setting"] == "linear_probe") & (table["kind"] != "scaling")
    for k, v in match.items():
        sel &= table[k] == v
    return table[sel]


def finding_beats_random(table: pd.DataFrame, cfg: SleepBenchConfig) -> str:
    """(0) Full-montage staging of every objective against random init, over the seeds."""
    rows = _probe(table, preset="full", task="Stage", kind="pretrained")
    if rows.empty:
        return "(0) no full-montage staging probes yet."
    comps = [column_comparison(table, cell, "vs_random", cfg.n_boot) for _, cell in rows.groupby("method", sort=False)]
    parts = [f"{c.a} {c.summary(ci=False)}" for c in comps if np.isfinite(c.diff)]
    verdicts = [c.verdict for c in comps]
    every = all(v == "better" for v in verdicts)
    return (f"(0) Full-montage staging vs random init (kappa difference, paired CI, {basis(comps)}): "
            f"{'; '.join(parts)}. "
            f"{'Every objective beats random init.' if every else 'Not every objective beats random init: ' + _counts(verdicts) + '.'}")


def finding_degradation(table: pd.DataFrame, cfg: SleepBenchConfig) -> str:
    """(1) Staging change from the full montage per preset, over the objectives and the seeds."""
    rows = _probe(table, task="Stage", kind="pretrained")
    rows = rows[rows["preset"] != "full"]
    if rows.empty:
        return "(1) no missing-channel staging probes yet."
    per_preset, every = [], []
    for preset, sub in rows.groupby("preset", sort=False):
        comps = [column_comparison(table, cell, "vs_full", cfg.n_boot) for _, cell in sub.groupby("method", sort=False)]
        every += comps
        p = f" (t-test p: {', '.join(f'{c.a} {c.p:.2f}' for c in comps)})" if max(c.n_seeds for c in comps) > 1 else ""
        per_preset.append(f"{preset}: mean {sub['vs_full'].mean():+.3f}, {Counter(c.verdict for c in comps)['worse']}/"
                          f"{len(comps)} objectives lose kappa outside the CI{p}")
    return (f"(1) Staging without channels, change from the full montage ({basis(every)}): " + "; ".join(per_preset)
            + ".")


def finding_osf_invariance(table: pd.DataFrame, cfg: SleepBenchConfig) -> str:
    """(2) OSF against every other objective on each missing-channel preset (paired, over the seeds)."""
    if OSF not in cfg.methods:
        return "(2) OSF (dino_ours) was not run."
    parts, comps = [], []
    for preset in [p for p in cfg.presets if p != "full"]:
        osf = _probe(table, task="Stage", preset=preset, method=OSF)
        others = _probe(table, task="Stage", preset=preset, kind="pretrained")
        for _, other in others[others["method"] != OSF].groupby("method", sort=False):
            c = compare(osf, other, cfg.n_boot)
            if c is not None:
                comps.append(c)
                parts.append(f"{preset} {c.text()}")
    if not comps:
        return "(2) no missing-channel staging probes of OSF and another objective yet."
    return (f"(2) OSF vs the other objectives on missing-channel staging: {_counts([c.verdict for c in comps])} "
            f"(of {len(comps)} paired comparisons, {basis(comps)}). " + "; ".join(parts) + ".")


def _scaling_parts(rows: pd.DataFrame, cfg: SleepBenchConfig) -> list[tuple[str, Comparison | None]]:
    """More data per backbone (largest vs smallest fraction), then the biggest vs the smallest backbone at all data."""
    parts = []
    for size, sub in rows.groupby("backbone", sort=False):
        small, large = sub["train_fraction"].min(), sub["train_fraction"].max()
        if small != large:
            at = {f: sub[sub["train_fraction"] == f] for f in (large, small)}
            parts.append((f"{size}, {large:g} vs {small:g} of the data", compare(at[large], at[small], cfg.n_boot)))
    full = rows[rows["train_fraction"] == rows["train_fraction"].max()]
    sizes = [s for s in cfg.scaling_sizes if s in set(full["backbone"])]
    if len(sizes) > 1:
        parts.append((f"{sizes[-1]} vs {sizes[0]} at all data",
                      compare(full[full["backbone"] == sizes[-1]], full[full["backbone"] == sizes[0]], cfg.n_boot)))
    return parts


def finding_scaling(table: pd.DataFrame, cfg: SleepBenchConfig) -> str:
    """(3) More pre-training data (largest vs smallest fraction) and a bigger backbone (at all data), over the seeds."""
    rows = table[(table["kind"] == "scaling") & (table["task"] == "Stage")]
    if rows.empty:
        return "(3) no scaling runs yet."
    parts = [(name, c) for name, c in _scaling_parts(rows, cfg) if c is not None]
    text = "; ".join(f"{name}: {c.summary()}" for name, c in parts)
    return f"(3) Scaling, staging kappa of OSF ({basis([c for _, c in parts])}): " + (text or "one point only") + "."


def findings(table: pd.DataFrame, cfg: SleepBenchConfig) -> list[str]:
    """The four statements, in order."""
    return [f(table, cfg) for f in (finding_beats_random, finding_degradation, finding_osf_invariance, finding_scaling)]

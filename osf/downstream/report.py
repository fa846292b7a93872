"""Aggregate ``results.csv`` rows into the benchmark table (Markdown) and figures (PNG).

Rows describing the same configuration (method, checkpoint, task, setting, channels, k, seed, ...)
are de-duplicated keeping the latest, so re-running a sweep replaces numbers instead of averaging
stale ones. Different seeds of one configuration are then averaged (mean ± std).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from osf.config import CHANNEL_PRESETS
from osf.downstream.results import read_results
from osf.utils.atomic import atomic_path, atomic_write_text

# What makes two rows the same experiment (seed excluded: seeds are aggregated).
CONFIG_COLUMNS: tuple[str, ...] = (
    "method", "ckpt_hash", "encoder_name", "dataset", "task", "setting", "eval_channels", "train_channels",
    "pooling", "k_shot", "train_data_pct", "pretrain_samples",
)


def load_results(paths: Sequence[str | Path]) -> pd.DataFrame:
    """Concatenate results tables; keep the latest row per (configuration, seed)."""
    if not paths:
        raise ValueError("no results.csv given")
    table = pd.concat([read_results(p) for p in paths], ignore_index=True)
    for col in (*CONFIG_COLUMNS, "seed", "timestamp"):
        if col not in table.columns:
            table[col] = np.nan
    keys = [*CONFIG_COLUMNS, "seed"]
    table = table.sort_values("timestamp", kind="mergesort")
    return table.drop_duplicates(subset=keys, keep="last").reset_index(drop=True)


def aggregate(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Mean, std over seeds, and the CI of a single-seed row, per configuration."""
    if metric not in table.columns:
        have = sorted(c for c in table.columns if c.startswith(("test_", "val_")) and not c.endswith(("_low", "_high")))
        raise ValueError(f"metric {metric!r} is not a results column; available: {have}")
    keys = list(CONFIG_COLUMNS)
    # groupby drops NaN keys by default; unset options (k_shot, pretrain_samples) are NaN, so keep them
    grouped = table.groupby(keys, dropna=False, sort=False)
    out = grouped[metric].agg(["mean", "std", "count"]).reset_index()
    # A k-shot run already averaged its seeds: one row carries the mean and `<metric>_std`.
    std_col = f"{metric}_std"
    if std_col in table.columns and "n_seeds" in table.columns:
        first = grouped[[std_col, "n_seeds"]].first().reset_index(drop=True)
        single = (out["count"] == 1) & pd.to_numeric(first["n_seeds"], errors="coerce").gt(1).to_numpy()
        out.loc[single, "std"] = pd.to_numeric(first.loc[single, std_col], errors="coerce").to_numpy()
        out.loc[single, "count"] = pd.to_numeric(first.loc[single, "n_seeds"]).to_numpy()
    low, high = f"{metric}_ci_low", f"{metric}_ci_high"
    if low in table.columns and high in table.columns:
        ci = grouped[[low, high]].first().reset_index(drop=True)
        out["ci_low"], out["ci_high"] = ci[low].to_numpy(), ci[high].to_numpy()
    else:
        out["ci_low"] = out["ci_high"] = np.nan
    return out


def _cell(row: pd.Series) -> str:
    if not np.isfinite(row["mean"]):
        return "–"
    if row["count"] > 1:
        return f"{row['mean']:.3f} ± {row['std']:.3f}"
    if np.isfinite(row["ci_low"]) and np.isfinite(row["ci_high"]):
        return f"{row['mean']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"
    return f"{row['mean']:.3f}"


def markdown_table(agg: pd.DataFrame, rows: Sequence[str] = ("method",), cols: Sequence[str] = ("task",)) -> str:
    """Pivot aggregated results into a Markdown table (cells: mean [95% CI] or mean ± std over seeds)."""
    if agg.empty:
        return "_no results_\n"
    agg = agg.assign(cell=agg.apply(_cell, axis=1))
    for c in (*rows, *cols):
        agg[c] = agg[c].astype(str)
    pivot = agg.pivot_table(index=list(rows), columns=list(cols), values="cell", aggfunc="last").fillna("–")
    header_cols = [" / ".join(map(str, c)) if isinstance(c, tuple) else str(c) for c in pivot.columns]
    head = " | ".join([" / ".join(rows), *header_cols])
    lines = [f"| {head} |", "|" + "---|" * (len(header_cols) + 1)]
    for idx, values in pivot.iterrows():
        label = " / ".join(map(str, idx)) if isinstance(idx, tuple) else str(idx)
        lines.append("| " + " | ".join([label, *values.tolist()]) + " |")
    return "\n".join(lines) + "\n"


def _with_series(agg: pd.DataFrame) -> pd.DataFrame:
    """Label of one bar / line: the method, plus the setting when several settings are present."""
    several = agg["setting"].astype(str).nunique() > 1
    series = agg["method"].astype(str) + (" (" + agg["setting"].astype(str) + ")" if several else "")
    return agg.assign(series=series)


def _preset_order(values: Sequence[str]) -> list[str]:
    known = [p for p in CHANNEL_PRESETS if p in set(values)]
    return known + sorted(set(values) - set(known))


def plot_by_method(agg: pd.DataFrame, metric: str, path: str | Path) -> Path:
    """Grouped bars: one group per task, one bar per method, CI / std as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    agg = _with_series(agg)
    tasks = sorted(agg["task"].astype(str).unique())
    methods = sorted(agg["series"].unique())
    width = 0.8 / max(len(methods), 1)
    fig, ax = plt.subplots(figsize=(max(4, 1.6 * len(tasks) + 1), 3.2))
    for j, method in enumerate(methods):
        sub = agg[agg["series"] == method].groupby("task").first()
        means = [sub["mean"].get(t, np.nan) for t in tasks]
        err = _errors(sub, tasks)
        ax.bar(np.arange(len(tasks)) + (j - (len(methods) - 1) / 2) * width, means, width, yerr=err, capsize=2,
               label=method)
    ax.set_xticks(np.arange(len(tasks)), tasks)
    ax.set_ylabel(metric)
    ax.legend(fontsize=7, frameon=False)
    ax.set_title(f"{metric} per method and task")
    return _save(fig, path)


def _errors(sub: pd.DataFrame, keys: Sequence) -> np.ndarray:
    """Asymmetric error bars: CI when there is one seed, std otherwise."""
    lo, hi = [], []
    for k in keys:
        if k not in sub.index:
            lo.append(0.0), hi.append(0.0)
            continue
        r = sub.loc[k]
        if r["count"] > 1 and np.isfinite(r["std"]):
            lo.append(r["std"]), hi.append(r["std"])
        elif np.isfinite(r["ci_low"]) and np.isfinite(r["ci_high"]):
            lo.append(max(r["mean"] - r["ci_low"], 0.0)), hi.append(max(r["ci_high"] - r["mean"], 0.0))
        else:
            lo.append(0.0), hi.append(0.0)
    return np.array([lo, hi])


def plot_vs_channels(agg: pd.DataFrame, metric: str, path: str | Path) -> Path:
    """Metric against channel preset, one panel per task, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    agg = _with_series(agg)
    tasks = sorted(agg["task"].astype(str).unique())
    presets = _preset_order(agg["eval_channels"].astype(str).unique())
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.6 * len(tasks), 3.2), squeeze=False, sharey=True)
    for ax, task in zip(axes[0], tasks):
        sub_t = agg[agg["task"].astype(str) == task]
        for method in sorted(sub_t["series"].unique()):
            sub = sub_t[sub_t["series"] == method].groupby("eval_channels").first()
            xs = [i for i, p in enumerate(presets) if p in sub.index]
            ax.errorbar(xs, [sub.loc[presets[i], "mean"] for i in xs], yerr=_errors(sub, [presets[i] for i in xs]),
                        marker="o", capsize=2, label=method)
        ax.set_xticks(range(len(presets)), presets, rotation=40, ha="right", fontsize=7)
        ax.set_title(task)
    axes[0][0].set_ylabel(metric)
    axes[0][-1].legend(fontsize=7, frameon=False)
    fig.suptitle(f"{metric} with missing channels", fontsize=9)
    return _save(fig, path)


def plot_scaling(agg: pd.DataFrame, metric: str, path: str | Path) -> Path | None:
    """Metric against pre-training samples (log x), one line per backbone size; ``None`` without data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = agg[pd.to_numeric(agg["pretrain_samples"], errors="coerce").notna()].copy()
    if data.empty:
        return None
    data["pretrain_samples"] = pd.to_numeric(data["pretrain_samples"])
    tasks = sorted(data["task"].astype(str).unique())
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.6 * len(tasks), 3.2), squeeze=False, sharey=True)
    for ax, task in zip(axes[0], tasks):
        sub_t = data[data["task"].astype(str) == task]
        for size in sorted(sub_t["encoder_name"].astype(str).unique()):
            for cohort in sorted(sub_t["method"].astype(str).unique()):
                sub = sub_t[(sub_t["encoder_name"].astype(str) == size) & (sub_t["method"].astype(str) == cohort)]
                sub = sub.groupby("pretrain_samples").first().sort_index()
                if sub.empty:
                    continue
                label = size if sub_t["method"].nunique() == 1 else f"{size} ({cohort})"
                ax.errorbar(sub.index, sub["mean"], yerr=_errors(sub, list(sub.index)), marker="o", capsize=2,
                            label=label)
        ax.set_xscale("log")
        ax.set_xlabel("pre-training samples (30 s epochs)")
        ax.set_title(task)
    axes[0][0].set_ylabel(metric)
    axes[0][-1].legend(fontsize=7, frameon=False)
    fig.suptitle(f"scaling: {metric} vs pre-training data", fontsize=9)
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    import matplotlib.pyplot as plt

    path = Path(path)
    fig.tight_layout()
    with atomic_path(path, suffix=path.suffix) as tmp:  # the suffix tells savefig the format
        fig.savefig(tmp, dpi=130)
    plt.close(fig)
    return path


def make_benchmark_report(
    results_csv: Sequence[str | Path],
    output_dir: str | Path,
    metric: str = "test_auroc",
    setting: str | None = None,
) -> dict[str, Path | None]:
    """Write ``benchmark_table.md`` and the PNG figures for ``metric``; returns the paths written.

    The main table and the per-method figure use the ``full`` montage; the channel figure uses every
    preset; ``setting`` (e.g. ``linear_probe``) restricts all of them.
    """
    table = load_results(results_csv)
    if setting is not None:
        table = table[table["setting"].astype(str) == setting]
        if table.empty:
            raise ValueError(f"no results with setting {setting!r} in {list(map(str, results_csv))}")
    agg = aggregate(table, metric)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    full = agg[agg["eval_channels"].astype(str) == "full"]
    main = full if not full.empty else agg
    # scaling runs share a method name: tell them apart by backbone size and pre-training samples
    row_keys = ("method", *[c for c in ("encoder_name", "pretrain_samples") if main[c].nunique(dropna=True) > 1])
    parts = [f"# Benchmark: {metric}\n", f"Rows: {len(table)} runs from {', '.join(map(str, results_csv))}.\n",
             "Cells: mean [95% CI by subject] for one seed, mean ± std over seeds.\n",
             "\n## Full montage\n\n", markdown_table(main, rows=row_keys, cols=("task", "setting"))]
    if agg["eval_channels"].astype(str).nunique() > 1:
        parts += ["\n## Missing channels\n\n",
                  markdown_table(agg, rows=("method", "task", "setting"), cols=("eval_channels",))]
    md_path = output_dir / "benchmark_table.md"
    atomic_write_text(md_path, "".join(parts))
    name = metric.replace("/", "_")
    written: dict[str, Path | None] = {"table": md_path}
    written["by_method"] = plot_by_method(main, metric, output_dir / f"{name}_by_method.png")
    written["vs_channels"] = plot_vs_channels(agg, metric, output_dir / f"{name}_vs_channels.png")
    written["scaling"] = plot_scaling(main, metric, output_dir / f"{name}_scaling.png")
    return written


__all__ = [
    "aggregate",
    "load_results",
    "make_benchmark_report",
    "markdown_table",
    "plot_by_method",
    "plot_scaling",
    "plot_vs_channels",
]

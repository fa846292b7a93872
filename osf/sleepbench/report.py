"""The SleepBench-mini report: the paper's three views from ``results.csv``, and the findings as measured.

``report/main_table.md`` (full montage, every objective vs random init and the ceilings),
``report/missing_channels.md`` (per preset, with the degradation from ``full``),
``report/degradation.png``, ``report/scaling.png``, ``report/kshot.png`` and ``report/report.md``
(all of it, plus one plain sentence per finding). With several seeds a table cell is the mean over
seeds with the per-seed values, and beside it the paired difference with seeds as the unit
(``osf.sleepbench.seedlevel``: a bootstrap over seeds then subjects, a t-test across seeds, each seed's row).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from osf.sleepbench.config import RANDOM, SleepBenchConfig
from osf.sleepbench.results import verdict
from osf.sleepbench.seedlevel import column_comparison
from osf.utils.atomic import atomic_path, atomic_write_text


def _mean_rows(table: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Mean over seeds of every numeric column, plus ``n_seeds``."""
    numeric = [c for c in table.columns if c not in keys and pd.api.types.is_numeric_dtype(table[c]) and c != "seed"]
    grouped = table.groupby(keys, sort=False, dropna=False)
    out = grouped[numeric].mean().reset_index()
    out["n_seeds"] = grouped.size().to_numpy()
    return out


def _cell(value: float, low: float, high: float) -> str:
    if not np.isfinite(value):
        return "–"
    return f"{value:.3f} [{low:.3f}, {high:.3f}]" if np.isfinite(low) else f"{value:.3f}"


def _diff_cell(value: float, low: float, high: float) -> str:
    if not np.isfinite(value):
        return ""
    return f" ({value:+.3f} {verdict(low, high)})" if np.isfinite(low) else f" ({value:+.3f})"


def _markdown(frame: pd.DataFrame) -> str:
    head = "| " + " | ".join(map(str, frame.columns)) + " |"
    lines = [head, "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def main_table(table: pd.DataFrame, cfg: SleepBenchConfig) -> str:
    """Full montage: metric [CI] per method x task, with the paired difference to random init."""
    sub = table[(table["preset"] == "full") & (table["kind"] != "scaling")
                & table["setting"].isin(["linear_probe", *cfg.ceilings])]
    return _grid(table, sub, cfg, "task", cfg.tasks, "vs_random")


def missing_channel_table(table: pd.DataFrame, cfg: SleepBenchConfig, task: str) -> str:
    """One task: metric [CI] per method x preset, with the paired degradation from ``full``."""
    sub = table[(table["task"] == task) & (table["kind"] != "scaling")
                & table["setting"].isin(["linear_probe", *cfg.ceilings])]
    return _grid(table, sub, cfg, "preset", cfg.presets, "vs_full")


def _grid(table: pd.DataFrame, sub: pd.DataFrame, cfg: SleepBenchConfig, column: str, values: tuple[str, ...],
          name: str) -> str:
    """Methods x ``values`` of ``column``: one seed, metric [CI] (paired ``name``); several, the seed-level columns."""
    several = sub["seed"].nunique() > 1
    out = []
    for method in [m for m in (*cfg.methods, RANDOM, *cfg.ceilings) if m in set(sub["method"])]:
        line = {"method": method}
        for value in values:
            cell = sub[(sub["method"] == method) & (sub[column] == value)]
            if not several:
                line[value] = _one_seed_cell(cell, name)
                continue
            line[value] = _seeds_value_cell(cell)
            if sub.loc[sub[column] == value, name].notna().any():
                line[f"{value} {name}, seeds as the unit"] = _seed_level_cell(table, cell, name, cfg.n_boot)
        out.append(line)
    return _markdown(pd.DataFrame(out))


def _one_seed_cell(cell: pd.DataFrame, name: str) -> str:
    """``metric [CI] (+diff verdict)`` of a one-seed cell."""
    if cell.empty:
        return "–"
    r = cell.iloc[0]
    return _cell(*r[["value", "ci_low", "ci_high"]]) + _diff_cell(*r[[name, f"{name}_low", f"{name}_high"]])


def _seeds_value_cell(cell: pd.DataFrame) -> str:
    """``mean (per seed v0, v1, ...)`` of a cell's metric over its seeds."""
    if cell.empty:
        return "–"
    values = cell.sort_values("seed")["value"].to_numpy(float)
    return f"{np.nanmean(values):.3f} (per seed {', '.join(f'{v:.3f}' for v in values)})"


def _seed_level_cell(table: pd.DataFrame, cell: pd.DataFrame, name: str, n_boot: int) -> str:
    """The cell's paired ``name`` decided over its seeds, with the per-seed differences; empty without one."""
    if cell.empty or not cell[name].notna().any():
        return ""
    c = column_comparison(table, cell, name, n_boot)
    return c.summary() if c.n_seeds > 1 else f"{c.summary()}, one seed"


def pretraining_table(cfg: SleepBenchConfig) -> str:
    """Per objective and seed: training loss first -> last, RankMe, collapse warnings, wall time."""
    from osf.sleepbench.steps import SleepBenchLayout

    at = SleepBenchLayout(cfg)
    lines = []
    for seed in range(cfg.seeds):
        for method in cfg.methods:
            run = at.pretrain_ckpt(method, seed).parents[1]
            logs = sorted(run.glob("csv_logs/version_*/metrics.csv"))
            if not (run / "diagnostics.json").exists() or not logs:
                continue
            diag = json.loads((run / "diagnostics.json").read_text())
            loss = pd.read_csv(logs[-1])["train/loss"].dropna().to_numpy()
            stamp = at.out / ".stages" / f"pretrain_{method}_s{seed}.json"
            minutes = json.loads(stamp.read_text())["elapsed_s"] / 60 if stamp.exists() else np.nan
            lines.append({"seed": seed, "objective": method,
                          "loss first -> last": f"{loss[:3].mean():.3f} -> {loss[-3:].mean():.3f}" if loss.size else "–",
                          "RankMe": f"{diag['final'].get('rankme', np.nan):.1f}",
                          "collapse warnings": "; ".join(t["signal"] for t in diag["tripped"]) or "none",
                          "minutes": f"{minutes:.1f}"})
    return _markdown(pd.DataFrame(lines)) if lines else "_no pre-training run finished_\n"


# --- figures ------------------------------------------------------------------------------------
def _figure(n_panels: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, n_panels, figsize=(3.8 * n_panels, 3.3), squeeze=False)
    return fig, axes[0]


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path, suffix=path.suffix) as tmp:
        fig.savefig(tmp, dpi=130)
    plt.close(fig)
    return path


def _errorbar(ax, x, frame: pd.DataFrame, value: str, low: str, high: str, **kw) -> None:
    v = frame[value].to_numpy(float)
    err = np.vstack([np.clip(v - frame[low].to_numpy(float), 0, None), np.clip(frame[high].to_numpy(float) - v, 0, None)])
    ax.errorbar(x, v, yerr=np.nan_to_num(err), marker="o", capsize=2, **kw)


def degradation_figure(table: pd.DataFrame, cfg: SleepBenchConfig, path: Path) -> Path:
    """Per task: the paired change from ``full`` (95% CI) per missing-channel preset, one line per model."""
    presets = [p for p in cfg.presets if p != "full"]
    sub = _mean_rows(table[(table["setting"] == "linear_probe") & (table["kind"] != "scaling")
                           & table["preset"].isin(presets)],
                     ["method", "preset", "task"])
    fig, axes = _figure(len(cfg.tasks))
    for ax, task in zip(axes, cfg.tasks):
        for j, method in enumerate((*cfg.methods, RANDOM)):
            r = sub[(sub["method"] == method) & (sub["task"] == task)].set_index("preset").reindex(presets)
            _errorbar(ax, np.arange(len(presets)) + 0.06 * (j - 3), r, "vs_full", "vs_full_low", "vs_full_high",
                      label=method, linestyle="--" if method == RANDOM else "-")
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xticks(range(len(presets)), presets, rotation=35, ha="right", fontsize=7)
        ax.set_title(task, fontsize=9)
    axes[0].set_ylabel("change from full montage (95% CI)")
    axes[-1].legend(fontsize=6, frameon=False)
    return _save(fig, path)


def scaling_figure(table: pd.DataFrame, cfg: SleepBenchConfig, path: Path) -> Path | None:
    """Per task: metric vs pre-training samples (log x), one line per backbone size."""
    sub = _mean_rows(table[table["kind"] == "scaling"], ["backbone", "train_fraction", "task"])
    if sub.empty:
        return None
    fig, axes = _figure(len(cfg.tasks))
    for ax, task in zip(axes, cfg.tasks):
        for size in cfg.scaling_sizes:
            r = sub[(sub["backbone"] == size) & (sub["task"] == task)].sort_values("pretrain_samples")
            _errorbar(ax, r["pretrain_samples"], r, "value", "ci_low", "ci_high", label=size)
        ax.set_xscale("log")
        ax.set_xlabel("pre-training epochs (30 s)", fontsize=8)
        ax.set_title(task, fontsize=9)
    axes[0].set_ylabel(f"{cfg.scaling_method} linear probe (95% CI)")
    axes[-1].legend(fontsize=7, frameon=False)
    return _save(fig, path)


def kshot_figure(table: pd.DataFrame, cfg: SleepBenchConfig, path: Path) -> Path | None:
    """Staging kappa vs labelled epochs per stage (mean ± std over draws), one line per model."""
    sub = table[table["setting"].str.endswith("shot")]
    if sub.empty:
        return None
    sub = _mean_rows(sub.assign(k=sub["setting"].str.extract(r"_(\d+)shot")[0].astype(int)), ["method", "k"])
    fig, axes = _figure(1)
    for method in (*cfg.methods, RANDOM):
        r = sub[sub["method"] == method].sort_values("k")
        axes[0].errorbar(r["k"], r["value"], yerr=np.nan_to_num(r["value_std"].to_numpy(float)), marker="o",
                         capsize=2, label=method, linestyle="--" if method == RANDOM else "-")
    axes[0].set_xscale("log")
    axes[0].set_xlabel("labelled epochs per stage")
    axes[0].set_ylabel("staging kappa (mean ± std over draws)")
    axes[0].legend(fontsize=7, frameon=False)
    return _save(fig, path)


def _cells_legend(seeds: int) -> str:
    """What a table cell holds, with one seed or several."""
    if seeds <= 1:
        return "metric [95% CI by subject] (difference to random init, paired CI: better / worse / n.s.)"
    return ("mean metric over the seeds (per-seed values); beside it the paired difference with seeds as the unit: "
            "mean over seeds [95% CI of a bootstrap over seeds, then subjects] (verdict; t-test p across seeds; each "
            "seed's difference and its paired subject-CI verdict)")


def write_report(table: pd.DataFrame, cfg: SleepBenchConfig, out: Path) -> dict[str, Path | None]:
    """Tables, figures and ``report.md`` (with the findings) under ``out``; returns the paths."""
    from osf.sleepbench.findings import findings

    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path | None] = {
        "degradation": degradation_figure(table, cfg, out / "degradation.png"),
        "scaling": scaling_figure(table, cfg, out / "scaling.png"),
        "kshot": kshot_figure(table, cfg, out / "kshot.png"),
    }
    main = main_table(table, cfg)
    missing = "".join(f"\n### {task}\n\n{missing_channel_table(table, cfg, task)}" for task in cfg.tasks)
    atomic_write_text(out / "main_table.md", main)
    atomic_write_text(out / "missing_channels.md", missing)
    seeds = int(table["seed"].nunique()) if not table.empty else 0
    parts = ["# SleepBench-mini\n\n",
             (f"{seeds} seed(s); {cfg.backbone}, {cfg.pretrain_steps} pre-training steps x batch {cfg.batch_size} per "
             f"objective; linear probes on the test subjects; cells: {_cells_legend(seeds)}; Stage: Cohen's kappa, "
             "events: AUROC.\n\n"),
             "## Pre-training (equal compute)\n\n", pretraining_table(cfg),
             "\n## Full montage\n\n", main,
             "\n## Missing channels (change from the full montage, paired CI)\n", missing,
             "\n## Findings, as measured\n\n", *(f"- {line}\n" for line in findings(table, cfg)),
             "\n## Figures\n\n", *(f"- {name}: `{p.name}`\n" for name, p in written.items() if p is not None)]
    written["main_table"], written["missing_channels"] = out / "main_table.md", out / "missing_channels.md"
    written["report"] = out / "report.md"
    atomic_write_text(written["report"], "".join(parts))
    return written

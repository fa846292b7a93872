"""Does the quick start's pre-training learn? Its defaults, run for one or more seeds, measured.

For each seed, runs the quick start (``osf.quickstart``) in its own output folder and collects what the
learning claim rests on: the DINO loss at the start and end of pre-training against log K, the collapse
diagnostics, and for every probed task the test metric of the pre-trained and of the random-init
backbone with the paired subject-bootstrap CI of their difference; plus wall time per step. Over several
seeds it also takes the seeds as the unit (``osf.quickstart.pooled_over_runs``): the mean difference per task,
with a hierarchical-bootstrap CI (seeds resampled, then subjects within each seed's run) and a t-test across
seeds; the per-seed rows stay beside it.

    python benchmarks/bench_quickstart_learning.py --seeds 0 [1 2] [--out_root bench_quickstart_out]
        [--max_steps 150] [--recipe small] [--lr 0.008] [--poolings groups_std]
    python benchmarks/bench_quickstart_learning.py --reuse RUN_DIR [RUN_DIR ...]   # finished quick starts

Prints the tables and writes ``benchmarks/results/bench_quickstart_learning.json`` (``--results`` to change).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from osf.quickstart import QuickstartConfig, pooled_over_runs, run_quickstart

RESULTS = Path(__file__).resolve().parent / "results" / "bench_quickstart_learning.json"


def run_seed(seed: int, out_root: Path, overrides: dict) -> dict:
    """One quick start with ``seed``; its results plus wall time."""
    cfg = QuickstartConfig(output_dir=out_root / f"seed{seed}", weights_dir=out_root / f"seed{seed}" / "weights",
                           seed=seed, **overrides)
    t0 = time.perf_counter()
    results = run_quickstart(cfg, log=lambda line: print(line, flush=True))
    return summary(results, cfg.output_dir, wall_s=time.perf_counter() - t0)


def summary(results: dict, output_dir: Path, wall_s: float | None = None) -> dict:
    """What the tables read from one run's results (``wall_s`` None: the run's own elapsed time)."""
    return {"seed": results["config"]["seed"], "output_dir": str(output_dir),
            "wall_s": results.get("elapsed_s") if wall_s is None else wall_s,
            "step_seconds": results.get("step_seconds"), "pretraining": results["pretraining"],
            "probes": results["probes"], "finetune_stage": results["finetune_stage"]}


def _ci(value: float, bounds: list[float], fmt: str = "{:.3f}") -> str:
    return f"{fmt.format(value)} [{bounds[0]:.3f}, {bounds[1]:.3f}]"


def pooled_table(pooled: dict) -> str:
    """Markdown: the runs over seeds, one row per task (hierarchical CI: seeds, then subjects; t-test across seeds)."""
    lines = [("| task | metric | runs | test subjects | pre-trained | random init | difference [seed-level 95% CI] | "
             "across seeds | verdict |"), "| --- | --- | ---: | ---: | ---: | ---: | --- | --- | --- |"]
    for task, row in pooled.items():
        t = row["t_test"]
        across = f"t = {t['t']:.2f}, df = {t['df']}, p = {t['p']:.2f}" if t["df"] >= 1 else "one seed"
        lines.append(f"| {task} | {row['metric']} | {row['runs']} | {row['n_test_subjects']} | {row['pretrained']:.3f} | "
                     f"{row['random']:.3f} | {_ci(row['difference'], row['difference_ci95'], '{:+.3f}')} | {across} | "
                     f"{row['verdict']} |")
    return "\n".join(lines)


def table(runs: list[dict]) -> str:
    """Markdown: one row per seed and task."""
    lines = ["| seed | task | metric | pre-trained [95% CI] | random init [95% CI] | difference [paired 95% CI] |",
             "| ---: | --- | --- | --- | --- | --- |"]
    for run in runs:
        for task, row in run["probes"].items():
            lines.append(f"| {run['seed']} | {task} | {row['metric']} | {_ci(row['pretrained'], row['pretrained_ci95'])} | "
                         f"{_ci(row['random'], row['random_ci95'])} | "
                         f"{_ci(row['difference'], row['difference_ci95'], '{:+.3f}')} |")
    lines += ["", "| seed | DINO loss first -> last | log K | last / log K | teacher entropy | RankMe | collapse warnings | wall |",
              "| ---: | --- | ---: | ---: | ---: | ---: | --- | ---: |"]
    for run in runs:
        p = run["pretraining"]
        lines.append(f"| {run['seed']} | {p['loss_first']:.2f} -> {p['loss_last']:.2f} | {p['log_k']:.2f} | "
                     f"{p['loss_over_log_k']:.2f} | {p['teacher_entropy']:.2f} | {p['rankme']:.1f} | "
                     f"{', '.join(p['warnings']) or 'none'} | {(run['wall_s'] or 0) / 60:.1f} min |")
    return "\n".join(lines)


def main() -> None:
    """Parse flags, run the seeds, print the table and write the JSON."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--reuse", type=Path, nargs="+", default=None,
                   help="finished quick-start output folders to read instead of running --seeds")
    p.add_argument("--out_root", type=Path, default=Path("bench_quickstart_out"))
    p.add_argument("--max_steps", type=int, default=None)
    p.add_argument("--recipe", default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--poolings", default=None, help="comma-separated (default: QuickstartConfig.poolings)")
    p.add_argument("--n_boot", type=int, default=1000, help="bootstrap draws of the pooled CI")
    p.add_argument("--results", type=Path, default=RESULTS)
    args = p.parse_args()
    overrides = {k: v for k in ("max_steps", "recipe", "lr") if (v := getattr(args, k)) is not None}
    if args.poolings:
        overrides["poolings"] = tuple(args.poolings.split(","))
    if args.reuse:
        runs = [summary(json.loads((d / "results.json").read_text()), d) for d in args.reuse]
    else:
        runs = [run_seed(seed, args.out_root, overrides) for seed in args.seeds]
    pooled = pooled_over_runs([r["output_dir"] for r in runs], n_boot=args.n_boot)
    text = table(runs) + "\n\n" + pooled_table(pooled)
    print(text)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps({"machine": platform.platform(), "torch": torch.__version__,
                                        "threads": torch.get_num_threads(), "overrides": overrides, "runs": runs,
                                        "pooled": pooled, "table": text}, indent=1, default=str) + "\n")
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()

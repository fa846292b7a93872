"""Does the quick start's pre-training learn? Its defaults, run for one or more seeds, measured.

For each seed, runs the quick start (``osf.quickstart``) in its own output folder and collects what the
learning claim rests on: the DINO loss at the start and end of pre-training against log K, the collapse
diagnostics, and for every probed task the test metric of the pre-trained and of the random-init
backbone with the paired subject-bootstrap CI of their difference; plus wall time per step.

    python benchmarks/bench_quickstart_learning.py --seeds 0 [1 2] [--out_root bench_quickstart_out]
        [--max_steps 200] [--recipe small] [--pooling groups]

Prints a table and writes ``benchmarks/results/bench_quickstart_learning.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from osf.quickstart import QuickstartConfig, run_quickstart

RESULTS = Path(__file__).resolve().parent / "results" / "bench_quickstart_learning.json"


def run_seed(seed: int, out_root: Path, overrides: dict) -> dict:
    """One quick start with ``seed``; its results plus wall time."""
    cfg = QuickstartConfig(output_dir=out_root / f"seed{seed}", weights_dir=out_root / f"seed{seed}" / "weights",
                           seed=seed, **overrides)
    t0 = time.perf_counter()
    results = run_quickstart(cfg, log=lambda line: print(line, flush=True))
    return {"seed": seed, "wall_s": time.perf_counter() - t0, "step_seconds": results.get("step_seconds"),
            "pretraining": results["pretraining"], "probes": results["probes"],
            "finetune_stage": results["finetune_stage"]}


def table(runs: list[dict]) -> str:
    """Markdown: one row per seed and task."""
    lines = ["| seed | task | metric | pre-trained [95% CI] | random init [95% CI] | difference [paired 95% CI] |",
             "| ---: | --- | --- | --- | --- | --- |"]
    for run in runs:
        for task, row in run["probes"].items():
            def ci(value, bounds, fmt="{:.3f}"):
                return f"{fmt.format(value)} [{bounds[0]:.3f}, {bounds[1]:.3f}]"
            lines.append(f"| {run['seed']} | {task} | {row['metric']} | {ci(row['pretrained'], row['pretrained_ci95'])} | "
                         f"{ci(row['random'], row['random_ci95'])} | "
                         f"{ci(row['difference'], row['difference_ci95'], '{:+.3f}')} |")
    lines += ["", "| seed | DINO loss first -> last | log K | last / log K | teacher entropy | RankMe | collapse warnings | wall |",
              "| ---: | --- | ---: | ---: | ---: | ---: | --- | ---: |"]
    for run in runs:
        p = run["pretraining"]
        lines.append(f"| {run['seed']} | {p['loss_first']:.2f} -> {p['loss_last']:.2f} | {p['log_k']:.2f} | "
                     f"{p['loss_over_log_k']:.2f} | {p['teacher_entropy']:.2f} | {p['rankme']:.1f} | "
                     f"{', '.join(p['warnings']) or 'none'} | {run['wall_s'] / 60:.1f} min |")
    return "\n".join(lines)


def main() -> None:
    """Parse flags, run the seeds, print the table and write the JSON."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--out_root", type=Path, default=Path("bench_quickstart_out"))
    p.add_argument("--max_steps", type=int, default=None)
    p.add_argument("--recipe", default=None)
    p.add_argument("--pooling", default=None)
    args = p.parse_args()
    overrides = {k: v for k in ("max_steps", "recipe", "pooling") if (v := getattr(args, k)) is not None}
    runs = [run_seed(seed, args.out_root, overrides) for seed in args.seeds]
    text = table(runs)
    print(text)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"machine": platform.platform(), "torch": torch.__version__,
                                   "threads": torch.get_num_threads(), "overrides": overrides, "runs": runs,
                                   "table": text}, indent=1, default=str) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

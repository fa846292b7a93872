"""The evaluation protocol on a finished quick-start run: logistic-regression grid vs the AdamW probe, baselines.

    python benchmarks/bench_protocol.py --run QS_DIR [--presets no_eeg,cardio_respiratory] [--no_masked]

Runs ``osf.evaluation.study.protocol_for_quickstart`` on the run (its store, backbone and seed; features
read from the run's feature cache where its probes left them) and prints/writes:

- the mean test metric per task and setting for the pre-trained backbone, its random init, power-48
  and the YASA-style features (one row per setting);
- pre-trained minus random init and minus power-48 per setting (one seed: the CIs cover its test subjects);
- the quick start's own AdamW probe (``results.json``, the pooling its validation chose) beside the
  logistic-regression grid on the same test epochs, per init, with the paired difference.

Results: ``benchmarks/results/bench_protocol_seed<S>.json`` (+ the table as text).
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

from osf.downstream.metrics import load_predictions
from osf.evaluation.protocol import RESULT_FILE, ProtocolConfig
from osf.evaluation.seeds import seed_level_difference
from osf.evaluation.study import PROTOCOL_DIR, protocol_for_quickstart, protocol_tables

RESULTS = Path(__file__).resolve().parent / "results"
INITS = ("pretrained", "random")


def adamw_vs_logreg(run: Path, protocol: Path, n_boot: int) -> tuple[dict, str]:
    """Per task and init: the quick start's AdamW probe vs the protocol's grid at 100 % labels (paired)."""
    from osf import config
    from osf.quickstart import Quickstart, QuickstartConfig
    from osf.tasks import get_task

    results = json.loads((run / "results.json").read_text())
    qs = Quickstart(QuickstartConfig.from_dict(results["config"], output_dir=run), log=lambda _: None)
    proto = json.loads((protocol / RESULT_FILE).read_text())
    record, lines = {}, ["| task | init | AdamW probe (pooling) | logistic grid (pooling, C) | grid - AdamW [95% CI] |",
                         "| --- | --- | ---: | ---: | --- |"]
    for task, task_record in proto["tasks"].items():
        grid, metric = task_record["settings"]["labels_100pct"]["models"], get_task(task).reporting_metric
        for init in INITS:
            pooling = qs.chosen_pooling(init, task)  # the pooling the quick start's validation chose
            adamw = load_predictions(qs.probe_dir(init, task, pooling) / "probe_test_predictions.npz")
            mine = load_predictions(protocol / grid[init]["predictions"])
            d = seed_level_difference([(mine, adamw)], metric, n_boot=n_boot)
            record[f"{config.LABEL_COLUMNS[task]}/{init}"] = {"adamw": d.b, "adamw_pooling": pooling, "grid": d.a,
                                                              "grid_view": grid[init]["view"], "grid_C": grid[init]["C"],
                                                              "diff": d.diff, "ci95": [d.low, d.high]}
            lines.append(f"| {task} {metric} | {init} | {d.b:.3f} ({pooling}) | {d.a:.3f} "
                         f"({grid[init]['view']}, C={grid[init]['C']:g}) | {d.diff:+.3f} [{d.low:+.3f}, {d.high:+.3f}] |")
    return record, "\n".join(lines)


def main() -> None:
    """Run the protocol on ``--run`` (unless done) and write the tables."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="a finished quick-start output folder")
    p.add_argument("--presets", default=None, help="comma-separated missing-channel presets (default: all)")
    p.add_argument("--no_masked", action="store_true", help="presets missing at test time only (no masked training)")
    p.add_argument("--n_boot", type=int, default=1000)
    p.add_argument("--rerun", action="store_true")
    p.add_argument("--cache_dir", type=Path, default=None, help="feature cache (default: the run's)")
    args = p.parse_args()
    overrides = {}
    if args.presets:
        overrides["presets"] = tuple(args.presets.split(","))
    if args.no_masked:
        overrides["masked"] = False
    protocol = args.run / PROTOCOL_DIR
    if args.rerun or not (protocol / RESULT_FILE).is_file():
        protocol_for_quickstart(args.run, ProtocolConfig(**overrides), cache_dir=args.cache_dir)
    record, text = protocol_tables([protocol], n_boot=args.n_boot, against=("random", "power48"))
    probe_record, probe_text = adamw_vs_logreg(args.run, protocol, args.n_boot)
    text += "\n\nThe quick start's AdamW probe vs the logistic-regression grid (100 % labels, same test epochs):\n\n" + probe_text
    print(text)
    meta = json.loads((protocol / RESULT_FILE).read_text())["meta"]
    out = RESULTS / f"bench_protocol_seed{meta['seed']}.json"
    out.write_text(json.dumps({"machine": platform.platform(), "run": str(args.run), "meta": meta,
                               "overrides": {k: list(v) if isinstance(v, tuple) else v for k, v in overrides.items()},
                               "tables": record, "adamw_vs_logreg": probe_record, "text": text},
                              indent=1, default=float) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

"""The evaluation protocol (issue 26) over finished quick-start runs: probes chosen on validation, seeds as the unit.

    python main_pipelines/main_quickstart.py --output_dir qs --seeds 3           # three training seeds, one corpus
    python main_pipelines/main_protocol.py --runs qs --output_dir protocol_out    # (or --runs qs_a,qs_b,...: one per seed)

For each run: the pre-trained backbone, its own random init (the weights its pre-training started from),
power-48 and YASA-style features, each read by an L2 logistic-regression grid (poolings x penalties,
the best on validation) on four tasks, at 1 / 10 / 100 % of the training subjects, 1 / 5 / 20 epochs per
class, with each channel preset missing at test time or masked throughout, and across cohorts. Then
per task and setting: pre-trained minus each other model, per seed and over seeds (hierarchical
bootstrap, t-test). Writes RUN/protocol/ per run and OUT/protocol_tables.{json,txt}.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    """Command-line flags."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", required=True, help="comma-separated finished quick-start output folders, one per seed (a --seeds N run "
                                                  "stands for its N seeds)")
    p.add_argument("--output_dir", type=Path, required=True, help="where the seed-level tables go")
    p.add_argument("--tasks", default=None, help="comma-separated tasks (default: the four)")
    p.add_argument("--n_boot", type=int, default=1000, help="bootstrap resamples of the seed-level CIs")
    p.add_argument("--rerun", action="store_true", help="rerun the protocol of runs that already have one")
    p.add_argument("--max_in_memory_gib", type=float, default=None,
                   help="training features larger than this (GiB as float64) are probed by the streamed torch head "
                        "(default: 2)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the protocol on each run (unless done), then the tables; exit 2 on bad input."""
    from osf.evaluation.protocol import ProtocolConfig
    from osf.evaluation.study import run_protocol_study

    args = build_parser().parse_args(argv)
    runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    try:
        given = {"tasks": tuple(t.strip() for t in args.tasks.split(",")) if args.tasks else None,
                 "max_in_memory_gib": args.max_in_memory_gib}
        cfg = ProtocolConfig(**{k: v for k, v in given.items() if v is not None})
        text = run_protocol_study(runs, args.output_dir, cfg, n_boot=args.n_boot, rerun=args.rerun)
    except (ValueError, FileNotFoundError) as err:
        print(f"main_protocol.py: error: {err}", file=sys.stderr)
        return 2
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

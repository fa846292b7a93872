"""SleepBench-mini: the OSF paper's comparison on the synthetic cohort, on a laptop.

    python main_pipelines/main_sleepbench.py --output_dir OUT              # one seed, ~1.5 h on 2 CPU cores
    python main_pipelines/main_sleepbench.py --output_dir OUT --seeds 3    # more seeds (resumes seed 0)
    python main_pipelines/main_sleepbench.py --output_dir OUT --tiny       # the machinery in a minute

A multi-cohort synthetic corpus -> epoch store -> the seven objectives pre-trained at equal compute ->
linear probes on four tasks under five channel presets (+ random init, + handcrafted and supervised
ceilings) -> a k-shot staging curve -> a scaling sweep (data fraction x backbone size) ->
OUT/results.csv and OUT/report/ (main table, missing-channel table and degradation figure, scaling
and k-shot figures, the findings as measured). Resumable: finished cells are skipped; a failed cell
is logged to OUT/failures.log and the rest goes on.
"""

from __future__ import annotations

import argparse
import sys

from osf.sleepbench.config import SleepBenchConfig
from osf.study import add_config_flags, config_values


def build_parser() -> argparse.ArgumentParser:
    """Command-line flags, built from ``SleepBenchConfig``'s fields; unset ones come from the default (or --tiny)
    configuration."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="seconds-scale sizes (the test suite's)")
    add_config_flags(p, SleepBenchConfig)
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    p.add_argument("--rerun", default=None, help="comma-separated step-name patterns to rerun although finished, "
                                                 "with what depends on them (e.g. 'pretrain_dino*' after editing a "
                                                 "recipe in train_config, which the stamped commands do not show)")
    return p


def config_from_args(args: argparse.Namespace) -> SleepBenchConfig:
    """The configuration: defaults (or --tiny sizes) overridden by the flags given."""
    given = config_values(SleepBenchConfig, args)
    return SleepBenchConfig.tiny(**given) if args.tiny else SleepBenchConfig(**given)


def main(argv: list[str] | None = None) -> int:
    """Run (or resume) the benchmark; exit 2 on bad flags, 1 when some cell failed."""
    args = build_parser().parse_args(argv)
    try:
        cfg = config_from_args(args)
    except ValueError as err:
        print(f"main_sleepbench.py: error: {err}", file=sys.stderr)
        return 2
    from osf.sleepbench.run import run_sleepbench  # torch and the models: only when running

    rerun = tuple(p.strip() for p in (args.rerun or "").split(",") if p.strip())
    try:
        outcome = run_sleepbench(cfg, progress=not args.no_progress, rerun=rerun)
    except ValueError as err:  # a --rerun pattern that names no step
        print(f"main_sleepbench.py: error: {err}", file=sys.stderr)
        return 2
    return 1 if outcome.steps.failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Quick start: the whole OSF pipeline on a synthetic cohort, from nothing to a staged night.

    python main_pipelines/main_quickstart.py                 # 42 nights of 0.8 h, vit_nano, three training seeds, CPU
    python main_pipelines/main_quickstart.py --seeds 1       # one training seed (a third of the time)
    python main_pipelines/main_quickstart.py --tiny          # seconds-scale sizes (the test suite's)
    python main_pipelines/main_quickstart.py --gpus 1 --backbone vit_small --nights 60 --hours 8 --max_steps 5000

Steps: synthetic cohorts -> epoch store -> OSF pre-training -> backbone export -> linear probes
(4 tasks, pre-trained vs random init) -> fine-tuned staging classifier -> main_predict.py on a
held-out night -> results table; with --seeds N (default 3) every further seed trains on the same corpus and the
run ends with the seed-level table (seeds as the unit). Each step prints the command it runs; a rerun skips the steps
whose outputs are there (changing a flag reruns the steps it affects). Results: OUTPUT_DIR/results.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from osf.quickstart import QuickstartConfig, run_quickstart
from osf.study import add_config_flags, config_values

ENTRY_POINTS = Path(__file__).resolve().parent


def build_parser() -> argparse.ArgumentParser:
    """Command-line flags, built from ``QuickstartConfig``'s fields; unset ones come from the default (or --tiny)
    configuration."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true",
                   help="2 cohorts x 2 nights x 0.5 h, Stage and Arousal only, a handful of steps (the test suite's)")
    add_config_flags(p, QuickstartConfig, aliases={"poolings": ("pooling",)})
    return p


def config_from_args(args: argparse.Namespace) -> QuickstartConfig:
    """The configuration: defaults (or --tiny sizes) overridden by the flags given."""
    given = config_values(QuickstartConfig, args)
    return QuickstartConfig.tiny(**given) if args.tiny else QuickstartConfig(**given)


def run_entry_point(script: str, args: Sequence[str], in_process: bool = True) -> None:
    """Run ``main_pipelines/<script>`` with ``args``, in this process or as its own; raise RuntimeError if it fails."""
    if not in_process:
        proc = subprocess.run([sys.executable, str(ENTRY_POINTS / script), *args], cwd=ENTRY_POINTS.parent, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{script} exited with status {proc.returncode}")
        return
    spec = importlib.util.spec_from_file_location(f"osf_entry_{Path(script).stem}", ENTRY_POINTS / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        status = module.main(list(args))
    except SystemExit as exit_:
        status = exit_.code
    if isinstance(status, str) or (isinstance(status, int) and status != 0):  # sys.exit("message") or a status
        raise RuntimeError(f"{script} failed: {status}")


def run_step_process(command: list[str]) -> None:
    """Run a quick-start step's command (``python main_pipelines/<script> ...``) as its own process."""
    run_entry_point(Path(command[1]).name, command[2:], in_process=False)


def main(argv: list[str] | None = None) -> int:
    """Run the quick start; exit status 1 with the failing step's command when a step fails, 2 on bad flags."""
    args = build_parser().parse_args(argv)
    try:
        cfg = config_from_args(args)
    except (TypeError, ValueError) as err:
        print(f"main_quickstart: {err}", file=sys.stderr)
        return 2
    try:
        run_quickstart(cfg, run_command=run_step_process)
    except RuntimeError as err:
        print(f"main_quickstart: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Run SleepBench-mini: every step (resumable, keep-going, progress with ETA), then results.csv and the report."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from osf.predict.writers import write_json
from osf.sleepbench.config import SleepBenchConfig
from osf.sleepbench.report import write_report
from osf.sleepbench.results import write_results
from osf.sleepbench.steps import SleepBenchSteps
from osf.utils.steps import RunOutcome, StepRunner


@dataclass
class SleepBenchOutcome:
    """What a run did and wrote."""

    steps: RunOutcome
    results_csv: Path
    report: dict[str, Path | None]
    n_rows: int


def _quiet_libraries() -> None:
    # hundreds of in-process runs: keep their per-run INFO lines out of the progress output
    for name in ("osf", "lightning", "lightning.pytorch", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)


def run_sleepbench(cfg: SleepBenchConfig, log: Callable[[str], None] = print, progress: bool = True,
                   rerun: tuple[str, ...] = ()) -> SleepBenchOutcome:
    """Run (or resume) the benchmark for ``cfg``; failed cells go to ``failures.log`` and the rest goes on.

    ``rerun``: step-name patterns run again although finished (``StepRunner``'s ``force``).
    """
    out = Path(cfg.output_dir).resolve()
    steps = SleepBenchSteps(cfg).build()
    runner = StepRunner(out, steps, lambda step, _command: step.call(step.flags()), log=log, label="sleepbench",
                        force=rerun)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", cfg.as_dict())
    _quiet_libraries()

    if progress and log is print:
        from tqdm.auto import tqdm

        runner.log = log = tqdm.write  # step lines above the progress bar
    outcome = runner.run(keep_going=True, progress=progress)
    results_csv, table = write_results(cfg)
    report = write_report(table, cfg, out / "report")
    log(f"sleepbench: {len(outcome.ran)} steps ran, {len(outcome.skipped)} were done before, {len(outcome.failed)} "
        f"failed{' (see failures.log)' if outcome.failed else ''}; {len(table)} result rows in {results_csv}; "
        f"report in {report['report']} ({outcome.elapsed_s / 60:.1f} min)")
    return SleepBenchOutcome(outcome, results_csv, report, len(table))

"""Resumable pipelines of steps: each step is an entry point's flags, the library call they mean and its outputs.

A step that succeeds leaves a stamp (its command) in ``<out>/.stages/``. On a rerun a step is skipped
when its stamp holds the same command, its outputs exist and none of the steps it needs ran again;
so a rerun with the same flags skips everything, and changing one step's flags reruns that step and
what depends on it. ``force`` patterns (``fnmatch``, e.g. ``pretrain_dino*``) rerun matching steps
whatever their stamps say, for changes a command does not show (a recipe edited in ``train_config``).
The quick start stops at the first failure; a long sweep (SleepBench-mini) keeps going, records the
failure in ``<out>/failures.log`` and skips only the steps that needed it.
"""

from __future__ import annotations

import fnmatch
import json
import shlex
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from osf.utils.atomic import atomic_write_text

Flags = dict[str, Any]


def _flag_text(value: Any) -> str:
    """A flag value as the command line spells it (whole-number floats without ``.0``)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def to_argv(flags: Mapping[str, Any]) -> list[str]:
    """``--name value`` per flag in order: True gives ``--name`` alone, False ``--no-name`` (a switch that is on by
    default, e.g. ``--no-progress_bar``), None leaves the flag out (not given), a list gives its items after the name."""
    argv: list[str] = []
    for name, value in flags.items():
        if value is None:
            continue
        argv.append(f"--no-{name}" if value is False else f"--{name}")
        if not isinstance(value, bool):
            argv.extend(_flag_text(v) for v in (value if isinstance(value, (list, tuple)) else [value]))
    return argv


@dataclass
class Step:
    """One step: the flags of an entry point, the library call they mean, the files it leaves, the steps it needs."""

    name: str
    description: str
    script: str  # the entry point in main_pipelines/ whose command this step prints
    flags: Callable[[], Flags]  # built when the step runs: later steps read earlier outputs
    call: Callable[[Flags], object]  # the library function behind the entry point, given those flags
    outputs: Callable[[], list[Path]]
    needs: tuple[str, ...] = ()
    clean: Callable[[], list[Path]] = list  # removed before the step runs (a previous attempt)
    cost: float = 1.0  # relative run time, for the progress bar's ETA
    elapsed_s: float | None = field(default=None, init=False)  # set when the step ran in this process

    def args(self) -> list[str]:
        """The command-line arguments of this step."""
        return to_argv(self.flags())

    def command(self) -> list[str]:
        """The shell command of this step."""
        return ["python", f"main_pipelines/{self.script}", *self.args()]


@dataclass
class RunOutcome:
    """What one pass over the steps did."""

    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # step -> one-line reason (its own error or a need's)
    elapsed_s: float = 0.0


class StepRunner:
    """Run (or skip) steps in order with stamps under ``<out>/.stages``."""

    def __init__(self, out: Path, steps: list[Step], execute: Callable[[Step, list[str]], None],
                 log: Callable[[str], None] = print, label: str = "pipeline", force: tuple[str, ...] = ()) -> None:
        """``execute(step, command)`` runs one step (in this process or as its command); ``force``: step-name
        patterns to rerun even when stamped (unknown patterns are refused)."""
        names = [s.name for s in steps]
        unmatched = [p for p in force if not fnmatch.filter(names, p)]
        if unmatched:
            raise ValueError(f"--rerun {unmatched} match(es) no {label} step; steps are named like {names[:3]}...")
        self.out, self.steps, self.execute, self.log, self.label = Path(out), steps, execute, log, label
        self.force = tuple(force)

    def stamp(self, step: Step) -> Path:
        """The stamp file of ``step``."""
        return self.out / ".stages" / f"{step.name}.json"

    def _is_done(self, step: Step, command: list[str]) -> bool:
        try:
            stamp = json.loads(self.stamp(step).read_text())
            return stamp.get("command") == command and all(p.exists() for p in step.outputs())
        except (OSError, ValueError):  # no or unreadable stamp, or outputs that cannot be located yet
            return False

    def must_run(self, step: Step, rerun: Mapping[str, bool]) -> bool:
        """A step runs when forced, when a step it needs reruns, or when it has no valid stamp for its command."""
        if any(fnmatch.fnmatchcase(step.name, p) for p in self.force) or any(rerun.get(n, False) for n in step.needs):
            return True
        try:
            return not self._is_done(step, step.command())
        except FileNotFoundError:  # its command names an output of a step that has not run yet
            return True

    def plan(self) -> dict[str, bool]:
        """Which steps a run would execute now (True) and which it would skip (False)."""
        rerun: dict[str, bool] = {}
        for step in self.steps:
            rerun[step.name] = self.must_run(step, rerun)
        return rerun

    def _run_one(self, step: Step, head: str) -> None:
        command = step.command()
        self.log(f"{head}: {step.description}\n        $ {shlex.join(command)}")
        for path in step.clean():
            shutil.rmtree(path, ignore_errors=True)
        self.stamp(step).unlink(missing_ok=True)
        t0 = time.perf_counter()
        try:
            self.execute(step, command)
        except Exception as err:
            raise RuntimeError(f"{self.label} step {step.name!r} failed: {err}\n  command: {shlex.join(command)}") from err
        missing = [str(p) for p in step.outputs() if not p.exists()]
        if missing:
            raise RuntimeError(f"{self.label} step {step.name!r} finished without writing {missing}")
        step.elapsed_s = time.perf_counter() - t0
        stamp = {"command": command, "elapsed_s": step.elapsed_s}
        atomic_write_text(self.stamp(step), json.dumps(stamp, indent=2) + "\n")
        self.log(f"        {step.name} finished in {step.elapsed_s:.1f} s")

    def _record_failure(self, step: Step, reason: str, outcome: RunOutcome) -> None:
        outcome.failed[step.name] = reason.splitlines()[0]
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / "failures.log", "a") as fh:
            fh.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {step.name}: {reason}\n")
        self.log(f"        {step.name} FAILED: {outcome.failed[step.name]}")

    def run(self, keep_going: bool = False, progress: bool = False) -> RunOutcome:
        """Every step in order. ``keep_going``: record a failure and go on with the steps that do not need it."""
        from tqdm.auto import tqdm

        self.out.mkdir(parents=True, exist_ok=True)
        outcome, rerun, t_start = RunOutcome(), {}, time.perf_counter()
        todo = self.plan()
        total = sum(s.cost for s in self.steps if todo[s.name])
        bar = tqdm(total=total, disable=not progress or not total, unit="cost",
                   bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} [{elapsed}<{remaining}]", desc=self.label)
        for k, step in enumerate(self.steps, 1):
            head = f"[{k:2d}/{len(self.steps)}] {step.name}"
            rerun[step.name] = self.must_run(step, rerun)
            failed_needs = [n for n in step.needs if n in outcome.failed]
            if failed_needs:
                self._record_failure(step, f"skipped: needs {failed_needs}, which failed", outcome)
            elif not rerun[step.name]:
                outcome.skipped.append(step.name)
                self.log(f"{head}: done before, skipped")
            else:
                try:
                    self._run_one(step, head)
                    outcome.ran.append(step.name)
                except RuntimeError as err:
                    if not keep_going:
                        raise
                    self._record_failure(step, str(err), outcome)
            if todo[step.name]:
                bar.update(step.cost)
        bar.close()
        outcome.elapsed_s = time.perf_counter() - t_start
        return outcome


__all__ = ["Flags", "RunOutcome", "Step", "StepRunner", "to_argv"]

"""Resumable step runner: stamps, reruns of what changed, and keep-going on failure (osf/utils/steps.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from osf.utils.steps import Step, StepRunner, to_argv


def _steps(tmp_path: Path, calls: list[str], flags: dict[str, dict], fail: set[str] = frozenset()) -> list[Step]:
    def make(name: str, needs: tuple[str, ...] = ()) -> Step:
        out = tmp_path / f"{name}.txt"

        def call(f: dict, name=name, out=out) -> None:
            calls.append(name)
            if name in fail:
                raise ValueError(f"{name} broke")
            out.write_text(str(f))

        return Step(name, f"step {name}", "main_x.py", lambda name=name: flags.get(name, {}), call,
                    lambda out=out: [out], needs=needs)

    return [make("a"), make("b", ("a",)), make("c")]


def _runner(tmp_path: Path, steps: list[Step]) -> StepRunner:
    return StepRunner(tmp_path, steps, lambda step, _cmd: step.call(step.flags()), log=lambda _m: None, label="test")


def test_to_argv_spells_flags_as_the_command_line():
    assert to_argv({"a": 1.0, "b": True, "c": None, "d": False, "e": [1, "x"], "f": 0.5}) == [
        "--a", "1", "--b", "--no-d", "--e", "1", "x", "--f", "0.5"]
    # a switch that is on by default is turned off by False, the way its entry point spells it
    from osf.models.pretrain_config import build_parser

    assert build_parser().parse_args(to_argv({"model_name": "mae", "data_dir": "x", "progress_bar": False})).progress_bar is False


def test_rerun_skips_done_steps_and_reruns_what_changed_and_its_dependants(tmp_path):
    calls: list[str] = []
    flags = {"a": {"n": 1}}
    _runner(tmp_path, _steps(tmp_path, calls, flags)).run()
    assert calls == ["a", "b", "c"]
    calls.clear()
    outcome = _runner(tmp_path, _steps(tmp_path, calls, flags)).run()
    assert calls == [] and outcome.skipped == ["a", "b", "c"]
    flags["a"] = {"n": 2}
    assert _runner(tmp_path, _steps(tmp_path, calls, flags)).plan() == {"a": True, "b": True, "c": False}
    _runner(tmp_path, _steps(tmp_path, calls, flags)).run()
    assert calls == ["a", "b"]


def test_forced_patterns_rerun_finished_steps_and_their_dependants_only(tmp_path):
    calls: list[str] = []
    _runner(tmp_path, _steps(tmp_path, calls, {})).run()
    calls.clear()
    forced = StepRunner(tmp_path, _steps(tmp_path, calls, {}), lambda step, _cmd: step.call(step.flags()),
                        log=lambda _m: None, label="test", force=("a*",))
    assert forced.plan() == {"a": True, "b": True, "c": False}
    forced.run()
    assert calls == ["a", "b"]
    with pytest.raises(ValueError, match=r"--rerun \['pretrain_\*'\] match\(es\) no test step"):
        StepRunner(tmp_path, _steps(tmp_path, calls, {}), lambda s, c: None, label="test", force=("pretrain_*",))


def test_a_failure_stops_the_run_unless_keep_going(tmp_path):
    calls: list[str] = []
    with pytest.raises(RuntimeError, match="test step 'a' failed: a broke"):
        _runner(tmp_path, _steps(tmp_path, calls, {}, fail={"a"})).run()
    assert calls == ["a"]
    calls.clear()
    outcome = _runner(tmp_path, _steps(tmp_path, calls, {}, fail={"a"})).run(keep_going=True)
    assert calls == ["a", "c"]  # b needs a: not run
    assert outcome.ran == ["c"] and set(outcome.failed) == {"a", "b"}
    assert "needs ['a']" in outcome.failed["b"]
    log = (tmp_path / "failures.log").read_text()
    assert "a: test step 'a' failed: a broke" in log and " b: skipped" in log
    calls.clear()
    outcome = _runner(tmp_path, _steps(tmp_path, calls, {})).run(keep_going=True)  # fixed: resumes
    assert calls == ["a", "b"] and outcome.skipped == ["c"]

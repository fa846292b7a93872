"""The launch scripts in bash_scripts/ pass flags that main_pretrain.py accepts and resolves."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p.name for p in (REPO / "bash_scripts").glob("pretrain_*.sh")) + ["pretrain_slurm.sbatch"]


def _captured_argv(script: str, tmp_path: Path) -> list[str]:
    """Run the script with `python`/`srun` shims that record the command line instead of training."""
    shims = tmp_path / "bin"
    shims.mkdir()
    record = tmp_path / "argv.txt"
    for name in ("python", "srun"):
        shim = shims / name
        # srun's own options (--kill-on-bad-exit=1) come before the command
        shim.write_text(f'#!/usr/bin/env bash\nwhile [ "${{1#-}}" != "$1" ]; do shift; done\n'
                        f'[ "$1" = python ] && shift\nprintf "%q " "$@" > {record}\n')
        shim.chmod(0o755)
    env = {**os.environ, "PATH": f"{shims}:{os.environ['PATH']}", "DATA_DIR": str(tmp_path / "store"),
           "NUM_GPUS": "8", "SLURM_NTASKS_PER_NODE": "8", "SLURM_JOB_NUM_NODES": "4",
           "SLURM_SUBMIT_DIR": str(REPO)}
    subprocess.run(["bash", str(REPO / "bash_scripts" / script), "--seed", "3"], env=env, check=True,
                   cwd=tmp_path, timeout=60)
    argv = shlex.split(record.read_text())
    assert argv[0].endswith("main_pipelines/main_pretrain.py")
    return argv[1:]


@pytest.mark.parametrize("script", SCRIPTS)
def test_launch_script_flags_resolve(script: str, tmp_path: Path) -> None:
    from main_pipelines import main_pretrain
    from osf.models.training import resolve_pretrain_config

    argv = _captured_argv(script, tmp_path)
    args = main_pretrain.build_parser().parse_args(argv)
    cfg = resolve_pretrain_config(main_pretrain.config_from_args(args)).to_record()
    assert cfg["psg_encoder_name"] == "vit_base" and cfg["precision"].startswith("bf16")
    assert cfg["seed"] == 3  # extra arguments reach the command
    assert cfg["data_dir"] == str(tmp_path / "store")


def _resolved(argv: list[str]) -> dict:
    from main_pipelines import main_pretrain
    from osf.models.training import resolve_pretrain_config

    return resolve_pretrain_config(main_pretrain.config_from_args(main_pretrain.build_parser().parse_args(argv))).to_record()


def _without(argv: list[str], i: int) -> list[str]:
    """``argv`` less the flag at ``i`` and its values (up to the next flag)."""
    end = next((j for j in range(i + 1, len(argv)) if argv[j].startswith("--")), len(argv))
    return argv[:i] + argv[end:]


@pytest.mark.parametrize("script", SCRIPTS)
def test_launch_scripts_pass_a_recipe_and_restate_no_default(script: str, tmp_path: Path) -> None:
    """Every setting the launcher passes changes the run: defaults live in the configs and the recipe file."""
    argv = _captured_argv(script, tmp_path)
    assert argv[argv.index("--recipe") + 1] == "osf"
    full = _resolved(argv)
    naming = {"--recipe", "--model_name", "--data_dir", "--seed"}  # what it runs, on what (and the test's own flag)
    restated = [arg for i, arg in enumerate(argv) if arg.startswith("--") and arg not in naming
                and _resolved(_without(argv, i)) == full]
    assert not restated, f"{script} restates defaults: {restated}"


def test_a_launcher_takes_a_recipe_file(tmp_path: Path, monkeypatch) -> None:
    recipe = tmp_path / "long.yaml"
    recipe.write_text("run:\n  max_epochs: 90\nmethods:\n  mae:\n    mask_ratio: 0.6\n")
    monkeypatch.setenv("RECIPE", str(recipe))
    cfg = _resolved(_captured_argv("pretrain_mae.sh", tmp_path))
    assert cfg["recipe"] == str(recipe.resolve()) and cfg["max_epochs"] == 90
    assert cfg["method_kwargs"]["mask_ratio"] == 0.6 and cfg["precision"] == "bf16-mixed"

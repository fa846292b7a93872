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
        shim.write_text(f'#!/usr/bin/env bash\n[ "$1" = python ] && shift\nprintf "%q " "$@" > {record}\n')
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

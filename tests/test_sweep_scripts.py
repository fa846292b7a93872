"""The downstream sweep scripts run end to end on a tiny store and feed the table maker."""

from __future__ import annotations

import csv
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(script: str, env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "MPLBACKEND": "Agg", **env}
    return subprocess.run(["bash", str(REPO / "bash_scripts" / script)], check=False, env=full_env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)


def test_benchmark_sweep_covers_presets_and_writes_report(tiny_store: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench"
    proc = _run("benchmark_sweep.sh", {
        "CKPTS": "random=none", "DATA": str(tiny_store), "ENCODER": "vit_nano", "OUT": str(out),
        "TASKS": "Stage", "SETTINGS": "linear_probe", "PRESETS": "full ecg_only",
    }, tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert sorted(r["eval_channels"] for r in rows) == ["ecg_only", "full"]
    assert all(r["task"] == "Stage" and r["setting"] == "linear_probe" for r in rows)
    report = out / "report" / "test_kappa"
    assert list(report.glob("*.md")) and list(report.glob("*.png"))


@pytest.mark.slow
def test_finetune_script_runs_probe_kshot_and_finetune(tiny_store: Path, tmp_path: Path) -> None:
    out = tmp_path / "ft"
    proc = _run("finetune.sh", {
        "CKPT": "none", "ENCODER": "vit_nano", "DATA": str(tiny_store), "OUT": str(out), "KSHOTS": "2",
        "STEPS_PROBE": "20", "STEPS_FT": "4",
    }, tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    settings = {r["setting"] for r in csv.DictReader((out / "results.csv").open())}
    assert len(settings) == 3

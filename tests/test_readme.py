"""The README's commands and Python API exist and run as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def _python_blocks(section: str) -> list[str]:
    body = README.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", body, flags=re.DOTALL)


def test_first_screen_gives_the_two_commands() -> None:
    first_screen = "\n".join(README.splitlines()[:15])
    assert "bash bash_scripts/quickstart.sh" in first_screen
    assert "bash bash_scripts/run_tests.sh" in first_screen
    assert "bash_scripts/run_tests.sh" in (REPO / ".ci" / "run").read_text()


def test_python_api_block_runs(tmp_path: Path) -> None:
    code = _python_blocks("Python API")[0]
    proc = subprocess.run([sys.executable, "-c", code], check=False, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "(" in proc.stdout and ", 12, 1920)" in proc.stdout
    assert (tmp_path / "demo_data" / "backbone.safetensors").is_file()


def test_every_referenced_script_exists() -> None:
    paths = set(re.findall(r"\b((?:main_pipelines|bash_scripts|benchmarks)/[\w./-]+\.(?:py|sh|sbatch))", README))
    assert paths, "the README names no scripts"
    missing = sorted(p for p in paths if not (REPO / p).is_file())
    assert not missing, f"README names scripts that do not exist: {missing}"


def test_entry_points_answer_help() -> None:
    for script in sorted((REPO / "main_pipelines").glob("main_*.py")):
        proc = subprocess.run([sys.executable, str(script), "--help"], check=False, capture_output=True, text=True, timeout=120,
                              cwd=REPO)
        assert proc.returncode == 0 and "usage:" in proc.stdout, f"{script.name}: {proc.stderr[-500:]}"

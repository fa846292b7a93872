"""demo.ipynb runs top to bottom (standalone: a small synthetic night, random-init backbone)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO_ROOT / "demo.ipynb"


def run_demo(workdir: Path, quickstart_dir: Path, timeout: int = 300):
    """Execute demo.ipynb in a kernel running this interpreter; return the executed notebook.

    The kernel spec is written to a temporary JUPYTER_PATH entry so that no manual
    ``ipykernel install`` is needed and the kernel is this venv's python, whatever ``python`` is on PATH.
    """
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    kernels = workdir / "jupyter" / "kernels" / "osf-test"
    kernels.mkdir(parents=True, exist_ok=True)
    (kernels / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "OSF test kernel", "language": "python",
    }))
    env = {
        "JUPYTER_PATH": os.pathsep.join([str(workdir / "jupyter"), os.environ.get("JUPYTER_PATH", "")]),
        "OSF_DEMO_SMALL": "1", "OSF_QUICKSTART_DIR": str(quickstart_dir), "OSF_DEMO_DIR": str(workdir / "demo"),
        "WANDB_MODE": "offline",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel process inherits these
    try:
        nb = nbformat.read(NOTEBOOK, as_version=4)
        client = nbclient.NotebookClient(nb, kernel_name="osf-test", timeout=timeout,
                                         resources={"metadata": {"path": str(REPO_ROOT)}})
        client.execute()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return nb


def notebook_text(nb) -> str:
    """All stream and text outputs of an executed notebook."""
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", "") or out.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


def test_demo_is_committed_without_outputs():
    nb = json.loads(NOTEBOOK.read_text())
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb["cells"] if c["cell_type"] == "code")


def test_demo_runs_standalone(tmp_path):
    nb = run_demo(tmp_path, quickstart_dir=tmp_path / "no_quickstart_here")
    text = notebook_text(nb)
    assert "standalone" in text
    assert "CLS: (8, 128)  patches: (8, 90, 128)" in text
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) >= 3  # the epoch, the embedding map, the predicted night
    summaries = list((tmp_path / "demo" / "prediction").glob("*_summary.json"))
    assert len(summaries) == 1
    summary = json.loads(summaries[0].read_text())
    assert summary["scored"]["cohen_kappa"] is not None
    assert (tmp_path / "demo" / "random_init_vit_nano.safetensors").is_file()  # released format, both twins

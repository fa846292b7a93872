"""Normal runs are quiet: no Lightning banners or tips, no deprecation warnings; real warnings stay."""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch

from osf.backbone.vit1d_cls import BACKBONES, ViT1D, register_backbone
from osf.utils.quiet import LIGHTNING_LOGGERS, quiet_lightning

TINY = "vit_quiet_test"
NOISE = re.compile(r"Tip:|litlogger|litmodels|tensorboardX|does not have many workers|GPU available|TPU available|logging interval|"
                   r"Seed set to|LeafSpec|model summary|is deprecated", re.IGNORECASE)


def vit_quiet_test(num_leads=12, seq_len=1920, patch_size=64, lead_wise=1, patch_size_ch=4, **kwargs) -> ViT1D:
    """A 1-block, width-16 ViT: enough to run Lightning's loops in a second."""
    return ViT1D(num_leads=num_leads, seq_len=seq_len, patch_size=patch_size, width=16, depth=1, heads=2,
                 dim_head=8, lead_wise=lead_wise, patch_size_ch=patch_size_ch, encoder_name=TINY, **kwargs)


@pytest.fixture(scope="module", autouse=True)
def _tiny_backbone():
    register_backbone(vit_quiet_test)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    BACKBONES.pop(TINY, None)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def captured() -> Iterator[dict]:
    """Every warning (no filter but the code's own) and every Lightning log line that would be printed."""
    handler, out = _Records(), {}
    for name in LIGHTNING_LOGGERS:
        logging.getLogger(name).addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield out
    finally:
        for name in LIGHTNING_LOGGERS:
            logging.getLogger(name).removeHandler(handler)
    out["warnings"] = [f"{w.category.__name__}: {w.message}" for w in caught]
    out["log"] = [r.getMessage() for r in handler.records if r.levelno < logging.WARNING]


def _noise(out: dict, stderr: str) -> list[str]:
    found = [w for w in out["warnings"] if NOISE.search(w) or w.startswith(("DeprecationWarning", "FutureWarning"))]
    found += out["log"]  # Lightning info lines: banners, tips, "Seed set", "fit stopped"
    found += [line for line in stderr.splitlines() if NOISE.search(line)]
    return found


def test_tiny_pretrain_and_finetune_runs_are_quiet(tmp_path, capfd):
    from main_pipelines import main_pretrain
    from osf.downstream.pipeline import run_downstream
    from osf.downstream.run_config import resolve_downstream_config
    from osf.testing import make_random_store

    store = make_random_store(tmp_path / "store", n_subjects=6, n_epochs=8, seed=0, split_fractions=(0.5, 0.25, 0.25))
    capfd.readouterr()
    with captured() as out:
        result = main_pretrain.main([
            "--model_name", "dino_ours", "--psg_encoder_name", TINY, "--data_dir", str(store), "--batch_size", "4",
            "--max_steps", "2", "--accelerator", "cpu", "--output_dir", str(tmp_path / "runs"), "--run_name", "q",
            "--logger", "csv", "--no-progress_bar", "--probe_label", "", "--num_workers", "0",
        ])
        record = run_downstream(resolve_downstream_config(dict(
            data_dir=str(store), output_dir=str(tmp_path / "ft"), ckpt_path=str(result.last_checkpoint),
            finetune_backbone=True, max_steps=2, eval_every=1, batch_size=8, n_boot=0, accelerator="cpu",
            warmup_steps=1)))
    assert result.last_checkpoint.is_file() and record["metrics"]["test"]
    stderr = capfd.readouterr().err
    assert not _noise(out, stderr), _noise(out, stderr)


def test_noise_is_filtered_and_real_warnings_stay():
    from pytorch_lightning.utilities import rank_zero_warn
    from pytorch_lightning.utilities._pytree import _tree_flatten

    with captured() as before:
        _tree_flatten(1)  # Lightning builds a LeafSpec: torch's deprecation, nothing a user can change
    assert any("LeafSpec" in w for w in before["warnings"]), before  # the noise exists without the filter
    with captured() as after:
        quiet_lightning()
        _tree_flatten(1)
        rank_zero_warn("The dataloader, train_dataloader, does not have many workers which may be a bottleneck.")
        info = logging.getLogger("pytorch_lightning.utilities.rank_zero").info
        info("GPU available: False, used: False")
        info("💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger]")
        info("distributed_backend=gloo\nAll distributed processes registered. Starting with 2 processes\n")  # kept
        rank_zero_warn("Checkpoint directory RUN exists and is not empty.")  # about the user's run: kept
        logging.getLogger("pytorch_lightning").warning("a real Lightning warning")
        warnings.warn("proceeding without 2 of the classifier's channels", UserWarning, stacklevel=1)
    assert after["warnings"] == ["UserWarning: Checkpoint directory RUN exists and is not empty.",
                                 "UserWarning: proceeding without 2 of the classifier's channels"], after
    assert after["log"] == ["distributed_backend=gloo\nAll distributed processes registered. Starting with 2 processes\n"]

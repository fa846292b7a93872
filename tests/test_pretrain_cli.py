"""main_pretrain.py / main_export.py end to end on a tiny store, including a 2-process CPU DDP run."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from osf.backbone.checkpoint import load_backbone

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]
TINY = ["--psg_encoder_name", "vit_nano", "--batch_size", "4", "--accelerator", "cpu", "--logger", "csv",
        "--dino_out_dim", "64", "--dino_hidden_dim", "64", "--dino_bottleneck_dim", "32", "--no-progress_bar",
        "--limit_val_batches", "1", "--log_every_n_steps", "1"]


def _script(name: str):
    return importlib.import_module(f"main_pipelines.{name}")


def test_pretrain_and_export_cli_in_process(tiny_store, tmp_path):
    main_pretrain, main_export = _script("main_pretrain"), _script("main_export")
    result = main_pretrain.main(["--model_name", "osf", "--data_dir", str(tiny_store), "--max_steps", "3",
                                 "--ckpt_every_n_steps", "2", "--output_dir", str(tmp_path), "--run_name", "r", *TINY])
    run = tmp_path / "r"
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model_name"] == "dino_ours"  # alias resolved
    assert saved["method_kwargs"]["weight_decay"] == 0.2 and saved["method_kwargs"]["same_view_pairs"] is True  # train_config
    assert saved["method_kwargs"]["dino_out_dim"] == 64  # flag overrides the default
    ckpt = torch.load(result.last_checkpoint, weights_only=True)
    assert ckpt["global_step"] == 3 and ckpt["osf"]["run_config"]["method_kwargs"] == saved["method_kwargs"]
    assert {p.name for p in (run / "checkpoints").iterdir()} >= {"step00000002.ckpt", "last.ckpt", "best.ckpt"}
    metrics = pd.read_csv(next((run / "csv_logs").rglob("metrics.csv")))
    assert metrics["train/loss"].notna().sum() == 3 and metrics["val/loss"].notna().any()
    assert "lr-AdamW/decay" in metrics.columns or any(c.startswith("lr-") for c in metrics.columns)

    pth, st = main_export.main(["--ckpt_path", str(result.last_checkpoint), "--output", str(tmp_path / "w" / "osf_backbone.pth")])
    model, metadata = load_backbone(pth)
    assert metadata["exported_from"] == "teacher" and metadata["seq_len"] == 1920
    x = torch.randn(2, 12, 1920)
    with torch.no_grad():
        torch.testing.assert_close(model(x), result.model.export_backbone("teacher")(x))
        torch.testing.assert_close(load_backbone(st)[0](x), model(x))


def test_export_takes_the_backbone_the_run_recipe_names(tiny_store, tmp_path):
    """The small recipe's runs export the student by default; --which still overrides."""
    main_pretrain, main_export = _script("main_pretrain"), _script("main_export")
    result = main_pretrain.main(["--model_name", "osf", "--recipe", "small", "--data_dir", str(tiny_store),
                                 "--max_steps", "2", "--output_dir", str(tmp_path), "--run_name", "r", *TINY])
    model = result.model
    x = torch.randn(2, 12, 1920)
    with torch.no_grad():
        assert not torch.allclose(model.export_backbone("student")(x), model.export_backbone("teacher")(x))
        for which, flags in (("student", []), ("teacher", ["--which", "teacher"])):
            pth, _ = main_export.main(["--ckpt_path", str(result.last_checkpoint), "--output",
                                       str(tmp_path / which / "b.pth"), *flags])
            exported, metadata = load_backbone(pth)
            assert metadata["exported_from"] == which
            torch.testing.assert_close(exported(x), model.export_backbone(which)(x))


def test_cli_errors_and_help(tiny_store, tmp_path, capsys):
    main_pretrain, main_export = _script("main_pretrain"), _script("main_export")
    with pytest.raises(SystemExit, match="^main_pretrain: method 'dino' has no parameter.*channel_drop_p"):
        main_pretrain.main(["--model_name", "dino", "--data_dir", str(tiny_store), "--channel_drop_p", "0.3", *TINY])
    with pytest.raises(SystemExit, match="^main_pretrain: unknown pre-training method 'dinov9'"):
        main_pretrain.main(["--model_name", "dinov9", "--data_dir", str(tiny_store), *TINY])
    with pytest.raises(SystemExit) as exit_info:
        main_pretrain.main(["--help"])
    assert exit_info.value.code == 0 and "--same_view_pairs" in capsys.readouterr().out
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit, match="bad.ckpt"):
        main_export.main(["--ckpt_path", str(bad), "--output", str(tmp_path / "x.pth")])


def test_two_process_cpu_ddp(tiny_store, tmp_path):
    """Lightning DDP with gloo, 2 CPU processes, 2 steps: both ranks step in sync and rank 0 checkpoints."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    cmd = [sys.executable, "main_pipelines/main_pretrain.py", "--model_name", "dino_ours", "--data_dir", str(tiny_store),
           "--max_steps", "2", "--num_devices", "2", "--output_dir", str(tmp_path), "--run_name", "ddp",
           "--ckpt_every_n_steps", "2", *TINY]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = torch.load(tmp_path / "ddp" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 2
    assert ckpt["osf"]["run_config"]["num_devices"] == 2
    log = proc.stderr + proc.stdout
    assert "distributed_backend=gloo" in log and "Starting with 2 processes" in log  # Lightning's DDP banner


def test_validation_interval_counts_optimizer_steps_with_gradient_accumulation(tmp_path):
    """--val_every_n_steps is in optimizer steps, as checkpoints are; Lightning counts batches."""
    from pretrain_utils import tiny_run_config

    from osf.models.training import build_trainer

    cfg = tiny_run_config("dino", tmp_path, accumulate_grad_batches=4, val_every_n_steps=5)
    trainer = build_trainer(cfg, tmp_path / "run", has_val=True)
    assert trainer.val_check_interval == 20 and trainer.accumulate_grad_batches == 4

"""Learning diagnostics (issue 12): the signals against references, the collapse verdict, and runs that
warn (forced uniform teacher, constant backbone) or do not (healthy run on structured signals)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from pretrain_utils import TINY_HEAD, TinyDataModule, TinyEpochs, tiny_run_config

import config
from osf.models.diagnostics import (
    SUMMARY_FILE,
    CollapseCheck,
    LearningDiagnostics,
    embedding_std,
    entropy,
    entropy_stats,
    fixed_batch,
    format_summary,
    prototype_usage,
    rankme,
)
from osf.models.training import run_pretrain

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]


# --- the signals ------------------------------------------------------------------------------------
def test_entropies_of_uniform_one_hot_and_spread_rows():
    k = 16
    uniform = torch.full((4, k), 1.0 / k)
    same_one_hot = torch.zeros(4, k)
    same_one_hot[:, 3] = 1.0
    spread_one_hot = torch.eye(k)[:4]
    assert torch.allclose(entropy(uniform), torch.full((4,), math.log(k)))
    stats = entropy_stats(same_one_hot)
    assert stats.per_sample == 0.0 and stats.of_mean == 0.0 and stats.log_k == pytest.approx(math.log(k))
    stats = entropy_stats(spread_one_hot)  # each row sharp, rows on 4 different prototypes
    assert stats.per_sample == 0.0 and stats.of_mean == pytest.approx(math.log(4))
    p = torch.softmax(torch.randn(5, k, generator=torch.Generator().manual_seed(0)), -1)
    reference = -(p.numpy() * np.log(p.numpy())).sum(-1)
    np.testing.assert_allclose(entropy(p).numpy(), reference, rtol=1e-5)
    # [views, B, K] input counts every row
    assert entropy_stats(p.view(1, 5, k)).per_sample == pytest.approx(float(reference.mean()), rel=1e-5)


def test_prototype_usage_counts_distinct_argmax_over_what_the_batch_can_show():
    assert prototype_usage(torch.eye(8)[:4]) == 1.0  # 4 rows, 4 prototypes used: all a batch of 4 can show
    probs = torch.zeros(6, 32)
    probs[:, 0] = 1.0
    probs[4:, 0], probs[4:, 7] = 0.0, 1.0
    assert prototype_usage(probs) == pytest.approx(2 / 6)
    assert prototype_usage(torch.eye(3)) == 1.0


def test_rankme_matches_its_definition():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(40, 16, generator=g)
    sigma = np.linalg.svd(z.numpy().astype(np.float64), compute_uv=False)
    p = sigma / sigma.sum() + 1e-7
    assert rankme(z) == pytest.approx(float(np.exp(-(p * np.log(p)).sum())), rel=1e-6)
    rank_one = torch.randn(40, 1, generator=g) @ torch.randn(1, 16, generator=g)
    assert rankme(rank_one) == pytest.approx(1.0, abs=1e-3)
    assert rankme(torch.ones(40, 16)) == pytest.approx(1.0, abs=1e-3)  # constant rows: one direction
    q, _ = torch.linalg.qr(torch.randn(40, 16, generator=g))  # equal singular values: full rank
    assert rankme(q) == pytest.approx(16.0, rel=1e-4)
    assert rankme(torch.zeros(8, 4)) == 0.0


def test_embedding_std_raw_and_normalised():
    const = torch.randn(1, 32).expand(10, -1)
    assert embedding_std(const) == (0.0, 0.0)
    g = torch.Generator().manual_seed(0)
    z = 5.0 * torch.randn(2000, 32, generator=g)
    raw, norm = embedding_std(z)
    assert raw == pytest.approx(5.0, rel=0.05) and norm == pytest.approx(1.0, rel=0.05)  # isotropic: ~1


def test_verdict_trips_each_signal_and_only_it():
    check = CollapseCheck()
    log_k = math.log(2048)
    healthy = {"rankme": 12.0, "emb_std_norm": 0.5, "teacher_entropy": 0.5 * log_k, "teacher_batch_entropy": 0.8 * log_k,
               "log_k": log_k}
    assert check.verdict(healthy) == []
    cases = {
        "uniform_teacher": {"teacher_entropy": 0.99 * log_k},
        "onehot_teacher": {"teacher_batch_entropy": 0.01 * log_k, "teacher_entropy": 0.0},
        "rank_collapse": {"rankme": 1.05},
        "std_collapse": {"emb_std_norm": 1e-4},
    }
    for signal, change in cases.items():
        tripped = check.verdict({**healthy, **change})
        assert [t.signal for t in tripped] == [signal]
        assert "try" in tripped[0].message
    assert check.verdict({"rankme": 12.0, "emb_std_norm": 0.5}) == []  # no DINO keys: those rules are silent
    assert "--teacher_temp" in check.verdict({**healthy, **cases["uniform_teacher"]})[0].message


def test_summary_table_is_thinned_and_states_the_verdict():
    history = [{"step": 10 * i, "rankme": 5.0, "emb_std_norm": 0.5, "train/loss": 1.0} for i in range(100)]
    summary = {"method": "mae", "batch": "64 val epochs", "history": history, "final": history[-1], "judged": True,
               "healthy": True, "tripped": [], "judged_from_step": 0}
    lines = format_summary(summary, max_rows=5).splitlines()
    assert lines[0] == "learning diagnostics (mae; fixed batch of 64 val epochs):"
    assert lines[1].split() == ["step", "loss", "RankMe", "std_norm"]
    assert [line.split()[0] for line in lines[2:-1]] == ["0", "250", "500", "740", "990"]
    assert lines[-1] == "verdict: no collapse signal tripped"
    tripped = CollapseCheck().verdict({"rankme": 1.0})
    text = format_summary({**summary, "healthy": False, "tripped": [asdict(t) for t in tripped]})
    assert text.splitlines()[-1].startswith("WARNING: at the end of the run: embedding rank collapsed: RankMe 1.00")
    assert "not judged" in format_summary({**summary, "judged": False, "judged_from_step": 2000})


def test_fixed_batch_is_evenly_spaced_and_touches_no_rng():
    ds = TinyEpochs(100)
    state = torch.random.get_rng_state()
    batch = fixed_batch(ds, 5)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert batch["signal"].shape[0] == 5
    assert torch.equal(batch["signal"], torch.stack([ds[i]["signal"] for i in (0, 25, 50, 74, 99)]))
    assert fixed_batch(TinyEpochs(3), 64)["signal"].shape[0] == 3
    with pytest.raises(ValueError, match="non-empty"):
        fixed_batch(TinyEpochs(0), 4)
    with pytest.raises(ValueError, match="every_n_steps >= 1"):
        LearningDiagnostics(every_n_steps=0)


# --- runs ---------------------------------------------------------------------------------------------
class StructuredEpochs(TinyEpochs):
    """Sinusoids whose frequency (shared by the channels of an epoch) and amplitudes vary by epoch."""

    def __init__(self, n: int, seq_len: int = 640, seed: int = 0, n_classes: int = 4) -> None:
        super().__init__(n, seq_len, seed, n_classes)
        g = torch.Generator().manual_seed(seed + 100)
        t = torch.arange(seq_len) / config.SAMPLE_RATE
        freq = 0.3 + 0.5 * self.label[:, None, None].float() + 0.1 * torch.rand(n, 12, 1, generator=g)
        amp = 0.5 + 2.0 * torch.rand(n, 12, 1, generator=g)
        phase = 2 * math.pi * torch.rand(n, 12, 1, generator=g)
        self.signal = amp * torch.sin(2 * math.pi * freq * t + phase) + 0.1 * torch.randn(n, 12, seq_len, generator=g)


class StructuredDataModule(TinyDataModule):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.datasets = {"train": StructuredEpochs(32), "val": StructuredEpochs(16, seed=1)}


class _ConstantBackbone(pl.Callback):
    """Zero the final LayerNorm's scale and fix its bias: every epoch embeds to the same vector."""

    def on_fit_start(self, trainer, pl_module):
        for backbone in filter(None, (pl_module.backbone, pl_module.teacher_backbone)):
            with torch.no_grad():
                backbone.norm.weight.zero_()
                backbone.norm.bias.copy_(torch.linspace(-1.0, 1.0, backbone.width))
            backbone.norm.requires_grad_(False)


def _run(method, tmp_path, capsys, datamodule=None, callbacks=(), **overrides):
    kwargs = dict(overrides.pop("method_kwargs", {}))
    cfg = tiny_run_config(method, tmp_path, logger="csv", diag_every_n_steps=2, method_kwargs=kwargs, **overrides)
    result = run_pretrain(cfg, datamodule=datamodule or TinyDataModule(), callbacks=list(callbacks))
    out = capsys.readouterr().out
    summary = json.loads((result.run_dir / SUMMARY_FILE).read_text())
    return result, out, summary


def test_uniform_teacher_warns_logs_and_summarises(tmp_path, capsys):
    hot = {**TINY_HEAD, "teacher_temp": 100.0, "warmup_teacher_temp": 100.0, "warmup_steps": 0}
    # validation at the last step runs after that step's record: the summary still picks it up
    result, out, summary = _run("dino", tmp_path, capsys, max_steps=4, ckpt_every_n_steps=4, method_kwargs=hot)
    warnings = [line for line in out.splitlines() if line.startswith("WARNING:")]
    assert any("teacher is uniform" in line and "--teacher_temp" in line for line in warnings), out
    assert len([w for w in warnings if w.startswith("WARNING: step")]) == 1  # warned once, not every evaluation
    assert "learning diagnostics (dino" in out and "H_teacher" in out
    assert summary["judged"] and not summary["healthy"]
    assert [t["signal"] for t in summary["tripped"]] == ["uniform_teacher"]
    assert [r["step"] for r in summary["history"]] == [0, 2, 4]
    final = summary["final"]
    assert final["teacher_entropy"] == pytest.approx(math.log(64), rel=1e-3) and final["log_k"] == pytest.approx(math.log(64))
    assert 0.0 < final["proto_usage"] <= 1.0 and final["rankme"] > 1.5 and "student_rankme" in final
    assert 0.0 <= final["val/probe_acc"] <= 1.0 and "val/probe_acc" not in summary["history"][1]
    metrics = pd.read_csv(next((result.run_dir / "csv_logs").rglob("metrics.csv")))
    for column in ("diag/teacher_entropy", "diag/teacher_batch_entropy", "diag/student_entropy", "diag/proto_usage",
                   "diag/rankme", "diag/emb_std", "train/teacher_entropy"):
        assert metrics[column].notna().any(), column
    assert sorted(metrics.loc[metrics["diag/rankme"].notna(), "step"]) == [0, 2, 4]
    ckpt = torch.load(result.last_checkpoint, weights_only=True)  # the history survives a resume
    (state,) = [v for k, v in ckpt["callbacks"].items() if "LearningDiagnostics" in k]
    assert [r["step"] for r in state["history"]] == [0, 2, 4] and state["warned"] == ["uniform_teacher"]


@pytest.mark.parametrize("method", ["mae", "ar"])
def test_constant_backbone_warns_rank_and_std(method, tmp_path, capsys):
    _, out, summary = _run(method, tmp_path, capsys, max_steps=2, callbacks=[_ConstantBackbone()],
                           method_kwargs={"warmup_steps": 0, "decoder_width": 64, "decoder_depth": 1, "decoder_heads": 2}
                           if method == "mae" else {"warmup_steps": 0})
    assert "WARNING: step 0: embedding rank collapsed" in out and "embedding std collapsed" in out
    assert {t["signal"] for t in summary["tripped"]} == {"rank_collapse", "std_collapse"}
    assert summary["final"]["rankme"] == pytest.approx(1.0, abs=1e-3) and summary["final"]["emb_std"] == 0.0


def test_constant_backbone_under_a_sharp_teacher_warns_one_hot(tmp_path, capsys):
    sharp = {**TINY_HEAD, "teacher_temp": 1e-4, "warmup_teacher_temp": 1e-4, "warmup_steps": 0}
    _, out, summary = _run("dino", tmp_path, capsys, max_steps=2, callbacks=[_ConstantBackbone()], method_kwargs=sharp)
    assert "WARNING: step 0: teacher puts every epoch on the same prototype" in out
    assert {t["signal"] for t in summary["tripped"]} == {"onehot_teacher", "rank_collapse", "std_collapse"}
    assert summary["final"]["teacher_batch_entropy"] < 0.01 and summary["final"]["proto_usage"] == pytest.approx(1 / 24)


@pytest.mark.parametrize("method", ["dino_ours", "simclr"])
def test_healthy_run_on_structured_signals_does_not_warn_rank_or_std(method, tmp_path, capsys):
    kwargs = {**TINY_HEAD, "warmup_steps": 1} if method == "dino_ours" else {"proj_hidden_dim": 64, "proj_output_dim": 32}
    _, out, summary = _run(method, tmp_path, capsys, datamodule=StructuredDataModule(), max_steps=6, method_kwargs=kwargs)
    assert summary["judged"]
    assert not {"rank_collapse", "std_collapse"} & {t["signal"] for t in summary["tripped"]}, out
    assert "embedding rank collapsed" not in out and "embedding std collapsed" not in out
    assert summary["final"]["rankme"] > 3.0 and summary["final"]["emb_std_norm"] > 0.1


def test_run_ended_within_warm_up_is_not_judged(tmp_path, capsys):
    hot = {**TINY_HEAD, "teacher_temp": 100.0, "warmup_teacher_temp": 100.0, "warmup_steps": 10}
    _, out, summary = _run("dino", tmp_path, capsys, max_steps=2, method_kwargs=hot)
    assert not summary["judged"] and "WARNING" not in out and "not judged" in out


class _LoaderOnly(pl.LightningDataModule):
    """A data module with a training loader and no ``datasets`` splits."""

    def __init__(self) -> None:
        super().__init__()
        self._inner = TinyDataModule()

    def train_dataloader(self):
        return self._inner.train_dataloader()


@pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no `val_dataloader`")
def test_without_splits_the_first_training_batch_is_the_fixed_batch(tmp_path, capsys):
    _, _, summary = _run("ar", tmp_path, capsys, datamodule=_LoaderOnly(), max_steps=2)
    assert summary["batch"] == "4 epochs of the first training batch"
    assert [r["step"] for r in summary["history"]] == [0, 2] and summary["final"]["rankme"] > 1.5


def test_diagnostics_off(tmp_path, capsys):
    cfg = tiny_run_config("ar", tmp_path, max_steps=1, diag_every_n_steps=0, method_kwargs={})
    result = run_pretrain(cfg, datamodule=TinyDataModule())
    assert not (result.run_dir / SUMMARY_FILE).exists() and "learning diagnostics" not in capsys.readouterr().out


def test_cli_flags_reach_the_diagnostics(tiny_store, tmp_path, capsys):
    from main_pipelines import main_pretrain

    result = main_pretrain.main([
        "--model_name", "vqvae", "--data_dir", str(tiny_store), "--max_steps", "3", "--psg_encoder_name", "vit_nano",
        "--batch_size", "4", "--accelerator", "cpu", "--output_dir", str(tmp_path), "--run_name", "r", "--logger", "csv",
        "--no-progress_bar", "--codebook_size", "32", "--decoder_width", "64", "--decoder_depth", "1",
        "--diag_every_n_steps", "3", "--diag_batch_size", "6"])
    assert result.config.to_record()["diag_every_n_steps"] == 3
    summary = json.loads((result.run_dir / SUMMARY_FILE).read_text())
    assert summary["batch"] == "6 val epochs" and [r["step"] for r in summary["history"]] == [0, 3]
    assert "learning diagnostics (vqvae; fixed batch of 6 val epochs)" in capsys.readouterr().out


@pytest.mark.slow
def test_two_process_ddp_summarises_once(tiny_store, tmp_path):
    """gloo DDP, 2 CPU processes: rank 0 alone evaluates, prints the summary and writes the JSON."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    cmd = [sys.executable, "main_pipelines/main_pretrain.py", "--model_name", "dino_ours", "--data_dir", str(tiny_store),
           "--max_steps", "2", "--num_devices", "2", "--accelerator", "cpu", "--output_dir", str(tmp_path),
           "--run_name", "ddp", "--psg_encoder_name", "vit_nano", "--batch_size", "4", "--dino_out_dim", "64",
           "--dino_hidden_dim", "64", "--dino_bottleneck_dim", "32", "--no-progress_bar", "--logger", "csv",
           "--diag_every_n_steps", "1", "--diag_batch_size", "8", "--warmup_steps", "0"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("learning diagnostics (dino_ours") == 1
    summary = json.loads((tmp_path / "ddp" / SUMMARY_FILE).read_text())
    assert [r["step"] for r in summary["history"]] == [0, 1, 2] and summary["batch"] == "8 val epochs"

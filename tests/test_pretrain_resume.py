"""Resuming restores everything: N steps + resume + N steps == 2N uninterrupted steps, exactly, on CPU."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from pretrain_utils import TinyDataModule, tiny_run_config

from osf.models.training import run_pretrain

pytestmark = pytest.mark.usefixtures("one_thread")


class _Preempt(pl.Callback):
    """Stops the run after ``step`` optimizer steps, as a preempted job would (checkpoint already written)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step >= self.step:
            trainer.should_stop = True


class _Batches(pl.Callback):
    def __init__(self) -> None:
        self.seen: list[tuple[int, list[int]]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.seen.append((trainer.global_step, batch["epoch_index"].tolist() + [int(batch["label"][0])]))


# Resuming continues in the run folder it left: Lightning's "not empty" warning is the expected case here.
@pytest.mark.filterwarnings("ignore:Checkpoint directory .* exists and is not empty")
def test_resume_mid_epoch_gives_identical_weights(tmp_path):
    # 5 batches per epoch; preempted after step 3 (mid-epoch 0), resumed to 8 steps (into epoch 1).
    kwargs = {"max_steps": 8, "ckpt_every_n_steps": 3, "val_every_n_steps": 3, "lr": 3e-3, "warmup_frac": 0.25}
    full_batches, resumed_batches = _Batches(), _Batches()
    full = run_pretrain(tiny_run_config("dino_ours", tmp_path, run_name="full", **kwargs),
                        datamodule=TinyDataModule(n_train=20), callbacks=[full_batches])
    half = run_pretrain(tiny_run_config("dino_ours", tmp_path, run_name="half", **kwargs),
                        datamodule=TinyDataModule(n_train=20), callbacks=[_Preempt(3), resumed_batches])
    assert torch.load(half.last_checkpoint, weights_only=True)["global_step"] == 3
    resumed = run_pretrain(tiny_run_config("dino_ours", tmp_path, run_name="half", ckpt_path=str(half.last_checkpoint), **kwargs),
                           datamodule=TinyDataModule(n_train=20), callbacks=[resumed_batches])

    assert resumed_batches.seen == full_batches.seen  # same data order, no batch repeated or skipped
    a = torch.load(full.last_checkpoint, weights_only=True)
    b = torch.load(resumed.last_checkpoint, weights_only=True)
    assert a["global_step"] == b["global_step"] == 8
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key in a["state_dict"]:  # student, teacher, heads, probe and DINO center
        torch.testing.assert_close(b["state_dict"][key], a["state_dict"][key], rtol=0, atol=1e-6, msg=key)
    for sa, sb in zip(a["optimizer_states"][0]["state"].values(), b["optimizer_states"][0]["state"].values()):
        torch.testing.assert_close(sb["exp_avg_sq"], sa["exp_avg_sq"], rtol=0, atol=1e-6)
    assert a["lr_schedulers"][0]["last_epoch"] == b["lr_schedulers"][0]["last_epoch"] == 8
    # The teacher really moved (otherwise the equality would be vacuous for it).
    assert not torch.equal(a["state_dict"]["teacher_backbone.norm.weight"], torch.ones_like(a["state_dict"]["teacher_backbone.norm.weight"]))

"""One rank of the no-hang check (run by tests/test_cluster.py under ``torchrun --nproc_per_node 2``).

Trains every method given (default: all registered) for 2 steps on 2 gloo ranks with validation after
every step on uneven shards (rank 0: 1 batch, rank 1: 2 batches), the learning diagnostics on every
step (rank 0 only) and, for the DINO family, Sinkhorn-Knopp teacher centering (``dino_ours`` with iBOT
too). A collective called on one rank only hangs here; the test's timeout turns that into a failure.
Writes ``OUT/<method>.rank<r>.json`` (step, validation loss, run folder) per method and rank.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/cluster_ranks.py OUT_DIR [METHOD ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch
from pretrain_utils import METHOD_TEST_CONFIGS, TinyEpochs, tiny_run_config
from torch.utils.data import DataLoader

from osf.datasets.datamodule import EvalSampler, TrainSampler, collate_epochs
from osf.models.registry import METHODS
from osf.models.training import run_pretrain

SINKHORN = {"dino": {"teacher_centering": "sinkhorn"},
            "dino_ours": {"teacher_centering": "sinkhorn", "ibot_lambda": 1.0}}


class UnevenShards(pl.LightningDataModule):
    """Rank-aware loaders: 16 training epochs, 9 validation epochs (4 on rank 0, 5 on rank 1 of 2)."""

    def __init__(self, batch_size: int = 4) -> None:
        super().__init__()
        self.datasets = {"train": TinyEpochs(16, seed=0), "val": TinyEpochs(9, seed=1)}
        self.batch_size = batch_size
        self.num_classes = 4

    def _world(self) -> tuple[int, int]:
        return self.trainer.world_size, self.trainer.global_rank

    def train_dataloader(self) -> DataLoader:
        world, rank = self._world()
        sampler = TrainSampler(self.datasets["train"], num_replicas=world, rank=rank)
        return DataLoader(self.datasets["train"], self.batch_size, sampler=sampler, drop_last=True, collate_fn=collate_epochs)

    def val_dataloader(self) -> DataLoader:
        world, rank = self._world()
        sampler = EvalSampler(self.datasets["val"], num_replicas=world, rank=rank)
        return DataLoader(self.datasets["val"], self.batch_size, sampler=sampler, collate_fn=collate_epochs)


def main(out: Path, methods: list[str]) -> None:
    torch.set_num_threads(1)
    for method in methods:
        kwargs = {**METHOD_TEST_CONFIGS[method], **SINKHORN.get(method, {})}
        cfg = tiny_run_config(method, out, run_name=method, num_devices=2, max_steps=2, val_every_n_steps=1,
                              ckpt_every_n_steps=2, limit_val_batches=None, diag_every_n_steps=1, diag_batch_size=4,
                              method_kwargs=kwargs)
        result = run_pretrain(cfg, datamodule=UnevenShards())
        trainer = result.model.trainer
        done = {"step": trainer.global_step, "val_loss": float(trainer.callback_metrics["val/loss"]),
                "run_dir": str(result.run_dir)}
        (out / f"{method}.rank{trainer.global_rank}.json").write_text(json.dumps(done))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:] or sorted(METHODS))

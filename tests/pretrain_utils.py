"""Helpers shared by the pre-training tests: a tiny in-memory data module and small method configs."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from osf.datasets.datamodule import EvalSampler, TrainSampler, collate_epochs
from osf.models.pretrain_config import PretrainConfig

SEQ_LEN = 640  # 10 time patches: fast; the 1920-sample contract is covered by the CLI tests
TINY_HEAD = {"dino_out_dim": 64, "dino_hidden_dim": 64, "dino_bottleneck_dim": 32}
# Every registered method needs an entry here: the constructor kwargs that make it tiny for the tests
# (vit_nano on SEQ_LEN samples); test_every_registered_method_is_tested fails otherwise.
METHOD_TEST_CONFIGS: dict[str, dict] = {
    "dino_ours": dict(TINY_HEAD),
    "dino": dict(TINY_HEAD),
    # Baselines (issue 7): small projections, decoders and codebook; more in test_pretrain_baselines.py.
    "simclr": {"proj_hidden_dim": 64, "proj_output_dim": 32},
    "sleepfm": {"proj_dim": 32},
    "mae": {"decoder_width": 64, "decoder_depth": 1, "decoder_heads": 2},
    "vqvae": {"codebook_size": 32, "decoder_width": 64, "decoder_depth": 1, "decoder_heads": 2},
    "ar": {},
}


class TinyEpochs(Dataset):
    """Random epochs with a class-dependent offset in channel 0 so a probe can learn the label."""

    def __init__(self, n: int, seq_len: int = SEQ_LEN, seed: int = 0, n_classes: int = 4) -> None:
        g = torch.Generator().manual_seed(seed)
        self.label = torch.randint(0, n_classes, (n,), generator=g)
        self.signal = torch.randn(n, 12, seq_len, generator=g)
        self.signal[:, 0] += self.label[:, None].float()
        self.mask = torch.ones(n, 12, dtype=torch.bool)

    def __len__(self) -> int:
        return self.signal.shape[0]

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"signal": self.signal[i], "channel_mask": self.mask[i], "label": self.label[i],
                "recording_id": f"r{i // 10}", "subject_id": f"s{i // 10}", "epoch_index": torch.tensor(i % 10)}


class TinyDataModule(pl.LightningDataModule):
    """Train/val loaders over :class:`TinyEpochs` with the store data module's seeded samplers."""

    def __init__(self, n_train: int = 24, n_val: int = 8, batch_size: int = 4, seq_len: int = SEQ_LEN, seed: int = 0) -> None:
        super().__init__()
        self.datasets = {"train": TinyEpochs(n_train, seq_len, seed), "val": TinyEpochs(n_val, seq_len, seed + 1)}
        self.batch_size = batch_size
        self.seed = seed
        self.num_classes = 4

    def train_dataloader(self) -> DataLoader:
        ds = self.datasets["train"]
        return DataLoader(ds, batch_size=self.batch_size, sampler=TrainSampler(ds, seed=self.seed), drop_last=True,
                          collate_fn=collate_epochs)

    def val_dataloader(self) -> DataLoader:
        ds = self.datasets["val"]
        return DataLoader(ds, batch_size=self.batch_size, sampler=EvalSampler(ds), collate_fn=collate_epochs)


def tiny_batch(batch_size: int = 8, seq_len: int = SEQ_LEN, seed: int = 0) -> dict[str, Any]:
    """One fixed batch in the pinned batch format."""
    return collate_epochs([TinyEpochs(batch_size, seq_len, seed)[i] for i in range(batch_size)])


def tiny_run_config(method: str, run_dir, **overrides: Any) -> PretrainConfig:
    """A resolved main_pretrain config for vit_nano on SEQ_LEN samples (CPU, no logger)."""
    from osf.models.training import resolve_pretrain_config

    cli = {
        "model_name": method, "psg_encoder_name": "vit_nano", "patch_size_time": 64, "patch_size_ch": 4, "lead_wise": 1,
        "batch_size": 4, "lr": 1e-3, "max_steps": 6, "max_epochs": None, "seed": 0, "accelerator": "cpu",
        "num_devices": 1, "num_nodes": 1, "precision": "32-true", "data_dir": None, "output_dir": str(run_dir),
        "run_name": "run", "ckpt_every_n_steps": 3, "limit_val_batches": 1, "log_every_n_steps": 1, "logger": "none",
        "progress_bar": False, "method_kwargs": dict(TINY_HEAD), "probe_label": None,
    }
    cli.update(overrides)
    cfg = resolve_pretrain_config(cli)
    cfg.backbone.seq_len = SEQ_LEN
    return cfg


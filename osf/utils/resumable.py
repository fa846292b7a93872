"""Resumable data position: after a mid-epoch resume, training continues with the next unseen batch.

Lightning restores the loop counters but a map-style DataLoader restarts its epoch from the first
batch. :class:`DataPosition` is a callback that records (epoch, batches consumed) in every
checkpoint; :meth:`DataPosition.wrap` wraps a ``train_dataloader`` function so that, on the first
call after a restore, the returned loader skips the samples already consumed in that epoch. The
sampler must be deterministic per epoch (seeded by ``(seed, epoch)`` and told the epoch through
``set_epoch``), as :class:`osf.datasets.datamodule.TrainSampler` is.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterator
from typing import Any

import pytorch_lightning as pl
from torch.utils.data import DataLoader, Sampler

__all__ = ["DataPosition", "SkipFirstSampler"]


class SkipFirstSampler(Sampler):
    """Wraps a sampler; its next iteration drops the first ``skip`` indices (then it is a pass-through)."""

    def __init__(self, sampler: Sampler, skip: int) -> None:
        self.sampler = sampler
        self.skip = int(skip)

    def set_epoch(self, epoch: int) -> None:
        """Forward the epoch to the wrapped sampler (Lightning calls this each epoch)."""
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[int]:
        skip, self.skip = self.skip, 0
        return itertools.islice(iter(self.sampler), skip, None)

    def __len__(self) -> int:
        return len(self.sampler)


class DataPosition(pl.Callback):
    """Saves the training data position in checkpoints and restores it through :meth:`wrap`."""

    def __init__(self) -> None:
        self._trainer: pl.Trainer | None = None
        self._pending: tuple[int, int] | None = None  # (epoch, batches consumed) to restore

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Keep the trainer: :meth:`state_dict` reads its loop counters."""
        self._trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        """Epoch and batches of it consumed at save time (an epoch end is saved as the next epoch's start)."""
        trainer = self._trainer
        if trainer is None:
            return {}
        consumed = int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)
        epoch = int(trainer.current_epoch)
        n_batches = trainer.num_training_batches
        if n_batches != float("inf") and consumed >= n_batches:
            epoch, consumed = epoch + 1, 0
        return {"epoch": epoch, "batches": consumed}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Remember the saved position; the next wrapped ``train_dataloader`` call applies it."""
        if state_dict:
            self._pending = (int(state_dict["epoch"]), int(state_dict["batches"]))

    def wrap(self, train_dataloader: Callable[[], DataLoader]) -> Callable[[], DataLoader]:
        """Wrap a ``train_dataloader`` function so the first loader after a restore skips consumed batches."""

        @functools.wraps(train_dataloader)
        def wrapped() -> DataLoader:
            loader = train_dataloader()
            pending, self._pending = self._pending, None
            if not pending or pending[1] == 0:
                return loader
            epoch, batches = pending
            if loader.batch_size is None or loader.sampler is None:
                raise ValueError("resuming mid-epoch needs a DataLoader built with batch_size and sampler")
            if hasattr(loader.sampler, "set_epoch"):
                loader.sampler.set_epoch(epoch)
            return DataLoader(
                loader.dataset,
                batch_size=loader.batch_size,
                sampler=SkipFirstSampler(loader.sampler, batches * loader.batch_size),
                drop_last=loader.drop_last,
                num_workers=loader.num_workers,
                collate_fn=loader.collate_fn,
                pin_memory=loader.pin_memory,
                persistent_workers=loader.persistent_workers,
                worker_init_fn=loader.worker_init_fn,
                prefetch_factor=loader.prefetch_factor,
                generator=loader.generator,
                timeout=loader.timeout,
                multiprocessing_context=loader.multiprocessing_context,
            )

        return wrapped

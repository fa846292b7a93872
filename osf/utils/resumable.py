"""Resumable data position: after a mid-epoch resume, training continues with the next unseen batch.

Lightning restores the loop counters but a map-style DataLoader restarts its epoch from the first
batch. :class:`DataPosition` is a callback that records (epoch, batches consumed, world size, per-rank
batch) in every checkpoint; :meth:`DataPosition.wrap` wraps a ``train_dataloader`` function so that, on
the first call after a restore, the returned loader skips the samples already consumed in that epoch.
The sampler must be deterministic per epoch (seeded by ``(seed, epoch)`` and told the epoch through
``set_epoch``), as :class:`osf.datasets.datamodule.TrainSampler` is.

At the same world size the resumed epoch is exactly the uninterrupted one. On another world size
(:class:`ReshardedSampler`) the epoch's global order is kept: the first ``batches x batch x world`` items
(what the old ranks consumed together, rank r having taken items ``r, r+W, ...``) are dropped and the rest
is dealt to the new ranks, so no item is served twice and none is skipped (up to the padding that makes
shards equal). A sampler without a global order (not a ``TrainSampler``) restarts the interrupted epoch.
"""

from __future__ import annotations

import functools
import itertools
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytorch_lightning as pl
from torch.utils.data import DataLoader, Sampler

__all__ = ["DataPosition", "ReshardedSampler", "SkipFirstSampler"]


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


class ReshardedSampler(Sampler):
    """Wraps a ``TrainSampler``; its next iteration deals the epoch's items after the first ``start`` to its ranks.

    ``done`` (batches x batch this rank is counted as having consumed) keeps ``len`` equal to what the
    restored loop counters expect: consumed + remaining.
    """

    def __init__(self, sampler: Sampler, start: int, done: int) -> None:
        self.sampler = sampler
        self.start, self.done = int(start), int(done)
        self._pending = True
        self._cache: tuple[Any, np.ndarray] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Forward the epoch to the wrapped sampler."""
        self.sampler.set_epoch(epoch)

    def _rest(self) -> np.ndarray:
        key = getattr(self.sampler, "epoch", None)
        if self._cache is None or self._cache[0] != key:  # one permutation per epoch, not per len() call
            self._cache = (key, self._deal())
        return self._cache[1]

    def _deal(self) -> np.ndarray:
        rest = np.asarray(self.sampler.global_order())[self.start :]
        world = self.sampler.num_replicas
        if rest.size % world and rest.size:  # pad so every rank gets the same number of items
            rest = np.resize(rest, -(-rest.size // world) * world)
        return rest[self.sampler.rank :: world]

    def __iter__(self) -> Iterator[int]:
        if not self._pending:
            return iter(self.sampler)
        self._pending = False
        return iter(self._rest().tolist())

    def __len__(self) -> int:
        return self.done + len(self._rest()) if self._pending else len(self.sampler)


class DataPosition(pl.Callback):
    """Saves the training data position in checkpoints and restores it through :meth:`wrap`."""

    def __init__(self) -> None:
        self._trainer: pl.Trainer | None = None
        self._pending: dict[str, int] | None = None  # the saved position to restore
        self._batch_size: int | None = None  # per rank, of the loader in use

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
        return {"epoch": epoch, "batches": consumed, "world_size": int(trainer.world_size),
                "batch_size": int(self._batch_size or 0)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Remember the saved position; the next wrapped ``train_dataloader`` call applies it."""
        if state_dict:
            self._pending = {k: int(v) for k, v in state_dict.items()}

    def wrap(self, train_dataloader: Callable[[], DataLoader]) -> Callable[[], DataLoader]:
        """Wrap a ``train_dataloader`` function so the first loader after a restore skips consumed batches."""

        @functools.wraps(train_dataloader)
        def wrapped() -> DataLoader:
            loader = train_dataloader()
            self._batch_size = loader.batch_size
            pending, self._pending = self._pending, None
            if not pending or pending["batches"] == 0:
                return loader
            epoch, batches = pending["epoch"], pending["batches"]
            if loader.batch_size is None or loader.sampler is None:
                raise ValueError("resuming mid-epoch needs a DataLoader built with batch_size and sampler")
            if hasattr(loader.sampler, "set_epoch"):
                loader.sampler.set_epoch(epoch)
            return _loader_like(loader, _resumed_sampler(loader, pending))

        return wrapped


def _resumed_sampler(loader: DataLoader, saved: dict[str, int]) -> Sampler:
    """The sampler of the interrupted epoch's rest: skip at the same world size, reshard at another."""
    batches = saved["batches"]
    world = getattr(loader.sampler, "num_replicas", 1)
    old_world, old_batch = saved.get("world_size", world), saved.get("batch_size") or loader.batch_size
    if old_world == world and old_batch == loader.batch_size:
        return SkipFirstSampler(loader.sampler, batches * loader.batch_size)
    if hasattr(loader.sampler, "global_order"):
        return ReshardedSampler(loader.sampler, batches * old_batch * old_world, batches * loader.batch_size)
    warnings.warn(f"resuming on {world} ranks from {old_world}: the sampler has no global order, so the "
                  "interrupted epoch restarts from its first batch", stacklevel=2)
    return loader.sampler


def _loader_like(loader: DataLoader, sampler: Sampler) -> DataLoader:
    """``loader`` with another sampler, every other setting kept."""
    return DataLoader(
        loader.dataset, batch_size=loader.batch_size, sampler=sampler, drop_last=loader.drop_last,
        num_workers=loader.num_workers, collate_fn=loader.collate_fn, pin_memory=loader.pin_memory,
        persistent_workers=loader.persistent_workers, worker_init_fn=loader.worker_init_fn,
        prefetch_factor=loader.prefetch_factor, generator=loader.generator, timeout=loader.timeout,
        multiprocessing_context=loader.multiprocessing_context,
    )

"""`EpochDataset` over the epoch store and the Lightning `SleepDataModule` (pre-training and downstream).

One batch is one batched store read: the DataLoader's batch sampler hands the whole list of indices
to `EpochDataset.__getitems__`, which reads all rows file by file in ascending order. Samplers are
`DistributedSampler` subclasses built with the trainer's rank, so Lightning leaves them alone under
DDP: training shards are shuffled (and padded to equal length, as DistributedSampler does); val/test
shards are contiguous, never padded or dropped, so every epoch is evaluated exactly once (ranks may
differ by one sample, avoid per-step collectives in evaluation).
"""

from __future__ import annotations

import gc
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from typing import Any

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler, get_worker_info

from osf import config
from osf.datasets.channelset import ChannelSet
from osf.datasets.permutation import LazyPermutation
from osf.datasets.splits import SPLITS, in_cohort, subset_subjects
from osf.datasets.store import EpochStore
from osf.datasets.store_index import StoreIndex

log = logging.getLogger(__name__)

TASKS = ("pretrain", "downstream")
_STAGE_LUT_4 = np.array(
    [config.STAGE_5_TO_4[s] for s in range(-1, len(config.STAGE_NAMES_5))], dtype=np.int64
)


def task_labels(
    raw: np.ndarray, eval_label: str, stage_classes: int = 4
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Map a stored label column to task labels (int64, -1 unknown) and return them with the class names."""
    raw = np.asarray(raw, dtype=np.int64)
    if eval_label == "Stage":
        if stage_classes == 4:
            return _STAGE_LUT_4[raw + 1], config.STAGE_NAMES_4
        if stage_classes == 5:
            return raw, config.STAGE_NAMES_5
        raise ValueError(f"stage_classes must be 4 or 5, got {stage_classes}")
    if eval_label not in config.LABEL_COLUMNS:
        raise ValueError(f"unknown eval_label {eval_label!r}; choose one of {list(config.LABEL_COLUMNS)}")
    return raw, (f"No {eval_label}", eval_label)


def _shared_float32(shape: tuple[int, ...]) -> torch.Tensor:
    """An uninitialised float32 tensor in shared memory."""
    try:  # what default_collate uses: allocates the segment without touching its pages
        storage = torch.UntypedStorage._new_shared(int(np.prod(shape)) * 4)
        return torch.empty(0, dtype=torch.float32).set_(storage).view(shape)
    except (AttributeError, TypeError):
        return torch.empty(shape, dtype=torch.float32).share_memory_()


class EpochDataset(Dataset):
    """Epochs of an `EpochStore` selected by index rows, yielding the pinned batch dict.

    `labels` (int64, aligned with `rows`) adds a `label` entry; `keep_channels` (a ChannelSet or bool [12]) zeroes the
    other channels and clears their mask bits, emulating a reduced montage. `montages` (bool [P, 12]) draws one of P
    montages per epoch instead (torch's RNG, seeded per DataLoader worker): training over the channel presets.
    """

    def __init__(
        self,
        store: EpochStore | str | PathLike,
        rows: np.ndarray,
        labels: np.ndarray | None = None,
        keep_channels: ChannelSet | np.ndarray | None = None,
        montages: np.ndarray | None = None,
    ):
        self.store = store if isinstance(store, EpochStore) else EpochStore(store)
        self.montages = None if montages is None else np.asarray(montages, dtype=bool).reshape(-1, config.NUM_CHANNELS)
        self.rows = np.asarray(rows, dtype=np.int64)
        if labels is not None:
            labels = np.asarray(labels, dtype=np.int64)
            if labels.shape != self.rows.shape:
                raise ValueError(f"labels {labels.shape} do not match rows {self.rows.shape}")
        self.labels = labels
        if isinstance(keep_channels, ChannelSet):
            keep_channels = keep_channels.mask
        if keep_channels is not None:
            keep_channels = np.asarray(keep_channels, dtype=bool)
            if keep_channels.shape != (config.NUM_CHANNELS,):
                raise ValueError(
                    f"keep_channels must be bool [{config.NUM_CHANNELS}], got {keep_channels.shape}"
                )
            if keep_channels.all():
                keep_channels = None
        self.keep_channels = keep_channels
        # No per-row strings: names come from the store's recording table for the rows of a batch only.

    def __len__(self) -> int:
        return int(self.rows.size)

    def __getitems__(self, indices: Sequence[int]) -> dict[str, Any]:
        """A whole batch from one batched store read."""
        idx = np.asarray(indices, dtype=np.int64)
        rows = self.rows[idx]
        shape = (rows.size, config.NUM_CHANNELS, config.EPOCH_SAMPLES)
        if get_worker_info() is not None:
            # In a worker, read straight into shared memory (as default_collate does): the batch then
            # crosses to the main process without another copy.
            signal_t = _shared_float32(shape)
        else:
            signal_t = torch.empty(shape, dtype=torch.float32)
        signal = self.store.read(rows, out=signal_t.numpy())
        mask = self.store.channel_masks(rows)
        if self.keep_channels is not None:
            signal[:, ~self.keep_channels] = 0.0
            mask &= self.keep_channels
        if self.montages is not None:
            keep = self.montages[torch.randint(len(self.montages), (rows.size,)).numpy()]
            signal[~keep] = 0.0
            mask &= keep
        batch: dict[str, Any] = {
            "signal": signal_t,
            "channel_mask": torch.from_numpy(mask),
            "recording_id": self.store.rows.names("recording_id", rows),
            "subject_id": self.store.rows.names("subject_id", rows),
            "epoch_index": torch.from_numpy(self.store.column("epoch_index")[rows].astype(np.int64)),
        }
        if self.labels is not None:
            batch["label"] = torch.from_numpy(self.labels[idx])
        return batch

    def __getitem__(self, i: int) -> dict[str, Any]:
        """One epoch: `signal` [12, 1920], `channel_mask` [12], scalar `label`/`epoch_index`, str ids."""
        batch = self.__getitems__([i])
        return {k: v[0] for k, v in batch.items()}

    def dataset_codes(self) -> np.ndarray:
        """Dataset code of every item (int32, aligned with the items; names in ``store.rows.dataset_names``)."""
        return self.store.rows.per_row(self.store.rows.rec_dataset, self.rows)

    def dataset_names(self) -> np.ndarray:
        """Dataset name of every item (object array aligned with the items; small sets, else use the codes)."""
        return self.store.rows.dataset_names[self.dataset_codes()]

    def subject_keys(self) -> np.ndarray:
        """``dataset/subject_id`` of every item (object array; small sets, else use the codes)."""
        return self.store.rows.subject_names[self.store.rows.per_row(self.store.rows.rec_subject, self.rows)]


def freeze_before_fork() -> None:
    """Move every live object out of the garbage collector's reach before DataLoader workers fork.

    A collection in a worker writes to the header of every tracked object it visits, which copies
    the page holding it (copy-on-write): frozen objects are never visited, so they stay shared.
    """
    gc.collect()
    gc.freeze()


def collate_epochs(batch: dict[str, Any] | list[dict[str, Any]]) -> dict[str, Any]:
    """Collate for `EpochDataset`: passes batched reads through, stacks single items otherwise."""
    if isinstance(batch, dict):
        return batch
    out: dict[str, Any] = {}
    for key in batch[0]:
        values = [b[key] for b in batch]
        out[key] = torch.stack(values) if isinstance(values[0], torch.Tensor) else list(values)
    return out


class TrainSampler(DistributedSampler):
    """Rank-aware shuffling sampler, optionally a per-group weighted mixture (with replacement).

    Without `group_weights`, every item once per epoch in a seeded permutation: up to
    `EXACT_PERMUTATION_MAX` items numpy's `permutation` (the order this sampler always drew), above
    it a `LazyPermutation` evaluated only at this rank's positions, so start-up costs O(n / ranks)
    and no n-item list is built. With them, each draw picks group g with probability w_g / sum(w)
    and then an item of g (cycling through a permutation of g, so items repeat only once their group
    is exhausted). Shards are padded to equal length; items are yielded in chunks, not as one list.
    """

    EXACT_PERMUTATION_MAX = 1 << 20
    CHUNK = 1 << 16

    def __init__(
        self,
        dataset: Dataset,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        groups: np.ndarray | None = None,
        group_weights: Mapping[Any, float] | None = None,
        num_samples: int | None = None,
    ):
        super().__init__(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False
        )
        self.n_items = len(dataset)
        self.total = int(num_samples) if num_samples is not None else self.n_items
        self.mixture: list[tuple[np.ndarray, float]] | None = None
        if group_weights is not None:
            if groups is None or len(groups) != self.n_items:
                raise ValueError("group_weights need one group label per item")
            groups = np.asarray(groups)
            present = set(np.unique(groups).tolist())
            missing = sorted(present - set(group_weights))
            if missing:
                raise ValueError(f"mixture weights lack group(s) {missing}; given {dict(group_weights)}")
            members = [
                (np.flatnonzero(groups == g), float(w)) for g, w in group_weights.items() if g in present
            ]
            if any(w < 0 for _, w in members) or sum(w for _, w in members) <= 0:
                raise ValueError(
                    f"mixture weights must be >= 0 with a positive sum, got {dict(group_weights)}"
                )
            self.mixture = [(m, w) for m, w in members if w > 0]
        self.num_samples = math.ceil(self.total / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    def _epoch_order(self) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.epoch])
        if self.mixture is None:
            return rng.permutation(self.n_items)
        weights = np.array([w for _, w in self.mixture])
        counts = rng.multinomial(self.total, weights / weights.sum())
        picks = []
        for (members, _), k in zip(self.mixture, counts):
            reps = math.ceil(k / len(members)) if k else 0
            picks.append(
                np.concatenate([rng.permutation(members) for _ in range(reps)])[:k] if reps else members[:0]
            )
        return rng.permutation(np.concatenate(picks))

    def global_order(self) -> np.ndarray:
        """This epoch's items over all ranks, before padding and sharding (rank r takes ``[r::num_replicas]``).

        On the lazy path this evaluates the whole permutation (O(n), e.g. once for a resharded resume).
        """
        if self._lazy():
            return LazyPermutation(self.n_items, [self.seed, self.epoch])[np.arange(self.n_items)]
        return self._epoch_order()

    def _lazy(self) -> bool:
        return self.mixture is None and self.n_items > self.EXACT_PERMUTATION_MAX

    def __iter__(self) -> Iterator[int]:
        if not self.n_items:
            return iter(())
        if self._lazy():
            return self._iter_lazy()
        order = self._epoch_order()
        if order.size < self.total_size:  # pad so every rank gets the same number of items
            order = np.resize(order, self.total_size)
        return self._chunks(order[self.rank : self.total_size : self.num_replicas])

    def _chunks(self, mine: np.ndarray) -> Iterator[int]:
        for start in range(0, mine.size, self.CHUNK):
            yield from mine[start : start + self.CHUNK].tolist()

    def _iter_lazy(self) -> Iterator[int]:
        perm = LazyPermutation(self.n_items, [self.seed, self.epoch])
        positions = np.arange(self.rank, self.total_size, self.num_replicas, dtype=np.int64)
        for start in range(0, positions.size, self.CHUNK):
            # positions past n wrap to the start, as np.resize pads the exact order
            yield from perm[positions[start : start + self.CHUNK] % self.n_items].tolist()

    def __len__(self) -> int:
        return self.num_samples if self.n_items else 0


class EvalSampler(DistributedSampler):
    """Rank-aware sequential sampler: rank r gets a contiguous share, no padding, nothing dropped."""

    def __init__(self, dataset: Dataset, num_replicas: int = 1, rank: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        n = len(dataset)
        self.start = n * rank // num_replicas
        self.stop = n * (rank + 1) // num_replicas
        self.num_samples = self.stop - self.start
        self.total_size = n

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.stop))

    def __len__(self) -> int:
        return self.num_samples


def k_shot_rows(
    labels: np.ndarray, k: int, num_classes: int, seed: int = 0, label_names: Sequence[str] | None = None
) -> np.ndarray:
    """Positions of exactly `k` items per class (seeded); raises if a class has fewer than `k`."""
    if k < 1:
        raise ValueError(f"n_train_samples (k per class) must be >= 1, got {k}")
    rng = np.random.default_rng(seed)
    picked = []
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        if members.size < k:
            name = label_names[c] if label_names else c
            raise ValueError(
                f"k-shot: k={k} per class but class {name!r} has only {members.size} labelled "
                "training epochs; lower n_train_samples or raise train_data_pct"
            )
        picked.append(rng.choice(members, size=k, replace=False))
    return np.sort(np.concatenate(picked))


@dataclass(frozen=True)
class _RowKeys:
    """Per-row split, subject, recording and dataset codes of a store index, for the split bookkeeping.

    Integers, not strings: 20 M rows cost ~200 MB here instead of gigabytes of Python objects.
    """

    index: StoreIndex
    split: np.ndarray  # int8 [n_rows], code into index.split_names
    subject: np.ndarray  # int32 [n_rows], code into index.subject_names ("dataset/subject_id")
    recording: np.ndarray  # int32 [n_rows], code into index.recordings
    dataset: np.ndarray  # int32 [n_rows], code into index.dataset_names

    @classmethod
    def of(cls, index: StoreIndex) -> _RowKeys:
        return cls(
            index,
            index.per_row(index.rec_split),
            index.per_row(index.rec_subject),
            index.per_row(np.arange(len(index.recordings), dtype=np.int32)),
            index.per_row(index.rec_dataset),
        )

    def split_code(self, split: str) -> int:
        return int(np.flatnonzero(self.index.split_names == split)[0])

    def counts(self, rows: np.ndarray) -> dict[str, Any]:
        """Epochs, subjects, recordings and epochs per dataset of ``rows``."""
        names = self.index.dataset_names
        per_dataset = np.bincount(self.dataset[rows], minlength=len(names))
        return {
            "epochs": int(rows.size),
            "subjects": int(np.count_nonzero(np.bincount(self.subject[rows], minlength=len(self.index.subject_names)))),
            "recordings": int(np.count_nonzero(np.bincount(self.recording[rows], minlength=len(self.index.recordings)))),
            "epochs_per_dataset": {str(n): int(c) for n, c in zip(names, per_dataset) if c},
        }

    def subjects_kept(self, rows: np.ndarray, fraction: float, seed: int) -> np.ndarray:
        """Mask over ``rows``: the rows of a seeded ``fraction`` of their subjects (``subset_subjects``)."""
        codes = np.unique(self.subject[rows])
        keep = subset_subjects(self.index.subject_names[codes].tolist(), fraction, seed)
        kept_codes = codes[np.isin(self.index.subject_names[codes], list(keep))]
        return np.isin(self.subject[rows], kept_codes)


class SleepDataModule(pl.LightningDataModule):
    """Batches from an epoch store for pre-training (unlabelled) or a downstream task (one label).

    Splits come from the store's subject-level `split` column; datasets come from the task's cohort
    group (`pretrain`/`downstream`, plus `both`), optionally narrowed by `include_datasets`.
    Downstream epochs with an unknown label (-1) are excluded from every split and counted in
    `summary()`. `train_data_pct` keeps a seeded fraction of the training *subjects*;
    `n_train_samples` then keeps exactly that many epochs per class (k-shot). `channel_preset` zeroes
    the channels outside the preset at val/test time, and at train time too with `mask_train_channels`;
    `train_presets` (preset names or channel lists) instead shows each training epoch through one of them, drawn
    at random (one classifier for every montage). `mixture_weights` (dataset -> weight) makes training draw datasets with those probabilities.
    With `task="pretrain"` and an `eval_label`, batches carry that label with unknowns kept as -1
    (for online probes).
    """

    def __init__(
        self,
        data_dir: str | PathLike,
        task: str = "pretrain",
        eval_label: str | None = None,
        include_datasets: Sequence[str] | None = None,
        batch_size: int = 64,
        num_workers: int = 0,
        train_data_pct: float = 1.0,
        n_train_samples: int | None = None,
        channel_preset: str = "full",
        mask_train_channels: bool = False,
        seed: int = 0,
        mixture_weights: Mapping[str, float] | None = None,
        stage_classes: int = 4,
        pin_memory: bool = False,
        train_presets: Sequence[str] = (),
    ):
        super().__init__()
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        if task == "downstream" and eval_label is None:
            raise ValueError(
                "task='downstream' needs an eval_label, one of " + str(list(config.LABEL_COLUMNS))
            )
        if eval_label is not None and eval_label not in config.LABEL_COLUMNS:
            raise ValueError(f"unknown eval_label {eval_label!r}; choose one of {list(config.LABEL_COLUMNS)}")
        if stage_classes not in (4, 5):
            raise ValueError(f"stage_classes must be 4 or 5, got {stage_classes}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0.0 < train_data_pct <= 1.0:
            raise ValueError(f"train_data_pct must be in (0, 1], got {train_data_pct}")
        self.data_dir = data_dir
        self.task = task
        self.eval_label = eval_label
        self.include_datasets = None if include_datasets is None else list(include_datasets)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.train_data_pct = train_data_pct
        self.n_train_samples = n_train_samples
        self.channel_preset = channel_preset
        self.channel_set = ChannelSet.from_spec(channel_preset)
        self.keep_channels = self.channel_set.mask
        self.mask_train_channels = mask_train_channels
        if train_presets and mask_train_channels:
            raise ValueError("train_presets and mask_train_channels exclude each other: give one way to mask training")
        self.train_presets = tuple(train_presets)
        self.train_montages = np.stack([ChannelSet.from_spec(p).mask for p in train_presets]) if train_presets else None
        self.seed = seed
        self.mixture_weights = None if mixture_weights is None else dict(mixture_weights)
        self.stage_classes = stage_classes
        self.pin_memory = pin_memory
        self.label_names: tuple[str, ...] = ()
        if eval_label is not None:
            self.label_names = task_labels(np.zeros(0), eval_label, stage_classes)[1]
        self.datasets: dict[str, EpochDataset] = {}
        self._summary: dict[str, Any] = {}
        self.store: EpochStore | None = None

    @property
    def num_classes(self) -> int:
        """Number of classes of `eval_label` (0 without one)."""
        return len(self.label_names)

    @property
    def class_counts(self) -> np.ndarray:
        """Training epochs per class (int64 [num_classes]), e.g. for class weights."""
        if self.eval_label is None:
            raise ValueError(
                "class_counts needs an eval_label; this data module serves unlabelled pre-training"
            )
        self._require_setup()
        return np.array(self._summary["splits"]["train"]["class_counts_array"], dtype=np.int64)

    @property
    def train_dataset(self) -> EpochDataset:
        self._require_setup()
        return self.datasets["train"]

    @property
    def val_dataset(self) -> EpochDataset:
        self._require_setup()
        return self.datasets["val"]

    @property
    def test_dataset(self) -> EpochDataset:
        self._require_setup()
        return self.datasets["test"]

    def _require_setup(self) -> None:
        if not self.datasets:
            self.setup()

    def setup(self, stage: str | None = None) -> None:
        """Select rows and labels of every split (idempotent)."""
        if self.datasets:
            return
        store = self.store = self.store if self.store is not None else EpochStore(self.data_dir)
        keys = _RowKeys.of(store.rows)
        selected, used = self._select_rows(store, keys)
        labels_all = None
        if self.eval_label is not None:
            column = store.column(config.LABEL_COLUMNS[self.eval_label])
            labels_all, _ = task_labels(column, self.eval_label, self.stage_classes)
        summary = self._summary_header(used)
        for split in SPLITS:
            in_split = selected & (keys.split == keys.split_code(split))
            rows, labels, info = self._split_rows(split, np.flatnonzero(in_split), keys, labels_all)
            info.update(keys.counts(rows))
            keep = self.keep_channels if (split != "train" or self.mask_train_channels) else None
            montages = self.train_montages if split == "train" else None
            self.datasets[split] = EpochDataset(store, rows, labels, keep, montages)
            summary["splits"][split] = info
        if self.datasets["train"].rows.size == 0:
            raise ValueError(
                f"{self.data_dir}: no training epochs for task {self.task!r} on datasets {used} "
                f"(summary: {summary['splits']['train']})"
            )
        if self.mixture_weights is not None:
            self._check_mixture(used)
        self._summary = summary
        self._log_exclusions()

    def _select_rows(self, store: EpochStore, keys: _RowKeys) -> tuple[np.ndarray, list[str]]:
        """Rows of the task's cohort group (narrowed to ``include_datasets``) and the datasets they cover."""
        rec = store.rows.recordings  # decided per recording, then broadcast to the rows
        available = sorted(store.rows.dataset_names.tolist())
        named = self.include_datasets
        if named is not None:
            unknown = sorted(set(named) - set(available))
            if unknown:
                raise ValueError(f"{self.data_dir}: include_datasets {unknown} not in the store; it has {available}")
        chosen = in_cohort(rec["cohort_group"], self.task)
        if named is not None:
            chosen &= rec["dataset"].isin(named).to_numpy()
        used = sorted(rec.loc[chosen, "dataset"].unique())
        selected = store.rows.per_row(chosen)
        # A dataset the user asked for by name must not vanish quietly because of its cohort group.
        outside = sorted(set(named) - set(used)) if named is not None else []
        if outside:
            raise ValueError(
                f"{self.data_dir}: include_datasets {outside} do not serve task {self.task!r}: their cohort "
                f"group ({store.manifest.get('cohort_groups')}) excludes it; re-ingest them with "
                f"--cohort_group both (or {self.task}), or leave them out"
            )
        if not used:
            raise ValueError(
                f"{self.data_dir}: no datasets for task {self.task!r} (cohort groups "
                f"{store.manifest.get('cohort_groups')}, include_datasets={named})"
            )
        return selected, used

    def _summary_header(self, used: list[str]) -> dict[str, Any]:
        return {
            "store": str(self.data_dir),
            "task": self.task,
            "eval_label": self.eval_label,
            "label_names": list(self.label_names),
            "datasets": used,
            "channel_preset": self.channel_preset,
            "kept_channels": [c for c in config.CHANNELS if c in self.channel_set],
            "mask_train_channels": self.mask_train_channels,
            "train_presets": list(self.train_presets),
            "train_data_pct": self.train_data_pct,
            "n_train_samples": self.n_train_samples,
            "mixture_weights": self.mixture_weights,
            "splits": {},
        }

    def _split_rows(
        self, split: str, rows: np.ndarray, keys: _RowKeys, labels_all: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
        """One split's rows and labels after the training-subject fraction, unknown labels and k-shot."""
        info: dict[str, Any] = {"epochs_in_store": int(rows.size)}
        if split == "train" and self.train_data_pct < 1.0:
            rows = rows[keys.subjects_kept(rows, self.train_data_pct, self.seed)]
            info["epochs_after_train_data_pct"] = int(rows.size)
        if labels_all is None:
            return rows, None, info
        labels = labels_all[rows]
        if self.task == "downstream":
            known = labels >= 0
            info["excluded_unknown_label"] = int((~known).sum())
            rows, labels = rows[known], labels[known]
            if split == "train" and self.n_train_samples is not None:
                pick = k_shot_rows(labels, self.n_train_samples, self.num_classes, self.seed, self.label_names)
                rows, labels = rows[pick], labels[pick]
        counts = np.bincount(labels[labels >= 0], minlength=self.num_classes)
        info["class_counts"] = dict(zip(self.label_names, counts.tolist()))
        info["class_counts_array"] = counts.tolist()
        return rows, labels, info

    def _log_exclusions(self) -> None:
        for split, info in self._summary["splits"].items():
            if info.get("excluded_unknown_label"):
                log.info(
                    "%s split: %d epochs with unknown %s excluded (kept %d)",
                    split,
                    info["excluded_unknown_label"],
                    self.eval_label,
                    info["epochs"],
                )

    def _check_mixture(self, used: list[str]) -> None:
        unknown = sorted(set(self.mixture_weights) - set(used))
        missing = sorted(set(used) - set(self.mixture_weights))
        if unknown or missing:
            raise ValueError(
                f"mixture_weights must name exactly the datasets in use {used}: "
                f"unknown {unknown}, missing {missing}"
            )

    def summary(self) -> dict[str, Any]:
        """Counts per split (epochs, subjects, recordings, per class, unknown labels excluded), for logging."""
        self._require_setup()
        out = {k: v for k, v in self._summary.items() if k != "splits"}
        out["splits"] = {
            s: {k: v for k, v in info.items() if k != "class_counts_array"}
            for s, info in self._summary["splits"].items()
        }
        return out

    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is not None:
            return int(trainer.world_size), int(trainer.global_rank)
        if dist.is_available() and dist.is_initialized():
            return dist.get_world_size(), dist.get_rank()
        return 1, 0

    def _loader(self, dataset: EpochDataset, sampler: DistributedSampler, drop_last: bool) -> DataLoader:
        if self.num_workers > 0:
            freeze_before_fork()
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=drop_last,
            num_workers=self.num_workers,
            collate_fn=collate_epochs,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled (or mixture-weighted) training batches, this rank's share."""
        self._require_setup()
        world, rank = self._world()
        ds = self.datasets["train"]
        groups = weights = None
        if self.mixture_weights:  # by dataset code: no per-item strings
            names = ds.store.rows.dataset_names.tolist()
            groups = ds.dataset_codes()
            weights = {names.index(d): w for d, w in self.mixture_weights.items() if d in names}
        sampler = TrainSampler(ds, num_replicas=world, rank=rank, seed=self.seed, groups=groups, group_weights=weights)
        # A trailing batch smaller than batch_size upsets batch statistics; it is reshuffled next epoch.
        return self._loader(ds, sampler, drop_last=len(sampler) > self.batch_size)

    def eval_dataloader(self, split: str) -> DataLoader:
        """Sequential batches of `split` ("train"/"val"/"test"), this rank's contiguous share, nothing dropped."""
        self._require_setup()
        if split not in self.datasets:
            raise ValueError(f"unknown split {split!r}; choose one of {list(SPLITS)}")
        world, rank = self._world()
        ds = self.datasets[split]
        return self._loader(ds, EvalSampler(ds, num_replicas=world, rank=rank), drop_last=False)

    def val_dataloader(self) -> DataLoader:
        """Validation batches (sequential, never padded or dropped)."""
        return self.eval_dataloader("val")

    def test_dataloader(self) -> DataLoader:
        """Test batches (sequential, never padded or dropped)."""
        return self.eval_dataloader("test")

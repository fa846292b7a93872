"""SleepDataModule / EpochDataset: labels, exclusions, splits, k-shot, presets, mixture, workers, ranks."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

import config
from osf.datasets.datamodule import EvalSampler, SleepDataModule, TrainSampler
from osf.datasets.store import EpochStore, StoreWriter
from osf.testing import make_random_store, random_recording


@pytest.fixture(scope="module")
def two_dataset_store(tmp_path_factory):
    """Datasets "big" (pretrain only, 6 subjects) and "small" (both groups, 4 subjects); 12 epochs each."""
    rng = np.random.default_rng(1)
    w = StoreWriter(tmp_path_factory.mktemp("mix") / "store")
    for ds, n_subj in (("big", 6), ("small", 4)):
        for s in range(n_subj):
            w.write_recording(ds, f"{ds}-{s}", f"p{s}", 1, random_recording(12, rng), source={})
    return w.finalize(cohort_groups={"big": "pretrain"})


def _collect(loader):
    out = {"key": [], "label": [], "signal": [], "mask": []}
    for b in loader:
        out["key"] += [f"{r}:{e}" for r, e in zip(b["recording_id"], b["epoch_index"].tolist())]
        if "label" in b:
            out["label"].append(b["label"])
        out["signal"].append(b["signal"])
        out["mask"].append(b["channel_mask"])
    return out


def test_downstream_stage_labels_exclusions_and_batches(tiny_store):
    st = EpochStore(tiny_store)
    idx = st.index
    dm = SleepDataModule(tiny_store, task="downstream", eval_label="Stage", batch_size=7)
    dm.setup()
    assert dm.num_classes == 4 and dm.label_names == config.STAGE_NAMES_4
    summ = dm.summary()
    for split in ("train", "val", "test"):
        info = summ["splits"][split]
        in_store = int((idx["split"] == split).sum())
        unknown = int(((idx["split"] == split) & (idx["stage"] < 0)).sum())
        assert info["epochs_in_store"] == in_store and info["excluded_unknown_label"] == unknown
        assert info["epochs"] == in_store - unknown == sum(info["class_counts"].values())
    assert dm.class_counts.tolist() == list(summ["splits"]["train"]["class_counts"].values())

    # val/test: every labelled epoch exactly once, label = the stored stage mapped to 4 classes.
    got = _collect(dm.test_dataloader())
    expected = idx[(idx["split"] == "test") & (idx["stage"] >= 0)]
    assert sorted(got["key"]) == sorted(
        f"{r}:{e}" for r, e in zip(expected["recording_id"], expected["epoch_index"])
    )
    labels = torch.cat(got["label"]).numpy()
    stage_of = {f"{r}:{e}": s for r, e, s in zip(idx["recording_id"], idx["epoch_index"], idx["stage"])}
    assert [config.STAGE_5_TO_4[stage_of[k]] for k in got["key"]] == labels.tolist()

    b = next(iter(dm.train_dataloader()))
    assert set(b) == {"signal", "channel_mask", "label", "recording_id", "subject_id", "epoch_index"}
    assert b["signal"].dtype == torch.float32 and b["signal"].shape == (7, 12, 1920)
    assert b["channel_mask"].dtype == torch.bool and b["label"].dtype == torch.int64
    assert b["epoch_index"].dtype == torch.int64 and isinstance(b["subject_id"][0], str)
    rows = [
        int(idx.index[(idx["recording_id"] == r) & (idx["epoch_index"] == e)][0])
        for r, e in zip(b["recording_id"], b["epoch_index"].tolist())
    ]
    np.testing.assert_array_equal(b["signal"].numpy(), st.read(np.array(rows)))
    assert set(b["subject_id"]) <= set(idx.loc[idx["split"] == "train", "subject_id"])

    five = SleepDataModule(tiny_store, task="downstream", eval_label="Stage", stage_classes=5)
    five.setup()
    assert five.num_classes == 5 and five.class_counts.sum() == dm.class_counts.sum()
    assert five.class_counts[1] + five.class_counts[2] == dm.class_counts[1]


def test_event_task_is_binary(tiny_store):
    dm = SleepDataModule(tiny_store, task="downstream", eval_label="Arousal", batch_size=16)
    dm.setup()
    idx = EpochStore(tiny_store).index
    assert dm.num_classes == 2 and dm.label_names == ("No Arousal", "Arousal")
    assert dm.class_counts[1] == int(((idx["split"] == "train") & (idx["arousal"] == 1)).sum())


def test_channel_preset_masks_eval_and_optionally_train(tiny_store):
    keep = np.array([c in config.CHANNEL_PRESETS["cardio_respiratory"] for c in config.CHANNELS])
    dm = SleepDataModule(
        tiny_store, task="downstream", eval_label="Stage", batch_size=8, channel_preset="cardio_respiratory"
    )
    for b in dm.val_dataloader():
        assert not b["channel_mask"][:, ~keep].any() and b["signal"][:, ~keep].abs().sum() == 0
        assert b["signal"][:, keep].abs().sum() > 0
    b = next(iter(dm.train_dataloader()))
    assert b["channel_mask"][:, ~keep].any()  # training sees the full montage by default
    dm2 = SleepDataModule(
        tiny_store,
        task="downstream",
        eval_label="Stage",
        batch_size=8,
        channel_preset="cardio_respiratory",
        mask_train_channels=True,
    )
    b = next(iter(dm2.train_dataloader()))
    assert not b["channel_mask"][:, ~keep].any() and b["signal"][:, ~keep].abs().sum() == 0
    with pytest.raises(ValueError, match="unknown channel"):
        SleepDataModule(tiny_store, channel_preset="ECG,EEG_Fz")


def test_train_data_pct_by_subject_and_k_shot(tmp_path):
    root = make_random_store(tmp_path / "s", n_subjects=20, n_epochs=20, seed=2)
    full = SleepDataModule(root, task="downstream", eval_label="Stage")
    half = SleepDataModule(root, task="downstream", eval_label="Stage", train_data_pct=0.5)
    full.setup(), half.setup()
    n_full = full.summary()["splits"]["train"]["subjects"]
    subj_half = set(half.train_dataset.subject_keys())
    assert len(subj_half) == round(0.5 * n_full) and subj_half < set(full.train_dataset.subject_keys())
    assert half.summary()["splits"]["val"] == full.summary()["splits"]["val"]  # eval splits untouched

    k = SleepDataModule(root, task="downstream", eval_label="Stage", n_train_samples=5, seed=3)
    k.setup()
    assert k.class_counts.tolist() == [5, 5, 5, 5] and len(k.train_dataset) == 20
    again = SleepDataModule(root, task="downstream", eval_label="Stage", n_train_samples=5, seed=3)
    other = SleepDataModule(root, task="downstream", eval_label="Stage", n_train_samples=5, seed=4)
    np.testing.assert_array_equal(again.train_dataset.rows, k.train_dataset.rows)
    assert not np.array_equal(other.train_dataset.rows, k.train_dataset.rows)
    assert set(k.train_dataset.rows) <= set(full.train_dataset.rows)
    too_many = int(full.class_counts.min()) + 1
    with pytest.raises(ValueError, match=f"k={too_many} per class but class .* has only"):
        SleepDataModule(root, task="downstream", eval_label="Stage", n_train_samples=too_many).setup()


def test_pretrain_cohorts_and_mixture_weights(two_dataset_store):
    down = SleepDataModule(two_dataset_store, task="downstream", eval_label="Stage")
    down.setup()
    assert down.summary()["datasets"] == ["small"]  # "big" is pretrain-only
    pre = SleepDataModule(
        two_dataset_store, task="pretrain", batch_size=10, mixture_weights={"big": 1, "small": 3}
    )
    pre.setup()
    assert pre.summary()["datasets"] == ["big", "small"]
    train = pre.train_dataset
    per_ds = {d: int((train.dataset_names() == d).sum()) for d in ("big", "small")}
    sampler = pre.train_dataloader().sampler
    draws = []
    for epoch in range(30):
        sampler.set_epoch(epoch)
        draws.append(train.dataset_names()[np.fromiter(iter(sampler), dtype=np.int64)])
    draws = np.concatenate(draws)
    # Weights pick datasets 1:3 although "big" has more training epochs than "small".
    assert per_ds["big"] > per_ds["small"]
    assert abs((draws == "small").mean() - 0.75) < 0.05
    b = next(iter(pre.train_dataloader()))
    assert "label" not in b
    with pytest.raises(ValueError, match="missing \\['small'\\]"):
        SleepDataModule(two_dataset_store, mixture_weights={"big": 1}).setup()
    with pytest.raises(ValueError, match="include_datasets \\['nope'\\]"):
        SleepDataModule(two_dataset_store, include_datasets=["nope"]).setup()
    with pytest.raises(ValueError, match="include_datasets \\['big'\\] do not serve task 'downstream'"):
        SleepDataModule(two_dataset_store, task="downstream", eval_label="Stage", include_datasets=["big", "small"]).setup()
    only = SleepDataModule(two_dataset_store, include_datasets=["small"], eval_label="Stage")
    only.setup()
    assert set(only.train_dataset.dataset_names()) == {"small"}
    lab = next(iter(only.eval_dataloader("train")))["label"]
    assert lab.dtype == torch.int64  # pretrain + eval_label keeps labels (unknowns as -1) for online probes


def test_workers_deliver_the_same_batches(tiny_store):
    dm0 = SleepDataModule(tiny_store, task="downstream", eval_label="Stage", batch_size=16, num_workers=0)
    dm2 = SleepDataModule(tiny_store, task="downstream", eval_label="Stage", batch_size=16, num_workers=2)
    a, b = _collect(dm0.val_dataloader()), _collect(dm2.val_dataloader())
    assert a["key"] == b["key"]
    torch.testing.assert_close(torch.cat(a["signal"]), torch.cat(b["signal"]))
    ta, tb = _collect(dm0.train_dataloader()), _collect(dm2.train_dataloader())
    assert ta["key"] == tb["key"]  # same seeded order regardless of workers


def test_rank_shards_cover_everything_once(tiny_store):
    keys, train_items = {}, {}
    for rank in range(3):
        dm = SleepDataModule(tiny_store, task="downstream", eval_label="Stage", batch_size=5)
        dm.trainer = SimpleNamespace(world_size=3, global_rank=rank)
        keys[rank] = _collect(dm.val_dataloader())["key"]
        loader = dm.train_dataloader()
        train_items[rank] = list(loader.sampler)
        assert all(len(b["label"]) == 5 for b in loader)  # the short trailing batch is dropped in training
    all_val = keys[0] + keys[1] + keys[2]
    assert len(all_val) == len(set(all_val)) == dm.summary()["splits"]["val"]["epochs"]
    assert max(map(len, keys.values())) - min(map(len, keys.values())) <= 1
    # Train shards: equal length, together covering the train split (padded by < world_size items).
    n_train = dm.summary()["splits"]["train"]["epochs"]
    assert len({len(v) for v in train_items.values()}) == 1
    assert set().union(*map(set, train_items.values())) == set(range(n_train))
    assert n_train <= sum(map(len, train_items.values())) < n_train + 3


def test_samplers_direct():
    ds = list(range(10))
    shards = [list(EvalSampler(ds, num_replicas=3, rank=r)) for r in range(3)]
    assert [i for s in shards for i in s] == ds and [len(s) for s in shards] == [3, 3, 4]
    s = TrainSampler(ds, num_replicas=2, rank=0, seed=1)
    t = TrainSampler(ds, num_replicas=2, rank=1, seed=1)
    assert sorted(list(s) + list(t)) == ds
    first = list(s)
    s.set_epoch(1)
    assert list(s) != first


class _RecordingModule(__import__("pytorch_lightning").LightningModule):
    """Writes the epoch keys each rank sees, to check DDP sharding end to end."""

    def __init__(self, out_dir):
        super().__init__()
        self.out_dir = out_dir
        self.lin = torch.nn.Linear(12, 4)

    def _dump(self, batch, stage):
        keys = [f"{r}:{e}" for r, e in zip(batch["recording_id"], batch["epoch_index"].tolist())]
        with open(self.out_dir / f"{stage}_{self.global_rank}.txt", "a") as f:
            f.write("\n".join(keys) + "\n")

    def training_step(self, batch, _):
        self._dump(batch, "train")
        assert isinstance(self.trainer.train_dataloader.sampler, TrainSampler)  # Lightning kept our sampler
        return torch.nn.functional.cross_entropy(self.lin(batch["signal"].mean(-1)), batch["label"])

    def validation_step(self, batch, _):
        self._dump(batch, "val")

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_lightning_ddp_two_ranks_each_val_epoch_once(tiny_store, tmp_path):
    import pytorch_lightning as pl

    dm = SleepDataModule(tiny_store, task="downstream", eval_label="Stage", batch_size=8)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp_fork",
        max_epochs=1,
        limit_train_batches=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(_RecordingModule(tmp_path), datamodule=dm)
    val = [(tmp_path / f"val_{r}.txt").read_text().split() for r in range(2)]
    assert val[0] and val[1] and not set(val[0]) & set(val[1])
    dm.setup()
    assert (
        len(val[0]) + len(val[1]) == len(set(val[0]) | set(val[1])) == dm.summary()["splits"]["val"]["epochs"]
    )
    train = [set((tmp_path / f"train_{r}.txt").read_text().split()) for r in range(2)]
    assert len(train[0]) == len(train[1]) == 24 and not train[0] & train[1]

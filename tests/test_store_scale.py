"""The store at NSRR scale, checked small: bounded file handles, codes instead of strings, lazy sampler
shards, format-1 stores still open and upgrade in place."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from osf.datasets.datamodule import SleepDataModule, TrainSampler
from osf.datasets.manifest import RecordingMeta
from osf.datasets.permutation import LazyPermutation
from osf.datasets.store import EpochStore, upgrade_store
from osf.datasets.store_index import INDEX_DIR
from osf.testing import make_random_store

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def many_files(tmp_path_factory) -> Path:
    """A store of 60 recordings (more files than the handle limit of the subprocess below)."""
    return make_random_store(tmp_path_factory.mktemp("many") / "s", n_subjects=60, n_epochs=3, seed=5)


def _run(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          check=False, timeout=300)


def test_reads_hold_a_bounded_number_of_handles_under_a_tiny_fd_limit(many_files):
    """Under RLIMIT_NOFILE = highest fd now + 12, every row of 60 files reads in random batches with at most 8 handles
    held, and the same reads match a fresh store's; a map per file (the old reader) dies of EMFILE there."""
    out = _run(f"""
        import os, resource, numpy as np
        from osf.datasets.store import EpochStore
        st = EpochStore({str(many_files)!r}, max_open_files=8)  # its mapped index columns hold a handle each
        ref = st.read(np.arange(len(st)))
        st.reader.close()
        base = len(os.listdir('/proc/self/fd'))
        top = max(int(fd) for fd in os.listdir('/proc/self/fd')) + 1  # the limit bounds fd numbers
        resource.setrlimit(resource.RLIMIT_NOFILE, (top + 12, top + 12))
        rng = np.random.default_rng(0)
        peak = 0
        for _ in range(20):
            rows = rng.choice(len(st), 32, replace=False)
            np.testing.assert_array_equal(st.read(rows), ref[rows])
            peak = max(peak, st.reader.open_files, len(os.listdir('/proc/self/fd')) - base)
        print('peak', peak)
        maps = []
        try:
            for p in st.rows.paths:
                maps.append(np.load(os.path.join({str(many_files)!r}, p), mmap_mode='r'))
            print('maps ok')
        except OSError as err:
            print('maps failed', err.errno)
    """)
    assert out.returncode == 0, out.stderr
    peak = int(out.stdout.split("peak ")[1].split()[0])
    assert 1 <= peak <= 8
    assert "maps failed 24" in out.stdout  # EMFILE: what the per-file maps did


def test_codes_round_trip_to_names(many_files):
    st = EpochStore(many_files)
    frame = pd.read_parquet(many_files / "index.parquet")
    rows = np.random.default_rng(1).choice(len(st), 50)
    for col in ("recording_id", "subject_id", "dataset", "split"):
        assert st.rows.names(col, rows) == frame[col].astype(str).to_numpy()[rows].tolist()
    subject = st.rows.subject_names[st.rows.per_row(st.rows.rec_subject)]
    assert (subject == (frame["dataset"].astype(str) + "/" + frame["subject_id"].astype(str)).to_numpy()).all()
    assert (st.rows.dataset_names[st.rows.per_row(st.rows.rec_dataset)] == frame["dataset"].astype(str)).all()
    for col in ("stage", "channel_mask", "epoch_index", "clipped_frac"):
        np.testing.assert_array_equal(st.column(col), frame[col].to_numpy())
        assert isinstance(st.column(col), np.memmap)
    back = st.index  # the per-row DataFrame, rebuilt from the codes, equals the portable file
    for col in frame.columns:
        assert (back[col].astype(str).to_numpy() == frame[col].astype(str).to_numpy()).all(), col


@pytest.mark.parametrize(("n", "world"), [(1003, 4), (64, 64), (5, 8), (1, 3)])
def test_lazy_sampler_shards_partition_the_rows(n, world, monkeypatch):
    monkeypatch.setattr(TrainSampler, "EXACT_PERMUTATION_MAX", 0)  # force the lazy order at this size
    ds = list(range(n))
    shards = [list(TrainSampler(ds, num_replicas=world, rank=r, seed=7)) for r in range(world)]
    assert len({len(s) for s in shards}) == 1 and len(shards[0]) == -(-n // world)
    drawn = sorted(i for s in shards for i in s)
    assert set(drawn) == set(range(n))
    assert len(drawn) - n == len(shards[0]) * world - n  # only the padding repeats
    order = TrainSampler(ds, num_replicas=world, rank=0, seed=7).global_order()  # what a resharded resume deals
    assert sorted(order.tolist()) == list(range(n))
    assert np.resize(order, len(shards[0]) * world)[1 % world :: world].tolist() == shards[1 % world]
    first = shards[0]
    sampler = TrainSampler(ds, num_replicas=world, rank=0, seed=7)
    assert list(sampler) == first  # deterministic
    sampler.set_epoch(1)
    if n > world:
        assert list(sampler) != first  # a new order each epoch


def test_exact_sampler_order_is_unchanged_below_the_threshold():
    ds = list(range(1000))
    rng = np.random.default_rng([3, 0])
    order = rng.permutation(1000)
    assert list(TrainSampler(ds, num_replicas=2, rank=1, seed=3)) == order[1::2].tolist()


def test_lazy_permutation_is_a_bijection_and_looks_shuffled():
    n = 100_000
    perm = LazyPermutation(n, [0, 0])[np.arange(n)]
    assert np.array_equal(np.sort(perm), np.arange(n))
    # neighbours land far apart: no block structure left
    assert np.median(np.abs(np.diff(perm))) > n / 10
    assert abs(np.corrcoef(np.arange(n), perm)[0, 1]) < 0.02


def _downgrade_to_format_1(root: Path) -> None:
    """Rewrite a store as the code before format 2 left it: index.parquet and the manifest's recordings list."""
    st = EpochStore(root)
    frame = pd.read_parquet(root / "index.parquet")
    for col in ("dataset", "recording_id", "subject_id", "split", "cohort_group", "path"):
        frame[col] = frame[col].astype(str)
    frame.to_parquet(root / "index.parquet")
    manifest = json.loads((root / "manifest.json").read_text())
    recs = st.recordings
    manifest["recordings"] = [{k: recs[k][i] for k in RecordingMeta.MANIFEST_KEYS} for i in range(len(recs))]
    manifest["recordings"] = json.loads(json.dumps(manifest["recordings"], default=lambda o: o.item()))
    manifest["format_version"] = 1
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2))
    shutil.rmtree(root / INDEX_DIR)


def _setup(root: Path) -> dict:
    dm = SleepDataModule(root, task="downstream", eval_label="Stage", batch_size=8, seed=2, train_data_pct=0.5)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    return {"rows": {s: dm.datasets[s].rows.tolist() for s in ("train", "val", "test")},
            "summary": {k: v for k, v in dm.summary().items() if k != "store"},
            "signal": batch["signal"].numpy(), "ids": batch["recording_id"], "subjects": batch["subject_id"]}


def test_format_1_store_opens_and_upgrades_in_place(tmp_path, capsys):
    root = make_random_store(tmp_path / "s", n_subjects=8, n_epochs=6, seed=3)
    new = _setup(root)
    _downgrade_to_format_1(root)
    assert not (root / INDEX_DIR).exists()
    old = _setup(root)  # opens as it is, index in memory
    assert old["rows"] == new["rows"] and old["summary"] == new["summary"] and old["ids"] == new["ids"]
    np.testing.assert_array_equal(old["signal"], new["signal"])
    assert EpochStore(root).recordings["qc"].notna().all()

    from main_pipelines import main_preprocess

    assert main_preprocess.main(["--upgrade_store", "--output_dir", str(root)]) == 0
    assert "upgraded to store format 2" in capsys.readouterr().out
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["format_version"] == 2 and "recordings" not in manifest
    upgraded = _setup(root)
    assert upgraded["rows"] == new["rows"] and upgraded["summary"] == new["summary"]
    np.testing.assert_array_equal(upgraded["signal"], new["signal"])
    assert upgrade_store(root) is False  # nothing left to do


def test_format_2_store_without_its_index_is_refused_naming_the_upgrade(tmp_path):
    root = make_random_store(tmp_path / "s", n_subjects=2, n_epochs=2, seed=0)
    shutil.rmtree(root / INDEX_DIR)
    with pytest.raises(ValueError) as err:
        EpochStore(root)
    message = str(err.value)
    assert "\n" not in message and str(root) in message and "main_preprocess.py --upgrade_store" in message


def test_truncated_array_is_refused_naming_the_file(tmp_path):
    root = make_random_store(tmp_path / "s", n_subjects=2, n_epochs=4, seed=0)
    st = EpochStore(root)
    victim = root / st.rows.paths[0]
    with open(victim, "r+b") as fh:
        fh.truncate(victim.stat().st_size - 100)
    with pytest.raises(ValueError, match=f"{victim.name}: truncated"):
        EpochStore(root).read(np.array([0]))


def test_pickled_dataset_in_workers_gives_the_same_batches(tmp_path):
    root = make_random_store(tmp_path / "s", n_subjects=4, n_epochs=8, seed=1)
    batches = {}
    for workers in (0, 2):
        dm = SleepDataModule(root, task="pretrain", batch_size=4, num_workers=workers, seed=0)
        dm.setup()
        batches[workers] = [(b["signal"].numpy(), b["recording_id"]) for b in dm.eval_dataloader("train")]
    assert len(batches[0]) == len(batches[2])
    for (a, ida), (b, idb) in zip(batches[0], batches[2]):
        np.testing.assert_array_equal(a, b)
        assert ida == idb
    assert len(pickle.dumps(dm.datasets["train"])) < 50_000  # no index copy travels to the workers


# --- downstream at scale, small ---------------------------------------------------------------------
def _probe_data(n=1200, d=16, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = (rng.normal(size=(n, d)) + y[:, None] * 0.5).astype(np.float32)
    return x, y


def test_probe_reads_memory_mapped_features_and_caps_the_rows_it_sees(tmp_path):
    from osf.downstream.epoch.linear_probe import predict_proba, train_linear_probe

    x, y = _probe_data()
    vx, vy = _probe_data(300, seed=1)
    np.save(tmp_path / "x.npy", x)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    kw = dict(max_steps=40, batch_size=64, eval_every=10, seed=2)
    in_memory = train_linear_probe(x, y, vx, vy, 3, **kw)
    from_map = train_linear_probe(mapped, y, vx, vy, 3, **kw)  # 40 * 64 > 1200 rows: every row, as before
    assert torch_equal(in_memory.head, from_map.head)
    np.testing.assert_array_equal(predict_proba(in_memory.head, vx), predict_proba(from_map.head, np.asarray(vx)))
    # capped: exactly the probe on the seeded subsample of labelled rows
    capped = train_linear_probe(mapped, y, vx, vy, 3, **kw, max_train_rows=500)
    rows = np.sort(np.random.default_rng(2).choice(np.arange(1200), 500, replace=False))
    explicit = train_linear_probe(x[rows], y[rows], vx, vy, 3, **kw)
    assert torch_equal(capped.head, explicit.head)


def torch_equal(a, b) -> bool:
    return all(np.array_equal(p.detach().numpy(), q.detach().numpy()) for p, q in zip(a.parameters(), b.parameters()))


def test_split_hash_comes_from_codes_not_per_row_strings(tmp_path, monkeypatch):
    from osf.downstream.inputs import dataset_split_hash

    root = make_random_store(tmp_path / "s", n_subjects=6, n_epochs=10, seed=4)
    dm = SleepDataModule(root, task="downstream", eval_label="Stage", seed=0)
    dm.setup()
    monkeypatch.setattr(EpochStore, "index", property(lambda self: pytest.fail("built the per-row index")))
    hashes = {s: dataset_split_hash(dm, s) for s in ("train", "val", "test")}
    assert len(set(hashes.values())) == 3
    assert dataset_split_hash(dm, "train", with_labels=False) != hashes["train"]
    again = SleepDataModule(root, task="downstream", eval_label="Stage", seed=0)
    again.setup()
    assert dataset_split_hash(again, "train") == hashes["train"]  # same store, same epochs: same hash
    other = SleepDataModule(root, task="downstream", eval_label="Arousal", seed=0)
    other.setup()
    assert dataset_split_hash(other, "train") != hashes["train"]  # other labels

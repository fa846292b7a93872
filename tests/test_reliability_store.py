"""Concurrent writers on one store: the lock, stale files of killed runs, file permissions."""

from __future__ import annotations

import json
import multiprocessing
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from osf.datasets.store import HOLDERS_DIR, EpochStore, StoreLockedError, lock_holders, store_lock

REPO = Path(__file__).resolve().parents[1]
from main_pipelines import main_preprocess

CTX = multiprocessing.get_context("fork")


@pytest.fixture()
def night_dir(write_test_edf, tmp_path: Path) -> Path:
    d = tmp_path / "in"
    for i, name in enumerate(("a1", "a2")):
        rng = np.random.default_rng(i)
        write_test_edf(d / f"{name}.edf", {"C4-M1": (rng.standard_normal(90 * 128), 128)})
        (d / f"{name}.csv").write_text("onset,duration,description\n0,30,Sleep stage W\n30,60,Sleep stage 2\n")
    return d


def _argv(night_dir: Path, store: Path, *extra: str) -> list[str]:
    return ["--dataset", "generic", "--input_dir", str(night_dir), "--output_dir", str(store), "--no-progress", *extra]


def _hold_lock(store: Path, ready, release, shared: bool = False) -> None:
    with store_lock(store, shared=shared, what="main_preprocess.py --dataset shhs (test holder)"):
        ready.set()
        release.wait(30)


def test_a_second_writer_is_refused_naming_the_holder(night_dir: Path, tmp_path: Path, capsys) -> None:
    store = tmp_path / "store"
    ready, release = CTX.Event(), CTX.Event()
    holder = CTX.Process(target=_hold_lock, args=(store, ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        assert main_preprocess.main(_argv(night_dir, store)) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"error: {store}: cannot write the store")
        assert f"pid {holder.pid} on" in err and "--dataset shhs (test holder)" in err
        assert not (store / "signals").exists() and not (store / "index.parquet").exists()  # nothing written
        with pytest.raises(StoreLockedError), store_lock(store, shared=True):  # nor can a shard join it
            pass
    finally:
        release.set()
        holder.join(30)
    assert main_preprocess.main(_argv(night_dir, store)) == 0
    assert lock_holders(store) == []  # every holder removed its record


def test_a_killed_writer_never_leaves_the_store_locked(night_dir: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"

    def die_holding_the_lock() -> None:
        with store_lock(store):
            os._exit(9)  # like SIGKILL: no cleanup runs

    child = CTX.Process(target=die_holding_the_lock)
    child.start()
    child.join(30)
    assert child.exitcode == 9
    assert len(list((store / HOLDERS_DIR).glob("*.json"))) == 1  # its record is left behind ...
    assert lock_holders(store) == []  # ... but recognised as dead and dropped
    assert main_preprocess.main(_argv(night_dir, store)) == 0


def test_stale_temp_files_of_killed_runs_are_removed_by_the_next_run(night_dir: Path, tmp_path: Path, capsys) -> None:
    store = tmp_path / "store"
    assert main_preprocess.main(_argv(night_dir, store)) == 0
    folder = store / "signals" / "generic"
    stale = [
        folder / ".a3.npy.k2j4x9.tmp.npy",  # array temp of a run killed mid-write
        folder / ".a3.parquet.1234.tmp",  # sidecar temp (older naming)
        folder / "a3.npy",  # orphan array: killed between array and sidecar
        store / ".index.parquet.abcd.tmp",  # index temp of a killed finalize
    ]
    for f in stale:
        f.write_bytes(b"partial")
    before = {p: p.read_bytes() for p in folder.glob("a[12].*")}
    index_before = EpochStore(store).index

    assert main_preprocess.main(_argv(night_dir, store)) == 0
    assert "removed 4 stale temporary files" in capsys.readouterr().err
    assert not any(f.exists() for f in stale)
    assert {p: p.read_bytes() for p in folder.glob("a[12].*")} == before  # finished recordings untouched
    assert EpochStore(store).index.equals(index_before)


def test_every_store_file_gets_the_same_permissions(night_dir: Path, tmp_path: Path) -> None:
    umask = os.umask(0o022)
    os.umask(umask)
    expected = 0o666 & ~umask
    store = tmp_path / "store"
    (night_dir / "broken.edf").write_text("not an edf\n" * 40)  # so that failures.jsonl exists
    assert main_preprocess.main(_argv(night_dir, store)) == 1
    assert main_preprocess.main(_argv(night_dir, tmp_path / "sharded", "--shard", "0/1")) == 1
    files = [p for root in (store, tmp_path / "sharded") for p in root.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"a1.npy", "a1.parquet", "index.parquet", "manifest.json", "failures.jsonl", "0-of-1.json"} <= names
    modes = {p.relative_to(tmp_path).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in files}
    assert set(modes.values()) == {expected}, modes


def test_cohort_groups_of_runs_on_different_datasets_accumulate(night_dir: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    assert main_preprocess.main(_argv(night_dir, store, "--cohort_group", "pretrain")) == 0
    edf = night_dir / "shhs1-200001.edf"  # the SHHS naming
    edf.write_bytes((night_dir / "a1.edf").read_bytes())
    assert main_preprocess.main(["--dataset", "shhs", "--edf", str(edf), "--annotations",
                                 str(night_dir / "a1.csv"), "--output_dir", str(store), "--no-progress",
                                 "--cohort_group", "downstream"]) == 0
    manifest = json.loads((store / "manifest.json").read_text())
    assert manifest["cohort_groups"] == {"generic": "pretrain", "shhs": "downstream"}


def _ingest_in_child(argv: list[str], started, go) -> None:
    started.set()
    go.wait(30)
    os._exit(main_preprocess.main(argv))


def test_two_cohorts_ingested_into_one_store_at_once_both_land(night_dir: Path, write_test_edf, tmp_path: Path) -> None:
    """Per-cohort jobs in parallel: recordings are separate files; only the index update is serialised."""
    nch = tmp_path / "nch" / "sleep_data"
    for i, name in enumerate(("101_1", "102_1")):
        rng = np.random.default_rng(10 + i)
        write_test_edf(nch / f"{name}.edf", {"C4-M1": (rng.standard_normal(90 * 128), 128)})
        (nch / f"{name}.tsv").write_text("onset\tduration\tdescription\n0\t30\tSleep stage W\n30\t60\tSleep stage 2\n")
    store = tmp_path / "store"
    argvs = [_argv(night_dir, store), ["--dataset", "nchsdb", "--input_dir", str(nch.parent), "--output_dir", str(store),
                                       "--no-progress", "--cohort_group", "downstream"]]
    go = CTX.Event()
    children = []
    for argv in argvs:
        started = CTX.Event()
        child = CTX.Process(target=_ingest_in_child, args=(argv, started, go))
        child.start()
        assert started.wait(30)
        children.append(child)
    go.set()  # both start writing at once
    for child in children:
        child.join(120)
    assert [c.exitcode for c in children] == [0, 0]
    index = EpochStore(store).index
    assert sorted(index["recording_id"].unique()) == ["101_1", "102_1", "a1", "a2"]
    assert json.loads((store / "manifest.json").read_text())["cohort_groups"]["nchsdb"] == "downstream"
    assert lock_holders(store) == []

    # While one run writes (shared lock held), another cohort's run still lands; --overwrite is refused.
    ready, release = CTX.Event(), CTX.Event()
    holder = CTX.Process(target=_hold_lock, args=(store, ready, release, True))
    holder.start()
    try:
        assert ready.wait(30)
        assert main_preprocess.main(_argv(night_dir, store)) == 0
        assert main_preprocess.main(_argv(night_dir, store, "--overwrite")) == 2
    finally:
        release.set()
        holder.join(30)


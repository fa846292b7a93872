"""Sharded ingestion: N processes write one store at once, --finalize builds the same index as one run."""

from __future__ import annotations

import json
import multiprocessing
import os
import shlex
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from osf.datasets.ingest import finalize_store
from osf.datasets.io.errors import IngestionError
from osf.datasets.store import EpochStore, StoreLockedError, shard_of, store_lock

REPO = Path(__file__).resolve().parents[1]
from main_pipelines import main_preprocess

NIGHTS = ("n01", "n02", "n03", "n04", "n05", "n06")


@pytest.fixture()
def nights(write_test_edf, tmp_path: Path) -> Path:
    """Six 90 s generic nights with CSV stages."""
    d = tmp_path / "in"
    for i, name in enumerate(NIGHTS):
        rng = np.random.default_rng(i)
        t = np.arange(90 * 128) / 128
        write_test_edf(d / f"{name}.edf", {"C4-M1": (np.sin(2 * np.pi * 2 * t) + 0.3 * rng.standard_normal(t.size), 128),
                                           "ECG": (rng.standard_normal(90 * 256), 256)})
        rows = [f"{30 * e},30,Sleep stage {s}" for e, s in enumerate(rng.choice(["W", "1", "2", "R"], 3))]
        (d / f"{name}.csv").write_text("onset,duration,description\n" + "\n".join(rows) + "\n")
    return d


def _run_cli(argv: list[str]) -> int:
    return main_preprocess.main(argv)


def _index(store: Path) -> pd.DataFrame:
    return EpochStore(store).index.sort_values(["dataset", "recording_id", "epoch_index"]).reset_index(drop=True)


def test_shards_partition_recordings_stably() -> None:
    ids = [f"rec{i:04d}" for i in range(400)]
    shards = [shard_of("shhs", rid, 4) for rid in ids]
    assert shards == [shard_of("shhs", rid, 4) for rid in ids]  # deterministic
    assert set(shards) == {0, 1, 2, 3}
    assert min(np.bincount(shards)) > 70  # roughly even
    assert shard_of("shhs", "rec0001", 4) == 1  # fixed across machines and Python runs (sha256, not hash())


def test_two_shards_at_once_then_finalize_equal_one_unsharded_run(nights: Path, tmp_path: Path) -> None:
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    base = ["--dataset", "generic", "--input_dir", str(nights), "--no-progress"]
    assert _run_cli([*base, "--output_dir", str(single), "--cohort_group", "pretrain"]) == 0

    ctx = multiprocessing.get_context("fork")  # two real processes, each taking the shared lock
    procs = [ctx.Process(target=_run_cli, args=([*base, "--output_dir", str(sharded), "--shard", f"{k}/2",
                                                  "--cohort_group", "pretrain"],)) for k in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert not (sharded / "index.parquet").exists()  # shards never write the index
    markers = sorted((sharded / "shards" / "generic").glob("*.json"))
    assert [m.name for m in markers] == ["0-of-2.json", "1-of-2.json"]
    written = sum(json.loads(m.read_text())["written"] for m in markers)
    assert written == len(NIGHTS)

    assert _run_cli(["--finalize", "--output_dir", str(sharded)]) == 0
    pd.testing.assert_frame_equal(_index(sharded), _index(single))
    manifest = json.loads((sharded / "manifest.json").read_text())
    assert manifest["cohort_groups"] == {"generic": "pretrain"}
    for rid in NIGHTS:  # the arrays are the same bytes
        a = np.load(single / "signals" / "generic" / f"{rid}.npy")
        b = np.load(sharded / "signals" / "generic" / f"{rid}.npy")
        np.testing.assert_array_equal(a, b)


def test_finalize_reports_missing_and_running_shards(nights: Path, tmp_path: Path, capsys) -> None:
    store = tmp_path / "store"
    base = ["--dataset", "generic", "--input_dir", str(nights), "--output_dir", str(store), "--no-progress"]
    assert _run_cli([*base, "--shard", "1/3"]) == 0
    assert _run_cli(["--finalize", "--output_dir", str(store)]) == 2
    err = capsys.readouterr().err
    assert "shards still missing" in err and "generic: 0/3, 2/3" in err
    assert not (store / "index.parquet").exists()

    # A shard still running (it holds the shared lock): finalize and unsharded runs are refused, naming it.
    with store_lock(store, shared=True, what="main_preprocess.py --shard 0/3"):
        assert _run_cli([*base, "--shard", "2/3"]) == 0  # another shard may run alongside
        with pytest.raises(StoreLockedError, match=rf"pid {os.getpid()} on .*--shard 0/3"):
            finalize_store(store)
        # A run that writes recordings shares the store with running shards (issue 29): it lands too.
        assert _run_cli(base) == 0
    assert _run_cli([*base, "--shard", "0/3"]) == 0
    assert _run_cli(["--finalize", "--output_dir", str(store)]) == 0
    assert sorted(EpochStore(store).index["recording_id"].unique()) == list(NIGHTS)


def test_finalize_needs_a_store(tmp_path: Path) -> None:
    with pytest.raises(IngestionError, match="not an epoch store"):
        finalize_store(tmp_path / "nothing")


def test_bad_shard_flags_are_refused(tmp_path: Path, capsys) -> None:
    for shard in ("3/3", "x/2", "-1/2"):
        with pytest.raises(SystemExit):
            main_preprocess.main(["--dataset", "generic", "--input_dir", str(tmp_path), "--output_dir",
                                  str(tmp_path / "s"), "--shard", shard])
        assert "K/N" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main_preprocess.main(["--finalize", "--dataset", "shhs", "--output_dir", str(tmp_path)])


def test_slurm_script_runs_one_shard_per_array_task(tmp_path: Path) -> None:
    shims = tmp_path / "bin"
    shims.mkdir()
    record = tmp_path / "argv.txt"
    (shims / "python").write_text(f'#!/usr/bin/env bash\nprintf "%q " "$@" > {record}\n')
    (shims / "python").chmod(0o755)
    env = {**os.environ, "PATH": f"{shims}:{os.environ['PATH']}", "SLURM_SUBMIT_DIR": str(REPO),
           "SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "2", "SLURM_ARRAY_TASK_COUNT": "8",
           "SLURM_CPUS_PER_TASK": "4", "DATASET": "shhs", "INPUT_DIR": "/data/shhs", "STORE": str(tmp_path / "store")}
    script = str(REPO / "bash_scripts" / "preprocess_slurm.sbatch")
    subprocess.run(["bash", script, "--cohort_group", "pretrain"], env=env, check=True, cwd=tmp_path, timeout=60)
    argv = shlex.split(record.read_text())
    assert argv[0] == "main_pipelines/main_preprocess.py"
    args = main_preprocess.build_parser().parse_args(argv[1:])
    assert args.shard == (3, 8) and args.dataset == "shhs" and args.num_workers == 4
    assert args.output_dir == str(tmp_path / "store") and args.cohort_group == "pretrain"

    subprocess.run(["bash", script], env={**env, "FINALIZE": "1"}, check=True, cwd=tmp_path, timeout=60)
    args = main_preprocess.build_parser().parse_args(shlex.split(record.read_text())[1:])
    assert args.finalize and args.output_dir == str(tmp_path / "store")

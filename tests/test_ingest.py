"""Batch ingestion into the epoch store: layouts, resume, failures, atomicity, CLI, synthetic end to end."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import config
from osf.datasets import ingest as ingest_mod
from osf.datasets.ingest import ingest_dataset, ingest_recordings, sources_from_files
from osf.datasets.preprocess import process_recording
from osf.datasets.store import EpochStore, StoreWriter

REPO = Path(__file__).resolve().parents[1]


def _night(write_test_edf, path: Path, seconds: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    rates = {"C4-M1": 128, "E1-M2": 128, "ECG": 256, "Abdomen": 10}
    signals = {}
    for label, rate in rates.items():
        t = np.arange(seconds * rate) / rate
        signals[label] = (np.sin(2 * np.pi * rng.uniform(0.5, 3) * t) + 0.3 * rng.standard_normal(t.size), rate)
    return write_test_edf(path, signals)


def _csv(path: Path, stages: list[str], events: list[tuple[float, float, str]] = ()) -> Path:
    rows = [f"{30 * i},30,Sleep stage {s}" for i, s in enumerate(stages)]
    rows += [f"{o},{d},{name}" for o, d, name in events]
    path.write_text("onset,duration,description\n" + "\n".join(rows) + "\n")
    return path


@pytest.fixture()
def generic_dir(write_test_edf, tmp_path: Path) -> Path:
    """A generic folder: two good nights with CSV scoring, a truncated EDF, a text file named .edf."""
    d = tmp_path / "in"
    _night(write_test_edf, d / "alpha.edf", 120, 0)
    _csv(d / "alpha.csv", ["W", "1", "2", "R"], [(70.0, 15.0, "Arousal")])
    _night(write_test_edf, d / "beta.edf", 90, 1)
    _csv(d / "beta.csv", ["2", "3", "4"])
    cut = _night(write_test_edf, d / "cut.edf", 90, 2)
    cut.write_bytes(cut.read_bytes()[:-500])
    (d / "junk.edf").write_text("not an edf at all\n" * 30)
    return d


def test_batch_continues_past_bad_files_and_records_them(generic_dir: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    report = ingest_dataset("generic", generic_dir, store, progress=False)
    assert sorted(report.written) == ["alpha", "beta"]
    assert {Path(p).name for p in report.failed} == {"cut.edf", "junk.edf"}
    index = EpochStore(store).index
    assert index.groupby("recording_id").size().to_dict() == {"alpha": 4, "beta": 3}
    alpha = index[index.recording_id == "alpha"].sort_values("epoch_index")
    assert alpha["stage"].tolist() == [0, 1, 2, 4]  # W, N1, N2, REM from the CSV
    assert alpha["arousal"].tolist() == [0, 0, 1, 0]
    beta = index[index.recording_id == "beta"].sort_values("epoch_index")
    assert beta["stage"].tolist() == [2, 3, 3]  # R&K stage 4 -> N3
    manifest = json.loads((store / "manifest.json").read_text())
    reasons = {Path(e["source_path"]).name: e["reason"] for e in manifest["excluded"]}
    assert set(reasons) == {"cut.edf", "junk.edf"}
    assert "cut.edf" in reasons["cut.edf"] and "truncated" in reasons["cut.edf"]
    assert "not an EDF" in reasons["junk.edf"]
    assert manifest["pipeline"][0]["settings"]["version"] == ingest_mod.pipeline_settings()["version"]
    present = EpochStore(store).recordings["qc"][0]["present_channels"]
    assert present == ["ECG", "ABD", "EOG_E1_A2", "EEG_C4_A1"]


def test_resume_skips_finished_recordings(generic_dir: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    ingest_dataset("generic", generic_dir, store, progress=False, limit=1)
    first = store / "signals" / "generic" / "alpha.npy"
    stamp = first.stat().st_mtime_ns
    report = ingest_dataset("generic", generic_dir, store, progress=False)
    assert report.skipped == ["alpha"] and report.written == ["beta"]
    assert first.stat().st_mtime_ns == stamp  # not rewritten
    assert sorted(EpochStore(store).index.recording_id.unique()) == ["alpha", "beta"]


def test_killed_run_leaves_nothing_half_written(generic_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """A kill while the second recording's index is written: the first stays intact, the second is
    invisible, and the next run completes it."""
    store = tmp_path / "store"
    real_write_table = pq.write_table
    calls = {"n": 0}

    def dying_write_table(table, where, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            Path(where).write_bytes(b"PAR1 half a file")  # the kill lands mid-write
            raise KeyboardInterrupt
        return real_write_table(table, where, *args, **kwargs)

    monkeypatch.setattr(pq, "write_table", dying_write_table)
    with pytest.raises(KeyboardInterrupt):
        ingest_dataset("generic", generic_dir, store, progress=False)
    monkeypatch.undo()
    writer = StoreWriter(store)
    assert writer.has_recording("generic", "alpha") and not writer.has_recording("generic", "beta")
    leftovers = [p.name for p in (store / "signals" / "generic").iterdir() if p.suffix == ".parquet"]
    assert leftovers == ["alpha.parquet"]
    alpha_bytes = (store / "signals" / "generic" / "alpha.npy").read_bytes()

    report = ingest_dataset("generic", generic_dir, store, progress=False)
    assert report.skipped == ["alpha"] and report.written == ["beta"]
    assert (store / "signals" / "generic" / "alpha.npy").read_bytes() == alpha_bytes
    s = EpochStore(store)
    rows = np.flatnonzero(s.index.recording_id.to_numpy() == "beta")
    expected = process_recording(generic_dir / "beta.edf", generic_dir / "beta.csv").signals
    np.testing.assert_array_equal(s.read(rows), expected.astype(np.float16).astype(np.float32))


def _cli_main():
    """``main`` of main_pipelines/main_preprocess.py."""
    from main_pipelines import main_preprocess

    return main_preprocess.main


def test_cli_generic_files_channel_map_and_exit_codes(generic_dir: Path, tmp_path: Path, capsys) -> None:
    main = _cli_main()
    store = tmp_path / "store"
    cmap = tmp_path / "map.json"
    cmap.write_text(json.dumps({"EEG_C4_A1": "C4-M1", "ECG": "ECG"}))
    argv = ["--dataset", "generic", "--edf", str(generic_dir / "alpha.edf"), "--annotations",
            str(generic_dir / "alpha.csv"), "--output_dir", str(store), "--channel_map", str(cmap), "--no-progress"]
    assert main(argv) == 0
    s = EpochStore(store)
    assert s.index["stage"].tolist() == [0, 1, 2, 4]
    masks = s.channel_masks(np.arange(len(s.index)))
    assert masks.all(axis=0).tolist() == [c in ("EEG_C4_A1", "ECG") for c in config.CHANNELS]
    # A corrupt file among good ones: the batch finishes, reports it, exits 1.
    assert main(["--dataset", "generic", "--edf", str(generic_dir / "beta.edf"), str(generic_dir / "junk.edf"),
                 "--output_dir", str(store), "--no-progress"]) == 1
    assert "junk.edf" in capsys.readouterr().err
    assert sorted(EpochStore(store).index.recording_id.unique()) == ["alpha", "beta"]
    # Bad arguments: a clear error, nothing written.
    assert main(["--dataset", "generic", "--edf", str(generic_dir / "alpha.edf"), "--annotations", "a.csv", "b.csv",
                 "--output_dir", str(tmp_path / "other"), "--no-progress"]) == 2
    assert "2 annotation files" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--dataset", "generic", "--input_dir", str(generic_dir), "--output_dir", str(store),
              "--split_fractions", "0.5,0.1"])
    # --limit 0 is refused for explicit files as for a dataset folder (it once meant "no limit" with --edf).
    for source in (["--edf", str(generic_dir / "alpha.edf")], ["--input_dir", str(generic_dir)]):
        with pytest.raises(SystemExit):
            main(["--dataset", "generic", *source, "--output_dir", str(tmp_path / "limit0"), "--limit", "0"])
    assert not (tmp_path / "limit0").exists()


def test_cli_help_runs_as_a_script() -> None:
    out = subprocess.run([sys.executable, "main_pipelines/main_preprocess.py", "--help"], check=False, cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "--channel_map" in out.stdout and "--split_fractions" in out.stdout


def test_synthetic_cohorts_end_to_end_parallel_into_one_store(generic_dir: Path, tmp_path: Path) -> None:
    """Synthetic SHHS nights (NSRR layout) in 2 worker processes, then a generic night into the same
    store: per-epoch labels equal the generator's truth, and both datasets share the index."""
    synthetic = pytest.importorskip("osf.datasets.synthetic")
    from osf.datasets.synthetic.generate import simulate_scoring

    hours = 0.25
    synthetic.generate_cohort(tmp_path / "nsrr", cohorts="shhs", nights_per_cohort=2, hours=hours, progress=False)
    store = tmp_path / "store"
    report = ingest_dataset("shhs", tmp_path / "nsrr", store, num_workers=2, cohort_group="pretrain", progress=False)
    assert len(report.written) == 2 and not report.failed
    ingest_recordings(sources_from_files("generic", [generic_dir / "beta.edf"]), store, cohort_group="downstream",
                      progress=False)
    s = EpochStore(store)
    assert s.manifest["cohort_groups"] == {"generic": "downstream", "shhs": "pretrain"}
    assert s.index.groupby("dataset").recording_id.nunique().to_dict() == {"generic": 1, "shhs": 2}

    columns = {"arousal": ("arousal",), "hypopnea": ("hypopnea",), "apnea": ("obstructive_apnea", "central_apnea"),
               "oxygen_desaturation": ("desaturation",)}
    for subject in range(2):
        truth = simulate_scoring("shhs", subject, 0, hours)
        rec = s.index[s.index.recording_id == truth.profile.recording_id].sort_values("epoch_index")
        n = len(truth.stages)
        assert len(rec) == n
        assert rec["stage"].tolist() == truth.stages.astype(int).tolist()
        for column, kinds in columns.items():
            expected = np.zeros(n, dtype=int)
            for ev in truth.scored:
                if ev.kind in kinds:
                    expected[int(ev.onset // 30) : int(np.ceil(ev.end / 30))] = 1
            assert rec[column].tolist() == expected.tolist(), column
        assert rec["subject_id"].iloc[0] == truth.profile.recording_id.split("-")[1]
        # SHHS montage: no leg EMG, no nasal pressure, no snore -> masked; the rest present.
        masks = s.channel_masks(rec.index.to_numpy())
        absent = {"EMG_LLeg", "EMG_RLeg", "NP", "SN"}
        assert not masks[:, [config.CHANNEL_INDEX[c] for c in absent]].any()
        assert masks[:, config.CHANNEL_INDEX["EEG_C4_A1"]].mean() > 0.9


@pytest.mark.skipif(multiprocessing.get_start_method() != "fork", reason="the patch must reach forked workers")
def test_a_dying_worker_fails_only_its_recording(generic_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """A worker killed mid-recording (as by the OOM killer) breaks the pool; the batch retries the
    recordings that were in flight one by one and records only the one that kills its worker."""
    real = ingest_mod.process_recording

    def killer(edf_path, *args, **kwargs):
        if Path(edf_path).name == "beta.edf":
            os._exit(137)
        return real(edf_path, *args, **kwargs)

    monkeypatch.setattr(ingest_mod, "process_recording", killer)
    sources = sources_from_files("generic", [generic_dir / "alpha.edf", generic_dir / "beta.edf"],
                                 [generic_dir / "alpha.csv", generic_dir / "beta.csv"])
    report = ingest_recordings(sources, tmp_path / "store", num_workers=2, progress=False)
    assert report.written == ["alpha"]
    assert list(report.failed) == [str(generic_dir / "beta.edf")]
    assert "worker process died" in report.failed[str(generic_dir / "beta.edf")]
    assert EpochStore(tmp_path / "store").index.recording_id.unique().tolist() == ["alpha"]


def test_named_cohort_batch_records_misnamed_file_and_goes_on(tmp_path: Path) -> None:
    """A file outside the cohort's naming pattern is recorded as a failure; the others are ingested."""
    synthetic = pytest.importorskip("osf.datasets.synthetic")
    synthetic.generate_cohort(tmp_path / "nsrr", cohorts="shhs", nights_per_cohort=1, hours=0.1, progress=False)
    edfs = tmp_path / "nsrr" / "shhs" / "polysomnography" / "edfs"
    (edfs / "notes-from-tech.edf").write_bytes(next(edfs.glob("*.edf")).read_bytes())
    store = tmp_path / "store"
    report = ingest_dataset("shhs", tmp_path / "nsrr", store, progress=False)
    assert len(report.written) == 1
    assert [Path(p).name for p in report.failed] == ["notes-from-tech.edf"]
    excluded = json.loads((store / "manifest.json").read_text())["excluded"]
    assert any("does not follow the shhs pattern" in e["reason"] for e in excluded)


_INGEST_SCRIPT = """
import sys
from osf.datasets.ingest import ingest_dataset
report = ingest_dataset("generic", sys.argv[1], sys.argv[2], progress=False)
print("written", sorted(report.written))
"""


def _can_mount_a_small_disk(where: Path) -> bool:
    """Whether ``unshare -rm`` can mount a tmpfs here (user namespaces; not on every machine)."""
    where.mkdir(parents=True, exist_ok=True)
    probe = ["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {where}"]
    try:
        return subprocess.run(probe, capture_output=True, timeout=30, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def test_a_full_disk_fails_one_recording_not_the_batch(write_test_edf, tmp_path: Path) -> None:
    """A store on a 400 KB disk: alpha's 922 KB array does not fit and is recorded as failed with
    the disk's reason and no temp file left; beta's fits and is written; the process lives on."""
    disk = tmp_path / "disk"
    if not _can_mount_a_small_disk(disk):
        pytest.skip("cannot mount a small tmpfs here (unshare -rm not permitted)")
    inputs, store = tmp_path / "in", disk / "store"
    _night(write_test_edf, inputs / "alpha.edf", 600, 0)
    _csv(inputs / "alpha.csv", ["2"] * 20)
    _night(write_test_edf, inputs / "beta.edf", 90, 1)
    _csv(inputs / "beta.csv", ["2", "3", "4"])
    script = (
        f"mount -t tmpfs -o size=400k tmpfs {disk} && "
        f'"{sys.executable}" -c "$0" {inputs} {store}; rc=$?; '
        f"ls -A {store}/signals/generic; cat {store}/failures.jsonl; exit $rc"
    )
    proc = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script, _INGEST_SCRIPT],
        capture_output=True, text=True, cwd=REPO, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]  # a memory-mapped write died here of SIGBUS
    lines = proc.stdout.splitlines()
    assert lines[0] == "written ['beta']"
    assert sorted(lines[1:3]) == ["beta.npy", "beta.parquet"]  # no temp file of alpha's left
    failures = {Path(f["source_path"]).name: f["reason"] for f in map(json.loads, lines[3:])}
    assert "No space left on device" in failures["alpha.edf"] and "alpha.npy" in failures["alpha.edf"]


def test_a_full_disk_while_finalizing_keeps_the_recordings(generic_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """No room for the index: one line naming the store, the file and the disk's reason; the arrays
    stay, and the next run (with room) only finalizes."""
    import errno

    from osf.utils import atomic

    store = tmp_path / "store"
    real_fsync = os.fsync

    def fsync_without_room_for_the_index(fd: int) -> None:
        if ".index.parquet." in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(atomic.os, "fsync", fsync_without_room_for_the_index)
    with pytest.raises(ingest_mod.IngestionError) as info:
        ingest_dataset("generic", generic_dir, store, progress=False)
    message = str(info.value)
    assert message.startswith(f"{store}: cannot finalize the store:") and "\n" not in message
    assert "No space left on device" in message and "index.parquet" in message
    assert not (store / "index.parquet").exists() and not list(store.glob(".index.parquet.*"))
    monkeypatch.undo()
    report = ingest_dataset("generic", generic_dir, store, progress=False)
    assert sorted(report.skipped) == ["alpha", "beta"] and report.finalized
    assert sorted(EpochStore(store).index.recording_id.unique()) == ["alpha", "beta"]

"""Epoch store: writer/reader round trip, atomic resume, manifest, subject splits, cohort groups."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

import config
from osf.datasets import store as store_mod
from osf.datasets.manifest import StoreManifestError
from osf.datasets.recording import RecordingEpochs
from osf.datasets.splits import assign_subject_splits, split_for_rows, subset_subjects
from osf.datasets.store import EpochStore, StoreWriter, pack_channel_mask, unpack_channel_mask
from osf.testing import make_random_store, random_recording


def _rec(n: int, seed: int, missing=()) -> RecordingEpochs:
    return random_recording(n, np.random.default_rng(seed), missing)


def test_round_trip_read_order_masks_labels(tmp_path):
    recs = {"a-1": _rec(7, 1), "a-2": _rec(5, 2, missing=("ECG", "SN")), "b-1": _rec(4, 3)}
    w = StoreWriter(tmp_path / "s", pipeline={"version": "test"})
    w.write_recording("dsA", "a-1", "subj1", 1, recs["a-1"], source={})
    w.write_recording("dsA", "a-2", "subj1", 2, recs["a-2"], source={})
    w.write_recording("dsB", "b-1", "subj9", 1, recs["b-1"], source={})
    st = EpochStore(w.finalize())
    idx = st.index
    assert len(st) == 16 and list(idx.columns) == list(store_mod.INDEX_COLUMNS)
    assert idx["channel_mask"].dtype == np.uint16 and idx["stage"].dtype == np.int8

    # Unsorted rows with duplicates and spanning files come back in the order asked.
    rows = np.array([15, 0, 9, 3, 9, 12, 7, 1])
    got = st.read(rows)
    assert got.dtype == np.float32 and got.shape == (8, 12, 1920)
    masks = st.channel_masks(rows)
    for k, r in enumerate(rows):
        rid, e = idx.loc[r, "recording_id"], idx.loc[r, "epoch_index"]
        ref = recs[rid].signals[e].astype(np.float16).astype(np.float32)
        np.testing.assert_array_equal(got[k], ref)
        np.testing.assert_array_equal(masks[k], recs[rid].channel_mask[e])
        for col in ("stage", "arousal", "hypopnea", "oxygen_desaturation", "apnea"):
            assert idx.loc[r, col] == recs[rid].labels[col][e]
    a2 = idx.index[idx["recording_id"] == "a-2"]
    assert not st.channel_masks(a2)[:, [config.CHANNEL_INDEX["ECG"], config.CHANNEL_INDEX["SN"]]].any()
    # Both visits of subj1 share a split.
    assert idx.loc[idx["subject_id"] == "subj1", "split"].nunique() == 1
    assert st.read(np.array([], dtype=np.int64)).shape == (0, 12, 1920)
    with pytest.raises(IndexError, match="rows must be in"):
        st.read(np.array([16]))


def test_mask_bits_round_trip():
    m = np.random.default_rng(0).random((50, 12)) < 0.5
    bits = pack_channel_mask(m)
    assert bits.dtype == np.uint16
    np.testing.assert_array_equal(unpack_channel_mask(bits), m)
    assert pack_channel_mask(m[:1])[0] == config.channel_mask_bits(m[0].tolist())


def test_store_is_picklable_without_open_maps(tiny_store):
    import pickle

    st = EpochStore(tiny_store)
    first = st.read(np.arange(3))
    assert st.reader.open_files == 1
    blob = pickle.dumps(st)
    # Neither handles nor the memory-mapped columns travel: the pickle is small, the clone reopens them.
    assert len(blob) < 20_000 + 200 * len(st.rows.recordings)
    clone = pickle.loads(blob)
    assert clone.reader.open_files == 0 and isinstance(clone.column("stage"), np.memmap)
    np.testing.assert_array_equal(clone.read(np.arange(3)), first)


def test_failed_write_leaves_nothing_and_resume(tmp_path, monkeypatch):
    w = StoreWriter(tmp_path / "s")
    good = _rec(3, 0)
    w.write_recording("ds", "r1", "s1", 1, good, source={})
    before = sorted(p.name for p in (tmp_path / "s" / "signals" / "ds").iterdir())

    def boom(*a, **k):
        raise KeyboardInterrupt("killed while writing the sidecar")

    monkeypatch.setattr(store_mod.pq, "write_table", boom)
    with pytest.raises(KeyboardInterrupt):
        w.write_recording("ds", "r2", "s2", 1, _rec(3, 1), source={})
    monkeypatch.undo()
    # The array got renamed but without its sidecar r2 is not done; no temp files linger.
    assert not w.has_recording("ds", "r2") and w.has_recording("ds", "r1")
    names = sorted(p.name for p in (tmp_path / "s" / "signals" / "ds").iterdir())
    assert [n for n in names if n.startswith(".")] == []
    assert set(before) <= set(names)

    nan_rec = _rec(3, 2)
    nan_rec.signals[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="ds/r3.*NaN"):
        w.write_recording("ds", "r3", "s3", 1, nan_rec, source={})
    assert not (tmp_path / "s" / "signals" / "ds" / "r3.npy").exists()

    # Resume: a new writer sees r1 done, rewrites r2, and the index holds exactly r1 and r2.
    w2 = StoreWriter(tmp_path / "s")
    assert w2.has_recording("ds", "r1") and not w2.has_recording("ds", "r2")
    redo = _rec(3, 5)
    w2.write_recording("ds", "r2", "s2", 1, redo, source={})
    st = EpochStore(w2.finalize())
    assert sorted(st.index["recording_id"].unique()) == ["r1", "r2"]
    r2 = st.index.index[st.index["recording_id"] == "r2"]
    np.testing.assert_array_equal(st.read(r2), redo.signals.astype(np.float16).astype(np.float32))


def test_manifest_provenance_failures_and_events(tmp_path):
    edf = tmp_path / "night.edf"
    edf.write_bytes(b"0       pretend edf bytes")
    w = StoreWriter(tmp_path / "s", pipeline={"version": "1.2", "normalisation": "median_iqr"})
    rec = _rec(3, 0)
    rec.qc.update(channel_map={"ECG": "EKG"}, unknown_event_names={"Weird event": 2})
    w.write_recording("shhs", "n1", "p1", 1, rec, source={"edf": str(edf)})
    rec2 = _rec(2, 1)
    rec2.qc["unknown_event_names"] = {"Weird event": 1, "Other thing": 4}
    w.write_recording("shhs", "n2", "p2", 1, rec2, source={})
    w.record_failure("shhs", "/data/bad.edf", "truncated EDF: 10 of 20 records")
    w.record_failure("shhs", str(edf), "transient error fixed by the later run")
    st = EpochStore(w.finalize(cohort_groups={"shhs": "pretrain"}))
    m = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert m == st.manifest
    assert m["excluded"] == [m["excluded"][0]] and m["excluded"][0]["source_path"] == "/data/bad.edf"
    assert "truncated" in m["excluded"][0]["reason"]
    assert m["unknown_event_names"] == {"shhs": {"Other thing": 4, "Weird event": 3}}
    assert m["channel_maps"] == [{"channel_map": {"ECG": "EKG"}, "datasets": {"shhs": 1}}]
    assert m["pipeline"] == [
        {"settings": {"version": "1.2", "normalisation": "median_iqr"}, "datasets": {"shhs": 2}}
    ]
    assert "recordings" not in m  # per-recording provenance lives in a table, not in the JSON
    rec_n1 = st.recordings.set_index("recording_id").loc["n1"]
    assert rec_n1["source"]["sha256"]["edf"] == hashlib.sha256(edf.read_bytes()).hexdigest()
    assert m["cohort_groups"] == {"shhs": "pretrain"} and set(st.index["cohort_group"]) == {"pretrain"}
    assert m["n_epochs"] == 5 and m["channels"] == list(config.CHANNELS)


def test_bad_input_errors_name_the_problem(tmp_path):
    w = StoreWriter(tmp_path / "s")
    rec = _rec(2, 0)
    with pytest.raises(ValueError, match="recording_id '../x'"):
        w.write_recording("ds", "../x", "s", 1, rec)
    bad = RecordingEpochs(signals=np.zeros((2, 11, 1920), np.float32), channel_mask=np.ones((2, 11), bool))
    with pytest.raises(ValueError, match=r"ds/r1.*\[n_epochs, 12, 1920\]"):
        w.write_recording("ds", "r1", "s", 1, bad)
    rec.labels["stage"] = np.array([0, 7], np.int8)
    with pytest.raises(ValueError, match="'stage' has values outside -1..4"):
        w.write_recording("ds", "r1", "s", 1, rec)
    with pytest.raises(ValueError, match="no recordings"):
        w.finalize()
    with pytest.raises(FileNotFoundError, match="not a finalized epoch store"):
        EpochStore(tmp_path / "s")
    with pytest.raises(ValueError, match="unknown cohort group"):
        w.write_recording("ds", "r1", "s", 1, _rec(2, 1))
        w.finalize(cohort_groups={"ds": "training"})
    with pytest.raises(ValueError, match="summing to 1"):
        w.finalize(split_fractions=(0.8, 0.3, 0.1))


def test_truncated_array_is_reported_with_its_path(tmp_path):
    root = make_random_store(tmp_path / "s", n_subjects=2, n_epochs=4, seed=0)
    st = EpochStore(root)
    victim = root / st.index["path"].iloc[0]
    data = np.load(victim)
    np.save(victim, data[:2])
    with pytest.raises(ValueError, match=f"{victim.name}.*expected float16 \\(4, 12, 1920\\)"):
        EpochStore(root).read(np.array([0]))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("format_version", 3, r"format_version is 3, expected 2 \(newer than this code reads"),
        ("format_version", None, r"format_version is None, expected 2"),
        ("channels", [*config.CHANNELS[:11], "EEG_Fz"], r"channels: unknown channel\(s\) \['EEG_Fz'\]; channels are \["),
        ("channels", list(reversed(config.CHANNELS)), r"channels are .*expected the model's 12 channels in order"),
        ("sample_rate", 128, r"sample_rate is 128, expected 64"),
        ("epoch_samples", 3840, r"epoch_samples is 3840, expected 1920"),
        ("signal_dtype", "float32", r"signal_dtype is 'float32', expected 'float16'"),
        ("sample_rate", "drop", r"manifest lacks \['sample_rate'\]"),
    ],
)
def test_tampered_manifest_is_refused_naming_the_store_and_the_field(tmp_path, field, value, message):
    root = make_random_store(tmp_path / "s", n_subjects=2, n_epochs=2, seed=0)
    EpochStore(root)  # the untouched store opens
    path = root / "manifest.json"
    manifest = json.loads(path.read_text())
    if value == "drop":
        del manifest[field]
    else:
        manifest[field] = value
    path.write_text(json.dumps(manifest))
    with pytest.raises(StoreManifestError, match=message) as err:
        EpochStore(root)
    assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)


def test_manifest_record_round_trips_the_json_exactly(tmp_path):
    root = make_random_store(tmp_path / "s", n_subjects=2, n_epochs=2, seed=0)
    st = EpochStore(root)
    assert st.manifest_record.to_dict() == st.manifest
    assert list(st.manifest_record.to_dict()) == list(st.manifest)  # same key order as on disk


def test_subject_splits_deterministic_stable_and_proportional():
    subjects = pd.DataFrame({"dataset": "shhs", "subject_id": [f"p{i}" for i in range(3000)]})
    split = assign_subject_splits(subjects, (0.7, 0.2, 0.1), seed=3)
    frac = split.value_counts(normalize=True)
    assert (
        abs(frac["train"] - 0.7) < 0.03 and abs(frac["val"] - 0.2) < 0.03 and abs(frac["test"] - 0.1) < 0.03
    )
    pd.testing.assert_series_equal(split, assign_subject_splits(subjects, (0.7, 0.2, 0.1), seed=3))
    # Adding subjects never moves existing ones.
    more = pd.concat(
        [subjects, pd.DataFrame({"dataset": "shhs", "subject_id": [f"q{i}" for i in range(500)]})],
        ignore_index=True,
    )
    split_more = assign_subject_splits(more, (0.7, 0.2, 0.1), seed=3)
    pd.testing.assert_series_equal(split_more.iloc[:3000], split)
    assert (assign_subject_splits(subjects, (0.7, 0.2, 0.1), seed=4) != split).mean() > 0.2

    # Rows of one subject (visits) share a split; the same subject id in another dataset is independent.
    rows = split_for_rows(["a", "a", "a", "b"], ["x", "y", "x", "x"], (0.5, 0.25, 0.25), seed=1)
    assert rows[0] == rows[2]


def test_small_cohort_gets_every_split():
    for seed in range(20):
        subjects = pd.DataFrame({"dataset": "tiny", "subject_id": [f"s{i}" for i in range(4)]})
        counts = assign_subject_splits(subjects, (0.8, 0.1, 0.1), seed=seed).value_counts()
        assert set(counts.index) == {"train", "val", "test"}
    two = pd.DataFrame({"dataset": "tiny", "subject_id": ["a", "b"]})
    assert set(assign_subject_splits(two, (1.0, 0.0, 0.0), seed=0)) == {"train"}


def test_subset_subjects_is_nested_and_seeded():
    keys = [f"d/s{i}" for i in range(40)]
    small, big = subset_subjects(keys, 0.25, seed=0), subset_subjects(keys, 0.5, seed=0)
    assert len(small) == 10 and len(big) == 20 and small <= big
    assert subset_subjects(keys, 0.25, seed=1) != small
    assert len(subset_subjects(keys, 0.001)) == 1
    with pytest.raises(ValueError, match="train_data_pct"):
        subset_subjects(keys, 0.0)


def test_random_store_is_learnable(tiny_store):
    """Simple per-channel features separate stages above chance on held-out subjects."""
    from sklearn.linear_model import LogisticRegression

    st = EpochStore(tiny_store)
    idx = st.index
    ok = (idx["stage"] >= 0).to_numpy()
    x = st.read(np.flatnonzero(ok))
    feats = np.concatenate([x.std(axis=2), np.abs(np.diff(x, axis=2)).mean(axis=2)], axis=1)
    y = idx.loc[ok, "stage"].to_numpy()
    train = (idx.loc[ok, "split"] == "train").to_numpy()
    clf = LogisticRegression(max_iter=2000).fit(feats[train], y[train])
    acc = (clf.predict(feats[~train]) == y[~train]).mean()
    assert acc > 0.6, acc  # chance is about 0.2
    counts = np.bincount(y, minlength=5)
    assert counts.min() >= 20  # every stage well represented, even in a tiny store

"""Night-level prediction: subject tables, target encoding, night models, metrics, the CLI run, bad input."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import spearmanr
from sklearn.metrics import balanced_accuracy_score, mean_absolute_error, roc_auc_score

from osf.downstream.features import FeatureSet
from osf.downstream.night import (
    NIGHT_MODELS,
    READOUT_PENALTIES,
    NightSet,
    NightTarget,
    check_night_counts,
    encode_target,
    evaluate_nights,
    find_subject_tables,
    group_nights,
    load_night_model,
    load_subject_tables,
    lookup_target,
    normalise_id,
    pad_nights,
    predict_nights,
    save_night_model,
    train_night_model,
)

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


def _write(path: Path, frame: pd.DataFrame) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path


# --- subject tables ----------------------------------------------------------------------------
def test_tables_join_by_subject_and_visit_with_per_visit_files(tmp_path):
    """SHHS layout: harmonised table with a visit column, cohort table per visit in the file name."""
    _write(tmp_path / "shhs/datasets/shhs-harmonized-dataset-0.21.0.csv", pd.DataFrame(
        {"nsrrid": [200001, 200001, 200002], "visitnumber": [1, 2, 1], "nsrr_age": [60, 65, 70]}))
    _write(tmp_path / "shhs/datasets/shhs1-dataset-0.21.0.csv", pd.DataFrame({"nsrrid": [200001, 200002], "htn": [1, 0]}))
    _write(tmp_path / "shhs/datasets/shhs2-dataset-0.21.0.csv", pd.DataFrame({"nsrrid": [200001], "htn": [0]}))
    (tmp_path / "shhs/polysomnography/edfs").mkdir(parents=True)
    found = {p.name: v for p, v in find_subject_tables("shhs", tmp_path)}
    assert found == {"shhs-harmonized-dataset-0.21.0.csv": None, "shhs1-dataset-0.21.0.csv": 1,
                     "shhs2-dataset-0.21.0.csv": 2}
    tables = {"shhs": load_subject_tables("shhs", tmp_path)}
    recs = pd.DataFrame({"dataset": "shhs", "subject_id": ["200001", "200001", "200002", "200003"], "visit": [1, 2, 1, 1]})
    assert lookup_target(tables, "nsrr_age", recs).astype(float).tolist()[:3] == [60.0, 65.0, 70.0]
    assert pd.isna(lookup_target(tables, "nsrr_age", recs).iloc[3])  # not in the table: missing
    htn = lookup_target(tables, "htn", recs)
    assert htn.iloc[:3].astype(int).tolist() == [1, 0, 0] and pd.isna(htn.iloc[3])


def test_ids_match_across_case_and_leading_zeros():
    assert normalise_id("AA0012") == normalise_id("aa0012")
    assert normalise_id("000123") == normalise_id(123) == normalise_id("123.0") == "123"


def test_unknown_variable_lists_the_available_ones(tmp_path):
    _write(tmp_path / "datasets/generic-harmonized-dataset-1.csv", pd.DataFrame({"nsrrid": ["a"], "nsrr_age": [50]}))
    tables = {"generic": load_subject_tables("generic", tmp_path)}
    recs = pd.DataFrame({"dataset": ["generic"], "subject_id": ["a"], "visit": [1]})
    with pytest.raises(ValueError, match=r"unknown --target_variable 'nsrr_agee'.*available variables: nsrr_age"):
        lookup_target(tables, "nsrr_agee", recs)


def test_no_tables_and_no_id_column_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="no subject tables for dataset 'generic'"):
        load_subject_tables("generic", tmp_path)
    _write(tmp_path / "datasets/generic-dataset-1.csv", pd.DataFrame({"pid": ["a"], "age": [50]}))
    with pytest.raises(ValueError, match=r"generic-dataset-1.csv: no subject id column"):
        load_subject_tables("generic", tmp_path)


# --- target encoding ---------------------------------------------------------------------------
def test_encode_target_kinds():
    ahi = encode_target(pd.Series(["3.5", "15", "40", None]), NightTarget("ahi", 15.0))
    assert ahi.y[:3].tolist() == [0, 1, 1] and ahi.keep.tolist() == [True, True, True, False]
    assert ahi.class_names == ("ahi<15", "ahi>=15")
    sex = encode_target(pd.Series(["male", "female", "male"]), NightTarget("nsrr_sex"))
    assert sex.class_names == ("nsrr_sex=female", "nsrr_sex=male") and sex.y.tolist() == [1, 0, 1]
    flag = encode_target(pd.Series(["0", "1", "1"]), NightTarget("htn"))
    assert flag.class_names == ("htn=0", "htn=1") and flag.y.tolist() == [0, 1, 1]
    age = encode_target(pd.Series(["50.5", "61", np.nan]), NightTarget("age"))
    assert age.is_regression and age.y[:2].tolist() == [50.5, 61.0] and not age.keep[2]
    with pytest.raises(ValueError, match="needs a numeric variable; 'nsrr_sex' has values"):
        encode_target(pd.Series(["male", "female"]), NightTarget("nsrr_sex", 1.0))


def test_too_few_subjects_per_class_is_refused():
    feats = [np.zeros((3, 2), np.float32)] * 4
    ok = NightSet(feats, np.array(list("abcd")), np.array(list("abcd")), np.array([0, 0, 1, 1]))
    one_class = NightSet(feats, np.array(list("abcd")), np.array(list("abcd")), np.array([0, 0, 0, 0]))
    names = ("ahi<15", "ahi>=15")
    assert check_night_counts({"train": ok, "val": ok, "test": ok}, names)["test"] == {"ahi<15": 2, "ahi>=15": 2}
    with pytest.raises(ValueError, match=r"test split: too few subjects per class .*'ahi>=15': 0"):
        check_night_counts({"train": ok, "val": ok, "test": one_class}, names)
    with pytest.raises(ValueError, match="val split: 1 subject"):
        check_night_counts({"val": ok.subset(np.array([True, False, False, False]))}, None)


# --- models and metrics ------------------------------------------------------------------------
def _nights(n: int, seed: int, signal: str = "mean") -> NightSet:
    """Nights whose target shows in the mean (or in the spread over the night) of their embeddings."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    feats = []
    for label in y:
        t = int(rng.integers(20, 40))
        x = rng.normal(0, 1, (t, 8)).astype(np.float32)
        if signal == "mean":
            x[:, 0] += 1.5 * label
        else:
            x[:, 1] *= 1 + 2 * label
        feats.append(x)
    ids = np.array([f"s{seed}-{i}" for i in range(n)])
    stages = [(x[:, 0] > 0.75).astype(np.int64) for x in feats]  # an epoch-level label the embedding shows
    return NightSet(feats, ids, ids, y, stages)


@pytest.mark.parametrize("kind", NIGHT_MODELS)
def test_night_models_find_a_night_level_signal(kind):
    train, val, test = _nights(40, 0), _nights(16, 1), _nights(30, 2)
    fit = train_night_model(train, val, kind, 2, max_steps=60, lr=3e-3, eval_every=20, seed=0)
    proba = predict_nights(fit, test.features)
    assert roc_auc_score(test.y, proba[:, 1]) > 0.9


def test_mean_std_pooling_sees_variability_not_only_the_mean():
    train, val, test = _nights(40, 0, "std"), _nights(16, 1, "std"), _nights(30, 2, "std")
    fit = train_night_model(train, val, "mean_std", 2, max_steps=150, lr=1e-2, eval_every=25)
    assert roc_auc_score(test.y, predict_nights(fit, test.features)[:, 1]) > 0.9


def test_regression_beats_the_training_mean_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)

    def nights(n, seed):
        r = np.random.default_rng(seed)
        age = r.uniform(30, 80, n)
        feats = [(r.normal(0, 1, (25, 6)) + np.r_[(a - 55) / 15, np.zeros(5)]).astype(np.float32) for a in age]
        ids = np.array([f"{seed}-{i}" for i in range(n)])
        return NightSet(feats, ids, ids, age)

    train, val, test = nights(40, 0), nights(12, 1), nights(30, 2)
    fit = train_night_model(train, val, "mean_std", None, max_steps=150, lr=1e-2, eval_every=25, seed=int(rng.integers(9)))
    assert [h["penalty"] for h in fit.history] == list(READOUT_PENALTIES)  # closed form, penalty chosen on val
    pred = predict_nights(fit, test.features)
    m = evaluate_nights(test.y, pred, test.subject_ids, None, train_mean=float(train.y.mean()), n_boot=100)
    assert m["mae"] == pytest.approx(mean_absolute_error(test.y, pred))
    assert m["spearman"] == pytest.approx(spearmanr(test.y, pred).statistic)
    assert m["baseline_mae"] == pytest.approx(np.mean(np.abs(test.y - train.y.mean())))
    assert m["mae"] < 0.7 * m["baseline_mae"] and m["mae_gain_ci95"][0] > 0
    path = save_night_model(fit, tmp_path / "night.pt", NightTarget("nsrr_age"), None, None, {"encoder_name": "x"})
    again = load_night_model(path)
    np.testing.assert_allclose(predict_nights(again, test.features), pred, rtol=1e-5)
    (tmp_path / "bad.pt").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="bad.pt: not a readable night model"):
        load_night_model(tmp_path / "bad.pt")


def _staged_nights(n: int, seed: int) -> NightSet:
    """Nights whose target (an "age") sets the fraction of deep-sleep epochs; each epoch shows its stage."""
    rng = np.random.default_rng(seed)
    age = rng.uniform(30, 80, n)
    feats, stages = [], []
    for a in age:
        stage = rng.choice(3, size=int(rng.integers(60, 90)), p=[0.3, 0.7 - (90 - a) / 200, (90 - a) / 200])
        x = rng.normal(0, 1, (stage.size, 6)).astype(np.float32)
        x[np.arange(stage.size), stage] += 2.5  # the epoch embedding shows its stage, with noise
        feats.append(x)
        stages.append(stage.astype(np.int64))
    ids = np.array([f"{seed}-{i}" for i in range(n)])
    return NightSet(feats, ids, ids, age, stages)


def test_stage_profile_predicts_from_the_nights_stage_fractions(tmp_path):
    train, val, test = _staged_nights(40, 0), _staged_nights(12, 1), _staged_nights(30, 2)
    fit = train_night_model(train, val, "stage_profile", None)
    x, mask = pad_nights(test.features)
    profile = fit.model.pool(x, mask).detach().numpy()
    true = np.stack([np.bincount(s, minlength=3) / s.size for s in test.epoch_labels])
    assert profile.shape == (30, 3) and np.allclose(profile.sum(1), 1, atol=1e-5)
    assert np.abs(profile - true).mean() < 0.05  # the pooled vector is the night's stage fractions
    pred = predict_nights(fit, test.features)
    m = evaluate_nights(test.y, pred, test.subject_ids, None, train_mean=float(train.y.mean()), n_boot=100)
    assert m["mae"] < 0.6 * m["baseline_mae"] and m["mae_gain_ci95"][0] > 0
    again = load_night_model(save_night_model(fit, tmp_path / "n.pt", NightTarget("nsrr_age"), None, None, {}))
    np.testing.assert_allclose(predict_nights(again, test.features), pred, rtol=1e-5)


def test_stage_profile_needs_stage_labels():
    train, val = _staged_nights(10, 0), _staged_nights(6, 1)
    with pytest.raises(ValueError, match="stage_profile needs the epochs' stage labels: run the night level with --eval_label Stage"):
        train_night_model(dataclasses.replace(train, epoch_labels=None), val, "stage_profile", None)
    one_stage = dataclasses.replace(train, epoch_labels=[np.zeros_like(s) for s in train.epoch_labels])
    with pytest.raises(ValueError, match="hold 1 stage class"):
        train_night_model(one_stage, val, "stage_profile", None)


def test_classification_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60)
    p1 = np.clip(0.3 * y + rng.uniform(0, 0.7, 60), 0, 1)
    proba = np.stack([1 - p1, p1], 1)
    subjects = np.array([f"s{i // 2}" for i in range(60)])  # two nights per subject
    m = evaluate_nights(y, proba, subjects, ("neg", "pos"), threshold=0.5, n_boot=200)
    assert m["auroc"] == pytest.approx(roc_auc_score(y, p1))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, p1 >= 0.5))
    lo, hi = m["auroc_ci95"]
    assert lo < m["auroc"] < hi and m["n_subjects"] == 30 and m["n_nights"] == 60


def test_group_nights_orders_epochs_in_time():
    fs = FeatureSet(np.arange(6, dtype=np.float32)[:, None], np.zeros(6, int), np.array(list("aabbab")),
                    np.array(["r1", "r1", "r2", "r2", "r1", "r2"]), np.array([2, 0, 1, 0, 1, 2]))
    feats, recs, subjects = group_nights(fs)
    assert recs.tolist() == ["r1", "r2"] and subjects.tolist() == ["a", "b"]
    assert feats[0][:, 0].tolist() == [1, 4, 0] and feats[1][:, 0].tolist() == [3, 2, 5]


# --- the CLI run -------------------------------------------------------------------------------
def _main_finetune():
    from main_pipelines import main_finetune

    return main_finetune


@pytest.fixture(scope="module")
def night_store(tmp_path_factory):
    """A random store (16 subjects, dataset generic) and its subject table; subject s015 has no AHI."""
    from osf.testing import make_random_store

    root = tmp_path_factory.mktemp("night")
    store = make_random_store(root / "store", n_subjects=16, n_epochs=12, seed=0, datasets=("generic",),
                              split_fractions=(0.4, 0.3, 0.3))
    subjects = [f"s{i:03d}" for i in range(16)]
    ahi = [5.0, 20.0] * 8
    ahi[15] = None
    _write(root / "raw/datasets/generic-harmonized-dataset-0.1.csv",
           pd.DataFrame({"nsrrid": subjects, "nsrr_ahi_hp3r_aasm15": ahi, "nsrr_sex": ["male", "female"] * 8}))
    from osf.backbone.checkpoint import backbone_metadata, save_backbone
    from osf.backbone.vit1d_cls import create_backbone

    torch.manual_seed(0)
    model = create_backbone("vit_nano")
    ckpt = save_backbone(model, root / "nano.pth", backbone_metadata(model, "test_nano"))[0]
    return store, root / "raw", ckpt


def test_cli_night_level_run_writes_rows_and_counts_skipped_nights(night_store, tmp_path, capsys):
    store, raw, ckpt = night_store
    out = tmp_path / "out"
    args = ["--data_dir", str(store), "--output_dir", str(out), "--ckpt_path", str(ckpt), "--eval_level", "night",
            "--target_variable", "nsrr_ahi_hp3r_aasm15", "--target_threshold", "15", "--subject_tables", str(raw),
            "--night_models", "mean_std,stage_profile,attention", "--max_steps", "10", "--n_boot", "20",
            "--feature_cache_dir", str(tmp_path / "cache")]
    assert _main_finetune().main(args) == 0
    table = pd.read_csv(out / "results.csv")
    assert table["setting"].tolist() == ["night_mean_std", "night_stage_profile", "night_attention"]
    assert (table["task"] == "nsrr_ahi_hp3r_aasm15>=15").all() and "test_auroc_ci_low" in table.columns
    assert (table["n_skipped_nights"] == 1).all()  # s015 has no AHI
    record = json.loads(Path(table["json_path"][0]).read_text())
    skipped = record["nights"]["skipped_missing_target"]
    assert sum(v["n_skipped"] for v in skipped.values()) == 1
    assert any("s015" in r for v in skipped.values() for r in v["recording_ids"])
    assert record["class_names"] == ["nsrr_ahi_hp3r_aasm15<15", "nsrr_ahi_hp3r_aasm15>=15"]
    assert all((out / f"night_{kind}.pt").is_file() for kind in ("mean_std", "stage_profile", "attention"))
    # the second run reuses the cached epoch features (shared with the linear probe's cache)
    assert _main_finetune().main([*args[:-1], str(tmp_path / "cache"), "--night_models", "mean_std"]) == 0
    last = json.loads(Path(pd.read_csv(out / "results.csv")["json_path"].iloc[-1]).read_text())
    assert last["timings"]["features_train_cache_hit"] is True
    # ... and so does the Stage linear probe of the same backbone: one extraction for both
    probe = ["--data_dir", str(store), "--output_dir", str(tmp_path / "probe"), "--ckpt_path", str(ckpt),
             "--max_steps", "5", "--n_boot", "5", "--feature_cache_dir", str(tmp_path / "cache"), "--run_name", "probe"]
    assert _main_finetune().main(probe) == 0
    assert json.loads((tmp_path / "probe" / "probe.json").read_text())["timings"]["features_train_cache_hit"] is True


@pytest.mark.parametrize("extra, message", [
    (["--target_variable", "nsrr_bmi"], "unknown --target_variable 'nsrr_bmi'.*available variables: nsrr_ahi_hp3r_aasm15, nsrr_sex"),
    (["--target_variable", "nsrr_ahi_hp3r_aasm15", "--target_threshold", "1000"], "too few subjects per class"),
    (["--target_variable", "nsrr_sex", "--night_models", "lstm"], "unknown --night_models"),
    ([], "needs --target_variable"),
])
def test_cli_bad_night_input_is_one_clear_line(night_store, tmp_path, capsys, extra, message):
    store, raw, _ = night_store
    args = ["--data_dir", str(store), "--output_dir", str(tmp_path / "o"), "--psg_encoder_name", "vit_nano",
            "--eval_level", "night", "--subject_tables", str(raw), "--feature_cache_dir", str(tmp_path / "c"), *extra]
    assert _main_finetune().main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("main_finetune.py: error:") and len(err.splitlines()) == 1
    import re
    assert re.search(message, err), err


def test_torch_is_seeded_per_night_model():
    train, val = _nights(20, 0), _nights(8, 1)
    a = train_night_model(train, val, "attention", 2, max_steps=10, eval_every=5, seed=3)
    b = train_night_model(train, val, "attention", 2, max_steps=10, eval_every=5, seed=3)
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k]), k


@pytest.mark.slow
def test_night_sweep_script_runs_night_and_sequence_rows(night_store, tmp_path):
    import os
    import subprocess

    store, raw, ckpt = night_store
    env = {**os.environ, "CKPT": str(ckpt), "DATA": str(store), "TABLES": str(raw), "OUT": str(tmp_path / "sweep"),
           "TARGETS": "nsrr_ahi_hp3r_aasm15>=15 nsrr_sex", "NIGHT_MODELS": "mean_std", "CONTEXTS": "2",
           "SEQ_MODELS": "bigru", "EXTRA": "--max_steps 10 --eval_every 5 --n_boot 10", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", str(ROOT / "bash_scripts" / "night_sweep.sh")], env=env, cwd=tmp_path,
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = pd.read_csv(tmp_path / "sweep" / "results.csv")
    assert table["task"].tolist() == ["nsrr_ahi_hp3r_aasm15>=15", "nsrr_sex", "Stage", "Stage"]
    assert table["setting"].tolist() == ["night_mean_std", "night_mean_std", "linear_probe", "sequence_bigru_k2"]


def test_night_flags_left_unset_take_the_night_defaults_and_zero_steps_are_refused(tmp_path):
    from osf.downstream.night import check_night_config
    from osf.downstream.run_config import NightConfig, resolve_downstream_config

    flags = {"data_dir": ".", "output_dir": ".", "eval_level": "night", "target_variable": "nsrr_age",
             "subject_tables": str(tmp_path), "night_models": "mean_std,attention"}
    cfg = resolve_downstream_config(flags)
    assert cfg.night == NightConfig(target_variable="nsrr_age", subject_tables=str(tmp_path),
                                    models="mean_std,attention")
    assert check_night_config(cfg)[1] == ["mean_std", "attention"]
    with pytest.raises(ValueError, match=r"night models need --max_steps and --eval_every >= 1, got 300 and 0"):
        check_night_config(resolve_downstream_config({**flags, "eval_every": 0}))

"""Metrics against scikit-learn on the same predictions; bootstrap CIs by subject."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    cohen_kappa_score,
    f1_score,
    roc_auc_score,
)
from sklearn.preprocessing import label_binarize

from osf.downstream import metrics as M


def _fake_predictions(n: int, num_classes: int, seed: int, skill: float = 2.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, num_classes, n)
    logits = rng.normal(size=(n, num_classes))
    logits[np.arange(n), y] += skill
    # coarse rounding creates ties, which AUROC/AP must handle like sklearn
    logits = np.round(logits, 1)
    proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    subjects = rng.integers(0, 12, n).astype(str)
    return y, proba, subjects


@pytest.mark.parametrize("seed", [0, 1])
def test_multiclass_scalars_match_sklearn(seed):
    y, proba, _ = _fake_predictions(600, 4, seed)
    got = M.multiclass_scalars(y, proba)
    pred = proba.argmax(1)
    assert got["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert got["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert got["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert got["kappa"] == pytest.approx(cohen_kappa_score(y, pred))  # unweighted
    assert got["auroc"] == pytest.approx(roc_auc_score(y, proba, multi_class="ovr", average="macro"))
    assert got["auprc"] == pytest.approx(
        average_precision_score(label_binarize(y, classes=range(4)), proba, average="macro")
    )


def test_binary_scalars_match_sklearn_with_ties():
    y, proba, _ = _fake_predictions(500, 2, 3, skill=1.0)
    thr = 0.4
    got = M.binary_scalars(y, proba, thr)
    pred = (proba[:, 1] >= thr).astype(int)
    assert got["auroc"] == pytest.approx(roc_auc_score(y, proba[:, 1]))
    assert got["auprc"] == pytest.approx(average_precision_score(y, proba[:, 1]))
    assert got["f1"] == pytest.approx(f1_score(y, pred))
    tp, fn = np.sum((pred == 1) & (y == 1)), np.sum((pred == 0) & (y == 1))
    tn, fp = np.sum((pred == 0) & (y == 0)), np.sum((pred == 1) & (y == 0))
    assert got["sensitivity"] == pytest.approx(tp / (tp + fn))
    assert got["specificity"] == pytest.approx(tn / (tn + fp))
    assert got["prevalence"] == pytest.approx(y.mean())


def test_choose_threshold_maximises_f1():
    y, proba, _ = _fake_predictions(400, 2, 4, skill=1.0)
    thr = M.choose_threshold(y, proba)
    best = M.binary_scalars(y, proba, thr)["f1"]
    for t in np.unique(proba[:, 1]):
        assert M.binary_scalars(y, proba, t)["f1"] <= best + 1e-12


def test_evaluate_drops_unknown_and_cis_contain_point():
    y, proba, subjects = _fake_predictions(800, 4, 5)
    y[:50] = -1
    recordings = subjects
    out = M.evaluate_predictions(y, proba, subjects, recordings, ["W", "Light", "Deep", "REM"], n_boot=200)
    assert out["n_unlabelled"] == 50 and out["n_epochs"] == 750
    for k in ("accuracy", "balanced_accuracy", "macro_f1", "kappa", "auroc", "auprc"):
        lo, hi = out[f"{k}_ci95"]
        assert lo <= out[k] <= hi, k
        assert hi > lo, k  # 12 subjects: the interval has width
    cm = np.array(out["confusion_matrix"])
    assert cm.sum() == 750
    assert out["per_class_f1"]["REM"] == pytest.approx(f1_score(y[50:], proba[50:].argmax(1), average=None)[3])
    assert 0.0 <= out["stage_fraction_mae"] <= 1.0


def test_bootstrap_resamples_subjects_not_epochs():
    # Two subjects: one all-correct, one all-wrong. Resampling subjects gives accuracies in {0, .5, 1};
    # resampling epochs would give values spread around 0.5.
    n = 200
    y = np.zeros(n, dtype=int)
    proba = np.zeros((n, 2))
    proba[:100, 0] = 1.0
    proba[100:, 1] = 1.0
    subjects = np.array(["a"] * 100 + ["b"] * 100)

    def acc(idx):
        return {"accuracy": float((proba[idx].argmax(1) == y[idx]).mean())}

    ci = M.bootstrap_ci(acc, subjects, n_boot=300, seed=0)
    assert ci["accuracy"] == (0.0, 1.0)


def test_stage_fraction_error_per_night():
    y_true = np.array([0, 0, 1, 1, 2, 2, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 2, 2, 2, 0])
    rec = np.array(["n1"] * 4 + ["n2"] * 4)
    mean_err, per_stage = M.stage_fraction_error(y_true, y_pred, rec, 3)
    # n1: W .5->.25, L .5->.75 ; n2: W 0->.25, D 1->.75
    np.testing.assert_allclose(per_stage, [(0.25 + 0.25) / 2, (0.25 + 0) / 2, (0 + 0.25) / 2])
    assert mean_err == pytest.approx(per_stage.mean())


def test_evaluate_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="do not match"):
        M.evaluate_predictions(np.zeros(5, int), np.zeros((5, 3)), np.zeros(5), np.zeros(5), ["a", "b"])
    with pytest.raises(ValueError, match="all labels are -1"):
        M.evaluate_predictions(-np.ones(5, int), np.zeros((5, 2)), np.zeros(5), np.zeros(5), ["a", "b"])


def _run_predictions(rng, n_subjects=10, per_subject=40, signal=1.0, classes=2):
    subjects = np.repeat([f"s{i}" for i in range(n_subjects)], per_subject)
    labels = rng.integers(0, classes, subjects.size)
    logits = rng.normal(size=(subjects.size, classes))
    logits[np.arange(subjects.size), labels] += signal
    proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return {"labels": labels, "proba": proba, "subject_ids": subjects, "recording_ids": subjects,
            "epoch_index": np.tile(np.arange(per_subject), n_subjects), "threshold": np.array(np.nan)}


def test_paired_difference_matches_the_two_metrics_and_round_trips(tmp_path):
    from osf.downstream.metrics import load_predictions, paired_difference, save_predictions

    rng = np.random.default_rng(0)
    strong = _run_predictions(rng, signal=2.0)
    weak = {**strong, "proba": _run_predictions(np.random.default_rng(1), signal=0.0)["proba"]}
    path = save_predictions(strong, tmp_path / "a.npz", threshold=None)
    strong_back = load_predictions(path)
    for key in ("labels", "proba", "epoch_index"):
        np.testing.assert_array_equal(strong_back[key], strong[key])
    # b is a shuffled copy: matching is by (recording, epoch), not by row order
    order = rng.permutation(weak["labels"].size)
    weak_shuffled = {k: (v[order] if k != "threshold" else v) for k, v in weak.items()}
    out = paired_difference(strong_back, weak_shuffled, n_boot=200)
    auroc_a = M.binary_auroc(strong["labels"], strong["proba"][:, 1])
    auroc_b = M.binary_auroc(weak["labels"], weak["proba"][:, 1])
    assert out["auroc"]["a"] == pytest.approx(auroc_a) and out["auroc"]["b"] == pytest.approx(auroc_b)
    assert out["auroc"]["diff"] == pytest.approx(auroc_a - auroc_b)
    assert 0 < out["auroc"]["low"] <= out["auroc"]["diff"] <= out["auroc"]["high"]
    same = paired_difference(strong_back, strong, n_boot=50)
    assert same["auroc"]["diff"] == 0 and same["auroc"]["low"] == 0 == same["auroc"]["high"]


def _renamed(pred: dict, tag: str) -> dict:
    """The same predictions as another run's: other subjects and recordings."""
    return {**pred, "subject_ids": np.char.add(pred["subject_ids"], tag), "recording_ids": np.char.add(pred["recording_ids"], tag)}


def test_pooled_difference_averages_the_runs_and_resamples_subjects_within_each():
    from osf.downstream.metrics import paired_difference, pooled_paired_difference

    strong = _run_predictions(np.random.default_rng(0), signal=2.0)
    weak = {**strong, "proba": _run_predictions(np.random.default_rng(1), signal=0.0)["proba"]}
    worse = {**strong, "proba": _run_predictions(np.random.default_rng(2), signal=3.0)["proba"]}
    single = paired_difference(strong, weak, n_boot=300)["auroc"]
    assert pooled_paired_difference([(strong, weak)], n_boot=300)["auroc"] == single
    # the same run twice (other subjects): the same difference, a CI narrower by about sqrt(2)
    twice = pooled_paired_difference([(strong, weak), (_renamed(strong, "b"), _renamed(weak, "b"))], n_boot=300)["auroc"]
    assert twice["diff"] == pytest.approx(single["diff"])
    ratio = (twice["high"] - twice["low"]) / (single["high"] - single["low"])
    assert 0.55 < ratio < 0.85, ratio
    # runs that disagree pool to the mean of their differences
    other = paired_difference(strong, worse, n_boot=10)["auroc"]
    mixed = pooled_paired_difference([(strong, weak), (_renamed(strong, "b"), _renamed(worse, "b"))], n_boot=300)["auroc"]
    assert mixed["diff"] == pytest.approx((single["diff"] + other["diff"]) / 2)
    assert mixed["a"] == pytest.approx(single["a"]) and mixed["low"] < mixed["diff"] < mixed["high"]


def test_paired_difference_refuses_runs_on_different_epochs_or_labels(tmp_path):
    from osf.downstream.metrics import load_predictions, paired_difference

    rng = np.random.default_rng(0)
    a = _run_predictions(rng, classes=4)
    other_split = {**a, "recording_ids": np.char.add(a["recording_ids"], "x")}
    with pytest.raises(ValueError, match="share no labelled epochs"):
        paired_difference(a, other_split)
    relabelled = {**a, "labels": (a["labels"] + 1) % 4}
    with pytest.raises(ValueError, match="disagree on the labels"):
        paired_difference(a, relabelled)
    (tmp_path / "bad.npz").write_text("not numpy")
    with pytest.raises(ValueError, match="bad.npz: not a predictions file"):
        load_predictions(tmp_path / "bad.npz")

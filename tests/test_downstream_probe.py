"""Linear probe on cached features, k-shot sampling, losses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from osf.downstream.epoch.fewshot import aggregate_over_seeds, sample_k_per_class
from osf.downstream.epoch.linear_probe import check_labels, predict_proba, train_linear_probe
from osf.downstream.losses import BalancedSoftmaxLoss, FocalLoss, make_loss

pytestmark = pytest.mark.usefixtures("one_thread")


def _planted(n: int, dim: int, num_classes: int, seed: int):
    """Features with a planted linear signal (class = argmax of a fixed projection), plus an offset/scale."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(dim, num_classes))
    x = rng.normal(size=(n, dim)).astype(np.float32)
    y = (x @ w).argmax(1)
    return x * 3.0 + 5.0, y  # non-standardised on purpose: the head must absorb the scaling


def test_probe_learns_planted_signal_and_head_works_on_raw_features():
    x, y = _planted(1500, 32, 4, 0)
    res = train_linear_probe(x[:1000], y[:1000], x[1000:1250], y[1000:1250], num_classes=4, max_steps=300, lr=5e-3)
    acc = (predict_proba(res.head, x[1250:]).argmax(1) == y[1250:]).mean()
    assert acc > 0.85
    assert res.best_score > 0.8 and 1 <= res.best_step <= 300
    assert len(res.history) == 6  # eval every 50 steps


def test_probe_on_shuffled_labels_stays_at_chance():
    x, y = _planted(1500, 32, 4, 1)
    y_shuffled = np.random.default_rng(0).permutation(y)
    res = train_linear_probe(x[:1000], y_shuffled[:1000], x[1000:1250], y_shuffled[1000:1250], 4, max_steps=300, lr=5e-3)
    acc = (predict_proba(res.head, x[1250:]).argmax(1) == y_shuffled[1250:]).mean()
    assert acc < 0.4  # chance is 0.25


def test_probe_ignores_unknown_labels_and_binary_selects_on_auprc():
    x, y = _planted(800, 16, 2, 2)
    y = y.copy()
    y[::7] = -1
    res = train_linear_probe(x[:600], y[:600], x[600:], y[600:], 2, max_steps=100, loss_type="balanced_softmax")
    assert res.history[-1]["val_auprc"] > 0.85
    assert res.selection_metric == "auprc" and res.best_score > 0.8


def test_probe_rejects_single_class_and_unlabelled_splits():
    x = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    with pytest.raises(ValueError, match="only one class"):
        train_linear_probe(x, np.zeros(50, int), x, np.r_[np.zeros(25, int), np.ones(25, int)], 2, max_steps=5)
    with pytest.raises(ValueError, match="val split: no labelled epochs"):
        check_labels(-np.ones(50, int), 2, "val split")


def test_k_shot_exact_reproducible_and_seed_dependent():
    labels = np.repeat(np.arange(4), [30, 12, 50, 9])
    labels = np.r_[labels, -np.ones(10, int)]
    a = sample_k_per_class(labels, 5, seed=3, num_classes=4)
    b = sample_k_per_class(labels, 5, seed=3, num_classes=4)
    c = sample_k_per_class(labels, 5, seed=4, num_classes=4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    np.testing.assert_array_equal(np.bincount(labels[a], minlength=4), [5, 5, 5, 5])
    assert len(set(a.tolist())) == 20


def test_k_larger_than_class_size_names_the_class():
    labels = np.repeat(np.arange(4), [30, 12, 50, 9])
    with pytest.raises(ValueError, match=r"k=10 per class but class 'REM' has only 9"):
        sample_k_per_class(labels, 10, seed=0, num_classes=4, class_names=["W", "Light", "Deep", "REM"])


def test_aggregate_over_seeds():
    agg = aggregate_over_seeds([{"kappa": 0.5, "n": 3}, {"kappa": 0.7, "n": 3}])
    assert agg["kappa"]["mean"] == pytest.approx(0.6)
    assert agg["kappa"]["std"] == pytest.approx(np.std([0.5, 0.7], ddof=1))


def test_losses_reduce_to_ce_and_reweight():
    logits = torch.randn(64, 3)
    target = torch.randint(0, 3, (64,))
    ce = torch.nn.functional.cross_entropy(logits, target)
    assert FocalLoss(gamma=0.0)(logits, target) == pytest.approx(float(ce), rel=1e-5)
    assert FocalLoss(gamma=2.0)(logits, target) < ce
    # uniform prior = plain CE (a constant shift of all logits)
    assert BalancedSoftmaxLoss(torch.ones(3))(logits, target) == pytest.approx(float(ce), rel=1e-5)
    with pytest.raises(ValueError, match="unknown loss_type"):
        make_loss("hinge")

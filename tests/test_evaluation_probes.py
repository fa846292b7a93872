"""Probes as estimators (issue 26): the logistic-regression grid, chosen on validation only."""

from __future__ import annotations

import numpy as np
import pytest

from osf.downstream.metrics import choose_threshold
from osf.evaluation.probes import (
    Split,
    StandardisedLogReg,
    fit_probe_grid,
    select_on_validation,
    selection_score,
)

PENALTIES = (1e-3, 1e-2, 1e-1, 1.0, 10.0)


def _binary(rng, n, dims=40, signal=1.0):
    y = rng.integers(0, 2, n)
    x = rng.normal(size=(n, dims))
    x[:, 0] += signal * (2 * y - 1)
    return x, y


def test_the_penalty_is_chosen_on_validation_never_on_test():
    rng = np.random.default_rng(0)
    (xt, yt), (xv, yv), (xs, ys) = _binary(rng, 120), _binary(rng, 400), _binary(rng, 400)
    test_labels = 1 - ys  # a test split that ranks the heads the other way round
    fit = fit_probe_grid({"v": Split(xt, yt)}, {"v": Split(xv, yv)}, {"v": xs}, 2, PENALTIES)
    val_scores = {p.c: p.val_score for p in fit.selection.points}
    test_scores = {c: selection_score(test_labels, StandardisedLogReg(2).fit(Split(xt, yt), c).predict_proba(xs))
                   for c in PENALTIES}
    assert fit.selection.c == max(val_scores, key=val_scores.get)
    # a selection that looked at the test labels would pick this penalty instead
    assert max(test_scores, key=test_scores.get) != fit.selection.c
    # the chosen head is the one refitted at that penalty, and its test probabilities are that head's
    np.testing.assert_allclose(fit.proba["test"], StandardisedLogReg(2).fit(Split(xt, yt), fit.selection.c)
                               .predict_proba(xs), atol=3e-3)  # warm start: the same optimum within lbfgs tolerance


def test_views_compete_on_validation_and_the_threshold_comes_from_validation():
    rng = np.random.default_rng(1)
    (xt, yt), (xv, yv), (xs, _) = _binary(rng, 200), _binary(rng, 300), _binary(rng, 300)
    noise = {s: rng.normal(size=(n, 10)) for s, n in (("train", 200), ("val", 300), ("test", 300))}
    fit = fit_probe_grid({"signal": Split(xt, yt), "noise": Split(noise["train"], yt)},
                         {"signal": Split(xv, yv), "noise": Split(noise["val"], yv)},
                         {"signal": xs, "noise": noise["test"]}, 2, (0.01, 1.0))
    assert fit.selection.view == "signal" and len(fit.selection.points) == 4
    assert fit.threshold == choose_threshold(yv, fit.proba["val"])
    record = fit.record()
    assert record["view"] == "signal" and {g["view"] for g in record["grid"]} == {"signal", "noise"}


def test_classes_absent_from_training_get_zero_probability_and_one_class_is_refused():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(90, 5))
    y = np.repeat([0, 1, 3], 30)  # class 2 never trained
    x[:, 0] += y
    head = StandardisedLogReg(4).fit(Split(x, y), 1.0)
    proba = head.predict_proba(x)
    assert proba.shape == (90, 4) and np.all(proba[:, 2] == 0) and np.allclose(proba.sum(1), 1)
    coef, intercept = head.coefficients()  # the standardisation folded into raw-feature weights
    logits = x @ coef.T + intercept
    np.testing.assert_allclose(np.exp(logits) / np.exp(logits).sum(1, keepdims=True), proba[:, [0, 1, 3]], atol=1e-6)
    with pytest.raises(ValueError, match="one class"):
        select_on_validation({"v": Split(x, np.zeros(90, int))}, {"v": Split(x, y)}, 4, (1.0,))
    with pytest.raises(ValueError, match="same views"):
        select_on_validation({"a": Split(x, y)}, {"b": Split(x, y)}, 4, (1.0,))


def test_unknown_labels_are_left_out_of_fitting_and_selection():
    rng = np.random.default_rng(3)
    (xt, yt), (xv, yv) = _binary(rng, 200), _binary(rng, 200)
    yt_unknown, yv_unknown = yt.copy(), yv.copy()
    yt_unknown[::4], yv_unknown[::4] = -1, -1
    a = fit_probe_grid({"v": Split(xt, yt_unknown)}, {"v": Split(xv, yv_unknown)}, {"v": xv}, 2, (0.1, 1.0))
    keep_t, keep_v = yt_unknown >= 0, yv_unknown >= 0
    b = fit_probe_grid({"v": Split(xt[keep_t], yt[keep_t])}, {"v": Split(xv[keep_v], yv[keep_v])}, {"v": xv}, 2, (0.1, 1.0))
    assert a.selection.c == b.selection.c and a.threshold == b.threshold
    np.testing.assert_allclose(a.proba["test"], b.proba["test"], atol=1e-6)

"""Probes as estimators (issue 26): the logistic-regression grid, chosen on validation only; the streamed torch
head for features beyond memory; the grid extended past its edge."""

from __future__ import annotations

import numpy as np
import pytest

from osf.downstream.metrics import choose_threshold
from osf.evaluation.probes import (
    Split,
    StandardisedLogReg,
    fit_probe_grid,
    penalty_summary,
    select_on_validation,
    selection_score,
)
from osf.evaluation.torch_head import TorchLogReg, chunk_rows

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
    assert fit.selection.view == "signal" and len([p for p in fit.selection.points if p.extension == 0]) == 4
    assert fit.selection.c == 1.0 and fit.selection.extended == [10.0]  # the top edge won: one decade more, lost
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


def _classes(rng, n, k, dims=12):
    """``k`` classes shifted apart on the first ``k`` columns; columns of unequal scale and offset."""
    y = rng.integers(0, k, n)
    x = rng.normal(size=(n, dims)) * np.linspace(0.5, 3, dims) + np.linspace(-5, 5, dims)
    x[:, :k] += 1.5 * np.eye(k)[y]
    return x, y


@pytest.mark.parametrize("k", [2, 5])
def test_the_torch_head_fits_the_same_estimator_as_scikit_learn(k):
    rng = np.random.default_rng(4)
    x, y = _classes(rng, 600, k)
    xv, _ = _classes(rng, 200, k)
    for c in (0.01, 1.0):
        ours = TorchLogReg(k, chunk_mib=0.02).fit(Split(x, y), c)  # several chunks of the 600 rows
        assert chunk_rows(x, 0.02) < 600 and ours.converged
        ref = StandardisedLogReg(k)
        # scikit-learn's default tolerance (1e-4) leaves its probabilities ~1e-3 off its optimum at C=1: the
        # reference is the same estimator solved tightly
        ref.model.set_params(tol=1e-10, max_iter=10_000)
        ref.fit(Split(x, y), c)
        np.testing.assert_allclose(ours.predict_proba(xv), ref.predict_proba(xv), atol=1e-3)
        for a, b in zip(ours.coefficients(), ref.coefficients(), strict=True):  # binary: one weight row, as sklearn
            assert a.shape == b.shape
            np.testing.assert_allclose(a, b, rtol=1e-3, atol=2e-3)


def test_the_torch_head_reads_a_memory_map_as_an_array_and_skips_unknown_labels(tmp_path):
    rng = np.random.default_rng(5)
    x, y = _classes(rng, 500, 3)
    np.save(tmp_path / "x.npy", x.astype(np.float32))
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    in_memory = np.asarray(mapped).copy()
    a = TorchLogReg(3, chunk_mib=0.02).fit(Split(mapped, y), 0.1)
    b = TorchLogReg(3, chunk_mib=0.02).fit(Split(in_memory, y), 0.1)
    np.testing.assert_array_equal(a.predict_proba(mapped), b.predict_proba(in_memory))
    unknown = y.copy()
    unknown[::3] = -1
    keep = unknown >= 0
    c = TorchLogReg(3, chunk_mib=0.02).fit(Split(mapped, unknown), 0.1)
    d = TorchLogReg(3, chunk_mib=0.02).fit(Split(in_memory[keep], y[keep]), 0.1)
    np.testing.assert_allclose(c.predict_proba(mapped), d.predict_proba(in_memory), atol=1e-6)


def test_features_beyond_the_memory_budget_go_to_the_torch_head():
    rng = np.random.default_rng(6)
    (xt, yt), (xv, yv) = _binary(rng, 200, dims=10), _binary(rng, 200, dims=10)
    parts = {"v": Split(xt, yt)}, {"v": Split(xv, yv)}, {"v": xv}
    in_memory = fit_probe_grid(*parts, 2, (0.01, 0.1, 1.0), max_extensions=0)
    streamed = fit_probe_grid(*parts, 2, (0.01, 0.1, 1.0), max_in_memory_gib=1e-6, max_extensions=0)  # 16 KB > 1 KiB
    assert in_memory.record()["head"] == "sklearn" and isinstance(in_memory.head, StandardisedLogReg)
    assert streamed.record()["head"] == "torch" and isinstance(streamed.head, TorchLogReg)
    assert {g["head"] for g in streamed.record()["grid"]} == {"torch"}
    assert streamed.selection.c == in_memory.selection.c
    np.testing.assert_allclose(streamed.proba["test"], in_memory.proba["test"], atol=1e-3)


def _spread(rng, n, dims=200, shift=0.08):
    """A weak class difference spread over many columns: few training rows want the strongest penalty."""
    y = rng.integers(0, 2, n)
    return rng.normal(size=(n, dims)) + shift * (2 * y - 1)[:, None], y


def test_a_choice_at_the_grids_edge_extends_the_grid_by_a_decade():
    rng = np.random.default_rng(0)
    (xt, yt), (xv, yv) = _spread(rng, 40), _spread(rng, 400)
    parts = {"v": Split(xt, yt)}, {"v": Split(xv, yv)}, {"v": xv}
    fixed = fit_probe_grid(*parts, 2, (0.01, 0.1, 1.0), max_extensions=0)
    assert fixed.selection.c == 0.01 and fixed.selection.extended == []  # the strongest penalty wins
    fit = fit_probe_grid(*parts, 2, (0.01, 0.1, 1.0))
    assert fit.selection.extended == [1e-3, 1e-4] and fit.record()["extended_C"] == [1e-3, 1e-4]
    added = [p for p in fit.selection.points if p.extension]
    assert [(p.c, p.extension) for p in added] == [(1e-3, 1), (1e-4, 2)]
    for p in added:  # each added head is refitted at its penalty and scored on validation
        assert p.val_score == pytest.approx(selection_score(yv, StandardisedLogReg(2).fit(Split(xt, yt), p.c)
                                                            .predict_proba(xv)), abs=1e-3)
    assert fit.selection.c == 1e-4 and fit.selection.val_score > fixed.selection.val_score
    assert "(at the grid's edge)" in penalty_summary(fit)  # still at the edge after two extensions: reported


def test_a_choice_inside_the_grid_does_not_extend_it():
    rng = np.random.default_rng(0)
    (xt, yt), (xv, yv) = _binary(rng, 120), _binary(rng, 400)
    fit = fit_probe_grid({"v": Split(xt, yt)}, {"v": Split(xv, yv)}, {"v": xv}, 2, PENALTIES)
    assert fit.selection.c == 0.1 and fit.selection.extended == [] and len(fit.selection.points) == len(PENALTIES)
    assert "edge" not in penalty_summary(fit)

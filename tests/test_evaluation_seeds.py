"""Seeds as the unit (issue 26): the hierarchical bootstrap widens with between-seed spread."""

from __future__ import annotations

import math

import numpy as np
import pytest

from osf.downstream.metrics import pooled_paired_difference
from osf.evaluation.seeds import format_seed_rows, seed_level_difference, seed_t_test, verdict


def _run(rng, tag, signal, n_subjects=20, per_subject=20):
    """One seed's two runs on its own subjects: 'a' separates the classes by ``signal``, 'b' does not."""
    subjects = np.repeat([f"{tag}{i}" for i in range(n_subjects)], per_subject)
    labels = rng.integers(0, 2, subjects.size)

    def proba(strength):
        logits = rng.normal(size=(subjects.size, 2))
        logits[np.arange(subjects.size), labels] += strength
        return np.exp(logits) / np.exp(logits).sum(1, keepdims=True)

    common = {"labels": labels, "subject_ids": subjects, "recording_ids": subjects,
              "epoch_index": np.tile(np.arange(per_subject), n_subjects), "threshold": np.array(np.nan)}
    return {**common, "proba": proba(1.0 + signal)}, {**common, "proba": proba(1.0)}


def test_two_disagreeing_seeds_cross_zero_where_pooling_them_as_subjects_does_not():
    rng = np.random.default_rng(0)
    pairs = [_run(rng, "s", 2.0), _run(rng, "t", -0.3)]  # one seed gains a lot, the other loses
    pooled = pooled_paired_difference(pairs, n_boot=200)["auroc"]
    assert pooled["low"] > 0  # subjects pooled over seeds: "better"
    result = seed_level_difference(pairs, "auroc", ["seed 0", "seed 1"], n_boot=200)
    assert result.diff == pytest.approx(pooled["diff"])
    assert result.per_seed[0].low > 0 and result.per_seed[1].diff < 0  # the seeds disagree
    assert result.low < 0 < result.high and result.verdict == "not separated"
    assert result.high - result.low > 2 * (pooled["high"] - pooled["low"])
    assert result.t_test.df == 1 and result.t_test.p > 0.05
    text = "\n".join(format_seed_rows(result, "Stage"))
    assert "seed 0" in text and "not separated over 2 seed(s)" in text


def test_agreeing_seeds_decide_and_one_seed_says_its_ci_is_about_subjects_only():
    rng = np.random.default_rng(1)
    pairs = [_run(rng, tag, 1.0) for tag in "abc"]
    result = seed_level_difference(pairs, "auroc", n_boot=200)
    assert result.verdict == "better" and result.t_test.p < 0.05 and result.n_seeds == 3
    single = seed_level_difference(pairs[:1], "auroc", n_boot=200)
    assert single.notes and "subjects only" in single.notes[0]
    assert single.low == pytest.approx(single.per_seed[0].low) and math.isnan(single.t_test.p)
    assert single.to_dict()["verdict"] == single.verdict


def test_the_t_test_across_seeds_reproduces_the_issues_numbers():
    t = seed_t_test([0.044, 0.049, -0.005])  # the 600-step staging gains of three quick-start seeds
    assert (round(t.t, 2), t.df, round(t.p, 2)) == (1.70, 2, 0.23)
    assert t.low < 0 < t.high
    assert verdict(0.01, 0.02) == "better" and verdict(-0.02, -0.01) == "worse" and verdict(-1, 1) == "not separated"
    assert math.isnan(seed_t_test([0.1]).p)


@pytest.mark.parametrize("classes, metric", [(4, "kappa"), (2, "auroc"), (4, "macro_f1")])
def test_one_metric_bootstraps_score_what_the_full_metrics_give(classes, metric):
    """The seed-level bootstrap scores only its metric: the same numbers as every metric's scoring gives."""
    from osf.downstream.metrics import PairedScores

    rng = np.random.default_rng(0)
    n = 300
    y = rng.integers(0, classes, n)
    run = lambda shift: {"labels": y, "proba": rng.dirichlet(np.ones(classes), n) + shift * np.eye(classes)[y],
                         "subject_ids": np.repeat(np.arange(10), n // 10).astype(str),
                         "recording_ids": np.repeat(np.arange(10), n // 10).astype(str), "epoch_index": np.arange(n),
                         "threshold": np.array(0.5 if classes == 2 else np.nan)}
    scores = PairedScores(run(0.3), run(0.1))
    for _ in range(5):
        idx = rng.integers(0, n, n)
        assert scores.difference_of(metric)(idx)[metric] == pytest.approx(scores.difference(idx)[metric], abs=1e-12)

"""The realism harness (benchmarks/bench_realism.py) on a small scale: YASA's instruments, the target table."""

from __future__ import annotations

import numpy as np
import pytest
from bench_utils import load_benchmark

from osf.datasets.synthetic import generate_night


def _bench():
    return load_benchmark("bench_realism")


def test_yasa_detectors_find_real_psg_densities_on_a_generator_2_night():
    pytest.importorskip("yasa")
    bench = _bench()
    night = generate_night("generic", 1, 500, hours=2.0)
    d = bench.detector_densities(night)
    assert d["minutes_n2"] >= 20
    lo, hi = bench.DETECTOR_REFERENCE["spindles_per_min_n2"][0]
    assert lo <= d["spindles_per_min_n2"] <= hi
    if d["minutes_rem"] >= 5:
        lo, hi = bench.DETECTOR_REFERENCE["rems_per_min_rem"][0]
        assert lo <= d["rems_per_min_rem"] <= hi


def test_cohort_statistics_are_whole_nights_beside_the_literature():
    bench = _bench()
    stats = bench.cohort_statistics(["generic", "chat"], nights=4, seed=0, generator=2)
    for cohort in ("generic", "chat"):
        assert 7.0 <= stats[cohort]["tib_h"]["mean"] <= 9.0
        total = sum(stats[cohort][f"{k}_pct"]["mean"] for k in ("n1", "n2", "n3", "rem"))
        assert total == pytest.approx(100.0, abs=0.01)
    assert stats["chat"]["n3_pct"]["mean"] > stats["generic"]["n3_pct"]["mean"]


def test_targets_table_says_which_targets_hold():
    bench = _bench()
    diff = lambda d: {"a": 0.0, "b": 0.0, "diff": d, "low": d - 0.02, "high": d + 0.02}
    record = {"power_vs_cnn": {
        "Stage": {"supervised": {"value": 0.80, "ci95": [0.75, 0.85]}, "power48": {"value": 0.72, "ci95": [0.7, 0.74]},
                  "cnn_minus_power48": diff(0.08)},
        "Arousal": {"supervised": {"value": 0.85, "ci95": [0.8, 0.9]}, "power48": {"value": 0.83, "ci95": [0.8, 0.86]},
                    "cnn_minus_power48": diff(0.02)}}}
    rows = {r["check"]: r["holds"] for r in bench.targets(record)}
    assert rows["CNN staging kappa"] is True
    assert rows["CNN - power-48, staging kappa"] is True
    assert rows["CNN - power-48, arousal AUROC"] is False
    record["power_vs_cnn"]["Stage"]["supervised"]["value"] = 0.93  # above expert agreement: too easy
    assert {r["check"]: r["holds"] for r in bench.targets(record)}["CNN staging kappa"] is False


def test_power48_features_are_the_48_numbers_of_the_power_summary():
    from osf.downstream.ceilings import power48_features

    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 12, 1920)).astype(np.float32)
    x[1, 0, 1600:] *= 10.0  # a burst in the last 5 s window of channel 0
    mask = np.ones((3, 12), dtype=bool)
    mask[2, 5] = False
    f = power48_features(x, mask).reshape(3, 12, 4)
    assert f.shape == (3, 12, 4)
    np.testing.assert_allclose(f[0, :, 0], np.log(x[0].astype(np.float64).var(-1) + 1e-6), rtol=1e-5)
    assert f[1, 0, 3] == pytest.approx(np.log(x[1, 0, 1600:].astype(np.float64).var() + 1e-6), rel=1e-4)  # max
    assert f[1, 0, 1] > 1.0 > f[0, 0, 1]  # the windows' spread sees the burst
    assert np.all(f[2, 5] == 0.0)  # an absent channel contributes zeros

"""YASA's pretrained stager still agrees with the synthetic hypnogram (bar-level realism of the EEG/EOG/EMG; slow)."""

from __future__ import annotations

import pytest
from bench_utils import load_benchmark

pytestmark = pytest.mark.slow

# Generator 1 (3 x 3 h "generic" nights, seed 0; benchmarks/README.md, "Supervised and handcrafted ceilings per
# channel preset"): 4-class kappa 0.785 on 1.1, 0.696 on 1.2. Generator 2.0 renders windows of whole nights, and
# YASA (trained on whole nights from lights off) is judged on whole nights: 4-class kappa 0.627 [0.550, 0.700],
# 5-class accuracy 0.738 on 5 generic nights of seed 500 (README, "Synthetic realism"; below the 0.65
# target). The floors sit ~0.07 below: room for deliberate generator changes, none for a stager that stops
# seeing sleep.
YASA_FLOOR_4CLASS_KAPPA = 0.55
YASA_FLOOR_5CLASS_ACCURACY = 0.65


def _bench():
    return load_benchmark("bench_ceilings")


def test_yasa_agrees_with_the_synthetic_hypnogram(tmp_path):
    pytest.importorskip("yasa")
    pytest.importorskip("lightgbm")
    result = _bench().yasa_agreement(tmp_path, nights=3, hours=12.0, seed=0)  # whole nights
    assert result["four_class"]["kappa"] > YASA_FLOOR_4CLASS_KAPPA
    assert result["five_class"]["accuracy"] > YASA_FLOOR_5CLASS_ACCURACY

"""Outputs other sleep tools read: BIDS-style hypnogram TSV, mne.Annotations, YASA-defined statistics."""

from __future__ import annotations

import datetime
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import config
from osf.predict import (
    NightPrediction,
    hypnogram_annotations,
    stage_agreement_statistics,
    summarize_night,
    write_bids_hypnogram,
    yasa_statistics,
)
from osf.predict.night import write_night_outputs
from osf.predict.writers import write_edf_hypnogram

S5, S4 = list(config.STAGE_NAMES_5), list(config.STAGE_NAMES_4)
YASA5 = {"W": "WAKE", "N1": "N1", "N2": "N2", "N3": "N3", "REM": "REM"}
YASA4 = {"W": "WAKE", "Light": "LIGHT", "Deep": "DEEP", "REM": "REM"}


def markov_hypnogram(n: int, n_stages: int, seed: int, unknown: float = 0.0, p_stay: float = 0.85) -> np.ndarray:
    """Stage runs like a night's (stay with ``p_stay``), with a fraction ``unknown`` of -1 epochs."""
    rng = np.random.default_rng(seed)
    stages = np.empty(n, dtype=np.int64)
    stages[0] = 0
    for i in range(1, n):
        stages[i] = stages[i - 1] if rng.random() < p_stay else rng.integers(n_stages)
    stages[rng.random(n) < unknown] = config.STAGE_UNKNOWN
    return stages


def _close(a: float, b: float, tol: float = 1e-4) -> bool:
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= tol


# --- files and annotations ----------------------------------------------------------------------
def test_bids_tsv_round_trips(tmp_path):
    stages = np.array([0, 0, 1, 2, 2, 3, 4, 4, 0])
    path = write_bids_hypnogram(tmp_path / "night_hypnogram.tsv", stages, S5)
    assert path.read_text().splitlines()[:2] == ["onset\tduration\tstage", "0.0\t30.0\tW"]
    table = pd.read_csv(path, sep="\t")
    assert list(table.columns) == ["onset", "duration", "stage"]
    np.testing.assert_array_equal(table["onset"], np.arange(9) * 30.0)
    assert (table["duration"] == 30.0).all()
    assert list(table["stage"]) == [S5[s] for s in stages]
    # unknown epochs (a scored hypnogram) are BIDS n/a
    scored = write_bids_hypnogram(tmp_path / "scored.tsv", np.array([0, -1, 2]), S4, epoch_sec=20)
    assert scored.read_text().splitlines()[1:] == ["0.0\t20.0\tW", "20.0\t20.0\tn/a", "40.0\t20.0\tDeep"]


def test_annotations_match_the_edf_hypnogram(tmp_path):
    import mne

    stages = markov_hypnogram(120, 4, seed=3)
    start = datetime.datetime(2021, 3, 4, 22, 15, 0)
    annotations = hypnogram_annotations(stages, S4, orig_time=start)
    assert isinstance(annotations, mne.Annotations)
    assert annotations.orig_time == start.replace(tzinfo=datetime.timezone.utc)
    assert np.isclose(annotations.duration.sum(), 120 * 30.0)
    read = mne.read_annotations(write_edf_hypnogram(tmp_path / "h.edf", stages, S4))
    np.testing.assert_allclose(annotations.onset, read.onset)
    np.testing.assert_allclose(annotations.duration, read.duration)
    assert list(annotations.description) == list(read.description)
    # 30 s events for MNE's sleep-staging recipe: one per epoch, in the epoch's stage
    labels = np.repeat(annotations.description, (annotations.duration / 30).astype(int))
    expected = {0: "Sleep stage W", 1: "Sleep stage 2", 2: "Sleep stage 3", 3: "Sleep stage R"}
    assert list(labels) == [expected[s] for s in stages]


def test_night_outputs_include_the_tsv(tmp_path):
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=40)
    stages = probs.argmax(axis=1)
    result = NightPrediction(Path("night.edf"), S4, probs, stages, {}, {}, None,
                             summarize_night(stages, S4), {"warnings": []})
    files = write_night_outputs(result, tmp_path, hypnogram_formats=("xml",))
    assert files["hypnogram_tsv"] == tmp_path / "night_hypnogram.tsv"
    assert list(pd.read_csv(files["hypnogram_tsv"], sep="\t")["stage"]) == [S4[s] for s in stages]


# --- YASA's definitions -------------------------------------------------------------------------
def test_statistics_follow_yasa_definitions_on_its_example():
    # yasa.sleep_statistics docstring example (5 stages, 30 s epochs), numbers from its documentation
    hypno = np.array([0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 2, 3, 3, 4, 4, 4, 4, 0, 0])
    got = yasa_statistics(summarize_night(hypno, S5))
    expected = {"TIB": 10.0, "SPT": 8.0, "WASO": 0.0, "TST": 8.0, "N1": 1.5, "N2": 2.0, "N3": 2.5, "REM": 2.0,
                "SOL": 1.0, "Lat_REM": 7.0, "%N1": 18.75, "%N2": 25.0, "%N3": 31.25, "%REM": 25.0, "SE": 80.0,
                "SME": 100.0, "SFI": 7.5, "SOL_5min": 1.0}  # SFI: 1 sleep->wake transition in 8 min of TST
    assert {k: got[k] for k in expected} == expected


def _yasa_hypnogram(stages: np.ndarray, names: list[str], scorer: str):
    yasa = pytest.importorskip("yasa", minversion="0.8")
    table = YASA5 if names == S5 else YASA4
    labels = [table[names[s]] if s >= 0 else "UNS" for s in stages]
    return yasa.Hypnogram(labels, n_stages=len(names), scorer=scorer)


CASES = [  # (stage names, hypnogram)
    (S5, markov_hypnogram(960, 5, seed=0)),
    (S5, markov_hypnogram(700, 5, seed=1, unknown=0.05)),
    (S4, markov_hypnogram(500, 4, seed=2, unknown=0.02)),
    (S5, np.array([0, 0, 0, -1, 0])),  # no sleep
    (S5, np.array([0, 2, 2, 0, 1, 3, -1, 0])),  # no REM, short runs
]


@pytest.mark.parametrize(("names", "stages"), CASES)
def test_sleep_statistics_equal_yasa(names, stages):
    expected = _yasa_hypnogram(stages, names, "ref").sleep_statistics()
    got = yasa_statistics(summarize_night(stages, names))
    assert set(got) == set(expected)
    bad = {k: (got[k], float(expected[k])) for k in expected if not _close(got[k], float(expected[k]))}
    assert not bad, bad


@pytest.mark.parametrize(("names", "seed"), [(S5, 0), (S5, 1), (S4, 2)])
def test_agreement_statistics_equal_yasa(names, seed):
    yasa = pytest.importorskip("yasa", minversion="0.8")
    scored = markov_hypnogram(600, len(names), seed=seed, unknown=0.03)
    predicted = np.where(np.random.default_rng(seed + 10).random(600) < 0.8, np.clip(scored, 0, None),
                         markov_hypnogram(600, len(names), seed=seed + 20))
    agreement = yasa.EpochByEpochAgreement([_yasa_hypnogram(scored, names, "scored")],
                                           [_yasa_hypnogram(predicted, names, "osf")])
    overall, by_stage = agreement.get_agreement(), agreement.get_agreement_bystage()
    got = stage_agreement_statistics(predicted, scored, names)
    assert got["n_epochs"] == int((scored >= 0).sum())
    pairs = {"accuracy": "accuracy_pct", "balanced_acc": "balanced_accuracy_pct", "kappa": "cohen_kappa",
             "mcc": "mcc", "precision": "precision_weighted_pct", "f1": "f1_weighted_pct"}
    for theirs, ours in pairs.items():
        assert _close(got[ours], float(overall[theirs]), 1e-9), (theirs, got[ours], overall[theirs])
    table = YASA5 if names == S5 else YASA4
    metrics = {"precision": "precision_pct", "recall": "recall_pct", "fbeta": "f1_pct",
               "specificity": "specificity_pct", "npv": "npv_pct", "support": "support"}
    assert {table[s] for s in got["by_stage"]} == set(by_stage.index)  # one night: indexed by stage
    for stage, row in got["by_stage"].items():
        theirs = by_stage.loc[table[stage]]
        for metric, ours in metrics.items():
            assert _close(float(row[ours]), float(theirs[metric]), 1e-9), (stage, metric, row[ours], theirs[metric])


def test_agreement_statistics_by_hand():
    scored = np.array([0, 0, 1, 1, -1, 2])
    predicted = np.array([0, 1, 1, 1, 0, 2])
    got = stage_agreement_statistics(predicted, scored, ["W", "N2", "REM"])
    assert got["n_epochs"] == 5 and got["accuracy_pct"] == pytest.approx(80.0)
    assert got["by_stage"]["W"] == pytest.approx({"precision_pct": 100.0, "recall_pct": 50.0, "f1_pct": 200 / 3,
                                                  "specificity_pct": 100.0, "npv_pct": 75.0, "support": 2})
    with pytest.raises(ValueError, match="differ in length"):
        stage_agreement_statistics(predicted[:3], scored, ["W", "N2", "REM"])

"""The synthetic cohort's night-level variables: subject tables, and physiology that depends on them."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from osf.datasets.io.layout import parse_recording_name
from osf.datasets.synthetic import COHORT_PRESETS, generate_cohort
from osf.datasets.synthetic.generate import simulate_scoring
from osf.datasets.synthetic.hypnogram import N3, REM, W
from osf.datasets.synthetic.physiology import NightRenderer
from osf.datasets.synthetic.subjects import HYPERTENSION_HR_BPM, draw_subject
from osf.downstream.night import load_subject_tables, lookup_target


@pytest.fixture(scope="module")
def profiles():
    return [draw_subject(COHORT_PRESETS["shhs"], s, 0) for s in range(400)]


def test_traits_follow_literature_directions(profiles):
    df = pd.DataFrame([dataclasses.asdict(p) for p in profiles])
    assert df.loc[df.sex == "M", "n3_scale"].mean() < 0.85 * df.loc[df.sex == "F", "n3_scale"].mean()  # men: less N3
    assert spearmanr(df.age, df.rem_scale).statistic < -0.9  # REM falls with age
    assert spearmanr(df.age, df.n3_scale).statistic < -0.3  # and slow-wave sleep
    htn = df.hypertension.astype(bool)
    assert 0.15 < htn.mean() < 0.6
    assert df.loc[htn, "age"].mean() > df.loc[~htn, "age"].mean()  # more common with age ...
    assert df.loc[htn, "ahi_target"].mean() > df.loc[~htn, "ahi_target"].mean()  # ... and with sleep apnoea
    assert df.loc[htn, "hr_base"].mean() - df.loc[~htn, "hr_base"].mean() == pytest.approx(HYPERTENSION_HR_BPM, abs=2.5)
    assert df.loc[htn, "hrv_scale"].max() < df.loc[~htn, "hrv_scale"].min()
    assert spearmanr(df.ahi_target, df.bmi).statistic > 0.3


def test_traits_are_deterministic_per_seed(profiles):
    assert draw_subject(COHORT_PRESETS["shhs"], 7, 0) == profiles[7]
    assert draw_subject(COHORT_PRESETS["shhs"], 7, 1) != profiles[7]


def test_hypnograms_show_sex_and_age():
    rows = []
    for s in range(60):
        sim = simulate_scoring("shhs", s, seed=0, hours=12.0)  # the whole night (a window's N3 depends on its place)
        sleep = sim.stages != W
        rows.append({"sex": sim.profile.sex, "age": sim.profile.age, "n3": np.mean(sim.stages[sleep] == N3),
                     "rem": np.mean(sim.stages[sleep] == REM)})
    df = pd.DataFrame(rows)
    assert df.loc[df.sex == "M", "n3"].mean() < df.loc[df.sex == "F", "n3"].mean()
    assert spearmanr(df.age, df.n3).statistic < -0.2


def test_hypertension_raises_heart_rate_and_lowers_its_variability():
    sim = simulate_scoring("shhs", 3, seed=0, hours=0.5)
    base = dataclasses.replace(sim.profile, hypertension=False, hrv_scale=1.0)
    htn = dataclasses.replace(base, hypertension=True, hr_base=base.hr_base + HYPERTENSION_HR_BPM, hrv_scale=0.45)
    hr = {}
    for name, prof in (("base", base), ("htn", htn)):
        r = NightRenderer(prof, sim.stages, sim.events, sim.spo2, 0)
        rr = np.diff(r.beat_times)
        hr[name] = (np.mean(60.0 / rr), np.std(np.diff(rr)))  # mean HR, RMSSD-like beat-to-beat variability
    assert hr["htn"][0] - hr["base"][0] == pytest.approx(HYPERTENSION_HR_BPM, abs=2.0)
    assert hr["htn"][1] < 0.75 * hr["base"][1]


def test_cohort_writes_nsrr_style_tables_that_join_the_recordings(tmp_path):
    generate_cohort(tmp_path, cohorts="shhs,mros", nights_per_cohort=3, hours=0.05, progress=False)
    for cohort in ("shhs", "mros"):
        subjects = pd.read_csv(tmp_path / cohort / "datasets" / f"{cohort}-subjects.csv")
        tables = {cohort: load_subject_tables(cohort, tmp_path)}
        assert len(tables[cohort]) == 2  # harmonised + cohort table, found through the registry
        keys = pd.DataFrame([dict(zip(("recording_id", "subject_id", "visit"), parse_recording_name(f"{r}.edf", cohort)))
                             for r in subjects["recording_id"]]).assign(dataset=cohort)
        ahi = lookup_target(tables, "nsrr_ahi_hp3r_aasm15", keys).astype(float)
        np.testing.assert_allclose(ahi, subjects["ahi"])
        sex = lookup_target(tables, "nsrr_sex", keys)
        assert sex.tolist() == subjects["sex"].map({"M": "male", "F": "female"}).tolist()
        assert lookup_target(tables, "hypertension", keys).astype(int).tolist() == subjects["hypertension"].tolist()

"""Night structure of the synthetic cohort vs real hypnograms, and AHI vs configured severity.

Only the scoring is simulated here (no signals), so full 8 h nights are cheap.
"""

from __future__ import annotations

from pathlib import Path
from xml.etree import ElementTree as ET

import mne
import numpy as np
import pytest

from osf.datasets.io.scoring import stage_runs
from osf.datasets.synthetic.generate import simulate_scoring
from osf.datasets.synthetic.subjects import severity_class
from osf.datasets.synthetic.xml_writer import nsrr_xml

SLEEP_EDF = {
    "Sleep stage W": 0,
    "Sleep stage 1": 1,
    "Sleep stage 2": 2,
    "Sleep stage 3": 3,
    "Sleep stage 4": 3,
    "Sleep stage R": 4,
}
PROFUSION = {0: 0, 1: 1, 2: 2, 3: 3, 4: 3, 5: 4}
N_SYNTHETIC = 24


def _real_hypnograms(shared: Path) -> list[np.ndarray]:
    hyps = []
    for f in sorted((shared / "fixtures" / "annotations" / "sleep_edf").glob("*-Hypnogram.edf")):
        ann = mne.read_annotations(f)
        st: list[int] = []
        for dur, desc in zip(ann.duration, ann.description):
            st += [SLEEP_EDF.get(desc, -1)] * round(dur / 30)
        hyps.append(np.asarray(st))
    for f in sorted((shared / "fixtures" / "annotations" / "nsrr_profusion").glob("*.xml")):
        codes = [int(e.text) for e in ET.parse(f).getroot().iter("SleepStage")]
        hyps.append(np.asarray([PROFUSION.get(c, -1) for c in codes]))
    return hyps


def night_stats(stages: np.ndarray) -> dict[str, float]:
    """Statistics over the sleep period (first to last sleep epoch), like a sleep report."""
    sleep = np.flatnonzero(stages > 0)
    spt = stages[sleep[0] : sleep[-1] + 1]
    spt = spt[spt >= 0]
    hours = len(spt) / 120
    out = {f"p{s}": float(np.mean(spt == s)) for s in range(5)}
    out["transitions_per_h"] = float(np.sum(spt[1:] != spt[:-1]) / hours)
    rem = np.flatnonzero(spt == 4)
    out["rem_latency_min"] = float(rem[0] / 2) if rem.size else np.nan
    n3 = np.flatnonzero(spt == 3)
    out["n3_first_third"] = float(np.mean(n3 < len(spt) / 3)) if n3.size else np.nan
    # NREM-REM cycle: time between starts of REM periods separated by >= 15 min without REM
    starts = [first for st, first, n in stage_runs(spt) if st == 4]
    periods = [s for i, s in enumerate(starts) if i == 0 or s - max(r for r in rem if r < s) > 30]
    out["cycle_min"] = float(np.mean(np.diff(periods)) / 2) if len(periods) > 1 else np.nan
    third = len(spt) // 3
    out["rem_last_minus_first_third"] = float(np.mean(spt[-third:] == 4) - np.mean(spt[:third] == 4))
    return out


@pytest.fixture(scope="module")
def synthetic_stats() -> list[dict[str, float]]:
    """Adult 8 h nights of two cohorts."""
    sims = [
        simulate_scoring(c, s, seed=11, hours=8.0)
        for c in ("shhs", "generic")
        for s in range(N_SYNTHETIC // 2)
    ]
    return [night_stats(sim.stages) for sim in sims]


def _agg(stats: list[dict[str, float]], key: str) -> np.ndarray:
    return np.asarray([s[key] for s in stats if np.isfinite(s[key])])


def test_stage_proportions_match_real_nights(shared_dir, synthetic_stats):
    real = [night_stats(h) for h in _real_hypnograms(shared_dir)]
    assert len(real) >= 10
    for s, tol in zip(range(5), (0.06, 0.05, 0.08, 0.08, 0.06)):
        syn, ref = _agg(synthetic_stats, f"p{s}"), _agg(real, f"p{s}")
        assert abs(np.median(syn) - np.median(ref)) < tol, (s, np.median(syn), np.median(ref))
        assert ref.min() - 0.05 <= np.median(syn) <= ref.max() + 0.05


def test_transition_rate_rem_latency_and_cycles_match_real_nights(shared_dir, synthetic_stats):
    real = [night_stats(h) for h in _real_hypnograms(shared_dir)]
    for key, rel_tol in (("transitions_per_h", 0.3), ("rem_latency_min", 0.35), ("cycle_min", 0.25)):
        syn, ref = np.median(_agg(synthetic_stats, key)), np.median(_agg(real, key))
        assert abs(syn - ref) / ref < rel_tol, (key, syn, ref)


def test_n3_front_loaded_and_rem_lengthens_towards_morning(synthetic_stats):
    assert np.median(_agg(synthetic_stats, "n3_first_third")) > 0.6
    assert np.median(_agg(synthetic_stats, "rem_last_minus_first_third")) > 0.1
    assert 70 <= np.median(_agg(synthetic_stats, "cycle_min")) <= 110


def test_children_have_more_n3_than_older_adults():
    chat = [np.mean(simulate_scoring("chat", s, 2, hours=8.0).stages == 3) for s in range(6)]
    mros = [np.mean(simulate_scoring("mros", s, 2, hours=8.0).stages == 3) for s in range(6)]
    assert np.median(chat) > 2 * np.median(mros)


def _ahi_from_xml(xml: bytes) -> float:
    root = ET.fromstring(xml)
    tst_epochs, n_events = 0, 0
    for ev in root.iter("ScoredEvent"):
        concept = ev.findtext("EventConcept")
        if ev.findtext("EventType") == "Stages|Stages" and concept != "Wake|0":
            tst_epochs += int(float(ev.findtext("Duration")) // 30)
        elif concept in (
            "Obstructive apnea|Obstructive Apnea",
            "Central apnea|Central Apnea",
            "Hypopnea|Hypopnea",
        ):
            n_events += 1
    return n_events / (tst_epochs / 120)


# Generator 1 schedules the configured AHI into the recording; generator 2 into the whole night (hours=12 returns
# all of it), a shorter window holds its share of the night's events by chance.
@pytest.mark.parametrize("generator,hours", [(1, 6.0), (2, 12.0)])
def test_ahi_recomputed_from_xml_matches_configured_severity(generator, hours):
    seen = set()
    for s in range(16):
        sim = simulate_scoring("mros", s, seed=4, hours=hours, generator=generator)
        ahi = _ahi_from_xml(nsrr_xml(sim.stages, sim.scored, sim.profile.start, {}))
        assert severity_class(ahi) == sim.profile.severity_target, (s, ahi, sim.profile.ahi_target)
        assert ahi == pytest.approx(sim.profile.ahi_target, rel=0.1, abs=0.5)
        seen.add(sim.profile.severity_target)
    assert seen == {"none", "mild", "moderate", "severe"}


def test_hypopneas_are_scorable_under_the_3_percent_rule():
    sim = simulate_scoring("generic", 0, seed=1, hours=4.0)
    ev = sim.events
    assert ev.respiratory, "expected respiratory events"
    desat_causes = {d.cause for d in ev.desaturations}
    arousal_causes = {a.cause for a in ev.arousals}
    for i, r in enumerate(ev.respiratory):
        if r.kind == "hypopnea":
            assert i in desat_causes or i in arousal_causes

"""Statistical checks on generator 1's synthetic signals, per stage and around scored events.

Each test would fail if the corresponding physiology broke (a band missing, a stage envelope
flattened, an event not rendered). Nights are generated once per module and kept short. These pin
generator 1 (``generator=1``: fixed stage tables, constant gains), which stays reproducible; generator 2's
cues are pinned in ``tests/test_synthetic_v2.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal as sps

from osf.datasets.synthetic import generate_night
from osf.datasets.synthetic.cohorts import COHORT_PRESETS
from osf.datasets.synthetic.subjects import draw_subject

W, N1, N2, N3, REM = range(5)


def _subjects(cohort: str, severities: tuple[str, ...], k: int) -> list[int]:
    """First k subject indices of a cohort whose configured severity is in ``severities`` (cheap draw)."""
    out = [s for s in range(200) if draw_subject(COHORT_PRESETS[cohort], s, 0).severity_target in severities]
    return out[:k]


@pytest.fixture(scope="module")
def nights():
    """Two generic (full bipolar montage) nights of moderate/severe apnoea, 1.5 h each."""
    return [
        generate_night("generic", s, seed=0, hours=1.5, generator=1)
        for s in _subjects("generic", ("moderate", "severe"), 2)
    ]


@pytest.fixture(scope="module")
def unipolar_night():
    """A MrOS-style night storing unipolar leads."""
    return generate_night("mros", 0, seed=0, hours=0.75, generator=1)


def _epochs(night, label: str) -> tuple[np.ndarray, int]:
    fs = night.rates[label]
    return night.signals[label].reshape(-1, 30 * fs), fs


def _clean_epochs(night, label: str) -> np.ndarray:
    """Epochs without flat (disconnected) stretches or movement artefacts in them."""
    ok = np.ones(len(night.stages), bool)
    for a in night.artifacts:
        if a["label"] in (label, "*"):
            ok[int(a["onset"] // 30) : int((a["onset"] + a["duration"]) // 30) + 1] = False
    return ok


def _pool(nights, label: str, feature) -> tuple[np.ndarray, np.ndarray]:
    """Feature per epoch and stage per epoch, pooled over nights (artefact epochs dropped)."""
    feats, stages = [], []
    for n in nights:
        x, fs = _epochs(n, label)
        ok = _clean_epochs(n, label)
        feats.append(feature(x[ok], fs))
        stages.append(n.stages[ok])
    return np.concatenate(feats), np.concatenate(stages)


def _band_fraction(lo: float, hi: float):
    def f(x, fs):
        freqs, p = sps.welch(x, fs=fs, nperseg=4 * fs, axis=-1)
        tot = p[:, (freqs >= 0.5) & (freqs <= 30)].sum(1)
        return p[:, (freqs >= lo) & (freqs < hi)].sum(1) / tot

    return f


def _median_by_stage(feat: np.ndarray, stages: np.ndarray) -> dict[int, float]:
    return {s: float(np.median(feat[stages == s])) for s in range(5) if np.any(stages == s)}


def test_all_stages_present(nights):
    stages = np.concatenate([n.stages for n in nights])
    assert set(np.unique(stages)) == {W, N1, N2, N3, REM}


def test_eeg_delta_fraction_n3_gt_n2_gt_wake(nights):
    m = _median_by_stage(*_pool(nights, "C3-M2", _band_fraction(0.5, 2.0)))
    assert m[N3] > m[N2] > m[W]
    assert m[N3] > 1.1 * m[N2] and m[N2] > 2 * m[W]


def test_eeg_alpha_fraction_highest_in_wake(nights):
    m = _median_by_stage(*_pool(nights, "C4-M1", _band_fraction(8.0, 12.0)))
    assert m[W] == max(m.values())
    assert m[W] > 3 * max(v for s, v in m.items() if s != W)


def test_n3_slow_waves_meet_the_aasm_amplitude_rule(nights):
    def sws_fraction(x, fs):
        y = sps.sosfiltfilt(sps.butter(2, [0.5, 2.0], "bandpass", fs=fs, output="sos"), x, axis=-1)
        return (2 * np.abs(sps.hilbert(y, axis=-1)) > 75.0).mean(1)  # peak-to-peak > 75 uV

    frac, st = _pool(nights, "C3-M2", sws_fraction)
    assert np.mean(frac[st == N3] > 0.2) > 0.8
    assert np.mean(frac[st == N2] > 0.2) < 0.2
    assert np.mean(frac[st == W] > 0.2) < 0.05


def test_sigma_burst_density_highest_in_n2(nights):
    density = {s: [] for s in range(5)}
    for n in nights:
        fs = n.rates["C3-M2"]
        y = sps.sosfiltfilt(sps.butter(4, [11, 16], "bandpass", fs=fs, output="sos"), n.signals["C3-M2"])
        env = np.abs(sps.hilbert(y))
        above = np.concatenate([[0], (env > 4 * np.median(env)).astype(np.int8), [0]])
        on, off = np.flatnonzero(np.diff(above) == 1), np.flatnonzero(np.diff(above) == -1)
        dur = (off - on) / fs
        spindle_like = on[(dur >= 0.4) & (dur <= 3.0)]
        per_epoch = np.bincount(spindle_like // (30 * fs), minlength=len(n.stages))
        for s in range(5):
            density[s].extend(per_epoch[n.stages == s].tolist())
    rate = {s: 2 * np.mean(v) for s, v in density.items() if v}  # bursts per minute
    assert rate[N2] == max(rate.values())
    assert rate[N2] > 1.5 * max(v for s, v in rate.items() if s != N2)


def test_chin_emg_lowest_in_rem(nights):
    m = _median_by_stage(*_pool(nights, "Chin1-Chin2", lambda x, fs: np.sqrt((x**2).mean(1))))
    assert m[REM] == min(m.values())
    assert m[W] > 1.5 * m[N2] and m[N2] > 1.5 * m[REM]


def test_eog_movement_power_higher_in_rem_and_wake_than_n2_n3(nights):
    def eog_power(x, fs):
        freqs, p = sps.welch(x, fs=fs, nperseg=4 * fs, axis=-1)
        return p[:, (freqs >= 0.5) & (freqs <= 5.0)].sum(1)

    for label in ("E1-M2", "E2-M1"):
        m = _median_by_stage(*_pool(nights, label, eog_power))
        assert min(m[REM], m[W]) > 2 * max(m[N2], m[N3])


def test_rem_eye_movements_are_conjugate_and_nrem_bleed_through_in_phase(nights):
    def corr_by_stage(stage):
        cs = []
        for n in nights:
            e1, _fs = _epochs(n, "E1-M2")
            e2, _ = _epochs(n, "E2-M1")
            ok = _clean_epochs(n, "E1-M2") & _clean_epochs(n, "E2-M1")
            for i in np.flatnonzero((n.stages == stage) & ok):
                cs.append(np.corrcoef(e1[i], e2[i])[0, 1])
        return float(np.median(cs))

    assert corr_by_stage(REM) < -0.3  # opposite polarity on E1 vs E2
    assert corr_by_stage(N3) > 0.3  # EEG slow waves reach both leads with the same sign


def _rr_by_epoch(night):
    ecg, fs = night.signals["ECG"], night.rates["ECG"]
    peaks, _ = sps.find_peaks(ecg, height=0.5 * np.percentile(ecg, 99.5), distance=int(0.3 * fs))
    t = peaks / fs
    rr = np.diff(t)
    ep = (t[1:] // 30).astype(int)
    return rr, ep


def test_ecg_heart_rate_and_variability_follow_stage(nights):
    hr = {s: [] for s in range(5)}
    sdnn = {s: [] for s in range(5)}
    for n in nights:
        rr, ep = _rr_by_epoch(n)
        expected_beats = np.sum(n.signals["HR"]) / 60.0
        assert abs(len(rr) + 1 - expected_beats) / expected_beats < 0.05  # every beat detected, none extra
        night_hr = 60 / np.median(rr)  # stage effects are within a night: subjects' rates differ by more
        for e in np.unique(ep):
            r = rr[ep == e]
            if r.size > 5:
                hr[int(n.stages[e])].append(60 / r.mean() / night_hr)
                sdnn[int(n.stages[e])].append(r.std())
    assert np.median(hr[W]) > np.median(hr[N2]) > np.median(hr[N3])
    assert np.median(sdnn[REM]) > np.median(sdnn[N3])


def _flow_envelope(night, label):
    x, fs = night.signals[label], night.rates[label]
    win = 4 * fs
    return np.sqrt(np.convolve(x**2, np.ones(win) / win, mode="same")), fs


def _event_ratio(night, ev, env, fs):
    inside = env[int((ev.onset + 4) * fs) : int((ev.end - 2) * fs)]
    before = env[int(max(ev.onset - 60, 0) * fs) : int((ev.onset - 8) * fs)]
    return float(np.mean(inside) / np.median(before))


def test_flow_reduced_in_hypopneas_and_absent_in_apneas(nights):
    hyp, apn = [], []
    for n in nights:
        env, fs = _flow_envelope(n, "Nasal Pressure")
        hyp += [_event_ratio(n, ev, env, fs) for ev in n.events_of("hypopnea")]
        apn += [_event_ratio(n, ev, env, fs) for ev in n.events_of("obstructive_apnea", "central_apnea")]
    assert len(hyp) >= 5 and len(apn) >= 3
    assert np.median(hyp) < 0.7 and np.median(hyp) > 0.2  # >= 30 % reduction, not an apnea
    assert np.max(apn) < 0.2  # flow absent


def test_obstructive_effort_paradoxical_and_central_effort_absent(nights):
    para, normal, central = [], [], []
    for n in nights:
        thx, abd, fs = n.signals["Thorax"], n.signals["Abdomen"], n.rates["Thorax"]
        env, _ = _flow_envelope(n, "Thorax")
        for ev in n.events_of("obstructive_apnea"):
            a, b = int((ev.onset + 4) * fs), int((ev.end - 1) * fs)
            para.append(np.corrcoef(thx[a:b], abd[a:b])[0, 1])
            a0 = int(max(ev.onset - 60, 0) * fs)
            normal.append(np.corrcoef(thx[a0 : a0 + 40 * fs], abd[a0 : a0 + 40 * fs])[0, 1])
        central += [_event_ratio(n, ev, env, fs) for ev in n.events_of("central_apnea")]
    assert len(para) >= 2
    assert np.median(para) < -0.3 < 0.5 < np.median(normal)
    assert all(r < 0.3 for r in central)


def test_spo2_nadir_follows_respiratory_events(nights):
    lags = []
    for n in nights:
        spo2 = n.signals["SpO2"]
        resp = n.events_of("obstructive_apnea", "central_apnea", "hypopnea")
        for d in n.events_of("desaturation"):
            assert d.baseline - d.nadir >= 3.0
            a, b = int(d.onset), int(d.end) + 1
            assert spo2[a:b].min() == pytest.approx(d.nadir)  # the XML nadir is in the signal
            cause = min(resp, key=lambda ev: abs(d.onset - ev.onset))
            lags.append(a + int(np.argmin(spo2[a:b])) - cause.end)
    assert len(lags) >= 5
    assert 5.0 <= np.median(lags) <= 35.0


def test_arousals_shift_eeg_to_fast_frequencies_and_raise_chin_emg(nights):
    fast_ratio, emg_ratio = [], []
    for n in nights:
        fs = n.rates["C3-M2"]
        eeg = sps.sosfiltfilt(sps.butter(4, [8, 30], "bandpass", fs=fs, output="sos"), n.signals["C3-M2"])
        chin = n.signals["Chin1-Chin2"]
        for ar in n.events_of("arousal"):
            a, b = int(ar.onset * fs), int(ar.end * fs)
            pa, pb = int((ar.onset - 10) * fs), a
            fast_ratio.append(np.std(eeg[a:b]) / np.std(eeg[pa:pb]))
            emg_ratio.append(np.std(chin[a:b]) / np.std(chin[pa:pb]))
    assert len(fast_ratio) >= 10
    assert np.median(fast_ratio) > 1.5 and np.median(emg_ratio) > 1.5


def test_limb_movements_visible_on_leg_emg(nights):
    ratios = []
    for n in nights:
        for ev in n.events_of("limb_left"):
            x, fs = n.signals["L Leg"], n.rates["L Leg"]
            inside = x[int(ev.onset * fs) : int(ev.end * fs)]
            base = x[int(max(ev.onset - 10, 0) * fs) : int(max(ev.onset - 2, 1) * fs)]
            if base.size:
                ratios.append(np.std(inside) / np.std(base))
    assert len(ratios) >= 3
    assert np.median(ratios) > 3.0


def test_unipolar_leads_derive_to_bipolar_physiology_and_reject_mains(unipolar_night):
    n = unipolar_night
    fs = n.rates["C3"]
    derived = n.signals["C3"] - n.signals["A2"]
    freqs, p_uni = sps.welch(n.signals["C3"], fs=fs, nperseg=4 * fs)
    _, p_bip = sps.welch(derived, fs=fs, nperseg=4 * fs)
    mains = np.argmin(np.abs(freqs - 60.0))
    assert p_uni[mains] > 10 * p_bip[mains]  # common-mode mains cancels in the derivation
    x = derived.reshape(-1, 30 * fs)
    frac = _band_fraction(0.5, 2.0)(x, fs)
    m = _median_by_stage(frac, n.stages)
    assert m[N3] > m[N2] > m[W]
    chin = (n.signals["L Chin"] - n.signals["R Chin"]).reshape(-1, 30 * fs)
    rms = _median_by_stage(np.sqrt((chin**2).mean(1)), n.stages)
    assert rms[W] > 2 * rms[N2]


def test_nuisances_present(nights):
    n = nights[0]
    _lo, _hi = n.preset.channel("C3-M2").physical_range
    assert any(a["kind"] == "movement" for a in n.artifacts)
    fs = n.rates["C3-M2"]
    freqs, p = sps.welch(n.signals["C3-M2"], fs=fs, nperseg=4 * fs)
    mains = np.argmin(np.abs(freqs - 50.0))  # generic preset: 50 Hz site
    assert p[mains] > 3 * np.median(p[(freqs > 40) & (freqs < 48)])
    flats = [a for a in n.artifacts if a["kind"] == "flat"]
    for a in flats:
        f = n.rates[a["label"]]
        seg = n.signals[a["label"]][int(a["onset"] * f) : int((a["onset"] + a["duration"]) * f)]
        assert np.all(seg == 0.0)


def test_heart_rate_surges_with_arousals(nights):
    ratios = []
    for n in nights:
        hr = n.signals["HR"]  # 1 Hz
        for ar in n.events_of("arousal"):
            a = int(ar.onset)
            if a >= 15:
                ratios.append(hr[a : a + int(ar.duration) + 5].max() / np.median(hr[a - 15 : a - 2]))
    assert len(ratios) >= 10
    assert np.median(ratios) > 1.08

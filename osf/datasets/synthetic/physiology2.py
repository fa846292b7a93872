"""Generator 2 physiology: scorer-defined stage and event cues on a subject- and night-varying background.

``NightRenderer2`` keeps generator 1's latent night (breathing, heart, eyes, events) and changes what a
power summary could read the labels from (magnitudes and sources in ``docs/synthetic_physiology.md``):

- the EEG background of N1, N2 and N3 overlaps in power; N2 is told by spindles and K-complexes, N3 by
  the fraction of the epoch covered by >= 75 uV (peak-to-peak) slow waves, W by the subject's own alpha
  (individual frequency 8-12 Hz, ~10 % of people with little alpha);
- an arousal is an abrupt shift of the EEG to alpha / theta / > 16 Hz at about the same power (slow
  activity and spindles give way), with a chin EMG rise always in REM and in only half of NREM arousals;
  shifts shorter than 3 s happen too and are not scored;
- nuisance a night-level normalisation cannot cancel: slow gain drift and impedance steps per lead,
  body-position changes that step the belt and flow amplitudes, sweat, electrode pops, ECG pick-up, mains,
  amplifier noise and the cohort's own filters.
"""

from __future__ import annotations

import numpy as np
from scipy import signal as sps

from osf.datasets.synthetic.cohorts import CohortPreset
from osf.datasets.synthetic.events import ScoredEvent
from osf.datasets.synthetic.hypnogram import EPOCH_SEC, REM
from osf.datasets.synthetic.physiology import CTRL_FS, NightEvents, NightRenderer, _add_bursts, band_noise
from osf.datasets.synthetic.subjects import SpectralTraits, SubjectProfile

# EEG background, uV rms per stage (W, N1, N2, N3, REM): N1/N2/N3 overlap; N3's extra power is its slow waves.
BACKGROUND_RMS = {
    "aperiodic": (8.0, 9.0, 10.0, 10.0, 8.0),
    "delta": (4.0, 8.0, 11.0, 12.0, 6.0),  # continuous 0.5-2 Hz activity below the slow-wave criterion
    "theta": (4.0, 9.0, 7.0, 6.0, 9.0),
    "alpha": (14.0, 3.0, 1.5, 1.0, 3.0),  # at the subject's alpha frequency, x its alpha amplitude
    "beta": (5.0, 2.5, 1.5, 1.0, 2.5),
}
BAND_HZ = {"delta": (0.5, 2.0), "theta": (4.0, 7.0), "beta": (16.0, 30.0)}
# AASM N3: >= 20 % of the epoch with 0.5-2 Hz waves >= 75 uV peak-to-peak. Latent coverage per epoch:
SLOW_WAVE_COVERAGE = {2: (0.0, 0.12), 3: (0.22, 0.6)}
SLOW_WAVE_PP_UV = (80.0, 200.0)  # before the age factor; >= 75 uV by construction at a nominal gain
SPINDLES_PER_MIN = {2: 4.0, 3: 1.0}
SPINDLE_UV = (10.0, 30.0)  # peak amplitude; YASA finds ~1-2/min of them, as on real N2 (experts mark more)
KCOMPLEX_PER_MIN = {2: 1.3}
# Arousal (AASM 2007/2012): abrupt shift to alpha/theta/>16 Hz for >= 3 s after >= 10 s of stable sleep; chin
# EMG rise required only in REM. Amplitudes keep the shifted EEG near the background's power.
AROUSAL_ALPHA_UV, AROUSAL_BETA_UV, AROUSAL_THETA_UV = 10.0, 6.0, 7.0
AROUSAL_SLOW_LEFT = 0.2  # share of delta / slow waves / spindles left during a shift
NREM_AROUSAL_EMG_PROB = 0.5
MICRO_SHIFTS_PER_H = 6.0  # unscored shifts of 1-2.5 s in NREM (too short for the 3 s rule)
CHIN_RMS_V2 = (16.0, 8.0, 5.0, 4.5, 1.5)
CHIN_LOG_SD = 0.4  # slow within-stage variation of tonic chin EMG
# Sensors and the room
IMPEDANCE_STEPS_PER_H = 0.15  # per lead: a lead pressed / re-gelled / drying
IMPEDANCE_STEP_LOG_SD = 0.25
POSITION_CHANGES_PER_H = (1.0, 3.0)  # at movements and arousals (De Koninck et al. 1992: ~1-3/h in adults)
POSITION_AMP_LOG_SD = 0.35  # belt / flow amplitude of one body position relative to another
SUBTHRESHOLD_FLOW_PER_AHI = 0.5  # unscored 10-25 % flow reductions per scored event
POSITIONS = 4  # supine, left, right, prone


def _intervals_env(tc: np.ndarray, events: list[tuple[float, float]], ramp: float) -> np.ndarray:
    """Trapezoid envelope (0..1) of (onset, duration) intervals at the control rate."""
    env = np.zeros(tc.size)
    for onset, dur in events:
        up = np.clip((tc - (onset - ramp)) / ramp, 0, 1)
        down = np.clip(((onset + dur + ramp) - tc) / ramp, 0, 1)
        env = np.maximum(env, np.minimum(up, down))
    return env


class NightRenderer2(NightRenderer):
    """Generator 2 renderer (see the module docstring); generator 1's ``NightRenderer`` is unchanged."""

    # REM density of healthy adults is a few per minute of REM; generator 1's 40 steps/min made YASA's rem_detect
    # find ~17-22/min, 10/min ~11/min (bench_realism.py)
    REM_SACCADES_PER_MIN = 6.0

    def __init__(self, profile: SubjectProfile, traits: SpectralTraits, preset: CohortPreset, stages: np.ndarray,
                 events: NightEvents, spo2: np.ndarray, seed: int) -> None:
        self.traits, self.preset = traits, preset
        super().__init__(profile, stages, events, spo2, seed, line_freq=preset.line_freq)

    # -- latent drivers ---------------------------------------------------------------------
    def _drivers(self) -> None:
        self.w = self._stage_weights()
        self.arousal = self._envelope(self.ev.arousals, ramp=0.3)  # abrupt, as the AASM rule wants
        self.movement = self._envelope([ScoredEvent("m", a, d) for a, d in self.ev.movements], ramp=0.3)
        self._arousal_emg()
        self._micro_shifts()
        self._positions()
        self._resp_drivers()
        self._heart_drivers()
        self._latent_eeg_events()
        self._latent_eye_events()

    def _epoch_stage(self, t: float) -> int:
        return int(self.stages[min(int(t // EPOCH_SEC), self.stages.size - 1)])

    def _arousal_emg(self) -> None:
        """Which arousals raise the chin EMG: all in REM, half in NREM (not required there)."""
        rng = self.rng("arousal-emg")
        self.arousal_emg_rise = [self._epoch_stage(a.onset) == REM or bool(rng.random() < NREM_AROUSAL_EMG_PROB)
                                 for a in self.ev.arousals]
        chosen = [a for a, up in zip(self.ev.arousals, self.arousal_emg_rise) if up]
        self.emg_arousal = self._envelope(chosen, ramp=0.3)

    def _micro_shifts(self) -> None:
        """EEG shifts of 1-2.5 s in NREM: the same change as an arousal, too short to be scored."""
        rng = self.rng("micro-shifts")
        nrem = np.flatnonzero(np.isin(self.stages, (1, 2, 3)))
        n = rng.poisson(MICRO_SHIFTS_PER_H * nrem.size * EPOCH_SEC / 3600.0) if nrem.size else 0
        onsets = rng.choice(nrem, n) * EPOCH_SEC + rng.uniform(0, EPOCH_SEC - 3, n) if n else np.zeros(0)
        busy = [(a.onset - 5, a.end + 5) for a in self.ev.arousals]
        self.micro = [(float(t), float(d)) for t, d in zip(onsets, rng.uniform(1.0, 2.5, onsets.size))
                      if all(t + d < a or t > b for a, b in busy)]
        self.shift = np.maximum(self.arousal, _intervals_env(self.tc, self.micro, 0.3))

    def _positions(self) -> None:
        """Body position over the night: 1-3 changes/h, at movements and arousals; each position its own amplitudes."""
        rng = self.rng("position")
        candidates = sorted([a for a, _ in self.ev.movements] + [a.onset for a in self.ev.arousals])
        wanted = rng.uniform(*POSITION_CHANGES_PER_H) * self.duration / 3600.0
        keep = rng.random(len(candidates)) < min(1.0, wanted / max(len(candidates), 1))
        times = [t for t, k in zip(candidates, keep) if k]
        position = np.zeros(self.nc, dtype=np.int64)
        current = int(rng.integers(POSITIONS))
        position[:] = current
        for t in times:
            current = int((current + rng.integers(1, POSITIONS)) % POSITIONS)
            position[int(t * CTRL_FS):] = current
        self.position_changes = times
        self.position = position
        # a position's amplitude per respiratory sensor; the first position is the reference
        self.position_amp = {q: np.exp(rng.normal(0, POSITION_AMP_LOG_SD, POSITIONS)) for q in ("THX", "ABD", "NP", "AF")}

    def lead_gain(self, lead: str) -> np.ndarray:
        """Multiplicative gain of one lead at the control rate: slow drift x impedance steps (1 on average)."""
        key = ("gain", lead)
        if key not in self._cache:
            rng = self.rng("gain", lead)
            drift = self.traits.gain_drift_sd * band_noise(rng, self.nc, CTRL_FS, None, 1 / 1200.0, order=1)
            steps = np.zeros(self.nc)
            hours = self.duration / 3600.0
            for t in rng.uniform(0, self.duration, rng.poisson(IMPEDANCE_STEPS_PER_H * hours)):
                steps[int(t * CTRL_FS):] += rng.normal(0, IMPEDANCE_STEP_LOG_SD)
            self._cache[key] = np.exp(drift + steps)
        return self._cache[key]

    def _resp_drivers(self) -> None:
        super()._resp_drivers()
        rng = self.rng("subthreshold-flow")
        sleep = np.flatnonzero(self.stages != 0)
        n = rng.poisson(SUBTHRESHOLD_FLOW_PER_AHI * len(self.ev.respiratory)) if sleep.size else 0
        busy = [(e.onset - 10, e.end + 20) for e in self.ev.respiratory]
        t = self.tc
        for onset in rng.choice(sleep, n) * EPOCH_SEC + rng.uniform(0, EPOCH_SEC, n) if n else []:
            dur, left = rng.uniform(10, 30), rng.uniform(0.75, 0.9)  # a < 30 % drop: not a hypopnea
            if any(not (onset + dur < a or onset > b) for a, b in busy):
                continue
            a, b = int(onset * CTRL_FS), min(int((onset + dur) * CTRL_FS), self.nc)
            ramp = np.clip(np.minimum(t[a:b] - onset, onset + dur - t[a:b]) / 2.0, 0, 1)
            self.flow_m[a:b] *= 1 - (1 - left) * ramp

    def _latent_eeg_events(self) -> None:
        rng = self.rng("eeg-events-2")
        tr, g = self.traits, self.p.eeg_gain
        shifted = lambda t: self.shift[min(int(t * CTRL_FS), self.nc - 1)] > 0.5

        def times(rate_per_min: dict[int, float]) -> np.ndarray:
            per_stage = np.zeros(5)
            per_stage[list(rate_per_min)] = list(rate_per_min.values())
            n = rng.poisson(self.stage_rate(per_stage) * 0.5)
            e = np.repeat(np.arange(n.size), n)
            return np.sort(e * EPOCH_SEC + rng.uniform(0, EPOCH_SEC - 2, e.size))

        def keep(ts: np.ndarray) -> list[float]:
            return [float(t) for t in ts if not shifted(t)]

        self.spindles = [(t, rng.uniform(0.5, 2.0), g * rng.uniform(*SPINDLE_UV), rng.normal(tr.spindle_freq, 0.4))
                         for t in keep(times(SPINDLES_PER_MIN))]
        self.kcomplexes = [(t, rng.uniform(0.6, 1.0), g * rng.uniform(70, 130), 0.0) for t in keep(times(KCOMPLEX_PER_MIN))]
        self.vertex = [(t, rng.uniform(0.2, 0.4), g * rng.uniform(40, 80), 0.0) for t in keep(times({1: 1.5}))]
        self.sawtooth = [(t, rng.uniform(2, 5), g * rng.uniform(20, 40), rng.uniform(2.0, 4.0)) for t in times({4: 1.5})]
        self.slow_waves = [w for w in self._slow_waves(rng) if not shifted(w[0])]
        self.alpha_env = np.clip(0.6 + 0.6 * band_noise(rng, self.nc, CTRL_FS, None, 0.3), 0.0, 2.0)
        self.swa_env = np.exp(0.2 * band_noise(self.rng("swa"), self.nc, CTRL_FS, None, 0.005))

    def _slow_waves(self, rng: np.random.Generator) -> list[tuple[float, float, float, float]]:
        """Trains of 0.5-2 Hz waves >= 75 uV filling each epoch's latent slow-wave coverage (N3 >= 20 %)."""
        w = self.epoch_w
        coverage = sum(w[:, s] * rng.uniform(lo, hi, w.shape[0]) for s, (lo, hi) in SLOW_WAVE_COVERAGE.items())
        self.slow_wave_coverage = coverage
        lo, hi = SLOW_WAVE_PP_UV
        waves = []
        for e in np.flatnonzero(coverage > 0.01):
            need, t = coverage[e] * EPOCH_SEC, e * EPOCH_SEC + rng.uniform(0, 3)
            end = (e + 1) * EPOCH_SEC
            while need > 0 and t < end - 0.5:
                for _ in range(int(rng.integers(2, 6))):  # a train of waves, then a gap
                    dur = min(rng.uniform(0.6, 1.6), need + 0.3)
                    if need <= 0 or t + dur > end:
                        break
                    pp = 75.0 + rng.uniform(lo - 75.0, hi - 75.0) * self.traits.slow_wave_amp  # >= 75 uV
                    waves.append((float(t), float(dur), self.p.eeg_gain * pp, 0.0))
                    t, need = t + dur, need - dur
                t += rng.uniform(0.5, 4.0) * (1 - coverage[e])
        return waves

    # -- quantities -------------------------------------------------------------------------
    def _eeg(self, q: str, fs: float, n: int) -> np.ndarray:
        own, common = self.rng("eeg2", q, fs), self.rng("eeg2", "common", fs)
        tr, g = self.traits, self.p.eeg_gain
        shift = self.at(self.shift, fs, n)
        low_alpha = float(np.clip(1.0 - tr.alpha_amp, 0.0, 1.0))  # shifts of low-alpha people go to theta/beta
        x = g * self.at(self.by_stage(BACKGROUND_RMS["aperiodic"]), fs, n) * (
            0.75 * self._aperiodic(common, n, fs) + 0.66 * self._aperiodic(own, n, fs))
        for band in ("delta", "theta", "alpha", "beta"):
            lo, hi = (tr.iaf - 1.0, tr.iaf + 1.0) if band == "alpha" else BAND_HZ[band]
            order = 4 if band == "alpha" else 2
            mixed = 0.75 * band_noise(common, n, fs, lo, hi, order) + 0.66 * band_noise(own, n, fs, lo, hi, order)
            amp = self.at(self.by_stage(BACKGROUND_RMS[band]), fs, n)
            if band == "delta":
                amp = amp * self.at(self.swa_env, fs, n) * tr.slow_wave_amp * (1 - (1 - AROUSAL_SLOW_LEFT) * shift)
            elif band == "alpha":
                amp = amp * tr.alpha_amp * self.at(self.alpha_env, fs, n) + AROUSAL_ALPHA_UV * tr.alpha_amp * shift
            elif band == "theta":
                amp = amp + AROUSAL_THETA_UV * low_alpha * shift
            else:
                amp = amp + AROUSAL_BETA_UV * (1 + low_alpha) * shift
            x += g * amp * mixed
        graphos = np.zeros(n)
        side = 1.0 if q == "EEG_C3_A2" else 0.9
        for bursts, kind in ((self.spindles, "spindle"), (self.kcomplexes, "kcomplex"), (self.vertex, "vertex"),
                             (self.sawtooth, "sawtooth"), (self.slow_waves, "slowwave")):
            _add_bursts(graphos, fs, [(t, d, a * side, f) for t, d, a, f in bursts], kind)
        x = (x + graphos) * self.at(self.lead_gain(q), fs, n)
        return self._sensor(q, x, fs, n, movement_uv=150.0, ecg_uv=tr.ecg_pickup_uv)

    def _aperiodic(self, rng: np.random.Generator, n: int, fs: float) -> np.ndarray:
        """Unit-rms 1/f^beta noise above 0.3 Hz with the subject's aperiodic exponent."""
        spec = np.fft.rfft(rng.standard_normal(n))
        f = np.fft.rfftfreq(n, 1.0 / fs)
        spec *= np.maximum(f, 0.3) ** (-self.traits.aperiodic_exponent / 2)
        spec[f < 0.3] = 0.0
        y = np.fft.irfft(spec, n)
        return y / max(float(np.std(y)), 1e-12)

    def _sensor(self, q: str, x: np.ndarray, fs: float, n: int, movement_uv: float, ecg_uv: float) -> np.ndarray:
        """What the electrode and amplifier add to a head lead: sweat, pops, ECG, mains, noise, the cohort's filters."""
        rng = self.rng("sensor", q, fs)
        sweat = self.at(self._sweat_env(), fs, n) * band_noise(rng, n, fs, 0.05, 0.5)
        pops = np.zeros(n)
        k = rng.poisson(self.traits.pop_rate_h * self.duration / 3600.0)
        _add_bursts(pops, fs, [(float(t), 3.0, float(rng.choice([-1, 1]) * rng.uniform(50, 300)), float(rng.uniform(0.2, 0.8)))
                               for t in rng.uniform(0, self.duration - 3, k)], "pop")
        ecg = self.render("ECG", int(fs)) / max(self.p.ecg_gain, 0.1)
        x = x + sweat + pops + ecg_uv * (1 if q.endswith("A2") else -1) * ecg
        x = x + self._line(fs, n, self.p.line_noise_uv, q) + self._movement(fs, n, movement_uv, q)
        x = x + self.preset.amp_noise_uv * rng.standard_normal(n)
        sos = sps.butter(1, [self.preset.eeg_highpass_hz, min(self.preset.eeg_lowpass_hz, 0.45 * fs)],
                         btype="bandpass", fs=fs, output="sos")
        return sps.sosfilt(sos, x)

    def _sweat_env(self) -> np.ndarray:
        """Amplitude (uV) of slow sweat artefact at the control rate: episodes of minutes, shared by the head leads."""
        if ("sweat", 0) not in self._cache:
            rng = self.rng("sweat")
            k = rng.poisson(self.traits.sweat_rate_h * self.duration / 3600.0)
            env = np.zeros(self.nc)
            for t, d, a in zip(rng.uniform(0, self.duration, k), rng.uniform(60, 600, k), rng.uniform(40, 150, k)):
                env = np.maximum(env, a * _intervals_env(self.tc, [(t, d)], 30.0))
            self._cache[("sweat", 0)] = env
        return self._cache[("sweat", 0)]

    def _eog(self, q: str, fs: float, n: int) -> np.ndarray:
        x = super()._eog(q, fs, n) * self.at(self.lead_gain(q), fs, n)
        return self._sensor(q, x, fs, n, movement_uv=0.0, ecg_uv=0.5 * self.traits.ecg_pickup_uv)

    def _chin(self, fs: float, n: int) -> np.ndarray:
        rng = self.rng("chin2", fs)
        slow = np.exp(CHIN_LOG_SD * band_noise(rng, self.nc, CTRL_FS, None, 0.003, order=1))
        rise = rng.uniform(1.5, 3.0)
        tone = self.by_stage(CHIN_RMS_V2) * slow * (1 + rise * self.emg_arousal) + 6.0 * self.emg_arousal
        tone = tone * self.p.emg_gain * self.lead_gain("EMG_Chin")
        x = self.at(tone, fs, n) * band_noise(rng, n, fs, 10.0, None)
        rem = np.flatnonzero(self.epoch_w[:, 4] > 0)
        k = rng.poisson(6.0 * 0.5 * self.epoch_w[rem, 4])  # phasic twitches during REM atonia
        tw = np.concatenate([e * EPOCH_SEC + rng.uniform(0, EPOCH_SEC, m) for e, m in zip(rem, k) if m] or [np.zeros(0)])
        _add_bursts(x, fs, [(t, rng.uniform(0.1, 0.3), 15.0 * self.p.emg_gain, 0.0) for t in tw], "burst", rng)
        x += 0.5 * self.traits.ecg_pickup_uv * self.render("ECG", int(fs)) / max(self.p.ecg_gain, 0.1)
        return x + self._line(fs, n, self.p.line_noise_uv, "chin") + self._movement(fs, n, 80.0, "chin")

    def _leg(self, q: str, fs: float, n: int) -> np.ndarray:
        return super()._leg(q, fs, n) * self.at(self.lead_gain(q), fs, n)

    def _position_gain(self, q: str, fs: float, n: int) -> np.ndarray:
        amp = self.position_amp[q][self.position] * self.lead_gain(q)
        return self.at(amp, fs, n)

    def _effort(self, q: str, fs: float, n: int) -> np.ndarray:
        return super()._effort(q, fs, n) * self._position_gain(q, fs, n)

    def _flow(self, q: str, fs: float, n: int) -> np.ndarray:
        return super()._flow(q, fs, n) * self._position_gain(q, fs, n)

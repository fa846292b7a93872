"""Rendering of the measured quantities (EEG, EOG, EMG, ECG, respiration, SpO2) at any rate.

A ``NightRenderer`` holds the latent state of a night (hypnogram, scored events, breathing phase,
heart beats, eye movements, spindles ...) drawn once; ``render(quantity, fs)`` turns it into a
signal at the channel's native rate with vectorised numpy/scipy (no per-sample Python loops).
Unipolar leads are rendered as the bipolar derivation plus the reference electrode's potential, so
``C3 - A2`` equals ``C3-A2`` sample for sample and mains interference, being common mode on
unipolar leads, cancels in the derivation as it does with a real amplifier.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
from scipy import signal as sps

from osf.datasets.synthetic.cohorts import UNIPOLAR_PAIRS
from osf.datasets.synthetic.events import ScoredEvent
from osf.datasets.synthetic.hypnogram import EPOCH_SEC, latent_stage_mix
from osf.datasets.synthetic.subjects import SubjectProfile

CTRL_FS = 10.0  # Hz, rate of the slowly varying latent drivers

# Per-stage values, index = stage (W, N1, N2, N3, REM).
EEG_RMS = {  # uV rms of each EEG component
    "pink": (6.0, 7.0, 8.0, 10.0, 6.0),
    "delta": (4.0, 8.0, 14.0, 48.0, 6.0),
    "theta": (4.0, 11.0, 6.0, 6.0, 8.0),
    "alpha": (13.0, 3.0, 1.5, 1.0, 3.0),
    "beta": (5.0, 2.5, 1.5, 1.0, 2.5),
}
EEG_BANDS = {"delta": (0.5, 2.0), "theta": (4.0, 7.0), "alpha": (8.0, 11.0), "beta": (18.0, 30.0)}
CHIN_RMS = (18.0, 9.0, 6.0, 5.0, 1.5)
# Heart rate by stage relative to N2: ~5-10 % lower in N3 than in wake, REM near wake (Trinder et al. 2001,
# J Sleep Res 10:253; Burgess et al. 1997). Generator <= 1.1 used (1.12, 1.04, 1.0, 0.93, 1.06), N3 17 % below W.
HR_FACTOR = (1.07, 1.03, 1.0, 0.96, 1.04)
HR_LF_BPM = (3.0, 2.0, 1.5, 0.7, 4.5)  # low-frequency heart-rate variability
RSA_BPM = (2.0, 2.5, 3.0, 3.5, 1.5)  # respiratory sinus arrhythmia
RESP_RATE_FACTOR = (1.1, 1.05, 1.0, 0.97, 1.08)
RESP_RATE_VAR = (0.10, 0.06, 0.03, 0.02, 0.12)
TIDAL = (1.0, 0.9, 0.85, 0.9, 0.8)
SNORE_BY_STAGE = (0.0, 0.4, 0.8, 0.6, 0.3)
# Breath-to-breath variability (coefficient of variation of breath duration and of tidal amplitude):
# regular in slow-wave sleep, irregular in REM and wake (Douglas et al. 1982, Thorax 37:840; Gould et al.
# 1988, Am Rev Respir Dis 138:874; Krieger 1990 review: CV of Ttot ~5-10 % in N3, ~20-30 % in REM).
BREATH_PERIOD_CV = (0.18, 0.15, 0.08, 0.05, 0.25)
BREATH_AMP_CV = (0.20, 0.18, 0.10, 0.07, 0.25)
# Baseline inspiratory flow limitation (flattening of the nasal-pressure inspiration, 0..1): upper-airway
# resistance rises from wake into NREM, most in N2/N3 (Hudgel et al. 1984, J Appl Physiol 56:133;
# Wiegand 1989), more in snorers; scaled by the subject's collapsibility.
FLOW_LIMITATION = (0.0, 0.15, 0.3, 0.35, 0.2)
# Slow fluctuation of slow-wave activity within and across NREM periods (SWA rises and falls over
# minutes, Achermann & Borbely 2003): log-sd of a < 0.01 Hz modulation of the delta amplitude.
SWA_LOG_SD = 0.25
TRANSITION_JITTER_S = 12.0  # stage changes happen anywhere within +-12 s of the scored epoch boundary


def _stream(seed: int, profile: SubjectProfile, *names: object) -> np.random.Generator:
    keys = [zlib.crc32(str(n).encode()) for n in names]
    return np.random.default_rng(
        np.random.SeedSequence([int(seed), zlib.crc32(profile.cohort.encode()), profile.subject, *keys])
    )


def band_noise(
    rng: np.random.Generator, n: int, fs: float, lo: float | None, hi: float | None, order: int = 2
) -> np.ndarray:
    """Unit-rms Gaussian noise band-limited to [lo, hi] Hz (either may be None)."""
    x = rng.standard_normal(n)
    nyq = fs / 2.0
    hi = None if hi is None or hi >= 0.95 * nyq else hi
    if lo is not None and hi is not None:
        sos = sps.butter(order, [lo, hi], btype="bandpass", fs=fs, output="sos")
    elif lo is not None:
        sos = sps.butter(order, lo, btype="highpass", fs=fs, output="sos")
    elif hi is not None:
        sos = sps.butter(order, hi, btype="lowpass", fs=fs, output="sos")
    else:
        return x
    y = sps.sosfilt(sos, x)
    return y / max(float(np.std(y)), 1e-12)


def pink_noise(rng: np.random.Generator, n: int, fs: float) -> np.ndarray:
    """Unit-rms 1/f noise above 0.3 Hz (FFT shaping)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / fs)
    spec *= 1.0 / np.sqrt(np.maximum(f, 0.3))
    spec[f < 0.3] = 0.0
    y = np.fft.irfft(spec, n)
    return y / max(float(np.std(y)), 1e-12)


def _windowed(duration: float, fs: float, onset: float) -> tuple[int, int]:
    a = round(onset * fs)
    return a, a + max(round(duration * fs), 1)


def _add_bursts(
    x: np.ndarray,
    fs: float,
    bursts: list[tuple[float, float, float, float]],
    kind: str,
    rng: np.random.Generator | None = None,
) -> None:
    """Add waveforms (onset s, duration s, amplitude, frequency Hz) in place; few thousand per night."""
    n = x.size
    for onset, dur, amp, freq in bursts:
        a, b = _windowed(dur, fs, onset)
        if a >= n:
            continue
        b = min(b, n)
        tau = np.arange(b - a) / fs
        u = tau / dur
        if kind == "spindle":  # waxing-waning sinusoid
            w = amp * np.sin(np.pi * u) ** 2 * np.sin(2 * np.pi * freq * tau)
        elif kind == "kcomplex":  # sharp negative then slower positive component
            w = amp * (-np.exp(-(((u - 0.25) / 0.12) ** 2)) + 0.55 * np.exp(-(((u - 0.62) / 0.2) ** 2)))
        elif kind == "vertex":
            w = -amp * np.exp(-(((u - 0.5) / 0.18) ** 2))
        elif kind == "sawtooth":  # 2-5 Hz triangular waves
            w = amp * np.sin(np.pi * u) * (2 * np.abs(2 * ((tau * freq) % 1.0) - 1) - 1)
        elif kind == "gauss":
            w = amp * np.exp(-(((u - 0.5) / 0.2) ** 2))
        elif kind == "slowwave":  # one cycle, surface-negative half first; amplitude is peak-to-peak
            w = -0.5 * amp * np.sin(2 * np.pi * u)
        elif kind == "pop":  # electrode pop: a step that decays with time constant ``freq`` seconds
            w = amp * np.exp(-tau / freq)
        else:  # "burst": noise burst, amplitude is rms
            w = amp * np.sin(np.pi * u) * rng.standard_normal(b - a)
        x[a:b] += w


@dataclass
class NightEvents:
    """Scored events by kind plus unscored nuisances."""

    respiratory: list[ScoredEvent]
    desaturations: list[ScoredEvent]
    arousals: list[ScoredEvent]
    limbs: list[ScoredEvent]
    movements: list[tuple[float, float]]  # movement artefacts (onset, duration), unscored


class NightRenderer:
    """Latent state of one night and the renderers of every measured quantity."""

    REM_SACCADES_PER_MIN = 40.0  # mean rate of eye-movement steps in REM (bursty: x a gamma(1, 1) per epoch)

    def __init__(
        self,
        profile: SubjectProfile,
        stages: np.ndarray,
        events: NightEvents,
        spo2: np.ndarray,
        seed: int,
        line_freq: float = 60.0,
    ) -> None:
        self.p, self.stages, self.ev, self.seed = profile, np.asarray(stages), events, seed
        self.spo2_1hz = spo2
        self.line_freq = float(line_freq)  # mains frequency of the site
        self.duration = len(stages) * EPOCH_SEC
        self.nc = int(self.duration * CTRL_FS)
        self.tc = np.arange(self.nc) / CTRL_FS
        self._cache: dict[tuple[str, int], np.ndarray] = {}
        self.epoch_w = latent_stage_mix(self.stages, self.rng("stage-mix"))  # [n_epochs, 5]
        self._drivers()

    # -- latent drivers ---------------------------------------------------------------------
    def rng(self, *names: object) -> np.random.Generator:
        """Named random stream of this night (independent of the preset and of call order)."""
        return _stream(self.seed, self.p, *names)

    def _drivers(self) -> None:
        self.w = self._stage_weights()
        self.arousal = self._envelope(self.ev.arousals, ramp=1.0)
        self.movement = self._envelope([ScoredEvent("m", a, d) for a, d in self.ev.movements], ramp=0.3)
        self._resp_drivers()
        self._heart_drivers()
        self._latent_eeg_events()
        self._latent_eye_events()

    def _stage_weights(self) -> np.ndarray:
        """Stage weights ``[5, nc]`` at the control rate: each epoch's mixture, transitions off the epoch grid.

        A scorer labels an epoch by the stage that fills most of it, so the physiological change lies
        anywhere around the scored boundary (shifted by up to ``TRANSITION_JITTER_S``) and is gradual (5 s).
        """
        per = int(EPOCH_SEC * CTRL_FS)
        w = np.repeat(self.epoch_w, per, axis=0)[: self.nc]
        rng = self.rng("transition-jitter")
        for b in np.flatnonzero(np.diff(self.stages) != 0) + 1:
            shift = int(rng.uniform(-TRANSITION_JITTER_S, TRANSITION_JITTER_S) * CTRL_FS)
            a = b * per
            if shift > 0:  # the earlier stage lasts into the later epoch
                w[a : a + shift] = self.epoch_w[b - 1]
            elif shift < 0:
                w[a + shift : a] = self.epoch_w[b]
        k = int(5 * CTRL_FS)
        return np.stack([np.convolve(col, np.ones(k) / k, mode="same") for col in w.T])

    def stage_rate(self, per_stage: tuple[float, ...] | np.ndarray) -> np.ndarray:
        """Per-epoch rate of a stage-dependent event (e.g. spindles/min) from each epoch's stage mixture."""
        return self.epoch_w @ np.asarray(per_stage, dtype=np.float64)

    def by_stage(self, values: tuple[float, ...]) -> np.ndarray:
        """Per-stage parameter as a smooth ctrl-rate trace."""
        return np.asarray(values) @ self.w

    def _envelope(self, events: list[ScoredEvent], ramp: float) -> np.ndarray:
        env = np.zeros(self.nc)
        for ev in events:
            t = self.tc
            a, b = (
                int(max(ev.onset - ramp, 0) * CTRL_FS),
                int(min(ev.end + ramp, self.duration) * CTRL_FS) + 1,
            )
            seg = t[a:b]
            up = np.clip((seg - (ev.onset - ramp)) / ramp, 0, 1)
            down = np.clip(((ev.end + ramp) - seg) / ramp, 0, 1)
            env[a:b] = np.maximum(env[a:b], np.minimum(up, down))
        return env

    def at(self, x: np.ndarray, fs: float, n: int) -> np.ndarray:
        """A ctrl-rate driver at rate fs (linear interpolation)."""
        return np.interp(np.arange(n) / fs, self.tc, x)

    def _resp_drivers(self) -> None:
        rng = self.rng("resp")
        nc = self.nc
        rate = self.p.resp_rate / 60.0 * self.by_stage(RESP_RATE_FACTOR)
        var = band_noise(rng, nc, CTRL_FS, None, 0.03) * self.by_stage(RESP_RATE_VAR)
        base = rate * (1 + var)
        tidal_noise = 1 + 0.08 * band_noise(rng, nc, CTRL_FS, None, 0.05)
        self.phase, breath_amp = self._breath_by_breath(base, self.rng("breath-by-breath"))
        self.tidal = self.by_stage(TIDAL) * tidal_noise * breath_amp
        flow_m, eff_m, paradox = np.ones(nc), np.ones(nc), np.zeros(nc)
        snore_boost, flat = np.ones(nc), np.zeros(nc)
        t = self.tc
        for ev in self.ev.respiratory:
            a, b = int(ev.onset * CTRL_FS), int(ev.end * CTRL_FS)
            r = int(min(ev.end + 15.0, self.duration) * CTRL_FS)
            ramp = np.clip(np.minimum(t[a:b] - ev.onset, ev.end - t[a:b]) / 2.0, 0, 1)
            flow_m[a:b] = 1 - (1 - ev.depth) * ramp
            if ev.kind == "central_apnea":
                eff_m[a:b] = 1 - 0.95 * ramp
            elif ev.kind == "obstructive_apnea":  # crescendo effort against a closed airway
                eff_m[a:b] = 1 + 0.4 * (t[a:b] - ev.onset) / ev.duration
                paradox[a:b] = ramp
                snore_boost[max(a - int(20 * CTRL_FS), 0) : a] = 2.0
            else:
                eff_m[a:b] = 1 - 0.25 * ramp
                paradox[a:b] = 0.3 * ramp
                flat[a:b] = ramp
            rec = np.exp(-(t[b:r] - ev.end) / 6.0)  # recovery breaths, large then settling
            flow_m[b:r] = 1 + 0.8 * rec
            eff_m[b:r] = 1 + 0.5 * rec
            snore_boost[b:r] = 2.5
        collapsible = (0.5 + 0.5 * self.p.snorer) * (0.6 + min(self.p.ahi_target, 40.0) / 40.0)
        flat = np.maximum(flat, self.by_stage(FLOW_LIMITATION) * min(collapsible, 1.2))
        self.flow_m, self.eff_m, self.paradox, self.snore_boost, self.flat = (
            flow_m,
            eff_m,
            paradox,
            snore_boost,
            flat,
        )

    def _breath_by_breath(self, rate: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Breathing phase with per-breath duration jitter, and a per-breath tidal-amplitude factor (ctrl rate)."""
        breath = np.floor(np.cumsum(rate) / CTRL_FS).astype(np.int64)
        n_breaths = int(breath[-1]) + 2 if breath.size else 1
        z_period, z_amp = rng.standard_normal(n_breaths), rng.standard_normal(n_breaths)
        speed = np.clip(1 + self.by_stage(BREATH_PERIOD_CV) * z_period[breath], 0.5, 2.0)
        phase = 2 * np.pi * np.cumsum(rate * speed) / CTRL_FS
        k = np.clip((phase // (2 * np.pi)).astype(np.int64), 0, n_breaths - 1)
        amp = np.clip(1 + self.by_stage(BREATH_AMP_CV) * z_amp[k], 0.3, 2.0)
        m = int(0.5 * CTRL_FS)  # no step in the waveform where one breath hands over to the next
        return phase, np.convolve(amp, np.ones(m) / m, mode="same")

    def _heart_drivers(self) -> None:
        rng = self.rng("heart")
        hr = self.p.hr_base * self.by_stage(HR_FACTOR)
        hrv = self.p.hrv_scale  # lower in the synthetic hypertension condition
        hr = hr + hrv * self.by_stage(HR_LF_BPM) * band_noise(rng, self.nc, CTRL_FS, 0.04, 0.15)
        hr = hr + hrv * self.by_stage(RSA_BPM) * np.sin(self.phase)
        surge = np.convolve(self.arousal, np.ones(int(5 * CTRL_FS)) / (5 * CTRL_FS), mode="same")
        hr = hr + 18.0 * surge
        self.hr = np.clip(hr, 35, 200)
        beats = np.cumsum(self.hr / 60.0) / CTRL_FS
        idx = np.flatnonzero(np.diff(np.floor(beats)) > 0)
        # sub-sample beat time by linear interpolation of the beat phase
        frac = (np.floor(beats[idx + 1]) - beats[idx]) / np.maximum(beats[idx + 1] - beats[idx], 1e-9)
        self.beat_times = (idx + frac) / CTRL_FS

    def _latent_eeg_events(self) -> None:
        rng = self.rng("eeg-events")
        ep = EPOCH_SEC

        def per_epoch(rate_per_min: dict[int, float]) -> list[float]:
            per_stage = np.zeros(5)
            per_stage[list(rate_per_min)] = list(rate_per_min.values())
            n = rng.poisson(self.stage_rate(per_stage) * 0.5)  # an ambiguous epoch has its mixture's rate
            times: list[float] = []
            for e in np.flatnonzero(n):
                times.extend((e * ep + rng.uniform(0, ep - 2, n[e])).tolist())
            return sorted(times)

        g = self.p.eeg_gain
        self.spindles = [
            (t, rng.uniform(0.5, 2.0), g * rng.uniform(15, 35), rng.uniform(11.0, 16.0))
            for t in per_epoch({2: 5.0, 3: 1.5})
        ]
        self.kcomplexes = [
            (t, rng.uniform(0.6, 1.0), g * rng.uniform(80, 150), 0.0) for t in per_epoch({2: 1.3})
        ]
        self.vertex = [(t, rng.uniform(0.2, 0.4), g * rng.uniform(40, 80), 0.0) for t in per_epoch({1: 1.5})]
        self.sawtooth = [
            (t, rng.uniform(2, 5), g * rng.uniform(20, 40), rng.uniform(2.0, 4.0))
            for t in per_epoch({4: 1.5})
        ]
        self.alpha_env = np.clip(0.6 + 0.6 * band_noise(rng, self.nc, CTRL_FS, None, 0.3), 0.0, 2.0)
        self.swa_env = np.exp(SWA_LOG_SD * band_noise(self.rng("swa"), self.nc, CTRL_FS, None, 0.005))

    def _latent_eye_events(self) -> None:
        rng = self.rng("eye-events")
        s, ep = self.stages, EPOCH_SEC
        times, _amps = [], []
        rem_burst = rng.gamma(1.0, 1.0, s.size)  # phasic REM: some epochs full of eye movements
        w = self.epoch_w
        rate = 20.0 * w[:, 0] + 3.0 * w[:, 1] + self.REM_SACCADES_PER_MIN * rem_burst * w[:, 4]
        n = rng.poisson(rate * 0.5)
        for e in np.flatnonzero(n):
            times.append(e * ep + np.sort(rng.uniform(0, ep, n[e])))
        times_arr = np.concatenate(times) if times else np.zeros(0)
        pos = rng.uniform(-1, 1, times_arr.size) * np.where(s[(times_arr // ep).astype(int)] == 4, 1.3, 0.7)
        self.saccades = (times_arr, np.diff(np.concatenate([[0.0], pos])))
        nb = rng.poisson(15.0 * w[:, 0] * 0.5)
        bl = [e * ep + rng.uniform(0, ep, nb[e]) for e in np.flatnonzero(nb)]
        self.blinks = np.concatenate(bl) if bl else np.zeros(0)

    # -- quantities -------------------------------------------------------------------------
    def render(self, quantity: str, fs: int) -> np.ndarray:
        """The signal of a measured quantity (key of MEASURED_QUANTITIES) at ``fs`` Hz."""
        key = (quantity, int(fs))
        if key not in self._cache:
            n = round(self.duration * fs)
            self._cache[key] = self._render(quantity, float(fs), n)
        return self._cache[key]

    def release(self, still_needed: set[str]) -> None:
        """Drop cached signals that no quantity in ``still_needed`` depends on (bounds memory)."""
        keep: set[str] = {"ECG"}
        for q in still_needed:
            keep.add(q)
            for bip, (lead, ref) in UNIPOLAR_PAIRS.items():
                if q == lead:
                    keep.update((bip, ref))
        for key in [k for k in self._cache if k[0] not in keep]:
            del self._cache[key]

    def _render(self, q: str, fs: float, n: int) -> np.ndarray:
        for bip, (lead, ref) in UNIPOLAR_PAIRS.items():
            if q == lead:
                return self.render(bip, int(fs)) + self._reference(ref, fs, n)
            if q == ref and q.startswith("EMG"):
                return self._reference(q, fs, n)
        if q in ("EEG_A1", "EEG_A2"):
            return self._reference(q, fs, n)
        if q in ("EEG_C3_A2", "EEG_C4_A1"):
            return self._eeg(q, fs, n)
        if q in ("EOG_E1_A2", "EOG_E2_A1"):
            return self._eog(q, fs, n)
        if q == "EMG_Chin":
            return self._chin(fs, n)
        if q in ("EMG_LLeg", "EMG_RLeg"):
            return self._leg(q, fs, n)
        if q == "ECG":
            return self._ecg(fs, n)
        if q in ("THX", "ABD"):
            return self._effort(q, fs, n)
        if q in ("NP", "AF"):
            return self._flow(q, fs, n)
        if q == "SN":
            return self._snore(fs, n)
        if q == "SPO2":
            return np.interp(np.arange(n) / fs, np.arange(self.spo2_1hz.size), self.spo2_1hz)
        if q == "HR":
            return self._hr(fs, n)
        raise ValueError(f"no renderer for measured quantity {q!r}")

    def _line(self, fs: float, n: int, amp: float, name: str) -> np.ndarray:
        f = self.line_freq
        if f >= fs / 2 or amp <= 0:
            return np.zeros(n)
        phase = self.rng("line", name).uniform(0, 2 * np.pi)
        return amp * np.sin(2 * np.pi * f * np.arange(n) / fs + phase)

    def _movement(self, fs: float, n: int, amp: float, name: str) -> np.ndarray:
        if not self.ev.movements:
            return np.zeros(n)
        env = self.at(self.movement, fs, n)
        return amp * env * band_noise(self.rng("movement", name, fs), n, fs, 0.3, 8.0)

    def _reference(self, q: str, fs: float, n: int) -> np.ndarray:
        """Potential of a reference electrode: small EEG, ECG pick-up and the common-mode mains."""
        rng = self.rng("ref", q, fs)
        x = 3.0 * pink_noise(rng, n, fs) + 2.0 * band_noise(rng, n, fs, 0.5, 2.0)
        x += 0.004 * self.render("ECG", int(fs)) * 1000.0 / max(self.p.ecg_gain, 0.1)
        return x + self._line(fs, n, 6.0 * self.p.line_noise_uv + 3.0, q)

    def _eeg(self, q: str, fs: float, n: int) -> np.ndarray:
        own = self.rng("eeg", q, fs)
        common = self.rng("eeg", "common", fs)
        g = self.p.eeg_gain
        x = np.zeros(n)
        arousal = self.at(self.arousal, fs, n)
        # one band at a time keeps the memory of an 8 h, 256 Hz night low
        for band in (*EEG_BANDS, "pink"):
            if band == "pink":
                mixed = 0.75 * pink_noise(common, n, fs) + 0.66 * pink_noise(own, n, fs)
            else:
                lo, hi = EEG_BANDS[band]
                order = 4 if band == "alpha" else 2
                mixed = 0.75 * band_noise(common, n, fs, lo, hi, order) + 0.66 * band_noise(
                    own, n, fs, lo, hi, order
                )
            amp = self.at(self.by_stage(EEG_RMS[band]), fs, n)
            if band == "alpha":
                amp = amp * self.p.alpha_gain * self.at(self.alpha_env, fs, n) + 12.0 * arousal
            if band == "beta":
                amp = amp + 6.0 * arousal
            if band == "delta":
                amp = amp * self.at(self.swa_env, fs, n) * (1 - 0.7 * arousal)
            x += g * amp * mixed
        side = 1.0 if q == "EEG_C3_A2" else 0.9
        for bursts, kind in (
            (self.spindles, "spindle"),
            (self.kcomplexes, "kcomplex"),
            (self.vertex, "vertex"),
            (self.sawtooth, "sawtooth"),
        ):
            _add_bursts(x, fs, [(t, d, a * side, f) for t, d, a, f in bursts], kind)
        drift = 5.0 * band_noise(own, n, fs, None, 0.05, order=1)
        return x + drift + self._line(fs, n, self.p.line_noise_uv, q) + self._movement(fs, n, 150.0, "eeg")

    def _eog(self, q: str, fs: float, n: int) -> np.ndarray:
        rng = self.rng("eog", q, fs)
        sign = 1.0 if q == "EOG_E1_A2" else -1.0
        g = self.p.eog_gain
        # horizontal gaze: steps at saccades, AC-coupled like the amplifier (0.3 Hz high-pass)
        times, steps = self.saccades
        imp = np.zeros(n)
        np.add.at(imp, np.clip((times * fs).astype(int), 0, n - 1), steps)
        gaze = np.cumsum(imp)
        k = max(int(0.03 * fs), 1)
        gaze = np.convolve(gaze, np.ones(k) / k, mode="same")
        gaze = sps.sosfilt(sps.butter(1, 0.3, btype="highpass", fs=fs, output="sos"), gaze)
        rolling = band_noise(self.rng("eog", "rolling", fs), n, fs, 0.15, 0.6) * self.at(
            self.by_stage((15, 60, 5, 0, 5)), fs, n
        )
        x = sign * g * (150.0 * gaze + rolling)
        blinks = np.zeros(n)
        _add_bursts(blinks, fs, [(t, 0.35, 1.0, 0.0) for t in self.blinks], "gauss")
        x += g * (200.0 if sign > 0 else 120.0) * blinks
        # bleed-through of frontal EEG slow waves, in phase on both leads (unlike eye movements)
        common = self.rng("eeg", "common", fs)
        delta = band_noise(common, n, fs, *EEG_BANDS["delta"])
        x += 0.2 * self.p.eeg_gain * self.at(self.by_stage(EEG_RMS["delta"]), fs, n) * delta
        kc = np.zeros(n)
        _add_bursts(kc, fs, self.kcomplexes, "kcomplex")
        x += 0.2 * kc + 4.0 * band_noise(rng, n, fs, 0.3, None)
        return x + self._line(fs, n, self.p.line_noise_uv, q) + self._movement(fs, n, 200.0, "eog" + q)

    def _chin(self, fs: float, n: int) -> np.ndarray:
        rng = self.rng("chin", fs)
        tone = self.by_stage(CHIN_RMS) * self.p.emg_gain + 15.0 * self.p.emg_gain * self.arousal
        x = self.at(tone, fs, n) * band_noise(rng, n, fs, 10.0, None)
        rem = np.flatnonzero(self.epoch_w[:, 4] > 0)
        k = rng.poisson(6.0 * 0.5 * self.epoch_w[rem, 4])  # phasic twitches during REM atonia
        tw = np.concatenate(
            [e * EPOCH_SEC + rng.uniform(0, EPOCH_SEC, m) for e, m in zip(rem, k) if m] or [np.zeros(0)]
        )
        _add_bursts(
            x, fs, [(t, rng.uniform(0.1, 0.3), 20.0 * self.p.emg_gain, 0.0) for t in tw], "burst", rng
        )
        x += 0.003 * self.render("ECG", int(fs)) * 1000.0
        return x + self._line(fs, n, self.p.line_noise_uv, "chin") + self._movement(fs, n, 80.0, "chin")

    def _leg(self, q: str, fs: float, n: int) -> np.ndarray:
        rng = self.rng("leg", q, fs)
        kind = "limb_left" if q == "EMG_LLeg" else "limb_right"
        x = 2.0 * self.p.emg_gain * band_noise(rng, n, fs, 10.0, None)
        lms = [
            (ev.onset, ev.duration, self.p.emg_gain * rng.uniform(20, 50), 0.0)
            for ev in self.ev.limbs
            if ev.kind == kind
        ]
        _add_bursts(x, fs, lms, "burst", rng)
        return x + self._line(fs, n, self.p.line_noise_uv, q) + self._movement(fs, n, 30.0, q)

    def _ecg(self, fs: float, n: int) -> np.ndarray:
        rng = self.rng("ecg", fs)
        tt = np.arange(-0.35, 0.45, 1.0 / fs)
        waves = (
            (0.12, -0.2, 0.025),
            (-0.12, -0.03, 0.01),
            (1.0, 0.0, 0.012),
            (-0.25, 0.03, 0.012),
            (0.3, 0.25, 0.05),
        )
        template = sum(a * np.exp(-(((tt - mu) / sd) ** 2) / 2) for a, mu, sd in waves)
        imp = np.zeros(n)
        idx = np.round(self.beat_times * fs).astype(int)
        ok = idx < n
        resp_mod = 1 + 0.08 * np.sin(np.interp(self.beat_times[ok], self.tc, self.phase))
        np.add.at(imp, idx[ok], resp_mod)
        x = sps.fftconvolve(imp, template, mode="full")[round(0.35 * fs) : round(0.35 * fs) + n]
        x = self.p.ecg_gain * x
        x += 0.08 * np.sin(self.at(self.phase, fs, n)) + 0.02 * band_noise(rng, n, fs, 0.5, None)
        return x + self._line(fs, n, 0.01 * self.p.line_noise_uv, "ecg") + self._movement(fs, n, 0.3, "ecg")

    def _hr(self, fs: float, n: int) -> np.ndarray:
        rr = np.diff(self.beat_times)
        inst = 60.0 / np.maximum(rr, 0.2)
        t = np.arange(n) / fs
        i = np.clip(np.searchsorted(self.beat_times[1:], t), 0, inst.size - 1)
        return np.round(inst[i])

    def _effort(self, q: str, fs: float, n: int) -> np.ndarray:
        rng = self.rng("effort", q, fs)
        ph = self.at(self.phase, fs, n)
        shift = 0.0 if q == "THX" else 0.15 + self.at(self.paradox, fs, n) * (np.pi - 0.15)
        amp = 0.35 * self.p.resp_gain * self.at(self.tidal * self.eff_m, fs, n)
        x = amp * np.sin(ph - shift) + 0.05 * band_noise(rng, n, fs, None, 0.05, order=1)
        return x + 0.01 * band_noise(rng, n, fs, 1.0, None) + self._movement(fs, n, 0.3, q)

    def _flow(self, q: str, fs: float, n: int) -> np.ndarray:
        rng = self.rng("flow", q, fs)
        ph = self.at(self.phase, fs, n)
        wave = np.sin(ph) + 0.25 * np.sin(2 * ph - 0.5)
        amp = 0.4 * self.p.resp_gain * self.at(self.tidal * self.flow_m, fs, n)
        x = amp * wave
        if q == "NP":  # inspiratory flattening (flow limitation) in obstructive hypopneas
            cap = 0.4 * self.p.resp_gain * self.at(self.tidal, fs, n) * (1 - 0.55 * self.at(self.flat, fs, n))
            x = np.where(x > 0, np.minimum(x, cap), x)
        else:  # a thermistor is a slow, lagging sensor
            x = sps.sosfilt(sps.butter(1, 0.8, fs=fs, output="sos"), x) * 1.3
        return x + 0.015 * band_noise(rng, n, fs, None, None) + self._movement(fs, n, 0.2, q)

    def _snore(self, fs: float, n: int) -> np.ndarray:
        rng = self.rng("snore", fs)
        ph = self.at(self.phase, fs, n)
        level = self.by_stage(SNORE_BY_STAGE) * (1.0 if self.p.snorer else 0.1) * self.snore_boost
        level = level * (self.flow_m > 0.2)  # no sound without airflow
        insp = np.clip(np.sin(ph), 0, 1) ** 2
        x = 30.0 * self.at(level, fs, n) * insp * band_noise(rng, n, fs, min(30.0, fs / 4), None)
        return x + 1.0 * band_noise(rng, n, fs, min(10.0, fs / 4), None)

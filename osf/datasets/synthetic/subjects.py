"""Per-subject profiles of the synthetic cohort: demographics, severity and physiology knobs."""

from __future__ import annotations

import datetime as dt
import zlib
from dataclasses import asdict, dataclass

import numpy as np
from scipy.special import ndtri

from osf.datasets.synthetic.cohorts import CohortPreset

SEVERITY_CLASSES: tuple[str, ...] = ("none", "mild", "moderate", "severe")
# AHI (events/h) bounds of the classes above: [lo, hi).
SEVERITY_AHI_BOUNDS: tuple[tuple[float, float], ...] = ((0.0, 5.0), (5.0, 15.0), (15.0, 30.0), (30.0, 80.0))


def severity_class(ahi: float) -> str:
    """Night-level severity class of an AHI (AASM cut-offs 5/15/30)."""
    for name, (lo, hi) in zip(SEVERITY_CLASSES, SEVERITY_AHI_BOUNDS):
        if ahi < hi:
            return name
    return SEVERITY_CLASSES[-1]


def night_rng(seed: int, cohort: str, subject: int) -> np.random.Generator:
    """Independent, reproducible random stream of one night (stable across processes and runs)."""
    return np.random.default_rng(
        np.random.SeedSequence([int(seed), zlib.crc32(cohort.encode()), int(subject)])
    )


@dataclass(frozen=True)
class SubjectProfile:
    """What makes one synthetic night differ from another (drawn once per subject)."""

    recording_id: str
    cohort: str
    subject: int
    age: float
    sex: str  # "M" / "F"
    severity_target: str  # severity class the AHI was drawn from
    ahi_target: float  # configured events/h of sleep
    plm: bool  # periodic limb movement series
    snorer: bool
    hr_base: float  # bpm in N2
    resp_rate: float  # breaths/min in N2
    spo2_baseline: float  # %
    n3_scale: float  # multiplies N3 duration per cycle
    waso_rate: float  # brief awakenings per hour of sleep
    spont_arousal_rate: float  # spontaneous arousals per hour of sleep
    eeg_gain: float  # per-subject amplitude differences (skull, electrode impedance)
    eog_gain: float
    emg_gain: float
    ecg_gain: float
    resp_gain: float
    alpha_gain: float  # some people have little posterior alpha
    line_noise_uv: float  # mains interference amplitude on bipolar leads
    start: dt.datetime  # lights off
    # Night-level traits (drawn from their own stream, so the fields above keep their values per seed).
    bmi: float = 25.0  # kg/m2, rises with AHI
    hypertension: bool = False  # synthetic condition: higher heart rate, lower heart-rate variability
    hrv_scale: float = 1.0  # multiplies the LF and respiratory (RSA) heart-rate variability
    rem_scale: float = 1.0  # multiplies REM duration per cycle (REM declines with age)

    def as_row(self) -> dict:
        """A flat dict for the subjects CSV (demographics and configured severity)."""
        d = asdict(self)
        d["start"] = self.start.isoformat()
        return d


# Literature magnitudes the traits follow (adults): slow-wave sleep falls ~2 %/decade of age and is
# lower in men (Ohayon 2004; Redline 2004, SHHS); REM falls ~0.6 %/decade (Ohayon 2004); posterior
# alpha power falls with age; hypertension goes with a higher resting heart rate and lower HRV
# (Singh 1998, Framingham); BMI rises with AHI (Peppard 2000).
MALE_N3_FACTOR, FEMALE_N3_FACTOR = 0.85, 1.15
HYPERTENSION_HR_BPM = 9.0
HYPERTENSION_HRV_SCALE = 0.45
HR_MEAN_BPM, HR_SD_BPM = 62.0, 7.0


def _traits(preset: CohortPreset, subject: int, seed: int, age: float, ahi: float) -> dict:
    """BMI, the synthetic hypertension condition and its cardiac signature (own random stream)."""
    rng = night_rng(seed, preset.name + "/traits", subject)
    if preset.paediatric:
        bmi = 17.0 + 0.08 * ahi + rng.normal(0.0, 2.5)
        logit = -4.0 + 0.03 * ahi
    else:
        bmi = 24.0 + 0.12 * ahi + rng.normal(0.0, 3.0)
        logit = -1.6 + 0.05 * (age - 55.0) + 0.04 * ahi
    htn = bool(rng.random() < 1.0 / (1.0 + np.exp(-logit)))
    hrv = float(rng.uniform(0.8, 1.2)) * (HYPERTENSION_HRV_SCALE if htn else 1.0)
    return {"bmi": round(float(np.clip(bmi, 14.0, 55.0)), 1), "hypertension": htn, "hrv_scale": hrv}


def draw_subject(preset: CohortPreset, subject: int, seed: int) -> SubjectProfile:
    """Draw the profile of the subject-th night of a cohort (deterministic in seed)."""
    rng = night_rng(seed, preset.name, subject)
    age = float(rng.uniform(*preset.age_range))
    sex = "M" if (preset.name == "mros" or rng.random() < 0.5) else "F"  # MrOS enrolled men only
    sev_idx = int(rng.choice(4, p=np.asarray(preset.severity_probs) / sum(preset.severity_probs)))
    lo, hi = SEVERITY_AHI_BOUNDS[sev_idx]
    hi = min(hi, 60.0)
    ahi = float(rng.uniform(lo + (0.5 if lo == 0 else 1.0), hi - 1.0))
    if preset.paediatric:
        n3_scale = float(rng.uniform(1.5, 2.1))
        hr_base = float(rng.uniform(78, 95))
        resp_rate = float(rng.uniform(18, 23))
        waso_rate = float(rng.uniform(0.8, 2.0))
        spont = float(rng.uniform(4, 8))
    else:
        older = np.clip((age - 40.0) / 40.0, 0.0, 1.0)  # 0 at 40 y, 1 at 80 y
        n3_scale = float(rng.uniform(0.9, 1.4) * (1.0 - 0.65 * older))
        # sleeping heart rate of adults ~62 +- 7 bpm between subjects (e.g. MESA/SHHS nocturnal HR; Singh
        # 1998, Framingham): wider than the N2 -> N3 drop (~5-10 %), so absolute rate alone stages poorly.
        # One uniform draw, mapped through the normal quantile, keeps the subject streams unchanged.
        hr_base = float(np.clip(HR_MEAN_BPM + HR_SD_BPM * ndtri(rng.uniform(0.02, 0.98)), 45.0, 85.0))
        resp_rate = float(rng.uniform(12, 16))
        waso_rate = float(rng.uniform(1.5, 3.0) * (1.0 + older))
        spont = float(rng.uniform(6, 12) * (1.0 + 0.7 * older))
    waso_rate *= 1.0 + ahi / 40.0
    day = dt.date(2000, 1, 1) + dt.timedelta(days=int(rng.integers(0, 3650)))
    start_h = float(rng.uniform(*preset.start_hour_range))
    start = dt.datetime.combine(day, dt.time()) + dt.timedelta(seconds=int(start_h * 3600) // 30 * 30)
    traits = _traits(preset, subject, seed, age, ahi)
    n3_scale *= MALE_N3_FACTOR if sex == "M" else FEMALE_N3_FACTOR
    # adults only: REM and alpha centred at 50 y, so the cohort averages stay where they were calibrated
    rem_scale = 1.0 if preset.paediatric else float(np.clip(1.0 + 0.005 * (50.0 - age), 0.8, 1.2))
    alpha_age = 1.0 if preset.paediatric else float(np.clip(1.0 + 0.008 * (50.0 - age), 0.7, 1.3))
    hr_base += HYPERTENSION_HR_BPM if traits["hypertension"] else 0.0
    return SubjectProfile(
        recording_id=preset.recording_id(subject),
        cohort=preset.name,
        subject=subject,
        age=round(age, 1),
        sex=sex,
        severity_target=SEVERITY_CLASSES[sev_idx],
        ahi_target=ahi,
        plm=bool(rng.random() < preset.plm_prob),
        snorer=bool(rng.random() < 0.3 + 0.15 * sev_idx),
        hr_base=hr_base,
        resp_rate=resp_rate,
        spo2_baseline=float(rng.uniform(94.5, 97.5) - (0.0 if preset.paediatric else 0.5 * sev_idx)),
        n3_scale=n3_scale,
        waso_rate=waso_rate,
        spont_arousal_rate=spont,
        eeg_gain=float(rng.lognormal(0.0, 0.15)),
        eog_gain=float(rng.lognormal(0.0, 0.2)),
        emg_gain=float(rng.lognormal(0.0, 0.3)),
        ecg_gain=float(rng.lognormal(0.0, 0.25)),
        resp_gain=float(rng.lognormal(0.0, 0.2)),
        alpha_gain=float(rng.uniform(0.5, 1.3)) * alpha_age,
        line_noise_uv=float(rng.uniform(0.2, 3.0)),
        start=start,
        rem_scale=rem_scale,
        **traits,
    )


# --- generator 2: subject-specific spectra and sensor traits (own stream; generator 1 draws nothing here) --
LOW_ALPHA_FRACTION = 0.1  # ~5-10 % of adults show little or no posterior alpha (Niedermeyer & Lopes da Silva)


@dataclass(frozen=True)
class SpectralTraits:
    """What makes one person's EEG and sensors look unlike another's (generator 2)."""

    iaf: float  # individual alpha frequency, Hz (10 +- 1, lower with age; Klimesch 1999)
    alpha_amp: float  # x the stage table's alpha; ~0.15 in "low-alpha" people
    spindle_freq: float  # centre of the subject's sigma spindles, Hz (12-14.5; Purcell 2017)
    slow_wave_amp: float  # x slow-wave amplitude, falls with age (Carrier 2011: ~-30 % from 23 to 59 y)
    aperiodic_exponent: float  # 1/f^beta slope of the background, flatter with age (Voytek 2015)
    ecg_pickup_uv: float  # cardiac field in the EEG/EMG derivations (R-peak uV), larger with BMI
    sweat_rate_h: float  # slow sweat-artefact episodes per hour
    pop_rate_h: float  # electrode pops per hour per lead
    gain_drift_sd: float  # log-sd of the slow within-night gain drift of each lead


def draw_spectral_traits(preset: CohortPreset, profile: SubjectProfile, seed: int) -> SpectralTraits:
    """Spectral and sensor traits of one subject (deterministic in seed; own random stream)."""
    rng = night_rng(seed, preset.name + "/spectra", profile.subject)
    age = profile.age
    iaf = float(np.clip(rng.normal(10.3 - 0.02 * max(age - 20.0, 0.0), 0.9), 8.0, 12.0))
    low_alpha = rng.random() < LOW_ALPHA_FRACTION
    alpha_amp = float(rng.uniform(0.08, 0.25) if low_alpha else rng.lognormal(0.0, 0.3))
    slow = 1.25 if preset.paediatric else float(np.clip(1.15 - 0.009 * (age - 20.0), 0.55, 1.15))
    return SpectralTraits(
        iaf=round(iaf, 2),
        alpha_amp=alpha_amp,
        spindle_freq=float(np.clip(rng.normal(13.2, 0.6), 12.0, 14.5)),
        slow_wave_amp=slow * float(rng.lognormal(0.0, 0.12)),
        aperiodic_exponent=float(np.clip(rng.normal(1.3 - 0.004 * (age - 20.0), 0.2), 0.6, 2.0)),
        ecg_pickup_uv=float(rng.uniform(1.0, 6.0) * (1.0 + max(profile.bmi - 25.0, 0.0) / 10.0)),
        sweat_rate_h=float(rng.exponential(0.4)),
        pop_rate_h=float(rng.exponential(1.0)),
        gain_drift_sd=float(rng.uniform(0.05, 0.2)),
    )

"""Cohort presets of the synthetic PSG generator: EDF labels, rates, units, ranges and montage gaps.

Every EDF label below is a real NSRR label from ``../shared/reference/nsrr_channel_aliases.json``
so the ingestion code, whose registry is built from the same reference, recognises it. Each channel
also names the *measured quantity* (``measures``): a key of that reference (``EEG_C3_A2``,
``EEG_C3``, ``EEG_A2``, ``EMG_LChin``, ``AF``, ``SPO2`` ...). Unipolar quantities (``EEG_C3``,
``EEG_A2``, ``EMG_LLeg1`` ...) are stored as separate signals and the bipolar canonical channel must
be derived at ingestion (``EEG_C3_A2 = EEG_C3 - EEG_A2``); the generator guarantees that such a
difference equals, sample for sample, what a bipolar preset would have recorded for that subject.

Montage facts follow the NSRR cohorts loosely (rates and ranges are plausible, not a copy):

- ``shhs``: SHHS-1 style; EEG 125 Hz, EOG 50 Hz, belts and thermistor 10 Hz, SpO2 and HR 1 Hz;
  EEG range +-125 uV, so high delta clips now and then (as in the real data). No leg EMG, no nasal
  pressure, no snore channel.
- ``mesa``: MESA style, everything 256 Hz except respiration 32 Hz and SpO2/HR 1 Hz; one central
  derivation only (C4-M1 stored as ``EEG3``; no C3), one leg channel (``Leg``), no right leg.
- ``mros``: MrOS style, unipolar: C3, C4, A1, A2, LOC, ROC, L Chin, R Chin and two electrodes per
  leg are stored separately; respiration 10/32 Hz; no snore channel.
- ``chat``: CHAT style (paediatric: faster heart and breathing, more N3, lower AHI), unipolar at
  200 Hz (a rate that is not a multiple of 64 Hz), respiration 64 Hz.
- ``generic``: the full 12-channel montage with modern AASM labels, all bipolar, 256 Hz.
"""

from __future__ import annotations

from dataclasses import dataclass

# Measured quantities the renderer knows. Unipolar leads are referenced to a common (ground-like)
# electrode; a bipolar quantity equals the difference of its two unipolar leads.
UNIPOLAR_PAIRS: dict[str, tuple[str, str]] = {
    "EEG_C3_A2": ("EEG_C3", "EEG_A2"),
    "EEG_C4_A1": ("EEG_C4", "EEG_A1"),
    "EOG_E1_A2": ("EOG_L", "EEG_A2"),
    "EOG_E2_A1": ("EOG_R", "EEG_A1"),
    "EMG_Chin": ("EMG_LChin", "EMG_RChin"),
    "EMG_LLeg": ("EMG_LLeg1", "EMG_LLeg2"),
    "EMG_RLeg": ("EMG_RLeg1", "EMG_RLeg2"),
}
BIPOLAR_QUANTITIES: tuple[str, ...] = tuple(UNIPOLAR_PAIRS)
SINGLE_QUANTITIES: tuple[str, ...] = ("ECG", "THX", "ABD", "NP", "AF", "SN", "SPO2", "HR")
UNIPOLAR_QUANTITIES: tuple[str, ...] = tuple(sorted({q for pair in UNIPOLAR_PAIRS.values() for q in pair}))
MEASURED_QUANTITIES: tuple[str, ...] = BIPOLAR_QUANTITIES + SINGLE_QUANTITIES + UNIPOLAR_QUANTITIES


@dataclass(frozen=True)
class ChannelSpec:
    """One EDF signal of a preset."""

    label: str  # EDF label, a real NSRR alias
    measures: str  # measured quantity (key of nsrr_channel_aliases.json), see MEASURED_QUANTITIES
    rate: int  # Hz, integer so that 1 s data records hold whole samples
    unit: str  # EDF physical dimension
    physical_range: tuple[float, float]  # EDF physical min/max; values beyond are clipped
    transducer: str = ""
    prefilter: str = ""


@dataclass(frozen=True)
class CohortPreset:
    """A synthetic cohort: montage, population and scoring conventions."""

    name: str
    channels: tuple[ChannelSpec, ...]
    id_prefix: str  # recording ids are f"{id_prefix}{subject:06d}" style, see ``recording_id``
    age_range: tuple[float, float]  # years, uniform
    paediatric: bool = False
    # Probabilities of the night-level severity classes none/mild/moderate/severe (AHI <5, 5-15,
    # 15-30, >=30).
    severity_probs: tuple[float, float, float, float] = (0.35, 0.30, 0.20, 0.15)
    line_freq: float = 60.0  # mains frequency of the site (Hz)
    plm_prob: float = 0.25  # probability that a subject has periodic limb movement series
    start_hour_range: tuple[float, float] = (21.5, 23.5)  # clock time of lights off
    software: str = "Compumedics"
    # Generator 2: the site's amplifier and filters (montage shift between cohorts; generator 1 ignores them)
    amp_noise_uv: float = 0.5  # white amplifier noise on head leads, uV rms
    eeg_highpass_hz: float = 0.3  # first-order band-pass of the head leads (EEG/EOG) as recorded
    eeg_lowpass_hz: float = 35.0

    @property
    def labels(self) -> tuple[str, ...]:
        """EDF labels in file order."""
        return tuple(c.label for c in self.channels)

    def channel(self, label: str) -> ChannelSpec:
        """The channel with this EDF label."""
        for c in self.channels:
            if c.label == label:
                return c
        raise KeyError(f"preset {self.name!r} has no channel {label!r}; labels: {list(self.labels)}")

    def recording_id(self, subject: int) -> str:
        """Recording id (EDF/XML file stem) of the subject-th night of this cohort."""
        return f"{self.id_prefix}{subject + 1:06d}"


def _eeg(label: str, measures: str, rate: int, rng: float = 250.0) -> ChannelSpec:
    return ChannelSpec(label, measures, rate, "uV", (-rng, rng), "AgAgCl electrode", "HP:0.3Hz LP:35Hz")


def _eog(label: str, measures: str, rate: int, rng: float = 500.0) -> ChannelSpec:
    return ChannelSpec(label, measures, rate, "uV", (-rng, rng), "AgAgCl electrode", "HP:0.3Hz LP:35Hz")


def _emg(label: str, measures: str, rate: int, rng: float = 200.0) -> ChannelSpec:
    return ChannelSpec(label, measures, rate, "uV", (-rng, rng), "AgAgCl electrode", "HP:10Hz")


def _ecg(label: str, rate: int) -> ChannelSpec:
    return ChannelSpec(label, "ECG", rate, "mV", (-2.5, 2.5), "AgAgCl electrode", "HP:0.3Hz")


def _belt(label: str, measures: str, rate: int) -> ChannelSpec:
    return ChannelSpec(label, measures, rate, "", (-1.0, 1.0), "Inductance belt", "")


def _flow(label: str, measures: str, rate: int) -> ChannelSpec:
    transducer = "Nasal cannula pressure" if measures == "NP" else "Thermistor"
    unit = "cmH2O" if measures == "NP" else ""
    return ChannelSpec(label, measures, rate, unit, (-1.0, 1.0), transducer, "")


def _snore(label: str, rate: int) -> ChannelSpec:
    return ChannelSpec(label, "SN", rate, "uV", (-100.0, 100.0), "Piezo snore sensor", "HP:10Hz")


def _spo2(label: str) -> ChannelSpec:
    return ChannelSpec(label, "SPO2", 1, "%", (0.0, 100.0), "Pulse oximeter", "")


def _hr(label: str) -> ChannelSpec:
    return ChannelSpec(label, "HR", 1, "bpm", (0.0, 250.0), "Pulse oximeter", "")


COHORT_PRESETS: dict[str, CohortPreset] = {
    "shhs": CohortPreset(
        name="shhs",
        amp_noise_uv=1.5,
        eeg_highpass_hz=0.15,
        eeg_lowpass_hz=30.0,
        id_prefix="shhs1-2",
        age_range=(40.0, 90.0),
        line_freq=60.0,
        plm_prob=0.0,  # no leg channel: limb movements would be invisible and unscored
        channels=(
            _spo2("SaO2"),
            _hr("H.R."),
            _eeg("EEG(sec)", "EEG_C3_A2", 125, rng=125.0),
            _ecg("ECG", 125),
            _emg("EMG", "EMG_Chin", 125, rng=125.0),
            _eog("EOG(L)", "EOG_L", 50),
            _eog("EOG(R)", "EOG_R", 50),
            _eeg("EEG", "EEG_C4_A1", 125, rng=125.0),
            _belt("THOR RES", "THX", 10),
            _belt("ABDO RES", "ABD", 10),
            _flow("AIRFLOW", "AF", 10),
        ),
    ),
    "mesa": CohortPreset(
        name="mesa",
        amp_noise_uv=0.8,
        eeg_highpass_hz=0.3,
        eeg_lowpass_hz=35.0,
        id_prefix="mesa-sleep-",
        age_range=(54.0, 94.0),
        line_freq=60.0,
        channels=(
            _ecg("EKG", 256),
            _eog("EOG L", "EOG_L", 256),
            _eog("EOG R", "EOG_R", 256),
            _emg("EMG", "EMG_Chin", 256),
            _eeg("EEG3", "EEG_C4_A1", 256),
            _belt("Thor", "THX", 32),
            _belt("Abdo", "ABD", 32),
            _flow("Airflow", "AF", 32),
            _flow("Nasal", "NP", 32),
            _snore("Snore", 32),
            _emg("Leg", "EMG_LLeg", 256),
            _spo2("SpO2"),
            _hr("HR"),
        ),
    ),
    "mros": CohortPreset(
        name="mros",
        amp_noise_uv=1.0,
        eeg_highpass_hz=0.5,
        eeg_lowpass_hz=35.0,
        id_prefix="mros-visit1-aa",
        age_range=(67.0, 95.0),
        severity_probs=(0.25, 0.30, 0.25, 0.20),
        line_freq=60.0,
        plm_prob=0.4,
        channels=(
            _eeg("C3", "EEG_C3", 256),
            _eeg("C4", "EEG_C4", 256),
            _eeg("A1", "EEG_A1", 256),
            _eeg("A2", "EEG_A2", 256),
            _eog("LOC", "EOG_L", 256),
            _eog("ROC", "EOG_R", 256),
            _emg("L Chin", "EMG_LChin", 256),
            _emg("R Chin", "EMG_RChin", 256),
            _emg("LAT1", "EMG_LLeg1", 256),
            _emg("LAT2", "EMG_LLeg2", 256),
            _emg("RAT1", "EMG_RLeg1", 256),
            _emg("RAT2", "EMG_RLeg2", 256),
            _ecg("ECG", 512),
            _belt("Thoracic", "THX", 10),
            _belt("Abdominal", "ABD", 10),
            _flow("Cannula Flow", "NP", 32),
            _flow("AIRFLOW", "AF", 32),
            _spo2("SaO2"),
            _hr("Pulse"),
        ),
    ),
    "chat": CohortPreset(
        name="chat",
        amp_noise_uv=0.7,
        eeg_highpass_hz=0.3,
        eeg_lowpass_hz=70.0,
        id_prefix="chat-baseline-300",
        age_range=(5.0, 10.0),
        paediatric=True,
        severity_probs=(0.45, 0.40, 0.12, 0.03),
        line_freq=60.0,
        plm_prob=0.1,
        start_hour_range=(20.0, 21.5),
        channels=(
            _eeg("C3", "EEG_C3", 200),
            _eeg("C4", "EEG_C4", 200),
            _eeg("M1", "EEG_A1", 200),
            _eeg("M2", "EEG_A2", 200),
            _eog("E1", "EOG_L", 200),
            _eog("E2", "EOG_R", 200),
            _emg("Chin2", "EMG_LChin", 200),
            _emg("Chin3", "EMG_RChin", 200),
            _emg("Lleg1", "EMG_LLeg1", 200),
            _emg("Lleg2", "EMG_LLeg2", 200),
            _emg("Rleg1", "EMG_RLeg1", 200),
            _emg("Rleg2", "EMG_RLeg2", 200),
            _ecg("EKG", 200),
            _belt("Chest", "THX", 64),
            _belt("ABD", "ABD", 64),
            _flow("CannulaFlow", "NP", 64),
            _flow("Airflow", "AF", 64),
            _snore("Snore", 200),
            _spo2("SpO2"),
            _hr("Pulse"),
        ),
    ),
    "generic": CohortPreset(
        name="generic",
        id_prefix="generic-",
        age_range=(20.0, 80.0),
        line_freq=50.0,
        channels=(
            _eeg("C3-M2", "EEG_C3_A2", 256),
            _eeg("C4-M1", "EEG_C4_A1", 256),
            _eog("E1-M2", "EOG_E1_A2", 256),
            _eog("E2-M1", "EOG_E2_A1", 256),
            _emg("Chin1-Chin2", "EMG_Chin", 256),
            _emg("L Leg", "EMG_LLeg", 256),
            _emg("R Leg", "EMG_RLeg", 256),
            _ecg("ECG", 256),
            _belt("Thorax", "THX", 32),
            _belt("Abdomen", "ABD", 32),
            _flow("Nasal Pressure", "NP", 32),
            _flow("Airflow", "AF", 32),
            _snore("Snore", 256),
            _spo2("SpO2"),
            _hr("HR"),
        ),
    ),
}


def get_preset(name: str) -> CohortPreset:
    """The preset called ``name``; a clear error lists the known ones."""
    try:
        return COHORT_PRESETS[name]
    except KeyError:
        raise ValueError(
            f"unknown synthetic cohort {name!r}; known cohorts: {sorted(COHORT_PRESETS)}"
        ) from None

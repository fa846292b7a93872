"""Data facts of OSF: the model's channel contract, label definitions and channel presets.

Everything that describes *data* (not training) lives here so that ingestion, the synthetic
cohort, the data module, the backbone checkpoint and prediction agree on one contract.
Dataset-specific facts (folder layouts, channel aliases, derivations, event names) are in
``DATASETS`` / ``CHANNEL_ALIASES`` / ``EVENT_NAMES`` below.
"""

from __future__ import annotations

# --- Model input contract (fixed by the released OSF-Base checkpoint) -------------------------
CHANNELS: tuple[str, ...] = (
    "ECG",
    "EMG_Chin",
    "EMG_LLeg",
    "EMG_RLeg",
    "ABD",
    "THX",
    "NP",
    "SN",
    "EOG_E1_A2",
    "EOG_E2_A1",
    "EEG_C3_A2",
    "EEG_C4_A1",
)
NUM_CHANNELS: int = len(CHANNELS)
CHANNEL_INDEX: dict[str, int] = {name: i for i, name in enumerate(CHANNELS)}

SAMPLE_RATE: int = 64  # Hz
EPOCH_SEC: int = 30
EPOCH_SAMPLES: int = SAMPLE_RATE * EPOCH_SEC  # 1920

# The released model cuts the 12 channels into 3 blocks of 4 (patch_size_ch=4, lead_wise=1).
CHANNEL_GROUPS: dict[str, tuple[str, ...]] = {
    "cardio_emg": ("ECG", "EMG_Chin", "EMG_LLeg", "EMG_RLeg"),
    "respiratory": ("ABD", "THX", "NP", "SN"),
    "eog_eeg": ("EOG_E1_A2", "EOG_E2_A1", "EEG_C3_A2", "EEG_C4_A1"),
}

# SleepFM-style modalities (leave-one-out contrastive objective).
MODALITIES: dict[str, tuple[str, ...]] = {
    "brain": ("EOG_E1_A2", "EOG_E2_A1", "EEG_C3_A2", "EEG_C4_A1", "EMG_Chin", "EMG_LLeg", "EMG_RLeg"),
    "cardiac": ("ECG",),
    "respiratory": ("ABD", "THX", "NP", "SN"),
}

EMG_CHANNELS: tuple[str, ...] = ("EMG_Chin", "EMG_LLeg", "EMG_RLeg")

# --- Labels -----------------------------------------------------------------------------------
# Stage is stored with 5 classes; -1 = unknown / movement / unscored.
STAGE_NAMES_5: tuple[str, ...] = ("W", "N1", "N2", "N3", "REM")
STAGE_UNKNOWN: int = -1
# The 4-class task merges N1 and N2 into light sleep.
STAGE_NAMES_4: tuple[str, ...] = ("W", "Light", "Deep", "REM")
STAGE_5_TO_4: dict[int, int] = {0: 0, 1: 1, 2: 1, 3: 2, 4: 3, -1: -1}

# Task name (CLI spelling) -> column in the store index.
LABEL_COLUMNS: dict[str, str] = {
    "Stage": "stage",
    "Arousal": "arousal",
    "Hypopnea": "hypopnea",
    "Oxygen Desaturation": "oxygen_desaturation",
    "Apnea": "apnea",
}
EVENT_LABELS: tuple[str, ...] = ("Arousal", "Hypopnea", "Oxygen Desaturation", "Apnea")

# --- Channel presets (missing-channel evaluation) ---------------------------------------------
CHANNEL_PRESETS: dict[str, tuple[str, ...]] = {
    "full": CHANNELS,
    "no_eeg": tuple(c for c in CHANNELS if not c.startswith("EEG_")),
    "eeg_eog_only": ("EOG_E1_A2", "EOG_E2_A1", "EEG_C3_A2", "EEG_C4_A1"),
    "cardio_respiratory": ("ECG", "ABD", "THX", "NP", "SN"),
    "ecg_only": ("ECG",),
    "respiratory_only": ("ABD", "THX", "NP", "SN"),
}


def channel_mask_bits(present: "list[bool] | tuple[bool, ...]") -> int:
    """Pack a 12-long presence vector into an int (bit i = channel i present)."""
    return sum(1 << i for i, p in enumerate(present) if p)


def resolve_channel_preset(spec: str) -> tuple[str, ...]:
    """Return the channels of a preset name or of a comma-separated custom list."""
    if spec in CHANNEL_PRESETS:
        return CHANNEL_PRESETS[spec]
    names = tuple(s.strip() for s in spec.split(",") if s.strip())
    if not names:
        raise ValueError(f"empty channel preset {spec!r}; choose one of {sorted(CHANNEL_PRESETS)} or list channels")
    unknown = [n for n in names if n not in CHANNEL_INDEX]
    if unknown:
        raise ValueError(
            f"unknown channel(s) {unknown} in preset {spec!r}; known presets: {sorted(CHANNEL_PRESETS)}, "
            f"channels: {list(CHANNELS)}"
        )
    return names

"""Data facts of OSF: the model's channel contract, label definitions and channel presets.

Everything that describes *data* (not training) lives here so that ingestion, the synthetic
cohort, the data module, the backbone checkpoint and prediction agree on one contract.
Dataset-specific facts (folder layouts, channel aliases, derivations, event names) are in
``DATASETS`` / ``CHANNEL_ALIASES`` / ``EVENT_NAMES`` below.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from osf import tasks

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

# Task name (CLI spelling) -> column in the store index: a live view of the task registry (osf.tasks).
LABEL_COLUMNS: Mapping[str, str] = tasks.LabelColumns()
EVENT_LABELS: tuple[str, ...] = tuple(t.name for t in tasks.TASKS.values() if t.is_event)

# --- Channel presets (missing-channel evaluation) ---------------------------------------------
CHANNEL_PRESETS: dict[str, tuple[str, ...]] = {
    "full": CHANNELS,
    "no_eeg": tuple(c for c in CHANNELS if not c.startswith("EEG_")),
    "eeg_eog_only": ("EOG_E1_A2", "EOG_E2_A1", "EEG_C3_A2", "EEG_C4_A1"),
    "cardio_respiratory": ("ECG", "ABD", "THX", "NP", "SN"),
    "ecg_only": ("ECG",),
    "respiratory_only": ("ABD", "THX", "NP", "SN"),
}


def channel_mask_bits(present: list[bool] | tuple[bool, ...]) -> int:
    """Pack a 12-long presence vector into an int (bit i = channel i present)."""
    return sum(1 << i for i, p in enumerate(present) if p)


def resolve_channel_preset(spec: str) -> tuple[str, ...]:
    """The channels of a preset name or of a comma-separated list (``ECG,ABD``); ``ValueError`` naming the problem.

    The one place a channel spec is parsed (``ChannelSet.from_spec`` builds on it).
    """
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


# --- Channel aliases and derivations (used by osf.datasets.io.channels.resolve_channels) ------
# Labels are compared after `normalize_label` (case-folded, whitespace collapsed), so "CHIN" and
# "Chin" are one alias. Sources: NSRR cohort EDFs (../shared/reference/nsrr_channel_aliases.json,
# cleaned: labels that mean different things in different cohorts, e.g. "EEG" (C4-A1 in SHHS),
# "EEG3" (C4-M1 in MESA) or "Flow" (thermistor or cannula), live in the dataset's own table).
# Resolution order per canonical channel: dataset aliases, then CHANNEL_ALIASES (an already
# referenced signal), then DERIVATIONS (difference of two single-ended electrodes), then
# UNREFERENCED_FALLBACK (an electrode alone, when the file has no reference to subtract: such a
# signal was referenced at acquisition, e.g. SHHS "EOG(L)").
CHANNEL_ALIASES: dict[str, tuple[str, ...]] = {
    "ECG": ("ECG", "EKG", "ECG II", "ECG EKG2-EKG", "EKG_EG", "Bipolar 2", "ECG I", "ECG1-ECG2", "ECG2-ECG1"),
    "EMG_Chin": (
        "Chin1-Chin2", "Chin2-Chin3", "Chin1-Chin3", "Chin3-Chin2", "Chin", "Chin EMG", "EMG Chin", "EMG-Chin",
        "EMG", "CHIN EMG", "Chin-L-Chin-R", "LChin-RChin",
    ),
    "EMG_LLeg": ("L Leg", "Left Leg", "Leg L", "Leg/L", "LAT", "EMG-Leg", "Leg", "LLeg", "Leg 1-Leg 2", "LLEG1-LLEG2", "LAT1-LAT2"),
    "EMG_RLeg": ("R Leg", "Right Leg", "Leg R", "Leg/R", "RAT", "RLeg", "RLEG1-RLEG2", "RAT1-RAT2"),
    "ABD": (
        "ABD", "ABDO RES", "ABDO EFFORT", "ABDOM", "ABDOMEN", "ABDOMINAL", "Abdo", "Abdominal Effort", "Effort ABD",
        "Resp Abdominal", "Abdomen_EG",
    ),
    "THX": (
        "THOR RES", "THOR EFFORT", "THOR", "THORACIC", "THORAX", "Chest", "Effort THO", "Resp Thoracic",
        "Thoracic Effort", "Thorax_EG",
    ),
    # Nasal pressure only: a thermistor (oronasal airflow) measures something else and is not
    # substituted; map it explicitly with a channel map if wanted.
    "NP": (
        "NASAL PRES", "Nasal Pressure", "Cannula Flow", "CannulaFlow", "C-FLOW", "CFLOW", "Cannula", "Nasal",
        "Nasal Canula", "Nasal Cannula", "Nasal_EG", "nas_pres", "PTAF", "NPRE",
    ),
    "SN": ("Snore", "SNORE", "Snore_DR", "Snore_EG", "Snoring", "Snoring Sensor"),
    "EOG_E1_A2": ("E1-M2", "E1-A2", "LOC-A2", "LOC-M2", "EOG LOC-A2", "EOG LOC-M2", "EOG E1-M2", "EOG E1-A2"),
    # "E2-M2" (right eye to the left mastoid) occurs in some cohorts; it still is the right-eye EOG.
    "EOG_E2_A1": ("E2-M1", "E2-A1", "ROC-A1", "ROC-M1", "EOG ROC-A1", "EOG ROC-M1", "EOG E2-M1", "EOG E2-A1",
                  "E2-M2", "ROC-A2", "EOG ROC-A2"),
    "EEG_C3_A2": ("C3-M2", "C3-A2", "C3_M2", "EEG C3-A2", "EEG C3-M2", "C3M2"),
    "EEG_C4_A1": ("C4-M1", "C4-A1", "C4_M1", "EEG C4-A1", "EEG C4-M1", "C4M1"),
}

# Single-ended electrodes (recorded against the amplifier's common reference).
ELECTRODE_ALIASES: dict[str, tuple[str, ...]] = {
    "C3": ("C3", "EEG C3"),
    "C4": ("C4", "EEG C4"),
    "M1": ("M1", "A1", "EEG M1", "EEG A1"),
    "M2": ("M2", "A2", "EEG M2", "EEG A2"),
    "E1": ("E1", "LOC", "EOG L", "EOG(L)", "L-EOG", "EOG-L", "EOG-L_Off", "EOG LOC", "Left EOG"),
    "E2": ("E2", "ROC", "EOG R", "EOG(R)", "R-EOG", "EOG-R", "EOG-R_Off", "EOG ROC", "Right EOG"),
    "LChin": ("Chin2", "Chin-L", "ChinL", "L Chin", "LChin", "EMG2", "Chin L"),
    "RChin": ("Chin3", "Chin-R", "ChinR", "R Chin", "RChin", "EMG3", "Chin R"),
    "CChin": ("Chin1", "Chin-Ctr", "ChinA", "ChinZ", "CChin", "EMG1"),
    "LLeg1": ("LAT1", "LAT-U", "Lleg1", "LLEG+", "LEFT LEG1", "Leg 1", "L Leg1"),
    "LLeg2": ("LAT2", "LAT-L", "Lleg2", "LLEG-", "LEFT LEG2", "Leg 2", "L Leg2"),
    "RLeg1": ("RAT1", "RAT-U", "Rleg1", "RLEG+", "RIGHT LEG1", "R Leg1"),
    "RLeg2": ("RAT2", "RAT-L", "Rleg2", "RLEG-", "RIGHT LEG2", "R Leg2"),
    "ECG_RA": ("ECG1", "ECG R", "ECGR", "ECG-RA", "EKG-R", "ECG RA"),
    "ECG_LA": ("ECG2", "ECG L", "ECGL", "ECG-LA", "EKG-L", "ECG LA"),
    "ECG_LL": ("ECG3", "ECG-LL", "ECG LL"),
}

# canonical channel -> (electrode a, electrode b) options in order of preference; signal = a - b.
DERIVATIONS: dict[str, tuple[tuple[str, str], ...]] = {
    "EEG_C3_A2": (("C3", "M2"),),
    "EEG_C4_A1": (("C4", "M1"),),
    "EOG_E1_A2": (("E1", "M2"),),
    "EOG_E2_A1": (("E2", "M1"),),
    # AASM chin: two of the three chin electrodes; left-right first, then either one against centre.
    "EMG_Chin": (("LChin", "RChin"), ("LChin", "CChin"), ("RChin", "CChin")),
    "EMG_LLeg": (("LLeg1", "LLeg2"),),
    "EMG_RLeg": (("RLeg1", "RLeg2"),),
    # Lead I (left arm - right arm) has upright R waves; lead II (left leg - right arm) as fallback.
    "ECG": (("ECG_LA", "ECG_RA"), ("ECG_LL", "ECG_RA")),
}

# canonical channel -> electrodes that may stand in alone when no derivation is possible.
UNREFERENCED_FALLBACK: dict[str, tuple[str, ...]] = {
    "EEG_C3_A2": ("C3",),
    "EEG_C4_A1": ("C4",),
    "EOG_E1_A2": ("E1",),
    "EOG_E2_A1": ("E2",),
}


def normalize_label(label: str) -> str:
    """Canonical comparison form of an EDF label: case-folded, whitespace collapsed."""
    return " ".join(str(label).split()).casefold()


# --- Dataset registry -------------------------------------------------------------------------
# Scoring templates are glob patterns relative to the input dir, formatted with `parent` (folder
# of the EDF relative to `edf_dir`, "." at top level), `stem` (EDF file name without suffix) and
# the named groups of `id_pattern`; the first template with a match wins.
NSRR_SCORING: tuple[str, ...] = (
    "polysomnography/annotations-events-nsrr/{parent}/{stem}-nsrr.xml",
    "polysomnography/annotations-events-profusion/{parent}/{stem}-profusion.xml",
)


@dataclass(frozen=True)
class ChannelSubstitution:
    """A signal that is not the canonical derivation but stands in for it, and why (a written policy).

    Used only when none of the canonical sources (aliases, derivations) is in the file, and only
    at ``min_rate_hz`` or more: below it the signal cannot carry what the slot holds (e.g. a 1 Hz
    EMG envelope has no 10-30 Hz content), and the channel stays absent with ``why`` in the QC.
    """

    channel: str  # canonical channel (config.CHANNELS)
    labels: tuple[str, ...]  # EDF labels that may stand in, first found wins
    why: str
    min_rate_hz: float = 0.0


@dataclass(frozen=True)
class DatasetSpec:
    """Where a cohort's files lie, how its scoring is written and what its EDF labels mean."""

    name: str
    title: str
    id_pattern: str  # regex on the EDF stem; groups `subject` (required) and `visit` (optional)
    edf_dir: str = "polysomnography/edfs"
    edf_glob: str = "**/*.edf"  # relative to edf_dir
    scoring: tuple[str, ...] = NSRR_SCORING
    annotation_format: str = "nsrr_xml"  # what the cohort ships; read_scoring detects it anyway
    visit_names: tuple[tuple[str, int], ...] = ()  # textual visit -> number, e.g. ("baseline", 1)
    channel_aliases: tuple[tuple[str, tuple[str, ...]], ...] = ()  # canonical -> labels, checked first
    substitutions: tuple[ChannelSubstitution, ...] = ()  # stand-ins, after every canonical source
    unused_signals: tuple[tuple[str, str], ...] = ()  # (EDF label, why it feeds no channel), for the QC
    paediatric: bool = False
    # Subject/visit tables with night-level targets (osf/downstream/night/tables.py): globs relative to the cohort
    # folder; "{name}" is the dataset name, "{visit}" matches the visit in a per-visit file name. Rows join
    # recordings by the first id column present (and the visit column, when the table has one).
    subject_tables: tuple[str, ...] = ("datasets/{name}-harmonized-dataset-*.csv", "datasets/{name}-dataset-*.csv")
    subject_id_columns: tuple[str, ...] = ("nsrrid",)
    visit_columns: tuple[str, ...] = ("visitnumber", "visit", "vnum")

    @property
    def aliases(self) -> dict[str, tuple[str, ...]]:
        """Dataset-specific aliases as a dict (canonical channel -> labels)."""
        return dict(self.channel_aliases)


# Sleep-EDF Expanded (Kemp et al. 2000, PhysioNet): SC (cassette) and ST (telemetry) PSGs hold
# 'EEG Fpz-Cz', 'EEG Pz-Oz' and 'EOG horizontal' at 100 Hz and 'EMG submental' (SC: a 1 Hz RMS
# envelope; ST: the raw EMG at 100 Hz); SC adds 'Resp oro-nasal', 'Temp rectal' (1 Hz) and both an
# 'Event marker'. No channel of the 12-lead contract is recorded as such: the policy below says
# what stands in where (docs/channel_substitutions.md gives the reasons and what to expect).
SLEEP_EDF_SUBSTITUTIONS: tuple[ChannelSubstitution, ...] = (
    ChannelSubstitution(
        "EEG_C3_A2", ("EEG Fpz-Cz",),
        "frontal bipolar EEG (Fpz-Cz) in the central slot: spindles, K-complexes and slow waves are fronto-central "
        "and show there; occipital alpha is weaker than at C3-M2, and eye movements leak in at Fpz",
    ),
    ChannelSubstitution(
        "EEG_C4_A1", ("EEG Pz-Oz",),
        "parieto-occipital bipolar EEG (Pz-Oz) in the second central slot: wake alpha is stronger, spindles and "
        "slow waves weaker than at C4-M1",
    ),
    ChannelSubstitution(
        "EOG_E1_A2", ("EOG horizontal",),
        "one horizontal EOG derivation (across both eyes) in the left-eye slot; EOG_E2_A1 stays absent",
    ),
    ChannelSubstitution(
        "EMG_Chin", ("EMG submental",),
        "raw submental EMG (ST telemetry, 100 Hz) in the chin slot; the SC cassette files hold a 1 Hz RMS envelope, "
        "which has no 10-30 Hz content to band-pass: there EMG_Chin stays absent",
        min_rate_hz=60.0,  # twice the EMG band's upper edge (osf.datasets.preprocess.filters.EMG_BAND_HZ)
    ),
)
SLEEP_EDF_UNUSED: tuple[tuple[str, str], ...] = (
    ("Resp oro-nasal", "oro-nasal thermistor airflow, not nasal pressure: NP stays absent (as for every cohort)"),
    ("Temp rectal", "rectal temperature: no channel of the model"),
    ("Event marker", "event marker: not a physiological signal"),
)

DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            "shhs", "Sleep Heart Health Study", r"^shhs(?P<visit>[12])-(?P<subject>\d+)$",
            # SHHS: "EEG" is C4-A1, "EEG(sec)"/"EEG2" is C3-A2, "EMG" is chin (bipolar at acquisition).
            subject_tables=("datasets/shhs-harmonized-dataset-*.csv", "datasets/shhs{visit}-dataset-*.csv"),
            channel_aliases=(
                ("EEG_C4_A1", ("EEG", "EEG 1", "EEG1")),
                ("EEG_C3_A2", ("EEG(sec)", "EEG2", "EEG 2", "EEG sec", "EEG(SEC)")),
                ("NP", ("NEW AIR", "new A/F", "NEWAIR")),
            ),
        ),
        DatasetSpec(
            "chat", "Childhood Adenotonsillectomy Trial",
            r"^chat-(?P<visit>baseline|followup)-(?:nonrandomized-)?(?P<subject>\d+)$",
            visit_names=(("baseline", 1), ("followup", 2)), paediatric=True,
            subject_tables=("datasets/chat-harmonized-dataset-*.csv", "datasets/chat-{visit}-dataset-*.csv"),
        ),
        DatasetSpec("mros", "MrOS Sleep Study", r"^mros-visit(?P<visit>\d+)-(?P<subject>[a-z]{2}\d+)$",
                    subject_tables=("datasets/mros-visit{visit}-harmonized-*.csv", "datasets/mros-visit{visit}-dataset-*.csv")),
        DatasetSpec("ccshs", "Cleveland Children's Sleep and Health Study", r"^ccshs-trec-(?P<subject>\d+)$",
                    paediatric=True),
        DatasetSpec("cfs", "Cleveland Family Study", r"^cfs-visit(?P<visit>\d+)-(?P<subject>\d+)$",
                    subject_tables=("datasets/cfs-visit{visit}-harmonized-dataset-*.csv", "datasets/cfs-visit{visit}-dataset-*.csv")),
        DatasetSpec(
            "mesa", "Multi-Ethnic Study of Atherosclerosis (sleep exam)", r"^mesa-sleep-(?P<subject>\d+)$",
            # MESA: EEG1 Fz-Cz, EEG2 Cz-Oz, EEG3 C4-M1; "Flow" there is the nasal pressure channel.
            channel_aliases=(("EEG_C4_A1", ("EEG3",)), ("NP", ("Pres", "Flow"))),
            subject_tables=("datasets/mesa-sleep-harmonized-dataset-*.csv", "datasets/mesa-sleep-dataset-*.csv"),
            subject_id_columns=("mesaid", "nsrrid"),
        ),
        DatasetSpec("sof", "Study of Osteoporotic Fractures", r"^sof-visit-(?P<visit>\d+)-(?P<subject>\d+)$"),
        DatasetSpec("wsc", "Wisconsin Sleep Cohort", r"^wsc-visit(?P<visit>\d+)-(?P<subject>\d+)$"),
        DatasetSpec(
            "stages", "Stanford Technology Analytics and Genomics in Sleep", r"^(?P<subject>[A-Z]{4}\d+)$",
            edf_dir="original", edf_glob="**/*.edf", scoring=("original/{parent}/{stem}.csv",),
            annotation_format="csv",
        ),
        DatasetSpec(
            "nchsdb", "NCH Sleep DataBank", r"^(?P<subject>\d+)_(?P<visit>\d+)$",
            edf_dir="sleep_data", scoring=("sleep_data/{parent}/{stem}.tsv",), annotation_format="csv",
            paediatric=True,
        ),
        DatasetSpec(
            "sleep_edf", "Sleep-EDF Expanded (PhysioNet)",
            # SC4ssNE0-PSG.edf: study SC4, subject ss, night N; hypnogram SC4ssNEx-Hypnogram.edf.
            r"^(?P<head>(?P<subject>S[CT]\d\d\d)(?P<visit>\d)[A-Z])\d-PSG$",
            edf_dir=".", edf_glob="**/*-PSG.edf", scoring=("{parent}/{head}?-Hypnogram.edf",),
            annotation_format="edfplus", substitutions=SLEEP_EDF_SUBSTITUTIONS, unused_signals=SLEEP_EDF_UNUSED,
        ),
        DatasetSpec(
            "generic", "Any EDF with a scoring file of the same stem", r"^(?P<subject>.+)$", edf_dir=".",
            edf_glob="**/*.edf",
            scoring=(
                "{parent}/{stem}-nsrr.xml", "{parent}/{stem}.xml", "{parent}/{stem}.csv", "{parent}/{stem}.tsv",
                # a generic cohort written in the NSRR layout (e.g. the synthetic `generic` preset)
                "polysomnography/annotations-events-nsrr/{stem}-nsrr.xml",
            ),
            annotation_format="auto",
        ),
    )
}


def get_dataset(name: str) -> DatasetSpec:
    """The registry entry of a dataset; a clear error lists the known ones."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {sorted(DATASETS)}") from None


# --- Scoring vocabulary (used by osf.datasets.io.scoring) -------------------------------------
# Names are matched after `normalize_label`. NSRR XML concepts "Name|Short" are looked up whole,
# then part by part. Sources: NSRR XML, Compumedics Profusion, SRO (PSGAnnotation), Embla,
# Sleep-EDF and NCHSDB spellings (../shared/reference/nsrr_event_names.json and the NSRR
# vendor mapping tables). Stage codes: 0 W, 1 N1, 2 N2, 3 N3 (R&K stages 3 and 4), 4 REM,
# -1 unknown (movement, unscored, artifact).
STAGE_EVENT_NAMES: dict[int, tuple[str, ...]] = {
    0: ("Wake|0", "Wake", "Awake", "W", "Sleep stage W", "SRO:Wake", "SLEEP-S0", "Stage W", "wake"),
    1: ("Stage 1 sleep|1", "Stage 1 sleep", "Stage_1", "N1", "S1", "Sleep stage 1", "Sleep stage N1",
        "SRO:Stage1Sleep", "SLEEP-S1", "stage1", "Stage N1"),
    2: ("Stage 2 sleep|2", "Stage 2 sleep", "Stage_2", "N2", "S2", "Sleep stage 2", "Sleep stage N2",
        "SRO:Stage2Sleep", "SLEEP-S2", "stage2", "Stage N2"),
    3: ("Stage 3 sleep|3", "Stage 4 sleep|4", "Stage 3 sleep", "Stage 4 sleep", "Stage_3", "Stage_4", "N3",
        "N4", "S3", "S4", "Sleep stage 3", "Sleep stage 4", "Sleep stage N3", "SRO:Stage3Sleep",
        "SRO:Stage4Sleep", "SLEEP-S3", "SLEEP-S4", "stage3", "stage4", "Stage N3"),
    4: ("REM sleep|5", "REM sleep", "REM", "R", "Sleep stage R", "SRO:RapidEyeMovement", "SLEEP-REM", "rem",
        "Stage R"),
    -1: ("Unscored|9", "Movement|6", "Unscored", "Movement", "Unknown", "?", "Sleep stage ?", "Movement time",
         "SLEEP-UNSCORED", "SLEEP-MT", "Artifact|10", "unknownstage"),
}
# Profusion <SleepStage> integer codes -> stage (6 movement, 7 and 9 unscored, 10 artifact).
PROFUSION_STAGE_CODES: dict[int, int] = {0: 0, 1: 1, 2: 2, 3: 3, 4: 3, 5: 4, 6: -1, 7: -1, 9: -1, 10: -1}

# Scoring.events label -> event names. Everything matched here but not a label column is "other".
EVENT_NAMES: dict[str, tuple[str, ...]] = {
    "Arousal": (
        "Arousal|Arousal ()", "Arousal ()", "Arousal", "ASDA arousal|Arousal (ASDA)", "Arousal (ASDA)",
        "Arousal|Arousal (Standard)", "Arousal|Arousal (STANDARD)", "Arousal|Arousal (Asda)",
        "Spontaneous arousal|Arousal (ARO SPONT)", "Spontaneous arousal|Arousal (Spontaneous)",
        "Arousal (Spontaneous)", "Spontaneous Arousal", "Arousal resulting from respiratory effort|Arousal (ARO RES)",
        "Arousal (Respiratory)", "Arousal (Apnea)", "Arousal (Desat)", "Arousal (Limb)", "Arousal (ARO Limb)",
        "Arousal|Arousal (ARO Limb)", "Arousal (External Arousal)", "Arousal (Internal Arousal)",
        "Arousal resulting from Chin EMG|Arousal (CHESHIRE)", "Arousal resulting from Chin EMG|Arousal (Cheshire)",
        "Respiratory effort related arousal|RERA", "RERA", "Respiratory Effort-Related Arousal",
        "EMG-Related Arousal", "Limb Arousal", "EEG arousal", "AROUSAL", "AROUSAL-SPONTANEOUS", "AROUSAL-NOISE",
        "AROUSAL-RESPIRATORY EVENT", "AROUSAL-SNORE", "AROUSAL-LM", "AROUSAL-PLM", "AROUSAL-APNEA",
        "AROUSAL-DESAT", "AROUSAL-RESP", "AROUSAL-RERA", "AROUSAL-SPONT", "RESP-RERA", "arousal w/ respiratory",
        "arousal w/ plm", "both leg w/ arousal", "right leg w/ arousal", "left leg w/ arousal", "rera",
        "SRO:Arousal", "SRO:ArousalApnea", "SRO:ArousalDesaturation", "SRO:ArousalPLM", "SRO:ArousalLM",
        "SRO:ArousalRespiratory", "SRO:ArousalSpontaneous", "SRO:ArousalSnore",
        "SRO:ArousalRespiratoryEventRelatedArousal", "SRO:RespiratoryEventRelatedArousal",
    ),
    "Apnea": (
        "Obstructive apnea|Obstructive Apnea", "Central apnea|Central Apnea", "Mixed apnea|Mixed Apnea",
        "Obstructive Apnea", "Central Apnea", "Mixed Apnea", "Apnea", "APNEA", "OBSTRUCTIVE APNEA",
        "CENTRAL APNEA", "MIXED APNEA", "OBS Apnea", "Obst Apnea", "Obst. Apnea", "APNEA-OBSTRUCTIVE",
        "APNEA-CENTRAL", "APNEA-MIXED", "obstructiveapnea", "centralapnea", "mixedapnea",
        "SRO:ObstructiveApnea", "SRO:CentralApnea", "SRO:MixedApnea", "SRO:Apnea",
    ),
    "Hypopnea": (
        "Hypopnea|Hypopnea", "Hypopnea", "HYPOPNEA", "Obstructive Hypopnea", "Central Hypopnea", "Mixed Hypopnea",
        "Obstructive hypopnea|Obstructive Hypopnea", "Central hypopnea|Central Hypopnea",
        "Mixed hypopnea|Mixed Hypopnea", "HYPOPNEA-OBSTRUCTIVE", "HYPOPNEA-CENTRAL", "HYPOPNEA-MIXED",
        "SRO:Hypopnea", "SRO:ObstructiveHypopnea", "SRO:CentralHypopnea", "SRO:MixedHypopnea",
    ),
    "Oxygen Desaturation": (
        "SpO2 desaturation|SpO2 desaturation", "SpO2 desaturation", "Oxygen Desaturation", "DESATURATION",
        "DESAT", "desaturation", "desaturation w/ respiratory", "SRO:SpO2Desaturation",
    ),
    "Limb Movement": (
        "Limb movement - left|Limb Movement (Left)", "Limb movement - right|Limb Movement (Right)",
        "Periodic leg movement - left|PLM (Left)", "Periodic leg movement - right|PLM (Right)",
        "Limb Movement (Left)", "Limb Movement (Right)", "PLM (Left)", "PLM (Right)", "Leg movement - left",
        "Leg movement - right", "Periodic leg movement - left", "Periodic leg movement - right", "LM-ISOLATED",
        "Limb Movement", "Leg Movement", "PLM", "PLM-LM", "PLM-RRLM", "SRO:LimbMovement",
        "SRO:PeriodicLimbMovementSeries", "SRO:RespiratoryRelatedLimbMovement",
    ),
    # Known, kept as "other" and not counted as unknown: artefacts, position, lights, ECG and
    # technical events, and the Profusion "Unsure" respiratory event (an alternative hypopnea rule).
    "other": (
        "Recording Start Time", "Technician Notes", "SpO2 artifact|SpO2 artifact", "SpO2 artifact", "Unsure",
        "Unsure|Unsure", "Respiratory artifact", "Respiratory Paradox", "Periodic Breathing", "Snore", "SNORE",
        "Bradycardia", "Tachycardia", "Asystole", "Atrial Fibrillation", "Sinus Tachycardia",
        "Wide Complex Tachycardia", "Narrow Complex Tachycardia", "Distal pH", "Proximal pH",
        "Distal pH artifact", "Proximal pH artifact", "EtCO2 artifact", "TcCO2 artifact", "TcC02 artifact",
        "Blood pressure artifact", "Body temperature artifact", "Signal artifact", "Lights On", "Lights Off",
        "LIGHTS ON", "LIGHTS OUT", "Lights_On", "Lights_Off", "LightsOn", "LightsOff", "Lights Out", "LIGHTS-ON", "LIGHTS-OFF",
        "ANALYSIS-START", "ANALYSIS-STOP", "SIGNAL-ARTIFACT", "RESERVED-SELECTION", "ACTIVITY-MOVE",
        "POSITION-SUPINE", "POSITION-PRONE", "POSITION-LEFT", "POSITION-RIGHT", "POSITION-UPRIGHT",
        "POSITION-UNKNOWN", "Central Apnea Index", "SRO:SpO2Artifact", "SRO:SignalArtifact", "SRO:AnalysisStart",
        "SRO:AnalysisStop", "SRO:LightsOn", "SRO:LightsOff", "SRO:RecordedBodyMovement", "SRO:PositionChangeSupine",
        "SRO:PositionChangeUpright", "SRO:PositionChangeRight", "SRO:PositionChangeLeft", "SRO:PositionChangeProne",
        "SRO:Snore", "SRO:CheyneStokesBreathing", "SRO:PeriodicBreathing", "SRO:Asystole",
        "SRO:AtrialFibrillation", "SRO:Bradycardia", "SRO:Tachycardia", "SRO:SinusTachycardia",
        "SRO:NarrowComplexTachycardia", "SRO:WideComplexTachycardia",
    ),
}
# Scoring.events label -> store index column (labels without a column are not epoch labels).
EVENT_LABEL_COLUMNS: dict[str, str] = {label: LABEL_COLUMNS[label] for label in EVENT_LABELS}

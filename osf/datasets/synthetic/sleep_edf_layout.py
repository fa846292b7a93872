"""Synthetic nights in the Sleep-EDF Expanded layout (cassette study, ``SC4ssNE0-PSG.edf``).

What a real Sleep-EDF SC recording looks like, so that the ``--dataset sleep_edf`` path is tested
end to end without the real data (Kemp et al. 2000; PhysioNet ``sleep-edfx``):

- ``SC4ssN E0-PSG.edf`` (ss subject, N night 1/2): 'EEG Fpz-Cz', 'EEG Pz-Oz' and 'EOG horizontal'
  at 100 Hz; 'Resp oro-nasal', 'EMG submental', 'Temp rectal' and 'Event marker' at 1 Hz, the EMG
  as an RMS envelope in uV (the recorder high-passed, rectified and low-passed it); 1 s data
  records here (the real files use 30 s records; the readers do not care).
- ``SC4ssN E<scorer>-Hypnogram.edf``: an annotations-only EDF+ file starting at the PSG's clock time,
  R&K stages 'Sleep stage W/1/2/3/4/R', 'Movement time', and one closing 'Sleep stage ?' that runs
  to 24 h after the start, past the end of the PSG (the cassette recordings last about 20-22 h).
- the recording spans a day: wake from the afternoon to lights off, the night, wake after it.

The night itself comes from the generator (``generate_night`` with ``day_wake_hours``): a montage
rendered at 100 Hz whose central EEGs stand for Fpz-Cz / Pz-Oz, whose horizontal EOG is E1 - E2,
whose chin EMG is reduced to a 1 Hz RMS envelope and whose oro-nasal thermistor flow is averaged to
1 Hz. R&K stage 3 vs 4 is drawn from the N3 epochs (stage 4 where delta dominates: later half of
each N3 run), since the generator scores AASM stages.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from pathlib import Path

import edfio
import numpy as np

from osf.datasets.synthetic.cohorts import ChannelSpec, CohortPreset, get_preset
from osf.datasets.synthetic.generate import SyntheticNight, generate_night
from osf.datasets.synthetic.hypnogram import EPOCH_SEC
from osf.utils.atomic import atomic_path

EEG_RATE = 100  # Hz: EEG and EOG
SLOW_RATE = 1  # Hz: EMG envelope, respiration, temperature, event marker
SCORED_SPAN_S = 86400.0  # the hypnogram's closing 'Sleep stage ?' runs to 24 h after the start
RK_TEXT = {0: "Sleep stage W", 1: "Sleep stage 1", 2: "Sleep stage 2", 4: "Sleep stage R"}

# Rendered montage: (quantity, rate). The Sleep-EDF signals are built from these below.
_RENDERED = (
    ("EEG_C3_A2", EEG_RATE),  # -> 'EEG Fpz-Cz'
    ("EEG_C4_A1", EEG_RATE),  # -> 'EEG Pz-Oz'
    ("EOG_E1_A2", EEG_RATE),  # E1 - E2 -> 'EOG horizontal'
    ("EOG_E2_A1", EEG_RATE),
    ("EMG_Chin", EEG_RATE),  # -> 1 Hz RMS envelope 'EMG submental'
    ("AF", 10),  # oro-nasal thermistor -> 1 Hz 'Resp oro-nasal'
)

# label, unit, physical range, transducer, prefilter, rate (as the SC files declare them, roughly)
SLEEP_EDF_SIGNALS: tuple[tuple[str, str, tuple[float, float], str, str, int], ...] = (
    ("EEG Fpz-Cz", "uV", (-192.0, 192.0), "Ag-AgCl electrodes", "HP:0.5Hz LP:100Hz [enhanced cassette BW]", EEG_RATE),
    ("EEG Pz-Oz", "uV", (-197.0, 197.0), "Ag-AgCl electrodes", "HP:0.5Hz LP:100Hz [enhanced cassette BW]", EEG_RATE),
    ("EOG horizontal", "uV", (-1009.0, 1009.0), "Ag-AgCl electrodes", "HP:0.5Hz LP:100Hz [enhanced cassette BW]", EEG_RATE),
    ("Resp oro-nasal", "", (-2048.0, 2048.0), "Oral-nasal thermistors", "HP:0.03Hz LP:0.9Hz", SLOW_RATE),
    ("EMG submental", "uV", (-5.0, 5.0), "Ag-AgCl electrodes", "HP:16Hz Rectification LP:0.7Hz", SLOW_RATE),
    ("Temp rectal", "DegC", (34.0, 40.0), "Rectal thermistor", "LP:0.1Hz (first order)", SLOW_RATE),
    ("Event marker", "", (-2047.0, 2048.0), "Marker button", "No filtering", SLOW_RATE),
)


def sleep_edf_preset() -> CohortPreset:
    """The generator preset rendered for a Sleep-EDF-layout night (the generic population at 100 Hz)."""
    base = get_preset("generic")
    by_measure = {c.measures: c for c in base.channels}
    channels = tuple(replace(by_measure[q], rate=rate) for q, rate in _RENDERED)
    return replace(base, name="sleep_edf", id_prefix="SC4", channels=channels, start_hour_range=(22.5, 23.5))


def sleep_edf_names(subject: int, night: int = 1, scorer: str = "C") -> tuple[str, str]:
    """File names of a Sleep-EDF cassette night: (``SC4ssNE0-PSG.edf``, ``SC4ssNE<scorer>-Hypnogram.edf``)."""
    if not 0 <= subject <= 99 or night not in (1, 2):
        raise ValueError(f"Sleep-EDF SC names hold subjects 0-99 and nights 1-2, got subject {subject}, night {night}")
    head = f"SC4{subject:02d}{night}E"
    return f"{head}0-PSG.edf", f"{head}{scorer}-Hypnogram.edf"


def _blocks(x: np.ndarray, rate: int) -> np.ndarray:
    """``x`` cut into 1 s blocks [n_seconds, rate]."""
    n = len(x) // rate
    return np.asarray(x[: n * rate], dtype=np.float64).reshape(n, rate)


def _temperature(n_seconds: int, start: dt.datetime, stages: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rectal temperature (degC): circadian, lowest around 05:00, a little lower asleep."""
    clock_h = (start.hour + start.minute / 60.0 + np.arange(n_seconds) / 3600.0) % 24.0
    asleep = np.repeat(stages != 0, EPOCH_SEC)[:n_seconds].astype(float)
    noise = np.cumsum(rng.normal(0.0, 0.0005, n_seconds))
    return 37.0 + 0.35 * np.cos(2 * np.pi * (clock_h - 17.0) / 24.0) - 0.1 * asleep + noise - noise.mean()


def sleep_edf_signals(night: SyntheticNight, start: dt.datetime, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The seven Sleep-EDF SC signals (label -> samples at their rate) from a rendered night."""
    s = night.signals
    label = {c.measures: c.label for c in night.preset.channels}
    emg = _blocks(s[label["EMG_Chin"]], EEG_RATE)
    flow = _blocks(s[label["AF"]], 10)
    n_seconds = min(len(emg), len(flow))
    return {
        "EEG Fpz-Cz": s[label["EEG_C3_A2"]],
        "EEG Pz-Oz": s[label["EEG_C4_A1"]],
        "EOG horizontal": s[label["EOG_E1_A2"]] - s[label["EOG_E2_A1"]],
        "Resp oro-nasal": 1000.0 * flow[:n_seconds].mean(axis=1),
        "EMG submental": np.sqrt((emg[:n_seconds] ** 2).mean(axis=1)),
        "Temp rectal": _temperature(n_seconds, start, night.stages, rng),
        "Event marker": np.zeros(n_seconds),
    }


def rk_stage_runs(stages: np.ndarray, movements: list[tuple[float, float]]) -> list[tuple[float, float, str]]:
    """(onset, duration, text) runs of R&K stages over the PSG, then 'Sleep stage ?' to 24 h.

    N3 becomes R&K stage 3 in the first half of each run and stage 4 in the second (delta grows
    through a slow-wave run); an epoch holding a movement artefact of 15 s or more is 'Movement time'.
    """
    texts = [RK_TEXT.get(int(st), "") for st in stages]
    i = 0
    while i < len(stages):  # N3 runs -> 3 then 4
        if stages[i] == 3:
            j = i
            while j < len(stages) and stages[j] == 3:
                j += 1
            half = i + (j - i + 1) // 2
            texts[i:j] = ["Sleep stage 3"] * (half - i) + ["Sleep stage 4"] * (j - half)
            i = j
        else:
            i += 1
    for onset, dur in movements:
        if dur >= 15.0:
            texts[int(onset // EPOCH_SEC)] = "Movement time"
    runs: list[tuple[float, float, str]] = []
    for k, text in enumerate(texts):
        if runs and runs[-1][2] == text:
            runs[-1] = (runs[-1][0], runs[-1][1] + EPOCH_SEC, text)
        else:
            runs.append((k * float(EPOCH_SEC), float(EPOCH_SEC), text))
    end = len(stages) * float(EPOCH_SEC)
    runs.append((end, max(SCORED_SPAN_S - end, EPOCH_SEC), "Sleep stage ?"))
    return runs


def write_sleep_edf_psg(path: Path, signals: dict[str, np.ndarray], start: dt.datetime, subject_code: str) -> Path:
    """The PSG file: the seven SC signals with Sleep-EDF's labels, units, ranges and rates."""
    edf_signals = []
    for label, unit, (lo, hi), transducer, prefilter, rate in SLEEP_EDF_SIGNALS:
        x = np.clip(np.asarray(signals[label], dtype=np.float64), lo, hi)
        edf_signals.append(edfio.EdfSignal(x, sampling_frequency=rate, label=label, transducer_type=transducer,
                                           physical_dimension=unit, physical_range=(lo, hi), prefiltering=prefilter))
    edf = edfio.Edf(
        edf_signals,
        patient=edfio.Patient(code=subject_code),
        recording=edfio.Recording(startdate=start.date(), equipment_code="OSF-synthetic-sleep-edf"),
        starttime=start.time(),
        data_record_duration=1.0,
    )
    with atomic_path(Path(path), suffix=".edf") as tmp:
        edf.write(tmp)
    return Path(path)


def write_sleep_edf_hypnogram(path: Path, runs: list[tuple[float, float, str]], start: dt.datetime) -> Path:
    """The hypnogram file: annotations-only EDF+ starting at the PSG's clock time."""
    annotations = [edfio.EdfAnnotation(onset, duration, text) for onset, duration, text in runs]
    edf = edfio.Edf([], annotations=annotations, recording=edfio.Recording(startdate=start.date()), starttime=start.time())
    with atomic_path(Path(path), suffix=".edf") as tmp:
        edf.write(tmp)
    return Path(path)


def write_sleep_edf_night(
    output_dir: str | Path,
    subject: int,
    seed: int = 0,
    night_hours: float = 8.0,
    day_wake_hours: tuple[float, float] = (7.0, 7.0),
    night: int = 1,
) -> tuple[Path, Path]:
    """Generate one Sleep-EDF-layout recording (day wake, night, day wake) into ``output_dir``.

    Returns (PSG path, hypnogram path). The default spans 22 h, as the cassette recordings do.
    """
    # generator 1: its cycles fit night_hours, and it takes day_wake_hours (generator 2 draws windows of a whole night)
    rendered = generate_night(sleep_edf_preset(), subject, seed, hours=night_hours, generator=1,
                              day_wake_hours=day_wake_hours)
    start = (rendered.start - dt.timedelta(hours=day_wake_hours[0])).replace(microsecond=0)
    signals = sleep_edf_signals(rendered, start, np.random.default_rng([seed, subject, 29]))
    movements = [(a["onset"], a["duration"]) for a in rendered.artifacts if a["kind"] == "movement"]
    runs = rk_stage_runs(rendered.stages, movements)
    psg_name, hyp_name = sleep_edf_names(subject, night)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    psg = write_sleep_edf_psg(out / psg_name, signals, start, f"SC4{subject:02d}")
    hyp = write_sleep_edf_hypnogram(out / hyp_name, runs, start)
    return psg, hyp

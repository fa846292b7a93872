"""Synthetic nights and cohorts: ``generate_night`` (in memory) and ``generate_cohort`` (files).

Layout written by :func:`generate_cohort` (the NSRR layout the ingestion reads)::

    DIR/manifest.json
    DIR/<cohort>/polysomnography/edfs/<id>.edf
    DIR/<cohort>/polysomnography/annotations-events-nsrr/<id>-nsrr.xml
    DIR/<cohort>/datasets/<cohort>-subjects.csv
    DIR/<cohort>/datasets/<cohort>-harmonized-dataset-<version>.csv   (NSRR-style tables, names per
    DIR/<cohort>/datasets/<cohort>-dataset-<version>.csv               config.DatasetSpec.subject_tables)
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import shutil
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from osf.datasets.store import file_sha256
from osf.datasets.synthetic.cohorts import COHORT_PRESETS, CohortPreset, get_preset
from osf.datasets.synthetic.edf_writer import write_edf
from osf.datasets.synthetic.events import (
    APNEA_KINDS,
    ScoredEvent,
    draw_desaturations,
    measure_desaturations,
    render_spo2_track,
    schedule_arousals,
    schedule_limb_movements,
    schedule_respiratory,
)
from osf.datasets.synthetic.hypnogram import (
    EPOCH_SEC,
    W,
    generate_hypnogram,
    night_window,
    whole_night_hypnogram,
)
from osf.datasets.synthetic.physiology import NightEvents, NightRenderer
from osf.datasets.synthetic.physiology2 import NightRenderer2
from osf.datasets.synthetic.subjects import (
    SubjectProfile,
    draw_spectral_traits,
    draw_subject,
    night_rng,
    severity_class,
)
from osf.datasets.synthetic.tables import write_subject_tables
from osf.datasets.synthetic.xml_writer import write_nsrr_xml
from osf.utils.atomic import atomic_write_text

GENERATOR_NAME = "osf.datasets.synthetic"
# Major generator -> full version. 1.2: mixed-stage epochs, breath-by-breath variability, flow limitation (issue
# 13), kept bit-reproducible with ``generator=1``. 2.0: whole nights, scorer-defined cues, nuisance (issue 25).
GENERATOR_VERSIONS: dict[int, str] = {1: "1.2.0", 2: "2.0.0"}
DEFAULT_GENERATOR = 2
GENERATOR_VERSION = GENERATOR_VERSIONS[DEFAULT_GENERATOR]

EDF_DIR = Path("polysomnography") / "edfs"
XML_DIR = Path("polysomnography") / "annotations-events-nsrr"
CSV_DIR = Path("datasets")


@dataclass
class SyntheticNight:
    """One synthetic night in memory: what is written to the EDF and the XML, and the truth behind it."""

    preset: CohortPreset
    profile: SubjectProfile
    stages: np.ndarray  # int8 per 30 s epoch, 0 W .. 4 REM (no unknowns)
    events: list[ScoredEvent]  # every scored event, sorted by onset, exact onset/duration
    signals: dict[str, np.ndarray]  # EDF label -> physical values at the native rate (as written)
    rates: dict[str, int]  # EDF label -> Hz
    units: dict[str, str]
    artifacts: list[dict] = field(default_factory=list)  # unscored nuisances: flat stretches, movements
    generator: int = DEFAULT_GENERATOR
    window_start_s: float = 0.0  # generator 2: where this recording starts within the subject's whole night

    @property
    def recording_id(self) -> str:
        """File stem of the EDF / XML."""
        return self.profile.recording_id

    @property
    def duration_s(self) -> float:
        """Recording length in seconds."""
        return len(self.stages) * EPOCH_SEC

    @property
    def start(self) -> dt.datetime:
        """Lights off = EDF start."""
        return self.profile.start

    @property
    def tst_hours(self) -> float:
        """Total sleep time (hours)."""
        return float(np.sum(self.stages != W)) * EPOCH_SEC / 3600.0

    @property
    def ahi(self) -> float:
        """Apneas + hypopneas per hour of sleep, as scored in the XML."""
        n = sum(ev.kind in APNEA_KINDS or ev.kind == "hypopnea" for ev in self.events)
        return n / self.tst_hours if self.tst_hours > 0 else 0.0

    @property
    def severity(self) -> str:
        """Night-level severity class of the scored AHI."""
        return severity_class(self.ahi)

    def events_of(self, *kinds: str) -> list[ScoredEvent]:
        """Scored events of the given kinds."""
        return [ev for ev in self.events if ev.kind in kinds]

    def subject_row(self) -> dict:
        """Row of the subjects CSV."""
        counts = {
            k: len(self.events_of(*ks))
            for k, ks in {
                "n_apnea": APNEA_KINDS,
                "n_hypopnea": ("hypopnea",),
                "n_desaturation": ("desaturation",),
                "n_arousal": ("arousal",),
                "n_limb_movement": ("limb_left", "limb_right"),
            }.items()
        }
        p = self.profile
        return {
            "nsrrid": p.recording_id,
            "recording_id": p.recording_id,
            "age": p.age,
            "sex": p.sex,
            "ahi": round(self.ahi, 2),
            "severity": self.severity,
            "ahi_target": round(p.ahi_target, 2),
            "severity_target": p.severity_target,
            "tst_min": round(self.tst_hours * 60.0, 1),
            **counts,
            "plm": int(p.plm),
            "snorer": int(p.snorer),
            "bmi": p.bmi,
            "hypertension": int(p.hypertension),
            "start": p.start.isoformat(),
            # generator 1's rows stay byte for byte as they were
            **({} if self.generator == 1 else {"generator_version": GENERATOR_VERSIONS[self.generator],
                                               "window_start_min": round(self.window_start_s / 60.0, 1)}),
        }


def _has(preset: CohortPreset, *quantities: str) -> bool:
    have = {c.measures for c in preset.channels}
    return any(q in have for q in quantities)


@dataclass
class NightScoring:
    """Everything about a night except the rendered signals (cheap: no signal is computed)."""

    preset: CohortPreset
    profile: SubjectProfile
    stages: np.ndarray
    events: NightEvents
    spo2: np.ndarray  # 1 Hz SpO2 track the desaturations were measured on
    generator: int = 1
    window_start_s: float = 0.0  # generator 2: offset of this recording within the whole night

    @property
    def scored(self) -> list[ScoredEvent]:
        """Every scored event, sorted by onset."""
        ev = self.events
        return sorted(
            ev.respiratory + ev.desaturations + ev.arousals + ev.limbs, key=lambda e: (e.onset, e.kind)
        )


def check_generator(generator: object) -> int:
    """The major generator version as an int; a one-line ValueError for anything else."""
    if isinstance(generator, bool) or generator not in GENERATOR_VERSIONS:
        raise ValueError(f"unknown synthetic generator {generator!r}; choose one of {sorted(GENERATOR_VERSIONS)}")
    return int(generator)  # type: ignore[call-overload]


def simulate_scoring(preset: CohortPreset | str, subject: int, seed: int, hours: float = 2.0,
                     generator: int = DEFAULT_GENERATOR, day_wake_hours: tuple[float, float] = (0.0, 0.0)) -> NightScoring:
    """Draw a night's subject, hypnogram and scored events (what the XML holds) without rendering signals.

    Generator 2 simulates the subject's whole night (7-9 h) and returns a window of ``hours`` drawn within it
    (the whole night when ``hours`` is longer); generator 1 compresses the sleep cycles into ``hours``.
    ``day_wake_hours`` (before, after; generator 1) surrounds the night with day-time wake, as recordings that
    run around the clock have (Sleep-EDF cassettes); the default leaves every other night unchanged.
    """
    preset = get_preset(preset) if isinstance(preset, str) else preset
    generator = check_generator(generator)
    _check_positive("hours", hours)
    n_epochs = max(round(hours * 3600.0 / EPOCH_SEC), 1)
    if generator == 2 and any(day_wake_hours):
        raise ValueError("day_wake_hours needs generator 1 (generator 2 draws windows within a whole night)")
    if generator == 2:
        window_rng = night_rng(seed, preset.name + "/window", subject)
        return _window(_simulate_whole_night(preset, subject, seed), n_epochs, window_rng)
    profile = draw_subject(preset, subject, seed)
    rng = night_rng(seed, preset.name, subject)
    rng.random(64)  # move away from the draws of the profile stream
    before, after = (round(h * 3600.0 / EPOCH_SEC) for h in day_wake_hours)
    stages = generate_hypnogram(profile, n_epochs, rng)
    if before or after:
        stages = np.concatenate([np.full(before, W), stages, np.full(after, W)]).astype(stages.dtype)
    return _schedule_events(preset, profile, stages, rng)


def _schedule_events(preset: CohortPreset, profile: SubjectProfile, stages: np.ndarray, rng: np.random.Generator,
                     generator: int = 1) -> NightScoring:
    """Respiratory events, desaturations, limb movements, arousals and movements of a hypnogram."""
    n_epochs = len(stages)
    resp = schedule_respiratory(profile, stages, rng, generator)
    planned = draw_desaturations(resp, profile, rng)
    spo2 = render_spo2_track(n_epochs * EPOCH_SEC, profile, planned, rng)
    desats = measure_desaturations(spo2, planned)
    has_legs = _has(preset, "EMG_LLeg", "EMG_RLeg", "EMG_LLeg1", "EMG_RLeg1")
    limbs = schedule_limb_movements(profile, stages, rng) if has_legs else []
    arousals = schedule_arousals(profile, stages, resp, desats, limbs, rng)
    movements = _movements(stages, arousals, rng)
    events = NightEvents(resp, desats, arousals, limbs, movements)
    return NightScoring(preset, profile, stages, events, spo2, generator)


def _simulate_whole_night(preset: CohortPreset, subject: int, seed: int) -> NightScoring:
    """Generator 2: the subject's whole night (lights off to lights on) and its scored events."""
    profile = draw_subject(preset, subject, seed)
    rng = night_rng(seed, preset.name + "/night", subject)
    stages = whole_night_hypnogram(profile, rng, preset.paediatric)
    return _schedule_events(preset, profile, stages, rng, generator=2)


def _window(sim: NightScoring, n_epochs: int, rng: np.random.Generator) -> NightScoring:
    """The recording of ``n_epochs`` epochs taken within a whole night: events inside it, times shifted."""
    first = night_window(len(sim.stages), n_epochs, rng)
    last = min(first + n_epochs, len(sim.stages))
    t0, t1 = first * EPOCH_SEC, last * EPOCH_SEC
    ev = sim.events
    inside = lambda e: e.onset >= t0 and e.end <= t1
    # a respiratory event needs its consequences (desaturation, arousal: up to ~60 s later) inside the recording too
    room = 60.0 if t1 < len(sim.stages) * EPOCH_SEC else 0.0
    resp_keep = [i for i, e in enumerate(ev.respiratory) if inside(e) and e.end + room <= t1]
    new_index = {old: new for new, old in enumerate(resp_keep)}

    def move(events: list[ScoredEvent], causes: bool = False) -> list[ScoredEvent]:
        out = []
        for e in events:
            if inside(e) and (not causes or e.cause < 0 or e.cause in new_index):
                out.append(replace(e, onset=round(e.onset - t0, 1),
                                   cause=new_index.get(e.cause, -1) if causes else e.cause))
        return out

    events = NightEvents(
        respiratory=move([ev.respiratory[i] for i in resp_keep]),
        desaturations=move(ev.desaturations, causes=True),
        arousals=move(ev.arousals, causes=True),
        limbs=move(ev.limbs),
        movements=[(round(a - t0, 1), d) for a, d in ev.movements if a >= t0 and a + d <= t1],
    )
    profile = replace(sim.profile, start=sim.profile.start + dt.timedelta(seconds=t0))
    return NightScoring(sim.preset, profile, sim.stages[first:last].copy(), events, sim.spo2[int(t0) : int(t1)].copy(),
                        generator=2, window_start_s=t0)


def night_renderer(sim: NightScoring, seed: int) -> NightRenderer:
    """The renderer of a simulated night's signals (generator 1 or 2, as ``sim`` was drawn)."""
    if sim.generator == 2:
        traits = draw_spectral_traits(sim.preset, sim.profile, seed)
        return NightRenderer2(sim.profile, traits, sim.preset, sim.stages, sim.events, sim.spo2, seed)
    return NightRenderer(sim.profile, sim.stages, sim.events, sim.spo2, seed, line_freq=sim.preset.line_freq)


def generate_night(preset: CohortPreset | str, subject: int, seed: int, hours: float = 2.0,
                   generator: int = DEFAULT_GENERATOR, day_wake_hours: tuple[float, float] = (0.0, 0.0)) -> SyntheticNight:
    """Simulate the ``subject``-th night of a cohort: hypnogram, scored events and every EDF signal."""
    sim = simulate_scoring(preset, subject, seed, hours, generator, day_wake_hours)
    preset, profile, stages, events = sim.preset, sim.profile, sim.stages, sim.events
    n_epochs = len(stages)
    hours = n_epochs * EPOCH_SEC / 3600.0  # a window never outlasts the whole night
    movements = events.movements
    renderer = night_renderer(sim, seed)

    artifacts: list[dict] = [
        {"kind": "movement", "label": "*", "onset": a, "duration": d} for a, d in movements
    ]
    signals: dict[str, np.ndarray] = {}
    flat_rng = night_rng(seed, preset.name + "/flat", subject)
    for i, ch in enumerate(preset.channels):
        lo, hi = ch.physical_range
        x = np.clip(renderer.render(ch.measures, ch.rate), lo, hi)  # a new array: the cache stays intact
        # a lead that came off for a while: the amplifier records a flat line
        for _ in range(flat_rng.poisson(0.05 * hours)):
            onset = float(np.round(flat_rng.uniform(0, max(n_epochs * EPOCH_SEC - 120, 1)), 1))
            dur = float(np.round(flat_rng.uniform(10, 120), 1))
            x[int(onset * ch.rate) : int((onset + dur) * ch.rate)] = 0.0
            artifacts.append({"kind": "flat", "label": ch.label, "onset": onset, "duration": dur})
        signals[ch.label] = x
        renderer.release({c.measures for c in preset.channels[i + 1 :]})
    return SyntheticNight(
        preset=preset,
        profile=profile,
        stages=stages,
        events=sim.scored,
        signals=signals,
        rates={c.label: c.rate for c in preset.channels},
        units={c.label: c.unit for c in preset.channels},
        artifacts=artifacts,
        generator=sim.generator,
        window_start_s=sim.window_start_s,
    )


def _movements(
    stages: np.ndarray, arousals: list[ScoredEvent], rng: np.random.Generator
) -> list[tuple[float, float]]:
    """Movement artefacts: in wake, and with some arousals (unscored, like real data)."""
    out = []
    wake = np.flatnonzero(stages == W)
    for e in wake[rng.random(wake.size) < 0.08]:
        out.append((round(float(e * EPOCH_SEC + rng.uniform(0, 26)), 1), round(float(rng.uniform(1, 4)), 1)))
    for ar in arousals:
        if rng.random() < 0.15:
            out.append((ar.onset, round(float(min(rng.uniform(1, 3), ar.duration)), 1)))
    return sorted(out)


def signal_locations(preset: CohortPreset) -> dict[str, str]:
    """EDF label each event kind is scored on (for <SignalLocation>)."""
    by = {c.measures: c.label for c in preset.channels}
    loc = {}
    flow = by.get("NP") or by.get("AF")
    if flow:
        loc.update({"obstructive_apnea": flow, "central_apnea": flow, "hypopnea": flow})
    if "SPO2" in by:
        loc["desaturation"] = by["SPO2"]
    for kind, qs in {"limb_left": ("EMG_LLeg", "EMG_LLeg1"), "limb_right": ("EMG_RLeg", "EMG_RLeg1")}.items():
        for q in qs:
            if q in by:
                loc[kind] = by[q]
    return loc


def write_night(night: SyntheticNight, cohort_dir: Path) -> dict:
    """Write a night's EDF and NSRR XML under ``cohort_dir``; returns the subjects-CSV row + file info."""
    rid = night.recording_id
    edf_path = write_edf(
        cohort_dir / EDF_DIR / f"{rid}.edf", night.preset, night.signals, night.start, rid, night.profile.sex
    )
    xml_path = write_nsrr_xml(
        cohort_dir / XML_DIR / f"{rid}-nsrr.xml",
        night.stages,
        night.events,
        night.start,
        signal_locations(night.preset),
        night.preset.software,
    )
    return {"row": night.subject_row(), "files": [edf_path, xml_path]}


def _job(cohort: str, subject: int, seed: int, hours: float, cohort_dir: str, generator: int) -> dict:
    night = generate_night(cohort, subject, seed, hours=hours, generator=generator)
    return write_night(night, Path(cohort_dir))


def _check_positive(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")


def _parse_cohorts(cohorts: Iterable[str] | str) -> list[str]:
    names = (
        [c.strip() for c in cohorts.split(",")]
        if isinstance(cohorts, str)
        else [str(c).strip() for c in cohorts]
    )
    names = [c for c in names if c]
    if not names:
        raise ValueError(f"no cohort given; choose from {sorted(COHORT_PRESETS)}")
    for c in names:
        get_preset(c)
    if len(set(names)) != len(names):
        raise ValueError(f"cohort listed twice in {names}")
    return names


def _check_counts(nights_per_cohort: int, hours: float, num_workers: int) -> None:
    if (
        isinstance(nights_per_cohort, bool)
        or not isinstance(nights_per_cohort, (int, np.integer))
        or nights_per_cohort <= 0
    ):
        raise ValueError(f"nights_per_cohort must be a positive integer, got {nights_per_cohort!r}")
    _check_positive("hours", hours)
    if isinstance(num_workers, bool) or not isinstance(num_workers, (int, np.integer)) or num_workers < 1:
        raise ValueError(f"num_workers must be an integer >= 1, got {num_workers!r}")


def _prepare_output(out: Path, names: list[str], overwrite: bool) -> None:
    """Create the cohort folders; an existing non-empty folder needs ``overwrite`` (then only our files go)."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"output_dir {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"output_dir {out} exists and is not empty ({sorted(p.name for p in out.iterdir())[:5]}); "
                "choose an empty folder or pass overwrite=True (--overwrite)"
            )
        # replace only what this call writes; unrelated files in the folder are left alone
        for c in names:
            shutil.rmtree(out / c, ignore_errors=True)
        (out / "manifest.json").unlink(missing_ok=True)
    for c in names:
        for sub in (EDF_DIR, XML_DIR, CSV_DIR):
            (out / c / sub).mkdir(parents=True, exist_ok=True)


def _run_jobs(
    jobs: list[tuple[str, int]], out: Path, seed: int, hours: float, num_workers: int, progress: bool, generator: int
) -> tuple[dict[tuple[str, int], dict], list[dict]]:
    """Generate and write every (cohort, subject) night; a failing night is recorded, the rest go on."""
    results: dict[tuple[str, int], dict] = {}
    failures: list[dict] = []
    bar = tqdm(total=len(jobs), desc="synthetic nights", unit="night", disable=not progress)

    def collect(c: str, s: int, run: Callable[[], dict]) -> None:
        try:
            results[(c, s)] = run()
        except Exception as exc:  # noqa: BLE001  (batch: record, write the rest, fail at the end)
            failures.append({"cohort": c, "subject": s, "error": repr(exc)})
        bar.update(1)

    if num_workers == 1:
        for c, s in jobs:
            collect(c, s, functools.partial(_job, c, s, seed, hours, str(out / c), generator))
    else:
        with ProcessPoolExecutor(max_workers=int(num_workers)) as pool:
            futures = {pool.submit(_job, c, s, seed, hours, str(out / c), generator): (c, s) for c, s in jobs}
            for fut in as_completed(futures):
                collect(*futures[fut], fut.result)
    bar.close()
    return results, failures


def _write_cohort_tables(out: Path, c: str, nights: int, results: dict[tuple[str, int], dict], version: str
                         ) -> list[dict]:
    """Subjects CSV and tables of cohort ``c``; the manifest's file entries of its nights and tables."""
    done = [results[(c, s)] for s in range(nights) if (c, s) in results]
    csv_path = out / c / CSV_DIR / f"{c}-subjects.csv"
    rows = [r["row"] for r in done]
    atomic_write_text(csv_path, pd.DataFrame(rows).to_csv(index=False, lineterminator="\n"))
    table_paths = write_subject_tables(out / c, c, rows, version)
    paths = [p for r in done for p in r["files"]] + [csv_path, *table_paths]
    return [{"path": p.relative_to(out).as_posix(), "bytes": p.stat().st_size, "sha256": file_sha256(p)} for p in paths]


def generate_cohort(
    output_dir: str | Path,
    cohorts: Iterable[str] | str = ("shhs", "mesa", "mros"),
    nights_per_cohort: int = 6,
    hours: float = 2.0,
    seed: int = 0,
    num_workers: int = 1,
    overwrite: bool = False,
    progress: bool = True,
    generator: int = DEFAULT_GENERATOR,
) -> Path:
    """Write synthetic cohorts (EDF + NSRR XML + subjects CSV) under ``output_dir``; returns the manifest path.

    ``generator``: 2 (default) or 1 (the 1.x generator, bit-reproducible); the manifest and the subjects
    table record the version.
    """
    names = _parse_cohorts(cohorts)
    generator = check_generator(generator)
    version = GENERATOR_VERSIONS[generator]
    _check_counts(nights_per_cohort, hours, num_workers)
    out = Path(output_dir)
    _prepare_output(out, names, overwrite)
    nights = int(nights_per_cohort)
    results, failures = _run_jobs([(c, s) for c in names for s in range(nights)], out, seed, hours, num_workers,
                                  progress, generator)
    files = [entry for c in names for entry in _write_cohort_tables(out, c, nights, results, version)]
    manifest = {
        "generator": GENERATOR_NAME,
        "generator_version": version,
        "seed": int(seed),
        "cohorts": names,
        "nights_per_cohort": nights,
        "hours": float(hours),
        "layout": {"edf": EDF_DIR.as_posix(), "xml": XML_DIR.as_posix(), "subjects_csv": CSV_DIR.as_posix()},
        "files": files,
        "failures": sorted(failures, key=lambda f: (f["cohort"], f["subject"])),
    }
    manifest_path = out / "manifest.json"
    atomic_write_text(manifest_path, json.dumps(manifest, indent=1) + "\n")
    if failures:
        raise RuntimeError(f"{len(failures)} synthetic night(s) failed (see {manifest_path}): {failures[:3]}")
    return manifest_path

"""Synthetic cohort files: EDF/XML/CSV layout, read-back with two EDF readers, determinism, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree as ET

import edfio
import mne
import numpy as np
import pandas as pd
import pytest

from osf.datasets.synthetic import COHORT_PRESETS, GENERATOR_VERSION, generate_cohort, generate_night
from osf.datasets.synthetic.events import EVENT_XML

REPO = Path(__file__).resolve().parents[1]
COHORTS = ("shhs", "mesa", "mros", "chat", "generic")
HOURS = 0.25


@pytest.fixture(scope="module")
def cohort_dir(tmp_path_factory) -> Path:
    """Every preset, one short night each, written once for the module."""
    out = tmp_path_factory.mktemp("synthetic") / "out"
    generate_cohort(out, cohorts=COHORTS, nights_per_cohort=1, hours=HOURS, seed=3, progress=False)
    return out


@pytest.fixture(scope="module")
def memory_nights() -> dict:
    """The same nights as ``cohort_dir``, generated in memory."""
    return {c: generate_night(c, 0, seed=3, hours=HOURS) for c in COHORTS}


def _load_cli():
    from main_pipelines import main_synthetic

    return main_synthetic


def _edf(cohort_dir: Path, cohort: str) -> Path:
    return next((cohort_dir / cohort / "polysomnography" / "edfs").glob("*.edf"))


def _xml(cohort_dir: Path, cohort: str) -> Path:
    return next((cohort_dir / cohort / "polysomnography" / "annotations-events-nsrr").glob("*-nsrr.xml"))


def test_layout_and_manifest(cohort_dir):
    manifest = json.loads((cohort_dir / "manifest.json").read_text())
    assert manifest["seed"] == 3 and manifest["generator_version"] == GENERATOR_VERSION
    assert manifest["cohorts"] == list(COHORTS) and manifest["failures"] == []
    for c in COHORTS:
        rid = COHORT_PRESETS[c].recording_id(0)
        assert (cohort_dir / c / "polysomnography" / "edfs" / f"{rid}.edf").is_file()
        assert (cohort_dir / c / "polysomnography" / "annotations-events-nsrr" / f"{rid}-nsrr.xml").is_file()
        subjects = pd.read_csv(cohort_dir / c / "datasets" / f"{c}-subjects.csv")
        assert list(subjects["recording_id"]) == [rid]
        assert {"nsrrid", "age", "sex", "ahi", "severity"} <= set(subjects.columns)
    listed = {f["path"] for f in manifest["files"]}
    written = {p.relative_to(cohort_dir).as_posix() for p in cohort_dir.rglob("*") if p.is_file()} - {
        "manifest.json"
    }
    assert listed == written
    assert not list(cohort_dir.rglob("*.tmp"))


@pytest.mark.parametrize("cohort", COHORTS)
def test_edf_reads_back_with_mne_and_edfio(cohort_dir, memory_nights, cohort):
    preset = COHORT_PRESETS[cohort]
    path = _edf(cohort_dir, cohort)
    edf = edfio.read_edf(path)
    assert [s.label for s in edf.signals] == list(preset.labels)
    assert [s.sampling_frequency for s in edf.signals] == [c.rate for c in preset.channels]
    assert [s.physical_dimension for s in edf.signals] == [c.unit for c in preset.channels]
    assert edf.duration == pytest.approx(HOURS * 3600)
    raw = mne.io.read_raw_edf(path, preload=False, verbose="error")
    assert raw.ch_names == list(preset.labels)
    assert raw.n_times / raw.info["sfreq"] == pytest.approx(HOURS * 3600)
    # the written values are the in-memory night's, up to 16-bit quantisation
    night = memory_nights[cohort]
    assert raw.info["meas_date"].replace(tzinfo=None) == night.start
    for sig, ch in zip(edf.signals, preset.channels):
        lo, hi = ch.physical_range
        np.testing.assert_allclose(sig.data, night.signals[ch.label], atol=(hi - lo) / 65535 * 1.01)


def test_cohorts_keep_their_own_labels_rates_and_gaps(cohort_dir, memory_nights):
    shhs = edfio.read_edf(_edf(cohort_dir, "shhs"))
    mesa = edfio.read_edf(_edf(cohort_dir, "mesa"))
    rates = {
        c: {s.label: s.sampling_frequency for s in e.signals} for c, e in (("shhs", shhs), ("mesa", mesa))
    }
    assert rates["shhs"]["EEG(sec)"] == 125 and rates["shhs"]["THOR RES"] == 10 and rates["shhs"]["SaO2"] == 1
    assert rates["mesa"]["EEG3"] == 256 and rates["mesa"]["Thor"] == 32
    measures = {c: {ch.measures for ch in COHORT_PRESETS[c].channels} for c in COHORTS}
    assert not measures["shhs"] & {"NP", "SN", "EMG_LLeg", "EMG_RLeg"}  # SHHS montage gaps
    assert {"EEG_C3", "EEG_A2", "EMG_LChin", "EMG_RChin", "EMG_LLeg1", "EMG_LLeg2"} <= measures["mros"]
    # paediatric cohort: faster heart
    chat_hr = memory_nights["chat"].signals["Pulse"].mean()
    adult_hr = memory_nights["shhs"].signals["H.R."].mean()
    assert chat_hr > adult_hr + 10


def test_labels_are_real_nsrr_aliases(shared_dir):
    aliases = json.loads((shared_dir / "reference" / "nsrr_channel_aliases.json").read_text())["aliases"]
    for preset in COHORT_PRESETS.values():
        for ch in preset.channels:
            assert ch.label in aliases[ch.measures], (preset.name, ch.label, ch.measures)


def _parse_xml(path: Path) -> tuple[np.ndarray, list[dict]]:
    stage_code = {
        "Wake|0": 0,
        "Stage 1 sleep|1": 1,
        "Stage 2 sleep|2": 2,
        "Stage 3 sleep|3": 3,
        "REM sleep|5": 4,
    }
    root = ET.parse(path).getroot()
    assert root.tag == "PSGAnnotation" and root.findtext("EpochLength") == "30"
    stages, events = [], []
    for ev in root.iter("ScoredEvent"):
        concept, start, dur = (
            ev.findtext("EventConcept"),
            float(ev.findtext("Start")),
            float(ev.findtext("Duration")),
        )
        if ev.findtext("EventType") == "Stages|Stages":
            assert start == 30 * len(stages) and dur % 30 == 0  # contiguous runs of whole epochs
            stages += [stage_code[concept]] * int(dur // 30)
        elif ev.findtext("EventType"):
            events.append(
                {"concept": concept, "onset": start, "duration": dur, "nadir": ev.findtext("SpO2Nadir")}
            )
    return np.asarray(stages), events


@pytest.mark.parametrize("cohort", ["generic", "mros"])
def test_xml_holds_exactly_the_rendered_events(cohort_dir, memory_nights, cohort):
    stages, events = _parse_xml(_xml(cohort_dir, cohort))
    night = memory_nights[cohort]
    np.testing.assert_array_equal(stages, night.stages)
    assert len(events) == len(night.events)
    for parsed, ev in zip(events, night.events):
        assert parsed["onset"] == pytest.approx(ev.onset, abs=1e-9)
        assert parsed["duration"] == pytest.approx(ev.duration, abs=1e-9)
        assert parsed["concept"] == EVENT_XML[ev.kind][1]
    subjects = pd.read_csv(cohort_dir / cohort / "datasets" / f"{cohort}-subjects.csv")
    n_resp = sum(e["concept"].startswith(("Obstructive apnea", "Central apnea", "Hypopnea")) for e in events)
    tst_h = np.sum(stages > 0) * 30 / 3600
    assert subjects["ahi"].iloc[0] == pytest.approx(n_resp / tst_h, abs=0.01)


def test_same_seed_same_bytes_in_parallel_and_different_seed_differs(tmp_path):
    kw = {"cohorts": "shhs,mros", "nights_per_cohort": 2, "hours": 0.1, "progress": False}
    a = generate_cohort(tmp_path / "a", seed=5, num_workers=1, **kw).parent
    b = generate_cohort(tmp_path / "b", seed=5, num_workers=2, **kw).parent
    c = generate_cohort(tmp_path / "c", seed=6, num_workers=1, **kw).parent
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 2 * (2 + 2 + 3) + 1  # per cohort: EDFs, XMLs, subjects CSV + 2 NSRR-style tables
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    edf = Path("shhs/polysomnography/edfs") / f"{COHORT_PRESETS['shhs'].recording_id(0)}.edf"
    assert (a / edf).read_bytes() != (c / edf).read_bytes()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"cohorts": "shhs,nope"}, "unknown synthetic cohort 'nope'"),
        ({"nights_per_cohort": 0}, "nights_per_cohort must be a positive integer"),
        ({"nights_per_cohort": -2}, "nights_per_cohort must be a positive integer"),
        ({"hours": 0.0}, "hours must be a positive number"),
        ({"hours": -1.0}, "hours must be a positive number"),
        ({"num_workers": 0}, "num_workers must be an integer"),
    ],
)
def test_bad_arguments_raise_clear_errors(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        generate_cohort(tmp_path / "out", progress=False, **kwargs)
    assert not (tmp_path / "out").exists()


def test_non_empty_output_dir_needs_overwrite(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    keep = out / "notes.txt"
    keep.write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        generate_cohort(out, cohorts="shhs", nights_per_cohort=1, hours=0.05, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    stale = out / "shhs" / "polysomnography" / "edfs" / "stale.edf"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    manifest = generate_cohort(
        out, cohorts="shhs", nights_per_cohort=1, hours=0.05, overwrite=True, progress=False
    )
    assert manifest.is_file() and keep.read_text() == "mine" and not stale.exists()


def test_cli_help_runs_as_a_script():
    script = REPO / "main_pipelines" / "main_synthetic.py"
    help_ = subprocess.run(
        [sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert help_.returncode == 0 and "--nights_per_cohort" in help_.stdout and "--overwrite" in help_.stdout


def test_cli_writes_a_cohort_and_rejects_bad_input(tmp_path, capsys):
    cli = _load_cli()
    assert cli.main(["--output_dir", str(tmp_path / "x"), "--cohorts", "shhs,xyz", "--no-progress"]) == 2
    assert "unknown synthetic cohort 'xyz'" in capsys.readouterr().err
    out = tmp_path / "o"
    args = [
        "--output_dir",
        str(out),
        "--cohorts",
        "generic",
        "--nights_per_cohort",
        "1",
        "--hours",
        "0.05",
        "--seed",
        "1",
        "--no-progress",
    ]
    assert cli.main(args) == 0
    assert json.loads((out / "manifest.json").read_text())["seed"] == 1
    before = (out / "manifest.json").read_bytes()
    assert cli.main(args) == 2 and "--overwrite" in capsys.readouterr().err
    assert cli.main(args + ["--overwrite"]) == 0 and (out / "manifest.json").read_bytes() == before

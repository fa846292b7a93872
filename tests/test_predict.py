"""Staging a night: summary statistics, QC report, hypnogram writers, figure, and the prediction command."""

from __future__ import annotations

import json
import math

import mne
import numpy as np
import pytest

import config
from osf.datasets.io.scoring import stage_runs
from osf.predict.report import MissingChannelsError, build_qc_report, require_some_channels
from osf.predict.summary import count_runs, event_indices, sleep_statistics, summarize_night
from osf.predict.writers import write_edf_hypnogram, write_json, write_nsrr_xml

STAGES_4 = list(config.STAGE_NAMES_4)
W, LIGHT, DEEP, REM = range(4)


def _night(sol: int, first_cycle: list[tuple[int, int]], tail_wake: int, unknown: int = 0) -> np.ndarray:
    """A hypnogram: `sol` wake epochs, then (stage, n) runs, `unknown` unscorable, `tail_wake` wake."""
    parts = [np.full(sol, W)] + [np.full(n, s) for s, n in first_cycle]
    parts += [np.full(unknown, config.STAGE_UNKNOWN), np.full(tail_wake, W)]
    return np.concatenate(parts).astype(np.int64)


# --- summary statistics -----------------------------------------------------------------------
def test_sleep_statistics_follow_the_aasm_definitions():
    runs = [(LIGHT, 20), (DEEP, 30), (W, 4), (LIGHT, 10), (REM, 12), (W, 2), (LIGHT, 6)]
    stages = _night(sol=14, first_cycle=runs, tail_wake=8, unknown=3)
    stats = sleep_statistics(stages, STAGES_4)
    sleep_epochs = 20 + 30 + 10 + 12 + 6
    assert stats["time_in_bed_min"] == pytest.approx(len(stages) / 2)
    assert stats["total_sleep_time_min"] == pytest.approx(sleep_epochs / 2)
    assert stats["sleep_efficiency_pct"] == pytest.approx(100 * sleep_epochs / len(stages))
    assert stats["sleep_onset_latency_min"] == pytest.approx(14 / 2)
    # wake inside the sleep period only: the final awakening and unknown epochs are not WASO
    assert stats["wake_after_sleep_onset_min"] == pytest.approx((4 + 2) / 2)
    assert stats["rem_latency_min"] == pytest.approx((20 + 30 + 4 + 10) / 2)
    minutes = stats["stage_minutes"]
    assert sum(minutes.values()) == pytest.approx(stats["time_in_bed_min"])
    assert minutes["unknown"] == pytest.approx(3 / 2)
    sleep_pct = sum(stats["stage_percent"][s] for s in ("Light", "Deep", "REM"))
    assert sleep_pct == pytest.approx(100.0)


def test_sleep_statistics_of_a_night_without_sleep_or_rem():
    awake = sleep_statistics(np.zeros(40, dtype=int), STAGES_4)
    assert awake["total_sleep_time_min"] == 0 and awake["sleep_onset_latency_min"] is None
    no_rem = sleep_statistics(_night(2, [(LIGHT, 5), (DEEP, 5)], 1), STAGES_4)
    assert no_rem["rem_latency_min"] is None and no_rem["sleep_onset_latency_min"] == pytest.approx(1.0)


def test_sleep_statistics_reject_labels_outside_the_stage_space():
    with pytest.raises(ValueError, match="found \\[4\\]"):
        sleep_statistics(np.array([0, 1, 4]), STAGES_4)
    with pytest.raises(ValueError, match="no wake stage"):
        sleep_statistics(np.array([0, 1]), ["A", "B"])


def test_event_indices_count_runs_in_sleep_per_hour_of_sleep():
    assert [count_runs(np.array(m, bool)) for m in ([], [0, 0], [1, 1, 0, 1], [0, 1, 0, 1, 1])] == [0, 0, 2, 2]
    n = 240  # 2 h
    sleep = np.ones(n, bool)
    sleep[:40] = False  # 20 min awake: 100 min of sleep
    hyp = np.zeros(n)
    hyp[[50, 51, 52, 80, 120, 121]] = 0.9  # 3 runs
    hyp[10] = 0.99  # during wake: not counted
    apnea = np.zeros(n)
    apnea[[53, 200]] = 0.7  # 53 touches the first hypopnea run: one respiratory event there
    out = event_indices({"Hypopnea": hyp, "Apnea": apnea}, sleep, threshold=0.5)
    hours = (n - 40) / 120
    assert out["hypopnea_events"] == 3 and out["hypopnea_index"] == pytest.approx(3 / hours)
    assert out["apnea_events"] == 2
    assert out["respiratory_events"] == 4 and out["respiratory_event_index"] == pytest.approx(4 / hours)
    with pytest.raises(ValueError, match="one per epoch"):
        event_indices({"Arousal": np.zeros(3)}, sleep)


def test_summarize_night_adds_event_indices_only_from_sleep_epochs():
    stages = _night(10, [(LIGHT, 60)], 10)
    arousal = np.zeros(len(stages))
    arousal[[0, 20, 40]] = 1.0  # epoch 0 is wake
    summary = summarize_night(stages, STAGES_4, {"Arousal": arousal})
    assert summary["events"]["arousal_events"] == 2
    assert summary["events"]["arousal_index"] == pytest.approx(2 / 0.5)


# --- QC report ----------------------------------------------------------------------------------
def test_a_recording_with_none_of_the_classifier_channels_is_refused():
    require_some_channels(["NP"], ["ECG", "ABD", "NP"], ["ECG", "ABD"], "night.edf")  # some left: fine
    with pytest.raises(MissingChannelsError, match=r"night\.edf.*none of the channels.*NP, SN.*found.*ECG"):
        require_some_channels(["NP", "SN"], ["NP", "SN"], ["ECG"], "night.edf")


def test_qc_report_names_missing_channels_low_confidence_and_flat_channels():
    n = 10
    present = [c for c in config.CHANNELS if c != "NP"]
    probs = np.full((n, 4), 0.25)
    probs[:3] = [0.9, 0.05, 0.03, 0.02]
    flat = np.zeros(n, np.uint16)
    flat[:8] = 1 << config.CHANNEL_INDEX["ECG"]
    qc = build_qc_report("x.edf", {"resampled": {"ECG": 256}}, present, ["NP"], {"flat_mask": flat}, config.CHANNELS,
                         probs, low_confidence=0.5)
    assert qc["missing_classifier_channels"] == ["NP"]
    assert qc["low_confidence_fraction"] == pytest.approx(0.7)
    assert qc["quality"]["flat_epoch_fraction"] == {"ECG": pytest.approx(0.8)}
    assert any("NP" in w for w in qc["warnings"]) and any("ECG is flat" in w for w in qc["warnings"])
    assert qc["ingestion"] == {"resampled": {"ECG": 256}}


# --- writers ------------------------------------------------------------------------------------
def test_edf_hypnogram_reads_back_with_mne(tmp_path):
    stages = _night(3, [(LIGHT, 4), (DEEP, 2), (REM, 3)], 2)
    path = write_edf_hypnogram(tmp_path / "h.edf", stages, STAGES_4)
    annotations = mne.read_annotations(path)
    runs = stage_runs(stages)
    assert len(annotations) == len(runs)
    np.testing.assert_allclose(annotations.onset, [30 * first for _, first, _ in runs])
    np.testing.assert_allclose(annotations.duration, [30 * n for _, _, n in runs])
    assert list(annotations.description[:4]) == ["Sleep stage W", "Sleep stage 2", "Sleep stage 3", "Sleep stage R"]
    assert not list(tmp_path.glob(".*tmp"))  # the temporary file was renamed away


def test_nsrr_xml_hypnogram_has_one_event_per_run_and_reads_back(tmp_path):
    import xml.etree.ElementTree as ET

    from osf.datasets.io import read_scoring

    stages = _night(3, [(LIGHT, 4), (DEEP, 2), (REM, 3)], 2)
    path = write_nsrr_xml(tmp_path / "h.xml", stages, STAGES_4)
    events = ET.parse(path).getroot().findall("./ScoredEvents/ScoredEvent")
    staged = [e for e in events if e.findtext("EventType") == "Stages|Stages"]
    assert [e.findtext("EventConcept") for e in staged] == [
        "Wake|0", "Stage 2 sleep|2", "Stage 3 sleep|3", "REM sleep|5", "Wake|0"]
    # Light/Deep are written as stage 2/3: the project's parser reads the 4-class hypnogram back
    scored = read_scoring(path).stages
    np.testing.assert_array_equal([config.STAGE_5_TO_4[int(s)] for s in scored], stages)
    with pytest.raises(ValueError, match="no hypnogram label"):
        write_nsrr_xml(tmp_path / "bad.xml", np.array([0, 1]), ["W", "Sleep"])


def test_write_json_turns_nan_and_numpy_into_plain_json(tmp_path):
    path = write_json(tmp_path / "s.json", {"kappa": math.nan, "n": np.int64(3), "x": np.arange(2), "s": "NaN"})
    assert json.loads(path.read_text()) == {"kappa": None, "n": 3, "x": [0, 1], "s": "NaN"}


# --- end to end on synthetic nights ---------------------------------------------------------------
@pytest.fixture(scope="module")
def nights(tmp_path_factory):
    """A full-montage night and an SHHS-style night (no leg EMG, nasal pressure or snore), 30 min each."""
    from osf.datasets.synthetic.generate import generate_cohort

    root = tmp_path_factory.mktemp("synthetic")
    generate_cohort(root, cohorts=("generic", "shhs"), nights_per_cohort=1, hours=0.5, seed=3, progress=False)

    def night(cohort):
        edf = next((root / cohort / "polysomnography" / "edfs").glob("*.edf"))
        return edf, root / cohort / "polysomnography" / "annotations-events-nsrr" / f"{edf.stem}-nsrr.xml"

    return {"generic": night("generic"), "shhs": night("shhs")}


BINARY = ["absent", "present"]


def _classifier(path, tasks, channels=config.CHANNELS, thresholds=None):
    """A random-init vit_nano with one linear head per task (name -> class names), saved as a classifier file."""
    import torch

    from osf.backbone.checkpoint import backbone_metadata
    from osf.backbone.vit1d_cls import create_backbone
    from osf.downstream.classifier import SleepClassifier, save_classifier

    torch.manual_seed(0)
    backbone = create_backbone("vit_nano")
    heads = {t: torch.nn.Linear(backbone.width, len(names)) for t, names in tasks.items()}
    clf = SleepClassifier(backbone, heads, tasks, channels=channels,
                          backbone_metadata=backbone_metadata(backbone, "random"), thresholds=thresholds)
    return save_classifier(clf, path)


@pytest.fixture(scope="module")
def classifiers(tmp_path_factory):
    """A staging + arousal classifier on all channels and a respiratory-event classifier on a home-test montage."""
    root = tmp_path_factory.mktemp("classifiers")
    staging = _classifier(root / "staging.pt", {"stage": list(config.STAGE_NAMES_4), "arousal": BINARY},
                          thresholds={"arousal": 0.3})
    respiratory = _classifier(root / "respiratory.pt", {"hypopnea": BINARY, "oxygen_desaturation": BINARY},
                              channels=config.CHANNEL_PRESETS["cardio_respiratory"])
    return staging, respiratory


def test_predict_command_writes_consistent_outputs(nights, classifiers, tmp_path, capsys):
    import pandas as pd
    from sklearn.metrics import cohen_kappa_score

    from main_pipelines.main_predict import main
    from osf.datasets.io import read_scoring

    edf, xml = nights["generic"]
    out = tmp_path / "out"
    args = ["--edf", str(edf), "--classifier", *map(str, classifiers), "--annotations", str(xml), "--output_dir", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr()
    assert "kappa" in printed.out and "proceeding without" not in printed.err

    table = pd.read_csv(out / f"{edf.stem}_epochs.csv")
    n = len(table)
    assert n == 60  # 30 min of 30 s epochs
    stage_p = table[[f"p_{s}" for s in config.STAGE_NAMES_4]].to_numpy()
    np.testing.assert_allclose(stage_p.sum(axis=1), 1.0, atol=1e-4)
    np.testing.assert_array_equal(stage_p.argmax(axis=1), table["stage_index"])
    for column in ("p_arousal", "p_hypopnea", "p_oxygen_desaturation"):  # from both classifiers
        assert table[column].between(0, 1).all()

    summary = json.loads((out / f"{edf.stem}_summary.json").read_text())
    assert sum(summary["stage_minutes"].values()) == pytest.approx(n / 2)
    assert summary["total_sleep_time_min"] == pytest.approx((table["stage"] != "W").sum() / 2)
    assert summary["events"]["event_thresholds"] == {"Arousal": 0.3, "Hypopnea": 0.5, "Oxygen Desaturation": 0.5}
    scored5 = read_scoring(xml).stages[:n]
    scored4 = np.array([config.STAGE_5_TO_4[int(s)] for s in scored5])
    np.testing.assert_array_equal(table["scored_stage_index"], scored4)
    valid = scored4 >= 0
    expected_kappa = cohen_kappa_score(scored4[valid], table["stage_index"][valid])
    assert summary["scored"]["cohen_kappa"] == pytest.approx(expected_kappa, abs=1e-9)
    assert summary["scored"]["agreement"] == pytest.approx((scored4[valid] == table["stage_index"][valid]).mean())

    from osf.datasets.io.edf import read_edf_header

    xml_text = (out / f"{edf.stem}_hypnogram.xml").read_text()
    assert f"<ClockTime>00.00.00 {read_edf_header(edf).start_time:%H.%M.%S}</ClockTime>" in xml_text
    hypnogram = read_scoring(out / f"{edf.stem}_hypnogram.xml").stages
    np.testing.assert_array_equal([config.STAGE_5_TO_4[int(s)] for s in hypnogram], table["stage_index"])
    assert len(mne.read_annotations(out / f"{edf.stem}_hypnogram.edf")) >= 1
    qc = json.loads((out / f"{edf.stem}_qc.json").read_text())
    assert qc["missing_classifier_channels"] == [] and qc["n_epochs"] == n
    assert 0 <= qc["low_confidence_fraction"] <= 1
    assert qc["ingestion"]["channel_map"]  # the mapping ingestion used is reported
    png = (out / f"{edf.stem}_night.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    assert not list(out.glob(".*tmp"))


def test_missing_channels_are_warned_about_in_the_report_and_on_stderr(nights, classifiers, tmp_path, capsys):
    from main_pipelines.main_predict import main
    from osf.predict.night import predict_night
    from osf.predict.report import MissingChannelsWarning

    edf, _ = nights["shhs"]
    clf = classifiers[0]
    with pytest.warns(MissingChannelsWarning, match="EMG_LLeg, EMG_RLeg, NP, SN"):
        result = predict_night(edf, clf, dataset="shhs")
    assert result.qc["missing_classifier_channels"] == ["EMG_LLeg", "EMG_RLeg", "NP", "SN"]
    assert any("proceeding without 4" in w for w in result.qc["warnings"])
    assert main(["--edf", str(edf), "--classifier", str(clf), "--dataset", "shhs", "--output_dir", str(tmp_path / "o"),
                 "--hypnogram_format", "xml"]) == 0
    assert "WARNING: proceeding without 4 of the classifier's 12 channels" in capsys.readouterr().err
    assert (tmp_path / "o" / f"{edf.stem}_hypnogram.xml").is_file()
    assert not (tmp_path / "o" / f"{edf.stem}_hypnogram.edf").exists()


def test_a_night_without_any_classifier_channel_is_refused(nights, tmp_path, capsys):
    from main_pipelines.main_predict import main

    edf, _ = nights["shhs"]
    clf = _classifier(tmp_path / "clf.pt", {"stage": list(config.STAGE_NAMES_4)}, channels=("EMG_LLeg", "EMG_RLeg", "NP", "SN"))
    out = tmp_path / "out"
    assert main(["--edf", str(edf), "--classifier", str(clf), "--dataset", "shhs", "--output_dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(edf) in err and "none of the channels the classifier needs" in err
    assert not out.exists()  # nothing written


def test_bad_inputs_exit_with_a_reason(nights, classifiers, tmp_path, capsys):
    from main_pipelines.main_predict import main

    edf, _ = nights["generic"]
    not_a_classifier = tmp_path / "x.pt"
    not_a_classifier.write_bytes(b"junk")
    assert main(["--edf", str(edf), "--classifier", str(not_a_classifier), "--output_dir", str(tmp_path)]) == 2
    assert "x.pt" in capsys.readouterr().err
    clf = classifiers[0]
    assert main(["--edf", str(edf), "--classifier", str(clf), str(clf), "--output_dir", str(tmp_path)]) == 2
    assert "task 'stage' is predicted by classifiers 0 and 1" in capsys.readouterr().err
    assert main(["--edf", str(edf), "--classifier", str(classifiers[1]), "--output_dir", str(tmp_path)]) == 2
    assert "no classifier has a 'stage' head" in capsys.readouterr().err
    assert main(["--edf", str(tmp_path / "none.edf"), "--classifier", str(clf), "--output_dir", str(tmp_path)]) == 2
    assert "none.edf" in capsys.readouterr().err
    assert main(["--edf", str(edf), "--classifier", str(clf), "--channel_map", "{oops", "--output_dir", str(tmp_path)]) == 2
    assert "channel map is not valid JSON" in capsys.readouterr().err

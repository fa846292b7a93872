"""A Sleep-EDF-layout night (synthetic preset) ingests and stages with ``--dataset sleep_edf``, no map, no flags."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from osf import config
from osf.datasets.io.channels import resolve_channels
from osf.datasets.io.edf import read_edf_header
from osf.datasets.io.scoring_formats import read_scoring
from osf.datasets.store import EpochStore
from osf.datasets.store_index import read_recordings
from osf.datasets.synthetic.sleep_edf_layout import rk_stage_runs, sleep_edf_names, write_sleep_edf_night

SLEEP_EDF_LABELS = ["EEG Fpz-Cz", "EEG Pz-Oz", "EOG horizontal", "Resp oro-nasal", "EMG submental", "Temp rectal",
                    "Event marker"]


@pytest.fixture(scope="module")
def cassette(tmp_path_factory) -> tuple[Path, Path]:
    """A 12.5 h cassette-style recording: 5 h of afternoon wake, a 1.5 h night, 6 h of wake after it."""
    root = tmp_path_factory.mktemp("sleep-cassette")
    return write_sleep_edf_night(root, subject=7, seed=5, night_hours=1.5, day_wake_hours=(5.0, 6.0))


def test_the_preset_writes_sleep_edf_names_labels_rates_and_a_24_h_hypnogram(cassette) -> None:
    psg, hyp = cassette
    assert (psg.name, hyp.name) == sleep_edf_names(7) == ("SC4071E0-PSG.edf", "SC4071EC-Hypnogram.edf")
    header = read_edf_header(psg)
    assert header.labels == SLEEP_EDF_LABELS
    rates = {s.label: header.rate(s) for s in header.signals}
    assert rates == {"EEG Fpz-Cz": 100, "EEG Pz-Oz": 100, "EOG horizontal": 100, "Resp oro-nasal": 1,
                     "EMG submental": 1, "Temp rectal": 1, "Event marker": 1}
    assert header.duration_s == 12.5 * 3600
    hyp_header = read_edf_header(hyp)
    assert hyp_header.variant == "EDF+C" and hyp_header.start_time == header.start_time
    texts = {a.text for a in __import__("edfio").read_edf(hyp).annotations}
    assert texts <= {"Sleep stage W", "Sleep stage 1", "Sleep stage 2", "Sleep stage 3", "Sleep stage 4",
                     "Sleep stage R", "Movement time", "Sleep stage ?"}
    scoring = read_scoring(hyp)
    assert len(scoring.stages) * config.EPOCH_SEC == 86400  # to 24 h, as the cassette hypnograms run
    tail = scoring.stages[int(header.duration_s // config.EPOCH_SEC):]
    assert (tail == -1).all() and len(tail) == 11.5 * 120


def test_rk_runs_split_n3_into_stages_3_and_4_and_end_unscored() -> None:
    runs = rk_stage_runs(np.array([0, 2, 3, 3, 3, 3, 2, 0]), movements=[(185.0, 20.0), (215.0, 5.0)])
    assert [t for _, _, t in runs] == ["Sleep stage W", "Sleep stage 2", "Sleep stage 3", "Sleep stage 4",
                                       "Movement time", "Sleep stage W", "Sleep stage ?"]
    assert runs[-1][0] == 240.0 and runs[-1][0] + runs[-1][1] == 86400


@pytest.mark.parametrize(("rate", "chin"), [(1.0, None), (100.0, "EMG submental")])
def test_substitution_policy_of_sleep_edf(rate, chin) -> None:
    """SC and ST: the EEGs and the horizontal EOG stand in; the chin EMG only where it is a raw EMG."""
    r = resolve_channels(SLEEP_EDF_LABELS, "sleep_edf", rates={"EMG submental": rate})
    assert r.as_dict()["EEG_C3_A2"] == "EEG Fpz-Cz" and r.as_dict()["EEG_C4_A1"] == "EEG Pz-Oz"
    assert r.as_dict()["EOG_E1_A2"] == "EOG horizontal" and r.as_dict()["EOG_E2_A1"] is None
    assert r.as_dict()["EMG_Chin"] == chin and r.as_dict()["NP"] is None  # a thermistor is no nasal pressure
    assert set(r.substitutions) == {"EEG_C3_A2", "EEG_C4_A1", "EOG_E1_A2"} | ({"EMG_Chin"} if chin else set())
    if chin is None:
        assert "1 Hz is not used" in r.refused_substitutions["EMG_Chin"]
        assert "RMS envelope" in r.unused_reasons["EMG submental"]
    assert "thermistor" in r.unused_reasons["Resp oro-nasal"] and set(r.unused_reasons) >= {"Temp rectal", "Event marker"}
    # Substitutes never displace a canonical source: a file with C3-M2 keeps it.
    assert resolve_channels(["C3-M2", "EEG Fpz-Cz"], "sleep_edf").sources["EEG_C3_A2"].labels == ("C3-M2",)
    assert resolve_channels(SLEEP_EDF_LABELS, "generic").present == []  # the policy is Sleep-EDF's alone


def test_nsrr_reference_labels_all_resolve_in_the_registry(shared_dir) -> None:
    """Registry review: every documented NSRR label of a model channel reaches that channel in some cohort."""
    ref = json.loads((shared_dir / "reference" / "nsrr_channel_aliases.json").read_text())["aliases"]
    unresolved = [
        (canonical, label)
        for canonical in config.CHANNELS
        for label in ref.get(canonical, [])
        if label and not any(
            resolve_channels([label], ds).sources[canonical].present for ds in config.DATASETS
        )
    ]
    assert unresolved == []


def test_ingest_and_stage_with_no_channel_map_and_no_flags(cassette, tmp_path, capsys) -> None:
    from main_pipelines import main_predict, main_preprocess
    from tests.test_predict import _classifier

    psg, hyp = cassette
    store = tmp_path / "store"
    assert main_preprocess.main(["--dataset", "sleep_edf", "--input_dir", str(psg.parent), "--output_dir", str(store),
                                 "--no-progress"]) == 0
    index = EpochStore(store).index
    assert index["recording_id"].nunique() == 1 and len(index) == 12.5 * 120
    manifest = json.loads((store / "manifest.json").read_text())
    qc = read_recordings(store)["qc"].iloc[0]  # per-recording QC lives in the store's recordings table
    assert set(qc["substitutions"]) == {"EEG_C3_A2", "EEG_C4_A1", "EOG_E1_A2"}
    assert "EMG_Chin" in qc["refused_substitutions"] and not qc["scoring_problems"]
    assert any("unscored/movement there" in w for w in qc["scoring_warnings"])
    assert "sleep_edf" in json.dumps(manifest["pipeline"] if "pipeline" in manifest else manifest)  # policy recorded
    capsys.readouterr()

    from osf.downstream.classifier import VALIDATION_KEY, load_classifier, save_classifier

    clf = _classifier(tmp_path / "staging.pt", {"stage": list(config.STAGE_NAMES_4)})
    trained = load_classifier(clf)
    trained.info[VALIDATION_KEY] = {"full": 0.81, "eeg_eog_only": 0.74, "cardio_respiratory": 0.42}
    save_classifier(trained, clf)
    out = tmp_path / "out"
    assert main_predict.main(["--edf", str(psg), "--classifier", str(clf), "--output_dir", str(out),
                              "--dataset", "sleep_edf", "--annotations", str(hyp)]) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / f"{psg.stem}_qc.json").read_text())
    for channel, label in (("EEG_C3_A2", "EEG Fpz-Cz"), ("EEG_C4_A1", "EEG Pz-Oz"), ("EOG_E1_A2", "EOG horizontal")):
        assert label in report["substitutions"][channel] and f"substitution {channel} <- {label}" in printed
    assert "EMG_Chin" in report["refused_substitutions"]
    assert report["channels_used"] == ["EOG_E1_A2", "EEG_C3_A2", "EEG_C4_A1"]
    match = report["validation_match"]
    assert match["preset"] == "eeg_eog_only" and match["night_lacks"] == ["EOG_E2_A1"]
    assert "closest to eeg_eog_only (validation kappa 0.74), lacking EOG_E2_A1" in printed
    assert "most_channels_missing" in report["plausibility"]  # 3 of the classifier's 12
    assert "day_time_recording" in report["plausibility"] and "CHECK day_time_recording" in printed
    assert "trailing_wake_scored" in report["plausibility"]  # 6 h of wake after the night

    trimmed = tmp_path / "trimmed"
    assert main_predict.main(["--edf", str(psg), "--classifier", str(clf), "--output_dir", str(trimmed),
                              "--dataset", "sleep_edf", "--annotations", str(hyp), "--lights", "auto"]) == 0
    report = json.loads((trimmed / f"{psg.stem}_qc.json").read_text())
    lights = report["lights"]
    assert lights["method"] == "auto"
    # The night lies 5 h to 6.5 h after the start; the window holds it (and a margin), not the day.
    assert 4.0 * 3600 <= lights["lights_off_s"] <= 5.25 * 3600 and 6.4 * 3600 <= lights["lights_on_s"] <= 7.5 * 3600
    assert "day_time_recording" not in report["plausibility"] and report["n_epochs"] < 4 * 120
    table = __import__("pandas").read_csv(trimmed / f"{psg.stem}_epochs.csv")
    assert table["onset_s"].iloc[0] == lights["lights_off_s"]  # onsets still count from the EDF start


def test_main_synthetic_writes_the_sleep_edf_layout(tmp_path, capsys) -> None:
    from main_pipelines import main_synthetic

    argv = ["--layout", "sleep_edf", "--output_dir", str(tmp_path), "--nights_per_cohort", "1", "--hours", "0.25",
            "--day_wake_hours", "0.25", "0.5", "--seed", "3"]
    assert main_synthetic.main(argv) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["SC4001E0-PSG.edf", "SC4001EC-Hypnogram.edf"]
    assert read_edf_header(tmp_path / "SC4001E0-PSG.edf").duration_s == 3600
    assert main_synthetic.main([*argv, "--nights_per_cohort", "101"]) == 2
    assert "subjects 0-99" in capsys.readouterr().err

"""Scoring parsers: exact counts on the real fixtures, epoch-label semantics, and broken files."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from osf.datasets.io import (
    EpochGridError,
    MalformedScoringError,
    UnknownScoringFormatError,
    classify_event_name,
    read_scoring,
)

# Plain-text stage code -> our stage (Profusion / R&K: 4 merges into N3, 5 is REM, 9 unscored).
PROFUSION = {"0": 0, "1": 1, "2": 2, "3": 3, "4": 3, "5": 4, "9": -1}
PROFUSION_EVENTS = {
    "Hypopnea": "Hypopnea",
    "SpO2 desaturation": "Oxygen Desaturation",
    "Arousal ()": "Arousal",
    "Obstructive Apnea": "Apnea",
    "Central Apnea": "Apnea",
    "SpO2 artifact": "other",
}
SRO_STAGES = {
    "SRO:Wake": 0,
    "SRO:Stage1Sleep": 1,
    "SRO:Stage2Sleep": 2,
    "SRO:Stage3Sleep": 3,
    "SRO:RapidEyeMovement": 4,
}
SLEEP_EDF = {"W": 0, "1": 1, "2": 2, "3": 3, "4": 3, "R": 4, "?": -1}


def _annotations(shared_dir: Path) -> Path:
    return shared_dir / "fixtures" / "annotations"


# --- real fixtures: counts computed independently with regular expressions --------------------
@pytest.mark.parametrize("name", ["learn-nsrr01.xml", "learn-nsrr02.xml", "learn-nsrr03.xml"])
def test_profusion_fixture_counts(shared_dir, name):
    path = _annotations(shared_dir) / "nsrr_profusion" / name
    text = path.read_text()
    expected_stages = Counter(PROFUSION[c] for c in re.findall(r"<SleepStage>(\d+)</SleepStage>", text))
    scored = re.search(r"<ScoredEvents>(.*)</ScoredEvents>", text, re.DOTALL).group(
        1
    )  # not the settings palette
    expected_events = Counter(PROFUSION_EVENTS[n] for n in re.findall(r"<Name>([^<]*)</Name>", scored))
    s = read_scoring(path)
    assert s.format == "profusion"
    assert Counter(s.stages.tolist()) == expected_stages
    assert Counter(s.events["label"]) == expected_events
    assert not s.unknown_event_names and s.n_untimed_events == 0


def test_profusion_fixture_by_hand(shared_dir):
    # Checked by reading the file: 1364 epochs, 477 wake, N3 = 16 stage-3 + 1 stage-4 epochs,
    # 361 hypopneas and 37 obstructive apneas among the scored events.
    s = read_scoring(_annotations(shared_dir) / "nsrr_profusion" / "learn-nsrr01.xml")
    assert len(s.stages) == 1364 and (s.stages == 0).sum() == 477 and (s.stages == 3).sum() == 17
    assert (s.events["label"] == "Hypopnea").sum() == 361 and (
        s.events["name"] == "Obstructive Apnea"
    ).sum() == 37
    first = s.events.iloc[0]
    assert (first["name"], first["onset"], first["duration"]) == ("SpO2 artifact", 380.0, 4.0)


def _sro_events(text: str) -> list[tuple[str, str, str]]:
    blocks = re.findall(r"<ScoredEvent>(.*?)</ScoredEvent>", text, re.DOTALL)
    out = []
    for b in blocks:
        concept = re.search(r"<EventConcept>([^<]*)</EventConcept>", b).group(1)
        start = re.search(r"<Start>([^<]*)</Start>", b)
        duration = re.search(r"<Duration>([^<]*)</Duration>", b).group(1)
        out.append((concept, start.group(1) if start else "", duration))
    return out


def test_sro_fixture_with_timed_stages(shared_dir):
    path = _annotations(shared_dir) / "nsrr_psgannotation" / "100022_Compumedics_2014-10-14.xml"
    events = _sro_events(path.read_text())
    expected = Counter()
    for concept, _, duration in events:
        if concept in SRO_STAGES:
            expected[SRO_STAGES[concept]] += round(float(duration) / 30)
    s = read_scoring(path)
    assert s.format == "sro"
    assert Counter(s.stages.tolist()) == expected and len(s.stages) == 1037  # 1037 by hand: ends at 31110 s
    concepts = Counter(c for c, _, _ in events)
    assert (s.events["label"] == "Hypopnea").sum() == concepts["SRO:Hypopnea"] == 175
    assert (s.events["label"] == "Apnea").sum() == concepts["SRO:ObstructiveApnea"]
    assert (s.events["label"] == "Oxygen Desaturation").sum() == concepts["SRO:SpO2Desaturation"]
    assert (s.events["label"] == "Arousal").sum() == concepts["SRO:Arousal"]
    assert s.start_clock is not None and s.start_clock.hour == 22
    labels = s.epoch_labels(len(s.stages))
    onset = s.events[s.events["label"] == "Apnea"]["onset"].iloc[0]
    assert labels["apnea"][int(onset // 30)] == 1


def test_sro_fixture_without_starts(shared_dir):
    path = _annotations(shared_dir) / "nsrr_psgannotation" / "10007_01262010s1_out.xml"
    events = _sro_events(path.read_text())
    stage_seq = [SRO_STAGES[c] for c, _, _ in events if c in SRO_STAGES]
    s = read_scoring(path)
    # Stages follow each other in 30 s steps in file order.
    assert s.stages.tolist() == stage_seq and len(stage_seq) == 959
    untimed = sum(1 for c, start, _ in events if c not in SRO_STAGES and not start)
    assert s.n_untimed_events == untimed == 821  # every non-stage event lacks a start
    labels = s.epoch_labels(len(stage_seq))
    for column in ("apnea", "hypopnea", "arousal", "oxygen_desaturation"):
        assert (labels[column] == -1).all()  # unknown, not "no event"
    assert any("no <Start>" in w for w in s.warnings)


def test_sro_fixture_with_vendor_clock_starts(shared_dir):
    path = _annotations(shared_dir) / "nsrr_psgannotation" / "30669_11162010s2_Embla_12-51-05.xml"
    concepts = Counter(c for c, _, _ in _sro_events(path.read_text()))
    s = read_scoring(path)
    assert len(s.stages) == 0
    assert (
        (s.events["label"] == "Apnea").sum()
        == concepts["SRO:MixedApnea"] + concepts["SRO:CentralApnea"]
        == 65
    )
    assert (s.events["label"] == "Hypopnea").sum() == concepts["SRO:Hypopnea"]
    timed = s.events.dropna(subset=["onset"])
    assert timed["name"].tolist() == ["Recording Start Time"]  # clock stamps cannot be placed
    assert (s.epoch_labels(10)["hypopnea"] == -1).all()


@pytest.mark.parametrize("index", range(12))
def test_sleep_edf_hypnograms(shared_dir, index):
    path = sorted((_annotations(shared_dir) / "sleep_edf").glob("*.edf"))[index]
    tals = re.findall(rb"\+(\d+(?:\.\d*)?)\x15(\d+(?:\.\d*)?)\x14([^\x14]+)\x14", path.read_bytes())
    expected = Counter()
    for _, duration, text in tals:
        text = text.decode()
        code = -1 if text == "Movement time" else SLEEP_EDF[text.rsplit(" ", 1)[-1]]
        expected[code] += round(float(duration) / 30)
    s = read_scoring(path)
    assert s.format == "edfplus" and Counter(s.stages.tolist()) == expected
    assert len(s.events) == 0 and not s.scores_events
    labels = s.epoch_labels(100)
    assert (labels["arousal"] == -1).all() and labels["stage"].dtype == np.int8


def test_sleep_edf_by_hand(shared_dir):
    # SC4001EC: 24 h of annotations = 2880 epochs, the last 6900 s are "Sleep stage ?" (230 epochs),
    # the first 30630 s wake; starts at 16:13:00.
    s = read_scoring(_annotations(shared_dir) / "sleep_edf" / "SC4001EC-Hypnogram.edf")
    assert len(s.stages) == 2880 and (s.stages[-230:] == -1).all() and (s.stages[:1021] == 0).all()
    assert s.stages[1021] == 1 and str(s.start_clock) == "16:13:00"


# --- current NSRR XML dialect, written here --------------------------------------------------
def _nsrr_xml(events: list[tuple[str, str, str, str]], epoch_length: str = "30") -> str:
    body = "".join(
        f"<ScoredEvent><EventType>{t}</EventType><EventConcept>{c}</EventConcept>"
        f"<Start>{s}</Start><Duration>{d}</Duration></ScoredEvent>"
        for t, c, s, d in events
    )
    return (
        f"<?xml version='1.0' encoding='UTF-8'?><PSGAnnotation><SoftwareVersion>Compumedics</SoftwareVersion>"
        f"<EpochLength>{epoch_length}</EpochLength><ScoredEvents>{body}</ScoredEvents></PSGAnnotation>"
    )


STAGES = "Stages|Stages"
RESP = "Respiratory|Respiratory"
NIGHT = [
    ("", "Recording Start Time", "0", "300"),
    (STAGES, "Wake|0", "0", "60"),
    (STAGES, "Stage 1 sleep|1", "60", "30"),
    (STAGES, "Stage 2 sleep|2", "90", "60"),
    (STAGES, "Stage 4 sleep|4", "150", "30"),
    (STAGES, "REM sleep|5", "180", "30"),
    (STAGES, "Movement|6", "210", "30"),
    (STAGES, "Stage 3 sleep|3", "270", "30"),  # 240-270 left unscored
    (RESP, "Hypopnea|Hypopnea", "64.7", "18.3"),  # 64.7-83.0: epoch 2 only
    (RESP, "SpO2 desaturation|SpO2 desaturation", "81", "14"),  # 81-95: epochs 2 and 3
    (RESP, "Obstructive apnea|Obstructive Apnea", "130", "20"),  # ends on a boundary: epoch 4 only
    ("Arousals|Arousals", "Arousal|Arousal ()", "200", "0"),  # instant: epoch 6
    ("Limb Movement|Limb Movement", "Limb movement - left|Limb Movement (Left)", "10", "2"),
    ("Odd|Odd", "Foo sensor glitch|Foo", "5", "1"),
    ("Odd|Odd", "Foo sensor glitch|Foo", "15", "1"),
]


def test_nsrr_xml_epoch_labels(tmp_path):
    path = tmp_path / "night-nsrr.xml"
    path.write_text(_nsrr_xml(NIGHT))
    s = read_scoring(path)
    assert s.format == "nsrr_xml"
    assert s.stages.tolist() == [0, 0, 1, 2, 2, 3, 4, -1, -1, 3]
    labels = s.epoch_labels(12)
    assert labels["stage"].tolist() == [0, 0, 1, 2, 2, 3, 4, -1, -1, 3, -1, -1]
    assert labels["hypopnea"].tolist() == [0, 0, 1] + [0] * 9
    assert labels["oxygen_desaturation"].tolist() == [0, 0, 1, 1] + [0] * 8
    assert labels["apnea"].tolist() == [0, 0, 0, 0, 1] + [0] * 7
    assert labels["arousal"].tolist() == [0] * 6 + [1] + [0] * 5
    assert all(v.dtype == np.int8 for v in labels.values())
    assert s.epoch_labels(3)["stage"].tolist() == [0, 0, 1]  # cropped to the signal


def test_unknown_event_names_are_kept_as_other_and_counted(tmp_path):
    path = tmp_path / "night-nsrr.xml"
    path.write_text(_nsrr_xml(NIGHT))
    s = read_scoring(path)
    odd = s.events[s.events["name"] == "Foo sensor glitch|Foo"]
    assert len(odd) == 2 and set(odd["label"]) == {"other"}
    assert s.unknown_event_names == Counter({"Foo sensor glitch|Foo": 2})
    assert (s.events["label"] == "Limb Movement").sum() == 1
    assert "Recording Start Time" not in s.unknown_event_names  # known, just not an epoch label


def test_name_lookup_whole_then_parts():
    assert classify_event_name("Stage 4 sleep|4") == ("stage", 3)
    assert classify_event_name("Something new|Hypopnea") == ("event", "Hypopnea")
    assert classify_event_name("sleep STAGE  r") == ("stage", 4)  # case and whitespace insensitive
    assert classify_event_name("nothing we know") is None


@pytest.mark.parametrize(
    "bad, match",
    [
        ((STAGES, "Stage 2 sleep|2", "15", "30"), "off the 30 s epoch grid"),
        ((STAGES, "Stage 2 sleep|2", "330", "45"), "lasting 45 s is off"),
    ],
)
def test_stage_events_off_the_30s_grid(tmp_path, bad, match):
    path = tmp_path / "grid-nsrr.xml"
    path.write_text(_nsrr_xml(NIGHT + [bad]))
    with pytest.raises(EpochGridError, match=match) as err:
        read_scoring(path)
    assert str(path) in str(err.value)


def test_profusion_with_other_epoch_length(shared_dir, tmp_path):
    text = (_annotations(shared_dir) / "nsrr_profusion" / "learn-nsrr02.xml").read_text()
    path = tmp_path / "x-profusion.xml"
    path.write_text(text.replace("<EpochLength>30</EpochLength>", "<EpochLength>20</EpochLength>", 1))
    with pytest.raises(EpochGridError, match="20 s epochs"):
        read_scoring(path)


def test_conflicting_stages(tmp_path):
    path = tmp_path / "clash-nsrr.xml"
    path.write_text(_nsrr_xml(NIGHT + [(STAGES, "REM sleep|5", "60", "30")]))
    with pytest.raises(MalformedScoringError, match="epoch 2 .* scored twice"):
        read_scoring(path)


def test_malformed_xml(tmp_path):
    path = tmp_path / "broken-nsrr.xml"
    path.write_text(_nsrr_xml(NIGHT)[:-40])  # cut off mid-document
    with pytest.raises(MalformedScoringError, match="malformed XML") as err:
        read_scoring(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    "event, match",
    [
        ((RESP, "Hypopnea|Hypopnea", "abc", "10"), "<Start> is not a number: 'abc'"),
        ((RESP, "Hypopnea|Hypopnea", "10", ""), "has no <Duration>"),
        ((RESP, "", "10", "10"), "has no <EventConcept>"),
    ],
)
def test_malformed_event_fields(tmp_path, event, match):
    path = tmp_path / "fields-nsrr.xml"
    path.write_text(_nsrr_xml(NIGHT + [event]))
    with pytest.raises(MalformedScoringError, match=match):
        read_scoring(path)


def test_unknown_formats(tmp_path):
    xml = tmp_path / "other.xml"
    xml.write_text("<?xml version='1.0'?><Report><Item/></Report>")
    with pytest.raises(UnknownScoringFormatError, match="neither a <PSGAnnotation>"):
        read_scoring(xml)
    blob = tmp_path / "scores.json"
    blob.write_text("{}")
    with pytest.raises(UnknownScoringFormatError, match="unrecognised"):
        read_scoring(blob)


# --- CSV / TSV -------------------------------------------------------------------------------
def test_csv_and_tsv(tmp_path):
    rows = [
        ("0", "60", "Sleep stage W"),
        ("60", "30", "Sleep stage N2"),
        ("90", "30", "Sleep stage R"),
        ("70", "15", "Obstructive Hypopnea"),
        ("95", "5", "EEG arousal"),
        ("100", "", "Mystery"),
    ]
    for sep, suffix in ((",", ".csv"), ("\t", ".tsv")):
        path = tmp_path / f"events{suffix}"
        path.write_text(
            sep.join(["onset", "duration", "description"])
            + "\n"
            + "\n".join(sep.join(r) for r in rows)
            + "\n"
        )
        s = read_scoring(path)
        assert s.format == "csv" and s.stages.tolist() == [0, 0, 2, 4]
        labels = s.epoch_labels(4)
        assert labels["hypopnea"].tolist() == [0, 0, 1, 0] and labels["arousal"].tolist() == [0, 0, 0, 1]
        assert s.unknown_event_names == Counter({"Mystery": 1})


def test_csv_with_stages_and_markers_only_does_not_score_events(tmp_path):
    # Lights markers and unknown names are no evidence that arousals were scored: event columns stay -1.
    path = tmp_path / "stages.csv"
    path.write_text("onset,duration,description\n0,30,Lights Off\n0,60,Sleep stage W\n60,30,Sleep stage N2\n10,0,Mystery\n")
    s = read_scoring(path)
    assert len(s.events) == 2 and not s.scores_events
    labels = s.epoch_labels(3)
    assert labels["stage"].tolist() == [0, 0, 2] and (labels["arousal"] == -1).all()
    path.write_text("onset,duration,description\n0,60,Sleep stage W\n60,30,Sleep stage N2\n40,5,Arousal\n")
    assert read_scoring(path).epoch_labels(3)["arousal"].tolist() == [0, 1, 0]


def test_csv_errors(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("onset,duration,description\n0,30,Sleep stage W\n22:01:00,30,Sleep stage W\n")
    with pytest.raises(MalformedScoringError, match="line 3: onset '22:01:00'"):
        read_scoring(path)
    path.write_text("time,what\n0,W\n")
    with pytest.raises(MalformedScoringError, match="no 'onset' column"):
        read_scoring(path)


def test_csv_with_clock_time_onsets(tmp_path):
    import datetime as dt

    path = tmp_path / "BOGN00004.csv"  # STAGES style: clock times, across midnight
    path.write_text(
        "Start Time,Duration (seconds),Event\n23:59:00,0,LightsOff\n23:59:00,60,Wake\n"
        "00:00:00,30,Stage2\n00:00:30,30,REM\n00:00:10,12,Obstructive Apnea\n"
    )
    with pytest.raises(MalformedScoringError, match="a clock time: pass recording_start"):
        read_scoring(path)
    s = read_scoring(path, recording_start=dt.datetime(2020, 1, 1, 23, 59, 0))
    assert s.stages.tolist() == [0, 0, 2, 4] and not s.unknown_event_names
    assert s.events.loc[s.events["label"] == "Apnea", "onset"].tolist() == [70.0]

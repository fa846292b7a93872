"""Dataset registry, alias tables, channel resolution, channel maps and NSRR folder layouts."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

import config
from osf.datasets.io import (
    ChannelMapError,
    DuplicateLabelError,
    IngestionError,
    find_recordings,
    find_scoring,
    load_channel_map,
    parse_recording_name,
    resolve_channels,
)

REQUIRED = {
    "shhs",
    "chat",
    "mros",
    "ccshs",
    "cfs",
    "mesa",
    "sof",
    "wsc",
    "stages",
    "nchsdb",
    "sleep_edf",
    "generic",
}


def test_registry_lists_every_dataset():
    assert REQUIRED <= set(config.DATASETS)
    with pytest.raises(ValueError, match="unknown dataset 'nope'.*shhs"):
        config.get_dataset("nope")


def test_alias_tables_are_unambiguous():
    owner: dict[str, set[str]] = defaultdict(set)
    for canonical, labels in config.CHANNEL_ALIASES.items():
        assert canonical in config.CHANNEL_INDEX
        for lab in labels:
            owner[config.normalize_label(lab)].add(canonical)
    for electrode, labels in config.ELECTRODE_ALIASES.items():
        for lab in labels:
            owner[config.normalize_label(lab)].add("electrode:" + electrode)
    clashes = {lab: sorted(o) for lab, o in owner.items() if len(o) > 1}
    assert not clashes, f"labels with two meanings: {clashes}"
    for canonical, pairs in config.DERIVATIONS.items():
        assert canonical in config.CHANNEL_INDEX
        assert all(a in config.ELECTRODE_ALIASES and b in config.ELECTRODE_ALIASES for a, b in pairs)
    for spec in config.DATASETS.values():
        assert set(spec.aliases) <= set(config.CHANNELS), spec.name
        seen: dict[str, str] = {}
        for canonical, labels in spec.aliases.items():
            for lab in labels:
                assert seen.setdefault(config.normalize_label(lab), canonical) == canonical, (spec.name, lab)


def test_event_tables_are_unambiguous():
    meaning: dict[str, set] = defaultdict(set)
    for code, names in config.STAGE_EVENT_NAMES.items():
        for n in names:
            meaning[config.normalize_label(n)].add(("stage", code))
    for label, names in config.EVENT_NAMES.items():
        assert label in config.EVENT_LABELS or label in ("Limb Movement", "other")
        for n in names:
            meaning[config.normalize_label(n)].add(("event", label))
    clashes = {n: m for n, m in meaning.items() if len(m) > 1}
    assert not clashes, clashes


@pytest.mark.parametrize(
    "dataset, stem, expected",
    [
        ("shhs", "shhs1-200001", ("200001", 1)),
        ("shhs", "shhs2-205804", ("205804", 2)),
        ("chat", "chat-followup-300004", ("300004", 2)),
        ("chat", "chat-baseline-nonrandomized-300013", ("300013", 1)),
        ("mros", "mros-visit2-aa0001", ("aa0001", 2)),
        ("ccshs", "ccshs-trec-1800001", ("1800001", 1)),
        ("cfs", "cfs-visit5-800002", ("800002", 5)),
        ("mesa", "mesa-sleep-0001", ("0001", 1)),
        ("sof", "sof-visit-8-00021", ("00021", 8)),
        ("wsc", "wsc-visit3-10119", ("10119", 3)),
        ("stages", "BOGN00004", ("BOGN00004", 1)),
        ("nchsdb", "10000_17728", ("10000", 17728)),
        ("sleep_edf", "SC4012E0-PSG", ("SC401", 2)),
        ("generic", "night one", ("night one", 1)),
    ],
)
def test_recording_names(dataset, stem, expected):
    recording_id, subject, visit = parse_recording_name(f"/data/{stem}.edf", dataset)
    assert (recording_id, subject, visit) == (stem, *expected)


def test_foreign_file_name_is_an_error():
    with pytest.raises(IngestionError, match="does not follow the shhs pattern"):
        parse_recording_name("/data/mesa-sleep-0001.edf", "shhs")


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_nsrr_layout_prefers_nsrr_xml_then_profusion(tmp_path):
    psg = tmp_path / "polysomnography"
    for sid in ("200001", "200002", "200003"):
        _touch(psg / "edfs" / "shhs1" / f"shhs1-{sid}.edf")
    nsrr = _touch(psg / "annotations-events-nsrr" / "shhs1" / "shhs1-200001-nsrr.xml")
    _touch(psg / "annotations-events-profusion" / "shhs1" / "shhs1-200001-profusion.xml")
    prof = _touch(psg / "annotations-events-profusion" / "shhs1" / "shhs1-200002-profusion.xml")
    _touch(psg / "edfs" / "shhs1" / "shhs1-200004.EDF")  # upper-case suffix: still an EDF
    _touch(psg / "edfs" / "shhs1" / "shhs1-200005-nsrr.xml")  # not an EDF
    recs = find_recordings("shhs", tmp_path)
    assert [r.recording_id for r in recs] == ["shhs1-200001", "shhs1-200002", "shhs1-200003", "shhs1-200004"]
    assert [r.scoring_path for r in recs] == [nsrr, prof, None, None]
    assert {(r.subject_id, r.visit) for r in recs} == {(s, 1) for s in ("200001", "200002", "200003", "200004")}
    with pytest.raises(IngestionError, match="layout expects EDFs under polysomnography/edfs"):
        find_recordings("mesa", tmp_path / "elsewhere")


def test_sleep_edf_layout_matches_hypnogram_by_prefix(tmp_path):
    edf = _touch(tmp_path / "sleep-cassette" / "SC4001E0-PSG.edf")
    hyp = _touch(tmp_path / "sleep-cassette" / "SC4001EC-Hypnogram.edf")
    _touch(tmp_path / "sleep-cassette" / "SC4002E0-PSG.edf")
    recs = find_recordings("sleep_edf", tmp_path)
    assert [(r.edf_path, r.scoring_path, r.visit) for r in recs] == [
        (edf, hyp, 1),
        (tmp_path / "sleep-cassette" / "SC4002E0-PSG.edf", None, 2),
    ]
    assert find_scoring(edf, "sleep_edf", tmp_path) == hyp


# --- channel resolution -----------------------------------------------------------------------
def test_derivations_from_single_ended_electrodes():
    labels = ["C3", "C4", "M1", "M2", "E1", "E2", "Chin1", "Chin2", "LAT1", "LAT2", "ECG L", "ECG R", "SpO2"]
    res = resolve_channels(labels, "generic")
    assert res.as_dict()["EEG_C3_A2"] == ["C3", "M2"] and res.as_dict()["EEG_C4_A1"] == ["C4", "M1"]
    assert res.as_dict()["EOG_E1_A2"] == ["E1", "M2"] and res.as_dict()["EOG_E2_A1"] == ["E2", "M1"]
    assert res.as_dict()["EMG_Chin"] == ["Chin2", "Chin1"]  # left chin against centre when no right chin
    assert res.as_dict()["EMG_LLeg"] == ["LAT1", "LAT2"] and res.sources["EMG_RLeg"].kind == "absent"
    assert res.as_dict()["ECG"] == ["ECG L", "ECG R"]
    assert res.unused_labels == ("SpO2",)
    assert "M2" in res.needed_labels and len(res.needed_labels) == len(set(res.needed_labels))


def test_referenced_labels_win_over_derivation_and_fallback():
    res = resolve_channels(["C3", "M2", "C3-M2", "EOG(L)"], "generic")
    assert res.sources["EEG_C3_A2"].labels == ("C3-M2",) and res.sources["EEG_C3_A2"].rule == "alias"
    # EOG(L) without a mastoid to subtract: it was referenced at acquisition.
    assert res.sources["EOG_E1_A2"].rule == "derivation"  # M2 is here, so E1 - M2
    assert resolve_channels(["EOG(L)"], "generic").sources["EOG_E1_A2"].rule == "unreferenced"


def test_dataset_specific_aliases():
    assert resolve_channels(["EEG", "EEG(sec)"], "shhs").as_dict()["EEG_C4_A1"] == "EEG"
    assert resolve_channels(["EEG", "EEG(sec)"], "generic").missing[-2:] == ["EEG_C3_A2", "EEG_C4_A1"]
    assert resolve_channels(["EEG3"], "mesa").as_dict()["EEG_C4_A1"] == "EEG3"


def test_case_insensitive_and_duplicated_labels():
    assert resolve_channels(["chin1-CHIN2 "], "generic").as_dict()["EMG_Chin"] == "chin1-CHIN2 "
    with pytest.raises(DuplicateLabelError, match="'C3-M2' matches 2 signals"):
        resolve_channels(["C3-M2", "c3-m2", "ECG"], "generic", path="night.edf")
    assert resolve_channels(["SpO2", "SpO2", "ECG"], "generic").as_dict()["ECG"] == "ECG"  # unused duplicate


def test_channel_map_overrides_registry():
    labels = ["C3-A1", "LChin", "RChin", "C4-M1", "Thor"]
    res = resolve_channels(labels, "generic", {"EEG_C3_A2": "C3-A1", "EMG_Chin": ["LChin", "RChin"]})
    assert res.as_dict()["EEG_C3_A2"] == "C3-A1" and res.as_dict()["EMG_Chin"] == ["LChin", "RChin"]
    assert res.sources["EEG_C4_A1"].kind == "absent"  # left out of the map: absent even though present
    assert res.present == ["EMG_Chin", "EEG_C3_A2"]


def test_channel_map_errors(tmp_path):
    with pytest.raises(ChannelMapError, match="unknown canonical channel.*'EEG_C3'"):
        load_channel_map({"EEG_C3": "C3"})
    with pytest.raises(ChannelMapError, match=r"names \['ECG'\] more than once"):
        load_channel_map('{"ECG": "EKG", "ECG": "ECG"}')
    path = tmp_path / "map.json"
    path.write_text('{"ECG": "EKG", "ABD": "EKG"}')
    with pytest.raises(ChannelMapError, match="same source") as err:
        load_channel_map(path)
    assert str(path) in str(err.value)
    with pytest.raises(ChannelMapError, match="pair of two different labels"):
        load_channel_map({"EMG_Chin": ["LChin", "LChin"]})
    with pytest.raises(ChannelMapError, match="not valid JSON"):
        load_channel_map("{not json")
    with pytest.raises(ChannelMapError, match="'C3-M2', which is not in the file"):
        resolve_channels(["C4-M1"], "generic", {"EEG_C3_A2": "C3-M2"}, path="night.edf")
    # A shared reference electrode in two pairs is fine.
    assert load_channel_map(json.dumps({"EEG_C3_A2": ["C3", "M2"], "EOG_E1_A2": ["E1", "M2"]}))


def test_synthetic_cohort_presets_resolve_to_intended_channels():
    cohorts = pytest.importorskip("osf.datasets.synthetic.cohorts")
    for name, preset in cohorts.COHORT_PRESETS.items():
        dataset = name if name in config.DATASETS else "generic"
        by_quantity = {c.measures: c.label for c in preset.channels}
        expected = {}
        for canonical in config.CHANNELS:
            pair = cohorts.UNIPOLAR_PAIRS.get(canonical)
            if canonical in by_quantity:
                expected[canonical] = by_quantity[canonical]
            elif pair and pair[0] in by_quantity and pair[1] in by_quantity:
                expected[canonical] = [by_quantity[pair[0]], by_quantity[pair[1]]]
            elif pair and pair[0] in by_quantity and canonical in config.UNREFERENCED_FALLBACK:
                expected[canonical] = by_quantity[pair[0]]  # single-ended eye/scalp lead, no mastoid
            else:
                expected[canonical] = None
        assert resolve_channels(list(preset.labels), dataset).as_dict() == expected, name

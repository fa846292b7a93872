"""The evaluation protocol of a run (issue 26) on a small two-cohort store, and its comparison over seeds."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from osf.backbone.vit1d_cls import create_backbone
from osf.downstream.metrics import load_predictions
from osf.evaluation.protocol import ProtocolConfig, compare_runs, format_comparison, mean_test, run_protocol

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def two_cohort_store(tmp_path_factory):
    from osf.testing import make_random_store

    return make_random_store(tmp_path_factory.mktemp("proto") / "store", n_subjects=6, n_epochs=24, seed=0,
                             datasets=("shhs", "mros"), split_fractions=(0.5, 0.25, 0.25))


def _backbone(seed):
    torch.manual_seed(seed)
    return create_backbone("vit_pico")


CFG = ProtocolConfig(tasks=("Stage", "Arousal"), poolings=("cls", "groups"), penalties=(0.01, 1.0),
                     label_fractions=(0.5, 1.0), k_shots=(2, 10_000), presets=("no_eeg",), batch_size=64,
                     ceiling_steps=3)


@pytest.fixture(scope="module")
def two_runs(two_cohort_store, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    first, second = _backbone(100), _backbone(0)
    runs = []
    # two "seeds" whose backbones swap roles: they disagree, and the second run reads the first's feature cache
    for seed, backbones in ((0, {"pretrained": first, "random": second}), (1, {"pretrained": second, "random": first})):
        out = root / f"seed{seed}"
        run_protocol(two_cohort_store, backbones, out, CFG, log=lambda _: None, meta={"seed": seed},
                     cache_dir=root / "cache", ceiling_dir=root / "ceilings")
        runs.append(out)
    return runs


def test_every_model_task_and_setting_is_scored_on_shared_test_epochs(two_runs):
    rec = json.loads((two_runs[0] / "protocol.json").read_text())
    assert rec["models"] == ["pretrained", "random", "power48", "yasa_style"]
    stage = rec["tasks"]["Stage"]
    assert set(stage["settings"]) == {"labels_50pct", "labels_100pct", "kshot_2", "missing_no_eeg", "masked_no_eeg",
                                      "cohort_mros_to_shhs"}
    assert "kshot_10000" in stage["skipped"] and "only" in stage["skipped"]["kshot_10000"]
    full = stage["settings"]["labels_100pct"]["models"]
    given = {m: [g for g in full[m]["grid"] if g["extension"] == 0] for m in ("pretrained", "power48")}
    assert full["pretrained"]["view"] in ("cls", "groups") and len(given["pretrained"]) == 4
    assert full["power48"]["view"] == "power48" and len(given["power48"]) == 2
    # a grid of two penalties: the chosen one is at an edge, so the grid grew past it; features in memory: sklearn
    assert full["pretrained"]["extended_C"][0] in (1e-3, 10.0) and full["pretrained"]["head"] == "sklearn"
    assert stage["settings"]["kshot_2"]["n_train"] == 2 * 4
    # EEG removed: no YASA-style row; the head trained on every channel is reused for the missing-channel test
    missing = stage["settings"]["missing_no_eeg"]["models"]
    assert "yasa_style" not in missing and missing["pretrained"]["reused_head"]
    assert missing["pretrained"]["C"] == full["pretrained"]["C"]
    a, b = (load_predictions(two_runs[0] / full[m]["predictions"]) for m in ("pretrained", "random"))
    np.testing.assert_array_equal(a["recording_ids"], b["recording_ids"])
    assert {r.split("-")[0] for r in a["recording_ids"].astype(str)} == {"shhs", "mros"}
    cohort = load_predictions(two_runs[0] / stage["settings"]["cohort_mros_to_shhs"]["models"]["random"]["predictions"])
    assert all(r.startswith("shhs-") for r in cohort["recording_ids"].astype(str))
    arousal = rec["tasks"]["Arousal"]["settings"]["labels_100pct"]["models"]["random"]
    assert 0.0 <= arousal["threshold"] <= 1.0 and rec["tasks"]["Arousal"]["metric"] == "auroc"


def test_runs_compare_seed_by_seed_with_a_hierarchical_verdict(two_runs):
    comparison = compare_runs(two_runs, "pretrained", "random", n_boot=50)
    stage = comparison["Stage"]["labels_100pct"]
    assert stage.n_seeds == 2 and [r.label for r in stage.per_seed] == ["0", "1"]
    assert stage.diff == pytest.approx(np.mean([r.diff for r in stage.per_seed]))
    assert stage.low <= stage.diff <= stage.high
    assert stage.per_seed[0].diff == pytest.approx(-stage.per_seed[1].diff) and stage.diff == pytest.approx(0, abs=1e-9)
    text = format_comparison(comparison, "pretrained", "random")
    assert "labels_100pct" in text and "seed(s)" in text
    means = mean_test(two_runs)
    assert set(means["Stage"]["labels_100pct"]) == {"pretrained", "random", "power48", "yasa_style", "supervised"}
    # the baselines are the same features in both runs (same store): the same test score each time
    assert compare_runs(two_runs, "power48", "power48", n_boot=20)["Stage"]["labels_100pct"].diff == 0


def test_the_supervised_ceiling_joins_the_all_labels_setting_once_per_store(two_runs):
    """The CNN ceiling (issue 26's baselines) sits beside the all-labels probes, scored on their test epochs, trained
    once for the store and read by every run of it."""
    recs = [json.loads((run / "protocol.json").read_text()) for run in two_runs]
    rows = [rec["tasks"]["Stage"]["settings"]["labels_100pct"]["models"] for rec in recs]
    assert rows[0]["supervised"]["predictions"] == rows[1]["supervised"]["predictions"]  # one ceiling, both runs
    assert all("supervised" not in s["models"] for s in recs[0]["tasks"]["Stage"]["settings"].values()
               if s is not recs[0]["tasks"]["Stage"]["settings"]["labels_100pct"])
    ceiling = load_predictions(rows[0]["supervised"]["predictions"])
    probe = load_predictions(two_runs[0] / rows[0]["pretrained"]["predictions"])
    assert set(zip(ceiling["recording_ids"], ceiling["epoch_index"])) >= set(zip(probe["recording_ids"],
                                                                                  probe["epoch_index"]))
    assert -1.0 <= rows[0]["supervised"]["test"] <= 1.0 and rows[0]["supervised"]["steps"] == CFG.ceiling_steps
    comparison = compare_runs(two_runs, "pretrained", "supervised", n_boot=20)
    assert set(comparison["Stage"]) == {"labels_100pct"} and comparison["Stage"]["labels_100pct"].n_seeds == 2

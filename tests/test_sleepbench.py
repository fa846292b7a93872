"""SleepBench-mini end to end on a tiny setting: results.csv, report, resume, failures (osf/sleepbench)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from main_pipelines import main_sleepbench
from osf.sleepbench import SleepBenchConfig
from osf.sleepbench.config import POOLING_CHOICES, RANDOM

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> tuple[Path, SleepBenchConfig, int]:
    out = tmp_path_factory.mktemp("sleepbench")
    status = main_sleepbench.main(["--output_dir", str(out), "--tiny", "--no_progress"])
    return out, SleepBenchConfig.tiny(output_dir=out), status


def _table(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "results.csv")


def test_every_cell_has_a_row_with_its_ci(bench):
    out, cfg, status = bench
    assert status == 0 and not (out / "failures.log").exists()
    t = _table(out)
    grid = t[(t["setting"] == "linear_probe") & (t["kind"] != "scaling")]
    want = {(m, p, task) for m in (*cfg.methods, RANDOM) for p in cfg.presets for task in cfg.tasks}
    assert set(zip(grid["method"], grid["preset"], grid["task"])) == want
    assert (grid["ci_low"] <= grid["value"] + 1e-9).all() and (grid["value"] <= grid["ci_high"] + 1e-9).all()
    assert set(t.loc[t["kind"] == "ceiling", "method"]) == set(cfg.ceilings)
    kshot = t[t["setting"].str.endswith("shot")]
    assert len(kshot) == (len(cfg.methods) + 1) * len(cfg.kshots)
    scaling = t[t["kind"] == "scaling"]
    assert set(scaling["backbone"]) == {*cfg.scaling_sizes} and (scaling["pretrain_samples"] > 0).all()
    # every backbone chose its features among the same poolings, each probed on validation staging
    assert set(t["pooling"].dropna()) <= set(POOLING_CHOICES)
    for backbone in (*cfg.methods, RANDOM):
        for pooling in POOLING_CHOICES:
            assert (out / "seed0" / "pooling" / backbone / pooling / "probe.json").is_file(), (backbone, pooling)
    assert "power48" in cfg.ceilings  # the power summary is a row of every table


def test_paired_differences_match_the_point_estimates(bench):
    out, _cfg, _ = bench
    t = _table(out)
    grid = t[(t["setting"] == "linear_probe") & (t["kind"] == "pretrained")]
    random = t[(t["method"] == RANDOM) & (t["setting"] == "linear_probe")].set_index(["preset", "task"])["value"]
    for row in grid.itertuples():
        assert row.vs_random == pytest.approx(row.value - random[(row.preset, row.task)], abs=1e-6)
        assert row.vs_random_low <= row.vs_random + 1e-9 <= row.vs_random_high + 2e-9
    full = t[(t["preset"] == "full") & (t["setting"] == "linear_probe") & (t["kind"] != "scaling")]
    full = full.set_index(["method", "task"])["value"]
    missing = t[(t["preset"] != "full") & (t["setting"] == "linear_probe")]
    assert len(missing) > 0
    for row in missing.itertuples():
        assert row.vs_full == pytest.approx(row.value - full[(row.method, row.task)], abs=1e-6)


def test_report_has_the_three_views_and_the_findings(bench):
    out, cfg, _ = bench
    report = out / "report"
    for name in ("main_table.md", "missing_channels.md", "degradation.png", "scaling.png", "kshot.png"):
        assert (report / name).stat().st_size > 0, name
    text = (report / "report.md").read_text()
    for method in (*cfg.methods, RANDOM, *cfg.ceilings):
        assert f"| {method} |" in text
    assert "## Pre-training (equal compute)" in text and "| 0 | dino_ours |" in text
    for finding in ("(0) Full-montage staging vs random init", "(1) Staging without channels",
                    "(2) OSF vs the other objectives", "(3) Scaling"):
        assert finding in text


def test_features_are_computed_once_for_the_pooling_choice_and_the_ceilings(bench):
    out, cfg, _ = bench
    splits = ("train", "val", "test")
    for backbone in (*cfg.methods, RANDOM):  # the CLS probe's backbone pass cached the mean features too
        cls, mean = (json.loads((out / "seed0" / "pooling" / backbone / p / "probe.json").read_text())["timings"]
                     for p in ("cls", "mean"))
        assert not any(cls[f"features_{s}_cache_hit"] for s in splits), backbone
        assert all(mean[f"features_{s}_cache_hit"] for s in splits), backbone
    # one file of full-montage handcrafted features serves every preset and task
    assert len(list((out / "feature_cache").glob("handcrafted_*.npz"))) == 1


def test_rerun_skips_everything_and_a_failed_cell_loses_nothing(bench, monkeypatch, capsys):
    out, _cfg, _ = bench
    before = _table(out)
    assert main_sleepbench.main(["--output_dir", str(out), "--tiny", "--no_progress"]) == 0
    assert "0 steps ran" in capsys.readouterr().out
    # one ceiling cell redone, and it breaks: recorded, the others stay, results.csv keeps every other row
    cell = out / "seed0" / "ceilings" / "handcrafted" / "full" / "stage"
    shutil.rmtree(cell)
    (out / ".stages" / "ceiling_handcrafted_full_stage_s0.json").unlink()

    def broken(_flags):
        raise ValueError("store is broken")

    monkeypatch.setattr("osf.entry_calls.ceiling", broken)  # entry_calls.call looks it up when called
    assert main_sleepbench.main(["--output_dir", str(out), "--tiny", "--no_progress"]) == 1
    assert "ceiling_handcrafted_full_stage_s0: sleepbench step" in (out / "failures.log").read_text()
    after = _table(out)
    assert len(after) == len(before) - 1
    assert np.allclose(after.loc[after["kind"] == "pretrained", "value"],
                       before.loc[before["kind"] == "pretrained", "value"])


def test_bad_flags_are_refused_in_one_line(tmp_path, capsys):
    assert main_sleepbench.main(["--output_dir", str(tmp_path), "--methods", "dino_ours,byol"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("main_sleepbench.py: error: methods: unknown or empty ['byol']") and "\n" not in err
    assert main_sleepbench.main(["--output_dir", str(tmp_path), "--presets", "no_eeg"]) == 2
    assert "presets must include 'full'" in capsys.readouterr().err
    assert main_sleepbench.main(["--output_dir", str(tmp_path), "--tiny", "--rerun", "pretrain_byol*"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("main_sleepbench.py: error: --rerun ['pretrain_byol*'] match(es) no sleepbench step")
    assert "\n" not in err and not (tmp_path / "config.json").exists()

"""Benchmark table and figures from results.csv rows."""

from __future__ import annotations

import pandas as pd
import pytest

from osf.downstream.report import aggregate, load_results, make_benchmark_report, markdown_table
from osf.downstream.results import append_results_row


def _row(method, task, auroc, seed=0, preset="full", ts="20260101T000000Z", size="vit_nano", samples=None):
    return {"run_id": f"{method}-{task}-{preset}-{seed}-{ts}", "timestamp": ts, "method": method, "ckpt_hash": method,
            "encoder_name": size, "dataset": "synth", "task": task, "setting": "linear_probe", "eval_channels": preset,
            "train_channels": "full", "pooling": "cls", "k_shot": None, "train_data_pct": 1.0,
            "pretrain_samples": samples, "seed": seed, "test_auroc": auroc, "test_auroc_ci_low": auroc - 0.05,
            "test_auroc_ci_high": auroc + 0.05}


@pytest.fixture()
def results(tmp_path):
    csv = tmp_path / "results.csv"
    rows = [
        _row("dino", "Stage", 0.10),  # superseded by the re-run below
        _row("dino", "Stage", 0.90, ts="20260102T000000Z"),
        _row("dino", "Arousal", 0.70),
        _row("mae", "Stage", 0.80, seed=0),
        _row("mae", "Stage", 0.84, seed=1),
        _row("dino", "Stage", 0.60, preset="ecg_only"),
    ]
    for r in rows:
        append_results_row(csv, r)
    return csv


def test_latest_run_wins_and_seeds_are_averaged(results):
    table = load_results([results])
    assert len(table) == 5
    agg = aggregate(table, "test_auroc")
    dino_stage = agg[(agg.method == "dino") & (agg.task == "Stage") & (agg.eval_channels == "full")].iloc[0]
    assert dino_stage["mean"] == pytest.approx(0.90) and dino_stage["ci_low"] == pytest.approx(0.85)
    mae = agg[agg.method == "mae"].iloc[0]
    assert mae["mean"] == pytest.approx(0.82) and mae["count"] == 2
    md = markdown_table(agg[agg.eval_channels == "full"])
    assert "| dino | 0.700 [0.650, 0.750] | 0.900 [0.850, 0.950] |" in md
    assert "0.820 ± 0.028" in md and "| mae | – |" in md


def test_report_writes_table_and_figures(results, tmp_path):
    for r in (_row("dino", "Stage", 0.7, samples=1000, size="vit_nano"), _row("dino", "Stage", 0.8, samples=10000)):
        r["ckpt_hash"] = f"pre{r['pretrain_samples']}"
        append_results_row(results, r)
    out = make_benchmark_report([results], tmp_path / "report", metric="test_auroc")
    text = out["table"].read_text()
    assert "## Missing channels" in text and "ecg_only" in text
    for kind in ("by_method", "vs_channels", "scaling"):
        assert out[kind].stat().st_size > 1000 and out[kind].read_bytes()[:4] == b"\x89PNG"


def test_unknown_metric_and_setting_are_reported(results, tmp_path):
    with pytest.raises(ValueError, match="metric 'test_kapa' is not a results column"):
        make_benchmark_report([results], tmp_path, metric="test_kapa")
    with pytest.raises(ValueError, match="no results with setting 'finetune'"):
        make_benchmark_report([results], tmp_path, setting="finetune")
    assert make_benchmark_report([results], tmp_path / "r")["scaling"] is None  # no pretrain_samples: no figure
    assert isinstance(pd.read_csv(results), pd.DataFrame)


def test_k_shot_row_shows_its_own_seed_spread(tmp_path):
    csv = tmp_path / "results.csv"
    row = _row("dino", "Stage", 0.7)
    row.update(setting="linear_probe_5shot", k_shot=5, n_seeds=3, test_auroc_std=0.05)
    append_results_row(csv, row)
    agg = aggregate(load_results([csv]), "test_auroc")
    assert agg.iloc[0]["count"] == 3 and agg.iloc[0]["std"] == pytest.approx(0.05)
    assert "0.700 ± 0.050" in markdown_table(agg, cols=("task", "setting"))

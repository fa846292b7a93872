"""Results records: JSON per run, append-only results.csv, flattening of metrics."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from osf.downstream.results import (
    RUN_JSON_KEYS,
    append_results_row,
    flatten_metrics,
    read_results,
    write_run_json,
)


def test_append_keeps_earlier_rows_and_adds_new_columns(tmp_path):
    csv = tmp_path / "results.csv"
    append_results_row(csv, {"run_id": "a", "method": "dino", "test_kappa": 0.5})
    append_results_row(csv, {"run_id": "b", "method": "mae", "test_kappa": 0.6, "test_auroc": 0.9})
    table = read_results(csv)
    assert table["run_id"].tolist() == ["a", "b"]
    assert table.columns[0] == "run_id"
    assert math.isnan(table.loc[0, "test_auroc"]) and table.loc[1, "test_auroc"] == 0.9
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv", "results.csv.lock"]  # no temp files left


def test_unreadable_results_table_is_reported_not_overwritten(tmp_path):
    csv = tmp_path / "results.csv"
    csv.write_bytes(b'a,b\n1,"unterminated\n')
    before = csv.read_bytes()
    with pytest.raises(ValueError, match="results.csv: cannot append"):
        append_results_row(csv, {"run_id": "x"})
    assert csv.read_bytes() == before


def test_flatten_metrics_spreads_cis_and_per_class():
    flat = flatten_metrics({
        "test": {"kappa": 0.7, "kappa_ci95": [0.6, 0.8], "per_class_f1": {"W": 0.9}, "confusion_matrix": [[1]],
                 "auroc": float("nan")},
        "val": {"kappa": {"mean": 0.5, "std": 0.1, "n": 3}},
    })
    assert flat == {"test_kappa": 0.7, "test_kappa_ci_low": 0.6, "test_kappa_ci_high": 0.8, "test_f1_W": 0.9,
                    "test_auroc": None, "val_kappa": 0.5, "val_kappa_std": 0.1}


def test_run_json_requires_every_field_and_writes_valid_json(tmp_path):
    record = {k: None for k in RUN_JSON_KEYS}
    record["metrics"] = {"test": {"auroc": float("nan")}}
    path = write_run_json(record, tmp_path / "run.json")
    assert json.loads(path.read_text())["metrics"]["test"]["auroc"] is None  # NaN is not valid JSON
    del record["timings"]
    with pytest.raises(ValueError, match=r"lacks keys \['timings'\]"):
        write_run_json(record, tmp_path / "bad.json")


def test_read_results_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_results(tmp_path / "nope.csv")
    pd.DataFrame({"run_id": []}).to_csv(tmp_path / "empty.csv", index=False)
    with pytest.raises(ValueError, match="has no rows"):
        read_results(tmp_path / "empty.csv")


def test_run_json_holds_numpy_scalars_sets_and_paths(tmp_path):
    """What data summaries and configs carry (np.bool_, np.float32, sets, paths) is written, not a crash."""
    from pathlib import Path

    import numpy as np

    record = {k: None for k in RUN_JSON_KEYS}
    record["config"] = {"has_val": np.bool_(True), "lr": np.float32(0.5), "n": np.int64(3), "datasets": {"shhs"},
                        "store": Path("/data/store"), "bad": np.float64("nan")}
    path = write_run_json(record, tmp_path / "run.json")
    assert json.loads(path.read_text())["config"] == {"has_val": True, "lr": 0.5, "n": 3, "datasets": ["shhs"],
                                                      "store": "/data/store", "bad": None}

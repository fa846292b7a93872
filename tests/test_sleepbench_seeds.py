"""SleepBench-mini with seeds as the unit (issue 26): findings and tables decided over seeds, on fake runs."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from osf.downstream.metrics import load_predictions, multiclass_scalars, paired_difference, save_predictions
from osf.sleepbench.config import RANDOM, SleepBenchConfig
from osf.sleepbench.findings import (
    finding_beats_random,
    finding_degradation,
    finding_osf_invariance,
    finding_scaling,
)
from osf.sleepbench.report import main_table, missing_channel_table
from osf.sleepbench.results import COLUMNS, BenchRow, add_differences, verdict
from osf.sleepbench.seedlevel import column_comparison

N_BOOT = 60
RANDOM_STRENGTH = 1.0  # logit boost of the true stage: random init reads stages a little


def _cfg(tmp_path: Path) -> SleepBenchConfig:
    return SleepBenchConfig.tiny(output_dir=tmp_path, tasks=("Stage",), n_boot=N_BOOT,
                                 scaling_sizes=("vit_pico", "vit_nano"), scaling_fractions=(0.5, 1.0))


def _predictions(rng: np.random.Generator, labels: np.ndarray, strength: float) -> dict[str, np.ndarray]:
    """Staging predictions whose true stage gets ``strength`` extra logit (higher: better kappa)."""
    subjects = np.repeat([f"sub{i:02d}" for i in range(labels.size // 40)], 40)
    logits = rng.normal(size=(labels.size, 5))
    logits[np.arange(labels.size), labels] += strength
    return {"labels": labels, "proba": np.exp(logits) / np.exp(logits).sum(1, keepdims=True), "subject_ids": subjects,
            "recording_ids": subjects, "epoch_index": np.tile(np.arange(40), labels.size // 40)}


def _row(folder: Path, pred: dict, seed: int, method: str, kind: str, preset: str, **extra) -> BenchRow:
    path = save_predictions(pred, folder / f"{seed}_{method}_{preset}_{extra.get('backbone', '')}"
                                          f"{extra.get('train_fraction', '')}.npz")
    value = multiclass_scalars(pred["labels"], pred["proba"])["kappa"]
    base = {"setting": "linear_probe", "backbone": "vit_nano", "pooling": "cls", "train_fraction": 1.0,
            "pretrain_samples": np.nan, **extra}
    return BenchRow(seed, method, kind, preset, "Stage", metric="kappa", value=value, ci_low=value - 0.05,
                    ci_high=value + 0.05, value_std=np.nan, n_test_subjects=20, n_test_positive=np.nan,
                    predictions=str(path), **base)


def _seed_rows(folder: Path, seed: int, osf_strength: float) -> list[BenchRow]:
    """One training seed: OSF at ``osf_strength``, MAE a little better than random, random init; full and a
    missing-channel preset (everything weaker there); OSF's scaling runs (more data and a bigger backbone help)."""
    rng = np.random.default_rng(100 + seed)
    labels = rng.integers(0, 5, 20 * 40)
    strengths = {"dino_ours": osf_strength, "mae": RANDOM_STRENGTH + 0.6, RANDOM: RANDOM_STRENGTH}
    rows = [_row(folder, _predictions(rng, labels, s * scale), seed, m, "random" if m == RANDOM else "pretrained", p)
            for m, s in strengths.items() for p, scale in (("full", 1.0), ("cardio_respiratory", 0.3))]
    rows += [_row(folder, _predictions(rng, labels, s), seed, "dino_ours", "scaling", "full", backbone=size,
                  train_fraction=fraction)
             for size, fraction, s in (("vit_pico", 0.5, 0.8), ("vit_pico", 1.0, 1.5), ("vit_nano", 1.0, 2.5))]
    return rows


def _table(folder: Path, osf_strengths: list[float]) -> pd.DataFrame:
    """results.csv of fake runs, one training seed per OSF strength, paired differences filled as a run fills them."""
    rows = [r for seed, s in enumerate(osf_strengths) for r in _seed_rows(folder, seed, s)]
    add_differences(rows, N_BOOT)
    return pd.DataFrame([asdict(r) for r in rows], columns=list(COLUMNS))


def _osf_vs_random(table: pd.DataFrame) -> pd.DataFrame:
    return table[(table["method"] == "dino_ours") & (table["preset"] == "full") & (table["kind"] == "pretrained")]


def test_two_disagreeing_seeds_are_not_separated_though_each_seed_is(tmp_path):
    cfg = _cfg(tmp_path)
    table = _table(tmp_path, [3.0, 0.0])  # OSF far above random init in seed 0, far below it in seed 1
    osf = _osf_vs_random(table).sort_values("seed")
    assert [verdict(r.vs_random_low, r.vs_random_high) for r in osf.itertuples()] == ["better", "worse"]
    c = column_comparison(table, osf, "vs_random", N_BOOT)
    assert c.n_seeds == 2 and c.verdict == "n.s." and c.low < 0 < c.high and c.p > 0.05
    # the per-seed rows beside it are the results.csv rows, bootstrap for bootstrap
    assert [x for r in c.per_seed for x in (r.diff, r.low, r.high)] == pytest.approx(
        osf[["vs_random", "vs_random_low", "vs_random_high"]].to_numpy().ravel())
    text = finding_beats_random(table, cfg)
    assert "2 seeds as the unit" in text and "t-test p = " in text
    assert f"dino_ours {c.diff:+.3f} [{c.low:+.3f}, {c.high:+.3f}] (n.s.; 2 seeds" in text
    assert "better / " in text and "worse)" in text  # each seed separated, the other way round
    assert "Not every objective beats random init: 1 better, 0 worse, 1 not separated." in text  # MAE: better
    main = main_table(table, cfg)
    assert "Stage vs_random, seeds as the unit" in main and "(n.s.; 2 seeds" in main
    assert "(per seed " in main


def test_three_agreeing_seeds_are_better_with_their_t_test(tmp_path):
    cfg = _cfg(tmp_path)
    table = _table(tmp_path, [2.6, 3.0, 3.4])
    c = column_comparison(table, _osf_vs_random(table), "vs_random", N_BOOT)
    assert c.n_seeds == 3 and c.verdict == "better" and c.p < 0.05
    assert all(verdict(r.low, r.high) == "better" for r in c.per_seed)
    lines = [f(table, cfg) for f in (finding_beats_random, finding_degradation, finding_osf_invariance,
                                     finding_scaling)]
    assert all("3 seeds as the unit" in line and "t-test p" in line for line in lines), lines
    assert lines[0].endswith("Every objective beats random init.")
    assert "(of 1 paired comparisons" in lines[2]  # OSF vs MAE on one preset: one verdict over three seeds
    assert "vit_nano vs vit_pico at all data: +" in lines[3] and "(better; 3 seeds" in lines[3]
    missing = missing_channel_table(table, cfg, "Stage")
    assert "cardio_respiratory vs_full, seeds as the unit" in missing and "(worse; 3 seeds" in missing


def test_one_seed_reads_as_before(tmp_path):
    cfg = _cfg(tmp_path)
    table = _table(tmp_path, [3.0])
    osf = _osf_vs_random(table).iloc[0]
    text = finding_beats_random(table, cfg)
    assert text.startswith(f"(0) Full-montage staging vs random init (kappa difference, paired CI, one seed): "
                           f"dino_ours {osf['vs_random']:+.3f} (better); mae ")
    assert "t-test" not in "".join(f(table, cfg) for f in (finding_beats_random, finding_degradation,
                                                             finding_osf_invariance, finding_scaling))
    # OSF vs MAE: the run's paired subject bootstrap, as before seeds were the unit
    rows = table[(table["preset"] == "cardio_respiratory") & (table["kind"] == "pretrained")].set_index("method")
    d = paired_difference(*(load_predictions(rows.loc[m, "predictions"]) for m in ("dino_ours", "mae")),
                          n_boot=N_BOOT, seed=0)["kappa"]
    assert (f"cardio_respiratory dino_ours vs mae: {d['diff']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]."
            in finding_osf_invariance(table, cfg))
    main = main_table(table, cfg)
    assert main.splitlines()[0] == "| method | Stage |"
    assert (f"| dino_ours | {osf['value']:.3f} [{osf['ci_low']:.3f}, {osf['ci_high']:.3f}] "
            f"({osf['vs_random']:+.3f} better) |") in main
    assert "seeds as the unit" not in main + missing_channel_table(table, cfg, "Stage")

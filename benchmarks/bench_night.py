"""Fit time of the night-level models and the sequence-context heads on a 1,000-night embedding cache.

No backbone runs here: the cache is synthetic but structured like a real one. Each night has a
hypnogram (stage runs), an AHI and an age; an epoch's embedding is its stage's prototype, plus an
"event" direction in a fraction of epochs that grows with the AHI, plus an age direction, plus
noise. So every head has something to learn and the reported scores show that it did, beside the
fit time. Baselines in the same run: the per-epoch linear probe (``train_linear_probe``) on the
same epochs, and for the night models the cost of one pass over the cache (mean/std pooling).

    python benchmarks/bench_night.py                       # 1000 nights x 240 epochs x 64 dims, CPU
    python benchmarks/bench_night.py --epochs 960 --dim 192 --device cuda

Prints a table and writes ``benchmarks/results/bench_night_<device>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from osf.downstream.epoch.linear_probe import predict_proba, train_linear_probe
from osf.downstream.features import FeatureSet
from osf.downstream.metrics import binary_auroc, confusion_matrix, kappa_from_confusion
from osf.downstream.night import (
    LINEAR_READOUT_MODELS,
    NIGHT_MODELS,
    NightSet,
    predict_nights,
    train_night_model,
)
from osf.downstream.run_config import NightConfig, SequenceConfig
from osf.downstream.sequence import (
    SEQUENCE_MODELS,
    predict_sequence_proba,
    train_sequence_head,
)

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def synthetic_cache(n_nights: int, n_epochs: int, dim: int, seed: int = 0) -> tuple[FeatureSet, np.ndarray, np.ndarray]:
    """Epoch features of ``n_nights`` nights + per-night AHI and age (see the module docstring)."""
    rng = np.random.default_rng(seed)
    protos = 0.2 * rng.normal(0, 1, (4, dim)).astype(np.float32)  # one epoch alone: ambiguous stage
    event_dir, age_dir = rng.normal(0, 1, (2, dim)).astype(np.float32)
    ahi = rng.gamma(1.2, 12.0, n_nights)
    age = rng.uniform(30, 85, n_nights)
    feats = np.empty((n_nights * n_epochs, dim), np.float32)
    labels = np.empty(n_nights * n_epochs, np.int64)
    for i in range(n_nights):
        runs = rng.integers(0, 4, n_epochs // 8 + 1)
        stages = np.repeat(runs, rng.integers(4, 14, runs.size))[:n_epochs]
        stages = np.pad(stages, (0, n_epochs - stages.size), mode="edge")
        events = rng.random(n_epochs) < np.clip(ahi[i] / 60.0, 0.0, 0.9) * 0.5
        x = protos[stages] + rng.normal(0, 1.8, (n_epochs, dim)).astype(np.float32)
        x += np.outer(events, event_dir) * 0.8 + np.float32((age[i] - 57.5) / 27.5 * 0.3) * age_dir
        sl = slice(i * n_epochs, (i + 1) * n_epochs)
        feats[sl], labels[sl] = x, stages
    rec = np.repeat(np.arange(n_nights), n_epochs).astype(str)
    fs = FeatureSet(feats, labels, rec, rec, np.tile(np.arange(n_epochs), n_nights))
    return fs, ahi, age


def _nights(fs: FeatureSet, idx: np.ndarray, n_epochs: int, y: np.ndarray) -> NightSet:
    feats = [fs.features[i * n_epochs:(i + 1) * n_epochs] for i in idx]
    stages = [fs.labels[i * n_epochs:(i + 1) * n_epochs] for i in idx]
    ids = idx.astype(str)
    return NightSet(feats, ids, ids, y[idx], stages)


def _epochs(fs: FeatureSet, idx: np.ndarray, n_epochs: int) -> FeatureSet:
    return fs.subset((idx[:, None] * n_epochs + np.arange(n_epochs)).ravel())


def _kappa(y: np.ndarray, proba: np.ndarray) -> float:
    return kappa_from_confusion(confusion_matrix(y, proba.argmax(1), proba.shape[1]))


def age_rows(fs: FeatureSet, split: dict[str, np.ndarray], age: np.ndarray, args: argparse.Namespace) -> list[dict]:
    """Age regression by the closed-form night readouts (mean/std pooling, stage profile)."""
    sets = {s: _nights(fs, i, args.epochs, age) for s, i in split.items()}
    rows = []
    for kind in LINEAR_READOUT_MODELS:
        t, c = time.perf_counter(), time.process_time()
        fit = train_night_model(sets["train"], sets["val"], kind, None, max_steps=args.night_steps,
                                device=args.device, seed=args.seed)
        fit_s, cpu_s = time.perf_counter() - t, time.process_time() - c
        pred = predict_nights(fit, sets["test"].features, device=args.device)
        rows.append({"head": f"night {kind}", "task": "age (regression)", "fit_s": fit_s, "cpu_s": cpu_s,
                     "steps": "closed form", "metric": "test MAE (train-mean MAE)",
                     "score": f"{np.mean(np.abs(pred - sets['test'].y)):.2f} "
                              f"({np.mean(np.abs(sets['train'].y.mean() - sets['test'].y)):.2f})"})
    return rows


def run(args: argparse.Namespace) -> dict:
    """Build the cache, fit every head once, return timings and test scores."""
    t0 = time.perf_counter()
    fs, ahi, age = synthetic_cache(args.nights, args.epochs, args.dim, args.seed)
    build_s = time.perf_counter() - t0
    perm = np.random.default_rng(args.seed).permutation(args.nights)
    n_tr, n_va = int(0.7 * args.nights), int(0.1 * args.nights)
    split = {"train": perm[:n_tr], "val": perm[n_tr:n_tr + n_va], "test": perm[n_tr + n_va:]}
    rows = []
    y_bin = (ahi >= 15).astype(np.int64)
    for kind in NIGHT_MODELS:
        sets = {s: _nights(fs, i, args.epochs, y_bin) for s, i in split.items()}
        t, c = time.perf_counter(), time.process_time()
        fit = train_night_model(sets["train"], sets["val"], kind, 2, max_steps=args.night_steps,
                                device=args.device, seed=args.seed)
        fit_s, cpu_s = time.perf_counter() - t, time.process_time() - c
        auroc = binary_auroc(sets["test"].y == 1, predict_nights(fit, sets["test"].features, device=args.device)[:, 1])
        rows.append({"head": f"night {kind}", "task": "AHI>=15", "fit_s": fit_s, "cpu_s": cpu_s, "steps": args.night_steps,
                     "metric": "test AUROC", "score": auroc})
    rows += age_rows(fs, split, age, args)
    epochs = {s: _epochs(fs, i, args.epochs) for s, i in split.items()}
    t, c = time.perf_counter(), time.process_time()
    probe = train_linear_probe(epochs["train"].features, epochs["train"].labels, epochs["val"].features,
                               epochs["val"].labels, 4, device=args.device, seed=args.seed)
    rows.append({"head": "per-epoch linear probe (baseline)", "task": "stage (4)", "fit_s": time.perf_counter() - t,
                 "cpu_s": time.process_time() - c, "steps": 500, "metric": "test kappa",
                 "score": _kappa(epochs["test"].labels, predict_proba(probe.head, epochs["test"].features))})
    for kind in SEQUENCE_MODELS:
        t, c = time.perf_counter(), time.process_time()
        fit = train_sequence_head(epochs["train"], epochs["val"], 4, args.context, kind, max_steps=args.seq_steps,
                                  device=args.device, seed=args.seed)
        fit_s, cpu_s = time.perf_counter() - t, time.process_time() - c
        proba = predict_sequence_proba(fit.head, epochs["test"], device=args.device)
        rows.append({"head": f"sequence {kind} K={args.context}", "task": "stage (4)", "fit_s": fit_s,
                     "cpu_s": cpu_s, "steps": args.seq_steps, "metric": "test kappa", "score": _kappa(epochs["test"].labels, proba)})
    return {"config": vars(args), "cache_mb": fs.features.nbytes / 2**20, "build_cache_s": build_s, "rows": rows,
            "torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine(),
            "cpus": os.cpu_count(), "load_avg_1min": os.getloadavg()[0]}


def main() -> None:
    """Parse flags, run, print the table, write the JSON."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nights", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=240, help="epochs per night (240 = 2 h; 960 = 8 h)")
    p.add_argument("--dim", type=int, default=64, help="embedding width (vit_nano: 64)")
    p.add_argument("--context", type=int, default=10, help="sequence heads: +-K epochs")
    p.add_argument("--night_steps", type=int, default=NightConfig().max_steps)
    p.add_argument("--seq_steps", type=int, default=SequenceConfig().max_steps)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--output", default=None, help="JSON path (default benchmarks/results/bench_night_<device>.json)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    res = run(args)
    print(f"cache: {args.nights} nights x {args.epochs} epochs x {args.dim} dims = {res['cache_mb']:.0f} MB "
          f"(built in {res['build_cache_s']:.1f} s), device {args.device}, load {res['load_avg_1min']:.1f}")
    print("| head | task | steps | fit s (wall) | fit s (CPU) | metric | score |\n| --- | --- | ---: | ---: | ---: | --- | ---: |")
    for r in res["rows"]:
        score = r["score"] if isinstance(r["score"], str) else f"{r['score']:.3f}"
        print(f"| {r['head']} | {r['task']} | {r['steps']} | {r['fit_s']:.1f} | {r['cpu_s']:.1f} | {r['metric']} | {score} |")
    out = Path(args.output) if args.output else RESULTS_DIR / f"bench_night_{torch.device(args.device).type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1, default=str) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

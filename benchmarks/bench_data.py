"""Loader throughput of the epoch store vs. the OSF one-parquet-per-epoch loader (issue 5, part a).

Builds a random store, then in the same run:
  * baseline: the same epochs written the OSF way, one parquet file per 30 s epoch holding the
    samples at an irregular native rate (~128 Hz with jitter); every read does `pd.read_parquet`,
    a pandas reindex onto the union with the 64 Hz grid and index interpolation (single process);
  * store: `SleepDataModule(task="pretrain")` shuffled training batches with 0, 1 and 2 workers,
    timed over whole passes after a warm-up pass (page cache warm, workers started).
Samples/s per core divides by the cores doing the loading (max(1, num_workers)); samples per
CPU-second counts the CPU time actually spent by the main process and its workers.

    python benchmarks/bench_data.py [--n_recordings 16 --epochs 120 --baseline_samples 150]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from osf import config
from osf.datasets.datamodule import SleepDataModule
from osf.datasets.store import EpochStore
from osf.testing import make_random_store

RESULTS = Path(__file__).resolve().parent / "results"


def write_osf_style_epochs(store: EpochStore, rows: np.ndarray, out_dir: Path, seed: int = 0) -> list[Path]:
    """Write each epoch as one parquet file at an irregular ~128 Hz time base (the OSF layout)."""
    rng = np.random.default_rng(seed)
    grid = np.arange(config.EPOCH_SAMPLES) / config.SAMPLE_RATE
    signals = store.read(rows)
    paths = []
    for k, x in enumerate(signals):
        n_native = 128 * config.EPOCH_SEC
        t = np.sort(rng.uniform(0, config.EPOCH_SEC, n_native))
        frame = pd.DataFrame({c: np.interp(t, grid, x[i]) for i, c in enumerate(config.CHANNELS)})
        frame.insert(0, "time", t)
        path = out_dir / f"epoch_{k:06d}.parquet"
        frame.to_parquet(path, index=False)
        paths.append(path)
    return paths


def read_osf_style_epoch(path: Path) -> np.ndarray:
    """The OSF per-sample read: parquet -> reindex on the 64 Hz grid -> interpolate -> [12, 1920]."""
    frame = pd.read_parquet(path).set_index("time")
    grid = pd.Index(np.arange(config.EPOCH_SAMPLES) / config.SAMPLE_RATE)
    merged = frame.reindex(frame.index.union(grid)).interpolate(method="index", limit_direction="both")
    return merged.loc[grid, list(config.CHANNELS)].to_numpy(np.float32).T


def bench_baseline(paths: list[Path]) -> dict:
    """Samples/s of the per-epoch parquet loader (one process, after one warm read)."""
    read_osf_style_epoch(paths[0])
    t0, cpu0 = time.perf_counter(), time.process_time()
    for p in paths:
        x = read_osf_style_epoch(p)
        assert x.shape == (config.NUM_CHANNELS, config.EPOCH_SAMPLES)
    dt, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return {
        "samples": len(paths),
        "seconds": dt,
        "samples_per_s": len(paths) / dt,
        "cores": 1,
        "cpu_seconds": cpu,
        "samples_per_cpu_s": len(paths) / cpu,
    }


def _cpu_seconds(pids: list[int]) -> float:
    """CPU time (user + system) of this process and the given worker processes."""
    total = time.process_time()
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def bench_store(root: Path, num_workers: int, batch_size: int, passes: int) -> dict:
    """Samples/s of shuffled pre-training batches from the store, timed after a warm-up pass.

    Besides wall-clock rates, reports samples per CPU-second of the main process plus its workers,
    which stays meaningful when other jobs share the cores.
    """
    dm = SleepDataModule(root, task="pretrain", batch_size=batch_size, num_workers=num_workers)
    loader = dm.train_dataloader()
    for _ in loader:  # warm-up: page cache, worker start-up
        pass
    pids = [w.pid for w in loader._iterator._workers] if num_workers else []  # persistent workers
    n, t0, cpu0 = 0, time.perf_counter(), _cpu_seconds(pids)
    for epoch in range(passes):
        loader.sampler.set_epoch(epoch + 1)
        for batch in loader:
            n += batch["signal"].shape[0]
    dt, cpu = time.perf_counter() - t0, _cpu_seconds(pids) - cpu0
    cores = max(1, num_workers)
    return {
        "samples": n,
        "seconds": dt,
        "samples_per_s": n / dt,
        "cores": cores,
        "cpu_seconds": cpu,
        "samples_per_cpu_s": n / cpu,
    }


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark, print a table and write `benchmarks/results/bench_data.json`."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n_recordings", type=int, default=16, help="recordings (subjects) in the store")
    ap.add_argument("--epochs", type=int, default=120, help="epochs per recording")
    ap.add_argument("--baseline_samples", type=int, default=150, help="epochs read by the OSF-style baseline")
    ap.add_argument("--batch_size", type=int, default=64)
    ap.add_argument("--passes", type=int, default=8, help="timed passes over the training split per setting")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", type=Path, default=RESULTS / "bench_data.json")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="osf_bench_data_") as tmp:
        tmp = Path(tmp)
        root = make_random_store(
            tmp / "store",
            n_subjects=args.n_recordings,
            n_epochs=args.epochs,
            seed=0,
            split_fractions=(1.0, 0.0, 0.0),
        )
        store = EpochStore(root)
        rows = np.random.default_rng(0).choice(
            len(store), size=min(args.baseline_samples, len(store)), replace=False
        )
        (tmp / "osf").mkdir()
        paths = write_osf_style_epochs(store, rows, tmp / "osf")
        # The baseline must return what the store returns (up to interpolation between the two grids).
        err = np.abs(read_osf_style_epoch(paths[0]) - store.read(rows[:1])[0]).mean()

        results = {"baseline": bench_baseline(paths)}
        for w in args.workers:
            results[f"store_workers_{w}"] = bench_store(root, w, args.batch_size, args.passes)

    base = results["baseline"]["samples_per_s"] / results["baseline"]["cores"]
    base_cpu = results["baseline"]["samples_per_cpu_s"]
    print(
        f"\nstore: {len(store)} epochs in {args.n_recordings} recordings, batch {args.batch_size}; "
        f"baseline: {len(paths)} OSF-style parquet epochs (mean |diff| vs store {err:.3f})"
    )
    print(
        f"{'loader':<18}{'cores':>6}{'samples/s':>11}{'per core':>10}{'x base':>8}{'per CPU-s':>11}{'x base':>8}"
    )
    for name, r in results.items():
        per_core = r["samples_per_s"] / r["cores"]
        r["samples_per_s_per_core"] = per_core
        r["ratio_per_core_vs_baseline"] = per_core / base
        r["ratio_per_cpu_s_vs_baseline"] = r["samples_per_cpu_s"] / base_cpu
        print(
            f"{name:<18}{r['cores']:>6}{r['samples_per_s']:>11.0f}{per_core:>10.0f}{per_core / base:>8.1f}"
            f"{r['samples_per_cpu_s']:>11.0f}{r['ratio_per_cpu_s_vs_baseline']:>8.1f}"
        )
    report = {
        "benchmark": "bench_data (a): loader samples/s, store vs OSF one-parquet-per-epoch baseline",
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count()},
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()

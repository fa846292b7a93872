"""Speed of the synthetic PSG generator: seconds per night-hour per cohort preset.

Prints a table and writes ``benchmarks/results/bench_synthetic.json``. Figures are quoted as
ratios against baselines measured in the same run: real time (3600 s per night-hour) and the cost
of merely drawing the same number of Gaussian samples with numpy (a floor for any generator).

    python benchmarks/bench_synthetic.py [--hours 1.0] [--cohorts shhs,mesa,mros,chat,generic]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from osf.datasets.synthetic import COHORT_PRESETS, GENERATOR_VERSION, generate_night
from osf.datasets.synthetic.generate import write_night

RESULTS = Path(__file__).resolve().parent / "results" / "bench_synthetic.json"


def _numpy_floor(n_samples: int, repeats: int = 3) -> float:
    """Seconds to draw n_samples Gaussian numbers (best of ``repeats``)."""
    rng = np.random.default_rng(0)
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        rng.standard_normal(n_samples)
        best = min(best, time.perf_counter() - t)
    return best


def bench(cohorts: list[str], hours: float) -> list[dict]:
    """Time generate_night and the EDF/XML writing for one night of each cohort."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for c in cohorts:
            preset = COHORT_PRESETS[c]
            c0, t0 = time.process_time(), time.perf_counter()
            night = generate_night(c, 0, seed=0, hours=hours)
            t1 = time.perf_counter()
            for sub in ("polysomnography/edfs", "polysomnography/annotations-events-nsrr"):
                (Path(tmp) / c / sub).mkdir(parents=True, exist_ok=True)
            write_night(night, Path(tmp) / c)
            t2, c2 = time.perf_counter(), time.process_time()
            n_samples = int(sum(ch.rate for ch in preset.channels) * hours * 3600)
            floor = _numpy_floor(n_samples)
            total = t2 - t0
            rows.append(
                {
                    "cohort": c,
                    "channels": len(preset.channels),
                    "samples_per_hour": int(n_samples / hours),
                    "generate_s_per_hour": (t1 - t0) / hours,
                    "write_s_per_hour": (t2 - t1) / hours,
                    "total_s_per_hour": total / hours,
                    "cpu_s_per_hour": (c2 - c0) / hours,
                    "x_real_time": 3600.0 * hours / total,
                    "x_numpy_floor": total / floor,
                }
            )
    return rows


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark, print the table and write the JSON."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hours", type=float, default=1.0, help="night length per cohort (default: %(default)s)")
    p.add_argument("--cohorts", default=",".join(COHORT_PRESETS), help="comma-separated presets")
    args = p.parse_args(argv)
    rows = bench([c.strip() for c in args.cohorts.split(",") if c.strip()], args.hours)
    head = f"{'cohort':8s} {'ch':>3s} {'Msamp/h':>8s} {'gen s/h':>8s} {'write s/h':>9s} {'total s/h':>9s} {'CPU s/h':>8s} {'x real':>7s} {'x numpy':>8s}"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['cohort']:8s} {r['channels']:3d} {r['samples_per_hour'] / 1e6:8.1f} {r['generate_s_per_hour']:8.2f} "
            f"{r['write_s_per_hour']:9.2f} {r['total_s_per_hour']:9.2f} {r['cpu_s_per_hour']:8.2f} {r['x_real_time']:7.0f} {r['x_numpy_floor']:8.0f}"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "benchmark": "bench_synthetic",
                "generator_version": GENERATOR_VERSION,
                "hours": args.hours,
                "machine": {
                    "python": platform.python_version(),
                    "processor": platform.processor(),
                    "numpy": np.__version__,
                },
                "rows": rows,
            },
            indent=1,
        )
        + "\n"
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

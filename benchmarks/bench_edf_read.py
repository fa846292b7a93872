"""EDF reading on a mixed-rate PSG: MNE (resamples to the highest rate) vs OSF's edfio-based reader.

Writes a synthetic night with typical NSRR rates (EEG/EOG/EMG 256 Hz, ECG 512 Hz, respiration
32 Hz, SpO2/HR 1 Hz), then times reading the channels the model needs. Prints a table and
writes ``benchmarks/results/edf_read.json``; figures are ratios against MNE measured in this run.

    python benchmarks/bench_edf_read.py --hours 2 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import edfio
import mne
import numpy as np

from osf.datasets.io import edf_labels, read_edf, resolve_channels

MONTAGE = {  # label -> rate (Hz)
    "C3": 256,
    "C4": 256,
    "M1": 256,
    "M2": 256,
    "E1": 256,
    "E2": 256,
    "Chin1": 256,
    "Chin2": 256,
    "Chin3": 256,
    "LAT1": 256,
    "LAT2": 256,
    "RAT1": 256,
    "RAT2": 256,
    "ECG": 512,
    "Thorax": 32,
    "Abdomen": 32,
    "Nasal Pressure": 32,
    "Airflow": 32,
    "Snore": 256,
    "SpO2": 1,
    "HR": 1,
    "Position": 1,
}


def write_night(path: Path, hours: float) -> None:
    """A mixed-rate EDF of ``hours`` hours of noise."""
    rng = np.random.default_rng(0)
    seconds = int(hours * 3600)
    sigs = [
        edfio.EdfSignal(
            rng.standard_normal(rate * seconds).astype(np.float64) * 20,
            rate,
            label=lab,
            physical_range=(-200, 200),
        )
        for lab, rate in MONTAGE.items()
    ]
    edfio.Edf(sigs).write(path)


def best_of(fn, repeats: int) -> tuple[float, int]:
    """Best wall time over ``repeats`` calls and the number of float samples returned."""
    times, n = [], 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        n = fn()
        times.append(time.perf_counter() - t0)
    return min(times), n


def main() -> None:
    """Run the benchmark and write the JSON result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "edf_read.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "night.edf"
        write_night(path, args.hours)
        wanted = resolve_channels(edf_labels(path), "generic").needed_labels

        def mne_all() -> int:
            raw = mne.io.read_raw_edf(path, preload=True, verbose="error")
            return raw.get_data().size

        def mne_wanted() -> int:
            raw = mne.io.read_raw_edf(path, include=wanted, preload=True, verbose="error")
            return raw.get_data().size

        def osf_wanted() -> int:
            return sum(x.size for x in read_edf(path, wanted).signals.values())

        def header_only() -> int:
            return len(edf_labels(path))

        cases = {
            "mne_all_channels": mne_all,
            "mne_wanted_channels": mne_wanted,
            "osf_read_edf_wanted": osf_wanted,
            "osf_edf_labels_header": header_only,
        }
        results = {}
        for name, fn in cases.items():
            seconds, n = best_of(fn, args.repeats)
            results[name] = {"seconds": seconds, "samples_returned": n}
    base = results["mne_wanted_channels"]["seconds"]
    for r in results.values():
        r["speedup_vs_mne_wanted"] = base / r["seconds"]
    print(f"{args.hours:g} h mixed-rate EDF, {len(MONTAGE)} signals, {len(wanted)} wanted")
    print(f"{'case':<26}{'seconds':>10}{'samples':>14}{'x vs MNE':>10}")
    for name, r in results.items():
        print(
            f"{name:<26}{r['seconds']:>10.3f}{r['samples_returned']:>14,}{r['speedup_vs_mne_wanted']:>10.1f}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"hours": args.hours, "wanted": wanted, "results": results}, indent=2))


if __name__ == "__main__":
    main()

"""Preprocessing throughput on a multi-rate EDF: recorded hours per second per core (issue 5 part b).

Writes one night with 18 signals at 11 different rates (1, 10, 32, 50, 100, 125, 200, 250, 256, 500,
512 Hz; 17 of them feed the 12 channels, derivations across rates included), then times, best of ``--repeats``, in this process:

- reading the signals the 12 channels need: MNE ``read_raw_edf(include=..., preload=True)``
  (the baseline: it resamples them to the highest rate) vs OSF ``read_edf`` (edfio, native rates);
- a baseline pipeline built on MNE: that read, then ``raw.resample(64)`` (FFT), then
  median/IQR normalisation and epoching in numpy, with no derivations, filters or QC;
- OSF ``process_recording`` end to end (read, derivations, EMG band-pass, polyphase resampling,
  normalisation, epochs, QC flags, labels from a CSV scoring), plus its stages.

Throughput is recorded hours per wall second of one process (= one core) and per CPU second
(``time.process_time``, robust when other jobs load the machine). Ratios are against the MNE
baseline of the same run. Prints a table, writes ``benchmarks/results/bench_preprocess.json``.

    python benchmarks/bench_preprocess.py --hours 2 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import edfio
import mne
import numpy as np

from osf import config
from osf.datasets.io import edf_labels, read_edf, resolve_channels
from osf.datasets.preprocess import process_recording
from osf.datasets.preprocess.channels import build_canonical_signal

MONTAGE = {  # label -> rate (Hz)
    "C3": 256, "C4": 200, "M1": 200, "M2": 256, "E1": 500, "E2": 500, "ECG": 512,
    "Chin1": 250, "Chin2": 250, "LAT1": 100, "LAT2": 100, "RAT1": 125, "RAT2": 125,
    "Thorax": 10, "Abdomen": 10, "Nasal Pressure": 32, "Snore": 50, "SpO2": 1,
}


def write_night(folder: Path, hours: float) -> tuple[Path, Path]:
    """A mixed-rate EDF of coloured noise plus a CSV hypnogram of the same length."""
    rng = np.random.default_rng(0)
    seconds = int(hours * 3600)
    signals = []
    for label, rate in MONTAGE.items():
        x = np.cumsum(rng.standard_normal(rate * seconds)) * 0.05  # drifting, like real electrodes
        x = x - np.convolve(x, np.ones(rate) / rate, mode="same") + 10 * rng.standard_normal(x.size)
        signals.append(edfio.EdfSignal(np.clip(x, -400, 400), rate, label=label, physical_range=(-400, 400)))
    edf = folder / "night.edf"
    edfio.Edf(signals).write(edf)
    stages = rng.choice(["W", "1", "2", "3", "R"], size=seconds // 30)
    csv = folder / "night.csv"
    csv.write_text("onset,duration,description\n" + "".join(f"{30 * i},30,Sleep stage {s}\n" for i, s in enumerate(stages)))
    return edf, csv


def best_of(fn: Callable[[], object], repeats: int) -> dict[str, float]:
    """Best wall and CPU seconds over ``repeats`` calls."""
    walls, cpus = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return {"wall_s": min(walls), "cpu_s": min(cpus)}


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark, print the table and write the JSON result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=2.0, help="length of the test night")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs per case")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "bench_preprocess.json")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        edf, csv = write_night(Path(tmp), args.hours)
        resolution = resolve_channels(edf_labels(edf), "generic")
        wanted = resolution.needed_labels
        sources = {c: s.labels for c, s in resolution.sources.items() if s.present}

        def mne_read():
            return mne.io.read_raw_edf(edf, include=wanted, preload=True, verbose="error")

        def mne_pipeline():
            raw = mne_read().resample(config.SAMPLE_RATE, verbose="error")
            x = raw.get_data()
            n = x.shape[1] // config.EPOCH_SAMPLES
            med = np.median(x, axis=1, keepdims=True)
            iqr = np.subtract(*np.percentile(x, [75, 25], axis=1, keepdims=True))
            z = np.clip((x[:, : n * config.EPOCH_SAMPLES] - med) / iqr, -6, 6).astype(np.float32)
            return z.reshape(len(x), n, config.EPOCH_SAMPLES).transpose(1, 0, 2).copy()

        recording = read_edf(edf, wanted)

        def osf_channels():
            for name, labels in sources.items():
                build_canonical_signal(name, labels, recording.signals, recording.rates)

        cases = {
            "mne_read (baseline)": mne_read,
            "osf_read_edf": lambda: read_edf(edf, wanted),
            "mne_read+resample+normalise (baseline pipeline)": mne_pipeline,
            "osf_process_recording": lambda: process_recording(edf, csv),
            "  stage: derive+filter+resample (12 ch)": osf_channels,
        }
        results = {name: best_of(fn, args.repeats) for name, fn in cases.items()}
        epochs = process_recording(edf, csv)

    hours = args.hours
    read_base, pipe_base = results["mne_read (baseline)"], results["mne_read+resample+normalise (baseline pipeline)"]
    for name, r in results.items():
        r["hours_per_s_per_core"] = hours / r["wall_s"]
        r["hours_per_cpu_s"] = hours / r["cpu_s"] if r["cpu_s"] > 0 else float("inf")
        base = read_base if "read" in name and "pipeline" not in name and "process" not in name else pipe_base
        r["x_vs_baseline_wall"] = base["wall_s"] / r["wall_s"]
        r["x_vs_baseline_cpu"] = base["cpu_s"] / r["cpu_s"] if r["cpu_s"] > 0 else float("inf")
    rest = results["osf_process_recording"]["wall_s"] - results["  stage: derive+filter+resample (12 ch)"]["wall_s"]

    print(f"{hours:g} h EDF, {len(MONTAGE)} signals at {len(set(MONTAGE.values()))} rates; "
          f"{len(wanted)} read for {len(sources)} channels; {epochs.n_epochs} epochs out")
    print(f"{'case':<50}{'wall s':>9}{'CPU s':>9}{'h/s/core':>10}{'h/CPU-s':>9}{'x base':>8}{'x base CPU':>11}")
    for name, r in results.items():
        print(f"{name:<50}{r['wall_s']:>9.3f}{r['cpu_s']:>9.3f}{r['hours_per_s_per_core']:>10.1f}"
              f"{r['hours_per_cpu_s']:>9.1f}{r['x_vs_baseline_wall']:>8.1f}{r['x_vs_baseline_cpu']:>11.1f}")
    print("(read rows compare with mne_read, pipeline rows with the MNE baseline pipeline; "
          f"process_recording minus the channel stage = {rest:.3f} s of read, normalisation, QC and labels)")
    payload = {
        "hours": hours,
        "montage": MONTAGE,
        "wanted_labels": wanted,
        "n_epochs": epochs.n_epochs,
        "repeats": args.repeats,
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "load_avg": os.getloadavg() if hasattr(os, "getloadavg") else None},
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2))
    return payload


if __name__ == "__main__":
    main()

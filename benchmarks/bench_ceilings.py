"""Supervised and handcrafted ceilings per channel preset on a synthetic multi-cohort store, and YASA's agreement.

What the synthetic physiology lets a model learn without pre-training: ``osf.downstream.ceilings``
(a logistic regression on handcrafted features and a small supervised CNN) on Stage for several
channel presets and on the three event tasks on the full montage, scored on the store's test
subjects with subject-bootstrap CIs. Then YASA's pretrained stager (``yasa.SleepStaging``, EEG +
EOG + chin EMG read from the raw EDF) against the synthetic hypnogram of a few longer nights, the
check that the signals still look like sleep to a model trained on real PSG.

Prints a table and writes ``benchmarks/results/bench_ceilings.json`` (one entry per ``--label``,
so a "before" and an "after" run sit side by side).

    python benchmarks/bench_ceilings.py --label after                 # generate + ingest + run (~25 min, 2 cores)
    python benchmarks/bench_ceilings.py --store STORE --label after   # an existing store
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from osf import config
from osf.datasets.ingest import ingest_dataset
from osf.datasets.synthetic import GENERATOR_VERSION, generate_cohort
from osf.downstream.ceilings import KINDS, run_ceiling
from osf.downstream.metrics import confusion_matrix, kappa_from_confusion
from osf.tasks import get_task, studied_tasks
from osf.utils.atomic import atomic_write_text

RESULTS = Path(__file__).resolve().parent / "results" / "bench_ceilings.json"
STAGE_PRESETS = ("full", "no_eeg", "eeg_eog_only", "cardio_respiratory", "respiratory_only")
EVENT_TASKS = tuple(t for t in studied_tasks() if get_task(t).is_event)  # the task registry's
YASA_STAGES = {"W": 0, "N1": 1, "N2": 2, "N3": 3, "R": 4}


def build_store(work: Path, cohorts: list[str], nights: int, hours: float, seed: int, workers: int) -> Path:
    """Generate the synthetic cohorts and ingest them into one store split 0.5/0.25/0.25 by subject."""
    synthetic, store = work / "synthetic", work / "store"
    generate_cohort(synthetic, cohorts, nights_per_cohort=nights, hours=hours, seed=seed, num_workers=workers,
                    overwrite=True, progress=False)
    for i, cohort in enumerate(cohorts):
        ingest_dataset(cohort, synthetic / cohort, store, num_workers=workers, split_fractions=(0.5, 0.25, 0.25),
                       seed=seed, overwrite=i == 0, progress=False)
    return store


def ceiling_row(kind: str, store: Path, preset: str, task: str, seed: int, max_steps: int, n_boot: int) -> dict:
    """One ceiling run as a table row (point estimates, 95 % CIs, selection, seconds)."""
    res = run_ceiling(kind, store, preset, task, seed=seed, n_boot=n_boot, max_steps=max_steps)
    m = res.metrics
    metric = get_task(task).reporting_metric
    return {"kind": kind, "preset": preset, "task": task, "metric": metric, "value": m[metric],
            "ci95": m[f"{metric}_ci95"], "accuracy": m["accuracy"], "auroc": m["auroc"],
            "per_class_f1": m["per_class_f1"], "n_test_subjects": m["n_subjects"], "n_test_epochs": m["n_epochs"],
            "selection": {k: res.selection[k] for k in ("param", "best", "best_val_score")},
            "train_seconds": round(res.train_seconds, 1)}


def _agreement(true: np.ndarray, pred: np.ndarray, num_classes: int) -> dict[str, float]:
    cm = confusion_matrix(true, pred, num_classes)
    return {"accuracy": float(np.trace(cm) / cm.sum()), "kappa": kappa_from_confusion(cm)}


def yasa_stages(predicted) -> np.ndarray:
    """YASA's prediction as stage ids 0 W .. 4 REM (a ``yasa.Hypnogram`` in 0.7+, an array of "W".."R" before)."""
    if hasattr(predicted, "as_int"):
        return predicted.as_int().to_numpy(dtype=np.int64)
    return np.array([YASA_STAGES[s] for s in predicted], dtype=np.int64)


def yasa_agreement(work: Path, nights: int, hours: float, seed: int, cohort: str = "generic") -> dict:
    """YASA's stages of ``nights`` synthetic EDFs against their hypnograms: pooled accuracy / kappa, 5 and 4 classes."""
    import mne
    import yasa

    from osf.datasets.io import read_scoring

    out = work / "yasa"
    generate_cohort(out, [cohort], nights_per_cohort=nights, hours=hours, seed=seed, overwrite=True, progress=False)
    lut4 = np.array([config.STAGE_5_TO_4[s] for s in range(5)])
    truth, pred, per_night = [], [], []
    for edf in sorted((out / cohort / "polysomnography" / "edfs").glob("*.edf")):
        raw = mne.io.read_raw_edf(edf, include=["C4-M1", "E1-M2", "Chin1-Chin2"], preload=True, verbose=False)
        staged = yasa_stages(yasa.SleepStaging(raw, eeg_name="C4-M1", eog_name="E1-M2",
                                               emg_name="Chin1-Chin2").predict())
        xml = out / cohort / "polysomnography" / "annotations-events-nsrr" / f"{edf.stem}-nsrr.xml"
        t = read_scoring(xml).stages[: len(staged)].astype(np.int64)
        p = staged[: len(t)]
        per_night.append({"night": edf.stem, **_agreement(t, p, 5)})
        truth.append(t)
        pred.append(p)
    t, p = np.concatenate(truth), np.concatenate(pred)
    return {"cohort": cohort, "nights": nights, "hours": hours, "seed": seed, "five_class": _agreement(t, p, 5),
            "four_class": _agreement(lut4[t], lut4[p], 4), "per_night": per_night,
            "confusion_5": confusion_matrix(t, p, 5).tolist()}


def print_table(rows: list[dict]) -> None:
    """Ceiling table: one line per (task, preset) with both kinds side by side."""
    by = {(r["task"], r["preset"], r["kind"]): r for r in rows}
    keys = sorted({(r["task"], r["preset"]) for r in rows}, key=lambda k: (k[0] != "Stage", k[0]))
    print(f"{'task':20s} {'preset':20s} " + " ".join(f"{k:>28s}" for k in KINDS))
    for task, preset in keys:
        cells = []
        for kind in KINDS:
            r = by.get((task, preset, kind))
            cells.append(f"{r['metric']} {r['value']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]" if r else "-")
        print(f"{task:20s} {preset:20s} " + " ".join(f"{c:>28s}" for c in cells))


def save(label: str, record: dict, path: Path = RESULTS) -> None:
    """Merge ``record`` into the entry ``label`` of the results JSON (rows by kind/preset/task; other labels kept)."""
    data = json.loads(path.read_text()) if path.exists() else {"benchmark": "bench_ceilings", "runs": {}}
    old = data["runs"].get(label, {})
    rows = {(r["kind"], r["preset"], r["task"]): r for r in old.get("rows", []) + record.get("rows", [])}
    record = {**old, **{k: v for k, v in record.items() if v is not None}, "rows": list(rows.values())}
    data["runs"][label] = record
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(data, indent=1, default=float) + "\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The benchmark's flags."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--store", type=Path, default=None, help="existing epoch store (default: generate one)")
    p.add_argument("--work_dir", type=Path, default=None, help="where to generate (default: a temporary folder)")
    p.add_argument("--cohorts", default="shhs,mros,mesa")
    p.add_argument("--nights", type=int, default=16, help="nights per cohort")
    p.add_argument("--hours", type=float, default=1.5, help="hours per night (1.5 h: every stage, REM ~7 %%)")
    p.add_argument("--seed", type=int, default=0, help="generator, split and model seed")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--kinds", default=",".join(KINDS))
    p.add_argument("--presets", default=",".join(STAGE_PRESETS), help="presets for Stage")
    p.add_argument("--events", default=",".join(EVENT_TASKS), help="event tasks on the full montage ('' = none)")
    p.add_argument("--max_steps", type=int, default=300, help="CNN training steps (batch 64)")
    p.add_argument("--n_boot", type=int, default=200)
    p.add_argument("--yasa_nights", type=int, default=3, help="0 = skip the YASA check")
    p.add_argument("--yasa_hours", type=float, default=3.0)
    p.add_argument("--label", default="run", help="key of this run in the results JSON")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Build or open the store, run every ceiling, check YASA, print and save."""
    args = parse_args(argv)
    command = "python benchmarks/bench_ceilings.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work_dir or Path(tmp)
        t0 = time.perf_counter()
        store = args.store or build_store(work, args.cohorts.split(","), args.nights, args.hours, args.seed,
                                          args.workers)
        build_s = time.perf_counter() - t0
        jobs = [(p, "Stage") for p in args.presets.split(",") if p]
        jobs += [("full", e) for e in args.events.split(",") if e]
        header = {"command": command, "generator_version": GENERATOR_VERSION, "seed": args.seed,
                  "store": str(args.store) if args.store else None, "store_build_seconds": round(build_s, 1),
                  "max_steps": args.max_steps, "n_boot": args.n_boot,
                  **({} if args.store else {"cohorts": args.cohorts, "nights_per_cohort": args.nights,
                                            "hours": args.hours})}
        rows = []
        for kind in [k for k in args.kinds.split(",") if k]:
            for preset, task in jobs:
                rows.append(ceiling_row(kind, store, preset, task, args.seed, args.max_steps, args.n_boot))
                r = rows[-1]
                print(f"{kind:12s} {preset:20s} {task:20s} {r['metric']} {r['value']:.3f} "
                      f"[{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]  ({r['train_seconds']:.0f} s)", flush=True)
                save(args.label, {**header, "rows": [r]})  # a crash later keeps what is done
        yasa = yasa_agreement(work, args.yasa_nights, args.yasa_hours, args.seed) if args.yasa_nights else None
    print_table(rows)
    if yasa:
        print(f"YASA vs synthetic hypnogram ({yasa['nights']} x {yasa['hours']} h {yasa['cohort']}): "
              f"5-class acc {yasa['five_class']['accuracy']:.3f} kappa {yasa['five_class']['kappa']:.3f}; "
              f"4-class acc {yasa['four_class']['accuracy']:.3f} kappa {yasa['four_class']['kappa']:.3f}")
    save(args.label, {**header, "rows": rows, "yasa": yasa})


if __name__ == "__main__":
    main()

"""Speed of staging a night with ``predict_night``: ingestion, inference and writing the outputs.

Generates one synthetic full-montage night, builds a random-init classifier (stage + three event
heads) per backbone size, and times each part of ``osf.predict.predict_night``. Ratios are against
baselines measured in the same run: real time (the night's length) and, for inference, the same
epochs classified one at a time (batch 1, as a per-epoch loop would).

    python benchmarks/bench_predict.py [--hours 8] [--sizes vit_nano,vit_small] [--baseline_epochs 64]

Prints a table and writes ``benchmarks/results/bench_predict.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from osf import config
from osf.backbone.checkpoint import backbone_metadata
from osf.backbone.vit1d_cls import create_backbone
from osf.datasets.preprocess import process_recording
from osf.datasets.synthetic.generate import generate_cohort
from osf.downstream.classifier import SleepClassifier
from osf.predict.night import predict_night, run_classifier

RESULTS = Path(__file__).resolve().parent / "results" / "bench_predict.json"
TASKS = {"stage": list(config.STAGE_NAMES_4), "arousal": ["absent", "present"],
         "hypopnea": ["absent", "present"], "oxygen_desaturation": ["absent", "present"]}


def _classifier(size: str) -> SleepClassifier:
    torch.manual_seed(0)
    backbone = create_backbone(size)
    heads = {t: torch.nn.Linear(backbone.width, len(n)) for t, n in TASKS.items()}
    return SleepClassifier(backbone, heads, TASKS, backbone_metadata=backbone_metadata(backbone, "random")).eval()


def bench(hours: float, sizes: list[str], baseline_epochs: int) -> dict:
    """Time the parts of predict_night on one synthetic night for each backbone size."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate_cohort(root / "syn", cohorts="generic", nights_per_cohort=1, hours=hours, seed=0, progress=False)
        layout = root / "syn" / "generic" / "polysomnography"
        edf = next((layout / "edfs").glob("*.edf"))
        xml = layout / "annotations-events-nsrr" / f"{edf.stem}-nsrr.xml"

        t0 = time.perf_counter()
        recording = process_recording(edf, xml, dataset="generic")
        ingest_s = time.perf_counter() - t0
        n = recording.n_epochs
        rows = []
        for size in sizes:
            clf = _classifier(size)
            x, m = recording.signals[:baseline_epochs], recording.channel_mask[:baseline_epochs]
            run_classifier(clf, x[:2], m[:2])  # warm-up
            t0 = time.perf_counter()
            run_classifier(clf, x, m, batch_size=1)
            one_by_one_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            run_classifier(clf, x, m, batch_size=256)
            batched_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            result = predict_night(edf, clf, annotations=xml, output_dir=root / size)
            total_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            run_classifier(clf, recording.signals, recording.channel_mask)
            infer_s = time.perf_counter() - t0
            rows.append({
                "backbone": size, "width": clf.backbone.width, "n_epochs": n,
                "predict_night_s": total_s, "ingestion_s": ingest_s, "inference_s": infer_s,
                "writing_and_rest_s": max(0.0, total_s - ingest_s - infer_s),
                "x_real_time": hours * 3600 / total_s,
                "inference_batched_vs_batch1": one_by_one_s / batched_s,
                "n_files": len(result.files),
            })
    return {"hours": hours, "n_epochs": n, "rows": rows}


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark, print the table and write the JSON."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hours", type=float, default=8.0, help="night length (default: %(default)s)")
    p.add_argument("--sizes", default="vit_nano,vit_small", help="comma-separated backbone constructors")
    p.add_argument("--baseline_epochs", type=int, default=64, help="epochs classified one at a time for the baseline")
    args = p.parse_args(argv)
    out = bench(args.hours, [s.strip() for s in args.sizes.split(",") if s.strip()], args.baseline_epochs)
    head = (f"{'backbone':10s} {'epochs':>6s} {'total s':>8s} {'ingest s':>9s} {'infer s':>8s} {'write s':>8s} "
            f"{'x real time':>11s} {'batched/batch-1':>15s}")
    print(head)
    print("-" * len(head))
    for r in out["rows"]:
        print(f"{r['backbone']:10s} {r['n_epochs']:6d} {r['predict_night_s']:8.1f} {r['ingestion_s']:9.1f} "
              f"{r['inference_s']:8.1f} {r['writing_and_rest_s']:8.1f} {r['x_real_time']:11.0f} "
              f"{r['inference_batched_vs_batch1']:14.1f}x")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": "bench_predict", "machine": {"python": platform.python_version(),
               "processor": platform.processor(), "torch": torch.__version__, "threads": torch.get_num_threads()}, **out}
    RESULTS.write_text(json.dumps(payload, indent=1) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

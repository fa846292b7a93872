"""Staging with the channels a night has: the quick start's staging classifier fine-tuned over the channel
presets (``--mask_train_presets``) against the classifier fine-tuned on the full montage only (the quick
start before issue 29) and a linear probe trained on EEG+EOG alone, on the held-out test subjects.

For each quick-start run folder (``main_quickstart.py --output_dir DIR --seed S``, which now fine-tunes over
every preset), this fine-tunes the same backbone from the same Stage-probe head with the same flags but
no masking, trains the EEG+EOG-only probe (``--eval_channels eeg_eog_only --mask_train_channels``, the
pooling the Stage probe chose), and scores all three on the test split seen through ``full`` and
``eeg_eog_only`` (``osf.downstream.epoch.presets.preset_kappas``; Cohen's kappa, 4 stages).

    python main_pipelines/main_quickstart.py --output_dir DIR --weights_dir DIR/weights --seed S
    python benchmarks/bench_masked_staging.py --runs DIR [DIR ...] --seeds S [...] [--results ...json]

Prints a table and writes the JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

from osf.downstream.classifier import load_classifier
from osf.downstream.epoch.presets import preset_kappas
from osf.downstream.inputs import build_datamodule
from osf.downstream.run_config import resolve_downstream_config
from osf.entry_calls import call
from osf.quickstart import Quickstart, QuickstartConfig

RESULTS = Path(__file__).resolve().parent / "results" / "bench_masked_staging.json"
PRESETS = ("full", "eeg_eog_only")


def _finetune_flags(run: Path, seed: int) -> dict:
    """The quick start's own fine-tuning flags for the run in ``run`` (its seed and weights folder)."""
    cfg = QuickstartConfig(output_dir=run, weights_dir=run / "weights", seed=seed)
    return Quickstart(cfg, log=lambda line: None)._finetune_flags()


def _test_kappas(clf_path: Path, store: Path, batch_size: int = 256) -> dict[str, float]:
    cfg = resolve_downstream_config({"data_dir": str(store), "eval_label": "Stage"})
    from osf.datasets.store import EpochStore

    dm = build_datamodule(cfg, EpochStore(store), batch_size, seed=0)
    return preset_kappas(load_classifier(clf_path), "stage", dm, PRESETS, splits=("test",), batch_size=batch_size)["test"]


def measure(run: Path, flags: dict) -> dict:
    """The three classifiers of one quick-start run, each scored on the test split under both presets."""
    store = Path(flags["data_dir"])
    masked = Path(flags["output_dir"]) / "classifier.pt"
    full_only = run / "bench_masked" / "finetune_full_only"
    call("main_finetune.py", {**flags, "mask_train_presets": "", "output_dir": str(full_only), "run_name": "full_only"})
    probe = run / "bench_masked" / "probe_eeg_eog_only"
    call("main_finetune.py", {"ckpt_path": flags["ckpt_path"], "data_dir": str(store), "eval_label": "Stage",
                              "pooling": flags["pooling"], "eval_channels": "eeg_eog_only", "mask_train_channels": True,
                              "seed": flags["seed"], "output_dir": str(probe), "run_name": "probe_eeg_eog"})
    return {
        "run": str(run), "seed": flags["seed"], "pooling": flags["pooling"],
        "masked_finetune": _test_kappas(masked, store),
        "full_only_finetune": _test_kappas(full_only / "classifier.pt", store),
        "eeg_eog_probe": {"eeg_eog_only": _test_kappas(probe / "classifier.pt", store)["eeg_eog_only"]},
    }


def table(rows: list[dict]) -> str:
    """One line per run and classifier: test kappa on the full montage and on EEG+EOG only."""
    lines = [f"{'seed':>4}  {'classifier':34s} {'full':>7} {'eeg_eog_only':>13}"]
    for r in rows:
        for name, label in (("masked_finetune", "fine-tuned over the presets (new)"),
                            ("full_only_finetune", "fine-tuned on full only (before)"),
                            ("eeg_eog_probe", "probe trained on EEG+EOG alone")):
            k = r[name]
            full = f"{k['full']:.3f}" if "full" in k else "-"
            lines.append(f"{r['seed']:>4}  {label:34s} {full:>7} {k['eeg_eog_only']:>13.3f}")
    return "\n".join(lines)


def main() -> None:
    """Parse flags, measure every run, print and write the results."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=Path, nargs="+", required=True,
                   help="finished quick-start output folders (run with --weights_dir RUN/weights)")
    p.add_argument("--seeds", type=int, nargs="+", required=True, help="the --seed of each run, same order")
    p.add_argument("--results", type=Path, default=RESULTS)
    args = p.parse_args()
    if len(args.seeds) != len(args.runs):
        p.error("give one --seeds value per --runs folder")
    rows = [measure(run, _finetune_flags(run, seed)) for run, seed in zip(args.runs, args.seeds)]
    text = table(rows)
    print(text)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps({"machine": platform.platform(), "torch": torch.__version__, "runs": rows,
                                        "table": text}, indent=1) + "\n")
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()

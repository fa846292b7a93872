"""Staging with the channels a night has: the quick start's staging classifier fine-tuned over the channel
presets (``--mask_train_presets``) against the classifier fine-tuned on the full montage only, a linear probe
trained on EEG+EOG alone, a linear probe over the presets, and LP-FT started at that presets probe, on the
held-out test subjects.

For each finished quick-start run folder (its store, pre-training checkpoint and Stage probes are only
read), this fine-tunes the exported backbone with the quick start's flags over ``--presets`` (the run's own
staging classifier is read instead where it was fine-tuned over the same presets and steps) and on the full
montage only, trains the EEG+EOG-only probe (``--eval_channels eeg_eog_only --mask_train_channels``) and the
probe over the presets (``--mask_train_presets``, trained on every training epoch through each preset), then
fine-tunes again from that probe's head, all with the pooling the Stage probe chose, and scores every one on the
test split seen through ``full`` and ``eeg_eog_only`` (``osf.downstream.epoch.presets.preset_kappas``; Cohen's
kappa, 4 stages).

    python main_pipelines/main_quickstart.py --output_dir DIR --seed S      # any version: only its corpus is used
    python benchmarks/bench_masked_staging.py --runs DIR [DIR ...] --seeds S [...] [--out_root OUT] [--results ...json]

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


def _finetune_flags(qs: Quickstart, out: Path) -> dict:
    """The quick start's fine-tuning flags for the run ``qs``, on a backbone exported again into ``out``.

    The run is only read (store, pre-training checkpoint, Stage probes): a finished quick start of any version.
    """
    backbone = out / "weights" / "backbone.pth"
    if not backbone.is_file():
        call("main_export.py", {"ckpt_path": str(qs.pretrain_ckpt), "output": str(backbone)})
    return {**qs._finetune_flags(), "ckpt_path": str(backbone)}


def _quickstart(run: Path, seed: int, out: Path) -> Quickstart:
    """The finished run's quick start (its own config where it wrote one: a later seed's corpus lives elsewhere)."""
    results = run / "results.json"
    cfg = (QuickstartConfig.from_dict(json.loads(results.read_text())["config"], output_dir=run,
                                      weights_dir=out / "weights")
           if results.is_file() else QuickstartConfig(output_dir=run, weights_dir=out / "weights", seed=seed))
    return Quickstart(cfg, log=lambda line: None)


def _test_kappas(clf_path: Path, store: Path, batch_size: int = 256) -> dict[str, float]:
    from osf.datasets.store import EpochStore

    cfg = resolve_downstream_config({"data_dir": str(store), "eval_label": "Stage"})
    dm = build_datamodule(cfg, EpochStore(store), batch_size, seed=0)
    return preset_kappas(load_classifier(clf_path), "stage", dm, PRESETS, splits=("test",), batch_size=batch_size)["test"]


def measure(run: Path, seed: int, out: Path, presets: str = "all", finetune_steps: int | None = None) -> dict:
    """The three classifiers of one quick-start run, each scored on the test split under both presets.

    ``finetune_steps``: fine-tune the masked classifier this long (warm-up a tenth) instead of the run's own steps.
    """
    own = _quickstart(run, seed, out)
    flags = _finetune_flags(own, out)
    store = Path(flags["data_dir"])
    dirs = {name: out / name for name in ("finetune_presets", "finetune_full_only", "probe_eeg_eog_only",
                                          "probe_presets", "finetune_from_presets_probe")}
    masked = dict(flags)
    if finetune_steps is not None:
        masked.update(max_steps=finetune_steps, warmup_steps=max(1, finetune_steps // 10))
        dirs["finetune_presets"] = out / f"finetune_presets_{finetune_steps}steps"
    if (presets == own.cfg.finetune_presets and masked["max_steps"] == own.cfg.finetune_steps
            and (own.finetune_dir / "classifier.pt").is_file()):
        dirs["finetune_presets"] = own.finetune_dir  # the run's own staging classifier was fine-tuned over these
    for name, masking, base in (("finetune_presets", presets, masked), ("finetune_full_only", "", flags)):
        if not (dirs[name] / "classifier.pt").is_file():  # a classifier already there is reused
            call("main_finetune.py", {**base, "mask_train_presets": masking, "output_dir": str(dirs[name]), "run_name": name})
    if not (dirs["probe_eeg_eog_only"] / "classifier.pt").is_file():
        call("main_finetune.py", {"ckpt_path": flags["ckpt_path"], "data_dir": str(store), "eval_label": "Stage",
                                  "pooling": flags["pooling"], "eval_channels": "eeg_eog_only", "mask_train_channels": True,
                                  "seed": seed, "output_dir": str(dirs["probe_eeg_eog_only"]), "run_name": "probe_eeg_eog"})
    if not (dirs["probe_presets"] / "classifier.pt").is_file():  # the LP of LP-FT on fine-tuning's own presets
        call("main_finetune.py", {"ckpt_path": flags["ckpt_path"], "data_dir": str(store), "eval_label": "Stage",
                                  "pooling": flags["pooling"], "mask_train_presets": presets, "seed": seed,
                                  "output_dir": str(dirs["probe_presets"]), "run_name": "probe_presets"})
    if not (dirs["finetune_from_presets_probe"] / "classifier.pt").is_file():
        call("main_finetune.py", {**masked, "mask_train_presets": presets,
                                  "init_head": str(dirs["probe_presets"] / "classifier.pt"),
                                  "output_dir": str(dirs["finetune_from_presets_probe"]),
                                  "run_name": "finetune_from_presets_probe"})
    return {
        "run": str(run), "seed": seed, "pooling": flags["pooling"], "finetune_steps": masked["max_steps"], "presets": presets,
        "masked_finetune": _test_kappas(dirs["finetune_presets"] / "classifier.pt", store),
        "full_only_finetune": _test_kappas(dirs["finetune_full_only"] / "classifier.pt", store),
        "eeg_eog_probe": {"eeg_eog_only": _test_kappas(dirs["probe_eeg_eog_only"] / "classifier.pt", store)["eeg_eog_only"]},
        "presets_probe": _test_kappas(dirs["probe_presets"] / "classifier.pt", store),
        "finetune_from_presets_probe": _test_kappas(dirs["finetune_from_presets_probe"] / "classifier.pt", store),
        "validation_kappa_by_preset": load_classifier(dirs["finetune_presets"] / "classifier.pt").info.get(
            "validation_kappa_by_preset"),
    }


def table(rows: list[dict]) -> str:
    """One line per run and classifier: test kappa on the full montage and on EEG+EOG only."""
    lines = [f"{'seed':>4}  {'classifier':34s} {'full':>7} {'eeg_eog_only':>13}"]
    for r in rows:
        for name, label in (("masked_finetune", "fine-tuned over the presets"),
                            ("full_only_finetune", "fine-tuned on full only"),
                            ("presets_probe", "probe over the presets"),
                            ("finetune_from_presets_probe", "fine-tuned from the presets probe"),
                            ("eeg_eog_probe", "probe trained on EEG+EOG alone")):
            if name not in r:  # a record written before the row existed
                continue
            k = r[name]
            full = f"{k['full']:.3f}" if "full" in k else "-"
            lines.append(f"{r['seed']:>4}  {label:34s} {full:>7} {k['eeg_eog_only']:>13.3f}")
    return "\n".join(lines)


def main() -> None:
    """Parse flags, measure every run, print and write the results."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=Path, nargs="+", required=True,
                   help="finished quick-start output folders (only read: store, pre-training checkpoint, Stage probes)")
    p.add_argument("--out_root", type=Path, default=Path("bench_masked_staging_out"),
                   help="where the classifiers of each run are written (OUT_ROOT/seed<S>)")
    p.add_argument("--seeds", type=int, nargs="+", required=True, help="the --seed of each run, same order")
    p.add_argument("--presets", default="all", help="--mask_train_presets of the masked fine-tune (default: all)")
    p.add_argument("--finetune_steps", type=int, default=None,
                   help="steps of the masked fine-tune (default: the run's own; the full-only one keeps the run's)")
    p.add_argument("--results", type=Path, default=RESULTS)
    args = p.parse_args()
    if len(args.seeds) != len(args.runs):
        p.error("give one --seeds value per --runs folder")
    rows = [measure(run, seed, args.out_root / f"seed{seed}", args.presets, args.finetune_steps)
            for run, seed in zip(args.runs, args.seeds)]
    text = table(rows)
    print(text)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps({"machine": platform.platform(), "torch": torch.__version__, "runs": rows,
                                        "table": text}, indent=1) + "\n")
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()

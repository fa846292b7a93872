"""Pre-training recipe variants through the evaluation protocol: which one meets issue 26's criteria?

Issue 26 asks, on generator 2.0 with seeds as the unit, that OSF beat its own random init at 10 % of the
labels and that under every channel preset missing at test time (the probe trained on every channel) it
lose no more than its random init. The quick start's recipe loses 0.043 kappa more than its random init
without EEG (three seeds, `main_protocol.py`). This bench pre-trains OSF with recipe variants (the quick
start's steps, backbone and head, each variant on the same corpus and seeds, so the same random inits)
and reads each with the evaluation protocol (L2 logistic-regression grids chosen on validation,
`osf.evaluation.protocol`; `--settings all`: every setting but the baselines and the CNN ceiling, which do
not depend on the recipe; `--settings missing`: all labels and each preset missing at test time):

- per variant, pre-trained minus random init per task and setting (per-seed rows, hierarchical CI, t-test);
- per variant, the difference in differences against the random init without channels (`degradation_vs_reference`);
- per variant pair, the pre-trained backbones' test metric difference under each setting, per seed, with a
  t-test across seeds (seeds are the unit).

    python benchmarks/bench_protocol_variants.py --out_root OUT --seeds 0 1 2 \
        --variant small --variant full_teacher:teacher_views=full

A variant is ``NAME`` (a packaged recipe, the quick start's ``small`` by default) or ``NAME:key=value,...``
(the small recipe with those OSF (``dino_ours``) fields overridden). Resumable: finished pre-training and
protocol runs are skipped. Prints the tables and writes the JSON (``--results``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from osf.evaluation.protocol import (
    RESULT_FILE,
    ProtocolConfig,
    compare_runs,
    format_comparison,
    mean_test,
    run_protocol,
)
from osf.evaluation.seeds import seed_t_test, verdict
from osf.evaluation.settings import MISSING_PRESETS
from osf.evaluation.study import degradation_vs_reference, format_degradation
from osf.quickstart import Quickstart, QuickstartConfig
from osf.train_config import get_recipe
from osf.utils.steps import StepRunner

RESULTS = Path(__file__).resolve().parent / "results" / "bench_protocol_variants.json"
BASE_RECIPE = "small"
REFERENCE = "labels_100pct"  # every training label, every channel: the setting each degradation is measured from


SETTINGS = ("all", "missing")


def protocol_config(settings: str) -> ProtocolConfig:
    """The protocol without the recipe-independent baselines and ceiling; ``missing``: only all labels and each
    preset missing at test time."""
    if settings == "missing":
        return ProtocolConfig(baselines=(), label_fractions=(1.0,), k_shots=(), masked=False, cross_cohort=False,
                              ceiling_steps=0)
    return ProtocolConfig(baselines=(), ceiling_steps=0)


def parse_variant(spec: str) -> tuple[str, dict[str, Any]]:
    """``NAME`` or ``NAME:key=value,...`` -> (name, OSF field overrides; values read as YAML scalars)."""
    name, _, fields = spec.partition(":")
    overrides: dict[str, Any] = {}
    for item in filter(None, fields.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--variant {spec!r}: expected key=value, got {item!r}")
        overrides[key.strip()] = yaml.safe_load(value)
    return name, overrides


def recipe_file(name: str, overrides: dict[str, Any], out: Path) -> str:
    """The recipe a variant pre-trains with: the packaged one, or the small recipe with OSF fields overridden."""
    if not overrides:
        return name
    base = get_recipe(BASE_RECIPE)
    methods = {m: dict(v) for m, v in base.methods.items()}
    methods["dino_ours"] = {**methods.get("dino_ours", {}), **overrides}
    path = out / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"summary": f"{BASE_RECIPE} with {overrides}", "export": base.export,
                                    "run": dict(base.run), "backbone": dict(base.backbone), "methods": methods}))
    return str(path)


def corpus(out_root: Path, seed: int, log, tiny: bool = False) -> QuickstartConfig:
    """The quick start's corpus (nights, held-out night, store) of ``seed`` under ``out_root/corpus``; its config."""
    root = out_root / "corpus"
    make = QuickstartConfig.tiny if tiny else QuickstartConfig
    cfg = make(output_dir=root, weights_dir=root / "weights", seed=seed)
    data = Quickstart(cfg, log=log)
    StepRunner(data.out, data._data_steps(), data._execute, log=log, label="corpus").run()
    return cfg


def pretrain(data_cfg: QuickstartConfig, variant: str, recipe: str, seed: int, log) -> Quickstart:
    """The quick start's pre-training and export for ``seed`` with ``recipe``, on the corpus of ``data_cfg``."""
    run = data_cfg.output_dir.parent / variant / f"seed_{seed}"
    qs = Quickstart(replace(data_cfg, output_dir=run, weights_dir=run / "weights", seed=seed, recipe=recipe,
                            teacher_views=None, corpus_dir=data_cfg.output_dir), log=log)  # the recipe decides
    StepRunner(qs.out, qs._pretrain_steps(None), qs._execute, log=log, label=f"{variant} seed {seed}").run()
    return qs


def protocol_dir(qs: Quickstart, settings: str, log) -> Path:
    """The protocol's ``settings`` on one pre-trained run (and its own random init); its folder."""
    from osf.downstream.loading import load_any_backbone

    out = qs.out / f"protocol_{settings}"
    if not (out / RESULT_FILE).is_file():
        pretrained, _, _ = load_any_backbone(str(qs.backbone_path))
        random_init, _, _ = load_any_backbone("none", qs.cfg.backbone, seed=qs.cfg.seed)
        run_protocol(qs.store_dir, {"pretrained": pretrained, "random": random_init}, out, protocol_config(settings),
                     cache_dir=qs.out.parent.parent / "feature_cache", log=log,
                     meta={"seed": qs.cfg.seed, "recipe": qs.cfg.recipe, "max_steps": qs.cfg.max_steps})
    return out


def _pretrained_tests(run: Path) -> dict[tuple[str, str], float]:
    """(task, setting) -> the run's pre-trained test metric; NaN where the protocol skipped it (recorded why)."""
    rec = json.loads((run / RESULT_FILE).read_text())
    return {(task, setting): float(entry["models"].get("pretrained", {}).get("test", math.nan))
            for task, t in rec["tasks"].items() for setting, entry in t["settings"].items()}


def variant_difference(a: list[Path], b: list[Path]) -> dict[str, dict[str, dict[str, Any]]]:
    """Pre-trained ``b`` minus pre-trained ``a`` per task and setting: per seed, mean and t-test across seeds."""
    tests_a, tests_b = [_pretrained_tests(r) for r in a], [_pretrained_tests(r) for r in b]
    means_a, means_b = mean_test(a), mean_test(b)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for task, setting in tests_a[0]:
        diffs = [tb.get((task, setting), math.nan) - ta[(task, setting)] for ta, tb in zip(tests_a, tests_b, strict=True)]
        if not np.isfinite(diffs).any():
            continue
        t = seed_t_test(diffs)
        out.setdefault(task, {})[setting] = {
            "per_seed": diffs, "a": means_a[task][setting]["pretrained"], "b": means_b[task][setting]["pretrained"],
            "mean": float(np.nanmean(diffs)), "t_ci95": [t.low, t.high], "p": t.p, "verdict": verdict(t.low, t.high)}
    return out


def format_variant_difference(table: dict, a: str, b: str) -> str:
    """Text: the pre-trained backbones of two variants, per task and setting, seeds as the unit."""
    lines = [f"Pre-trained {b} minus pre-trained {a} (same corpus, seeds and random inits; t-test across seeds)"]
    for task, settings in table.items():
        lines.append(f"\n{task}")
        for name, row in settings.items():
            lo, hi = row["t_ci95"]
            seeds = ", ".join(f"{d:+.3f}" for d in row["per_seed"])
            lines.append(f"  {name:30s} {row['a']:.3f} -> {row['b']:.3f}  {row['mean']:+.3f} [{lo:+.3f}, {hi:+.3f}]"
                         f"  per seed {seeds}  p = {row['p']:.2f}  {row['verdict']}")
    return "\n".join(lines)


def main() -> None:
    """Parse, pre-train every variant x seed, run the missing-channel protocol, print and write the tables."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out_root", type=Path, required=True, help="runs, corpus and feature cache go here")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (the first seeds the corpus)")
    ap.add_argument("--variant", action="append", default=None,
                    help="NAME or NAME:key=value,... (OSF fields over the small recipe); the first is the reference")
    ap.add_argument("--settings", choices=SETTINGS, default="all",
                    help="all: every protocol setting but baselines and ceiling; missing: all labels + missing presets")
    ap.add_argument("--n_boot", type=int, default=1000, help="bootstrap resamples of the per-seed CIs")
    ap.add_argument("--results", type=Path, default=RESULTS, help="JSON written here")
    ap.add_argument("--tiny", action="store_true", help="the quick start's test sizes: the machinery in a minute")
    args = ap.parse_args()
    variants = [parse_variant(v) for v in (args.variant or [BASE_RECIPE])]

    def log(line: str) -> None:
        print(line, flush=True)

    data_cfg = corpus(args.out_root, args.seeds[0], log, args.tiny)
    runs: dict[str, list[Path]] = {}
    for name, overrides in variants:
        recipe = recipe_file(name, overrides, args.out_root / "recipes")
        runs[name] = [protocol_dir(pretrain(data_cfg, name, recipe, s, log), args.settings, log) for s in args.seeds]

    record: dict[str, Any] = {"date": datetime.date.today().isoformat(), "machine": platform.platform(),
                              "seeds": args.seeds, "settings": args.settings, "presets": list(MISSING_PRESETS),
                              "variants": dict(variants),
                              "runs": {n: [str(d) for d in dirs] for n, dirs in runs.items()},
                              "pretrained_minus_random": {}, "degradation": {}, "variant_difference": {}}
    text = []
    for name, dirs in runs.items():
        comparison = compare_runs(dirs, "pretrained", "random", n_boot=args.n_boot)
        record["pretrained_minus_random"][name] = {t: {s: r.to_dict() for s, r in ss.items()}
                                                   for t, ss in comparison.items()}
        record["degradation"][name] = degradation_vs_reference(comparison, REFERENCE)
        text += [f"== {name} ==", format_comparison(comparison, "pretrained", "random"), "",
                 format_degradation(record["degradation"][name]), ""]
    reference = variants[0][0]
    for name, _ in variants[1:]:
        diff = variant_difference(runs[reference], runs[name])
        record["variant_difference"][f"{name}-{reference}"] = diff
        text += [format_variant_difference(diff, reference, name), ""]
    print("\n".join(text))
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(record, indent=1, default=float) + "\n")
    args.results.with_suffix(".txt").write_text("\n".join(text) + "\n")


if __name__ == "__main__":
    main()

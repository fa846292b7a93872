"""Missing channels at test time: does a pre-training recipe make OSF degrade no more than its random init?

Issue 26's criterion: with a channel preset missing at test time (the probe trained on every channel),
the pre-trained backbone's loss from the full montage is no larger than its own random init's. On
generator 2.0 the quick start's recipe loses 0.043 kappa more than its random init without EEG (three
seeds, `main_protocol.py`). This bench pre-trains OSF with recipe variants (the quick start's steps,
backbone and head, each variant on the same corpus and seeds, so the same random inits) and reads each
with the evaluation protocol's missing-channel settings only (L2 logistic-regression grids chosen on
validation, `osf.evaluation.protocol`):

- per variant and seed, the difference in differences against the random init (`degradation_vs_reference`);
- per variant pair, the pre-trained backbones' test metric difference under each setting, per seed, with a
  t-test across seeds (seeds are the unit).

    python benchmarks/bench_missing_channels.py --out_root OUT --seeds 0 1 2 \
        --variant small --variant full_teacher:teacher_views=full

A variant is ``NAME`` (a packaged recipe, the quick start's ``small`` by default) or ``NAME:key=value,...``
(the small recipe with those OSF (``dino_ours``) fields overridden). Resumable: finished pre-training and
protocol runs are skipped. Prints the tables and writes the JSON (``--results``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from osf.evaluation.protocol import RESULT_FILE, ProtocolConfig, compare_runs, run_protocol
from osf.evaluation.seeds import seed_t_test, verdict
from osf.evaluation.settings import MISSING_PRESETS
from osf.evaluation.study import degradation_vs_reference, format_degradation
from osf.quickstart import Quickstart, QuickstartConfig
from osf.train_config import get_recipe
from osf.utils.steps import StepRunner

RESULTS = Path(__file__).resolve().parent / "results" / "bench_missing_channels.json"
BASE_RECIPE = "small"
REFERENCE = "labels_100pct"  # every training label, every channel: the setting each degradation is measured from


def missing_only_config() -> ProtocolConfig:
    """The protocol reduced to the all-labels setting and each preset missing at test time (no baselines)."""
    return ProtocolConfig(baselines=(), label_fractions=(1.0,), k_shots=(), masked=False, cross_cohort=False,
                          ceiling_steps=0)


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


def pretrain(out_root: Path, variant: str, recipe: str, seed: int, corpus_seed: int, log, tiny: bool = False
             ) -> Quickstart:
    """The quick start's corpus (first seed) and its pre-training and export for ``seed`` with ``recipe``."""
    corpus = out_root / "corpus"
    make = QuickstartConfig.tiny if tiny else QuickstartConfig
    data_cfg = make(output_dir=corpus, weights_dir=corpus / "weights", seed=corpus_seed)
    data = Quickstart(data_cfg, log=log)
    StepRunner(data.out, data._data_steps(), data._execute, log=log, label="corpus").run()
    run = out_root / variant / f"seed_{seed}"
    qs = Quickstart(replace(data_cfg, output_dir=run, weights_dir=run / "weights", seed=seed, recipe=recipe,
                            corpus_dir=corpus), log=log)
    StepRunner(qs.out, qs._pretrain_steps(None), qs._execute, log=log, label=f"{variant} seed {seed}").run()
    return qs


def protocol_dir(qs: Quickstart, log) -> Path:
    """The missing-channel protocol on one pre-trained run (and its own random init); its folder."""
    from osf.downstream.loading import load_any_backbone

    out = qs.out / "protocol_missing"
    if not (out / RESULT_FILE).is_file():
        pretrained, _, _ = load_any_backbone(str(qs.backbone_path))
        random_init, _, _ = load_any_backbone("none", qs.cfg.backbone, seed=qs.cfg.seed)
        run_protocol(qs.store_dir, {"pretrained": pretrained, "random": random_init}, out, missing_only_config(),
                     cache_dir=qs.out.parent.parent / "feature_cache", log=log,
                     meta={"seed": qs.cfg.seed, "recipe": qs.cfg.recipe, "max_steps": qs.cfg.max_steps})
    return out


def _test(run: Path, task: str, setting: str, model: str = "pretrained") -> float:
    rec = json.loads((run / RESULT_FILE).read_text())
    return float(rec["tasks"][task]["settings"][setting]["models"][model]["test"])


def variant_difference(a: list[Path], b: list[Path]) -> dict[str, dict[str, dict[str, Any]]]:
    """Pre-trained ``b`` minus pre-trained ``a`` per task and setting: per seed, mean and t-test across seeds."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    first = json.loads((a[0] / RESULT_FILE).read_text())
    for task, entry in first["tasks"].items():
        for setting in entry["settings"]:
            diffs = [_test(rb, task, setting) - _test(ra, task, setting) for ra, rb in zip(a, b, strict=True)]
            t = seed_t_test(diffs)
            out.setdefault(task, {})[setting] = {
                "per_seed": diffs, "a": float(np.mean([_test(r, task, setting) for r in a])),
                "b": float(np.mean([_test(r, task, setting) for r in b])), "mean": float(np.mean(diffs)),
                "t_ci95": [t.low, t.high], "p": t.p, "verdict": verdict(t.low, t.high)}
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
    ap.add_argument("--n_boot", type=int, default=1000, help="bootstrap resamples of the per-seed CIs")
    ap.add_argument("--results", type=Path, default=RESULTS, help="JSON written here")
    ap.add_argument("--tiny", action="store_true", help="the quick start's test sizes: the machinery in a minute")
    args = ap.parse_args()
    variants = [parse_variant(v) for v in (args.variant or [BASE_RECIPE])]

    def log(line: str) -> None:
        print(line, flush=True)

    runs: dict[str, list[Path]] = {}
    for name, overrides in variants:
        recipe = recipe_file(name, overrides, args.out_root / "recipes")
        runs[name] = [protocol_dir(pretrain(args.out_root, name, recipe, s, args.seeds[0], log, args.tiny), log)
                      for s in args.seeds]

    record: dict[str, Any] = {"date": datetime.date.today().isoformat(), "machine": platform.platform(),
                              "seeds": args.seeds, "variants": {n: o for n, o in variants}, "degradation": {},
                              "variant_difference": {}}
    text = []
    for name, dirs in runs.items():
        degradation = degradation_vs_reference(compare_runs(dirs, "pretrained", "random", n_boot=args.n_boot), REFERENCE)
        record["degradation"][name] = degradation
        text += [f"== {name} ==", format_degradation(degradation), ""]
    reference = variants[0][0]
    for name, _ in variants[1:]:
        diff = variant_difference(runs[reference], runs[name])
        record["variant_difference"][f"{name}-{reference}"] = diff
        text += [format_variant_difference(diff, reference, name), ""]
    record["presets"] = list(MISSING_PRESETS)
    print("\n".join(text))
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(record, indent=1, default=float) + "\n")


if __name__ == "__main__":
    main()

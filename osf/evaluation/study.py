"""The protocol over finished quick-start runs: one protocol run per seed, then the seed-level tables.

A quick-start run (``main_quickstart.py --seed S``) leaves a store, an exported backbone and its
results; :func:`protocol_for_quickstart` runs the evaluation protocol on them with the run's own
random init (the backbone the pre-training started from: ``load_any_backbone("none", name, seed=S)``
draws it with the seed the pre-training was seeded with), and :func:`protocol_tables` compares the
runs of several seeds: pre-trained minus random init (and minus each baseline) per task and setting,
with per-seed rows, the hierarchical CI and the t-test across seeds.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from osf.evaluation.protocol import (
    CEILING,
    RESULT_FILE,
    ProtocolConfig,
    compare_runs,
    format_comparison,
    mean_test,
    run_protocol,
)
from osf.evaluation.seeds import SeedLevelDifference, seed_t_test, verdict

PROTOCOL_DIR = "protocol"
CHANNEL_SETTINGS = ("missing_", "masked_")  # the settings that take channels away (osf.evaluation.settings)


def _generator_version(run_dir: Path, results: dict[str, Any]) -> str | None:
    """The synthetic generator of the run's corpus (its results say; older runs: the corpus manifest)."""
    if results.get("synthetic_generator_version"):
        return results["synthetic_generator_version"]
    manifest = run_dir / "synthetic" / "manifest.json"
    return json.loads(manifest.read_text()).get("generator_version") if manifest.is_file() else None


def seed_runs(runs: Sequence[str | Path]) -> list[Path]:
    """Each quick-start run, a ``--seeds N`` run replaced by its N seeds' folders (in seed order)."""
    out: list[Path] = []
    for run in map(Path, runs):
        results = run / "results.json"
        seeds = json.loads(results.read_text()).get("seed_level") if results.is_file() else None
        out += [Path(d) for d in seeds["output_dirs"]] if seeds else [run]
    return out


def protocol_for_quickstart(run_dir: str | Path, cfg: ProtocolConfig | None = None, out_dir: str | Path | None = None,
                            log: Callable[[str], None] = print, cache_dir: str | Path | None = None) -> Path:
    """Run the protocol on a finished quick-start run (its store, backbone and seed); returns its folder.

    Features are read from (and added to) ``cache_dir``, by default the run's own feature cache, where its
    probes left the full-montage features of both backbones.
    """
    from osf.downstream.loading import load_any_backbone

    run_dir = Path(run_dir)
    results_path = run_dir / "results.json"
    if not results_path.is_file():
        raise FileNotFoundError(f"{results_path}: not a finished quick-start run (no results.json)")
    results = json.loads(results_path.read_text())
    qs_cfg, paths = results["config"], results["paths"]
    seed = int(qs_cfg["seed"])
    pretrained, _, _ = load_any_backbone(paths["backbone"])
    # the pre-training seeds torch with its seed before building the student first: these are its starting weights
    random_init, _, _ = load_any_backbone("none", qs_cfg["backbone"], seed=seed)
    out = Path(out_dir) if out_dir is not None else run_dir / PROTOCOL_DIR
    meta = {"seed": seed, "quickstart": str(run_dir), "generator_version": _generator_version(run_dir, results),
            "backbone": paths["backbone"], "max_steps": qs_cfg.get("max_steps")}
    log(f"protocol on {run_dir} (seed {seed}, generator {meta['generator_version']})")
    # the ceiling depends on the store only: kept beside it, so every training seed of one corpus reads one
    run_protocol(paths["store"], {"pretrained": pretrained, "random": random_init}, out, cfg, log=log, meta=meta,
                 cache_dir=Path(cache_dir) if cache_dir is not None else run_dir / "feature_cache",
                 ceiling_dir=Path(paths["store"]).parent / "protocol_ceilings")
    return out


def protocol_tables(protocol_dirs: Sequence[str | Path], n_boot: int = 1000,
                    against: Sequence[str] = ("random", "power48", "yasa_style", CEILING)) -> tuple[dict[str, Any], str]:
    """Seed-level comparisons of the pre-trained backbone against each of ``against``; (record, text)."""
    dirs = [Path(d) for d in protocol_dirs]
    for d in dirs:
        if not (d / RESULT_FILE).is_file():
            raise FileNotFoundError(f"{d / RESULT_FILE}: not a protocol run")
    means = mean_test(dirs)
    record: dict[str, Any] = {"runs": [str(d) for d in dirs], "mean_test": means, "pretrained_minus": {}}
    text = [_means_table(means)]
    for other in against:
        comparison = compare_runs(dirs, "pretrained", other, n_boot=n_boot)
        record["pretrained_minus"][other] = {t: {s: r.to_dict() for s, r in ss.items()} for t, ss in comparison.items()}
        text += ["", format_comparison(comparison, "pretrained", other)]
        if other == "random":
            record["degradation_vs_random"] = degradation_vs_reference(comparison)
            text += ["", format_degradation(record["degradation_vs_random"])]
    return record, "\n".join(text)


def degradation_vs_reference(comparison: Mapping[str, Mapping[str, SeedLevelDifference]],
                             reference: str = "labels_100pct") -> dict[str, dict[str, dict[str, Any]]]:
    """Does pre-training degrade less than its random init without channels? Per task and channel setting.

    Per seed, (pre-trained - random) under the setting minus (pre-trained - random) on every channel: above 0
    the pre-trained backbone loses less than its random init. Decided across seeds (t-test; seeds the unit).
    """
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for task, settings in comparison.items():
        if reference not in settings:
            continue
        full = {r.label: r.diff for r in settings[reference].per_seed}
        for name, result in settings.items():
            if not name.startswith(CHANNEL_SETTINGS):
                continue
            per_seed = {r.label: r.diff - full[r.label] for r in result.per_seed if r.label in full}
            t = seed_t_test(list(per_seed.values()))
            out.setdefault(task, {})[name] = {"per_seed": per_seed, "mean": float(np.mean(list(per_seed.values()))),
                                              "t_ci95": [t.low, t.high], "p": t.p, "df": t.df,
                                              "verdict": verdict(t.low, t.high)}
    return out


def format_degradation(table: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str:
    """Text: per task and channel setting, the per-seed differences-in-differences and the t-test across seeds."""
    lines = [("Degradation against the random init without channels: (pre-trained - random) under the setting minus "
              "(pre-trained - random) on every channel; > 0: pre-training loses less (t-test across seeds)")]
    for task, settings in table.items():
        lines.append(f"\n{task}")
        for name, row in settings.items():
            seeds = ", ".join(f"{v:+.3f}" for v in row["per_seed"].values())
            lo, hi = row["t_ci95"]
            lines.append(f"  {name:34s} {row['mean']:+.3f} [{lo:+.3f}, {hi:+.3f}]  per seed {seeds}  "
                         f"p = {row['p']:.2f}  {row['verdict']}")
    return "\n".join(lines)


def run_protocol_study(runs: Sequence[str | Path], output_dir: str | Path, cfg: ProtocolConfig | None = None,
                       n_boot: int = 1000, rerun: bool = False, log: Callable[[str], None] = print) -> str:
    """``main_protocol.py``: the protocol on each quick-start run (unless done), then the seed-level tables
    in ``output_dir/protocol_tables.{json,txt}``; returns the text."""
    from osf.utils.atomic import atomic_write_text

    runs = seed_runs(runs)
    if not runs:
        raise ValueError("no quick-start runs given")
    for run in runs:
        if rerun or not (run / PROTOCOL_DIR / RESULT_FILE).is_file():
            protocol_for_quickstart(run, cfg, log=log)
    record, text = protocol_tables([run / PROTOCOL_DIR for run in runs], n_boot=n_boot)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "protocol_tables.json", json.dumps(record, indent=1, default=float) + "\n")
    atomic_write_text(out / "protocol_tables.txt", text + "\n")
    return text


def _means_table(means: dict[str, dict[str, dict[str, float]]]) -> str:
    """Mean test metric over seeds: one row per task and setting, one column per model."""
    order = ("pretrained", "random", "power48", "yasa_style", CEILING)
    models = sorted({m for ss in means.values() for ms in ss.values() for m in ms},
                    key=lambda m: order.index(m) if m in order else len(order))
    lines = ["Mean test metric over seeds (Stage: kappa; events: AUROC):", "",
             f"  {'task':20s} {'setting':30s} " + " ".join(f"{m:>11s}" for m in models)]
    for task, settings in means.items():
        for setting, ms in settings.items():
            cells = " ".join(f"{ms[m]:11.3f}" if m in ms else f"{'-':>11s}" for m in models)
            lines.append(f"  {task:20s} {setting:30s} {cells}")
    return "\n".join(lines)

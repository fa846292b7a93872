"""The steps of SleepBench-mini: corpus, store, pre-training per objective, probes, k-shot, scaling, ceilings.

Every step is an entry point's command run in this process (:mod:`osf.entry_calls`), with a stamp so
a rerun skips what is finished (:mod:`osf.utils.steps`). Probes of one backbone and channel preset
share the feature cache, so each backbone runs once per preset and every task trains on cached features.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from osf import config
from osf.downstream.ceilings import PREDICTIONS_FILE, RESULT_FILE
from osf.sleepbench.config import POOLING_CHOICES, RANDOM, SleepBenchConfig
from osf.study import (
    CorpusSpec,
    PretrainSpec,
    choose_pooling,
    corpus_steps,
    entry_step,
    pretrain_steps,
    random_init_flags,
)
from osf.utils.steps import Flags, Step

# Relative run times for the progress bar's ETA (measured on 2 CPU cores at the default sizes).
COST = {"cohort": 60.0, "store": 10.0, "pretrain_step": 0.8, "export": 1.0, "probe": 6.0, "kshot": 6.0,
        "ceiling_power48": 10.0, "ceiling_handcrafted": 15.0, "ceiling_supervised": 60.0}


class SleepBenchLayout:
    """Where every output of a run lives under ``output_dir``."""

    def __init__(self, cfg: SleepBenchConfig) -> None:
        self.cfg = cfg
        self.out = Path(cfg.output_dir).resolve()

    synthetic = property(lambda self: self.out / "synthetic")
    store = property(lambda self: self.out / "store")
    feature_cache = property(lambda self: self.out / "feature_cache")
    raw_results = property(lambda self: self.out / "raw" / "results.csv")

    def seed_dir(self, seed: int) -> Path:
        """Outputs of one training seed."""
        return self.out / f"seed{seed}"

    def pretrain_ckpt(self, run: str, seed: int) -> Path:
        """Last Lightning checkpoint of a pre-training run."""
        return self.seed_dir(seed) / "pretrain" / run / "checkpoints" / "last.ckpt"

    def backbone(self, run: str, seed: int) -> Path:
        """The exported backbone of a pre-training run (released format)."""
        return self.seed_dir(seed) / "backbones" / f"{run}.pth"

    def pooling_dir(self, backbone: str, pooling: str, seed: int) -> Path:
        """The validation staging probe that chooses a backbone's pooling."""
        return self.seed_dir(seed) / "pooling" / backbone / pooling

    def probe_dir(self, backbone: str, preset: str, task: str, seed: int) -> Path:
        """One linear probe of the main grid (Stage on ``full`` is the chosen pooling's run)."""
        if preset == "full" and task == "Stage":
            return self.pooling_dir(backbone, self.chosen_pooling(backbone, seed), seed)
        return self.seed_dir(seed) / "probes" / backbone / preset / config.LABEL_COLUMNS[task]

    def kshot_dir(self, backbone: str, k: int, seed: int) -> Path:
        """A k-shot staging probe (several draws)."""
        return self.seed_dir(seed) / "kshot" / backbone / f"k{k}"

    def scaling_run(self, size: str, fraction: float) -> str:
        """Run name of a scaling pre-training; the main run at the default size and all data."""
        if size == self.cfg.backbone and fraction == 1.0:
            return self.cfg.scaling_method
        return f"{self.cfg.scaling_method}_{size}_pct{fraction:g}"

    def scaling_probe_dir(self, run: str, task: str, seed: int) -> Path:
        """A probe of a scaling run (full montage)."""
        return self.seed_dir(seed) / "scaling" / run / config.LABEL_COLUMNS[task]

    def ceiling_dir(self, kind: str, preset: str, task: str, seed: int) -> Path:
        """A handcrafted-feature or supervised ceiling."""
        return self.seed_dir(seed) / "ceilings" / kind / preset / config.LABEL_COLUMNS[task]

    def chosen_pooling(self, backbone: str, seed: int) -> str:
        """The pooling with the better validation staging kappa (CLS first on ties); FileNotFoundError before."""
        return choose_pooling({p: self.pooling_dir(backbone, p, seed) / "probe.json" for p in POOLING_CHOICES}, "Stage")


def _outputs(folder: Path, run_name: str = "probe") -> list[Path]:
    return [folder / f"{run_name}.json", folder / f"{run_name}_test_predictions.npz"]


class SleepBenchSteps:
    """Builds the ordered step list of a config (and knows where each step writes)."""

    def __init__(self, cfg: SleepBenchConfig) -> None:
        self.cfg = cfg
        self.at = SleepBenchLayout(cfg)

    def build(self) -> list[Step]:
        """Every step in run order: data, then per seed pre-training, probes, k-shot, scaling, ceilings."""
        steps = self._data_steps()
        for seed in range(self.cfg.seeds):
            steps += self._pretrain_steps(seed)
            steps += self._probe_steps(seed)
            steps += self._kshot_steps(seed)
            steps += self._scaling_steps(seed)
            steps += self._ceiling_steps(seed)
        return steps

    # --- data ---------------------------------------------------------------------------------
    def corpus(self) -> CorpusSpec:
        """The corpus and its store (seed 0 for every training seed: the seeds vary training, not data)."""
        cfg, at = self.cfg, self.at
        return CorpusSpec(at.synthetic, at.store, cfg.cohorts, cfg.nights_per_cohort, cfg.hours, cfg.split_fractions,
                          0, cfg.night_workers, progress=False, cohort_cost=COST["cohort"], store_cost=COST["store"],
                          generator=cfg.generator)

    def _data_steps(self) -> list[Step]:
        return corpus_steps(self.corpus())

    @property
    def store_step(self) -> str:
        """The last data step: everything trained needs it."""
        return self.corpus().store_step

    # --- pre-training -------------------------------------------------------------------------
    def _pretrain_pair(self, run: str, method: str, size: str, fraction: float, seed: int) -> list[Step]:
        """Pre-train one objective and export its backbone."""
        cfg, at = self.cfg, self.at
        ckpt = at.pretrain_ckpt(run, seed)
        spec = PretrainSpec(
            run, method, size, at.store, ckpt.parents[2], at.backbone(run, seed), cfg.recipe, cfg.batch_size,
            cfg.pretrain_steps, seed, cfg.num_workers, val_batches=2, train_data_pct=fraction, progress_bar=False,
            step_suffix=f"_{run}_s{seed}", needs=(self.store_step,), cost=COST["pretrain_step"] * cfg.pretrain_steps,
            export_cost=COST["export"], description=f"pre-train {method} on {size}, {cfg.pretrain_steps} steps, "
                                                    f"{fraction:g} of the training subjects, seed {seed}")
        return pretrain_steps(spec, f"export the {run} backbone")

    def _pretrain_steps(self, seed: int) -> list[Step]:
        return [s for m in self.cfg.methods for s in self._pretrain_pair(m, m, self.cfg.backbone, 1.0, seed)]

    # --- probes -------------------------------------------------------------------------------
    def _backbone_flags(self, backbone: str, seed: int, size: str | None = None) -> Flags:
        if backbone == RANDOM:
            return random_init_flags(size or self.cfg.backbone)
        return {"ckpt_path": str(self.at.backbone(backbone, seed)), "model_name": backbone}

    def _needs(self, backbone: str, seed: int) -> tuple[str, ...]:
        return (self.store_step,) if backbone == RANDOM else (f"export_{backbone}_s{seed}",)

    def _probe(self, name: str, description: str, backbone: str, seed: int, out: Path, task: str, preset: str,
               flags: Callable[[], Flags], needs: tuple[str, ...], cost: float = COST["probe"]) -> Step:
        cfg, at = self.cfg, self.at

        def all_flags() -> Flags:
            return {**self._backbone_flags(backbone, seed), "data_dir": str(at.store), "eval_label": task,
                    "eval_channels": preset, "max_steps": cfg.probe_steps, "num_workers": cfg.num_workers,
                    "seed": seed, "n_boot": cfg.n_boot, "run_name": "probe", "export_classifier": False,
                    "accelerator": "cpu", "output_dir": str(out), "feature_cache_dir": str(at.feature_cache),
                    "results_csv": str(at.raw_results), **flags()}

        return entry_step(name, description, "main_finetune.py", all_flags, lambda: _outputs(out),
                          needs=needs, clean=lambda: [out], cost=cost)

    def backbones(self) -> tuple[str, ...]:
        """The probed backbones: every objective and the random-init baseline."""
        return (*self.cfg.methods, RANDOM)

    def _probe_steps(self, seed: int) -> list[Step]:
        cfg, at = self.cfg, self.at
        steps = []
        for b in self.backbones():
            for pooling in POOLING_CHOICES:
                steps.append(self._probe(
                    f"pooling_{b}_{pooling}_s{seed}", f"staging probe of {b} with {pooling} pooling (chooses on val)",
                    b, seed, at.pooling_dir(b, pooling, seed), "Stage", "full",
                    # one backbone pass caches every choice's features: the other choices' probes only read them
                    lambda pooling=pooling: {"pooling": pooling,
                                             "cache_poolings": ",".join(p for p in POOLING_CHOICES if p != pooling)},
                    self._needs(b, seed)))
            chose = tuple(f"pooling_{b}_{p}_s{seed}" for p in POOLING_CHOICES)
            for preset in cfg.presets:
                for task in cfg.tasks:
                    if preset == "full" and task == "Stage":
                        continue
                    steps.append(self._probe(
                        f"probe_{b}_{preset}_{config.LABEL_COLUMNS[task]}_s{seed}", f"linear probe, {task}, {preset}, {b}",
                        b, seed, at.probe_dir(b, preset, task, seed), task, preset,
                        lambda b=b: {"pooling": at.chosen_pooling(b, seed)}, (*self._needs(b, seed), *chose)))
        return steps

    def _kshot_steps(self, seed: int) -> list[Step]:
        cfg, at = self.cfg, self.at
        return [
            self._probe(f"kshot_{b}_k{k}_s{seed}", f"{k}-shot staging probe of {b} ({cfg.kshot_draws} draws)",
                        b, seed, at.kshot_dir(b, k, seed), "Stage", "full",
                        lambda b=b, k=k: {"pooling": at.chosen_pooling(b, seed), "n_train_samples": k,
                                          "n_seeds": cfg.kshot_draws},
                        (*self._needs(b, seed), *(f"pooling_{b}_{p}_s{seed}" for p in POOLING_CHOICES)),
                        cost=COST["kshot"])
            for b in self.backbones() for k in cfg.kshots
        ]

    def _scaling_steps(self, seed: int) -> list[Step]:
        cfg, at = self.cfg, self.at
        method = cfg.scaling_method
        steps = []
        for size in cfg.scaling_sizes:
            for fraction in cfg.scaling_fractions:
                run = at.scaling_run(size, fraction)
                if run != method:
                    steps += self._pretrain_pair(run, method, size, fraction, seed)
                for task in cfg.tasks:
                    steps.append(self._probe(
                        f"scaling_{run}_{config.LABEL_COLUMNS[task]}_s{seed}",
                        f"linear probe, {task}, scaling run {run}", run, seed, at.scaling_probe_dir(run, task, seed),
                        task, "full",
                        lambda fraction=fraction: {"pooling": at.chosen_pooling(method, seed),
                                                   "pretrain_samples": pretrain_samples(at.store, fraction, seed)},
                        (f"export_{run}_s{seed}", *(f"pooling_{method}_{p}_s{seed}" for p in POOLING_CHOICES))))
        return steps

    # --- ceilings -----------------------------------------------------------------------------
    def _ceiling_steps(self, seed: int) -> list[Step]:
        cfg, at = self.cfg, self.at
        cells = [(p, "Stage") for p in cfg.presets] + [("full", t) for t in cfg.tasks if t != "Stage"]
        steps = []
        for kind in cfg.ceilings:
            for preset, task in cells:
                out = at.ceiling_dir(kind, preset, task, seed)
                steps.append(entry_step(
                    f"ceiling_{kind}_{preset}_{config.LABEL_COLUMNS[task]}_s{seed}",
                    f"{kind} ceiling, {task}, {preset}", "main_ceiling.py",
                    lambda kind=kind, preset=preset, task=task, out=out: {
                        "kind": kind, "data_dir": str(at.store), "eval_channels": preset, "eval_label": task,
                        "seed": seed, "n_boot": cfg.n_boot, "max_steps": cfg.ceiling_steps, "output_dir": str(out),
                        # every preset and task of the handcrafted kind reads the store's features from here
                        "feature_cache_dir": str(at.feature_cache) if kind == "handcrafted" else None},
                    lambda out=out: [out / RESULT_FILE, out / PREDICTIONS_FILE],
                    needs=(self.store_step,), clean=lambda out=out: [out], cost=COST[f"ceiling_{kind}"]))
        return steps


def pretrain_samples(store: Path, fraction: float, seed: int) -> int:
    """Training epochs a pre-training run on ``fraction`` of the training subjects sees (scaling x axis)."""
    from osf.datasets.datamodule import SleepDataModule

    dm = SleepDataModule(str(store), task="pretrain", train_data_pct=float(fraction), seed=seed)
    dm.setup()
    return int(dm.summary()["splits"]["train"]["epochs"])

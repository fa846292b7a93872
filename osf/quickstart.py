"""The quick start: the whole OSF pipeline on a synthetic cohort, from nothing to a staged night.

Every step is the library function behind one of the documented command-line entry points: it is
printed as that entry point's shell command and run in this process by calling the function
(``osf.datasets.synthetic.generate_cohort``, ``osf.datasets.ingest.ingest_dataset``,
``osf.models.training.run_pretrain``, ``osf.models.export.export_pretrained_backbone``,
``osf.downstream.pipeline.run_downstream``, ``osf.predict.night.predict_night``). A step's flags are
one dict that gives both the printed command and the function's arguments. Multi-GPU runs (DDP)
need each step in its own process: ``main_pipelines/main_quickstart.py`` then runs the commands.

1. ``cohort``          main_synthetic.py   synthetic PSG cohorts (EDF + NSRR XML) in the NSRR layout
2. ``heldout``         main_synthetic.py   one more night from another seed, never seen by any model
3. ``store_<cohort>``  main_preprocess.py  every cohort into one epoch store
4. ``pretrain``        main_pretrain.py    OSF (``dino_ours``) self-supervised pre-training
5. ``export``          main_export.py      the teacher backbone in the released checkpoint format
6. ``probe_*``         main_finetune.py    linear probes, four tasks x (pre-trained, random-init)
7. ``probe_*_stage_presets`` main_finetune.py  the Stage probe (its chosen pooling) over --finetune_presets
   ``finetune``        main_finetune.py    --finetune_backbone: the staging classifier (LP-FT from that probe)
   ``finetune_random``  main_finetune.py    the same LP-FT from random init at equal steps (the baseline)
8. ``predict``         main_predict.py     stage the held-out night: fine-tuned staging classifier
                                           + the pre-trained backbone's event probes

A step that succeeds leaves a stamp (its command) in ``<output_dir>/.stages/``. On a rerun a step is
skipped when its stamp holds the same command, its outputs exist and none of the steps it depends on
ran again; so a rerun with the same flags only prints the results, and changing e.g. ``--max_steps``
reruns pre-training and what depends on it, nothing else.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from osf import config
from osf.datasets.synthetic.generate import DEFAULT_GENERATOR
from osf.downstream.metrics import load_predictions, paired_difference
from osf.downstream.results import RunSummary
from osf.predict.writers import write_json
from osf.study import (
    CorpusSpec,
    PretrainSpec,
    choose_pooling,
    corpus_steps,
    entry_step,
    pretrain_steps,
    random_init_flags,
)
from osf.tasks import get_task, studied_tasks
from osf.train_config import get_recipe
from osf.utils import corpus_sizes
from osf.utils.config_fields import option
from osf.utils.steps import Flags, Step, StepRunner

INITS: tuple[str, ...] = ("pretrained", "random")
FINETUNED = "Stage (fine-tuned)"  # the seed-level row of the staging classifier vs its random-init LP-FT
_OUTPUT_DIR, _WEIGHTS_DIR = Path("quickstart_out"), Path("pretrained_weights")


@dataclass
class QuickstartConfig:
    """Sizes and places of the quick start (defaults: 7.5 min per seed on 2 CPU cores; README, "Quick start")."""

    output_dir: Path = option(_OUTPUT_DIR, help="everything but the backbone goes here")  # noqa: RUF009 (a field)
    weights_dir: Path = option(_WEIGHTS_DIR, help="where the backbone is exported")  # noqa: RUF009 (a field)
    cohorts: tuple[str, ...] = option(("shhs", "mros", "mesa"), help="synthetic cohort presets")
    nights: int = option(42, help="nights in total, spread over the cohorts (one subject each)")
    # per night: the quick start's 6 minutes (cohort, stores and features scale with it)
    hours: float = option(0.8, help="hours per night")
    generator: int = option(DEFAULT_GENERATOR, help="synthetic generator major version (2: whole-night windows, "
                            "scorer-defined cues; 1 reproduces generator 1.2's data)")
    heldout_cohort: str = option("generic", help="cohort preset of the held-out night (full 12-channel montage)",
                                 cli=False)
    # of subjects: 42 nights leave ~10 test subjects, enough for a subject-bootstrap CI of a difference
    split_fractions: str = option("0.5,0.25,0.25", help="train,val,test fractions of the subjects", cli=False)
    tasks: tuple[str, ...] = option(
        default_factory=studied_tasks,
        help="probe tasks, Stage first (the others give the event heads; default: the task registry's evaluated "
             f"tasks, {','.join(studied_tasks())})")
    backbone: str = option("vit_nano", help="backbone constructor, e.g. vit_nano, vit_small, vit_base")
    recipe: str = option("small", help="pre-training recipe of train_config.RECIPES (the small-scale recipe: lr per "
                                       "256 samples, scaled with the batch)")
    # 150 probe as well as 200: benchmarks/README.md
    max_steps: int = option(150, help="pre-training steps")
    lr: float | None = option(None, help="pre-training peak learning rate per 256 samples (default: the recipe's)")
    # What the DINO head reads: the channel groups, as the probes do (loss falls to 0.4-0.5 log K, no collapse
    # warning in three seeds where the recipe's patch mean rose to 0.7-0.8 and collapsed once; probes alike).
    head_pooling: str = option("groups", help="what the OSF head reads in pre-training: cls, mean or groups")
    # The teacher encodes the recorded epoch while the student keeps OSF's channel-dropped views: with the
    # student's views as the teacher's ("same", the recipe's) the backbone lost 0.045 kappa more than its random
    # init without EEG (three seeds); with "full" no channel preset degrades more than the random init
    # (benchmarks/bench_protocol_variants.py; README, "Evaluation that decides").
    teacher_views: str | None = option("full", help="what the OSF teacher encodes in pre-training: the epoch as "
                                       "recorded (full) or the student's channel-dropped views (same)")
    # Probe features (osf.downstream.features.POOLINGS) tried per backbone and task; the one with the better
    # validation score is reported (a random backbone's cues sit in the channel groups, a pre-trained one's CLS
    # carries them after iBOT: one fixed pooling would favour one of the two). One backbone pass serves all.
    poolings: tuple[str, ...] = option(("cls", "groups", "cls_groups", "groups_std"),
                                       help="probe features tried per backbone and task, the best on validation "
                                            "reported: cls, mean, groups, cls_groups, groups_std")
    batch_size: int = option(32, help="batch size of pre-training and fine-tuning (probes: 4x)")
    val_batches: int = option(4, help="pre-training validation batches (validation runs once, at the end)", cli=False)
    probe_steps: int = option(300, help="linear-probe steps per task")
    # started at the Stage probe (LP-FT): 100 steps beat 200 from a random head
    finetune_steps: int = option(100, help="fine-tuning steps of the staging classifier")
    # measured (benchmarks/bench_masked_staging.py; README, "Channel presets"): generator 2.0, seeds 0-2, LP-FT from
    # the probe over these presets: 0.793 full, 0.759 EEG+EOG-only (the EEG+EOG-only probe 0.735; fine-tuned on the
    # full montage only 0.701 / 0.10); generator 1.2, seed 0: all six presets spread 100 steps too thin (0.816 / 0.686)
    finetune_presets: str = option("full,eeg_eog_only", help="channel presets the staging classifier is fine-tuned "
                                   "over (each training epoch through one, drawn at random; 'all' = every preset, '' = "
                                   "the full montage only), so it stages the montages a night has; its validation "
                                   "kappa per preset is stored")
    finetune_eval_every: int = option(50, help="validation (model selection) interval of fine-tuning", cli=False)
    n_boot: int = option(200, help="bootstrap resamples for the confidence intervals", cli=False)
    gpus: int = option(0, help="GPUs for training (0 = CPU; > 1 runs DDP)")
    num_workers: int = option(0, help="data-loader workers of training and feature extraction")
    cpu_workers: int = option(0, help="processes generating and preprocessing the nights (0: one per CPU core, at "
                                      "most 4)")
    seed: int = option(0, help="seed of the cohort, the splits and training")
    # Seeds are the unit of a training claim (issue 26). Every seed trains on the first seed's corpus (same nights,
    # same split): the seeds measure training chance; ~6 min per extra seed on 2 cores.
    seeds: int = option(3, help="training seeds (--seed, --seed+1, ...): each pre-trains, probes and fine-tunes on the "
                                "first seed's corpus and split; the verdicts take the seeds as the unit")
    # a finished seed's output folder whose corpus (synthetic nights, held-out night, store) this run reuses
    corpus_dir: Path | None = option(None, help="reuse this run's corpus", cli=False)  # noqa: RUF009 (a field)
    subprocess: bool = option(False, help="run each step as its own process (always so with --gpus > 1: DDP)")

    @classmethod
    def tiny(cls, **overrides) -> QuickstartConfig:
        """Sizes for the test suite: 2 cohorts x 2 nights x 0.5 h, two tasks, a handful of steps, two seeds."""
        sizes = {"cohorts": ("shhs", "mros"), "nights": 4, "hours": 0.5, "split_fractions": "0.5,0.25,0.25",
                 "tasks": ("Stage", "Arousal"), "max_steps": 2, "batch_size": 8, "val_batches": 1,
                 "probe_steps": 20, "finetune_steps": 2, "finetune_eval_every": 2, "n_boot": 20, "seeds": 2}
        return cls(**{**sizes, **overrides})

    def __post_init__(self) -> None:
        known = studied_tasks()
        unknown = [t for t in self.tasks if t not in known]
        if unknown or not self.tasks or self.tasks[0] != "Stage":
            raise ValueError(f"tasks must start with 'Stage' and come from {list(known)}, got {list(self.tasks)}")
        from osf.downstream.features import POOLINGS, check_pooling

        if not self.poolings:
            raise ValueError(f"poolings: give at least one of {', '.join(POOLINGS)}")
        for pooling in self.poolings:
            check_pooling(pooling)
        from osf.models.dino import HEAD_POOLINGS

        if self.head_pooling not in HEAD_POOLINGS:
            raise ValueError(f"head_pooling must be one of {HEAD_POOLINGS}, got {self.head_pooling!r}")
        if self.teacher_views is not None:  # None (in code): the recipe's
            from osf.models.osf_dino import OSFDINOConfig
            from osf.utils.config_fields import value_problem

            problem = value_problem(OSFDINOConfig, "teacher_views", self.teacher_views)
            if problem:
                raise ValueError(f"teacher_views {problem}")
        if self.seeds < 1:
            raise ValueError(f"seeds must be >= 1, got {self.seeds}")

    @property
    def night_workers(self) -> int:
        """Processes for the CPU-bound night generation and preprocessing."""
        return corpus_sizes.night_workers(self.cpu_workers)

    @property
    def nights_per_cohort(self) -> int:
        """Nights generated per cohort (at least one each)."""
        return corpus_sizes.nights_per_cohort(self.nights, len(self.cohorts))

    def as_dict(self) -> dict:
        """JSON-friendly values."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict, **overrides) -> QuickstartConfig:
        """The config :meth:`as_dict` wrote (a run's ``results.json``), ``overrides`` winning."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        paths = {"corpus_dir"} | {k for k, f in fields.items() if isinstance(f.default, Path)}
        known = {k: (tuple(v) if isinstance(v, list) else Path(v) if k in paths and v is not None else v)
                 for k, v in values.items() if k in fields}
        return cls(**{**known, **overrides})


class Quickstart:
    """The steps for a config, run in order, and the results table."""

    def __init__(self, cfg: QuickstartConfig, log: Callable[[str], None] = print,
                 run_command: Callable[[list[str]], None] | None = None) -> None:
        """``run_command`` runs a step's command as its own process (needed when not :attr:`in_process`)."""
        self.cfg = cfg
        self.out = Path(cfg.output_dir).resolve()
        self.weights = Path(cfg.weights_dir).resolve()
        self.corpus_root = Path(cfg.corpus_dir).resolve() if cfg.corpus_dir else self.out
        self.log = log
        self.run_command = run_command
        self.steps = self._build()
        self.runner = StepRunner(self.out, self.steps, self._execute, log=log, label="quick start")

    @property
    def in_process(self) -> bool:
        """Run steps in this process, unless asked not to or training uses DDP: Lightning's DDP
        launcher re-executes the running script for each extra rank, which must be the entry point."""
        return not self.cfg.subprocess and self.cfg.gpus <= 1

    # --- places ---------------------------------------------------------------------------------
    @property
    def synthetic_dir(self) -> Path:
        """Synthetic cohorts in the NSRR layout."""
        return self.corpus_root / "synthetic"

    @property
    def heldout_dir(self) -> Path:
        """The held-out night (its own synthetic cohort folder)."""
        return self.corpus_root / "heldout"

    @property
    def store_dir(self) -> Path:
        """The epoch store."""
        return self.corpus_root / "store"

    @property
    def pretrain_ckpt(self) -> Path:
        """The pre-training run's last Lightning checkpoint."""
        return self.out / "runs" / "pretrain" / "checkpoints" / "last.ckpt"

    @property
    def backbone_path(self) -> Path:
        """The exported backbone (released format, + .safetensors twin)."""
        return self.weights / f"osf_quickstart_{self.cfg.backbone}.pth"

    def probe_dir(self, init: str, task: str, pooling: str | None = None) -> Path:
        """Output folder of one linear probe (``pooling`` None: the one chosen on validation)."""
        return self.out / "probes" / init / config.LABEL_COLUMNS[task] / (pooling or self.chosen_pooling(init, task))

    def chosen_pooling(self, init: str, task: str) -> str:
        """The pooling whose probe scores best on the validation split (the first on ties)."""
        return choose_pooling({p: self.probe_dir(init, task, p) / "probe.json" for p in self.cfg.poolings}, task)

    def probe_steps_of(self, init: str, task: str) -> tuple[str, ...]:
        """Names of the probe steps of one backbone and task (one per pooling)."""
        return tuple(f"probe_{init}_{config.LABEL_COLUMNS[task]}_{p}" for p in self.cfg.poolings)

    @property
    def finetune_dir(self) -> Path:
        """Output folder of the fine-tuned staging classifier."""
        return self.out / "finetune_stage"

    def finetune_dir_of(self, init: str) -> Path:
        """Fine-tuning of the ``init`` backbone: the staging classifier, or its random-init baseline at equal steps."""
        return self.finetune_dir if init == "pretrained" else self.out / f"finetune_stage_{init}"

    def presets_probe_dir(self, init: str) -> Path:
        """The Stage probe over ``--finetune_presets`` (the chosen pooling): the head fine-tuning starts from."""
        return self.out / "probes" / init / "stage_presets"

    def finetune_init_head(self, init: str) -> Path:
        """The head LP-FT starts from: the probe over the fine-tuning's presets, or the Stage probe without presets."""
        if self.cfg.finetune_presets:
            return self.presets_probe_dir(init) / "classifier.pt"
        return self.probe_dir(init, "Stage") / "classifier.pt"

    @property
    def prediction_dir(self) -> Path:
        """Outputs of main_predict.py on the held-out night."""
        return self.out / "prediction"

    def heldout_night(self) -> tuple[Path, Path]:
        """EDF and NSRR XML of the held-out night."""
        cohort = self.heldout_dir / self.cfg.heldout_cohort / "polysomnography"
        edfs = sorted((cohort / "edfs").glob("*.edf"))
        if not edfs:
            raise FileNotFoundError(f"no held-out EDF under {cohort / 'edfs'}; the 'heldout' step did not run")
        return edfs[0], cohort / "annotations-events-nsrr" / f"{edfs[0].stem}-nsrr.xml"

    # --- steps ----------------------------------------------------------------------------------
    def _hardware(self) -> Flags:
        cfg = self.cfg
        return {"accelerator": "gpu" if cfg.gpus else "cpu", "num_devices": max(1, cfg.gpus)}

    def _backbone_flags(self, init: str) -> Flags:
        """``--ckpt_path`` of the exported backbone, or a random-init backbone of the same size."""
        if init == "pretrained":
            return {"ckpt_path": str(self.backbone_path)}
        return random_init_flags(self.cfg.backbone)

    def _probe_step(self, init: str, task: str, pooling: str, store_step: str | None) -> Step:
        out = self.probe_dir(init, task, pooling)
        column = config.LABEL_COLUMNS[task]
        cfg = self.cfg
        others = ",".join(p for p in cfg.poolings if p != pooling) or None  # cached from the same backbone pass
        return entry_step(
            f"probe_{init}_{column}_{pooling}", f"linear probe, {task}, {init} backbone, {pooling} pooling",
            "main_finetune.py",
            lambda: {**self._backbone_flags(init), "data_dir": str(self.store_dir), "eval_label": task,
                     "max_steps": cfg.probe_steps, "batch_size": 4 * cfg.batch_size, "num_workers": cfg.num_workers,
                     "seed": cfg.seed, "n_boot": cfg.n_boot, "pooling": pooling, "cache_poolings": others,
                     "run_name": "probe", "output_dir": str(out), "feature_cache_dir": str(self.out / "feature_cache"),
                     **self._hardware()},
            
            lambda: [out / "probe.json", out / "classifier.pt", out / "probe_test_predictions.npz"],
            needs=("export",) if init == "pretrained" else _names(store_step),
            clean=lambda: [out],
        )

    def _data_steps(self) -> list[Step]:
        """Synthetic cohorts, the held-out night, and one preprocessing step per cohort into the store."""
        cfg = self.cfg
        corpus = corpus_steps(CorpusSpec(self.synthetic_dir, self.store_dir, cfg.cohorts, cfg.nights_per_cohort,
                                         cfg.hours, cfg.split_fractions, cfg.seed, cfg.night_workers,
                                         generator=cfg.generator))
        heldout = entry_step(
            "heldout", f"generate one held-out {cfg.heldout_cohort} night (another seed)", "main_synthetic.py",
            lambda: {"output_dir": str(self.heldout_dir), "cohorts": cfg.heldout_cohort, "nights_per_cohort": 1,
                     "hours": cfg.hours, "seed": cfg.seed + 1000, "overwrite": True, "generator": cfg.generator},
            lambda: [self.heldout_dir / "manifest.json"],
        )
        return [corpus[0], heldout, *corpus[1:]]

    def _pretrain_steps(self, store_step: str | None) -> list[Step]:
        """OSF pre-training and the export of the backbone its recipe names (teacher or student)."""
        cfg = self.cfg
        spec = PretrainSpec(
            "pretrain", "dino_ours", cfg.backbone, self.store_dir, self.out / "runs", self.backbone_path, cfg.recipe,
            cfg.batch_size, cfg.max_steps, cfg.seed, cfg.num_workers, cfg.val_batches, hardware=self._hardware(),
            lr=cfg.lr, head_pooling=cfg.head_pooling, teacher_views=cfg.teacher_views, needs=_names(store_step),
            export_twin=True,
            description=f"pre-train OSF (dino_ours) on {cfg.backbone}, {cfg.max_steps} steps")
        return pretrain_steps(spec, f"export the {get_recipe(cfg.recipe).export} backbone (the recipe's choice) in "
                                    "the released format")

    def _finetune_flags(self, init: str = "pretrained") -> Flags:
        """LP-FT of the ``init`` backbone from its Stage probe the validation split chose: that head, those features.

        The random-init run is the same recipe at equal steps from the weights pre-training started from: what
        fine-tuning gains from pre-training, not from the steps.
        """
        cfg = self.cfg
        pooling = self.chosen_pooling(init, "Stage")
        return {**self._backbone_flags(init), "data_dir": str(self.store_dir), "eval_label": "Stage",
                "finetune_backbone": True, "max_steps": cfg.finetune_steps, "pooling": pooling,
                "init_head": str(self.finetune_init_head(init)),
                # a tenth of the steps to warm up (main_finetune's default 100 is a whole short run)
                "warmup_steps": max(1, cfg.finetune_steps // 10),
                "eval_every": cfg.finetune_eval_every, "batch_size": cfg.batch_size,
                "mask_train_presets": cfg.finetune_presets,
                "num_workers": cfg.num_workers, "seed": cfg.seed, "n_boot": cfg.n_boot, "run_name": "finetune",
                "output_dir": str(self.finetune_dir_of(init)), **self._hardware()}

    def _presets_probe_step(self, init: str) -> Step:
        """The LP of LP-FT on fine-tuning's own inputs: the Stage probe trained and selected over its presets."""
        cfg, out = self.cfg, self.presets_probe_dir(init)
        return entry_step(
            f"probe_{init}_stage_presets", f"linear probe, Stage, {init} backbone, over {cfg.finetune_presets}",
            "main_finetune.py",
            lambda: {**self._backbone_flags(init), "data_dir": str(self.store_dir), "eval_label": "Stage",
                     "max_steps": cfg.probe_steps, "batch_size": 4 * cfg.batch_size, "num_workers": cfg.num_workers,
                     "seed": cfg.seed, "n_boot": cfg.n_boot, "pooling": self.chosen_pooling(init, "Stage"),
                     "mask_train_presets": cfg.finetune_presets, "run_name": "probe", "output_dir": str(out),
                     "feature_cache_dir": str(self.out / "feature_cache"), **self._hardware()},
            lambda: [out / "probe.json", out / "classifier.pt"],
            needs=self.probe_steps_of(init, "Stage"), clean=lambda: [out])

    def _finetune_step(self, init: str) -> Step:
        out = self.finetune_dir_of(init)
        what = "a staging classifier" if init == "pretrained" else "the random-init baseline (LP-FT, equal steps)"
        head = (f"probe_{init}_stage_presets",) if self.cfg.finetune_presets else ()
        return entry_step(
            "finetune" if init == "pretrained" else f"finetune_{init}",
            f"fine-tune {what} ({self.cfg.finetune_steps} steps)", "main_finetune.py",
            lambda: self._finetune_flags(init),
            lambda: [out / "finetune.json", out / "classifier.pt", out / "finetune_test_predictions.npz"],
            needs=(*self.probe_steps_of(init, "Stage"), *head), clean=lambda: [out])

    def _use_steps(self) -> list[Step]:
        """The fine-tuned staging classifier and the staged held-out night."""
        cfg = self.cfg
        return [
            *(self._presets_probe_step(init) for init in INITS if cfg.finetune_presets),
            *(self._finetune_step(init) for init in INITS),
            entry_step(
                "predict", "stage the held-out night (fine-tuned staging + pre-trained event probes)", "main_predict.py",
                lambda: {"edf": str(self.heldout_night()[0]), "annotations": str(self.heldout_night()[1]),
                         "classifier": [str(self.finetune_dir / "classifier.pt"),
                                        *(str(self.probe_dir("pretrained", t) / "classifier.pt") for t in cfg.tasks[1:])],
                         "output_dir": str(self.prediction_dir)},
                lambda: [self.prediction_dir / f"{self.heldout_night()[0].stem}_summary.json"],
                needs=("heldout", "finetune", *(n for t in cfg.tasks[1:] for n in self.probe_steps_of("pretrained", t))),
            ),
        ]

    def _build(self) -> list[Step]:
        data = [] if self.cfg.corpus_dir else self._data_steps()  # another seed's corpus: already there
        store_step = data[-1].name if data else None
        return [
            *data,
            *self._pretrain_steps(store_step),
            *(self._probe_step(init, task, pooling, store_step)
              for init in INITS for task in self.cfg.tasks for pooling in self.cfg.poolings),
            *self._context_steps(store_step),
            *self._use_steps(),
        ]

    def _context_steps(self, store_step: str | None) -> list[Step]:
        return _context_steps(self, store_step)

    def _context_results(self) -> dict:
        return _context_results(self)

    def _pretraining_result(self) -> dict[str, Any]:
        """DINO loss at the start and end of pre-training against log K, and the collapse warnings."""
        import pandas as pd  # only for reading the run's CSV log

        run = self.pretrain_ckpt.parents[1]
        logs = pd.read_csv(max((run / "csv_logs").glob("version_*/metrics.csv")))
        loss = logs["train/dino_loss"].dropna().to_numpy() if "train/dino_loss" in logs else np.zeros(0)
        diagnostics = json.loads((run / "diagnostics.json").read_text())
        final = diagnostics["final"]
        first, last = (float(loss[:3].mean()), float(loss[-3:].mean())) if loss.size else (math.nan, math.nan)
        return {"recipe": self.cfg.recipe, "loss_first": first, "loss_last": last,
                "log_k": final.get("log_k"), "loss_over_log_k": last / final["log_k"] if final.get("log_k") else None,
                "teacher_entropy": final.get("teacher_entropy"),
                "rankme": final.get("rankme"), "healthy": diagnostics["healthy"],
                "warnings": [t["signal"] for t in diagnostics["tripped"]]}

    def _probe_result(self, task: str) -> dict[str, Any]:
        """Test metric per init with its CI, and the paired difference (pre-trained - random) with its CI."""
        metric = get_task(task).reporting_metric
        row: dict[str, Any] = {"metric": metric, "pooling": {init: self.chosen_pooling(init, task) for init in INITS}}
        for init in INITS:
            test = RunSummary.read(self.probe_dir(init, task) / "probe.json").test
            row[init], row[f"{init}_ci95"] = test.get(metric), test.get(f"{metric}_ci95")
            row["n_test_subjects"], row["n_test_positive"] = test.get("n_subjects"), _n_positive(test)
        pre, rnd = (load_predictions(self.probe_dir(init, task) / "probe_test_predictions.npz") for init in INITS)
        diff = paired_difference(pre, rnd, n_boot=self.cfg.n_boot, seed=self.cfg.seed)[metric]
        row["difference"], row["difference_ci95"] = diff["diff"], [diff["low"], diff["high"]]
        return row

    def _finetune_result(self) -> dict[str, Any]:
        """The fine-tuned staging classifier's test scores, its random-init baseline's and their paired difference."""
        runs = {init: RunSummary.read(self.finetune_dir_of(init) / "finetune.json") for init in INITS}
        tests = {init: run.test for init, run in runs.items()}
        out: dict[str, Any] = {m: tests["pretrained"].get(m) for m in ("kappa", "accuracy", "macro_f1")}
        out["random"] = {m: tests["random"].get(m) for m in ("kappa", "accuracy", "macro_f1")}
        # the test split seen through each preset the classifier was fine-tuned over (issue 29)
        out["kappa_by_preset"] = {init: (run.kappa_by_preset or {}).get("test") for init, run in runs.items()}
        pre, rnd = (load_predictions(self.finetune_dir_of(init) / "finetune_test_predictions.npz") for init in INITS)
        diff = paired_difference(pre, rnd, n_boot=self.cfg.n_boot, seed=self.cfg.seed)["kappa"]
        out["difference"], out["difference_ci95"] = diff["diff"], [diff["low"], diff["high"]]
        return out

    # --- running --------------------------------------------------------------------------------
    def _execute(self, step: Step, command: list[str]) -> None:
        """Call the step's library function here, or run its command as a process (DDP, ``subprocess``)."""
        if self.in_process:
            step.call(step.flags())
        elif self.run_command is None:
            raise RuntimeError("this configuration runs each step as its own process (DDP or subprocess=True); "
                               "start it with main_pipelines/main_quickstart.py")
        else:
            self.run_command(command)

    def plan(self) -> dict[str, bool]:
        """Which steps a run would execute now (True) and which it would skip (False)."""
        return self.runner.plan()

    def run(self) -> dict:
        """Run (or skip) every step in order, write ``results.json`` and return the results."""
        outcome = self.runner.run()
        results = self.results()
        results["elapsed_s"] = outcome.elapsed_s
        results["step_seconds"] = {s.name: s.elapsed_s for s in self.steps if s.elapsed_s is not None}
        write_json(self.out / "results.json", results)
        return results

    # --- results --------------------------------------------------------------------------------
    def results(self) -> dict:
        """Probe / fine-tuning test metrics and the held-out night's summary, from the files written."""
        probes = {task: self._probe_result(task) for task in self.cfg.tasks}
        pretraining = self._pretraining_result()
        finetune = self._finetune_result()
        edf, _ = self.heldout_night()
        stem = self.prediction_dir / edf.stem
        summary = json.loads(Path(f"{stem}_summary.json").read_text())
        manifest = json.loads((self.synthetic_dir / "manifest.json").read_text())
        return {
            "config": self.cfg.as_dict(),
            "synthetic_generator_version": manifest.get("generator_version"),  # which generator made the data
            "pretraining": pretraining,
            "probes": probes,
            "finetune_stage": finetune,
            **self._context_results(),
            "heldout_night": {
                "edf": str(edf),
                "agreement": summary.get("scored", {}).get("agreement"),
                "cohen_kappa": summary.get("scored", {}).get("cohen_kappa"),
                "total_sleep_time_min": summary["total_sleep_time_min"],
                "scored_total_sleep_time_min": summary.get("scored", {}).get("statistics", {}).get("total_sleep_time_min"),
            },
            "paths": {
                "backbone": str(self.backbone_path),
                "staging_classifier": str(self.finetune_dir / "classifier.pt"),
                "event_classifiers": [str(self.probe_dir("pretrained", t) / "classifier.pt") for t in self.cfg.tasks[1:]],
                "night_figure": f"{stem}_night.png",
                "night_epochs_csv": f"{stem}_epochs.csv",
                "night_hypnogram_xml": f"{stem}_hypnogram.xml",
                "night_qc": f"{stem}_qc.json",
                "store": str(self.store_dir),
            },
        }


def _names(step: str | None) -> tuple[str, ...]:
    """``needs`` of a step on ``step`` (none when the corpus comes from another seed's run)."""
    return (step,) if step else ()


# --- night level and sequence context (issue 14) ----------------------------------------------
NIGHT_TARGET = ("nsrr_ahi_hp3r_aasm15", 15.0)  # AHI >= 15 from the synthetic cohort's harmonised table
NIGHT_MIN_NIGHTS = 24  # fewer nights leave a test split without both AHI classes: the row is skipped
CONTEXT_EPOCHS = 10


def _night_dir(qs: Quickstart, init: str) -> Path:
    return qs.out / "night" / init


def _context_steps(qs: Quickstart, store_step: str | None) -> list[Step]:
    """Night-level AHI >= 15 (pre-trained vs random init) and sequence-context staging, from the probe cache."""
    cfg = qs.cfg

    def common() -> Flags:
        return {"data_dir": str(qs.store_dir), "seed": cfg.seed, "n_boot": cfg.n_boot,
                "feature_cache_dir": str(qs.out / "feature_cache"), **qs._hardware()}

    steps = []
    if cfg.nights >= NIGHT_MIN_NIGHTS:
        for init in INITS:
            out = _night_dir(qs, init)
            steps.append(entry_step(
                f"night_{init}_ahi", f"night level, AHI >= 15, {init} backbone (mean/std pooling)", "main_finetune.py",
                lambda init=init, out=out: {
                    **qs._backbone_flags(init), **common(), "pooling": qs.chosen_pooling(init, "Stage"),
                    "eval_level": "night",
                    "target_variable": NIGHT_TARGET[0],
                    "target_threshold": NIGHT_TARGET[1], "night_models": "mean_std",
                    "subject_tables": str(qs.synthetic_dir), "run_name": "night", "output_dir": str(out)},
                lambda out=out: [out / "night_mean_std.json"],
                needs=qs.probe_steps_of(init, "Stage"), clean=lambda out=out: [out]))
    out = qs.out / "sequence_stage"
    steps.append(entry_step(
        "sequence_stage", f"sequence-context staging (+-{CONTEXT_EPOCHS} epochs) beside the per-epoch probe",
        "main_finetune.py",
        lambda: {"ckpt_path": str(qs.backbone_path), **common(), "pooling": qs.chosen_pooling("pretrained", "Stage"),
                 "eval_label": "Stage",
                 "context_epochs": CONTEXT_EPOCHS, "max_steps": cfg.probe_steps, "run_name": "sequence",
                 "output_dir": str(out)},
        lambda: [out / f"sequence_sequence_transformer_k{CONTEXT_EPOCHS}.json"],
        needs=qs.probe_steps_of("pretrained", "Stage"), clean=lambda: [out]))
    return steps


def _context_results(qs: Quickstart) -> dict:
    """``night_level`` (test AUROC per init, or why it was skipped) and ``sequence_stage`` (kappa per head)."""
    night: dict[str, Any] = {"task": "AHI>=15", "metric": "auroc"}
    if qs.cfg.nights < NIGHT_MIN_NIGHTS:
        night["skipped"] = f"needs --nights >= {NIGHT_MIN_NIGHTS}"
    else:
        for init in INITS:
            test = RunSummary.read(_night_dir(qs, init) / "night_mean_std.json").test
            night[init], night[f"{init}_ci95"] = test.get("auroc"), test.get("auroc_ci95")
    seq = RunSummary.read(qs.out / "sequence_stage" / f"sequence_sequence_transformer_k{CONTEXT_EPOCHS}.json")
    per_epoch = RunSummary.read(qs.out / "sequence_stage" / "sequence_linear_probe.json")
    return {"night_level": night, "sequence_stage": {
        "metric": "kappa", "context_epochs": CONTEXT_EPOCHS, "per_epoch": per_epoch.test.get("kappa"),
        "sequence": seq.test.get("kappa"), "delta": seq.comparison["delta"], "delta_ci95": seq.comparison["delta_ci95"]}}


def _format_context(results: dict) -> list[str]:
    """Rows of the night-level and sequence-staging results (empty for results written before them)."""
    lines = []
    night = results.get("night_level")
    if night is not None:
        if "skipped" in night:
            lines.append(f"  {'AHI>=15 (night level)':22s} {'auroc':8s} skipped: {night['skipped']}")
        else:
            lines.append(f"  {'AHI>=15 (night level)':22s} {'auroc':8s} {_fmt(night['pretrained']):>12s} "
                         f"{_fmt(night['random']):>12s}")
    seq = results.get("sequence_stage")
    if seq is not None:
        lines += ["", (f"Sequence-context staging (+-{seq['context_epochs']} epochs, pre-trained, test): kappa "
                       f"{_fmt(seq['sequence'])} vs {_fmt(seq['per_epoch'])} per-epoch probe "
                       f"(difference {_fmt(seq['delta'])}, 95% CI {_fmt(seq['delta_ci95'][0])}..{_fmt(seq['delta_ci95'][1])})")]
    return lines


def _n_positive(test_metrics: dict) -> int | None:
    """Event epochs among the scored test epochs (binary tasks), from the confusion matrix."""
    cm = test_metrics.get("confusion_matrix")
    return int(sum(cm[1])) if cm is not None and len(cm) == 2 else None


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.3f}"


def _kappas(by_preset: dict[str, float] | None) -> str:
    """``full 0.792, eeg_eog_only 0.750``; ``-`` for none."""
    return ", ".join(f"{preset} {_fmt(kappa)}" for preset, kappa in (by_preset or {}).items()) or "-"


def _with_ci(value: float | None, ci: Sequence[float] | None, signed: bool = False) -> str:
    text = _fmt(value) if not signed or value is None else f"{value:+.3f}"
    return text if not ci else f"{text} [{_fmt(ci[0])}, {_fmt(ci[1])}]"


def format_results(results: dict) -> str:
    """The results as a plain-text table plus the paths of the plots and files."""
    probes = results["probes"]
    first = next(iter(probes.values()))
    lines = ["", (f"Linear probes on {first.get('n_test_subjects')} held-out test subjects (pre-trained OSF backbone vs "
                  "random init, each with the pooling its validation split chose; 95% CIs by subject bootstrap, the "
                  "difference's paired):"), "",
             (f"  {'task':20s} {'metric':6s} {'pre-trained':>22s} {'random init':>22s} {'difference':>23s}  verdict"
              "        pooling (pre-trained / random)")]
    for task, row in probes.items():
        lo, hi = row["difference_ci95"]
        verdict = "better" if lo > 0 else "worse" if hi < 0 else "not separated"
        lines.append(f"  {task:20s} {row['metric']:6s} {_with_ci(row['pretrained'], row['pretrained_ci95']):>22s} "
                     f"{_with_ci(row['random'], row['random_ci95']):>22s} "
                     f"{_with_ci(row['difference'], row['difference_ci95'], signed=True):>23s}  {verdict:13s}"
                     f"  {' / '.join(row.get('pooling', {}).values())}")
    pretraining = results.get("pretraining")
    if pretraining:
        lines += ["", (f"Pre-training ({pretraining['recipe']} recipe): DINO loss {_fmt(pretraining['loss_first'])} -> "
                       f"{_fmt(pretraining['loss_last'])} (log K = {_fmt(pretraining['log_k'])}, "
                       f"ratio {_fmt(pretraining['loss_over_log_k'])}); collapse warnings: "
                       f"{'; '.join(pretraining['warnings']) or 'none'}")]
    ft = results["finetune_stage"]
    lines += ["", (f"Fine-tuned staging classifier (test): kappa {_fmt(ft['kappa'])}, "
                   f"accuracy {_fmt(ft['accuracy'])}, macro-F1 {_fmt(ft['macro_f1'])}")]
    if "random" in ft:  # results written before the random-init baseline have none
        lo, hi = ft["difference_ci95"]
        lines.append(f"  the same LP-FT from random init at equal steps: kappa {_fmt(ft['random']['kappa'])}; "
                     f"pre-trained minus random {_with_ci(ft['difference'], ft['difference_ci95'], signed=True)} "
                     f"({'better' if lo > 0 else 'worse' if hi < 0 else 'not separated'}, one seed)")
    by_preset = ft.get("kappa_by_preset", {})
    if by_preset.get("pretrained"):
        lines.append(f"  test kappa through each preset it was fine-tuned over: {_kappas(by_preset['pretrained'])} "
                     f"(random init: {_kappas(by_preset.get('random'))})")
    lines += _format_context(results)
    night = results["heldout_night"]
    lines += [(f"Held-out night {Path(night['edf']).name}: agreement with its scoring {_fmt(night['agreement'])}, "
               f"kappa {_fmt(night['cohen_kappa'])}, TST {night['total_sleep_time_min']:.1f} min predicted vs "
               f"{night['scored_total_sleep_time_min'] or 0:.1f} min scored"), ""]
    lines += [f"  {name:22s} {path if isinstance(path, str) else ' '.join(path)}" for name, path in results["paths"].items()]
    if results.get("elapsed_s") is not None:
        lines += ["", f"quick start took {results['elapsed_s'] / 60:.1f} min"]
    return "\n".join(lines)


def pooled_over_runs(output_dirs: Sequence[Path], n_boot: int = 1000, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Pre-trained minus random init per task over finished quick-start runs, one per training seed: seeds as the unit.

    Each run keeps the poolings its validation split chose; the fine-tuned staging classifier against its LP-FT
    from random init at equal steps is the row ``Stage (fine-tuned)``. The difference is the mean of the runs';
    its 95% CI is a hierarchical bootstrap (seeds resampled, then each drawn seed's test subjects,
    ``osf.evaluation.seeds``), beside a t-test across seeds and the per-seed rows. Pooling the runs' subjects
    as one sample would count three seeds as thirty subjects' worth of evidence about training chance.
    """
    from osf.evaluation.seeds import format_seed_rows, seed_level_difference

    pairs: dict[str, list[tuple[dict, dict]]] = {}
    labels: dict[str, list[str]] = {}
    subjects: dict[str, int] = {}
    metrics: dict[str, str] = {}
    for out in map(Path, output_dirs):
        results = json.loads((out / "results.json").read_text())
        qs = Quickstart(QuickstartConfig.from_dict(results["config"], output_dir=out), log=lambda _: None)
        files = {task: [qs.probe_dir(init, task, row["pooling"][init]) / "probe_test_predictions.npz" for init in INITS]
                 for task, row in results["probes"].items()}
        metrics.update({task: get_task(task).reporting_metric for task in files})
        if "random" in results.get("finetune_stage", {}):  # runs written before the random-init baseline have none
            files[FINETUNED] = [qs.finetune_dir_of(init) / "finetune_test_predictions.npz" for init in INITS]
            metrics[FINETUNED] = "kappa"
        for task, (pre, rnd) in files.items():
            pairs.setdefault(task, []).append((load_predictions(pre), load_predictions(rnd)))
            labels.setdefault(task, []).append(f"seed {results['config']['seed']}")
            probe = results["probes"]["Stage" if task == FINETUNED else task]
            subjects[task] = subjects.get(task, 0) + int(probe["n_test_subjects"] or 0)
    pooled = {}
    for task, task_pairs in pairs.items():
        d = seed_level_difference(task_pairs, metrics[task], labels[task], n_boot=n_boot, seed=seed)
        pooled[task] = {"metric": metrics[task], "runs": len(task_pairs), "n_test_subjects": subjects[task],
                        "pretrained": d.a, "random": d.b, "difference": d.diff, "difference_ci95": [d.low, d.high],
                        "verdict": d.verdict, "t_test": dataclasses.asdict(d.t_test),
                        "per_seed": [dataclasses.asdict(r) for r in d.per_seed], "notes": d.notes,
                        "rows": format_seed_rows(d, "mean")}
    return pooled


def seed_configs(cfg: QuickstartConfig) -> list[QuickstartConfig]:
    """One run per training seed: ``cfg`` itself, then seed ``cfg.seed + k`` in ``OUT/seeds/seed_<s>/`` on its corpus."""
    first = Path(cfg.output_dir)
    corpus = Path(cfg.corpus_dir) if cfg.corpus_dir else first
    return [cfg, *(dataclasses.replace(cfg, seed=cfg.seed + k, seeds=1, corpus_dir=corpus,
                                       output_dir=first / "seeds" / f"seed_{cfg.seed + k}",
                                       weights_dir=first / "seeds" / f"seed_{cfg.seed + k}" / "weights")
                   for k in range(1, cfg.seeds))]


def format_seed_level(seed_level: dict) -> str:
    """The seed-level table: per task one row per seed, then the verdict over seeds."""
    first = next(iter(seed_level["tasks"].values()))
    lines = ["", (f"Seeds as the unit ({first['runs']} training seeds on one corpus; pre-trained minus random init per "
                  "seed with its paired subject-bootstrap CI, then the mean over seeds with a hierarchical bootstrap "
                  "CI (seeds, then their subjects) and a t-test across seeds):"), "",
             f"  {'task':12s} {'pre':>7s} {'random':>7s} {'diff':>7s} [95% CI]"]
    for task, row in seed_level["tasks"].items():
        lines += [f"  {task} ({row['metric']})", *row["rows"]]
    return "\n".join(lines)


def run_quickstart(cfg: QuickstartConfig, log: Callable[[str], None] = print,
                   run_command: Callable[[list[str]], None] | None = None) -> dict:
    """Run the quick start for ``cfg`` and print its results table; return the results.

    ``run_command`` runs a step's command as its own process; needed only with ``gpus > 1`` or
    ``subprocess=True`` (``main_pipelines/main_quickstart.py`` passes one).
    """
    configs = seed_configs(cfg)
    runs = []
    for i, run_cfg in enumerate(configs):
        if len(configs) > 1:
            corpus = "" if i == 0 else f", on the corpus of {cfg.output_dir}"
            log(f"\n=== training seed {run_cfg.seed} ({i + 1} of {len(configs)}{corpus}) ===")
        runs.append(Quickstart(run_cfg, log=log, run_command=run_command).run())
    results = runs[0]
    log(format_results(results))
    if len(configs) > 1:
        results["seed_level"] = {"output_dirs": [str(Path(c.output_dir).resolve()) for c in configs],
                                 "elapsed_s": sum(r.get("elapsed_s") or 0.0 for r in runs),
                                 "tasks": pooled_over_runs([c.output_dir for c in configs], n_boot=cfg.n_boot,
                                                           seed=cfg.seed)}
        write_json(Path(cfg.output_dir) / "results.json", results)
        log(format_seed_level(results["seed_level"]))
        log(f"\n{len(configs)} seeds took {results['seed_level']['elapsed_s'] / 60:.1f} min")
    return results

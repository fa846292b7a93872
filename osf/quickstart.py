"""The quick start: the whole OSF pipeline on a synthetic cohort, from nothing to a staged night.

Stages (each one a command-line entry point run as a subprocess, so the quick start also proves
that the documented commands work):

1. ``cohort``     main_synthetic.py: synthetic PSG cohorts (EDF + NSRR XML) in the NSRR layout
2. ``heldout``    main_synthetic.py: one more night, never seen by any model, for step 8
3. ``store``      main_preprocess.py: every cohort into one epoch store
4. ``pretrain``   main_pretrain.py: OSF (``dino_ours``) self-supervised pre-training
5. ``export``     main_export.py: the teacher backbone in the released checkpoint format
6. ``probe_*``    main_finetune.py: linear probes on the four tasks, pre-trained vs random-init backbone
7. ``finetune``   main_finetune.py --finetune_backbone: a staging classifier
8. ``predict``    main_predict.py: stage the held-out night with the classifier (+ event heads)

Every stage records a stamp (its command) under ``<output_dir>/.stages/`` once it succeeds and is
skipped on a rerun when the stamp and its outputs are there; changing a flag that alters a stage's
command reruns that stage and the stages after it.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import config

REPO_ROOT = Path(__file__).resolve().parents[1]
TASKS: tuple[str, ...] = ("Stage", "Arousal", "Hypopnea", "Oxygen Desaturation")
# Headline metric per task in the results table (keys of the finetune results JSON).
TASK_METRIC: dict[str, str] = {"Stage": "kappa", "Arousal": "auroc", "Hypopnea": "auroc", "Oxygen Desaturation": "auroc"}
INITS: tuple[str, ...] = ("pretrained", "random")


@dataclass
class QuickstartConfig:
    """Sizes of the quick start; the defaults finish in under 20 minutes on a 2-core CPU."""

    output_dir: Path = Path("quickstart_out")
    weights_dir: Path = Path("pretrained_weights")
    cohorts: tuple[str, ...] = ("shhs", "mros", "generic")
    nights: int = 12  # in total, spread over the cohorts
    hours: float = 1.0  # per night
    heldout_cohort: str = "generic"
    backbone: str = "vit_nano"
    max_steps: int = 300  # pre-training optimizer steps
    batch_size: int = 32
    probe_steps: int = 300
    finetune_steps: int = 200
    gpus: int = 0
    num_workers: int = 0
    seed: int = 0

    @classmethod
    def tiny(cls, **overrides) -> "QuickstartConfig":
        """Seconds-scale sizes for the test suite: 2 cohorts x 2 nights x 0.5 h, a few steps."""
        sizes = dict(cohorts=("shhs", "generic"), nights=4, hours=0.5, max_steps=10, batch_size=16,
                     probe_steps=20, finetune_steps=10)
        return cls(**{**sizes, **overrides})

    @property
    def nights_per_cohort(self) -> int:
        """Nights generated per cohort (at least one each)."""
        return max(1, round(self.nights / len(self.cohorts)))


@dataclass
class Stage:
    """One step of the quick start: a command, the files it leaves behind, and how to find them."""

    name: str
    description: str
    command: Callable[[], list[str]]  # built lazily: later stages read earlier outputs
    outputs: Callable[[], list[Path]]
    after: Callable[[], None] | None = None  # e.g. merge classifiers once the probes exist
    elapsed_s: float | None = field(default=None, init=False)
    skipped: bool = field(default=False, init=False)


def _entry(script: str, *args: object) -> list[str]:
    return [sys.executable, str(REPO_ROOT / "main_pipelines" / script), *map(str, args)]


class Quickstart:
    """Build the stages for a config, run them in order, and collect the results table."""

    def __init__(self, cfg: QuickstartConfig, log: Callable[[str], None] = print) -> None:
        self.cfg = cfg
        self.out = Path(cfg.output_dir).resolve()
        self.weights = Path(cfg.weights_dir).resolve()
        self.log = log
        self.stages = self._build()

    # --- paths ------------------------------------------------------------------------------------
    @property
    def raw_dir(self) -> Path:
        """Synthetic cohorts in the NSRR layout."""
        return self.out / "synthetic"

    @property
    def heldout_dir(self) -> Path:
        """The held-out night's cohort folder."""
        return self.out / "heldout"

    @property
    def store_dir(self) -> Path:
        """The epoch store."""
        return self.out / "store"

    @property
    def backbone_path(self) -> Path:
        """The exported backbone (released format)."""
        return self.weights / f"osf_quickstart_{self.cfg.backbone}.pth"

    def probe_dir(self, init: str, task: str) -> Path:
        """Output folder of one linear probe."""
        return self.out / "probes" / init / config.LABEL_COLUMNS[task]

    def heldout_night(self) -> tuple[Path, Path]:
        """EDF and scoring file of the held-out night."""
        edfs = sorted((self.heldout_dir / self.cfg.heldout_cohort / "polysomnography" / "edfs").glob("*.edf"))
        if not edfs:
            raise FileNotFoundError(f"no held-out EDF under {self.heldout_dir}; rerun the 'heldout' stage")
        xml = (self.heldout_dir / self.cfg.heldout_cohort / "polysomnography" / "annotations-events-nsrr"
               / f"{edfs[0].stem}-nsrr.xml")
        return edfs[0], xml

    # --- stages -----------------------------------------------------------------------------------
    def _build(self) -> list[Stage]:
        raise NotImplementedError  # filled in below once the entry points' flags are settled

    # --- running ----------------------------------------------------------------------------------
    def _stamp(self, stage: Stage) -> Path:
        return self.out / ".stages" / f"{stage.name}.json"

    def is_done(self, stage: Stage, command: Sequence[str]) -> bool:
        """True when the stage finished before with the same command and its outputs still exist."""
        stamp = self._stamp(stage)
        if not stamp.is_file():
            return False
        recorded = json.loads(stamp.read_text()).get("command")
        return recorded == list(command) and all(p.exists() for p in stage.outputs())

    def run(self, only: Sequence[str] | None = None) -> dict:
        """Run (or skip) every stage in order; return the results."""
        self.out.mkdir(parents=True, exist_ok=True)
        rerun_rest = False
        for k, stage in enumerate(self.stages, 1):
            command = stage.command()
            if not rerun_rest and self.is_done(stage, command):
                stage.skipped = True
                self.log(f"[{k}/{len(self.stages)}] {stage.name}: done before, skipped ({stage.description})")
                continue
            rerun_rest = True  # later stages depend on this one's outputs
            self.log(f"[{k}/{len(self.stages)}] {stage.name}: {stage.description}")
            self.log("    $ " + shlex.join(command))
            t0 = time.perf_counter()
            proc = subprocess.run(command, cwd=REPO_ROOT)
            if proc.returncode != 0:
                raise RuntimeError(f"quick start stage {stage.name!r} failed (exit {proc.returncode}): {shlex.join(command)}")
            if stage.after is not None:
                stage.after()
            missing = [str(p) for p in stage.outputs() if not p.exists()]
            if missing:
                raise RuntimeError(f"quick start stage {stage.name!r} finished but did not write {missing}")
            stage.elapsed_s = time.perf_counter() - t0
            self._stamp(stage).parent.mkdir(parents=True, exist_ok=True)
            self._stamp(stage).write_text(json.dumps({"command": command, "elapsed_s": stage.elapsed_s}))
            self.log(f"    {stage.name} finished in {stage.elapsed_s:.0f} s")
        return self.results()

    def results(self) -> dict:
        """Collect the probe, fine-tuning and prediction results into one dict."""
        raise NotImplementedError


def config_dict(cfg: QuickstartConfig) -> dict:
    """The config as JSON-friendly values."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()}

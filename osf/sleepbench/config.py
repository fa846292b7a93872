"""What SleepBench-mini runs: corpus, objectives, presets, tasks, k-shot and scaling grid, sizes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from osf.config import CHANNEL_PRESETS, LABEL_COLUMNS
from osf.utils import corpus_sizes

METHODS: tuple[str, ...] = ("dino_ours", "dino", "simclr", "sleepfm", "mae", "vqvae", "ar")
PRESETS: tuple[str, ...] = ("full", "no_eeg", "eeg_eog_only", "cardio_respiratory", "respiratory_only")
TASKS: tuple[str, ...] = ("Stage", "Arousal", "Hypopnea", "Oxygen Desaturation")
TASK_METRIC: dict[str, str] = {"Stage": "kappa", "Arousal": "auroc", "Hypopnea": "auroc", "Oxygen Desaturation": "auroc"}
RANDOM = "random_init"  # the backbone label of the random-init baseline
CEILINGS: tuple[str, ...] = ("handcrafted", "supervised")
POOLING_CHOICES: tuple[str, ...] = ("cls", "mean")  # chosen per objective on validation staging


@dataclass(frozen=True)
class SleepBenchConfig:
    """One SleepBench-mini run; the defaults are the measured laptop setting (README, 'SleepBench-mini')."""

    output_dir: Path = Path("sleepbench_out")
    cohorts: tuple[str, ...] = ("shhs", "mros", "mesa", "chat")  # a multi-cohort corpus
    nights: int = 48  # in total, one subject each
    hours: float = 1.5  # at 1 h the compressed cycles leave ~2 % REM
    split_fractions: str = "0.5,0.25,0.25"  # by subject: 12 test subjects at the defaults
    methods: tuple[str, ...] = METHODS
    presets: tuple[str, ...] = PRESETS
    tasks: tuple[str, ...] = TASKS
    backbone: str = "vit_nano"
    recipe: str = "small"
    pretrain_steps: int = 200  # equal compute: every objective gets the same steps x batch
    batch_size: int = 32
    probe_steps: int = 300
    kshots: tuple[int, ...] = (1, 5, 20)  # labelled epochs per stage for the k-shot staging curve
    kshot_draws: int = 3
    scaling_sizes: tuple[str, ...] = ("vit_pico", "vit_nano")
    scaling_fractions: tuple[float, ...] = (0.3, 1.0)  # of the training subjects
    scaling_method: str = "dino_ours"
    ceilings: tuple[str, ...] = CEILINGS
    ceiling_steps: int = 400
    seeds: int = 1
    n_boot: int = 200
    cpu_workers: int = 0  # processes generating / preprocessing nights (0: one per core, at most 4)
    num_workers: int = 0  # data-loader workers

    @classmethod
    def tiny(cls, **overrides) -> SleepBenchConfig:
        """Sizes for the test suite: the whole machinery in a minute or two."""
        sizes = {"cohorts": ("shhs", "mros"), "nights": 8, "hours": 0.5, "methods": ("dino_ours", "mae"),
                 "presets": ("full", "cardio_respiratory"), "tasks": ("Stage", "Arousal"), "pretrain_steps": 2,
                 "batch_size": 8, "probe_steps": 10, "kshots": (2,), "kshot_draws": 2, "scaling_sizes": ("vit_pico",),
                 "scaling_fractions": (0.5,), "ceiling_steps": 5, "n_boot": 20}
        return cls(**{**sizes, **overrides})

    def __post_init__(self) -> None:
        from osf.models import list_methods

        _check_subset("methods", self.methods, list_methods())
        _check_subset("presets", self.presets, CHANNEL_PRESETS)
        _check_subset("tasks", self.tasks, LABEL_COLUMNS)
        _check_subset("ceilings", self.ceilings, CEILINGS)
        if "full" not in self.presets or "Stage" not in self.tasks:
            raise ValueError("presets must include 'full' and tasks 'Stage': the main table and the degradation need them")
        if self.seeds < 1 or self.nights < 4:
            raise ValueError(f"need seeds >= 1 and nights >= 4, got seeds={self.seeds}, nights={self.nights}")
        if any(not 0 < f <= 1 for f in self.scaling_fractions):
            raise ValueError(f"scaling fractions must be in (0, 1], got {list(self.scaling_fractions)}")

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


def _check_subset(name: str, values: tuple, known) -> None:
    unknown = [v for v in values if v not in known]
    if unknown or not values:
        raise ValueError(f"{name}: unknown or empty {unknown or list(values)}; choose from {sorted(known)}")

"""What SleepBench-mini runs: corpus, objectives, presets, tasks, k-shot and scaling grid, sizes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from osf.config import CHANNEL_PRESETS, LABEL_COLUMNS
from osf.datasets.synthetic.generate import DEFAULT_GENERATOR
from osf.study import RANDOM_INIT
from osf.tasks import studied_tasks
from osf.utils import corpus_sizes
from osf.utils.config_fields import option

PRESETS: tuple[str, ...] = ("full", "no_eeg", "eeg_eog_only", "cardio_respiratory", "respiratory_only")
RANDOM = RANDOM_INIT  # the backbone label of the random-init baseline
# power48 (12 log-variances + the std/min/max of six 5 s windows') is the power summary a learned representation
# has to beat (issue 26); handcrafted adds band powers and EEG/EOG/EMG features; supervised is the 1D CNN.
CEILINGS: tuple[str, ...] = ("power48", "handcrafted", "supervised")
_OUTPUT_DIR = Path("sleepbench_out")


def _all_methods() -> tuple[str, ...]:
    from osf.models.registry import methods_in_order  # the method registry (imports the methods: torch)

    return methods_in_order()
# Every backbone's staging probe chooses its features on validation among these (the quick start's set): a random
# backbone's cues sit in its channel groups' statistics, not in its CLS or patch mean (on generator 2.0 its CLS /
# mean probe stages at 0.19), and an objective whose CLS is untrained (AR, VQ-VAE) reads its patch tokens.
POOLING_CHOICES: tuple[str, ...] = ("cls", "mean", "groups", "groups_std")


@dataclass(frozen=True)
class SleepBenchConfig:
    """One SleepBench-mini run; the defaults are the measured laptop setting (README, 'SleepBench-mini')."""

    output_dir: Path = option(_OUTPUT_DIR, help="everything goes here (OUT)", required=True)  # noqa: RUF009 (a field)
    cohorts: tuple[str, ...] = option(("shhs", "mros", "mesa", "chat"), help="synthetic cohort presets of the "
                                                                              "multi-cohort corpus")
    nights: int = option(48, help="nights in the corpus, spread over the cohorts (one subject each)")
    hours: float = option(1.5, help="hours per night (generator 2: a window of a whole night; generator 1 compresses "
                                    "the cycles, at 1 h leaving ~2 % REM)")
    generator: int = option(DEFAULT_GENERATOR, help="synthetic generator major version (1 reproduces generator 1.2's "
                            "data: benchmarks/results/sleepbench_mini/)")
    # by subject: 12 test subjects at the defaults
    split_fractions: str = option("0.5,0.25,0.25", help="train,val,test fractions of the subjects", cli=False)
    methods: tuple[str, ...] = option(default_factory=_all_methods,
                                      help="objectives (default: every registered one, OSF first)")
    presets: tuple[str, ...] = option(PRESETS, help="channel presets")
    tasks: tuple[str, ...] = option(default_factory=studied_tasks,
                                    help="tasks (default: the task registry's evaluated tasks)")
    backbone: str = option("vit_nano", help="backbone of the objectives", cli=False)
    recipe: str = option("small", help="pre-training recipe", cli=False)
    # equal compute: every objective gets the same steps x batch
    pretrain_steps: int = option(200, help="pre-training steps per objective")
    batch_size: int = option(32, help="pre-training batch size", cli=False)
    probe_steps: int = option(300, help="linear-probe steps")
    kshots: tuple[int, ...] = option((1, 5, 20), help="labelled epochs per stage of the k-shot staging curve",
                                     cli=False)
    kshot_draws: int = option(3, help="draws per k-shot point", cli=False)
    scaling_sizes: tuple[str, ...] = option(("vit_pico", "vit_nano"), help="backbone sizes of the scaling sweep")
    scaling_fractions: tuple[float, ...] = option((0.3, 1.0), help="fractions of the training subjects of the "
                                                                   "scaling sweep", cli=False)
    scaling_method: str = option("dino_ours", help="objective of the scaling sweep", cli=False)
    ceilings: tuple[str, ...] = option(CEILINGS, help="ceiling kinds", cli=False)
    ceiling_steps: int = option(400, help="training steps of the supervised ceiling", cli=False)
    seeds: int = option(1, help="training seeds")
    n_boot: int = option(200, help="bootstrap resamples for the confidence intervals", cli=False)
    cpu_workers: int = option(0, help="processes generating / preprocessing nights (0: one per core, at most 4)")
    num_workers: int = option(0, help="data-loader workers", cli=False)

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

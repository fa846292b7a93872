"""The steps the studies share: the quick start (:mod:`osf.quickstart`) and SleepBench-mini (:mod:`osf.sleepbench`).

Both are step lists over the one runner (:mod:`osf.utils.steps`); the steps they have in common are
built here from typed specs: a synthetic corpus and its epoch store (:class:`CorpusSpec`), a
pre-training run and the export of its backbone (:class:`PretrainSpec`), the flags of a random-init
backbone, and the pooling a backbone's probes use (the best on the validation split, by the task's
reporting metric from the task registry).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from osf import entry_calls as calls
from osf.datasets.synthetic.generate import DEFAULT_GENERATOR
from osf.downstream.results import best_on_validation
from osf.tasks import get_task
from osf.utils.config_fields import flags_of
from osf.utils.steps import Flags, Step

RANDOM_INIT = "random_init"  # the model name of a random-init backbone


def entry_step(name: str, description: str, script: str, flags: Callable[[], Flags],
               outputs: Callable[[], list[Path]], **options: Any) -> Step:
    """A step that prints ``main_pipelines/<script>``'s command and runs the library call behind it
    (:func:`osf.entry_calls.call`) with the same flags; ``options``: :class:`Step`'s ``needs``, ``clean``, ``cost``."""
    return Step(name, description, script, flags, functools.partial(calls.call, script), outputs, **options)


@dataclass(frozen=True)
class CorpusSpec:
    """A synthetic multi-cohort corpus and the epoch store of it (one preprocessing step per cohort)."""

    synthetic_dir: Path
    store_dir: Path
    cohorts: tuple[str, ...]
    nights_per_cohort: int
    hours: float
    split_fractions: str
    seed: int
    workers: int  # processes generating and preprocessing nights
    progress: bool | None = None  # None: the entry points' default (a bar)
    cohort_cost: float = 1.0  # relative run times for a progress bar's ETA
    store_cost: float = 1.0
    generator: int = DEFAULT_GENERATOR  # synthetic generator major version (1 reproduces 1.2's bytes)

    @property
    def store_step(self) -> str:
        """The last data step: everything trained needs it."""
        return f"store_{self.cohorts[-1]}"


def corpus_steps(spec: CorpusSpec) -> list[Step]:
    """Generate the cohorts, then preprocess each into the one store (the first one replaces an old store)."""
    progress = {} if spec.progress is None else {"progress": spec.progress}
    steps = [entry_step(
        "cohort", f"generate {spec.nights_per_cohort * len(spec.cohorts)} synthetic nights of {spec.hours} h "
                  f"({', '.join(spec.cohorts)})", "main_synthetic.py",
        lambda: {"output_dir": str(spec.synthetic_dir), "cohorts": ",".join(spec.cohorts),
                 "nights_per_cohort": spec.nights_per_cohort, "hours": spec.hours, "seed": spec.seed,
                 "num_workers": spec.workers, "overwrite": True, "generator": spec.generator, **progress},
        lambda: [spec.synthetic_dir / "manifest.json"], cost=spec.cohort_cost)]
    for i, cohort in enumerate(spec.cohorts):
        steps.append(entry_step(
            f"store_{cohort}", f"preprocess the {cohort} cohort into the epoch store", "main_preprocess.py",
            lambda cohort=cohort, first=(i == 0): {
                "dataset": cohort, "input_dir": str(spec.synthetic_dir / cohort), "output_dir": str(spec.store_dir),
                "split_fractions": spec.split_fractions, "seed": spec.seed, "num_workers": spec.workers,
                "overwrite": True if first else None, **progress},
            lambda: [spec.store_dir / "index.parquet"],
            needs=("cohort", *(f"store_{c}" for c in spec.cohorts[:i])), cost=spec.store_cost))
    return steps


@dataclass(frozen=True)
class PretrainSpec:
    """One pre-training run (``main_pretrain.py``) and the export of its backbone (``main_export.py``)."""

    run_name: str
    method: str
    backbone: str
    store_dir: Path
    runs_dir: Path  # parent of the run folder
    backbone_path: Path  # where the backbone is exported
    recipe: str
    batch_size: int
    max_steps: int
    seed: int
    num_workers: int
    val_batches: int
    hardware: Mapping[str, object] = field(default_factory=lambda: {"accelerator": "cpu"})
    lr: float | None = None  # None: the recipe's
    head_pooling: str | None = None  # None: the recipe's
    teacher_views: str | None = None  # None: the recipe's (OSF only)
    train_data_pct: float | None = None  # None: every training subject
    progress_bar: bool | None = None  # None: the entry point's default (a bar)
    step_suffix: str = ""  # e.g. "_s0": step names pretrain<suffix> / export<suffix>
    description: str = ""
    export_twin: bool = False  # the export's outputs include the .safetensors twin
    needs: tuple[str, ...] = ()
    cost: float = 1.0
    export_cost: float = 1.0

    @property
    def ckpt(self) -> Path:
        """The run's last Lightning checkpoint."""
        return self.runs_dir / self.run_name / "checkpoints" / "last.ckpt"

    def flags(self) -> Flags:
        """The ``main_pretrain.py`` flags of the run."""
        return {"model_name": self.method, "psg_encoder_name": self.backbone, "data_dir": str(self.store_dir),
                "recipe": self.recipe, "batch_size": self.batch_size, "max_steps": self.max_steps, "lr": self.lr,
                "head_pooling": self.head_pooling, "teacher_views": self.teacher_views,
                "train_data_pct": self.train_data_pct,
                "num_workers": self.num_workers, "seed": self.seed, **self.hardware,
                "output_dir": str(self.runs_dir), "run_name": self.run_name, "logger": "csv",
                "ckpt_every_n_steps": self.max_steps, "limit_val_batches": self.val_batches,
                "log_every_n_steps": max(1, min(10, self.max_steps // 2)), "progress_bar": self.progress_bar}


def pretrain_steps(spec: PretrainSpec, export_description: str) -> list[Step]:
    """Pre-train and export: steps ``pretrain<suffix>`` and ``export<suffix>``."""
    pretrain, export = f"pretrain{spec.step_suffix}", f"export{spec.step_suffix}"
    outputs = [spec.backbone_path, *([spec.backbone_path.with_suffix(".safetensors")] if spec.export_twin else [])]
    return [
        entry_step(pretrain, spec.description, "main_pretrain.py", spec.flags, lambda: [spec.ckpt],
                   needs=spec.needs, clean=lambda: [spec.ckpt.parents[1]], cost=spec.cost),
        entry_step(export, export_description, "main_export.py",
                   lambda: {"ckpt_path": str(spec.ckpt), "output": str(spec.backbone_path)},
                   lambda: outputs, needs=(pretrain,), cost=spec.export_cost),
    ]


def random_init_flags(size: str) -> Flags:
    """``main_finetune.py`` flags of a randomly initialised backbone of ``size``."""
    return {"ckpt_path": "none", "psg_encoder_name": size, "model_name": RANDOM_INIT}


def choose_pooling(runs: Mapping[str, Path], task: str) -> str:
    """The pooling (key of ``runs``: pooling -> probe JSON) whose probe scores best on the validation split by the
    task's reporting metric; the first on ties. FileNotFoundError before the probes ran."""
    return best_on_validation(runs, get_task(task).reporting_metric)


# --- the studies' command lines, built from their typed configs -------------------------------------------------
def _list_item_type(annotation: Any) -> type | None:
    """``X`` of a ``tuple[X, ...]`` field (a comma-separated flag), else None."""
    args = typing.get_args(annotation)
    return args[0] if typing.get_origin(annotation) is tuple and args[-1:] == (Ellipsis,) else None


def _default_text(f: dataclasses.Field) -> str | None:
    if f.default is dataclasses.MISSING:
        return None  # a computed default (a registry's list): the help says which
    if isinstance(f.default, tuple):
        return ",".join(map(str, f.default))
    return None if f.default is None else str(f.default)


def add_config_flags(parser: argparse.ArgumentParser, cls: type, aliases: Mapping[str, tuple[str, ...]] = {}) -> None:
    """One flag per command-line field of the study config ``cls`` (``option()`` help, default ``None``: not given);
    ``tuple[X, ...]`` fields as one comma-separated value; ``aliases``: flag -> extra spellings."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for flag in flags_of(cls):
        listed = _list_item_type(hints[flag.field]) is not None
        default = None if flag.required else _default_text(fields[flag.field])
        text = (f"comma-separated {flag.help}" if listed else flag.help) + (f" (default: {default})" if default else "")
        names = [f"--{flag.name}", *(f"--{alias}" for alias in aliases.get(flag.name, ()))]
        if flag.kind is bool:
            parser.add_argument(*names, action=argparse.BooleanOptionalAction, default=None, help=text.replace("%", "%%"))
        else:
            parser.add_argument(*names, type=str if listed else flag.kind, choices=flag.choices, default=None,
                                required=flag.required, help=text.replace("%", "%%"))


def config_values(cls: type, args: argparse.Namespace) -> dict[str, Any]:
    """The fields of ``cls`` given on the command line (not ``None``), comma-separated lists split and typed."""
    hints = typing.get_type_hints(cls)
    values = {}
    for flag in flags_of(cls):
        value = getattr(args, flag.name, None)
        item = _list_item_type(hints[flag.field])
        if value is not None and item is not None:
            value = tuple(item(v.strip()) for v in value.split(",") if v.strip())
        if value is not None:
            values[flag.field] = value
    return values

"""The library function behind each ``main_pipelines`` entry point, called with that entry point's flags.

The quick start and SleepBench-mini print each step as its shell command and run it here, in the
same process, one way for every entry point: :func:`call` with the script's name and the flags dict
the command was printed from (flag name -> value, ``None`` = not given). Each function turns those
flags into what its entry point builds from them: the typed run configuration where the entry point
has one (``main_pretrain.py``: ``resolve_pretrain_config``; ``main_finetune.py``:
``resolve_downstream_config``), else the library function's keyword arguments of the same names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from osf.utils.steps import Flags


def generate(flags: Flags) -> Path:
    """main_synthetic.py: synthetic cohorts; returns the manifest path."""
    from osf.datasets.synthetic import generate_cohort

    return generate_cohort(**flags)


def ingest(flags: Flags) -> Any:
    """main_preprocess.py: one cohort into the epoch store; raises when a recording failed."""
    from osf.datasets.ingest import ingest_dataset

    fractions = tuple(float(x) for x in flags["split_fractions"].split(","))
    report = ingest_dataset(**{**flags, "split_fractions": fractions})
    if report.failed:
        raise RuntimeError(f"{len(report.failed)} recording(s) failed: {list(report.failed.values())[:3]}")
    return report


def pretrain(flags: Flags) -> Any:
    """main_pretrain.py: resolved as the entry point resolves its flags (defaults < size < recipe < flags)."""
    from osf.models.pretrain_config import BackboneConfig, RunConfig, method_flags, resolve_pretrain_config
    from osf.models.training import run_pretrain
    from osf.utils.config_fields import field_names, flags_of

    known = {"model_name", "recipe", "method_kwargs", *field_names(RunConfig), *method_flags(),
             *(flag.name for flag in flags_of(BackboneConfig))}
    unknown = sorted(set(flags) - known)
    if unknown:
        raise ValueError(f"main_pretrain.py has no flag(s) {unknown}")
    return run_pretrain(resolve_pretrain_config({"method_kwargs": {}, **flags}))


def export(flags: Flags) -> tuple[Path, Path]:
    """main_export.py: the backbone of a pre-training checkpoint in the released format (``--which``: default
    the run's recipe's choice)."""
    from osf.models.export import export_pretrained_backbone

    return export_pretrained_backbone(flags["ckpt_path"], flags["output"], flags.get("which"))


def downstream(flags: Flags) -> dict[str, Any] | None:
    """main_finetune.py: one downstream run."""
    from osf.downstream.pipeline import run_downstream
    from osf.downstream.run_config import resolve_downstream_config

    return run_downstream(resolve_downstream_config(flags))


def predict(flags: Flags) -> Any:
    """main_predict.py: stage one night."""
    from osf.predict.night import predict_night

    return predict_night(**flags)


def ceiling(flags: Flags) -> Any:
    """main_ceiling.py: a handcrafted-feature or supervised-CNN ceiling of one task and channel preset."""
    from osf.downstream.ceilings import run_ceiling

    return run_ceiling(flags["kind"], flags["data_dir"], flags["eval_channels"], flags["eval_label"],
                       seed=flags["seed"], n_boot=flags["n_boot"], max_steps=flags["max_steps"],
                       output_dir=flags["output_dir"], feature_cache_dir=flags["feature_cache_dir"])


# Script in main_pipelines/ -> the function behind it (looked up when called: tests may replace one).
ENTRY_POINTS: dict[str, str] = {"main_synthetic.py": "generate", "main_preprocess.py": "ingest",
                                "main_pretrain.py": "pretrain", "main_export.py": "export",
                                "main_finetune.py": "downstream", "main_predict.py": "predict",
                                "main_ceiling.py": "ceiling"}


def call(script: str, flags: Flags) -> Any:
    """Run the library function behind ``main_pipelines/<script>`` with that entry point's ``flags``."""
    try:
        name = ENTRY_POINTS[script]
    except KeyError:
        raise ValueError(f"no library call for entry point {script!r}; known: {sorted(ENTRY_POINTS)}") from None
    return globals()[name](flags)

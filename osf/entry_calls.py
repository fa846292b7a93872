"""The library function behind each ``main_pipelines`` entry point, called with that entry point's flags.

The quick start and SleepBench-mini print each step as its shell command and run it here, in the
same process, through these functions; the flags dict is the one the command was printed from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from osf.utils.steps import Flags, to_argv


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
    """main_pretrain.py: resolved as the entry point resolves its flags (defaults, size, recipe, flags)."""
    from osf.models.pretrain_config import build_parser, config_from_args, resolve_pretrain_config
    from osf.models.training import run_pretrain

    args = build_parser().parse_args(to_argv(flags))
    return run_pretrain(resolve_pretrain_config(config_from_args(args)))


def export(flags: Flags) -> tuple[Path, Path]:
    """main_export.py: the backbone of a pre-training checkpoint in the released format (``--which``: default
    the run's recipe's choice)."""
    from osf.models.export import export_pretrained_backbone

    return export_pretrained_backbone(flags["ckpt_path"], flags["output"], flags.get("which"))


def downstream(flags: Flags) -> dict[str, Any] | None:
    """main_finetune.py: one downstream run."""
    from osf.downstream.pipeline import DownstreamConfig, run_downstream

    return run_downstream(DownstreamConfig(**flags))


def predict(flags: Flags) -> Any:
    """main_predict.py: stage one night."""
    from osf.predict.night import predict_night

    return predict_night(flags["edf"], flags["classifier"], annotations=flags["annotations"],
                         output_dir=flags["output_dir"])




def ceiling(flags: Flags) -> Any:
    """main_ceiling.py: a handcrafted-feature or supervised-CNN ceiling of one task and channel preset."""
    from osf.downstream.ceilings import run_ceiling

    return run_ceiling(flags["kind"], flags["data_dir"], flags["eval_channels"], flags["eval_label"],
                       seed=flags["seed"], n_boot=flags["n_boot"], max_steps=flags["max_steps"],
                       output_dir=flags["output_dir"], feature_cache_dir=flags["feature_cache_dir"])

"""Downstream evaluation of a pre-trained backbone: linear probe (default), full fine-tuning or k-shot.

    python main_pipelines/main_finetune.py --ckpt_path RUN/last.ckpt --model_name dino \
        --data_dir STORE --eval_label Stage --output_dir OUT [--finetune_backbone] [--n_train_samples 10] \
        [--eval_channels no_eeg]

``--ckpt_path`` takes a Lightning pre-training checkpoint (any method), an exported backbone
(``.pth`` / ``.safetensors``), either on the Hugging Face Hub as ``hf://org/repo[@revision]/file``,
or ``none`` with ``--psg_encoder_name`` for a random-init baseline.
Writes ``OUT/<run_id>.json`` (config, hashes, timings, metrics with 95% CIs by subject), one row of
``OUT/results.csv`` (or ``--results_csv``) and ``OUT/classifier.pt`` for ``main_predict.py``.

Every flag is a field of a typed configuration (``osf.downstream.run_config``): the run's
(``DownstreamConfig``) or a level's (``ProbeConfig``, ``FinetuneConfig``, ``SequenceConfig``,
``NightConfig``). A flag left unset takes each level's default; a flag given sets it in every level.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from osf.downstream.pipeline import run_downstream
from osf.downstream.run_config import build_parser as _build_parser
from osf.downstream.run_config import config_from_args

__all__ = ["build_parser", "config_from_args", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The flags, built from ``osf.downstream.run_config``'s dataclasses (the published command's names are kept)."""
    return _build_parser(__doc__)


def main(argv: list[str] | None = None) -> int:
    """Parse flags, run, print the test metrics; exit status 2 on bad input."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        record = run_downstream(config_from_args(args))
    except (ValueError, FileNotFoundError) as err:
        print(f"main_finetune.py: error: {err}", file=sys.stderr)
        return 2
    if record is not None:
        test = {k: v for k, v in record["metrics"]["test"].items() if not isinstance(v, (dict, list))}
        print(json.dumps({"run_id": record["run_id"], "test": test}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Self-supervised pre-training of a PSG backbone (OSF recipe, DINO, and the other registered methods).

Example (CPU smoke run on a store built by main_preprocess.py):

    python main_pipelines/main_pretrain.py --model_name dino_ours --psg_encoder_name vit_nano \
        --data_dir STORE --batch_size 32 --max_steps 300 --num_devices 1 --accelerator cpu \
        --output_dir RUNS --logger csv

Every flag is a field of a typed configuration: the method's (osf.models.<method>.<Method>Config,
shared ones in osf.models.base.MethodConfig), the backbone's (BackboneConfig) or the run's
(osf.models.pretrain_config.RunConfig). Unset flags take the dataclass default, changed by the
backbone size (osf.train_config.BACKBONE_DEFAULTS) and the recipe: --recipe NAME (osf/recipes/NAME.yaml:
osf, small) or --recipe PATH (a YAML file of the same form); flags win over both. The resolved
configuration is written to RUN/config.yaml and stored in every checkpoint. A rerun with the same
--run_name (a requeued SLURM job) resumes from that run's newest checkpoint; --ckpt_path names one.
"""

from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path

import torch

from osf.backbone.checkpoint import refused_pickle_problem
from osf.models.pretrain_config import build_parser as _build_parser
from osf.models.pretrain_config import config_from_args, resolve_pretrain_config
from osf.models.training import LaunchError, NonFiniteLossError, PretrainResult, run_pretrain

__all__ = ["build_parser", "check_resume_checkpoint", "config_from_args", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (flag names of the published OSF commands are kept)."""
    return _build_parser(__doc__)


def check_resume_checkpoint(path: str | None) -> None:
    """Exit with one line when ``--ckpt_path`` is missing or refused by the safe loader, before training is set up.

    Lightning resumes with ``weights_only=True``; a refused checkpoint would otherwise surface as a
    traceback after the data and model were built. Memory-mapped, so the check reads little.
    """
    if not path:
        return
    ckpt = Path(path)
    if not ckpt.is_file():
        sys.exit(f"main_pretrain: cannot resume from {ckpt}: {'file not found' if not ckpt.exists() else 'not a file'}")
    try:
        try:
            torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:
            if "mmap" not in str(err):
                raise
            torch.load(ckpt, map_location="cpu", weights_only=True)  # a legacy (non-zip) file cannot be mapped
    except pickle.UnpicklingError as err:
        if "was not an allowed global" in str(err):  # a pickled object: name it, without torch's advice
            problem = refused_pickle_problem(err).split("; only tensors")[0]  # its re-save advice is for backbones
            sys.exit(f"main_pretrain: cannot resume from {ckpt}: {problem}; resume from a checkpoint main_pretrain.py wrote")
        detail = [ln.strip() for ln in str(err).splitlines() if ln.strip() and "torch.load" not in ln and "weights_only" not in ln]
        sys.exit(f"main_pretrain: cannot resume from {ckpt}: not a readable torch checkpoint ({detail[0] if detail else 'unpickling failed'})")
    except (RuntimeError, EOFError, ValueError, OSError) as err:
        first = (str(err).strip().splitlines() or [""])[0]
        sys.exit(f"main_pretrain: cannot resume from {ckpt}: not a readable torch checkpoint ({type(err).__name__}: {first})")


def main(argv: list[str] | None = None) -> PretrainResult:
    """Parse ``argv``, resolve defaults, train; exits with one line on a bad setting, a non-finite loss or a refused resume."""
    args = build_parser().parse_args(argv)
    check_resume_checkpoint(args.ckpt_path)
    try:
        cfg = resolve_pretrain_config(config_from_args(args))
    except ValueError as err:  # a bad recipe file, method, parameter or setting: one line, no traceback
        sys.exit(f"main_pretrain: {err}")
    try:
        result = run_pretrain(cfg)
    except (NonFiniteLossError, LaunchError) as err:
        sys.exit(f"main_pretrain: {err}")
    print(f"run folder: {result.run_dir}\nlast checkpoint: {result.last_checkpoint}\nbest checkpoint: {result.best_checkpoint}")
    return result


if __name__ == "__main__":
    main()

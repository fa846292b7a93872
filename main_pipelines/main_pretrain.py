"""Self-supervised pre-training of a PSG backbone (OSF recipe, DINO, and the other registered methods).

Example (CPU smoke run on a store built by main_preprocess.py):

    python main_pipelines/main_pretrain.py --model_name dino_ours --psg_encoder_name vit_nano \
        --data_dir STORE --batch_size 32 --max_steps 300 --num_devices 1 --accelerator cpu \
        --output_dir RUNS --logger csv

Unset flags take their defaults from train_config.py (PRETRAIN_RUN_DEFAULTS, METHOD_DEFAULTS per
method, BACKBONE_DEFAULTS per size). The resolved configuration is written to RUN/config.yaml and
stored in every checkpoint. Resume with --ckpt_path RUN/checkpoints/last.ckpt.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
from pathlib import Path
from typing import Any

import torch

import train_config
from osf.backbone.checkpoint import refused_pickle_problem
from osf.models.base import NonFiniteLossError
from osf.models.registry import ALIASES, list_methods
from osf.models.training import LOGGERS, PretrainResult, resolve_pretrain_config, run_pretrain

# Method flags: name -> (type, help). Passed to the method only when given; a flag the chosen method
# does not take is an error. Other parameters: --method_kwargs key=value (value parsed as JSON).
METHOD_FLAGS: dict[str, tuple[Any, str]] = {
    "weight_decay": (float, "AdamW weight decay (OSF: 0.2)"),
    "warmup_frac": (float, "fraction of the optimizer steps spent in linear LR warm-up"),
    "warmup_steps": (int, "LR warm-up length in steps (overrides --warmup_frac)"),
    "min_lr_ratio": (float, "final LR as a fraction of --lr (cosine end point)"),
    "grad_clip": (float, "global gradient-norm clipping (OSF: 3.0; 0 disables)"),
    "dino_out_dim": (int, "number of DINO prototypes (OSF: 2048)"),
    "dino_hidden_dim": (int, "DINO head MLP width"),
    "dino_bottleneck_dim": (int, "DINO head bottleneck before the prototypes"),
    "student_temp": (float, "student softmax temperature"),
    "teacher_temp": (float, "teacher temperature after warm-up"),
    "warmup_teacher_temp": (float, "teacher temperature at step 0"),
    "teacher_temp_warmup_frac": (float, "fraction of steps over which the teacher temperature warms up"),
    "center_momentum": (float, "EMA momentum of the DINO center"),
    "momentum_base": (float, "teacher EMA momentum at step 0 (cosine to --momentum_final)"),
    "momentum_final": (float, "teacher EMA momentum at the last step"),
    "n_global_views": (int, "views seen by teacher and student"),
    "n_local_views": (int, "extra views seen by the student only"),
    "ibot_lambda": (float, "weight of the iBOT masked-patch loss (computed only when > 0)"),
    "ibot_mask_ratio": (float, "fraction of patch tokens masked for iBOT"),
    "koleo_lambda": (float, "weight of the KoLeo regulariser (computed only when > 0)"),
    "freeze_last_layer_frac": (float, "DINO: fraction of the steps at the start in which the prototypes stay fixed"),
    "head_pooling": (str, "DINO: the head reads the cls token (OSF) or the mean of the patch tokens (small recipe)"),
    "channel_drop_p": (float, "OSF views: probability of zeroing each channel"),
    "span_min_frac": (float, "OSF views: shortest zeroed span, fraction of the epoch"),
    "span_max_frac": (float, "OSF views: longest zeroed span, fraction of the epoch"),
    # Baselines (issue 7); other parameters of theirs via --method_kwargs.
    "temperature": (float, "simclr: NT-Xent temperature (0.1)"),
    "proj_hidden_dim": (int, "simclr: projection MLP hidden width"),
    "proj_output_dim": (int, "simclr: projection output width"),
    "proj_dim": (int, "sleepfm: per-modality projection width"),
    "init_temperature": (float, "sleepfm: initial temperature of the leave-one-out InfoNCE"),
    "mask_ratio": (float, "mae: fraction of patch tokens masked (0.75)"),
    "decoder_width": (int, "mae/vqvae: decoder width (256)"),
    "decoder_depth": (int, "mae/vqvae: decoder blocks (4)"),
    "codebook_size": (int, "vqvae: number of codes (8192)"),
    "code_dim": (int, "vqvae: code dimension (32)"),
    "commitment_weight": (float, "vqvae: commitment loss weight (0.25)"),
}
METHOD_BOOL_FLAGS: dict[str, str] = {
    "same_view_pairs": "count (view i, view i) student/teacher pairs in the DINO loss (default: yes for dino_ours "
                       "as in OSF, no for dino)",
    "weight_decay_on_all": "decay every parameter (OSF's release) instead of sparing biases, norms, "
                           "position embedding and CLS/mask tokens",
    "separate_backbones": "sleepfm: one backbone per modality instead of one shared backbone with the other channels masked",
    "learn_temperature": "sleepfm: learn the InfoNCE temperature (default: yes)",
    "norm_target": "mae: per-patch normalised reconstruction targets (MAE's norm_pix_loss; default: no)",
    "vq_ema": "vqvae: EMA codebook updates (default) instead of a learned codebook with the codebook loss",
}


def _key_value(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        return key.strip(), json.loads(raw)
    except json.JSONDecodeError:
        return key.strip(), raw


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (flag names of the published OSF commands are kept)."""
    methods = ", ".join(list_methods() + [f"{a} (= {c})" for a, c in sorted(ALIASES.items())])
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("model")
    g.add_argument("--model_name", default="dino_ours", help=f"pre-training method: {methods} (default: dino_ours)")
    g.add_argument("--psg_encoder_name", default="vit_base", help="backbone size, vit_nano ... vit_xl (default: vit_base)")
    g.add_argument("--patch_size_time", type=int, default=64, help="samples per patch (default: 64)")
    g.add_argument("--patch_size_ch", type=int, default=4, help="channels per patch with --lead_wise 1 (default: 4)")
    g.add_argument("--lead_wise", type=int, choices=(0, 1), default=1, help="1: channel-group x time patches, the released layout (default)")
    g.add_argument("--drop_path_rate", type=float, default=None, help="stochastic depth (default: per size, train_config)")
    g.add_argument("--attn_impl", choices=("sdpa", "math"), default=None, help="attention kernel (default: sdpa)")
    g.add_argument("--compile", action="store_true", help="torch.compile the backbone's encoder")
    g = p.add_argument_group("optimisation")
    g.add_argument("--batch_size", type=int, default=None, help="per-device batch size (default: per size, train_config)")
    g.add_argument("--lr", type=float, default=None, help="peak learning rate (default: per method, OSF 5e-5)")
    g.add_argument("--lr_base_batch", type=int, default=None,
                   help="--lr is given per this many samples and scaled linearly with the global batch "
                        "(batch x devices x nodes x accumulation), as DINO's lr x B/256 (default: no scaling; "
                        "the small recipe: 256)")
    g.add_argument("--recipe", default="osf", choices=sorted(train_config.RECIPES),
                   help="named defaults from train_config.RECIPES: osf (the published recipe) or small "
                        "(minutes on a CPU, the quick start's); flags override either")
    g.add_argument("--max_epochs", type=int, default=None, help="epochs (default 30) unless --max_steps is set")
    g.add_argument("--max_steps", type=int, default=None, help="optimizer steps; takes precedence over --max_epochs")
    g.add_argument("--accumulate_grad_batches", type=int, default=1, help="micro-batches per optimizer step")
    g.add_argument("--seed", type=int, default=0, help="seeds weights, data order and views (default: 0)")
    g = p.add_argument_group("method parameters (default: train_config.METHOD_DEFAULTS)")
    for name, (typ, text) in METHOD_FLAGS.items():
        g.add_argument(f"--{name}", type=typ, default=None, help=text)
    for name, text in METHOD_BOOL_FLAGS.items():
        g.add_argument(f"--{name}", action=argparse.BooleanOptionalAction, default=None, help=text)
    g.add_argument("--method_kwargs", type=_key_value, action="append", default=[], metavar="KEY=VALUE",
                   help="any other constructor parameter of the method (value parsed as JSON), repeatable")
    g = p.add_argument_group("data")
    g.add_argument("--data_dir", required=True, help="epoch store folder (main_preprocess.py output)")
    g.add_argument("--include_datasets", default=None, help="comma-separated dataset names (default: all pretrain datasets)")
    g.add_argument("--train_data_pct", type=float, default=1.0, help="fraction of training subjects used")
    g.add_argument("--num_workers", type=int, default=0, help="DataLoader workers per device")
    g.add_argument("--probe_label", default=None, help="label for the online linear probe (default: Stage; '' disables)")
    g = p.add_argument_group("hardware")
    g.add_argument("--accelerator", default="auto", help="auto, cpu, gpu, ... (default: auto)")
    g.add_argument("--num_devices", type=int, default=1, help="devices per node; > 1 runs DDP")
    g.add_argument("--num_nodes", type=int, default=1, help="nodes (with SLURM: srun sets the ranks)")
    g.add_argument("--precision", default=None, help="32-true, bf16-mixed (alias bf16), 16-mixed (default: 32-true)")
    g = p.add_argument_group("run")
    g.add_argument("--output_dir", default="runs", help="parent folder of the run folder (default: runs)")
    g.add_argument("--run_name", default=None, help="run folder name (default: method_backbone_timestamp, or the resumed run's)")
    g.add_argument("--ckpt_path", default=None, help="resume from this Lightning checkpoint (e.g. RUN/checkpoints/last.ckpt)")
    g.add_argument("--ckpt_every_n_steps", type=int, default=None, help="periodic checkpoint interval (default: 1000)")
    g.add_argument("--val_every_n_steps", type=int, default=None, help="validation interval (default: the checkpoint interval)")
    g.add_argument("--limit_val_batches", type=float, default=None, help="fraction (<= 1) or number of val batches")
    g.add_argument("--log_every_n_steps", type=int, default=None, help="logging interval (default: 50)")
    g.add_argument("--logger", default="csv", help=f"comma-separated: {', '.join(LOGGERS)} (wandb runs offline; default: csv)")
    g.add_argument("--progress_bar", action=argparse.BooleanOptionalAction, default=True, help="show the progress bar")
    g.add_argument("--diag_every_n_steps", type=int, default=None,
                   help="learning diagnostics (RankMe, embedding std, DINO entropies) on a fixed batch every N "
                        "optimizer steps, WARNING on collapse, summary in RUN/diagnostics.json (default: 50; 0: off)")
    g.add_argument("--diag_batch_size", type=int, default=None, help="epochs in the fixed diagnostics batch (default: 64)")
    return p


def config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Flat CLI config with method flags gathered under ``method_kwargs`` (unset ones left out)."""
    values = vars(args).copy()
    method_kwargs = {name: values.pop(name) for name in [*METHOD_FLAGS, *METHOD_BOOL_FLAGS]}
    method_kwargs.update(dict(values.pop("method_kwargs")))
    values["method_kwargs"] = {k: v for k, v in method_kwargs.items() if v is not None}
    if values["limit_val_batches"] is not None and values["limit_val_batches"] > 1:
        values["limit_val_batches"] = int(values["limit_val_batches"])
    return values


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
    """Parse ``argv``, resolve defaults, train; exits with a message on a non-finite loss or a refused resume."""
    args = build_parser().parse_args(argv)
    check_resume_checkpoint(args.ckpt_path)
    cfg = resolve_pretrain_config(config_from_args(args))
    try:
        result = run_pretrain(cfg)
    except NonFiniteLossError as err:
        sys.exit(f"main_pretrain: {err}")
    print(f"run folder: {result.run_dir}\nlast checkpoint: {result.last_checkpoint}\nbest checkpoint: {result.best_checkpoint}")
    return result


if __name__ == "__main__":
    main()

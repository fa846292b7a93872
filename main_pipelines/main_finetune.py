"""Downstream evaluation of a pre-trained backbone: linear probe (default), full fine-tuning or k-shot.

    python main_pipelines/main_finetune.py --ckpt_path RUN/last.ckpt --model_name dino \
        --data_dir STORE --eval_label Stage --output_dir OUT [--finetune_backbone] [--n_train_samples 10] \
        [--eval_channels no_eeg]

``--ckpt_path`` takes a Lightning pre-training checkpoint (any method), an exported backbone
(``.pth`` / ``.safetensors``), either on the Hugging Face Hub as ``hf://org/repo[@revision]/file``,
or ``none`` with ``--psg_encoder_name`` for a random-init baseline.
Writes ``OUT/<run_id>.json`` (config, hashes, timings, metrics with 95% CIs by subject), one row of
``OUT/results.csv`` (or ``--results_csv``) and ``OUT/classifier.pt`` for ``main_predict.py``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from osf import config, train_config
from osf.downstream.features import POOLINGS
from osf.downstream.losses import LOSS_TYPES
from osf.downstream.pipeline import DownstreamConfig, run_downstream


def _defaults(name: str) -> str:
    """Help text: the per-setting default from train_config.DOWNSTREAM_DEFAULTS."""
    d = train_config.DOWNSTREAM_DEFAULTS
    return f"{d['linear_probe'][name]} probe, {d['finetune'][name]} fine-tuning"


def build_parser() -> argparse.ArgumentParser:
    """Command-line flags (the published command's names are kept)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("backbone")
    g.add_argument("--ckpt_path", default="none",
                   help="Lightning .ckpt, exported .pth/.safetensors, a Hub file hf://org/repo[@rev]/file "
                        "(e.g. hf://yang-ai-lab/OSF-Base/osf_backbone.pth), or 'none' for random init (default: none)")
    g.add_argument("--psg_encoder_name", default=None,
                   help="architecture for --ckpt_path none (e.g. vit_base); otherwise only checked against the checkpoint")
    g.add_argument("--model_name", default=None,
                   help="method name for the results table (default: the checkpoint's model_name)")
    g = p.add_argument_group("data")
    g.add_argument("--data_dir", required=True, help="epoch store folder (main_preprocess.py output)")
    g.add_argument("--downstream_dataset_name", default=None,
                   help="dataset(s) of the store to evaluate on, comma-separated (default: every downstream cohort)")
    g.add_argument("--eval_label", default="Stage", choices=list(config.LABEL_COLUMNS))
    g.add_argument("--stage_classes", type=int, default=4, choices=(4, 5), help="Stage task: 4 (W/Light/Deep/REM) or 5 classes")
    g.add_argument("--train_data_pct", type=float, default=1.0, help="fraction of training subjects used (0, 1]")
    g.add_argument("--n_train_samples", type=int, default=None, help="k-shot: labelled training epochs per class")
    g.add_argument("--n_seeds", type=int, default=None, help="repeats with seeds seed..seed+n-1 (default 3 for k-shot, else 1)")
    g.add_argument("--eval_channels", default="full",
                   help=f"montage preset ({', '.join(config.CHANNEL_PRESETS)}) or comma-separated channels present at test time")
    g.add_argument("--mask_train_channels", action=argparse.BooleanOptionalAction, default=False,
                   help="also hide the channels outside --eval_channels during training")
    g.add_argument("--batch_size", type=int, default=None, help=f"default {_defaults('batch_size')}")
    g.add_argument("--num_workers", type=int, default=0)
    g = p.add_argument_group("training")
    g.add_argument("--finetune_backbone", action=argparse.BooleanOptionalAction, default=False,
                   help="full fine-tuning (default: linear probe on cached frozen features)")
    g.add_argument("--init_head", default=None, metavar="CLASSIFIER_PT",
                   help="fine-tuning: start the head at this linear probe's (its classifier.pt; same backbone, pooling "
                        "and task), i.e. LP-FT")
    g.add_argument("--pooling", default="cls", choices=list(POOLINGS),
                   help="backbone features: cls token, mean of patch tokens, per-channel-group means (groups), or the "
                        "cls token beside the group means (cls_groups), or each group's mean and std over time (groups_std)")
    g.add_argument("--use_mean_pool", action=argparse.BooleanOptionalAction, default=False,
                   help="same as --pooling mean (kept for the published scripts)")
    g.add_argument("--loss_type", default="ce", choices=list(LOSS_TYPES))
    g.add_argument("--max_steps", type=int, default=None, help=f"default {_defaults('max_steps')}")
    g.add_argument("--lr", type=float, default=None, help=f"head learning rate (default {_defaults('lr')})")
    g.add_argument("--backbone_lr_scale", type=float, default=0.1, help="fine-tuning: backbone lr = lr x this")
    g.add_argument("--layer_decay", type=float, default=None,
                   help=f"fine-tuning: layer-wise lr decay, 1 = off (default {_defaults('layer_decay')})")
    g.add_argument("--weight_decay", type=float, default=None, help=f"default {_defaults('weight_decay')}")
    g.add_argument("--warmup_steps", type=int, default=None,
                   help=f"fine-tuning: linear warm-up steps before the cosine (default {_defaults('warmup_steps')})")
    g.add_argument("--eval_every", type=int, default=None,
                   help=f"validate (model selection) every N steps (default {_defaults('eval_every')})")
    g.add_argument("--early_stopping", action=argparse.BooleanOptionalAction, default=False,
                   help="fine-tuning: stop when validation has not improved for --patience checks")
    g.add_argument("--patience", type=int, default=5)
    g.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("night level and sequence context")
    g.add_argument("--eval_level", default="epoch", choices=("epoch", "night"),
                   help="epoch: per-epoch labels (default); night: --target_variable of each night from its epoch embeddings")
    g.add_argument("--target_variable", default=None,
                   help="night level: a subject-table variable, e.g. nsrr_ahi_hp3r_aasm15, nsrr_age, nsrr_sex")
    g.add_argument("--target_threshold", type=float, default=None,
                   help="night level: binary task target_variable >= threshold (e.g. 15 for AHI); unset: regression "
                        "for a numeric variable, classification for a 0/1 or text one")
    g.add_argument("--subject_tables", default=None,
                   help="night level: raw data folder holding <cohort>/datasets/*.csv (main_preprocess.py's --input_dir)")
    g.add_argument("--night_models", default="mean_std,stage_profile,attention,transformer",
                   help="night level: comma-separated night models (mean_std, stage_profile, attention, transformer; "
                        "stage_profile pools a stage probe's epoch probabilities, so it needs --eval_label Stage)")
    g.add_argument("--context_epochs", type=int, default=0,
                   help="epoch level: > 0 trains a sequence head over +-K neighbouring epoch embeddings, beside the per-epoch probe")
    g.add_argument("--sequence_model", default="transformer", choices=("transformer", "bigru"),
                   help="sequence head for --context_epochs")
    g = p.add_argument_group("hardware")
    g.add_argument("--num_devices", type=int, default=1, help="devices for fine-tuning (DDP when > 1)")
    g.add_argument("--accelerator", default="auto", help="auto, cpu, gpu")
    g.add_argument("--precision", default="32-true", help="Lightning precision, e.g. 32-true, bf16-mixed")
    g = p.add_argument_group("outputs")
    g.add_argument("--output_dir", required=True, help="folder for the run JSON, results.csv and classifier.pt")
    g.add_argument("--results_csv", default=None, help="results table to append to (default OUTPUT_DIR/results.csv)")
    g.add_argument("--feature_cache_dir", default=None,
                   help="linear-probe feature cache (default OUTPUT_DIR/feature_cache; 'off' disables)")
    g.add_argument("--cache_poolings", default=None,
                   help="comma-separated poolings also written to the feature cache from the same backbone pass "
                        "(e.g. --pooling cls --cache_poolings mean: a later mean-pooled probe finds its features)")
    g.add_argument("--export_classifier", action=argparse.BooleanOptionalAction, default=True,
                   help="write OUTPUT_DIR/classifier.pt (backbone + head + label names + channel contract)")
    g.add_argument("--n_boot", type=int, default=1000, help="bootstrap resamples (by subject) for the 95%% CIs")
    g.add_argument("--pretrain_samples", type=int, default=None, help="pre-training sample count, for scaling plots")
    g.add_argument("--run_name", default=None, help="run id (default: built from method, task, setting, preset, seed)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Parse flags, run, print the test metrics; exit status 2 on bad input."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = DownstreamConfig(**vars(args))
    try:
        record = run_downstream(cfg)
    except (ValueError, FileNotFoundError) as err:
        print(f"main_finetune.py: error: {err}", file=sys.stderr)
        return 2
    if record is not None:
        test = {k: v for k, v in record["metrics"]["test"].items() if not isinstance(v, (dict, list))}
        print(json.dumps({"run_id": record["run_id"], "test": test}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

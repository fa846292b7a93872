#!/usr/bin/env bash
# OSF pre-training, the published recipe (osf/recipes/osf.yaml), on one node with several GPUs
# (Lightning DDP): dino_ours on vit_base (12 channels, 64x4 patches, lead_wise=1), batch 256 per GPU,
# lr 5e-5, 30 epochs, bf16. Those and the method's other defaults (AdamW betas 0.9/0.95, weight decay
# 0.2, clipping 3.0, teacher temperature 0.04->0.07, EMA 0.996->1.0, same-view pairs counted) are the
# typed configs' (osf/models/osf_dino.py; `main_pretrain.py --help`), not restated here.
#
#   DATA_DIR=/data/osf_store NUM_GPUS=8 bash bash_scripts/pretrain_osf.sh [extra main_pretrain flags]
#
# Resume after a preemption: add --ckpt_path runs/<run>/checkpoints/last.ckpt (same other flags).
# Export afterwards:
#   python main_pipelines/main_export.py --ckpt_path runs/<run>/checkpoints/last.ckpt \
#       --output pretrained_weights/osf_backbone.pth      # exports the teacher (the published recipe's choice)
set -euo pipefail
exec bash "$(dirname "${BASH_SOURCE[0]}")/pretrain_recipe.sh" --model_name dino_ours "$@"

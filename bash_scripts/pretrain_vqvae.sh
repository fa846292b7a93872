#!/usr/bin/env bash
# VQ-VAE baseline (issue 7): ViT encoder, 8192 x 32 codebook (EMA updates, commitment 0.25, dead-code
# restarts; codebook usage and perplexity are logged), 4-block transformer decoder of the patch signals.
# Other defaults come from the method's typed config (osf.models.vqvae, see `main_pretrain.py --help`); every flag can be overridden by
# appending it. Same recipe (data, backbone, batch, epochs, precision) as pretrain_osf.sh, so the runs compare.
#
#   DATA_DIR=/data/osf_store NUM_GPUS=8 bash bash_scripts/pretrain_vqvae.sh [extra main_pretrain flags]
#
# Export afterwards (no teacher: the trained backbone is exported):
#   python main_pipelines/main_export.py --ckpt_path runs/<run>/checkpoints/last.ckpt \
#       --output pretrained_weights/vqvae_backbone.pth
set -euo pipefail
exec bash "$(dirname "${BASH_SOURCE[0]}")/pretrain_recipe.sh" --model_name vqvae "$@"

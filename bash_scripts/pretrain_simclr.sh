#!/usr/bin/env bash
# SimCLR baseline (issue 7): two time-series-augmented views, projection MLP 2048 -> 128, NT-Xent at
# temperature 0.1 with negatives gathered across all GPUs (global batch = 256 x GPUs).
# Other defaults come from the method's typed config (osf.models.simclr, see `main_pretrain.py --help`); every flag can be overridden by
# appending it. Same recipe (data, backbone, batch, epochs, precision) as pretrain_osf.sh, so the runs compare.
#
#   DATA_DIR=/data/osf_store NUM_GPUS=8 bash bash_scripts/pretrain_simclr.sh [extra main_pretrain flags]
#
# Export afterwards (no teacher: the trained backbone is exported):
#   python main_pipelines/main_export.py --ckpt_path runs/<run>/checkpoints/last.ckpt \
#       --output pretrained_weights/simclr_backbone.pth
set -euo pipefail
exec bash "$(dirname "${BASH_SOURCE[0]}")/pretrain_recipe.sh" --model_name simclr "$@"

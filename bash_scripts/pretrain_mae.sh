#!/usr/bin/env bash
# MAE baseline (issue 7): 75% of the 90 patch tokens masked, decoder of 4 blocks x width 256 with its
# own position embeddings, MSE on the masked patches (add --norm_target for per-patch normalised targets).
# Other defaults come from the method's typed config (osf.models.mae, see `main_pretrain.py --help`); every flag can be overridden by
# appending it. Same recipe (data, backbone, batch, epochs, precision) as pretrain_osf.sh, so the runs compare.
#
#   DATA_DIR=/data/osf_store NUM_GPUS=8 bash bash_scripts/pretrain_mae.sh [extra main_pretrain flags]
#
# Export afterwards (no teacher: the trained backbone is exported):
#   python main_pipelines/main_export.py --ckpt_path runs/<run>/checkpoints/last.ckpt \
#       --output pretrained_weights/mae_backbone.pth
set -euo pipefail
exec bash "$(dirname "${BASH_SOURCE[0]}")/pretrain_recipe.sh" --model_name mae "$@"

#!/usr/bin/env bash
# SleepFM leave-one-out baseline (issue 7): brain / cardiac / respiratory modalities of the 12
# channels, one shared backbone with the other modalities' channels masked (add --separate_backbones for
# one backbone per modality), learnable temperature; epochs missing a modality are masked out of the loss.
# Other defaults come from the method's typed config (osf.models.sleepfm, see `main_pretrain.py --help`); every flag can be overridden by
# appending it. Same recipe (data, backbone, batch, epochs, precision) as pretrain_osf.sh, so the runs compare.
#
#   DATA_DIR=/data/osf_store NUM_GPUS=8 bash bash_scripts/pretrain_sleepfm.sh [extra main_pretrain flags]
#
# Export afterwards (no teacher: the trained backbone is exported):
#   python main_pipelines/main_export.py --ckpt_path runs/<run>/checkpoints/last.ckpt \
#       --output pretrained_weights/sleepfm_backbone.pth
set -euo pipefail
exec bash "$(dirname "${BASH_SOURCE[0]}")/pretrain_recipe.sh" --model_name sleepfm "$@"

#!/usr/bin/env bash
# Standard DINO baseline (time-series augmentations, no channel masking; same head and schedules as
# OSF), one node with several GPUs.
#
#   DATA_DIR=/data/osf_store NUM_GPUS=8 bash bash_scripts/pretrain_dino.sh [extra main_pretrain flags]
set -euo pipefail
exec bash "$(dirname "${BASH_SOURCE[0]}")/pretrain_recipe.sh" --model_name dino "$@"

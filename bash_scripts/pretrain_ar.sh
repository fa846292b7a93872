#!/usr/bin/env bash
# Autoregressive baseline (issue 7): next-patch prediction, attention causal along time (a token sees
# every channel group at earlier or equal time steps). Downstream, use the exported backbone
# bidirectionally with mean-pooled patch tokens (the CLS is an attention sink in pre-training).
# Other defaults come from the method's typed config (osf.models.ar, see `main_pretrain.py --help`); every flag can be overridden by
# appending it. Same recipe (data, backbone, batch, epochs, precision) as pretrain_osf.sh, so the runs compare.
#
#   DATA_DIR=/data/osf_store NUM_GPUS=8 bash bash_scripts/pretrain_ar.sh [extra main_pretrain flags]
#
# Export afterwards (no teacher: the trained backbone is exported):
#   python main_pipelines/main_export.py --ckpt_path runs/<run>/checkpoints/last.ckpt \
#       --output pretrained_weights/ar_backbone.pth
set -euo pipefail
exec bash "$(dirname "${BASH_SOURCE[0]}")/pretrain_recipe.sh" --model_name ar "$@"

#!/usr/bin/env bash
# Autoregressive baseline (issue 7): next-patch prediction, attention causal along time (a token sees
# every channel group at earlier or equal time steps). Downstream, use the exported backbone
# bidirectionally with mean-pooled patch tokens (the CLS is an attention sink in pre-training).
# Other defaults come from train_config.py (METHOD_DEFAULTS["ar"]); every flag can be overridden by
# appending it. Same data, backbone, batch, epochs and precision as pretrain_osf.sh, so the runs compare.
#
#   DATA_DIR=/data/osf_store NUM_GPUS=8 bash bash_scripts/pretrain_ar.sh [extra main_pretrain flags]
#
# Export afterwards (no teacher: the trained backbone is exported):
#   python main_pipelines/main_export.py --ckpt_path runs/<run>/checkpoints/last.ckpt \
#       --output pretrained_weights/ar_backbone.pth
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DATA_DIR=${DATA_DIR:?set DATA_DIR to an epoch store (main_pipelines/main_preprocess.py output)}
NUM_GPUS=${NUM_GPUS:-$(nvidia-smi -L 2>/dev/null | wc -l)}
OUTPUT_DIR=${OUTPUT_DIR:-runs}
export WANDB_MODE=${WANDB_MODE:-offline}

python main_pipelines/main_pretrain.py \
    --model_name ar \
    --psg_encoder_name vit_base \
    --patch_size_time 64 --patch_size_ch 4 --lead_wise 1 \
    --batch_size 256 \
    --max_epochs 30 \
    --precision bf16-mixed \
    --accelerator gpu \
    --num_devices "${NUM_GPUS}" \
    --num_nodes 1 \
    --num_workers 8 \
    --data_dir "${DATA_DIR}" \
    --output_dir "${OUTPUT_DIR}" \
    --logger wandb,csv \
    "$@"

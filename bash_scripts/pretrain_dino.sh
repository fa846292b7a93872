#!/usr/bin/env bash
# Standard DINO baseline (time-series augmentations, no channel masking; same head and schedules as
# OSF), one node with several GPUs.
#
#   DATA_DIR=/data/osf_store NUM_GPUS=8 bash bash_scripts/pretrain_dino.sh [extra main_pretrain flags]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DATA_DIR=${DATA_DIR:?set DATA_DIR to an epoch store}
NUM_GPUS=${NUM_GPUS:-$(nvidia-smi -L 2>/dev/null | wc -l)}
export WANDB_MODE=${WANDB_MODE:-offline}

python main_pipelines/main_pretrain.py \
    --model_name dino \
    --psg_encoder_name vit_base \
    --batch_size 256 --lr 5e-5 --max_epochs 30 --precision bf16-mixed \
    --accelerator gpu --num_devices "${NUM_GPUS}" --num_nodes 1 --num_workers 8 \
    --data_dir "${DATA_DIR}" --output_dir "${OUTPUT_DIR:-runs}" --logger wandb,csv \
    "$@"

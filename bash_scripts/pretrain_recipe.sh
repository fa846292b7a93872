#!/usr/bin/env bash
# The pre-training recipe every method's launch script shares, so the SleepBench runs compare:
# vit_base (12 channels, 64x4 patches, lead_wise=1), batch 256 per GPU, 30 epochs, bf16, all GPUs of
# one node (Lightning DDP). The method and its own flags come first in the arguments, e.g.
#
#   DATA_DIR=/data/osf_store NUM_GPUS=8 bash bash_scripts/pretrain_recipe.sh --model_name mae [flags]
#
# Later flags override earlier ones (argparse keeps the last), so any setting can be changed by
# appending it. Method defaults not given here come from the method's typed config (`main_pretrain.py --help`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DATA_DIR=${DATA_DIR:?set DATA_DIR to an epoch store (main_pipelines/main_preprocess.py output)}
NUM_GPUS=${NUM_GPUS:-$(nvidia-smi -L 2>/dev/null | wc -l)}
OUTPUT_DIR=${OUTPUT_DIR:-runs}
export WANDB_MODE=${WANDB_MODE:-offline}

python main_pipelines/main_pretrain.py \
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

#!/usr/bin/env bash
# The launcher every method's pre-training script shares, so the SleepBench runs compare: a recipe
# (RECIPE, default osf: osf/recipes/osf.yaml, the published settings: vit_base, batch 256 per GPU,
# 30 epochs) on all GPUs of one node (Lightning DDP) in bf16. The settings come from the recipe and the
# method's typed config (`main_pretrain.py --help`); this script adds only the hardware and the data.
# The method and its own flags come first in the arguments, e.g.
#
#   DATA_DIR=/data/osf_store NUM_GPUS=8 bash bash_scripts/pretrain_recipe.sh --model_name mae [flags]
#   RECIPE=my_recipe.yaml DATA_DIR=... bash bash_scripts/pretrain_recipe.sh --model_name mae   # a recipe file
#
# Later flags override earlier ones (argparse keeps the last), so any setting can be changed by
# appending it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DATA_DIR=${DATA_DIR:?set DATA_DIR to an epoch store (main_pipelines/main_preprocess.py output)}
NUM_GPUS=${NUM_GPUS:-$(nvidia-smi -L 2>/dev/null | wc -l)}
export WANDB_MODE=${WANDB_MODE:-offline}

python main_pipelines/main_pretrain.py \
    --recipe "${RECIPE:-osf}" \
    --precision bf16-mixed \
    --accelerator gpu \
    --num_devices "${NUM_GPUS}" \
    --num_workers 8 \
    --data_dir "${DATA_DIR}" \
    ${OUTPUT_DIR:+--output_dir "${OUTPUT_DIR}"} \
    --logger wandb,csv \
    "$@"

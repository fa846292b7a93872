#!/usr/bin/env bash
# Scaling study: pre-training sample size (--train_data_pct) x backbone size x single-cohort vs
# multi-cohort pre-training -> linear probe per task -> results.csv -> scaling figure
# (downstream metric vs pre-training samples, one line per model size).
#
#   DATA=data/store COHORTS="shhs mesa" bash bash_scripts/scaling_sweep.sh
#
# "single" pre-trains on the first cohort of COHORTS, "multi" on all of them; the method label in
# the table is <METHOD>_<single|multi>.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DATA="${DATA:?set DATA to an epoch store folder}"
COHORTS="${COHORTS:?set COHORTS to the pre-training datasets, first = single-cohort run}"
METHOD="${METHOD:-dino_ours}"
SIZES="${SIZES:-vit_tiny vit_small vit_base}"
PCTS="${PCTS:-0.01 0.1 0.3 1.0}"
# default: the evaluated tasks of the task registry (osf/tasks.py), "|"-separated
TASKS="${TASKS:-$(python -c 'from osf.tasks import studied_tasks; print("|".join(studied_tasks()))')}"
PRETRAIN_STEPS="${PRETRAIN_STEPS:-20000}"
DEVICES="${DEVICES:-1}"
PRECISION="${PRECISION:-bf16-mixed}"
OUT="${OUT:-runs/scaling}"
mkdir -p "$OUT"

read -r -a cohort_list <<< "$COHORTS"
single="${cohort_list[0]}"
multi="$(IFS=,; echo "${cohort_list[*]}")"
IFS='|' read -r -a task_list <<< "$TASKS"

pretrain_samples() {  # training epochs the pre-training run saw: datasets=$1, pct=$2
  python - "$DATA" "$1" "$2" <<'PY'
import sys
from osf.datasets.datamodule import SleepDataModule
dm = SleepDataModule(sys.argv[1], task="pretrain", include_datasets=sys.argv[2].split(","), train_data_pct=float(sys.argv[3]))
dm.setup()
print(dm.summary()["splits"]["train"]["epochs"])
PY
}

for cohort in single multi; do
  datasets="$single"; [ "$cohort" = "multi" ] && datasets="$multi"
  for size in $SIZES; do
    for pct in $PCTS; do
      run="${METHOD}_${size}_${cohort}_pct${pct}"
      python main_pipelines/main_pretrain.py --model_name "$METHOD" --psg_encoder_name "$size" \
          --data_dir "$DATA" --include_datasets "$datasets" --train_data_pct "$pct" \
          --max_steps "$PRETRAIN_STEPS" --num_devices "$DEVICES" --precision "$PRECISION" \
          --output_dir "$OUT/pretrain" --run_name "$run"
      n="$(pretrain_samples "$datasets" "$pct")"
      for task in "${task_list[@]}"; do
        python main_pipelines/main_finetune.py --ckpt_path "$OUT/pretrain/$run/checkpoints/last.ckpt" \
            --model_name "${METHOD}_${cohort}" --data_dir "$DATA" --eval_label "$task" --max_steps 500 \
            --pretrain_samples "$n" --results_csv "$OUT/results.csv" --feature_cache_dir "$OUT/feature_cache" \
            --precision "$PRECISION" --output_dir "$OUT/downstream/$run/${task// /_}"
      done
    done
  done
done

for metric in test_auroc test_kappa; do
  python main_pipelines/make_benchmark_table.py --results_csv "$OUT/results.csv" \
      --output_dir "$OUT/report/$metric" --metric "$metric" --setting linear_probe
done

#!/usr/bin/env bash
# SleepBench sweep: methods x tasks x settings x channel presets -> one results.csv -> table + figures.
#
#   CKPTS="dino=runs/dino/checkpoints/last.ckpt mae=runs/mae/checkpoints/last.ckpt random=none" \
#   DATA=data/store ENCODER=vit_base bash bash_scripts/benchmark_sweep.sh
#
# Linear probes share the feature cache: each backbone runs once per split and channel preset, and
# every task / k-shot draw / seed after that trains on cached features. A failed run is logged to
# $OUT/failures.log and the sweep goes on; rows already written to results.csv are never lost.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CKPTS="${CKPTS:?set CKPTS to 'name=path ...' (path may be none for random init)}"
DATA="${DATA:?set DATA to an epoch store folder}"
ENCODER="${ENCODER:-vit_base}"        # used for 'none' checkpoints only
OUT="${OUT:-runs/benchmark}"
# default: the evaluated tasks of the task registry (osf/tasks.py), "|"-separated
TASKS="${TASKS:-$(python -c 'from osf.tasks import studied_tasks; print("|".join(studied_tasks()))')}"
SETTINGS="${SETTINGS:-linear_probe finetune linear_probe_10shot}"
PRESETS="${PRESETS:-full no_eeg eeg_eog_only cardio_respiratory ecg_only respiratory_only}"
DEVICES="${DEVICES:-1}"
PRECISION="${PRECISION:-32-true}"
mkdir -p "$OUT"

IFS='|' read -r -a task_list <<< "$TASKS"
for entry in $CKPTS; do
  method="${entry%%=*}"; ckpt="${entry#*=}"
  for task in "${task_list[@]}"; do
    for setting in $SETTINGS; do
      for preset in $PRESETS; do
        args=(--ckpt_path "$ckpt" --model_name "$method" --data_dir "$DATA" --eval_label "$task"
              --eval_channels "$preset" --results_csv "$OUT/results.csv" --feature_cache_dir "$OUT/feature_cache"
              --precision "$PRECISION" --output_dir "$OUT/runs/${method}/${task// /_}/${setting}/${preset}")
        [ "$ckpt" = "none" ] && args+=(--psg_encoder_name "$ENCODER")
        case "$setting" in
          linear_probe) args+=(--max_steps 500) ;;
          linear_probe_*shot) k="${setting#linear_probe_}"; args+=(--max_steps 500 --n_train_samples "${k%shot}" --n_seeds 3) ;;
          finetune) args+=(--finetune_backbone --max_steps 2000 --layer_decay 0.75 --warmup_steps 100
                           --early_stopping --num_devices "$DEVICES" --batch_size 64) ;;
          *) echo "unknown setting $setting" >&2; exit 2 ;;
        esac
        echo "[sweep] $method | $task | $setting | $preset"
        if ! python main_pipelines/main_finetune.py "${args[@]}"; then
          echo "$(date -u +%FT%TZ) $method|$task|$setting|$preset failed" >> "$OUT/failures.log"
        fi
      done
    done
  done
done

for metric in test_auroc test_kappa test_macro_f1 test_auprc; do
  python main_pipelines/make_benchmark_table.py --results_csv "$OUT/results.csv" \
      --output_dir "$OUT/report/$metric" --metric "$metric" || true
done
[ -s "$OUT/failures.log" ] && { echo "[sweep] some runs failed, see $OUT/failures.log"; exit 1; }
exit 0

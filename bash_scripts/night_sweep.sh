#!/usr/bin/env bash
# Night-level targets and sequence-context staging for one frozen backbone (issue 14): every night
# model on each target, and the per-epoch probe vs sequence heads for each context size. All runs
# share one feature cache (the linear probe's) and append to one results.csv.
#
#   CKPT=pretrained_weights/osf_backbone.pth DATA=data/store TABLES=data/nsrr bash bash_scripts/night_sweep.sh
#
# TABLES is the raw data folder with <cohort>/datasets/*.csv (the --input_dir of main_preprocess.py).
# TARGETS: "variable" (regression or classification) or "variable>=threshold" (binary), space-separated.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CKPT="${CKPT:?set CKPT to a checkpoint path or none}"
DATA="${DATA:?set DATA to an epoch store folder}"
TABLES="${TABLES:?set TABLES to the raw data folder holding <cohort>/datasets/*.csv}"
METHOD="${METHOD:-$([ "$CKPT" = "none" ] && echo random_init || basename "${CKPT%.*}")}"
ENCODER="${ENCODER:-}"                  # required with CKPT=none, e.g. vit_base
OUT="${OUT:-runs/night}"
TARGETS="${TARGETS:-nsrr_ahi_hp3r_aasm15>=15 nsrr_age nsrr_sex}"
NIGHT_MODELS="${NIGHT_MODELS:-mean_std,stage_profile,attention,transformer}"
CONTEXTS="${CONTEXTS:-5 10 20}"         # +-K epochs of the sequence heads
SEQ_MODELS="${SEQ_MODELS:-transformer bigru}"
LABELS="${LABELS:-Stage}"               # epoch tasks for the sequence heads, e.g. "Stage Arousal"
SEED="${SEED:-0}"
EXTRA="${EXTRA:-}"                      # more main_finetune.py flags for every run, e.g. "--max_steps 100 --n_boot 200"

common=(--ckpt_path "$CKPT" --model_name "$METHOD" --data_dir "$DATA" --seed "$SEED"
        --results_csv "$OUT/results.csv" --feature_cache_dir "$OUT/feature_cache")
[ -n "$ENCODER" ] && common+=(--psg_encoder_name "$ENCODER")
read -r -a extra <<< "$EXTRA"
common+=("${extra[@]}")

for target in $TARGETS; do
  variable="${target%%>=*}"
  thr=()
  [ "$variable" != "$target" ] && thr=(--target_threshold "${target#*>=}")
  python main_pipelines/main_finetune.py "${common[@]}" --eval_level night --subject_tables "$TABLES" \
      --target_variable "$variable" "${thr[@]}" --night_models "$NIGHT_MODELS" \
      --output_dir "$OUT/night/${target//>=/_ge}"
done
for label in $LABELS; do
  for k in $CONTEXTS; do
    for m in $SEQ_MODELS; do
      python main_pipelines/main_finetune.py "${common[@]}" --eval_label "$label" --context_epochs "$k" \
          --sequence_model "$m" --output_dir "$OUT/sequence/${label// /_}_${m}_k$k"
    done
  done
done
echo "results: $OUT/results.csv"

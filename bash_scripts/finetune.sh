#!/usr/bin/env bash
# Evaluate one pre-trained backbone on one task in the three settings: linear probe (cached
# features), full fine-tuning, and k-shot probes; then build the table and figures.
#
#   CKPT=runs/dino_ours_vit_base/checkpoints/last.ckpt DATA=data/store bash bash_scripts/finetune.sh
#
# CKPT may be a Lightning .ckpt, an exported .pth/.safetensors, or "none" (random init; set ENCODER).
# Every run appends to $OUT/results.csv; each run's JSON and classifier.pt go to its own folder.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CKPT="${CKPT:?set CKPT to a checkpoint path or none}"
DATA="${DATA:?set DATA to an epoch store folder}"
if [ "$CKPT" = "none" ]; then
  METHOD="${METHOD:-random_init}"
else
  METHOD="${METHOD:-$(basename "$(dirname "$(dirname "$CKPT")")")}"  # runs/<run>/checkpoints/last.ckpt -> <run>
fi
ENCODER="${ENCODER:-}"                # required with CKPT=none, e.g. vit_base
LABEL="${LABEL:-Stage}"               # Stage | Arousal | Hypopnea | "Oxygen Desaturation" | Apnea
OUT="${OUT:-runs/downstream}"
DEVICES="${DEVICES:-1}"
PRECISION="${PRECISION:-32-true}"
KSHOTS="${KSHOTS:-1 5 10 50}"
STEPS_PROBE="${STEPS_PROBE:-500}"
STEPS_FT="${STEPS_FT:-2000}"

common=(--ckpt_path "$CKPT" --model_name "$METHOD" --data_dir "$DATA" --eval_label "$LABEL"
        --results_csv "$OUT/results.csv" --feature_cache_dir "$OUT/feature_cache" --precision "$PRECISION")
[ -n "$ENCODER" ] && common+=(--psg_encoder_name "$ENCODER")
tag="${METHOD}_${LABEL// /_}"

python main_pipelines/main_finetune.py "${common[@]}" --max_steps "$STEPS_PROBE" \
    --output_dir "$OUT/$tag/linear_probe"
for k in $KSHOTS; do
  python main_pipelines/main_finetune.py "${common[@]}" --max_steps "$STEPS_PROBE" \
      --n_train_samples "$k" --n_seeds 3 --output_dir "$OUT/$tag/linear_probe_${k}shot"
done
python main_pipelines/main_finetune.py "${common[@]}" --finetune_backbone --max_steps "$STEPS_FT" \
    --lr 1e-3 --backbone_lr_scale 0.1 --layer_decay 0.75 --warmup_steps 100 --early_stopping \
    --num_devices "$DEVICES" --batch_size 64 --output_dir "$OUT/$tag/finetune"

python main_pipelines/make_benchmark_table.py --results_csv "$OUT/results.csv" --output_dir "$OUT/report"

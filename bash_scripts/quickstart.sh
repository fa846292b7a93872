#!/usr/bin/env bash
# Quick start: set up .venv (first run only), then run the whole pipeline on a synthetic cohort:
# cohorts -> epoch store -> OSF pre-training -> export -> linear probes -> fine-tuning -> a staged night.
# Idempotent: a rerun skips finished steps. Extra arguments go to main_quickstart.py, e.g.
#   bash bash_scripts/quickstart.sh --tiny
#   bash bash_scripts/quickstart.sh --gpus 1 --backbone vit_small --nights 60 --hours 8 --max_steps 5000
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh" test
export MPLBACKEND=Agg WANDB_MODE=offline
python main_pipelines/main_quickstart.py "$@"

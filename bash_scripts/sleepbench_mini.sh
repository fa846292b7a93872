#!/usr/bin/env bash
# SleepBench-mini: the OSF paper's comparison on the synthetic cohort (seven objectives x five channel
# presets x four tasks, random init, ceilings, k-shot, scaling) -> OUT/results.csv + OUT/report/.
#   bash bash_scripts/sleepbench_mini.sh OUT              # one seed (~1.5 h on 2 CPU cores, see README)
#   bash bash_scripts/sleepbench_mini.sh OUT --seeds 3    # three seeds; a rerun resumes
#   bash bash_scripts/sleepbench_mini.sh OUT --tiny       # the machinery, a minute or two
set -euo pipefail
OUT="${1:?usage: bash bash_scripts/sleepbench_mini.sh OUT [flags of main_sleepbench.py]}"
shift
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh" test
export MPLBACKEND=Agg WANDB_MODE=offline
python main_pipelines/main_sleepbench.py --output_dir "$OUT" "$@"

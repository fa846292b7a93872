#!/usr/bin/env bash
# Quick start: set up the environment and run the pipeline on the embedded synthetic cohort.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh" test
python -c "import osf, config; print(f'OSF {osf.__version__}: {config.NUM_CHANNELS} channels x {config.EPOCH_SAMPLES} samples per epoch')"
ls main_pipelines/*.py 2>/dev/null || echo "no entry points yet"

#!/usr/bin/env bash
# Set up the environment (first run only) and run the default test suite (slow checks excluded).
# Extra arguments go to pytest, e.g. `bash bash_scripts/run_tests.sh -m slow`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh" test
export MPLBACKEND=Agg WANDB_MODE=offline
python -m pytest "$@"

#!/usr/bin/env bash
# GPU readiness in one run (about 5 minutes on one GPU): bf16 vs fp32 embeddings of vit_base, SDPA kernels
# vs the math path, the OSF training step's throughput and MFU at the recipe batch (eager and
# torch.compile), and whether the DataLoader with workers keeps up. Writes
# benchmarks/results/gpu_check_cuda.json and prints one line per check.
# Without CUDA it runs the smoke setting (toy sizes, seconds): the machinery only, no GPU numbers.
# Arguments go to benchmarks/gpu_check.py, e.g. `bash bash_scripts/gpu_check.sh --no-compile --workers 16`.
# OSF_SKIP_SETUP=1 uses the python already on PATH (e.g. a cluster's torch module) instead of .venv.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${OSF_SKIP_SETUP:-}" ]; then
  # shellcheck disable=SC1091
  source "$ROOT/bash_scripts/setup_env.sh" test
fi
cd "$ROOT"
export MPLBACKEND=Agg WANDB_MODE=offline
python benchmarks/gpu_check.py "$@"

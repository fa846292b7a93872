#!/usr/bin/env bash
# GPU readiness in one run (about 5 minutes on one GPU): bf16 vs fp32 embeddings of vit_base, SDPA kernels
# (true fp32 reference, TF32 off) vs the math path, the OSF training step's throughput and MFU at the
# recipe batch (eager and torch.compile; peak of the exact board: H100 SXM/PCIe/NVL, H200), and whether
# one loader per GPU over your store keeps up. Writes benchmarks/results/gpu_check_cuda.json, prints one
# line per check, and exits 1 when a check errs or misses its target (each listed as FAIL), 0 otherwise.
# Without CUDA it refuses (exit 2) unless --smoke (toy sizes, machinery only) or --full is given.
# Arguments go to benchmarks/gpu_check.py, e.g.
#   bash bash_scripts/gpu_check.sh --data_dir /data/osf_store --workers 8 --no-compile
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

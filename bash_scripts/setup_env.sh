#!/usr/bin/env bash
# Create (or reuse) the project virtual environment in .venv and install OSF into it.
# Usage: source bash_scripts/setup_env.sh [extras]      e.g. extras=test
# OSF_TORCH overrides the torch requirement installed first (default: the CPU build pinned for CI).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EXTRAS="${1:-test}"
VENV="${OSF_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[osf] creating virtual environment in $VENV"
  "$PY" -m venv "$VENV"
fi
# shellcheck disable=SC1091
source "$VENV/bin/activate"
STAMP="$VENV/.osf-installed-$EXTRAS"
if [ ! -f "$STAMP" ] || [ "$ROOT/pyproject.toml" -nt "$STAMP" ]; then
  echo "[osf] installing dependencies into $VENV (extras: $EXTRAS)"
  python -m pip install -q --upgrade pip
  python -m pip install -q "${OSF_TORCH:-torch==2.13.0}"
  python -m pip install -q -e "$ROOT[$EXTRAS]"
  touch "$STAMP"
fi
cd "$ROOT"

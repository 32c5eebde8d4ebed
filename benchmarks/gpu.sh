#!/usr/bin/env bash
# The GPU benchmark in one prepared step (< 8 minutes on one H100/H200):
#   bash benchmarks/gpu.sh            # on a GPU machine; writes benchmarks/results/<date>-<gpu>-gpu.md
#   bash benchmarks/gpu.sh --dry-run  # anywhere (the CPU): micro sizes, proves every code path
# Uses ./.venv when present (make install), else the python on PATH. Extra arguments go to
# `python -m benchmarks.gpu` (--out DIR, --no-write).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=python3
[[ -x .venv/bin/python ]] && PY=.venv/bin/python
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" WANDB_MODE=disabled
if [[ " $* " != *" --dry-run "* ]]; then
  "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "no CUDA device visible; use --dry-run on a CPU")'
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
exec timeout 480 "$PY" -m benchmarks.gpu "$@"

#!/usr/bin/env bash
# The GPU benchmark in one step (about 4 min projected on one H100; stopped by 9.5 min at the latest):
#   bash benchmarks/gpu.sh --prepare benchmarks/.deps   # on a machine with the network, once: fills the
#                                                       # folder with the pure-Python dependencies
#   bash benchmarks/gpu.sh --out "$OUT"                  # on the GPU machine (see benchmarks/README.md)
#   bash benchmarks/gpu.sh --dry-run                     # anywhere (the CPU): micro sizes, every code path
# benchmarks/.deps goes on PYTHONPATH when present (--deps DIR for another folder). Uses $PYTHON when
# set, else ./.venv when present, else the python3 on PATH. Other arguments go to
# `python -m benchmarks.gpu` (--only, --budget).
# With --out, everything the command prints is also kept in DIR/console.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
[[ -z "${PYTHON:-}" && -x .venv/bin/python ]] && PY=.venv/bin/python
if [[ "${1:-}" == "--prepare" ]]; then
  [[ $# -eq 2 ]] || { echo "usage: benchmarks/gpu.sh --prepare DIR" >&2; exit 2; }
  exec env PYTHONPATH="$PWD" "$PY" -m benchmarks.prepare "$2"
fi
DEPS=benchmarks/.deps OUT_DIR="" ARGS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --deps) DEPS="$2"; shift 2 ;;
    --out) OUT_DIR="$2"; ARGS+=("$1" "$2"); shift 2 ;;
    *) ARGS+=("$1"); shift ;;
  esac
done
EXTRA=""
[[ -d "$DEPS" ]] && EXTRA="$(cd "$DEPS" && pwd)"
export PYTHONPATH="$PWD${EXTRA:+:$EXTRA}${PYTHONPATH:+:$PYTHONPATH}" WANDB_MODE=disabled
if [[ -n "$OUT_DIR" ]]; then
  mkdir -p "$OUT_DIR"
  exec > >(tee -a "$OUT_DIR/console.txt") 2>&1
fi
echo "python: $PY ($("$PY" -c 'import sys; print(sys.version.split()[0])')); PYTHONPATH=$PYTHONPATH"
if [[ " ${ARGS[*]:-} " != *" --dry-run "* ]]; then
  "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "no CUDA device visible; use --dry-run on a CPU")'
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
# SIGTERM at 555 s: the benchmark records the section it stops in and writes the table; SIGKILL 15 s later
timeout -k 15 555 "$PY" -m benchmarks.gpu "${ARGS[@]}"

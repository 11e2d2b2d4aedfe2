#!/usr/bin/env bash
# Create .venv and install circuitcut into it, with a CPU build of torch where no GPU is present
# (a plain `torch` requirement would otherwise pull several GB of CUDA packages).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python
"$VPY" -m pip install --quiet --upgrade pip
if ! "$VPY" -c "import torch" >/dev/null 2>&1; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    "$VPY" -m pip install --quiet torch
  else
    # on this workplace's machines the pinned version resolves to the local CPU wheel
    "$VPY" -m pip install --quiet "torch==${CIRCUITCUT_TORCH_VERSION:-2.13.0}"
  fi
fi
"$VPY" -m pip install --quiet -e ".[dev]"

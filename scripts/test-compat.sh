#!/usr/bin/env bash
# The fast suite against the oldest supported transformers line (4.5x), in its own environment.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv-transformers4
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -c "import torch" >/dev/null 2>&1 || "$VENV/bin/python" -m pip install --quiet "torch==${CIRCUITCUT_TORCH_VERSION:-2.13.0}"
"$VENV/bin/python" -m pip install --quiet "transformers==${CIRCUITCUT_COMPAT_TRANSFORMERS:-4.57.6}"
"$VENV/bin/python" -m pip install --quiet -e ".[dev]"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
"$VENV/bin/python" -c "import transformers; print('transformers', transformers.__version__)"
"$VENV/bin/python" -m pytest -q -m "not slow" -p no:cacheprovider

#!/usr/bin/env bash
# Fetch the real test models (SmolLM2-135M-Instruct by default; --model gemma3 or all) into the cache as
# safetensors folders; prints their paths.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >&2
exec .venv/bin/python scripts/real_models.py "$@"

#!/usr/bin/env bash
# Fetch SmolLM2-135M-Instruct (the real test model) into the cache as a safetensors folder; prints its path.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >&2
exec .venv/bin/python scripts/real_models.py "$@"

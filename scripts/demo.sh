#!/usr/bin/env bash
# Set up (if needed) and run the demo on the embedded reference model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
exec .venv/bin/circuitcut demo --output "${1:-demo-output}"

#!/usr/bin/env bash
# Set up (if needed) and run the test suite, then the slow tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
.venv/bin/python -m ruff check src tests benchmarks && .venv/bin/python -m ruff format --check src tests benchmarks
.venv/bin/python -m pytest -q -m "not slow" "$@"
.venv/bin/python -m pytest -q -m slow "$@" || { rc=$?; [ $rc -eq 5 ] || exit $rc; }

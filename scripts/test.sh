#!/usr/bin/env bash
# Set up (if needed) and run the test suite, then the slow tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# the HTML report test drives a headless Chromium (Debian's package); it skips with a reason without one
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } || echo "chromium not installed: the browser test will skip"
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
.venv/bin/python -m ruff check src tests benchmarks && .venv/bin/python -m ruff format --check src tests benchmarks
.venv/bin/python -m pytest -q -m "not slow" "$@"
.venv/bin/python -m pytest -q -m slow "$@" || { rc=$?; [ $rc -eq 5 ] || exit $rc; }

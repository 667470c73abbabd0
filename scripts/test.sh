#!/usr/bin/env bash
# Set up from nothing (.venv) and run every check: lint, format, the whole test suite, a benchmark smoke run.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. .venv/bin/activate
ruff check .
ruff format --check .
python -m pytest "$@"
if [ -f bench/run.py ]; then
  python bench/run.py --smoke
fi

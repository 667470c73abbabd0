#!/usr/bin/env bash
# Set up from nothing (.venv) and run every check: lint, format, a benchmark smoke run, the whole test suite,
# then the sync tests again on the packages Fivetran's own install of requirements.txt gives (production_set.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. .venv/bin/activate
ruff check .
ruff format --check .
python bench/run.py --smoke  # figures only, no thresholds; bench/run.py --docs 100000 checks the targets
python -m pytest "$@"
scripts/production_set.sh

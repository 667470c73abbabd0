#!/usr/bin/env bash
# Set up from nothing (.venv) and run every check: lint, format, a benchmark smoke run, the sync tests on the
# packages Fivetran's own install of requirements.txt gives (production_set.sh), then the whole test suite, whose
# summary closes the output.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. .venv/bin/activate
ruff check .
ruff format --check .
python bench/run.py --smoke  # figures only, no thresholds; bench/run.py --docs 100000 checks the targets
scripts/production_set.sh
# 4 pytest-xdist workers, each test file on one of them: more workers than CI's 2 cores, because much of the
# suite's time is spent waiting (on timeouts, throttled streams and subprocesses), not computing.
python -m pytest -n 4 --dist loadfile "$@"

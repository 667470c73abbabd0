#!/usr/bin/env bash
# Create .venv and install everything the connector, its tests, the demo and the benchmark need.
# Two resolves on purpose: fivetran-connector-sdk 3.0.0 pins requests==2.34.2 and ravendb 7.2.7
# declares requests~=2.32.0, so ravendb goes in with --no-deps (its other dependencies are listed in
# requirements-dev.txt). docs/dependencies.md explains the choice.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -r requirements.txt
# The only conflict pip may report is the known requests pin of ravendb; anything else fails setup.
if ! conflicts=$(.venv/bin/python -m pip check 2>&1); then
  if echo "$conflicts" | grep -v 'requests~=2.32.0' | grep -q .; then
    echo "$conflicts" >&2
    exit 1
  fi
fi

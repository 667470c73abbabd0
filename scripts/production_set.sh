#!/usr/bin/env bash
# Install the packages the way Fivetran's runtime does, into .production/, and run the sync tests there.
#
# Fivetran provides the SDK (which pins requests==2.34.2) and runs `pip install -r requirements.txt` beside it.
# ravendb 7.2.7 declares requests~=2.32.0, so that plain install replaces requests 2.34.2 by 2.32.x, prints
# pip's conflict line and exits 0. scripts/setup.sh instead keeps the SDK's requests (ravendb with --no-deps),
# so without this script the tests would only ever run on the other requests. docs/dependencies.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
environment=.production
pip=("$environment/bin/python" -m pip --disable-pip-version-check)

rm -rf "$environment"
"$PYTHON" -m venv "$environment"
"${pip[@]}" install --quiet "$(grep '^fivetran-connector-sdk==' requirements-dev.txt)"
version() { "$environment/bin/python" -c "import importlib.metadata as m; print(m.version('$1'))"; }
before="$(version requests)"
"${pip[@]}" install --quiet -r requirements.txt  # pip reports the SDK's requests pin as a conflict; exit status 0
after="$(version requests)"
echo "production set: requests $before replaced by $after; ravendb $(version ravendb)," \
  "cryptography $(version cryptography), fivetran-connector-sdk $(version fivetran-connector-sdk)"
case "$after" in
  2.32.*) ;;
  *) echo "expected ravendb's requests 2.32.x, got $after: README 'Dependencies' no longer holds" >&2; exit 1 ;;
esac
"${pip[@]}" install --quiet $(grep -E '^(pytest|python-dateutil)' requirements-dev.txt | sed 's/ *#.*//')
"$environment/bin/python" -m pytest -q -p no:cacheprovider \
  tests/test_sync_unit.py tests/test_sync_integration.py tests/test_certificates_integration.py

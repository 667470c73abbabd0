#!/usr/bin/env bash
# The demo: start the RavenDB-compatible test server over HTTPS with the sample database, sync it with
# `fivetran debug` (order lines as the child table orders_lines), and show what landed.
#
# Everything it writes stays in its own folder, .demo/ (DEMO_DIR=… for another): the test server's certificates
# and log, the configuration, and the demo's own Fivetran project, .demo/project/, whose files/warehouse.db and
# files/state.json are the demo's warehouse and saved state. It never reads or writes files/ or configuration.json
# of this folder, where your own syncs keep theirs. Port: DEMO_PORT (default 18443, another free one if that is taken).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. .venv/bin/activate
export DO_NOT_TRACK=1

demo="${DEMO_DIR:-.demo}"
mkdir -p "$demo"
demo="$(cd "$demo" && pwd)"
project="$demo/project"

if ! port="$(python scripts/demo_port.py "${DEMO_PORT:-}")"; then
  exit 1
fi

python -m tests.standin --port "$port" --tls-dir "$demo/tls" --sample-data >"$demo/server.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  grep -q READY "$demo/server.log" && break
  kill -0 "$server" 2>/dev/null || { echo "test server did not start: $(tail -n 1 "$demo/server.log")" >&2; exit 1; }
  sleep 0.1
done
grep -q READY "$demo/server.log" || { echo "test server did not start within 10 s (log: $demo/server.log)" >&2; exit 1; }

# The demo's own Fivetran project: the connector and its requirements, and a fresh warehouse and state each run.
rm -rf "$project"
mkdir -p "$project"
cp connector.py requirements.txt "$project/"
python scripts/demo_configuration.py "https://127.0.0.1:$port" "$demo/tls" >"$demo/configuration.json"
chmod 600 "$demo/configuration.json"
# `fivetran debug` first runs the SDK's requirements check, pipreqs, which asks PyPI about each import; without
# network the SDK retries it for about 13 s. The demo runs it in its local mode, which answers at once either way.
mkdir -p "$demo/bin"
printf '#!/bin/sh\nexec "%s" --use-local "$@"\n' "$PWD/.venv/bin/pipreqs" >"$demo/bin/pipreqs"
chmod 755 "$demo/bin/pipreqs"
(cd "$project" && PATH="$demo/bin:$PATH" fivetran debug --configuration "$demo/configuration.json" </dev/null)
echo
echo "The demo's warehouse: $project/files/warehouse.db (DuckDB, schema tester); your own files/ is untouched."
echo
python scripts/show_warehouse.py --rows 3 "$project/files/warehouse.db"

#!/usr/bin/env bash
# Set up from nothing, start the RavenDB-compatible test server over HTTPS with the sample database, sync it
# with `fivetran debug` into files/warehouse.db (order lines as the child table orders_lines), and show the tables
# and row counts that landed.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. .venv/bin/activate
export DO_NOT_TRACK=1

demo=.demo
port="${DEMO_PORT:-18443}"
mkdir -p "$demo"
python -m tests.standin --port "$port" --tls-dir "$demo/tls" --sample-data >"$demo/server.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  grep -q READY "$demo/server.log" && break
  kill -0 "$server" 2>/dev/null || { cat "$demo/server.log" >&2; exit 1; }
  sleep 0.1
done
grep -q READY "$demo/server.log" || { echo "test server did not start" >&2; cat "$demo/server.log" >&2; exit 1; }

python scripts/demo_configuration.py "https://127.0.0.1:$port" "$demo/tls" >"$demo/configuration.json"
chmod 600 "$demo/configuration.json"
fivetran reset --yes >/dev/null 2>&1 || true
fivetran debug --configuration "$demo/configuration.json" </dev/null
echo
python scripts/show_warehouse.py files/warehouse.db

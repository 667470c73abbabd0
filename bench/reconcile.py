"""Time of one reconciliation of deletes (reconcile_deletes_hours), source side.

Starts the test server in this process (one node, plain http), generates N orders server-side, and runs
connector.reconcile_deletes on them twice with op.* replaced by a counter (nothing is sent to a destination). The
first run also builds the auto index of the collection's changes query, which a real sync has built already.

  python bench/reconcile.py            # 100,000 orders
  python bench/reconcile.py 250000
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import connector
from tests.standin import sample_data
from tests.standin.server import StandIn


def main(count: int) -> None:
    calls = [0]

    def counted(*_args: object, **_kwargs: object) -> None:
        calls[0] += 1

    connector.op = SimpleNamespace(upsert=counted, update=counted, delete=counted, truncate=counted, checkpoint=counted)
    connector.log = SimpleNamespace(info=counted, warning=counted, fine=counted, severe=counted)
    server = StandIn(nodes_count=1)
    server.start()
    try:
        server.storage.create("bench")
        sample_data.generate_orders(server.storage.get("bench"), count, "Orders", 1)
        configuration = {"ravendb_urls": server.urls[0], "database_name": "bench", "collection_name": "Orders"}
        settings = connector.validate_configuration(configuration)
        state = connector.SyncState.load({"version": 2, "cursors": {"Orders": "9999-01-01T00:00:00.0000000Z"}})
        with connector.open_store(settings) as store:
            for run in (1, 2):
                calls[0] = 0
                started = time.monotonic()
                connector.reconcile_deletes(store, settings, ["Orders"], state)
                print(f"run {run}: {count:,} documents reconciled in {time.monotonic() - started:.2f} s")
    finally:
        server.stop()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)

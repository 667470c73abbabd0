"""Speed check: python -m tests.standin.speed [N]: server-only emit time vs the ravendb client's stream time."""

from __future__ import annotations

import json
import socket
import sys
import time

from ravendb import DocumentStore

from tests.standin import sample_data
from tests.standin.server import StandIn

QUERIES = {
    "collection": "from Orders",
    "by-last-modified": "from Orders order by @metadata.'@last-modified'",
}


def raw_stream_seconds(port: int, database: str, rql: str) -> tuple[float, int]:
    """POST the stream query over a raw socket, read every byte; (seconds, bytes)."""
    body = json.dumps({"Query": rql}).encode()
    head = (
        f"POST /databases/{database}/streams/queries?format=jsonl HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    started = time.perf_counter()
    total = 0
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(head + body)
        while chunk := sock.recv(1 << 20):
            total += len(chunk)
    return time.perf_counter() - started, total


def client_stream_seconds(url: str, database: str, rql: str) -> tuple[float, int]:
    """Stream with the real client, touching every result; (seconds, documents)."""
    store = DocumentStore([url], database)
    store.initialize()
    try:
        started = time.perf_counter()
        count = 0
        with store.open_session() as session:
            for _ in session.advanced.stream(session.advanced.raw_query(rql, dict)):
                count += 1
        return time.perf_counter() - started, count
    finally:
        store.close()


def main(count: int) -> None:
    """Load `count` orders server-side, then time both readers for each query."""
    server = StandIn(nodes_count=1)
    started = time.perf_counter()
    sample_data.generate_orders(server.storage.create("speed"), count)
    print(f"generated {count} orders server-side in {time.perf_counter() - started:.1f}s")
    server.start()
    port = server.nodes[0].listener.port
    try:
        for name, rql in QUERIES.items():
            raw_s, size = raw_stream_seconds(port, "speed", rql)
            raw_s, size = raw_stream_seconds(port, "speed", rql)
            client_s, docs = client_stream_seconds(server.urls[0], "speed", rql)
            print(
                f"{name}: server emits {size / 1e6:.0f} MB in {raw_s:.2f}s ({count / raw_s:,.0f} docs/s); "
                f"client streams {docs} docs in {client_s:.2f}s ({docs / client_s:,.0f} docs/s)"
            )
    finally:
        server.stop()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)

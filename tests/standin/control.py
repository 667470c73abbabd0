"""A small client for the stand-in's /standin control endpoints (same TLS and client certificate as RavenDB)."""

from __future__ import annotations

import socket
import time
from typing import Any
from urllib.parse import urlsplit

import requests


def _accepts(host: str, port: int) -> bool:
    """Whether a TCP connection to host:port succeeds."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


class StandInControl:
    """Calls /standin/... on one node URL; falls back to the other URLs when that node is stopped.

    cert/verify go on every request: a session-level `verify` loses to REQUESTS_CA_BUNDLE in requests.
    """

    def __init__(self, urls: list[str], client_pem: str | None = None, ca_pem: str | None = None) -> None:
        self.urls = list(urls)
        self.session = requests.Session()
        self.cert = client_pem
        self.verify: str | bool = ca_pem if ca_pem else True

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        last: requests.ConnectionError | None = None
        for url in self.urls:
            try:
                response = self.session.request(
                    method, url + path, json=body, timeout=600, cert=self.cert, verify=self.verify
                )
            except requests.ConnectionError as e:
                last = e
                continue
            response.raise_for_status()
            return response.json()
        raise last or requests.ConnectionError("no stand-in node reachable")

    def freeze_clock(self, frozen: bool = True) -> dict[str, Any]:
        """Freeze (every write gets one @last-modified) or release the server clock."""
        return self._call("POST", "/standin/clock", {"frozen": frozen})

    def set_indexing(self, database: str, paused: bool | None = None, lag_ms: int | None = None) -> dict[str, Any]:
        """Pause/resume auto indexes, or make them trail writes by lag_ms."""
        body: dict[str, Any] = {}
        if paused is not None:
            body["paused"] = paused
        if lag_ms is not None:
            body["lag_ms"] = lag_ms
        return self._call("POST", f"/standin/databases/{database}/indexing", body)

    def pause_indexing(self, database: str) -> dict[str, Any]:
        """Indexes stop advancing (queries through them turn stale)."""
        return self.set_indexing(database, paused=True)

    def resume_indexing(self, database: str) -> dict[str, Any]:
        """Indexes catch up and follow writes again (lag 0)."""
        return self.set_indexing(database, paused=False, lag_ms=0)

    def nodes(self) -> list[dict[str, Any]]:
        """[{Tag, Url, Running}] of every node."""
        return self._call("GET", "/standin/nodes")["Nodes"]

    def stop_node(self, tag: str) -> list[dict[str, Any]]:
        """Close a node's port and wait until it refuses connections (until start_node)."""
        url = next(n["Url"] for n in self.nodes() if n["Tag"] == tag.upper())
        nodes = self._call("POST", f"/standin/nodes/{tag}/stop")["Nodes"]
        parts = urlsplit(url)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _accepts(parts.hostname or "127.0.0.1", parts.port or 80):
            time.sleep(0.01)
        return nodes

    def start_node(self, tag: str) -> list[dict[str, Any]]:
        """Re-open a stopped node's port."""
        return self._call("POST", f"/standin/nodes/{tag}/start")["Nodes"]

    def generate_orders(self, database: str, count: int, collection: str = "Orders", start: int = 1) -> int:
        """Create `count` order documents server-side (ids <collection lower>/<n>-A from `start`)."""
        body = {"count": count, "collection": collection, "start": start}
        return self._call("POST", f"/standin/databases/{database}/generate", body)["Generated"]

    def reset_database(self, database: str) -> None:
        """Drop and re-create a database, empty."""
        self._call("POST", f"/standin/databases/{database}/reset")

    def delete_database(self, database: str) -> bool:
        """Drop a database (True if it existed)."""
        return self._call("DELETE", f"/standin/databases/{database}")["Deleted"]

    def requests(self, method: str, path: str) -> dict[str, int]:
        """How many `method path` requests (query string aside) each node has served since the stand-in started."""
        counts = self._call("GET", "/standin/requests")["Requests"]
        return {
            key.split(" ", 1)[0]: count for key, count in counts.items() if key.split(" ", 1)[1] == f"{method} {path}"
        }

    def revisions_bin_pages(self, database: str) -> dict[str, int]:
        """Shapes of the revisions-bin pages served for a database: full, short, empty, not modified."""
        return self._call("GET", f"/standin/databases/{database}/revisions/bin")["Pages"]

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

    def set_indexing(
        self,
        database: str,
        paused: bool | None = None,
        lag_ms: int | None = None,
        *,
        build_s: float | None = None,
        new_index_wait_s: float | None = None,
        dynamic_queries_disabled: bool | None = None,
        include_archived: bool | None = None,
        superseded_delete_s: float | None = None,
    ) -> dict[str, Any]:
        """Indexing knobs of a database (every node): pause, lag behind writes by lag_ms, make a new auto index
        take build_s to cover the existing writes, the wait of the query that creates an index (RavenDB: 15 s,
        streams 60 s), Indexing.DisableQueryOptimizerGeneratedIndexes, and whether auto indexes include archived
        documents (RavenDB's default: no), and how long a superseded auto index is kept once its successor has
        caught up (Indexing.TimeBeforeDeletionOfSupersededAutoIndexInSec, 15 s). Answers the knobs,
        `AutoIndexesCreated` and the node's `Indexes` (each with `SupersededBy`)."""
        body: dict[str, Any] = {}
        for name, value in [
            ("paused", paused),
            ("lag_ms", lag_ms),
            ("build_s", build_s),
            ("new_index_wait_s", new_index_wait_s),
            ("dynamic_queries_disabled", dynamic_queries_disabled),
            ("include_archived", include_archived),
            ("superseded_delete_s", superseded_delete_s),
        ]:
            if value is not None:
                body[name] = value
        return self._call("POST", f"/standin/databases/{database}/indexing", body)

    def indexing(self, database: str) -> dict[str, Any]:
        """The indexing knobs, `AutoIndexesCreated` (by queries, since the database was created) and `Indexes`."""
        return self.set_indexing(database)

    def delete_auto_indexes(self, database: str) -> dict[str, Any]:
        """Drop every auto index of the database (RavenDB deletes one idle for 72 h); the next query rebuilds it."""
        return self._call("POST", f"/standin/databases/{database}/indexing", {"delete_auto_indexes": True})

    def pause_indexing(self, database: str) -> dict[str, Any]:
        """Indexes stop advancing (queries through them turn stale)."""
        return self.set_indexing(database, paused=True)

    def resume_indexing(self, database: str) -> dict[str, Any]:
        """Indexes catch up and follow writes again (lag 0)."""
        return self.set_indexing(database, paused=False, lag_ms=0)

    def set_replication(
        self, database: str, delay_ms: int | None = None, paused: bool | None = None, flush: bool = False
    ) -> dict[str, Any]:
        """Replication between the nodes of a database: delay each write by delay_ms (0, the default: at once),
        pause/resume it, or flush (apply every queued write now). Returns {DelayMs, Paused, Pending, Nodes}."""
        body: dict[str, Any] = {"flush": flush}
        if delay_ms is not None:
            body["delay_ms"] = delay_ms
        if paused is not None:
            body["paused"] = paused
        return self._call("POST", f"/standin/databases/{database}/replication", body)

    def pause_replication(self, database: str) -> dict[str, Any]:
        """Writes stay on the node that received them until resume or flush."""
        return self.set_replication(database, paused=True)

    def resume_replication(self, database: str) -> dict[str, Any]:
        """Queued writes go out again once their delay has passed."""
        return self.set_replication(database, paused=False)

    def flush_replication(self, database: str) -> dict[str, Any]:
        """Apply every queued write on every node now."""
        return self.set_replication(database, flush=True)

    def pause_stream(self, database: str, after: int) -> dict[str, Any]:
        """The next stream of the database (query stream or GET /streams/docs) that reaches `after` results sends
        them, then waits for release_stream (at most 60 s)."""
        return self._call("POST", f"/standin/databases/{database}/streams", {"pause_after": after})

    def wait_stream_paused(self, database: str, timeout: float = 30.0) -> int:
        """Wait until a stream is paused; returns how many results it sent."""
        deadline = time.monotonic() + timeout
        while True:
            state = self._call("POST", f"/standin/databases/{database}/streams", {})
            if state["PausedAt"] is not None:
                return state["PausedAt"]
            if time.monotonic() > deadline:
                raise TimeoutError(f"no stream of {database} paused within {timeout} s")
            time.sleep(0.01)

    def release_stream(self, database: str) -> dict[str, Any]:
        """Let a paused stream go on."""
        return self._call("POST", f"/standin/databases/{database}/streams", {"release": True})

    def throttle_streams(self, database: str, docs: int, every_ms: int) -> dict[str, Any]:
        """Every stream of the database (query streams and GET /streams/docs) sends `docs` results every
        `every_ms` (docs=0: full speed again), so that a stream of N documents lasts about N / docs * every_ms and
        writes can happen during it."""
        body = {"throttle_docs": docs, "throttle_ms": every_ms}
        return self._call("POST", f"/standin/databases/{database}/streams", body)

    def fail_streams(self, database: str, after: int, times: int = 1, error: str | None = None) -> dict[str, Any]:
        """The next `times` streams (-1: every one; 0: none) that reach `after` results end instead of sending the
        rest: a query stream with an `{"Error": ...}` line, GET /streams/docs with the server's error object."""
        body = {"error_after": after, "error_times": times, "error": error}
        return self._call("POST", f"/standin/databases/{database}/streams", body)

    def set_read_pulse(self, database: str, every_docs: int | None) -> dict[str, Any]:
        """Streams that read storage (GET /streams/docs without startsWith, streamed collection queries) renew their
        read transaction every `every_docs` documents and go on from the new snapshot, as RavenDB does once
        Databases.PulseReadTransactionLimitInMb is exceeded (in practice on encrypted databases; the server checks
        every 1,024 documents). None (the default): never, every stream reads one snapshot."""
        body = {"read_pulse_docs": every_docs}
        return self._call("POST", f"/standin/databases/{database}/streams", body)

    def stall_stream(self, database: str, after: int, seconds: float) -> dict[str, Any]:
        """The next stream of the database (query stream or GET /streams/docs) that reaches `after` results sends
        them, then sends nothing for `seconds` and goes on by itself."""
        body = {"stall_after": after, "stall_s": seconds}
        return self._call("POST", f"/standin/databases/{database}/streams", body)

    def set_query_timeout(self, database: str, seconds: float | None) -> dict[str, Any]:
        """Databases.QueryTimeoutInSec of the database (None: RavenDB's 300 s): a query stream that writes no result
        for that long is cancelled."""
        return self._call("POST", f"/standin/databases/{database}/streams", {"query_timeout_s": seconds})

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

    def set_clock_skew(self, tag: str, skew_ms: int) -> dict[str, Any]:
        """A node's clock runs `skew_ms` ahead (negative: behind) of the others: its writes' @last-modified."""
        return self._call("POST", f"/standin/nodes/{tag}/clock", {"skew_ms": skew_ms})

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

    def database_requests(self, database: str) -> dict[str, int]:
        """How many requests of each `METHOD /databases/{database}/...` path every node together has served."""
        counts: dict[str, int] = {}
        prefix = f"/databases/{database}/"
        for key, count in self._call("GET", "/standin/requests")["Requests"].items():
            method_path = key.split(" ", 1)[1]
            if method_path.split(" ", 1)[1].startswith(prefix):
                counts[method_path] = counts.get(method_path, 0) + count
        return counts

    def database_request_count(self, database: str) -> int:
        """How many requests under `/databases/{database}/` every node together has served since the stand-in
        started (the control API aside)."""
        return sum(self.database_requests(database).values())

    def revisions_bin_pages(self, database: str) -> dict[str, int]:
        """Shapes of the revisions-bin pages served for a database: full, short, empty, not modified."""
        return self._call("GET", f"/standin/databases/{database}/revisions/bin")["Pages"]

    def step_clock_back(self, tag: str, ms: int) -> dict[str, Any]:
        """Set node `tag`'s clock back by `ms` from where it is now (its later writes and `Date` headers)."""
        return self._call("POST", f"/standin/nodes/{tag}/clock", {"step_back_ms": ms})

    def set_conflict_solver(self, database: str, resolve_to_latest: bool) -> dict[str, Any]:
        """ResolveToLatest of the database's conflict solver (RavenDB's default: true). Answers the kept conflicts."""
        return self._call("POST", f"/standin/databases/{database}/conflicts", {"resolve_to_latest": resolve_to_latest})

    def set_commit_latency(self, database: str, ms: int) -> dict[str, Any]:
        """How long each write request waits between reading the clock and committing."""
        return self._call("POST", f"/standin/databases/{database}/writes", {"commit_latency_ms": ms})

    def clean_revisions_bin(self, database: str, older_than_s: float) -> dict[str, Any]:
        """Run the revisions bin cleaner once: ids whose bin entry is older than `older_than_s` lose every revision."""
        return self._call("POST", f"/standin/databases/{database}/revisions/bin/clean", {"older_than_s": older_than_s})

    def set_pulse_limit(self, database: str, limit_bytes: int) -> dict[str, Any]:
        """Databases.PulseReadTransactionLimitInMb, in bytes, for the database's streams."""
        return self._call("POST", f"/standin/databases/{database}/streams", {"pulse_limit_bytes": limit_bytes})

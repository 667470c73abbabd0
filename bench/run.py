"""Benchmark of the RavenDB connector against the test server, with the ceilings it is measured against.

Loads N realistic order documents into the RavenDB-compatible test server (tests/standin, over HTTPS with a client
certificate) and measures, in one run:

  1a  ceiling, source: the ravendb client's public streaming API, documents discarded          (docs/s)
  1b  ceiling, source: QueryStreamCommand + JSONLRavenStreamParser, as connector.py streams   (docs/s)
  2   baseline: skip/take pages of 100 ordered by @last-modified, flattened                   (docs/s)
  3   the connector's source side: connector.update() with op.* replaced by counters           (docs/s, peak RSS)
  4   ceiling, sink: a trivial connector upserting already-flattened rows under `fivetran debug` (rows/s)
  5   the connector end to end under `fivetran debug` into DuckDB                              (docs/s, peak RSS)
  6   incremental syncs under `fivetran debug`: nothing changed, and 1% of documents changed   (seconds)
  5c  with --child-tables Orders.Lines: (5) again with that setting, per row written (orders + lines)   (rows/s)
  8   child-table deletes (`--case child-deletes`): 2,000 orders, the oldest with 300 lines, child_tables
      Orders.Lines; the first sync of a fresh destination, then one after rewriting 199 small orders: upserts and
      deletes sent, and whether the lines landed equal the database's (no orphan, none missing)
  10  footprint (--case footprint), each sync schema() then update() in-process with op.* counted: a no-change
      update() of 1,000 collections of 10 documents and of one collection of 10,000 (their ratio; schema() timed
      apart), syncs spaced beyond lookback_seconds (2 s here), with the requests each sync sends and the auto
      indexes it creates; a no-change sync right after a 20,000-document bulk
      write (documents upserted again); one listed collection of 10 documents in a database where 20,000 were just
      written, read by its own query and by the query of the database (information); the state after a sync of
      100,000 documents written inside the lookback window (bytes). These last three use lookback_seconds 3600, so
      that every document loaded is inside the window however long the load takes (not with --smoke)
  7   many collections: a first sync of 1,000 collections of 10 documents, and of the same 10,000 documents in
      one collection: the connector's whole sync, schema() and update() with op.* counted as in (3) (seconds,
      their ratio); then both under `fivetran debug` at 100 collections (--debug-collections), for information
      (the SDK's local tester checkpoints in a time that grows with the tables declared: bench/checkpoint_cost.py)
  9   history tables (--case history): N orders written twice with revisions on (2N revisions); the backfill of
      Orders_history by a sync whose main table has nothing new (history rows/s), the requests a sync without
      changes sends with history_collections off and on, and a sync after 1% of the documents changed
      (op.* counted as in (3))

and exits non-zero when a target ratio is missed (not with --smoke). Every measurement runs in its own process, so
peak RSS (os.wait4) is per measurement.

  python bench/run.py                 # 100,000 documents
  python bench/run.py --docs 250000   # any size
  python bench/run.py --full          # 100,000 then 1,000,000 documents (also checks peak RSS growth)
  python bench/run.py --smoke         # 2,000 documents and 50 collections of 10, no thresholds (CI)
  python bench/run.py --case collections --debug-collections 1000   # only the many-collections case
  python bench/run.py --case child-deletes                           # only the child-table deletes case (8)
  python bench/run.py --case history --docs 20000                    # only the history case (9)
  python bench/run.py --case footprint                              # only the footprint case (10)
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import pickle
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import requests

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

DATABASE = "bench"
COLLECTION = "Orders"
DEFAULT_DOCS = 100_000
FULL_DOCS = 1_000_000
SMOKE_DOCS = 2_000
COLLECTIONS = 1_000  # the many-collections case (7): COLLECTIONS x DOCS_PER_COLLECTION
SMOKE_COLLECTIONS = 50
DEBUG_COLLECTIONS = 100  # the many-collections case under fivetran debug, whose checkpoints grow with the tables
DOCS_PER_COLLECTION = 10
GENERATE_CHUNK = 100_000  # documents per /standin generate request
BASELINE_PAGE = 100
SINK_SAMPLE_ROWS = 100_000  # real flattened rows the trivial sink connector cycles through
CHANGE_BATCH = 500  # documents loaded and saved per session when changing 1%
SDK_ELAPSED = re.compile(r"SYNC SUCCEEDED — total elapsed (\d+):(\d+):(\d+)\.(\d+)")
SDK_CHECKPOINTS = re.compile(r"^\s*Checkpoints\s*\|\s*(\d+)", re.MULTILINE)

# Targets (issue): source side vs ceiling, vs baseline, sink vs SDK ceiling, RSS growth, incremental syncs.
MIN_SOURCE_VS_CEILING = 0.8
MIN_SOURCE_VS_BASELINE = 5.0
MIN_END_TO_END_VS_SINK = 0.90
MAX_RSS_GROWTH = 1.25
MAX_NO_CHANGE_SECONDS = 2.0
MAX_ONE_PERCENT_SHARE = 0.05
MAX_MANY_VS_ONE_COLLECTION = 3.0
MIN_CHILD_TABLES_VS_OFF = 0.85  # (5c) rows/s with child tables on vs (5) with them off
MAX_FIRST_SYNC_CHILD_DELETES = 0  # (8) deletes sent by the first sync of a fresh destination
MAX_CHILD_DELETES_PER_REWRITE = 10  # (8) deletes per small order rewritten
CHILD_DELETES_ORDERS = 2_000  # (8) orders, of which the oldest has LONG_ORDER_LINES lines
LONG_ORDER_LINES = 300
REWRITTEN_ORDERS = 199
MAX_REQUESTS_PER_SYNC = 10  # (10) schema() + update() of 1,000 collections, first and second sync
MAX_INDEXES_CREATED = 1  # (10) over both syncs
MAX_STATE_BYTES = 1_000_000  # (10) state after 100,000 documents written inside the lookback window
FOOTPRINT_LOOKBACK_SECONDS = 2  # (10) lookback_seconds of the spaced syncs; they are spaced by one second more
BULK_DOCS = 20_000  # (10) documents of the bulk write before a no-change sync
STATE_DOCS = 100_000  # (10) documents written inside the lookback window before the state is measured


class Server(NamedTuple):
    url: str
    tls_dir: Path


class Run(NamedTuple):
    """One measured process: items handled, seconds (as the measurement defines them), wall time, peak RSS."""

    items: int
    seconds: float
    wall_seconds: float
    peak_rss_kb: int
    note: str = ""
    details: list | None = None  # DETAIL lines of a measurement that reports per sync (8)

    @property
    def rate(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else 0.0


class Results(NamedTuple):
    docs: int
    public_stream: Run  # 1a
    command_stream: Run  # 1b, the connector's query
    collection_stream: Run  # 1b on `from 'Orders'` (informational)
    baseline: Run  # 2
    source: Run  # 3
    sink: Run  # 4
    end_to_end: Run  # 5
    no_change: Run  # 6
    one_percent: Run  # 6
    child_tables: Run | None = None  # 5c, items = rows written to every table


class Check(NamedTuple):
    name: str
    value: float
    target: str
    ok: bool | None  # None: not applicable at this size


# ----------------------------------------------------------------------------------------------------------
# The test server


@contextmanager
def test_server(work: Path) -> Iterator[Server]:
    """The stand-in over HTTPS on a free port, stopped on exit."""
    tls_dir = work / "tls"
    log_path = work / "server.log"
    with open(log_path, "w", encoding="utf-8") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.standin", "--port", "0", "--tls-dir", str(tls_dir)],
            cwd=REPO,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        url = _wait_ready(process, log_path)
        yield Server(url, tls_dir)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_ready(process: subprocess.Popen, log_path: Path) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        text = log_path.read_text(encoding="utf-8")
        if "READY" in text:
            return re.search(r"Node A: (\S+)", text).group(1)  # type: ignore[union-attr]
        if process.poll() is not None:
            break
        time.sleep(0.1)
    raise RuntimeError(f"test server did not start:\n{log_path.read_text(encoding='utf-8')}")


def open_store(server: Server) -> Any:
    from ravendb import DocumentStore

    store = DocumentStore([server.url], DATABASE)
    store.certificate_pem_path = str(server.tls_dir / "client.pem")
    store.trust_store_path = str(server.tls_dir / "ca.pem")
    store.initialize()
    return store


def control(server: Server, path: str, body: dict | None = None) -> dict:
    for attempt in range(3):  # a loaded machine may drop a connection during the TLS handshake
        try:
            response = requests.post(
                f"{server.url}/standin/databases/{DATABASE}/{path}",
                json=body or {},
                cert=str(server.tls_dir / "client.pem"),
                verify=str(server.tls_dir / "ca.pem"),
                timeout=1800,
            )
            break
        except requests.ConnectionError:
            if attempt == 2:
                raise
            time.sleep(1)
    response.raise_for_status()
    return response.json() if response.content else {}


def fresh_database(server: Server) -> None:
    """The bench database, created or emptied."""
    from ravendb.serverwide.database_record import DatabaseRecord
    from ravendb.serverwide.operations.common import CreateDatabaseOperation, GetDatabaseNamesOperation

    store = open_store(server)
    try:
        if DATABASE in store.maintenance.server.send(GetDatabaseNamesOperation(0, 100)):
            control(server, "reset")
        else:
            store.maintenance.server.send(CreateDatabaseOperation(DatabaseRecord(DATABASE)))
    finally:
        store.close()


def load_documents(server: Server, docs: int) -> float:
    """A fresh database holding `docs` orders; returns the seconds it took."""
    started = time.monotonic()
    fresh_database(server)
    for start in range(1, docs + 1, GENERATE_CHUNK):
        control(
            server,
            "generate",
            {"count": min(GENERATE_CHUNK, docs + 1 - start), "collection": COLLECTION, "start": start},
        )
    return time.monotonic() - started


def warm_index(server: Server) -> float:
    """Build the auto index behind the connector's query before anything is timed (the first query would pay it)."""
    import connector

    started = time.monotonic()
    store = open_store(server)
    try:
        with store.open_session() as session:
            query = session.advanced.raw_query(connector._CHANGED_SINCE_RQL.format(collection=COLLECTION))
            query = query.add_parameter("since", connector._BEGINNING_OF_TIME)
            list(query.wait_for_non_stale_results().take(0))
    finally:
        store.close()
    return time.monotonic() - started


def change_documents(server: Server, docs: int, share: float) -> int:
    """Change one field of every (1/share)-th order through the client, in batches; returns how many changed."""
    step = max(1, round(1 / share))
    ids = [f"orders/{n}-A" for n in range(1, docs + 1, step)]
    store = open_store(server)
    try:
        for first in range(0, len(ids), CHANGE_BATCH):
            with store.open_session() as session:
                for document in session.load(ids[first : first + CHANGE_BATCH]).values():
                    document.Freight = round(document.Freight + 1.25, 2)
                session.save_changes()
    finally:
        store.close()
    return len(ids)


def configuration(server: Server) -> dict[str, str]:
    """The connector's configuration for the test server, every value a string as Fivetran passes them."""
    return {
        "ravendb_urls": server.url,
        "database_name": DATABASE,
        "certificate_base64": base64.b64encode((server.tls_dir / "client.pem").read_bytes()).decode(),
        "server_ca_base64": base64.b64encode((server.tls_dir / "ca.pem").read_bytes()).decode(),
        "collection_name": COLLECTION,
    }


# ----------------------------------------------------------------------------------------------------------
# Measurements that run inside a child process (`run.py --child NAME CONTEXT`): each prints one RESULT line


def child_public_stream(context: dict) -> tuple[int, float]:
    """1a: session.advanced.stream over a raw query, documents discarded."""
    store = open_store(Server(context["url"], Path(context["tls_dir"])))
    try:
        started = time.perf_counter()
        count = 0
        with store.open_session() as session:
            for _ in session.advanced.stream(session.advanced.raw_query(f"from '{COLLECTION}'")):
                count += 1
        return count, time.perf_counter() - started
    finally:
        store.close()


def child_command_stream(context: dict, rql: str | None = None) -> tuple[int, float]:
    """1b: QueryStreamCommand + JSONLRavenStreamParser over iter_lines(65536), documents discarded.

    Without `rql`, the connector's own query from the beginning of time (ordered by @last-modified)."""
    from ravendb.documents.commands.stream import QueryStreamCommand
    from ravendb.documents.queries.index_query import IndexQuery
    from ravendb.tools.parsers import JSONLRavenStreamParser

    import connector

    query = IndexQuery(rql) if rql else connector.changed_since_query(COLLECTION, connector._BEGINNING_OF_TIME)
    store = open_store(Server(context["url"], Path(context["tls_dir"])))
    try:
        started = time.perf_counter()
        command = QueryStreamCommand(store.conventions, query)
        store.get_request_executor().execute_command(command)
        response = command.result.response
        count = 0
        try:
            parser = JSONLRavenStreamParser(response.iter_lines(chunk_size=65536))
            parser.next_query_statistics()
            while True:
                try:
                    parser.next_item()
                except StopIteration:
                    break
                count += 1
        finally:
            response.close()
        return count, time.perf_counter() - started
    finally:
        store.close()


def child_collection_stream(context: dict) -> tuple[int, float]:
    return child_command_stream(context, f"from '{COLLECTION}'")


def child_baseline(context: dict) -> tuple[int, float]:
    """2: the seed's skip/take pages of 100 by @last-modified, each document flattened; stops at the time limit."""
    import connector

    rql = f"from '{COLLECTION}' order by @metadata.'@last-modified'"
    store = open_store(Server(context["url"], Path(context["tls_dir"])))
    try:
        started = time.perf_counter()
        count = 0
        while time.perf_counter() - started < context["baseline_seconds"]:
            with store.open_session() as session:
                page = list(session.advanced.raw_query(rql).skip(count).take(BASELINE_PAGE))
            for entity in page:
                connector.flatten(vars(entity))
            count += len(page)
            if len(page) < BASELINE_PAGE:
                break
        return count, time.perf_counter() - started
    finally:
        store.close()


class CountingOps:
    """Stands in for connector.op: counts, keeps nothing."""

    def __init__(self) -> None:
        self.upserts = 0
        self.checkpoints = 0

    def upsert(self, table: str, data: dict) -> None:
        self.upserts += 1

    def update(self, table: str, modified: dict) -> None:
        pass

    def delete(self, table: str, keys: dict) -> None:
        pass

    def checkpoint(self, state: dict) -> None:
        self.checkpoints += 1

    def error(self, message: str) -> None:
        raise RuntimeError(message)


class QuietLog:
    """Stands in for connector.log."""

    def fine(self, message: str) -> None:
        pass

    info = warning = severe = fine


def child_source(context: dict) -> tuple[int, float]:
    """3: connector.update() in-process, op.* counted: read + flatten + cursor handling."""
    import connector

    ops = CountingOps()
    connector.op = ops  # type: ignore[assignment]
    connector.log = QuietLog()  # type: ignore[assignment]
    started = time.perf_counter()
    connector.update(context["configuration"], {})
    return ops.upserts, time.perf_counter() - started


def child_sync(context: dict) -> tuple[int, float]:
    """7: a whole first sync as Fivetran runs one, schema() then update(), in-process with op.* counted."""
    import connector

    ops = CountingOps()
    connector.op = ops  # type: ignore[assignment]
    connector.log = QuietLog()  # type: ignore[assignment]
    started = time.perf_counter()
    connector.schema(context["configuration"])
    connector.update(context["configuration"], {})
    return ops.upserts, time.perf_counter() - started


def child_sample_rows(context: dict) -> tuple[int, float]:
    """Real flattened rows (connector._stream + connector.flatten) and connector.schema(), for the sink ceiling."""
    import connector

    started = time.perf_counter()
    settings = connector.validate_configuration(context["configuration"])
    query = connector.changed_since_query(COLLECTION, connector._BEGINNING_OF_TIME)
    query.page_size = context["sample_rows"]
    with connector.open_store(settings) as store:
        rows = [connector.flatten(document) for document in connector.QueryStream(store, settings, query)]
    tables = connector.schema(context["configuration"])
    project = Path(context["project"])
    with open(project / "rows.pickle", "wb") as file:
        pickle.dump(rows, file, protocol=pickle.HIGHEST_PROTOCOL)
    (project / "schema.json").write_text(json.dumps(tables), encoding="utf-8")
    return len(rows), time.perf_counter() - started


def child_history(context: dict) -> tuple[int, float]:
    """9: connector.update() in-process from a saved state, op.* counted (only the history tables' upserts when the
    setting is on); saves the state it checkpointed last."""
    import connector

    ops = CountingOps()
    saved: list[dict] = []
    ops.checkpoint = saved.append  # type: ignore[method-assign]
    if context["configuration"].get("history_collections"):
        counted_upsert = ops.upsert
        ops.upsert = lambda table, data: counted_upsert(table, data) if table.endswith("_history") else None  # type: ignore[method-assign]
    connector.op = ops  # type: ignore[assignment]
    connector.log = QuietLog()  # type: ignore[assignment]
    state_path = Path(context["state"])
    state = json.loads(state_path.read_text(encoding="utf-8")) if state_path.exists() else {}
    started = time.perf_counter()
    connector.update(context["configuration"], state)
    seconds = time.perf_counter() - started
    state_path.write_text(json.dumps(saved[-1] if saved else state), encoding="utf-8")
    return ops.upserts, seconds


class RowOps:
    """Stands in for connector.op: counts upserts and deletes per table and keeps the live rows' keys."""

    def __init__(self) -> None:
        self.upserts: dict[str, int] = {}
        self.deletes: dict[str, int] = {}
        self.live: set[tuple] = set()
        self.state: dict = {}

    def upsert(self, table: str, data: dict) -> None:
        self.upserts[table] = self.upserts.get(table, 0) + 1
        self.live.add((table, data["Id"], data.get("lines_index")))

    def update(self, table: str, modified: dict) -> None:
        pass

    def delete(self, table: str, keys: dict) -> None:
        self.deletes[table] = self.deletes.get(table, 0) + 1
        self.live.discard((table, keys["Id"], keys.get("lines_index")))

    def checkpoint(self, state: dict) -> None:
        self.state = state

    def error(self, message: str) -> None:
        raise RuntimeError(message)


def child_deletes(context: dict) -> tuple[int, float]:
    """8: the first sync of Orders with child_tables Orders.Lines into an empty destination, then 199 small orders
    rewritten (one field changed) and a second sync; in-process, op.* recorded. Writes its counts to
    context["report"]."""
    import connector
    from tests import documents

    ops = RowOps()
    connector.op = ops  # type: ignore[assignment]
    connector.log = QuietLog()  # type: ignore[assignment]
    configuration = {**context["configuration"], "child_tables": "Orders.Lines"}
    started = time.perf_counter()
    connector.update(configuration, {})
    first = (dict(ops.upserts), dict(ops.deletes))
    ops.upserts, ops.deletes = {}, {}
    settings = connector.validate_configuration(configuration)
    small = sorted(
        (doc for doc in _orders(settings) if len(doc.get("Lines") or []) < LONG_ORDER_LINES),
        key=lambda doc: doc["@metadata"]["@id"],
    )
    rewritten = [
        (doc["@metadata"]["@id"], COLLECTION, {**{k: v for k, v in doc.items() if k != "@metadata"}, "Freight": 1.5})
        for doc in small[:REWRITTEN_ORDERS]
    ]
    store = open_store(Server(context["url"], Path(context["tls_dir"])))
    try:
        documents.put(store, rewritten)
    finally:
        store.close()
    connector.update(configuration, ops.state)
    second = (dict(ops.upserts), dict(ops.deletes))
    seconds = time.perf_counter() - started
    expected = {("Orders", doc["@metadata"]["@id"], None) for doc in _orders(settings)}
    expected |= {
        ("Orders_lines", doc["@metadata"]["@id"], index)
        for doc in _orders(settings)
        for index in range(len(doc.get("Lines") or []))
    }
    report = {
        "first": first,
        "second": second,
        "rewritten": len(rewritten),
        "orphans": len(ops.live - expected),
        "missing": len(expected - ops.live),
        "state_bytes": len(json.dumps(ops.state)),
    }
    Path(context["report"]).write_text(json.dumps(report), encoding="utf-8")
    return sum(second[1].values()), seconds


def _orders(settings: Any) -> list[dict]:
    import connector

    with connector.open_store(settings) as store:
        query = connector.collection_query("from '{collection}'", COLLECTION)
        return list(connector.QueryStream(store, settings, query))


class KeepingOps(CountingOps):
    """CountingOps that keeps the last checkpointed state as JSON text (Fivetran serialises it too), and gives it
    back as the next sync receives it."""

    def __init__(self, state: dict | None = None) -> None:
        super().__init__()
        self.saved = json.dumps(state or {})  # a sync that saves nothing leaves the state it began with

    def checkpoint(self, state: dict) -> None:
        super().checkpoint(state)
        self.saved = json.dumps(state)

    @property
    def state(self) -> dict:
        return json.loads(self.saved)


def child_footprint(context: dict) -> tuple[int, float]:
    """10: the syncs of one footprint scenario, each schema() then update() as Fivetran runs them, in-process with
    op.* counted; prints a DETAIL line per sync: seconds of update() and of schema(), upserts, requests and auto
    indexes created (both calls), state bytes."""
    import connector

    server = Server(context["url"], Path(context["tls_dir"]))
    connector.log = QuietLog()  # type: ignore[assignment]
    if "per_collection_reads" in context:  # which of the two ways reads a listed subset
        connector._PER_COLLECTION_READS = context["per_collection_reads"]  # type: ignore[attr-defined]
    state: dict = {}
    total = 0.0
    for number in range(1, context["syncs"] + 1):
        if number > 1:
            time.sleep(context["spacing_seconds"])
        ops = KeepingOps(state)
        connector.op = ops  # type: ignore[assignment]
        requests_before, indexes_before = database_requests(server), indexes_created(server)
        started = time.perf_counter()
        connector.schema(context["configuration"])
        schema_seconds = time.perf_counter() - started
        started = time.perf_counter()
        connector.update(context["configuration"], state)
        seconds = time.perf_counter() - started
        total += seconds
        state = ops.state
        detail = {
            "sync": number,
            "seconds": seconds,
            "schema_seconds": schema_seconds,
            "upserts": ops.upserts,
            "requests": database_requests(server) - requests_before,
            "indexes_created": indexes_created(server) - indexes_before,
            "state_bytes": len(json.dumps(state)),
        }
        print(f"DETAIL {json.dumps(detail)}", flush=True)
    return ops.upserts, total


CHILDREN = {
    "deletes": child_deletes,
    "public_stream": child_public_stream,
    "command_stream": child_command_stream,
    "collection_stream": child_collection_stream,
    "baseline": child_baseline,
    "source": child_source,
    "sync": child_sync,
    "sample_rows": child_sample_rows,
    "history": child_history,
    "footprint": child_footprint,
}


def run_child(name: str, context: dict, work: Path) -> Run:
    """Run one measurement in a fresh interpreter; its peak RSS comes from os.wait4."""
    context_path = work / f"context-{name}.json"
    context_path.write_text(json.dumps(context), encoding="utf-8")
    output_path = work / f"child-{name}.log"
    started = time.monotonic()
    with open(output_path, "w", encoding="utf-8") as output:
        process = subprocess.Popen(
            [sys.executable, __file__, "--child", name, str(context_path)], cwd=REPO, stdout=output, stderr=output
        )
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - started
    text = output_path.read_text(encoding="utf-8")
    match = re.search(r"^RESULT (.*)$", text, re.MULTILINE)
    if process.returncode != 0 or match is None:
        raise RuntimeError(f"measurement {name} failed (exit {process.returncode}):\n{text[-4000:]}")
    items, seconds = json.loads(match.group(1))
    details = re.findall(r"^DETAIL (.*)$", text, re.MULTILINE)
    return Run(items, seconds, wall, usage.ru_maxrss, details=[json.loads(line) for line in details])


# ----------------------------------------------------------------------------------------------------------
# Measurements under `fivetran debug`

SINK_CONNECTOR = '''"""Trivial connector: upserts already-flattened rows (the SDK's own limit)."""

import json
import os
import pickle

from fivetran_connector_sdk import Connector
from fivetran_connector_sdk import Operations as op

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "rows.pickle"), "rb") as file:  # loaded on import: before the SDK's timer
    ROWS = pickle.load(file)
with open(os.path.join(HERE, "schema.json"), encoding="utf-8") as file:
    TABLES = json.load(file)


def schema(configuration):
    return TABLES


def update(configuration, state):
    total, table, sample = int(configuration["rows"]), TABLES[0]["table"], len(ROWS)
    for i in range(total):
        row = ROWS[i % sample]
        if i >= sample:
            row = {**row, "Id": f"{row['Id']}/{i // sample}"}
        op.upsert(table, row)
        if (i + 1) % 1000 == 0:
            op.checkpoint({"rows": i + 1})
    op.checkpoint({"rows": total})


connector = Connector(update=update, schema=schema)
'''


def make_project(directory: Path, connector_source: str) -> Path:
    """A project directory holding only connector.py and requirements.txt (keeps pipreqs' scan small)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "connector.py").write_text(connector_source, encoding="utf-8")
    shutil.copy(REPO / "requirements.txt", directory / "requirements.txt")
    return directory


def fivetran_debug(
    project: Path, configuration_values: dict[str, str], items: int, label: str, timeout: float | None = None
) -> Run:
    """`fivetran debug` in `project`; seconds from the SDK's SYNC SUCCEEDED line, peak RSS from os.wait4, wall
    time from start to exit (the requirements check, in pipreqs' local mode, included).

    Past `timeout` seconds the run is stopped and reported as such (seconds = the timeout, note says so)."""
    configuration_path = project / "bench-configuration.json"
    configuration_path.write_text(json.dumps(configuration_values), encoding="utf-8")
    configuration_path.chmod(0o600)
    output_path = project / f"debug-{label}.log"
    from tests.syncing import pipreqs_shim

    fivetran = Path(sys.executable).parent / "fivetran"
    tools = project.parent / "local-pipreqs"
    tools.mkdir(exist_ok=True)
    pipreqs_shim(tools, "--use-local")  # the SDK's requirements check answers at once, without network
    started = time.monotonic()
    with open(output_path, "w", encoding="utf-8") as output:
        process = subprocess.Popen(
            [str(fivetran), "debug", "--configuration", str(configuration_path)],
            cwd=project,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            env={**os.environ, "DO_NOT_TRACK": "1", "PATH": f"{tools}{os.pathsep}{os.environ['PATH']}"},
        )
        timer = threading.Timer(timeout, process.kill) if timeout else None
        if timer:
            timer.start()
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        if timer:
            timer.cancel()
    wall = time.monotonic() - started
    text = output_path.read_text(encoding="utf-8")
    if timeout and wall >= timeout and process.returncode != 0:
        return Run(items, timeout, wall, usage.ru_maxrss, note=f"stopped after {timeout:.0f} s")
    match = SDK_ELAPSED.search(text)
    if process.returncode != 0 or match is None:
        raise RuntimeError(f"fivetran debug ({label}) failed (exit {process.returncode}):\n{text[-4000:]}")
    hours, minutes, seconds, millis = (int(part) for part in match.groups())
    return Run(items, hours * 3600 + minutes * 60 + seconds + millis / 1000, wall, usage.ru_maxrss)


def warehouse_rows(project: Path, every_table: bool = False) -> int:
    """Rows of the collection's table (or of every table: the collection's and its child tables)."""
    import duckdb

    with duckdb.connect(str(project / "files" / "warehouse.db"), read_only=True) as db:
        tables = db.execute("select table_schema, table_name from information_schema.tables").fetchall()
        selected = [
            (schema, name)
            for schema, name in tables
            if name.lower() == COLLECTION.lower() or (every_table and not name.startswith("_fivetran"))
        ]
        return sum(
            db.execute(f'select count(*) from "{schema}"."{name}"').fetchone()[0]  # type: ignore[index]
            for schema, name in selected
        )


# ----------------------------------------------------------------------------------------------------------
# One benchmark size


def bench_size(
    server: Server, docs: int, work: Path, baseline_seconds: float, child_tables: str | None = None
) -> Results:
    work.mkdir(parents=True, exist_ok=True)
    print(f"\n== {docs:,} documents", flush=True)
    seconds = load_documents(server, docs)
    print(f"loaded in {seconds:.1f} s, index built in {warm_index(server):.1f} s", flush=True)
    config = configuration(server)
    context = {
        "url": server.url,
        "tls_dir": str(server.tls_dir),
        "configuration": config,
        "baseline_seconds": baseline_seconds,
        "sample_rows": min(docs, SINK_SAMPLE_ROWS),
        "project": str(work / "sink"),
    }

    def step(label: str, measure: Any) -> Run:
        result = measure()
        print(f"  {label:<46} {result.items:>10,} in {result.seconds:8.2f} s", flush=True)
        return result

    command_stream = step(
        "1b ceiling: QueryStreamCommand (connector query)", lambda: run_child("command_stream", context, work)
    )
    collection_stream = step(
        "1b ceiling: QueryStreamCommand (from 'Orders')", lambda: run_child("collection_stream", context, work)
    )
    public_stream = step("1a ceiling: session.advanced.stream", lambda: run_child("public_stream", context, work))
    baseline = step("2  baseline: skip/take 100", lambda: run_child("baseline", context, work))
    if baseline.items < docs:
        baseline = baseline._replace(note=f"stopped after {baseline_seconds:.0f} s")
    source = step("3  connector source side (update, op counted)", lambda: run_child("source", context, work))

    sink_project = make_project(work / "sink", SINK_CONNECTOR)
    run_child("sample_rows", context, work)
    sink = step(
        "4  ceiling: trivial connector, fivetran debug",
        lambda: fivetran_debug(sink_project, {"rows": str(docs)}, docs, "sink"),
    )

    project = make_project(work / "connector", (REPO / "connector.py").read_text(encoding="utf-8"))
    end_to_end = step("5  connector end to end, fivetran debug", lambda: fivetran_debug(project, config, docs, "full"))
    landed = warehouse_rows(project)
    if landed != docs:
        raise RuntimeError(f"the warehouse holds {landed} rows, expected {docs}")
    child = None
    if child_tables:
        child_project = make_project(work / "child-tables", (REPO / "connector.py").read_text(encoding="utf-8"))
        child_config = {**config, "child_tables": child_tables}
        child = step(
            "5c end to end with child_tables (docs)",
            lambda: fivetran_debug(child_project, child_config, docs, "child-tables"),
        )
        child = child._replace(items=warehouse_rows(child_project, every_table=True))
    no_change = step("6  incremental, nothing changed", lambda: fivetran_debug(project, config, 0, "no-change"))
    changed = change_documents(server, docs, 0.01)
    one_percent = step("6  incremental, 1% changed", lambda: fivetran_debug(project, config, changed, "one-percent"))
    return Results(
        docs,
        public_stream,
        command_stream,
        collection_stream,
        baseline,
        source,
        sink,
        end_to_end,
        no_change,
        one_percent,
        child,
    )


# ----------------------------------------------------------------------------------------------------------
# Child-table deletes (8)


def bench_child_deletes(server: Server, work: Path) -> list[Check]:
    """Case 8: 2,000 orders whose oldest has 300 lines, the others 1 to 4; the first sync with child_tables
    Orders.Lines, then 199 small orders rewritten and synced again (`child_deletes`)."""
    from tests import documents
    from tests.standin.sample_data import order

    work.mkdir(parents=True, exist_ok=True)
    print(
        f"\n== child-table deletes: {CHILD_DELETES_ORDERS:,} orders, the oldest with {LONG_ORDER_LINES} lines",
        flush=True,
    )
    fresh_database(server)
    long_order = order(1, random.Random(1))
    long_order["Lines"] = [long_order["Lines"][0]] * LONG_ORDER_LINES
    store = open_store(server)
    try:
        documents.put(store, [("orders/1-A", COLLECTION, long_order)])
    finally:
        store.close()
    control(server, "generate", {"count": CHILD_DELETES_ORDERS - 1, "collection": COLLECTION, "start": 2})
    report_path = work / "child-deletes.json"
    context = {
        "url": server.url,
        "tls_dir": str(server.tls_dir),
        "configuration": configuration(server),
        "report": str(report_path),
    }
    run_child("deletes", context, work)
    report = json.loads(report_path.read_text(encoding="utf-8"))
    for label, (upserts, deletes) in (("first sync", report["first"]), ("after rewriting", report["second"])):
        tables = ", ".join(f"{table} {count:,}" for table, count in upserts.items())
        print(
            f"  8  {label:<16} upserts {sum(upserts.values()):>7,} ({tables}), deletes {sum(deletes.values()):>7,}",
            flush=True,
        )
    per_order = sum(report["second"][1].values()) / max(report["rewritten"], 1)
    print(
        f"  8  {report['rewritten']} orders rewritten: {per_order:.2f} deletes per order; rows landed vs the database: "
        f"{report['orphans']} orphans, {report['missing']} missing; state {report['state_bytes']:,} bytes",
        flush=True,
    )
    first_deletes = sum(report["first"][1].values())
    exact = report["orphans"] + report["missing"]
    return [
        Check("(8) child deletes, first sync", first_deletes, f"<= {MAX_FIRST_SYNC_CHILD_DELETES}", first_deletes <= 0),
        Check(
            "(8) child deletes per rewritten order",
            per_order,
            f"<= {MAX_CHILD_DELETES_PER_REWRITE}",
            per_order <= MAX_CHILD_DELETES_PER_REWRITE,
        ),
        Check("(8) lines orphaned or missing", exact, "= 0", exact == 0),
    ]


# Footprint (10)


def indexes_created(server: Server) -> int:
    """Auto indexes the bench database's queries created so far (the test server's count)."""
    return control(server, "indexing")["AutoIndexesCreated"]


def bench_footprint(server: Server, collections: int, work: Path) -> list[Check]:
    """(10): the footprint on RavenDB and on the destination of syncs that find little or nothing to do."""
    work.mkdir(parents=True, exist_ok=True)
    every_collection = {key: value for key, value in configuration(server).items() if key != "collection_name"}
    spaced = {**every_collection, "lookback_seconds": str(FOOTPRINT_LOOKBACK_SECONDS)}
    within = {**every_collection, "lookback_seconds": "3600"}  # every document loaded is inside the lookback window
    base = {"url": server.url, "tls_dir": str(server.tls_dir), "spacing_seconds": FOOTPRINT_LOOKBACK_SECONDS + 1}
    docs = collections * DOCS_PER_COLLECTION
    print("\n== footprint: syncs that find little or nothing to do", flush=True)

    def syncs(label: str, context: dict) -> list[dict]:
        run = run_child("footprint", {**base, **context}, work)
        for detail in run.details or []:
            print(
                f"  {label:<44} sync {detail['sync']}: update {detail['seconds']:6.2f} s "
                f"(schema {detail['schema_seconds']:5.2f} s), {detail['upserts']:>7,} upserts, "
                f"{detail['requests']:>5,} requests, {detail['indexes_created']} indexes created, "
                f"state {detail['state_bytes']:,} bytes",
                flush=True,
            )
        return run.details or []

    load_collections(server, collections)
    many = syncs(f"{collections:,} collections x {DOCS_PER_COLLECTION}", {"configuration": spaced, "syncs": 3})
    load_documents(server, docs)
    one = syncs(f"1 collection x {docs:,}", {"configuration": spaced, "syncs": 3})
    load_documents(server, BULK_DOCS)
    bulk = syncs(f"{BULK_DOCS:,} written, synced, synced again", {"configuration": within, "syncs": 2})
    load_documents(server, BULK_DOCS)
    control(server, "generate", {"count": DOCS_PER_COLLECTION, "collection": "Shelf"})
    one_listed = {**within, "collection_name": "Shelf"}
    for label, reads in (("its own query", 10), ("the query of the database", 0)):
        syncs(
            f"Shelf of {BULK_DOCS:,} + 10, read by {label}",
            {"configuration": one_listed, "syncs": 2, "per_collection_reads": reads},
        )
    load_documents(server, STATE_DOCS)
    state = syncs(f"{STATE_DOCS:,} written inside the lookback", {"configuration": within, "syncs": 1})
    at_size = collections >= COLLECTIONS
    ratio = many[-1]["seconds"] / one[-1]["seconds"]
    requests_most = max(detail["requests"] for detail in many[:2])
    indexes = sum(detail["indexes_created"] for detail in many[:2])
    return [
        Check(
            f"(10) no-change update(), {collections:,} colls / 1",
            ratio,
            f"<= {MAX_MANY_VS_ONE_COLLECTION:.0f}",
            ratio <= MAX_MANY_VS_ONE_COLLECTION if at_size else None,
        ),
        Check(
            f"(10) requests per sync, {collections:,} collections",
            requests_most,
            f"<= {MAX_REQUESTS_PER_SYNC}",
            requests_most <= MAX_REQUESTS_PER_SYNC if at_size else None,
        ),
        Check(
            f"(10) indexes created, {collections:,} collections",
            indexes,
            f"<= {MAX_INDEXES_CREATED}",
            indexes <= MAX_INDEXES_CREATED,
        ),
        Check(
            f"(10) upserts, no-change after {BULK_DOCS:,} written", bulk[-1]["upserts"], "= 0", bulk[-1]["upserts"] == 0
        ),
        Check(
            f"(10) state bytes, {STATE_DOCS:,} in the lookback",
            state[-1]["state_bytes"],
            f"<= {MAX_STATE_BYTES:,}",
            state[-1]["state_bytes"] <= MAX_STATE_BYTES,
        ),
    ]


# ----------------------------------------------------------------------------------------------------------
# History tables (9)


def bench_history(server: Server, docs: int, work: Path) -> None:
    """`docs` orders written twice with revisions enabled; the main table synced first, then the history backfill
    timed on its own (a sync whose main table has nothing new), then a sync without changes, with the setting off
    and on: their requests. For information (no target)."""
    from ravendb import ConfigureRevisionsOperation, RevisionsCollectionConfiguration, RevisionsConfiguration

    work.mkdir(parents=True, exist_ok=True)
    print(f"\n== history of {docs:,} documents written twice", flush=True)
    fresh_database(server)
    store = open_store(server)
    try:
        entry = RevisionsCollectionConfiguration()
        store.maintenance.send(ConfigureRevisionsOperation(RevisionsConfiguration(collections={COLLECTION: entry})))
    finally:
        store.close()
    for _ in range(2):
        for start in range(1, docs + 1, GENERATE_CHUNK):
            control(server, "generate", {"count": min(GENERATE_CHUNK, docs + 1 - start), "start": start})
    off = {**configuration(server), "lookback_seconds": "0"}  # one node: no document is read again
    on = {**off, "history_collections": COLLECTION}
    state = work / "state.json"
    context = {"url": server.url, "tls_dir": str(server.tls_dir), "state": str(state)}
    main, main_requests = counted(server, lambda: run_child("history", {**context, "configuration": off}, work))
    backfill, backfill_requests = counted(server, lambda: run_child("history", {**context, "configuration": on}, work))
    quiet_off, off_requests = counted(server, lambda: run_child("history", {**context, "configuration": off}, work))
    quiet_on, on_requests = counted(server, lambda: run_child("history", {**context, "configuration": on}, work))
    changed = change_documents(server, docs, 0.01)
    later, later_requests = counted(server, lambda: run_child("history", {**context, "configuration": on}, work))
    for label, run, sent in (
        ("9  first sync, history off (main table)", main, main_requests),
        ("9  history backfill (main table unchanged), history rows", backfill, backfill_requests),
        ("9  sync without changes, history off", quiet_off, off_requests),
        ("9  sync without changes, history on", quiet_on, on_requests),
        (f"9  sync after {changed:,} documents changed, history on", later, later_requests),
    ):
        print(f"  {label:<52} {run.items:>9,} in {run.seconds:8.2f} s ({run.rate:>9,.0f}/s), {sent}", flush=True)


# ----------------------------------------------------------------------------------------------------------
# Many collections (7)


def bench_collections(server: Server, collections: int, debug_collections: int, work: Path, timeout: float) -> Check:
    """A first sync of `collections` collections of DOCS_PER_COLLECTION orders, then of the same number of orders in
    one collection: the connector's sync (op counted) checked against the target; then the same two under
    `fivetran debug` at `debug_collections`, whose local tester spends time per declared table at every checkpoint
    (bench/checkpoint_cost.py), for information."""
    work.mkdir(parents=True, exist_ok=True)
    docs = collections * DOCS_PER_COLLECTION
    print(f"\n== {collections:,} collections of {DOCS_PER_COLLECTION} documents vs {docs:,} in one", flush=True)
    every_collection = {key: value for key, value in configuration(server).items() if key != "collection_name"}
    context = {"url": server.url, "tls_dir": str(server.tls_dir), "configuration": every_collection}
    load_collections(server, collections)
    many, many_load = counted(server, lambda: run_child("sync", context, work))
    load_documents(server, docs)
    one, one_load = counted(server, lambda: run_child("sync", context, work))
    for label, run, load in (
        (f"7  connector sync (schema + update, op counted), {collections:,} x {DOCS_PER_COLLECTION}", many, many_load),
        (f"7  connector sync (schema + update, op counted), 1 x {docs:,}", one, one_load),
    ):
        print(f"  {label:<64} {run.items:>8,} in {run.seconds:8.2f} s, {load}", flush=True)
    if debug_collections:
        debug_many_vs_one(server, debug_collections, every_collection, work, timeout)
    ratio = many.seconds / one.seconds
    return Check(
        f"(7) connector sync, {collections:,} collections / 1 collection",
        ratio,
        f"<= {MAX_MANY_VS_ONE_COLLECTION:.0f}",
        ratio <= MAX_MANY_VS_ONE_COLLECTION if collections >= COLLECTIONS else None,
    )


def counted(server: Server, measure: Any) -> tuple[Run, str]:
    """Run the measurement; say how many requests the database got meanwhile and how many indexes it holds after."""
    before = database_requests(server)
    run = measure()
    sent = database_requests(server) - before
    indexes = control_get(server, f"/databases/{DATABASE}/stats")["CountOfIndexes"]
    return run, f"{sent:,} requests, {indexes:,} indexes"


def database_requests(server: Server) -> int:
    counts = control_get(server, "/standin/requests")["Requests"]
    return sum(count for key, count in counts.items() if key.split(" ", 2)[2].startswith(f"/databases/{DATABASE}/"))


def control_get(server: Server, path: str) -> dict:
    response = requests.get(
        f"{server.url}{path}",
        cert=str(server.tls_dir / "client.pem"),
        verify=str(server.tls_dir / "ca.pem"),
        timeout=60,
    )
    response.raise_for_status()
    return response.json()


def load_collections(server: Server, collections: int) -> None:
    fresh_database(server)
    for n in range(collections):
        control(server, "generate", {"count": DOCS_PER_COLLECTION, "collection": f"Orders{n:04d}"})


def debug_many_vs_one(server: Server, collections: int, configuration: dict, work: Path, timeout: float) -> None:
    """The first syncs of case 7 end to end under `fivetran debug`, each into a fresh warehouse (information)."""
    docs = collections * DOCS_PER_COLLECTION
    source = (REPO / "connector.py").read_text(encoding="utf-8")
    load_collections(server, collections)
    many_project = make_project(work / "many", source)
    many = fivetran_debug(many_project, configuration, docs, "many", timeout)
    if not many.note and warehouse_rows_all(many_project) != docs:
        raise RuntimeError(f"the warehouse holds {warehouse_rows_all(many_project)} rows, expected {docs}")
    load_documents(server, docs)
    one_project = make_project(work / "one", source)
    one = fivetran_debug(one_project, configuration, docs, "one", timeout)
    if warehouse_rows_all(one_project) != docs:
        raise RuntimeError(f"the warehouse holds {warehouse_rows_all(one_project)} rows, expected {docs}")
    for label, run, log_label in (
        (f"7  fivetran debug, {collections:,} collections x {DOCS_PER_COLLECTION}", many, "many"),
        (f"7  fivetran debug, 1 collection x {docs:,}", one, "one"),
    ):
        log_text = (work / log_label / f"debug-{log_label}.log").read_text(encoding="utf-8")
        checkpoints = SDK_CHECKPOINTS.search(log_text)
        print(
            f"  {label:<64} {run.items:>8,} in {run.seconds:8.2f} s, "
            f"{checkpoints.group(1) if checkpoints else '?'} checkpoints, peak RSS {run.peak_rss_kb / 1024:.0f} MB"
            + (f"  ({run.note})" if run.note else ""),
            flush=True,
        )
    print(
        f"  fivetran debug {collections:,} / 1 collection: {many.seconds / one.seconds:.2f} (information: the local "
        "tester's checkpoints grow with the tables declared)",
        flush=True,
    )


def warehouse_rows_all(project: Path) -> int:
    """Rows in every table of the warehouse, except the SDK's own."""
    import duckdb

    with duckdb.connect(str(project / "files" / "warehouse.db"), read_only=True) as db:
        tables = db.execute(
            "select table_schema, table_name from information_schema.tables where table_schema not like '%fivetran%'"
            " and table_name not like '%fivetran%'"
        ).fetchall()
        return sum(db.execute(f'select count(*) from "{schema}"."{name}"').fetchone()[0] for schema, name in tables)  # type: ignore[index]


class PeakRss(NamedTuple):
    docs: int
    peak_rss_kb: int


def checks(results: Results, smaller: PeakRss | None) -> list[Check]:
    """The issue's targets. (1) is the ravendb client's public streaming API (1a); the same ratio against the
    bare stream command and parser the connector uses (1b) is printed for information (see README)."""
    source = results.source.rate
    at_100k = results.docs == DEFAULT_DOCS
    vs_client = source / results.public_stream.rate
    vs_baseline = source / results.baseline.rate
    vs_sink = results.end_to_end.rate / results.sink.rate
    one_percent = results.one_percent.seconds / results.end_to_end.seconds
    found = [
        Check(
            "(3) / (1a) source vs client", vs_client, f">= {MIN_SOURCE_VS_CEILING}", vs_client >= MIN_SOURCE_VS_CEILING
        ),
        Check("(3) / (1b) source vs bare stream + parse", source / results.command_stream.rate, "(information)", None),
        Check(
            "(3) / (2) source vs skip/take baseline",
            vs_baseline,
            f">= {MIN_SOURCE_VS_BASELINE}",
            vs_baseline >= MIN_SOURCE_VS_BASELINE if at_100k else None,
        ),
        Check(
            "(5) / (4) end to end vs SDK ceiling",
            vs_sink,
            f">= {MIN_END_TO_END_VS_SINK}",
            vs_sink >= MIN_END_TO_END_VS_SINK,
        ),
        Check(
            "no-change incremental (s)",
            results.no_change.seconds,
            f"<= {MAX_NO_CHANGE_SECONDS} at 100k",
            results.no_change.seconds <= MAX_NO_CHANGE_SECONDS if at_100k else None,
        ),
        Check(
            "1% changed / full sync (5)",
            one_percent,
            f"<= {MAX_ONE_PERCENT_SHARE}",
            one_percent <= MAX_ONE_PERCENT_SHARE,
        ),
    ]
    if results.child_tables is not None:
        vs_off = results.child_tables.rate / results.end_to_end.rate
        found.append(
            Check(
                "(5c) / (5) rows/s, child tables on vs off",
                vs_off,
                f">= {MIN_CHILD_TABLES_VS_OFF}",
                vs_off >= MIN_CHILD_TABLES_VS_OFF,
            )
        )
    if smaller is not None:
        growth = results.end_to_end.peak_rss_kb / smaller.peak_rss_kb
        found.append(
            Check(
                f"peak RSS (5) at {results.docs:,} / at {smaller.docs:,}",
                growth,
                f"<= {MAX_RSS_GROWTH}",
                growth <= MAX_RSS_GROWTH,
            )
        )
    return found


# ----------------------------------------------------------------------------------------------------------
# Report


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text(encoding="utf-8")).group(1))  # type: ignore[union-attr]
        memory = f", {kb / 1024 / 1024:.0f} GiB"
    except (OSError, AttributeError):
        pass
    from importlib.metadata import version

    return (
        f"machine: {os.cpu_count()} cores ({len(os.sched_getaffinity(0))} usable), {model}{memory}; "
        f"{platform.system()} {platform.release()}; Python {platform.python_version()}; "
        f"fivetran-connector-sdk {version('fivetran-connector-sdk')}, ravendb {version('ravendb')}; "
        "server: tests/standin (Python, same machine, HTTPS)"
    )


def table(results: Results) -> str:
    ceiling = results.command_stream.rate
    rows = [
        ("1a ceiling source: session.advanced.stream", results.public_stream, "docs/s"),
        ("1b ceiling source: QueryStreamCommand+JSONL", results.command_stream, "docs/s"),
        ("   same, `from 'Orders'` (collection query)", results.collection_stream, "docs/s"),
        ("2  baseline: skip/take 100 + flatten", results.baseline, "docs/s"),
        ("3  connector source side (op counted)", results.source, "docs/s"),
        ("4  ceiling sink: trivial connector, debug", results.sink, "rows/s"),
        ("5  connector end to end, debug → DuckDB", results.end_to_end, "docs/s"),
        ("6  incremental, nothing changed", results.no_change, "s"),
        ("6  incremental, 1% changed", results.one_percent, "s"),
    ]
    if results.child_tables is not None:
        rows.insert(7, ("5c end to end, child tables on", results.child_tables, "rows/s"))
    lines = [
        f"{results.docs:,} documents",
        f"{'measurement':<46} {'items':>10} {'seconds':>9} {'rate':>11} {'unit':<6} {'vs 1b':>6} "
        f"{'wall s':>8} {'peak RSS':>9}",
    ]
    for label, run, unit in rows:
        rate = f"{run.rate:,.0f}" if unit != "s" else ""
        versus = f"{run.rate / ceiling:.2f}" if unit == "docs/s" and ceiling else ""
        lines.append(
            f"{label:<46} {run.items:>10,} {run.seconds:>9.2f} {rate:>11} {unit:<6} {versus:>6} "
            f"{run.wall_seconds:>8.1f} {run.peak_rss_kb / 1024:>6.0f} MB" + (f"  ({run.note})" if run.note else "")
        )
    return "\n".join(lines)


def report(results: Results, found: list[Check], enforce: bool) -> bool:
    print()
    print(table(results))
    print()
    return report_checks(found, enforce)


def report_checks(found: list[Check], enforce: bool) -> bool:
    print(f"{'ratio':<46} {'value':>8}  {'target':<18} result")
    passed = True
    for check in found:
        verdict = "n/a" if check.ok is None else ("ok" if check.ok else "MISS")
        if not enforce and check.ok is not None:
            verdict += " (not enforced)"
        print(f"{check.name:<46} {check.value:>8.3f}  {check.target:<18} {verdict}")
        passed = passed and check.ok is not False
    return passed


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--docs", type=int, default=DEFAULT_DOCS, help="documents to load (default 100,000)")
    size.add_argument("--full", action="store_true", help="run 100,000 and 1,000,000 documents; compare peak RSS")
    size.add_argument("--smoke", action="store_true", help=f"{SMOKE_DOCS:,} documents, no thresholds (CI)")
    parser.add_argument(
        "--case",
        choices=("all", "documents", "collections", "child-deletes", "footprint", "history"),
        default="all",
        help="which measurements to run (history: only with --case history; footprint: not with --smoke)",
    )
    parser.add_argument(
        "--collections", type=int, help=f"collections of the many-collections case (default {COLLECTIONS:,})"
    )
    parser.add_argument(
        "--debug-collections",
        type=int,
        help=f"collections of the many-collections case under fivetran debug (default {DEBUG_COLLECTIONS:,}; 0: skip)",
    )
    parser.add_argument(
        "--collections-timeout", type=float, default=1200.0, help="stop each many-collections sync after this"
    )
    parser.add_argument("--compare-rss", type=Path, help="a --save-rss file of a smaller run: check peak RSS growth")
    parser.add_argument("--save-rss", type=Path, help="write the docs and peak RSS of (5) to this JSON file")
    parser.add_argument("--baseline-seconds", type=float, default=180.0, help="stop the skip/take baseline after this")
    parser.add_argument("--child-tables", help="also run (5) with this child_tables setting, e.g. Orders.Lines")
    parser.add_argument("--work-dir", type=Path, help="keep scratch files here (default: a temporary directory)")
    parser.add_argument("--child", nargs=2, metavar=("NAME", "CONTEXT"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.child:
        name, context_path = args.child
        items, seconds = CHILDREN[name](json.loads(Path(context_path).read_text(encoding="utf-8")))
        print(f"RESULT {json.dumps([items, seconds])}", flush=True)
        return 0

    sizes = [SMOKE_DOCS] if args.smoke else [DEFAULT_DOCS, FULL_DOCS] if args.full else [args.docs]
    print(machine(), flush=True)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="ravendb-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    all_passed = True
    try:
        previous: PeakRss | None = None
        if args.compare_rss:
            previous = PeakRss(**json.loads(args.compare_rss.read_text(encoding="utf-8")))
        with test_server(work) as server:
            print(f"test server {server.url}; scratch {work}", flush=True)
            if args.case == "history":
                for docs in sizes:
                    bench_history(server, docs, work / f"history-{docs}")
                return 0
            for docs in sizes if args.case in ("all", "documents") else []:
                results = bench_size(server, docs, work / str(docs), args.baseline_seconds, args.child_tables)
                all_passed &= report(results, checks(results, previous), enforce=not args.smoke)
                previous = PeakRss(docs, results.end_to_end.peak_rss_kb)
                if args.save_rss:
                    args.save_rss.write_text(json.dumps(previous._asdict()), encoding="utf-8")
            collections = args.collections or (SMOKE_COLLECTIONS if args.smoke else COLLECTIONS)
            if args.case in ("all", "child-deletes"):
                found = bench_child_deletes(server, work / "child-deletes")
                all_passed &= report_checks(found, enforce=not args.smoke)
            if args.case == "footprint" or (args.case == "all" and not args.smoke):
                found = bench_footprint(server, collections, work / "footprint")
                all_passed &= report_checks(found, enforce=not args.smoke)
            if args.case in ("all", "collections"):
                debug = args.debug_collections
                if debug is None:
                    debug = min(collections, DEBUG_COLLECTIONS)
                found = bench_collections(server, collections, debug, work / "collections", args.collections_timeout)
                all_passed &= report_checks([found], enforce=not args.smoke)
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    if args.smoke:
        return 0
    print("\nall targets met" if all_passed else "\nsome targets missed", flush=True)
    return 0 if all_passed else 1


if __name__ == "__main__":
    sys.exit(main())

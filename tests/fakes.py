"""An in-memory RavenDB database and a stand-in for ravendb.DocumentStore, for the fast unit tests of connector.py.

`FakeRavenDB` holds one database's documents and how its answers misbehave; `FakeRavenDB.open_store` takes the
place of ravendb.DocumentStore (the `fake_store` fixture puts it there), and each store it opens records what the
connector asked of it. A store implements only the calls connector.py makes, and answers them as the real client
would: collection statistics, database statistics, the wait-for-index query, revisions-bin pages as RavenDB
6.x/7.x pages them (raw records, then the filter), the newest documents of a collection (`GET /collections/docs`),
the JSONL stream of `from '<c>' where @metadata.'@last-modified' >= $since` with the server's Date header, and
every document of the database newest first (`GET /streams/docs`). Like a real index, a stream may return
documents at an indexed position older than their current @last-modified (`indexed_at`), report itself stale
(`stale_streams`) or break off with an Error line (`error_after`).
"""

import json
import re
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from email.utils import format_datetime
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
from ravendb.documents.commands.query import QueryCommand
from ravendb.documents.commands.revisions import GetRevisionsBinEntryCommand
from ravendb.documents.commands.stream import StreamCommand
from ravendb.documents.conventions import DocumentConventions
from ravendb.documents.operations.statistics import GetStatisticsOperation

_FROM = re.compile(r"^from (?:'((?:[^'\\]|\\.)*)'|@all_docs) ")


class FakeResponse:
    def __init__(self, lines: list[bytes], date: datetime | None, seconds_per_line: float, sleep: Callable):
        self.lines, self.seconds_per_line, self.sleep = lines, seconds_per_line, sleep
        self.closed = False
        self.url = "http://127.0.0.1:8080/databases/Northwind/streams/queries?format=jsonl"
        self.headers = {"Date": format_datetime(date, usegmt=True)} if date else {}

    def iter_lines(self, chunk_size: int = 512) -> Iterator[bytes]:
        for line in self.lines:
            if self.seconds_per_line:
                self.sleep(self.seconds_per_line)
            yield line

    def close(self) -> None:
        self.closed = True


class FakeRequestExecutor:
    def __init__(self, store: "FakeDocumentStore"):
        self.store, self.db = store, store.db
        self.http_session = requests.Session()  # where the connector mounts its timeouts; never sends here

    @property
    def preferred_node(self):
        return SimpleNamespace(current_node=SimpleNamespace(url="http://fake", database="Northwind"), current_index=0)

    def execute(self, chosen_node=None, node_index=None, command=None, should_retry=None, session_info=None):
        self.execute_command(command, session_info)

    def execute_command(self, command, session_info=None) -> None:
        if self.db.before_command is not None:
            self.db.before_command(command)
        if isinstance(command, GetRevisionsBinEntryCommand):
            self.bin_command(command)
            return
        if isinstance(command, GetStatisticsOperation._GetStatisticsCommand):
            command.result = SimpleNamespace(count_of_revision_documents=len(self.db.revisions_bin or []))
            return
        if isinstance(command, QueryCommand):  # the connector's wait for a stale index
            self.store.index_waits.append(command._QueryCommand__index_query.query)
            stale = self.db.stale_waits > 0
            self.db.stale_waits -= 1
            command.result = SimpleNamespace(is_stale=stale, index_name="Auto/Orders/By@metadata.@last-modified")
            return
        request = command.create_request(SimpleNamespace(url="http://fake", database="Northwind"))
        if "/databases?name=" in (request.url or ""):  # the database record: the database, or each of its shards
            name = parse_qs(urlsplit(request.url).query)["name"][0]
            names = [f"{name}${n}" for n in range(self.db.shards)] if self.db.shards else [name]
            command.set_response(json.dumps({"Databases": [{"Name": name} for name in names]}), False)
            return
        if (request.url or "").endswith("/revisions/config"):
            configuration = self.db.revisions_configuration
            command.set_response(None if configuration is None else json.dumps(configuration), False)
            return
        if "/collections/docs?" in (request.url or ""):  # a page of one collection, newest etag first
            query = parse_qs(urlsplit(request.url).query)
            name, size = query["name"][0].lower(), int(query["pageSize"][0])
            newest = [
                document
                for document in reversed(self.db.documents.values())
                if document["@metadata"].get("@collection", "").lower() == name
            ]
            self.store.samples.append(query["name"][0])
            command.set_response(json.dumps({"Results": newest[:size]}), False)
            return
        if isinstance(command, StreamCommand):  # GET /streams/docs: every document, newest etag first
            self.store.queries.append(("GET /streams/docs", {}))
            self.stream(command, [], list(self.db.documents.values())[::-1], items=False)
            return
        query = command._index_query
        if not query.query.endswith(" desc"):
            self.store.queries.append((query.query, dict(query.query_parameters or {})))
        if query.query.endswith(" desc"):
            documents = self.db.changed_since(query.query, "")[::-1][: query.page_size]
        else:
            documents = self.db.changed_since(query.query, query.query_parameters["since"])
        stale = self.db.stale_streams > 0
        self.db.stale_streams -= 1
        stats = {
            "Stats": {
                "ResultEtag": 1,
                "IsStale": stale,
                "IndexName": "Auto",
                "TotalResults": len(documents),
                "IndexTimestamp": "2024-01-01T00:00:00.0000000",
            }
        }
        self.stream(command, [json.dumps(stats).encode()], documents)

    def stream(self, command, lines: list[bytes], documents: list[dict], items: bool = True) -> None:
        """The JSONL response: `lines` (a query's Stats line), then one line per document (a query's {"Item": doc};
        the bare document for /streams/docs, as StreamJsonlResultsWriter writes it), broken off with an Error line
        after `error_after` documents if the test asked."""
        head = len(lines)
        lines = lines + [json.dumps({"Item": doc} if items else doc).encode() for doc in documents]
        error_after = self.db.error_after
        if error_after is not None and len(lines) > error_after + head:
            lines[error_after + head :] = [json.dumps({"Error": "System.OperationCanceledException: gone"}).encode()]
            self.db.error_after = None
        response = FakeResponse(lines, self.store.server_date, self.db.seconds_per_document, self.db.sleep)
        command.result = SimpleNamespace(response=response)

    def bin_command(self, command: GetRevisionsBinEntryCommand) -> None:
        """Skip `start` raw records, take `pageSize`, drop the None ones (no longer bin entries); 304 when
        If-None-Match names the newest raw record's change vector."""
        raw = self.db.revisions_bin or []  # None: no revisions configuration, an empty bin (RavenDB 6.x/7.x)
        request = command.create_request(SimpleNamespace(url="http://fake", database="Northwind"))
        self.store.bin_requests.append(request.url)
        newest = raw[0]["@metadata"].get("@change-vector") if raw and raw[0] is not None else None
        if newest is not None and request.headers.get("If-None-Match") == f'"{newest}"':
            command.status_code = 304
            command.set_response(None, True)
            return
        query = parse_qs(urlsplit(request.url).query)
        start, size = int(query["start"][0]), int(query["pageSize"][0])
        body = {"Results": [entry for entry in raw[start : start + size] if entry is not None]}
        command.set_response(json.dumps(body), False)


class FakeRavenDB:
    """One database: its documents (id -> document with @metadata, in storage order) and how its answers
    misbehave; `stores` are the stores the connector opened on it, in order."""

    def __init__(self, sleep: Callable[[float], Any] = time.sleep):
        self.documents: dict[str, dict] = {}
        self.stores: list[FakeDocumentStore] = []
        self.revisions_bin: list[dict | None] | None = None  # raw records newest first; None: no longer listed
        self.shards = 0  # a sharded database's shards (GET /databases?name= lists one entry each); 0: unsharded
        self.indexed_at: dict[str, str] = {}  # id -> @last-modified the index still places it at
        self.server_date: datetime | bool | None = None  # the Date header of streams; None: now; False: none
        self.stale_streams = 0  # how many of the next streams report a stale index
        self.stale_waits = 0  # how many of the next waits for the index end still stale
        self.error_after: int | None = None  # the next stream breaks off with an Error line after this many documents
        self.seconds_per_document = 0.0  # a slow stream: each line of a stream takes this long, by `sleep`
        self.revisions_configuration: dict | None = None  # GET /revisions/config; None: the database has none (404)
        self.sleep = sleep
        self.before_command: Callable[[Any], None] | None = None  # sees each command first; may raise, or set up

    def add(self, *documents: dict) -> None:
        """Store documents by their @metadata @id (a stored id is replaced)."""
        for document in documents:
            self.documents[document["@metadata"]["@id"]] = document

    def open_store(self, urls, database) -> "FakeDocumentStore":
        """What `ravendb.DocumentStore(urls, database)` gives: a store on this database."""
        store = FakeDocumentStore(self, urls, database)
        self.stores.append(store)
        return store

    def changed_since(self, rql: str, since: str) -> list[dict]:
        """`from '<c>'` or `from @all_docs` (every document) where the indexed @last-modified >= since."""
        quoted = _FROM.match(rql).group(1)
        collection = None if quoted is None else re.sub(r"\\(.)", r"\1", quoted)
        selected = [
            doc
            for doc in self.documents.values()
            if collection in (None, doc["@metadata"].get("@collection")) and self.indexed_position(doc) >= since
        ]
        return sorted(selected, key=self.indexed_position)

    def indexed_position(self, document: dict) -> str:
        metadata = document["@metadata"]
        return self.indexed_at.get(metadata["@id"], metadata["@last-modified"])


class FakeDocumentStore:
    """A client store on a FakeRavenDB; records the queries, index waits, bin pages and samples it was asked for."""

    def __init__(self, db: FakeRavenDB, urls, database):
        self.db, self.urls, self.database = db, urls, database
        self.certificate_pem_path = None
        self.trust_store_path = None
        self.conventions = DocumentConventions()
        self.queries: list[tuple[str, dict]] = []
        self.index_waits: list[str] = []
        self.bin_requests: list[str] = []
        self.samples: list[str] = []  # the collections whose newest documents were asked for (GET /collections/docs)
        self.initialized = self.closed = False
        self.maintenance = SimpleNamespace(send=self._send)
        self.server_date = datetime.now(timezone.utc) if db.server_date is None else db.server_date

    def initialize(self):
        self.initialized = True
        return self

    def close(self):
        self.closed = True

    def get_request_executor(self):
        return FakeRequestExecutor(self)

    def _send(self, operation):
        counts: dict[str, int] = {}
        for document in self.db.documents.values():
            collection = document["@metadata"].get("@collection", "@empty")
            counts[collection] = counts.get(collection, 0) + 1
        return SimpleNamespace(collections=counts, count_of_documents=len(self.db.documents))


class FakeClock:
    """connector.py's `time` in a test: `monotonic()` reads a clock that only `sleep()` moves, at once."""

    def __init__(self):
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

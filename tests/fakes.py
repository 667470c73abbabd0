"""An in-memory stand-in for ravendb.DocumentStore, for the fast unit tests of connector.py.

It implements only the calls connector.py makes, and answers them as the real client would: collection
statistics, the wait-for-index query, and the JSONL stream of `from '<c>' where @metadata.'@last-modified' >= $since`.
"""

import json
import re
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import ClassVar

from ravendb.documents.commands.revisions import GetRevisionsBinEntryCommand
from ravendb.documents.conventions import DocumentConventions
from ravendb.exceptions.raven_exceptions import RavenException

_FROM = re.compile(r"^from '((?:[^'\\]|\\.)*)' ")


class FakeResponse:
    def __init__(self, lines: list[bytes], seconds_per_line: float = 0.0):
        self.lines, self.seconds_per_line = lines, seconds_per_line
        self.closed = False

    def iter_lines(self, chunk_size: int = 512) -> Iterator[bytes]:
        for line in self.lines:
            if self.seconds_per_line:
                time.sleep(self.seconds_per_line)
            yield line

    def close(self) -> None:
        self.closed = True


class FakeRequestExecutor:
    def __init__(self, store: "FakeDocumentStore"):
        self.store = store

    def execute_command(self, command, session_info=None) -> None:
        if isinstance(command, GetRevisionsBinEntryCommand):
            self.bin_command(command)
            return
        query = command._index_query
        if not query.query.endswith(" desc"):
            self.store.queries.append((query.query, dict(query.query_parameters or {})))
        if query.query.endswith(" desc"):
            documents = self.store.changed_since(query.query, "")[::-1][: query.page_size]
        else:
            documents = self.store.changed_since(query.query, query.query_parameters["since"])
        stats = {
            "Stats": {
                "ResultEtag": 1,
                "IsStale": False,
                "IndexName": "Auto",
                "TotalResults": len(documents),
                "IndexTimestamp": "2024-01-01T00:00:00.0000000",
            }
        }
        lines = [json.dumps(stats).encode()] + [json.dumps({"Item": doc}).encode() for doc in documents]
        command.result = SimpleNamespace(response=FakeResponse(lines, self.store.seconds_per_document))

    def bin_command(self, command: GetRevisionsBinEntryCommand) -> None:
        if self.store.revisions_bin is None:  # what the client raises for RavenDB's 500 RevisionsDisabledException
            raise RavenException(
                "Raven.Client.Exceptions.Documents.Revisions.RevisionsDisabledException: Revisions are disabled\n"
                "The server at http://127.0.0.1:8080/databases/Northwind/revisions/bin responded with status code: 500"
            )
        start, size = command._etag, command._page_size
        command.result = SimpleNamespace(results=self.store.revisions_bin[start : start + size])


class FakeRawQuery:
    def __init__(self, store: "FakeDocumentStore", rql: str):
        self.store, self.rql = store, rql

    def add_parameter(self, name, value):
        return self

    def wait_for_non_stale_results(self, timeout=None):
        return self

    def take(self, count):
        return self

    def __iter__(self):
        self.store.index_waits.append(self.rql)
        return iter(())


class FakeSession:
    def __init__(self, store: "FakeDocumentStore"):
        self.advanced = SimpleNamespace(raw_query=lambda rql, object_type=None: FakeRawQuery(store, rql))

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return False


class FakeDocumentStore:
    """Documents live in `documents` (id -> document with @metadata); every instance shares one class-level db."""

    documents: ClassVar[dict[str, dict]] = {}
    instances: ClassVar[list["FakeDocumentStore"]] = []
    revisions_bin: ClassVar[list[dict] | None] = None  # newest first; None: revisions not configured
    seconds_per_document: ClassVar[float] = 0.0  # a slow stream: each line of a query stream waits this long

    def __init__(self, urls, database):
        self.urls, self.database = urls, database
        self.certificate_pem_path = None
        self.trust_store_path = None
        self.conventions = DocumentConventions()
        self.queries: list[tuple[str, dict]] = []
        self.index_waits: list[str] = []
        self.initialized = self.closed = False
        self.maintenance = SimpleNamespace(send=self._send)
        FakeDocumentStore.instances.append(self)

    def initialize(self):
        self.initialized = True
        return self

    def close(self):
        self.closed = True

    def open_session(self):
        return FakeSession(self)

    def get_request_executor(self):
        return FakeRequestExecutor(self)

    def _send(self, operation):
        counts: dict[str, int] = {}
        for document in self.documents.values():
            collection = document["@metadata"].get("@collection", "@empty")
            counts[collection] = counts.get(collection, 0) + 1
        return SimpleNamespace(collections=counts, count_of_documents=len(self.documents))

    def changed_since(self, rql: str, since: str) -> list[dict]:
        collection = re.sub(r"\\(.)", r"\1", _FROM.match(rql).group(1))
        selected = [
            doc
            for doc in self.documents.values()
            if doc["@metadata"].get("@collection") == collection and doc["@metadata"]["@last-modified"] >= since
        ]
        return sorted(selected, key=lambda doc: doc["@metadata"]["@last-modified"])

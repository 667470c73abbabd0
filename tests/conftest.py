"""Shared fixtures: configurations, a connector project, a document factory, recorders of op.* calls and log lines,
an in-memory database with a clock, and retries without waits."""

import itertools
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

import connector
from tests.fakes import FakeClock, FakeRavenDB
from tests.syncing import configuration_for, copy_project, node_store

pytest_plugins = ["tests.standin.fixtures"]

SERVER_FIXTURES = {"raven_server", "ravendb_target", "ravendb_store", "standin_control", "standin_http"}
CLI_FIXTURES = {"project", "offline", "crash_runs"}  # each runs the fivetran CLI or scripts/deploy.sh


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test by what it runs: `e2e` runs the `fivetran` CLI or a script of scripts/ as a user does (marked
    by hand, or by a fixture of CLI_FIXTURES); `integration` talks to a test server (RavenDB or the stand-in);
    `unit` runs in-process only (against the fake store at most)."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if item.get_closest_marker("e2e") is None and fixtures & CLI_FIXTURES:
            item.add_marker(pytest.mark.e2e)
        if item.get_closest_marker("e2e") is None:
            item.add_marker(pytest.mark.integration if fixtures & SERVER_FIXTURES else pytest.mark.unit)


@pytest.fixture
def base_configuration() -> dict[str, str]:
    """A valid configuration for a plain-http local server, every value a string as Fivetran passes them."""
    return {"ravendb_urls": "http://127.0.0.1:8080", "database_name": "Northwind", "collection_name": "Orders"}


@pytest.fixture
def configuration(ravendb_target) -> dict[str, str]:
    """The connector's configuration for the test server's fresh database, syncing Orders."""
    return configuration_for(ravendb_target, collection_name="Orders")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A connector project as a user has it, in a fresh folder: connector.py and requirements.txt."""
    return copy_project(tmp_path)


@dataclass
class RecordedOps:
    """What a sync handed to Fivetran, in order."""

    calls: list[tuple[str, Any, Any]] = field(default_factory=list)

    def upsert(self, table: str, data: dict) -> None:
        self.calls.append(("upsert", table, dict(data)))

    def update(self, table: str, modified: dict) -> None:
        self.calls.append(("update", table, dict(modified)))

    def delete(self, table: str, keys: dict) -> None:
        self.calls.append(("delete", table, dict(keys)))

    def truncate(self, table: str) -> None:
        self.calls.append(("truncate", table, None))

    def checkpoint(self, state: dict) -> None:
        self.calls.append(("checkpoint", None, state))

    def error(self, message: str) -> None:
        self.calls.append(("error", None, message))

    def rows(self, table: str, keys: tuple[str, ...] = ("Id",)) -> dict[Any, dict]:
        """The live rows of the table as the destination holds them after the calls (soft deletes left out),
        by primary key: the Id, or a tuple of the `keys` values for a table with a composite key."""

        def key_of(data: dict) -> Any:
            return data["Id"] if keys == ("Id",) else tuple(data[name] for name in keys)

        rows: dict[Any, dict] = {}
        deleted: set[Any] = set()
        for kind, name, data in self.calls:
            if name != table:
                continue
            if kind == "upsert":
                rows[key_of(data)] = data
                deleted.discard(key_of(data))
            elif kind == "update":
                rows[key_of(data)] = {**rows.get(key_of(data), {}), **data}
                deleted.discard(key_of(data))
            elif kind == "delete":
                deleted.add(key_of(data))
            elif kind == "truncate":
                deleted.update(rows)
        return {key: row for key, row in rows.items() if key not in deleted}

    @property
    def upserts(self) -> list[tuple[str, dict]]:
        return [(name, data) for kind, name, data in self.calls if kind == "upsert"]

    @property
    def checkpoints(self) -> list[dict]:
        return [data for kind, _, data in self.calls if kind == "checkpoint"]


@pytest.fixture(autouse=True)
def ops(monkeypatch: pytest.MonkeyPatch) -> RecordedOps:
    recorder = RecordedOps()
    monkeypatch.setattr(connector, "op", recorder)
    return recorder


@pytest.fixture
def fake_store(monkeypatch: pytest.MonkeyPatch) -> FakeRavenDB:
    """A fresh in-memory database that connector.py opens its stores on (in place of ravendb.DocumentStore); the TCP
    probe of the server always succeeds."""
    db = FakeRavenDB()
    # The server's clock a minute after the default timestamps of make_document: the documents are newer than
    # the lookback bound, and a document a test writes later with a later timestamp is read by the next sync.
    db.server_date = datetime(2024, 5, 1, 10, 1, tzinfo=timezone.utc)
    monkeypatch.setattr(connector, "DocumentStore", db.open_store)
    monkeypatch.setattr(connector, "_check_reachable", lambda urls: None)
    return db


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch, fake_store: FakeRavenDB) -> FakeClock:
    """connector.py's clock, moved only by its own waits and by the fake store's slow streams."""
    fake_clock = FakeClock()
    monkeypatch.setattr(connector, "time", fake_clock)
    fake_store.sleep = fake_clock.sleep
    return fake_clock


@pytest.fixture
def own_tempdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary folder of the test's own as tempfile.gettempdir(), where connector.py writes its certificate
    folders: the folders of other processes in the shared one do not count."""
    folder = tmp_path / "tempdir"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries resume at once: the tests count attempts, not seconds."""
    monkeypatch.setattr(connector, "_BACKOFF_FIRST_SECONDS", 0.0)


@pytest.fixture
def make_document():
    """Build a RavenDB document as the server returns it; timestamps default to one per second."""
    counter = itertools.count(1)

    def build(
        collection: str = "Orders", last_modified: str | None = None, doc_id: str | None = None, **fields: Any
    ) -> dict:
        number = next(counter)
        metadata = {
            "@id": doc_id or f"{collection.lower()}/{number}-A",
            "@collection": collection,
            "@change-vector": f"A:{number}-x",
            "@last-modified": last_modified or f"2024-05-01T10:00:{number % 60:02d}.{number:07d}Z",
        }
        return {**fields, "@metadata": metadata}

    return build


@dataclass
class RecordedLog:
    """Every line connector.py logged, as (level, message)."""

    lines: list[tuple[str, str]] = field(default_factory=list)

    def info(self, message: str) -> None:
        self.lines.append(("INFO", message))

    def warning(self, message: str) -> None:
        self.lines.append(("WARNING", message))

    def severe(self, message: str) -> None:
        self.lines.append(("SEVERE", message))

    def fine(self, message: str) -> None:
        self.lines.append(("FINE", message))

    def messages(self, level: str | None = None) -> list[str]:
        return [message for line_level, message in self.lines if level in (None, line_level)]


@pytest.fixture(autouse=True)
def logs(monkeypatch: pytest.MonkeyPatch) -> RecordedLog:
    """Capture connector.py's log lines (the SDK logger needs the debug runner to be set up)."""
    recorder = RecordedLog()
    monkeypatch.setattr(connector, "log", recorder)
    return recorder


@pytest.fixture
def on_node(ravendb_target):
    """`on_node(tag)`: a store that talks to that node of the test cluster only; closed after the test."""
    stores: dict = {}

    def get(tag: str):
        if tag not in stores:
            stores[tag] = node_store(ravendb_target, tag)
        return stores[tag]

    yield get
    for store in stores.values():
        store.close()

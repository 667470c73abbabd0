"""A sharded database (RavenDB 6.0+) is recognised from its database record and refused in one line before any
document is read, by every entry point: `schema()`, `update()` and the connection test, in process and under the
`fivetran` CLI. An unsharded database costs one request more (`GET /databases?name=`).

The sharded database is created as RavenDB's own tests create one: a creation record whose `Sharding.Shards`
lists the shards (the python client's DatabaseRecord has no sharding field, so `ShardedRecord` adds it to the
JSON the client sends); against a real server this needs RavenDB 6.0+.
"""

import json
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from ravendb import ConfigureRevisionsOperation, RevisionsCollectionConfiguration, RevisionsConfiguration
from ravendb.http.raven_command import RavenCommand
from ravendb.serverwide.database_record import DatabaseRecord
from ravendb.serverwide.operations.common import CreateDatabaseOperation, DeleteDatabaseOperation

import connector
from connector import SourceError
from tests import documents
from tests.standin.fixtures import RavenTarget, open_store
from tests.syncing import configuration_for, run_fivetran

REPO = Path(__file__).resolve().parents[1]
SHARDS = 2
# Every endpoint through which the connector reads documents, counts or deletes (what "before any read" rules out).
READS = [
    ("GET", "collections/stats"),
    ("GET", "collections/docs"),
    ("GET", "streams/docs"),
    ("POST", "streams/queries"),
    ("POST", "queries"),
    ("GET", "revisions/bin"),
    ("GET", "stats"),
]


class ShardedRecord(DatabaseRecord):
    """A creation record asking for `shards` shards, each topology left for the server to fill
    (RavenDB: src/Raven.Server/Web/System/DatabaseHelper.cs `FillDatabaseTopology`)."""

    def __init__(self, name: str, shards: int):
        super().__init__(name)
        self.shards = shards

    def to_json(self) -> dict:
        return {**super().to_json(), "Sharding": {"Shards": {str(n): {"Members": []} for n in range(self.shards)}}}


def with_documents(store) -> None:
    documents.put(store, documents.orders(1, 5))


def with_deletes_in_the_bin(store) -> None:
    store.maintenance.send(
        ConfigureRevisionsOperation(
            RevisionsConfiguration(default_config=RevisionsCollectionConfiguration(minimum_revisions_to_keep=1))
        )
    )
    documents.put(store, documents.orders(1, 5))
    documents.delete(store, ["orders/2-A", "orders/4-A"])


BINS = [pytest.param(with_documents, id="empty-bin"), pytest.param(with_deletes_in_the_bin, id="bin-with-entries")]


@pytest.fixture(params=BINS)
def sharded_target(request, raven_server) -> Iterator[RavenTarget]:
    """A fresh sharded database of two shards holding five orders, its revisions bin empty or not (param)."""
    name = f"test_sharded_{uuid.uuid4().hex[:12]}"
    admin = open_store(raven_server.urls, name, raven_server.client_pem, raven_server.ca_pem)
    try:
        admin.maintenance.server.send(CreateDatabaseOperation(ShardedRecord(name, SHARDS)))
        target = raven_server.target(name)
        store = target.store()
        try:
            request.param(store)
        finally:
            store.close()
        yield target
        admin.maintenance.server.send(DeleteDatabaseOperation(name, hard_delete=True))
    finally:
        admin.close()


def refusal(database: str) -> str:
    return rf"database_name: '{re.escape(database)}' is a sharded database \({SHARDS} shards\): "


def reads(target: RavenTarget) -> int:
    """Requests that read the database, served by any node since the stand-in started."""
    return sum(
        sum(target.control.requests(method, f"/databases/{target.database}/{path}").values()) for method, path in READS
    )


def assert_nothing_read(target: RavenTarget, ops) -> None:
    assert ops.upserts == [] and ops.checkpoints == []
    if target.control is not None:
        assert reads(target) == 0


def test_update_refuses_a_sharded_database_before_reading_it(sharded_target, ops):
    with pytest.raises(SourceError) as raised:
        connector.update(configuration_for(sharded_target), {})

    assert re.match(refusal(sharded_target.database), str(raised.value))
    assert raised.value.setting == "database_name"
    assert "\n" not in str(raised.value)
    assert ops.calls == [("error", None, str(raised.value))]
    assert_nothing_read(sharded_target, ops)


def test_schema_refuses_a_sharded_database_before_reading_it(sharded_target, ops):
    with pytest.raises(SourceError, match="^" + refusal(sharded_target.database)):
        connector.schema(configuration_for(sharded_target))

    assert_nothing_read(sharded_target, ops)


def test_the_connection_test_refuses_a_sharded_database_at_its_database_step(sharded_target, ops):
    result = connector.connection_test(configuration_for(sharded_target))

    assert not result.success
    assert re.match("^database failed: " + refusal(sharded_target.database), result.failure), result.failure
    assert_nothing_read(sharded_target, ops)


def test_the_refusal_says_what_is_supported(sharded_target):
    with pytest.raises(SourceError) as raised:
        connector.schema(configuration_for(sharded_target))

    assert "sharded databases are not supported yet" in raised.value.message
    assert "unsharded database" in raised.value.message


@pytest.fixture
def project(tmp_path: Path) -> Path:
    for name in ("connector.py", "requirements.txt"):
        shutil.copy(REPO / name, tmp_path / name)
    return tmp_path


def lines_with(output: str, pattern: str) -> list[str]:
    return [line for line in output.splitlines() if re.search(pattern, line)]


def test_fivetran_debug_refuses_a_sharded_database_in_one_line(sharded_target, project):
    (project / "configuration.json").write_text(json.dumps(configuration_for(sharded_target)))

    completed = run_fivetran(project, "debug", "--configuration", "configuration.json")

    output = completed.stdout + completed.stderr
    assert completed.returncode != 0, output
    assert len(lines_with(output, refusal(sharded_target.database))) == 1, output
    if sharded_target.control is not None:
        assert reads(sharded_target) == 0


def test_fivetran_configuration_test_refuses_a_sharded_database_in_one_line(sharded_target, project):
    (project / "configuration.json").write_text(json.dumps(configuration_for(sharded_target)))

    completed = run_fivetran(project, "configuration", "--test")

    output = completed.stdout + completed.stderr
    assert completed.returncode == 1, output
    assert len(lines_with(output, "database failed: " + refusal(sharded_target.database))) == 1, output
    if sharded_target.control is not None:
        assert reads(sharded_target) == 0


def test_an_unsharded_database_syncs_with_one_request_more(ravendb_target, ravendb_store, standin_control, ops):
    documents.put(ravendb_store, documents.orders(1, 3))
    asked = sum(standin_control.requests("GET", "/databases").values())

    connector.update(configuration_for(ravendb_target), {})

    assert sorted(row["Id"] for _, row in ops.upserts) == ["orders/1-A", "orders/2-A", "orders/3-A"]
    assert sum(standin_control.requests("GET", "/databases").values()) == asked + 1


class DatabaseInfoCommand(RavenCommand):
    """GET /databases?name=, its JSON answer as `result` (None for 404)."""

    def __init__(self, database: str):
        super().__init__(dict)
        self.database = database

    def create_request(self, node) -> requests.Request:
        return requests.Request("GET", f"{node.url}/databases?name={self.database}")

    def set_response(self, response: str | None, from_cache: bool) -> None:
        self.result = json.loads(response) if response else None

    def is_read_request(self) -> bool:
        return True


def database_info(target: RavenTarget, database: str) -> dict | None:
    store = target.store()
    try:
        command = DatabaseInfoCommand(database)
        store.get_request_executor().execute_command(command)
        return command.result
    finally:
        store.close()


def test_the_record_of_a_sharded_database_lists_each_shard_with_its_nodes(sharded_target):
    databases = database_info(sharded_target, sharded_target.database)["Databases"]

    assert [entry["Name"] for entry in databases] == [f"{sharded_target.database}${n}" for n in range(SHARDS)]
    assert all(entry["NodesTopology"]["Members"] for entry in databases)


def test_the_record_of_an_unsharded_database_lists_the_database_alone(ravendb_target):
    databases = database_info(ravendb_target, ravendb_target.database)["Databases"]

    assert [entry["Name"] for entry in databases] == [ravendb_target.database]
    assert {member["NodeTag"] for member in databases[0]["NodesTopology"]["Members"]}


def test_the_record_of_an_unknown_database_is_not_found(ravendb_target):
    assert database_info(ravendb_target, "no_such_database") is None

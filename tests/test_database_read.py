"""Incremental syncs of every collection in one query of the whole database (`from @all_docs`), through update()
and the real ravendb client over HTTPS: few requests and one auto index whatever the number of collections,
exact under writes during the read and after a kill, a collection added between syncs, a state saved per
collection carried over, and a few selected collections read one query each.

Against a real server (RAVENDB_TEST_URLS) the tests that need the test server's control API skip.
"""

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

import connector
from tests import documents
from tests.syncing import (
    configuration_for,
    copy_project,
    database_documents,
    database_rows,
    debug_process,
    query,
    record_streams,
    sync,
    sync_writing_during_a_paused_stream,
    write_configuration,
)

NAMES = [f"Shelf{number:02d}" for number in range(12)]  # more than _PER_COLLECTION_READS: read as a database


def shelves(first: int, last: int, names=NAMES, **fields) -> list[tuple[str, str, dict]]:
    """Documents `first`..`last` of every collection in `names` (ids `shelfNN/<n>`)."""
    return [
        (f"{name.lower()}/{number}", name, {"Name": f"{name} item {number}", "Count": number, **fields})
        for name in names
        for number in range(first, last + 1)
    ]


def landed_as_in_the_database(target, ops, names=NAMES) -> None:
    for name in names:
        assert ops.rows(connector.table_name(name)) == database_rows(target, name), name


def stream_paths(streams) -> list[str]:
    return [stream.result.response.url.split("/databases/")[1].split("/", 1)[1] for stream in streams]


def stream_queries(streams) -> list[str]:
    return [stream._index_query.query for stream in streams if hasattr(stream, "_index_query")]


@pytest.fixture
def every_collection(ravendb_target):
    return configuration_for(ravendb_target)


def test_a_thousand_collections_synced_twice_take_few_requests_and_one_index(
    ravendb_target, standin_control, every_collection, ops
):
    """Each sync is schema() then update(), as Fivetran runs them; the second is past the lookback window."""
    database = ravendb_target.database
    names = [f"Bin{number:04d}" for number in range(1000)]
    for name in names:
        standin_control.generate_orders(database, 10, collection=name)
    every_collection["lookback_seconds"] = "1"
    created_before = standin_control.indexing(database)["AutoIndexesCreated"]
    requests, state = [], {}
    for _ in range(2):
        sent_before = standin_control.database_request_count(database)
        connector.schema(every_collection)
        state = sync(every_collection, ops, state)
        requests.append(standin_control.database_request_count(database) - sent_before)
        time.sleep(1.5)

    assert all(sent <= 10 for sent in requests), requests
    assert standin_control.indexing(database)["AutoIndexesCreated"] - created_before <= 1
    assert len(ops.upserts) == 10_000
    assert all(len(ops.rows(connector.table_name(name))) == 10 for name in names[::97])


def test_every_later_sync_is_one_query_of_the_database(
    ravendb_target, ravendb_store, every_collection, ops, monkeypatch
):
    documents.put(ravendb_store, shelves(1, 5))
    state = sync(every_collection, ops)
    documents.put(ravendb_store, shelves(3, 3, Count=-3) + shelves(6, 6))
    streams = record_streams(monkeypatch)

    sync(every_collection, ops, state)

    assert stream_queries(streams) == [connector._DATABASE_CHANGED_SINCE_RQL]
    assert streams[0].result.response.headers  # the server answered the one stream
    landed_as_in_the_database(ravendb_target, ops)


def test_writes_during_the_read_of_the_database_land_by_the_next_sync(
    ravendb_target, ravendb_store, standin_control, every_collection, ops
):
    """The read of the database pauses after 150 of its 360 documents: updates of documents already read and not
    yet reached, and inserts, are written then. No lookback, and the documents older than the read, so that the
    cursor moves past every document the read could have missed."""
    every_collection["lookback_seconds"] = "0"
    documents.put(ravendb_store, shelves(1, 30))
    state = sync(every_collection, ops)
    documents.put(ravendb_store, shelves(1, 30, Round=2))  # the next sync reads every document again
    time.sleep(1.1)  # the server's Date header has whole seconds

    def write() -> None:
        documents.put(ravendb_store, shelves(1, 3, Count=-1) + shelves(28, 30, Count=-2) + shelves(31, 32))

    state = sync_writing_during_a_paused_stream(
        every_collection, ops, standin_control, ravendb_target.database, 150, write, state
    )
    sync(every_collection, ops, state)

    landed_as_in_the_database(ravendb_target, ops)


def test_a_collection_added_between_syncs_lands_whole_and_joins_the_read_of_the_database(
    ravendb_target, ravendb_store, every_collection, ops, monkeypatch
):
    documents.put(ravendb_store, shelves(1, 5))
    state = sync(every_collection, ops)
    documents.put(ravendb_store, shelves(1, 20, names=["Crate"]) + shelves(2, 2, Count=-2))

    state = sync(every_collection, ops, state)
    streams = record_streams(monkeypatch)
    documents.put(ravendb_store, shelves(21, 21, names=["Crate"]))
    sync(every_collection, ops, state)

    assert "Crate" in state["database"]["collections"] and state["cursors"] == {}
    assert stream_queries(streams) == [connector._DATABASE_CHANGED_SINCE_RQL]
    landed_as_in_the_database(ravendb_target, ops, [*NAMES, "Crate"])


def test_a_state_saved_with_a_cursor_per_collection_carries_over_with_nothing_missed_or_landed_again(
    ravendb_target, ravendb_store, every_collection, ops
):
    """A state as version 2 saved it, after a sync that landed every document: each collection's cursor at one of
    its documents (an idle collection's long ago), the versions of the documents at or after it. The next sync
    lands exactly what changed since, and then reads the database in one query."""
    documents.put(ravendb_store, shelves(1, 5))
    landed = {name: database_documents(ravendb_target, name) for name in NAMES}
    for name, found in landed.items():  # what that sync landed
        for document in found:
            ops.upsert(connector.table_name(name), connector.flatten(document))
    cursors, versions = {}, {}
    for index, (name, found) in enumerate(landed.items()):
        newest_first = sorted(found, key=lambda document: document["@metadata"]["@last-modified"], reverse=True)
        at = newest_first[index % 3]["@metadata"]  # the newest, the second or the third newest
        cursors[name] = at["@last-modified"]
        versions[name] = {
            meta["@id"]: [meta["@last-modified"], meta["@change-vector"]]
            for meta in (document["@metadata"] for document in found)
            if meta["@last-modified"] >= at["@last-modified"]
        }
    saved = {"version": 2, "cursors": cursors, "synced_versions": versions}
    documents.put(ravendb_store, shelves(2, 2, Count=-2) + shelves(6, 6))
    changed = {f"{name.lower()}/{number}" for name in NAMES for number in (2, 6)}

    before = len(ops.calls)
    state = sync(every_collection, ops, saved)
    upserted = [data["Id"] for kind, _, data in ops.calls[before:] if kind == "upsert"]
    later = sync(every_collection, ops, state)

    assert sorted(upserted) == sorted(changed)
    assert state["version"] == 3 and sorted(state["database"]["collections"]) == NAMES
    assert later["cursors"] == {}
    landed_as_in_the_database(ravendb_target, ops)


@pytest.mark.parametrize("listed", [2, 11], ids=["two-listed-one-query-each", "eleven-listed-one-query-of-all"])
def test_only_the_selected_collections_land(ravendb_target, ravendb_store, ops, monkeypatch, listed):
    selected = NAMES[:listed]
    configuration = configuration_for(ravendb_target, collection_name=",".join(selected))
    documents.put(ravendb_store, [*shelves(1, 3), ("raven/hilo/shelf00", "@hilo", {"Max": 32})])
    state = sync(configuration, ops)
    documents.put(ravendb_store, shelves(2, 2, Count=-2) + shelves(4, 4))
    streams = record_streams(monkeypatch)

    sync(configuration, ops, state)

    if listed <= connector._PER_COLLECTION_READS:
        expected = [connector._CHANGED_SINCE_RQL.format(collection=name) for name in selected]
    else:
        expected = [connector._DATABASE_CHANGED_SINCE_RQL]
    assert stream_queries(streams) == expected
    assert {table for table, _ in ops.upserts} == {connector.table_name(name) for name in selected}
    landed_as_in_the_database(ravendb_target, ops, selected)


# kill -9 during the read of the database under `fivetran debug`, then the next run: the warehouse holds exactly
# the database.

KILL_COLLECTIONS = [f"Rack{number:02d}" for number in range(20)]
KILL_CHANGES = 150  # per collection, written between the first sync and the killed one: 3 checkpoints in all


def debug_run(project: Path, configuration_path: Path, log: Path) -> subprocess.Popen:
    with log.open("w") as output:
        return debug_process(project, configuration_path, project / "tmp", output)


def warehouse(project: Path, collection: str) -> tuple[set[str], int]:
    """(ids, duplicate ids) of a collection's table in the project's DuckDB file (`Rack00` lands as `rack_00`)."""
    tables = [row[0] for row in query(project, "select table_name from information_schema.tables")]
    (table,) = [name for name in tables if name.replace("_", "") == collection.lower()]
    ids = [row[0] for row in query(project, f'select cast(id as varchar) from tester."{table}"')]
    return set(ids), len(ids) - len(set(ids))


def test_a_sync_killed_during_the_read_of_the_database_resumes_to_exactly_the_database(
    ravendb_target, ravendb_store, standin_control, tmp_path
):
    database = ravendb_target.database
    for name in KILL_COLLECTIONS:
        standin_control.generate_orders(database, 10, collection=name, start=1)
    project = copy_project(tmp_path / "project")
    (project / "tmp").mkdir()
    configuration_path = write_configuration(
        tmp_path / "configuration.json", configuration_for(ravendb_target, lookback_seconds="1")
    )
    first = debug_run(project, configuration_path, tmp_path / "first.log")
    assert first.wait(timeout=180) == 0, (tmp_path / "first.log").read_text()[-3000:]
    for name in KILL_COLLECTIONS:  # 3,000 changes: 10 updates and 140 inserts per collection
        standin_control.generate_orders(database, KILL_CHANGES, collection=name, start=1)
    time.sleep(1.5)
    standin_control.throttle_streams(database, docs=100, every_ms=100)  # about 3 s of reading, a checkpoint a second
    killed_log = tmp_path / "killed.log"
    killed = debug_run(project, configuration_path, killed_log)
    delay = random.Random(7).uniform(0.2, 0.8)  # before the 2nd checkpoint
    deadline = time.monotonic() + 120
    while "checkpoint recorded" not in killed_log.read_text(errors="replace"):
        assert killed.poll() is None, killed_log.read_text()[-3000:]
        assert time.monotonic() < deadline, "the sync never checkpointed"
        time.sleep(0.02)
    time.sleep(delay)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    saved = json.loads((project / "files" / "state.json").read_text())
    rows_at_kill = sum(len(warehouse(project, name)[0]) for name in KILL_COLLECTIONS)
    standin_control.throttle_streams(database, docs=0, every_ms=0)

    resumed = debug_run(project, configuration_path, tmp_path / "resumed.log")
    assert resumed.wait(timeout=180) == 0, (tmp_path / "resumed.log").read_text()[-3000:]

    assert "database" in saved and rows_at_kill < len(KILL_COLLECTIONS) * KILL_CHANGES  # killed mid-read
    for name in KILL_COLLECTIONS:
        ids, duplicates = warehouse(project, name)
        expected = {document["@metadata"]["@id"] for document in database_documents(ravendb_target, name)}
        assert duplicates == 0 and ids == expected, name

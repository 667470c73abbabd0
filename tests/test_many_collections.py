"""A first sync of many small collections, through update() and the real ravendb client over HTTPS: one read of the
whole database instead of one query per collection, exact even while the database is written to.

Against a real server (RAVENDB_TEST_URLS) the tests that need the test server's control API skip.
"""

import time

import pytest

import connector
from tests import documents
from tests.syncing import configuration_for, database_rows, record_streams, sync, sync_writing_during_a_paused_stream

NAMES = [f"Shelf{number:02d}" for number in range(12)]


def shelves(first: int, last: int, **fields) -> list[tuple[str, str, dict]]:
    """Documents `first`..`last` of every collection in NAMES (ids `shelfNN/<n>`)."""
    return [
        (f"{name.lower()}/{number}", name, {"Name": f"{name} item {number}", "Count": number, **fields})
        for name in NAMES
        for number in range(first, last + 1)
    ]


def landed_as_in_the_database(target, ops) -> None:
    for name in NAMES:
        assert ops.rows(connector.table_name(name)) == database_rows(target, name), name


@pytest.fixture
def every_shelf(ravendb_target):
    return configuration_for(ravendb_target, collection_name=",".join(NAMES))


def test_new_small_collections_land_whole_from_one_read_of_the_database(
    ravendb_target, ravendb_store, every_shelf, ops, monkeypatch
):
    documents.put(ravendb_store, shelves(1, 30))
    streams = record_streams(monkeypatch)

    sync(every_shelf, ops)

    assert [stream.result.response.url.split("/databases/")[1].split("/", 1)[1] for stream in streams] == [
        "streams/docs?format=jsonl"
    ]
    landed_as_in_the_database(ravendb_target, ops)


def test_writes_during_the_read_of_new_collections_land_by_the_next_sync(
    ravendb_target, ravendb_store, standin_control, every_shelf, ops
):
    """Written while the read is paused after 150 of 360 documents, on a server that renews its read transaction
    every 50 documents: updates of documents already read and not yet reached, and inserts. No lookback, and the
    documents older than the read, so that the cursors move past every document the read could have missed
    (a collection query, resumed by position, skips one unchanged document per update of one already read)."""
    every_shelf["lookback_seconds"] = "0"
    documents.put(ravendb_store, shelves(1, 30))
    time.sleep(1.1)  # the server's Date header has whole seconds
    standin_control.set_read_pulse(ravendb_target.database, every_docs=50)

    def write() -> None:
        documents.put(ravendb_store, shelves(1, 3, Count=-1) + shelves(28, 30, Count=-2) + shelves(31, 32))

    state = sync_writing_during_a_paused_stream(every_shelf, ops, standin_control, ravendb_target.database, 150, write)
    sync(every_shelf, ops, state)

    landed_as_in_the_database(ravendb_target, ops)

"""Incremental sync stays exact against a server that behaves as RavenDB does (issue 12): an index read as a
snapshot that returns each document's current version at its indexed place, writes during a long stream, a
lagging index, nodes with their own storage and delayed replication, a node killed mid-stream, an Error line
mid-stream, an auto index being built.

Each test goes through update() and the real ravendb client over HTTPS against the test server, and ends the same
way: after the writes stop and one more sync runs, the destination equals the database id by id, field by field,
and no sync failed. Each docstring says how the connector as it was before this issue (c83cd29) failed it.
"""

import itertools
import time

import pytest

import connector
from tests import documents
from tests.documents import orders
from tests.syncing import configuration_for, database_rows, sync


@pytest.fixture
def configuration(ravendb_target) -> dict[str, str]:
    return configuration_for(ravendb_target, collection_name="Orders")


@pytest.fixture
def no_backoff(monkeypatch):
    """Retries resume at once: the tests count attempts, not seconds."""
    monkeypatch.setattr(connector, "_BACKOFF_FIRST_SECONDS", 0.0)


def warm_index(store) -> None:
    """Build the connector's auto index over what exists now, as an earlier reader would have."""
    with store.open_session() as session:
        query = session.advanced.raw_query(connector.changed_since_query("Orders", connector._BEGINNING_OF_TIME).query)
        list(query.add_parameter("since", connector._BEGINNING_OF_TIME).wait_for_non_stale_results().take(0))


def after_writes_stop(target, configuration, ops, state) -> None:
    """One more sync once the writes have stopped, then the destination is the database, id by id, field by field."""
    sync(configuration, ops, state)
    assert ops.rows("Orders") == database_rows(target, "Orders")


def test_a_lagging_index_with_updates_lands_every_document_without_a_failed_sync(
    ravendb_target, ravendb_store, standin_control, configuration, ops
):
    """Before: the updated documents came back at their old places with their new @last-modified, and the first
    older one after them failed the sync ("out of @last-modified order")."""
    documents.put(ravendb_store, orders(1, 300))
    warm_index(ravendb_store)
    standin_control.set_indexing(ravendb_target.database, lag_ms=1500)
    documents.put(ravendb_store, orders(1, 50, Freight=7.5) + orders(301, 20))

    state = sync(configuration, ops)
    standin_control.resume_indexing(ravendb_target.database)

    after_writes_stop(ravendb_target, configuration, ops, state)
    assert ops.rows("Orders")["orders/1-A"]["Freight"] == "7.5"
    assert len(ops.rows("Orders")) == 320


def test_a_node_killed_mid_stream_is_failed_over_without_a_failed_sync(
    ravendb_target, standin_control, configuration, ops, monkeypatch, logs, no_backoff
):
    """Before: the retry after the broken stream went to whichever node the client rotated to, possibly the dead
    one, and a sync could end failed (tests/test_reliability.py allowed it)."""
    standin_control.generate_orders(ravendb_target.database, 20_000)
    streams, upserted, stopped = [], itertools.count(1), []
    real_upsert = ops.upsert

    class RecordedStreamCommand(connector.QueryStreamCommand):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            streams.append(self)

    def kill_the_serving_node(table, data):
        real_upsert(table, data)
        if next(upserted) == 1200:
            url = streams[-1].result.response.url
            stopped.append(next(node["Tag"] for node in standin_control.nodes() if url.startswith(node["Url"])))
            standin_control.stop_node(stopped[-1])

    monkeypatch.setattr(connector, "QueryStreamCommand", RecordedStreamCommand)
    monkeypatch.setattr(ops, "upsert", kill_the_serving_node)
    state = sync(configuration, ops)
    monkeypatch.setattr(ops, "upsert", real_upsert)

    assert stopped and any("resuming from the cursor" in line for line in logs.messages("WARNING"))
    after_writes_stop(ravendb_target, configuration, ops, state)
    assert len(ops.rows("Orders")) == 20_000


def test_writes_right_before_a_sync_land_by_the_next_one_and_none_lands_twice(
    ravendb_target, ravendb_store, configuration, ops
):
    """The lookback re-reads recent documents; their versions are kept, so an unchanged one is not upserted again."""
    documents.put(ravendb_store, orders(1, 40))
    state = sync(configuration, ops)
    first = len(ops.upserts)
    time.sleep(0.01)

    state = sync(configuration, ops, state)

    assert first == 40 and len(ops.upserts) == 40
    after_writes_stop(ravendb_target, configuration, ops, state)

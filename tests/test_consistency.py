"""Incremental sync stays exact against a server that behaves as RavenDB does: an index read as a
snapshot that returns each document's current version at its indexed place, writes during a long stream, a
lagging index, nodes with their own storage and delayed replication, a node killed mid-stream, an Error line
mid-stream, an auto index being built.

Each test goes through update() and the real ravendb client over HTTPS against the test server, and ends the same
way: after the writes stop and one more sync runs, the destination equals the database id by id, field by field,
and no sync failed. Each docstring says what the server does that a naive cursor gets wrong.
"""

import itertools

import pytest
from ravendb import DocumentStore

import connector
from connector import SourceError
from tests import documents
from tests.documents import orders
from tests.syncing import configuration_for, database_rows, record_streams, sync, sync_writing_during_a_paused_stream


def node_store(target, tag: str) -> DocumentStore:
    """A store that writes to one node only: no topology updates, so the client never moves to another node."""
    store = DocumentStore([target.urls[ord(tag) - ord("A")]], target.database)
    store.conventions.disable_topology_updates = True
    store.certificate_pem_path, store.trust_store_path = target.client_pem, target.ca_pem
    store.initialize()
    return store


@pytest.fixture
def on_node(ravendb_target):
    stores: dict[str, DocumentStore] = {}

    def get(tag: str) -> DocumentStore:
        if tag not in stores:
            stores[tag] = node_store(ravendb_target, tag)
        return stores[tag]

    yield get
    for store in stores.values():
        store.close()


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
    """The lagging index returns updated documents at their old places with their new @last-modified, so the
    stream is out of @last-modified order; the sync takes that order as it comes."""
    documents.put(ravendb_store, orders(1, 300))
    warm_index(ravendb_store)
    standin_control.set_indexing(ravendb_target.database, lag_ms=1500)
    documents.put(ravendb_store, orders(1, 50, Freight=7.5) + orders(301, 20))

    state = sync(configuration, ops)
    standin_control.resume_indexing(ravendb_target.database)

    after_writes_stop(ravendb_target, configuration, ops, state)
    assert ops.rows("Orders")["orders/1-A"]["Freight"] == "7.5"
    assert len(ops.rows("Orders")) == 320


def test_writes_right_before_a_sync_land_by_the_next_one_and_none_lands_twice(
    ravendb_target, ravendb_store, configuration, ops
):
    """The lookback re-reads recent documents; their versions are kept, so an unchanged one is not upserted again."""
    documents.put(ravendb_store, orders(1, 40))
    state = sync(configuration, ops)
    first = len(ops.upserts)

    state = sync(configuration, ops, state)

    assert first == 40 and len(ops.upserts) == 40
    after_writes_stop(ravendb_target, configuration, ops, state)


def test_writes_during_a_long_stream_land_without_a_failed_sync(
    ravendb_target, standin_control, on_node, configuration, ops
):
    """Writes while the stream is paused after 1,000 of 3,000 documents: updates of documents already sent and not
    yet reached, and inserts. An updated document not yet reached comes back at its old place with its new
    @last-modified, out of order with the next one."""
    node_a = on_node("A")
    documents.put(node_a, orders(1, 3000))
    warm_index(node_a)

    def write() -> None:
        documents.put(node_a, orders(10, 10, Freight=1.5) + orders(2000, 10, Freight=2.5) + orders(5001, 20))

    state = sync_writing_during_a_paused_stream(
        configuration, ops, standin_control, ravendb_target.database, 1000, write
    )

    after_writes_stop(ravendb_target, configuration, ops, state)
    assert ops.rows("Orders")["orders/2005-A"]["Freight"] == "2.5"
    assert len(ops.rows("Orders")) == 3020


def test_writes_on_two_nodes_with_replication_delayed_beyond_a_sync_land_by_the_sync_after_it(
    ravendb_target, standin_control, on_node, configuration, ops
):
    """Each node holds a write the other has not received when the first sync reads one of them. The other
    node's write arrives later with its origin's @last-modified, older than the newest write of the node read."""
    documents.put(on_node("A"), orders(1, 20))
    standin_control.pause_replication(ravendb_target.database)
    documents.put(on_node("B"), orders(101, 1, Origin="B, first"))
    documents.put(on_node("A"), orders(102, 1, Origin="A, second"))
    documents.put(on_node("B"), orders(103, 1, Origin="B, third"))

    state = sync(configuration, ops)
    standin_control.flush_replication(ravendb_target.database)
    standin_control.resume_replication(ravendb_target.database)

    after_writes_stop(ravendb_target, configuration, ops, state)
    assert {"orders/101-A", "orders/102-A", "orders/103-A"} <= set(ops.rows("Orders"))


def test_a_node_killed_mid_stream_with_writes_it_had_not_replicated_yet_loses_nothing(
    ravendb_target, standin_control, on_node, configuration, ops, monkeypatch, logs, no_backoff
):
    """The node read dies mid-stream; the retry reads the other node, which lacks writes the dead one made but has
    one of its own, older than them, not yet replicated. A cursor taken from the dead node's newest writes would
    pass that older write."""
    standin_control.generate_orders(ravendb_target.database, 5_000)
    standin_control.set_replication(ravendb_target.database, delay_ms=600_000)
    documents.put(on_node("B"), orders(6001, 1, Origin="B"))
    documents.put(on_node("A"), orders(6002, 30, Origin="A"))
    streams, upserted, stopped = record_streams(monkeypatch), itertools.count(1), []
    real_upsert = ops.upsert

    def kill_the_serving_node(table, data):
        real_upsert(table, data)
        if next(upserted) == 1200:  # the server has sent 1,200 results and holds the rest
            standin_control.wait_stream_paused(ravendb_target.database)
            url = streams[-1].result.response.url
            stopped.append(next(node["Tag"] for node in standin_control.nodes() if url.startswith(node["Url"])))
            standin_control.stop_node(stopped[-1])
            standin_control.release_stream(ravendb_target.database)

    monkeypatch.setattr(ops, "upsert", kill_the_serving_node)
    standin_control.pause_stream(ravendb_target.database, after=1200)
    state = sync(configuration, ops)
    monkeypatch.setattr(ops, "upsert", real_upsert)
    standin_control.flush_replication(ravendb_target.database)

    assert stopped and any("resuming from the cursor" in line for line in logs.messages("WARNING"))
    after_writes_stop(ravendb_target, configuration, ops, state)
    assert len(ops.rows("Orders")) == 5_031


def test_an_error_line_mid_stream_is_retried_and_lands_every_document(
    ravendb_target, standin_control, configuration, ops, logs, no_backoff
):
    """The server breaks the stream off with an Error line (the client's parser raises a plain RuntimeError); the
    sync retries from its cursor."""
    standin_control.generate_orders(ravendb_target.database, 3_000)
    standin_control.fail_streams(ravendb_target.database, after=1500, times=1)

    state = sync(configuration, ops)

    assert any("resuming from the cursor" in line for line in logs.messages("WARNING"))
    after_writes_stop(ravendb_target, configuration, ops, state)
    assert len(ops.rows("Orders")) == 3_000


def test_an_error_line_on_every_attempt_fails_the_sync_in_one_line(
    ravendb_target, standin_control, configuration, ops, no_backoff
):
    standin_control.generate_orders(ravendb_target.database, 100)
    standin_control.fail_streams(ravendb_target.database, after=10, times=-1)

    with pytest.raises(SourceError) as raised:
        sync(configuration, ops)

    assert "\n" not in str(raised.value)
    assert str(raised.value).startswith("ravendb_urls: RavenDB broke off a stream")
    assert str(raised.value).endswith("(Orders: gave up after 5 attempts)")


def test_the_first_sync_of_a_collection_whose_auto_index_is_being_built_lands_everything_and_logs_progress(
    ravendb_target, standin_control, on_node, configuration, ops, logs, monkeypatch
):
    """The stream that creates the index answers stale after its wait, with the part built so far, while
    documents it covered are updated. The sync logs progress while it waits for the index."""
    monkeypatch.setattr(connector, "_INDEX_WAIT_SLICE_SECONDS", 0.5)
    documents.put(on_node("A"), orders(1, 2000))
    standin_control.set_indexing(ravendb_target.database, build_s=3, new_index_wait_s=0.3)
    real_upsert, updated = ops.upsert, []

    def update_covered_documents_once(table, data):
        if not updated:
            updated.append(True)
            documents.put(on_node("A"), orders(1, 5, Freight=3.5))
        real_upsert(table, data)

    monkeypatch.setattr(ops, "upsert", update_covered_documents_once)
    state = sync(configuration, ops)
    monkeypatch.setattr(ops, "upsert", real_upsert)

    assert any("waiting for RavenDB's index" in line for line in logs.messages("INFO"))
    after_writes_stop(ravendb_target, configuration, ops, state)
    assert len(ops.rows("Orders")) == 2000


def test_a_server_refusing_dynamic_queries_fails_in_one_line_naming_the_setting_to_change(
    ravendb_target, ravendb_store, standin_control, configuration, ops
):
    documents.put(ravendb_store, orders(1, 3))
    standin_control.set_indexing(ravendb_target.database, dynamic_queries_disabled=True)

    with pytest.raises(SourceError) as raised:
        sync(configuration, ops)

    assert "\n" not in str(raised.value)
    assert "Indexing.DisableQueryOptimizerGeneratedIndexes" in str(raised.value)
    assert str(raised.value).endswith("set it to false")


def test_every_stream_of_a_sync_reads_one_node(ravendb_target, ravendb_store, ops, monkeypatch):
    """Each node has its own storage and indexes, so one sync reads one node, where the client left to itself
    spreads the requests of one sync over every node (wire facts, pitfall 8)."""
    names = ["Alpha", "Beta", "Gamma", "Delta"]
    documents.put(ravendb_store, [(f"{name.lower()}/1", name, {"N": 1}) for name in names])
    streams = record_streams(monkeypatch)
    configuration = configuration_for(ravendb_target, collection_name=",".join(names))
    state = sync(configuration, ops)  # new collections: one read of the database
    documents.put(ravendb_store, [(f"{name.lower()}/2", name, {"N": 2}) for name in names])

    sync(configuration, ops, state)  # read again: the documents are younger than the lookback

    assert len(streams) >= 2
    assert len({stream.result.response.url.split("/databases/")[0] for stream in streams}) == 1


def test_a_write_from_a_node_whose_clock_is_behind_lands_by_the_next_sync(
    ravendb_target, standin_control, on_node, configuration, ops
):
    """Node B's clock is 10 s behind; its write reaches the node read at once, with a @last-modified older than
    documents that node had already synced, behind the cursor."""
    standin_control.set_clock_skew("B", -10_000)
    documents.put(on_node("A"), orders(1, 20))
    state = sync(configuration, ops)
    documents.put(on_node("B"), orders(21, 1, Origin="B"))

    after_writes_stop(ravendb_target, configuration, ops, state)
    assert ops.rows("Orders")["orders/21-A"]["Origin"] == "B"


@pytest.mark.parametrize("include_archived", [False, True], ids=["default", "include-archived"])
def test_archived_documents_sync_once_auto_indexes_include_them(
    ravendb_target, ravendb_store, standin_control, configuration, ops, include_archived
):
    """README, "Auto indexes and archived documents": left out by default, synced with IncludeArchived."""
    standin_control.set_indexing(ravendb_target.database, include_archived=include_archived)
    documents.put_archived_orders(ravendb_store)

    sync(configuration, ops)

    assert set(ops.rows("Orders")) == (
        {"orders/1-A", "orders/2-A", "orders/3-A"} if include_archived else {"orders/1-A", "orders/3-A"}
    )

"""The connector stays exact where RavenDB is less kind than an idealised server (issue 23): a node clock set back,
a write that commits after its timestamp, auto indexes that lag behind writes, a node whose clock runs ahead, a
revisions bin cleaned before a sync reads it, a delete that leaves no bin entry, conflicts kept or resolved, and
reconciliation while RavenDB renews the read transaction of a stream over compressed documents.

Each test first shows the server behaviour through the real client, then syncs through update() over HTTPS and
ends with the destination equal to the database id by id, field by field (or the documented exception). On a
real server (RAVENDB_TEST_URLS) the parts that need the stand-in's control API skip.
"""

import threading
import time
from datetime import timedelta
from email.utils import parsedate_to_datetime

import pytest
import requests
from ravendb import DocumentStore
from ravendb.exceptions.documents import DocumentConflictException
from ravendb.serverwide.misc import DocumentsCompressionConfiguration
from ravendb.serverwide.operations.documents_compression import UpdateDocumentsCompressionConfigurationOperation

import connector
from tests import documents
from tests.documents import orders
from tests.syncing import configuration_for, database_documents, database_rows, sync


def last_modified(store: DocumentStore, doc_id: str) -> str:
    with store.open_session() as session:
        return session.advanced.get_metadata_for(session.load(doc_id, dict))["@last-modified"]


def metadata_of(store: DocumentStore, doc_id: str) -> dict:
    with store.open_session() as session:
        return dict(session.advanced.get_metadata_for(session.load(doc_id, dict)))


def lands_exactly(target, configuration, ops, state) -> dict:
    """One more sync once the writes have stopped; then the destination is the database, id by id."""
    state = sync(configuration, ops, state)
    assert ops.rows("Orders") == database_rows(target, "Orders")
    return state


def enable_revisions(store: DocumentStore, keep: int | None) -> None:
    from ravendb import ConfigureRevisionsOperation, RevisionsCollectionConfiguration, RevisionsConfiguration

    store.maintenance.send(
        ConfigureRevisionsOperation(
            RevisionsConfiguration(default_config=RevisionsCollectionConfiguration(minimum_revisions_to_keep=keep))
        )
    )


def revisions_bin(store: DocumentStore) -> list[dict]:
    from ravendb.documents.commands.revisions import GetRevisionsBinEntryCommand

    command = GetRevisionsBinEntryCommand(0, 1024)
    store.get_request_executor().execute_command(command)
    return command.result.results


def test_a_node_clock_set_back_by_less_than_the_lookback_loses_nothing(
    ravendb_target, standin_control, on_node, configuration, ops
):
    """Node A's clock is set back 5 s after a sync (time synchronisation correcting a clock that ran ahead): its
    next writes carry @last-modified older than documents already synced. The lookback (60 s) keeps the cursor
    behind them. Without it (lookback_seconds 0) the cursor passes them and they never land."""
    documents.put(on_node("A"), orders(1, 20))
    time.sleep(1.1)  # the Date header has whole seconds: the synced documents are then behind the server's clock
    state = sync(configuration, ops)
    standin_control.step_clock_back("A", 5_000)
    documents.put(on_node("A"), orders(21, 5, Origin="after the step"))

    assert last_modified(on_node("A"), "orders/21-A") < last_modified(on_node("A"), "orders/20-A")
    lands_exactly(ravendb_target, configuration, ops, state)
    assert ops.rows("Orders")["orders/21-A"]["Origin"] == "after the step"


def test_a_write_that_commits_after_a_sync_read_past_its_timestamp_lands(
    ravendb_target, ravendb_store, standin_control, configuration, ops
):
    """A large transaction reads the clock, then commits 3 s later; a small one commits meanwhile. A sync in
    between sees only the small one, whose @last-modified is newer than the large one's. The lookback keeps the
    cursor behind the large one; without it, it never lands."""
    database = ravendb_target.database
    documents.put(ravendb_store, orders(1, 10))
    standin_control.set_commit_latency(database, 3_000)
    slow = threading.Thread(target=documents.put, args=(ravendb_store, orders(100, 50, Batch="slow")))
    slow.start()
    time.sleep(0.3)
    standin_control.set_commit_latency(database, 0)
    documents.put(ravendb_store, orders(200, 1, Batch="fast"))
    time.sleep(1.1)

    state = sync(configuration, ops)
    slow.join()

    assert "orders/100-A" not in ops.rows("Orders")
    assert last_modified(ravendb_store, "orders/100-A") < last_modified(ravendb_store, "orders/200-A")
    lands_exactly(ravendb_target, configuration, ops, state)
    assert len(ops.rows("Orders")) == 61


def test_auto_indexes_lag_behind_writes_and_a_sync_right_after_writes_waits_for_them(
    ravendb_target, ravendb_store, standin_control, configuration, ops
):
    """Auto indexes are asynchronous (on by default: 20 ms behind the writes; 1.5 s here, to see it). A query
    right after a write is stale; the sync waits for the index and lands every document in one sync. Without that
    wait it lands only what the index covered."""
    assert standin_control.set_indexing(ravendb_target.database)["LagMs"] == 20
    standin_control.set_indexing(ravendb_target.database, lag_ms=1_500)
    documents.put(ravendb_store, orders(1, 5))
    with ravendb_store.open_session() as session:
        query = session.advanced.raw_query(connector._CHANGED_SINCE_RQL.format(collection="Orders"), dict)
        list(query.add_parameter("since", connector._BEGINNING_OF_TIME).wait_for_non_stale_results())
    documents.put(ravendb_store, orders(6, 300))
    with ravendb_store.open_session() as session:
        query = session.advanced.raw_query(connector._CHANGED_SINCE_RQL.format(collection="Orders"), dict)
        stats = []
        list(query.add_parameter("since", connector._BEGINNING_OF_TIME).statistics(stats.append))
    assert stats[0].is_stale is True

    documents.put(ravendb_store, orders(400, 30))
    sync(configuration, ops)

    assert ops.rows("Orders") == database_rows(ravendb_target, "Orders")


def test_the_date_header_is_the_node_clock(ravendb_target, standin_control):
    """A node sends its own clock's time in `Date`, on every response."""
    standin_control.set_clock_skew("B", 30_000)
    dates = []
    for url in ravendb_target.urls[:2]:
        response = requests.get(
            f"{url}/databases/{ravendb_target.database}/stats",
            cert=ravendb_target.client_pem,
            verify=ravendb_target.ca_pem,
            timeout=10,
        )
        dates.append(parsedate_to_datetime(response.headers["Date"]))
    assert 29 <= (dates[1] - dates[0]).total_seconds() <= 31


def test_a_frozen_clock_stamps_the_date_header_with_the_moment_it_stamps_writes(
    ravendb_target, ravendb_store, standin_control
):
    """One clock stamps a node's writes and its `Date` header, as on RavenDB (both read the system clock): frozen,
    a response sent a second later still carries the frozen moment, never a time past the writes it stamps."""
    standin_control.freeze_clock(True)
    try:
        documents.put(ravendb_store, orders(1, 1))
        time.sleep(1.1)
        response = requests.get(
            f"{ravendb_target.urls[0]}/databases/{ravendb_target.database}/stats",
            cert=ravendb_target.client_pem,
            verify=ravendb_target.ca_pem,
            timeout=10,
        )
    finally:
        standin_control.freeze_clock(False)
    (document,) = database_documents(ravendb_target, "Orders")
    stamped = connector.parse_last_modified(document["@metadata"]["@last-modified"])
    sent = parsedate_to_datetime(response.headers["Date"])
    assert sent <= stamped < sent + timedelta(seconds=1)


def test_a_node_whose_clock_runs_ahead_by_less_than_the_lookback_loses_nothing(
    ravendb_target, standin_control, on_node, configuration, ops
):
    """Node B's clock runs 5 s ahead: its writes and its Date header both. The sync reads node B (A is down),
    whose bound is 5 s ahead; a write from node A that reaches B after the sync is older than B's own writes. The
    lookback covers the skew; without it, that write never lands."""
    database = ravendb_target.database
    standin_control.set_clock_skew("B", 5_000)
    standin_control.set_replication(database, delay_ms=4_000)
    documents.put(on_node("B"), orders(1, 20, Origin="B"))
    documents.put(on_node("A"), orders(21, 1, Origin="A"))
    time.sleep(1.2)
    standin_control.stop_node("A")

    state = sync(configuration, ops)
    standin_control.start_node("A")
    standin_control.flush_replication(database)

    assert "orders/21-A" not in ops.rows("Orders")
    lands_exactly(ravendb_target, configuration, ops, state)
    assert ops.rows("Orders")["orders/21-A"]["Origin"] == "A"


@pytest.mark.parametrize("cause", ["bin-cleaner", "minimum-revisions-to-keep-0"])
def test_deletes_that_leave_no_bin_entry_are_caught_by_reconciliation(
    ravendb_target, ravendb_store, standin_control, ops, logs, cause
):
    """The revisions bin cleaner removes entries past their age, and with MinimumRevisionsToKeep = 0 a delete
    trims its own delete revision: either way the bin no longer lists a delete. The sync logs it (bin cleaner) and
    reconcile_deletes_hours marks the row deleted; without reconciliation the row stays live."""
    enable_revisions(ravendb_store, keep=0 if cause == "minimum-revisions-to-keep-0" else 5)
    configuration = configuration_for(ravendb_target, collection_name="Orders", reconcile_deletes_hours="24")
    documents.put(ravendb_store, orders(1, 10))
    documents.delete(ravendb_store, ["orders/1-A"])
    state = sync(configuration, ops)
    documents.delete(ravendb_store, ["orders/2-A", "orders/3-A"])
    if cause == "bin-cleaner":
        assert {entry["@metadata"]["@flags"] for entry in revisions_bin(ravendb_store)} == {
            "HasRevisions, DeleteRevision"
        }
        standin_control.clean_revisions_bin(ravendb_target.database, older_than_s=0)
    assert revisions_bin(ravendb_store) == []
    state["reconciled_at"]["Orders"] = "2000-01-01T00:00:00+00:00"  # the interval has passed

    state = sync(configuration, ops, state)

    if cause == "bin-cleaner":
        assert any("reconcile_deletes_hours catches them" in line for line in logs.messages("WARNING"))
    assert not {"orders/2-A", "orders/3-A"} & set(ops.rows("Orders"))
    assert ops.rows("Orders") == database_rows(ravendb_target, "Orders")


def test_a_kept_conflict_hides_its_document_without_failing_the_sync_until_a_write_resolves_it(
    ravendb_target, standin_control, on_node, configuration, ops
):
    """With ResolveToLatest = false RavenDB keeps a conflict: the document leaves queries and streams, and a load
    by id answers 409. The sync lands every other document; the conflicted one keeps the row of its last synced
    version (the documented exception) until a write resolves the conflict, whose version then lands."""
    database = ravendb_target.database
    standin_control.set_conflict_solver(database, resolve_to_latest=False)
    documents.put(on_node("A"), orders(1, 10))
    state = sync(configuration, ops)
    standin_control.pause_replication(database)
    documents.put(on_node("A"), orders(5, 1, Freight=1.5))
    documents.put(on_node("B"), orders(5, 1, Freight=2.5))
    documents.put(on_node("A"), orders(11, 5))
    standin_control.flush_replication(database)
    standin_control.resume_replication(database)
    with pytest.raises(DocumentConflictException), on_node("A").open_session() as session:
        session.load("orders/5-A", dict)

    state = sync(configuration, ops, state)

    live = database_rows(ravendb_target, "Orders")
    assert "orders/5-A" not in live and set(live) | {"orders/5-A"} == set(ops.rows("Orders"))
    assert {key: row for key, row in ops.rows("Orders").items() if key != "orders/5-A"} == live
    assert ops.rows("Orders")["orders/5-A"]["Freight"] == "6.85"  # the version synced before the conflict

    documents.put(on_node("A"), orders(5, 1, Freight=3.5))  # a write resolves the conflict
    assert metadata_of(on_node("A"), "orders/5-A")["@flags"] == "HasRevisions, Resolved"
    lands_exactly(ravendb_target, configuration, ops, state)
    assert ops.rows("Orders")["orders/5-A"]["Freight"] == "3.5"


def test_a_resolved_conflict_lands_as_a_new_version(ravendb_target, standin_control, on_node, configuration, ops):
    """By default RavenDB resolves a conflict to the latest version and writes it again: a new @last-modified
    (the resolving node's clock), a new change vector, and the Resolved flag."""
    database = ravendb_target.database
    documents.put(on_node("A"), orders(1, 10))
    state = sync(configuration, ops)
    standin_control.pause_replication(database)
    documents.put(on_node("A"), orders(5, 1, Freight=1.5))
    documents.put(on_node("B"), orders(5, 1, Freight=2.5))
    written_on_b = metadata_of(on_node("B"), "orders/5-A")
    standin_control.flush_replication(database)
    standin_control.resume_replication(database)

    resolved = metadata_of(on_node("A"), "orders/5-A")
    assert resolved["@flags"] == "HasRevisions, Resolved"
    assert resolved["@last-modified"] > written_on_b["@last-modified"]
    assert resolved["@change-vector"] != written_on_b["@change-vector"]
    lands_exactly(ravendb_target, configuration, ops, state)
    assert ops.rows("Orders")["orders/5-A"]["Freight"] == "2.5"


def test_reconciliation_while_renewals_over_compressed_documents_marks_no_live_document_deleted(
    ravendb_target, ravendb_store, standin_control, ops
):
    """RavenDB 7.x renews the read transaction of a long stream over compressed documents (decompression buffers
    count towards Databases.PulseReadTransactionLimitInMb). While a reconciliation reads, two documents are
    rewritten and one is deleted. A collection-query stream resumes by position and skips an unchanged document,
    which it would mark deleted (orders/2049-A here); the connector reads by etag, then the changes."""
    database = ravendb_target.database
    ravendb_store.maintenance.send(
        UpdateDocumentsCompressionConfigurationOperation(DocumentsCompressionConfiguration(False, False, ["Orders"]))
    )
    standin_control.set_pulse_limit(database, 1)
    standin_control.generate_orders(database, 3_000)
    configuration = configuration_for(ravendb_target, collection_name="Orders", lookback_seconds="1")
    time.sleep(1.1)
    state = sync(configuration, ops)
    time.sleep(1.5)  # past the lookback: the next sync's read of changes returns nothing, and the pause below
    # stops the reconciliation's read
    configuration["reconcile_deletes_hours"] = "24"

    def write_while_paused() -> None:
        standin_control.wait_stream_paused(database, timeout=60)
        documents.put(ravendb_store, [(f"orders/{n}-A", "Orders", {"Rewritten": n}) for n in (2990, 10)])
        documents.delete(ravendb_store, ["orders/20-A"])
        standin_control.release_stream(database)

    standin_control.pause_stream(database, after=1_500)
    writer = threading.Thread(target=write_while_paused)
    writer.start()
    state = sync(configuration, ops, state)
    writer.join()

    assert ops.rows("Orders") == database_rows(ravendb_target, "Orders")
    assert len(ops.rows("Orders")) == 2_999 == len(database_documents(ravendb_target, "Orders"))

"""The cursor against a mocked DocumentStore that answers as a real RavenDB index does: documents out of
@last-modified order, documents newer than the stream's start, stale indexes, a stream broken by an Error line.
The same conditions through the real client against the test server are in tests/test_consistency.py."""

from datetime import datetime, timedelta, timezone

import pytest
from ravendb.exceptions.raven_exceptions import RavenException

import connector
from connector import SourceError

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)


def at(moment: datetime) -> str:
    return connector.format_last_modified(moment)


def is_bound(cursor: str, moment: datetime) -> bool:
    """Whether a cursor is the bound of a read that began at `moment` on the server's clock, less the lookback
    (`moment` is that difference): the server's Date header, less the time the response took to arrive."""
    return at(moment - timedelta(seconds=1)) < cursor <= at(moment)


@pytest.fixture
def server_at_noon(fake_store):
    """Streams start at 12:00:00 on the server's clock (their Date header)."""
    fake_store.server_date = NOW
    return fake_store


def test_a_document_changed_after_the_index_snapshot_is_upserted_and_the_cursor_stays_before_the_rest(
    server_at_noon, make_document, base_configuration, ops
):
    """The index returns the changed document at its snapshot place with its new @last-modified, out of order;
    the sync upserts it and keeps its cursor before the documents after it."""
    early, changed, later = (NOW - timedelta(minutes=m) for m in (30, 20, 10))
    server_at_noon.add(
        make_document(doc_id="orders/1-A", last_modified=at(early)),
        make_document(doc_id="orders/2-A", last_modified=at(NOW - timedelta(seconds=1))),  # changed after indexing
        make_document(doc_id="orders/3-A", last_modified=at(later)),
    )
    server_at_noon.indexed_at["orders/2-A"] = at(changed)

    connector.update(base_configuration, {})

    assert [row["Id"] for _, row in ops.upserts] == ["orders/1-A", "orders/2-A", "orders/3-A"]
    assert is_bound(ops.checkpoints[-1]["cursors"]["Orders"], NOW - timedelta(seconds=60))  # the read ended


def test_a_checkpoint_never_passes_a_document_not_yet_read(
    server_at_noon, make_document, base_configuration, ops, monkeypatch
):
    """The first document, changed after the snapshot, carries a @last-modified past the five not yet read; no
    checkpoint moves the cursor past them."""
    monkeypatch.setattr(connector, "_CHECKPOINT_EVERY_RECORDS", 2)
    start = NOW - timedelta(hours=1)
    server_at_noon.add(*(make_document(last_modified=at(start + timedelta(seconds=n))) for n in range(1, 7)))
    first = next(iter(server_at_noon.documents.values()))
    server_at_noon.indexed_at[first["@metadata"]["@id"]] = first["@metadata"]["@last-modified"]
    position = server_at_noon.indexed_position
    first["@metadata"]["@last-modified"] = at(NOW + timedelta(seconds=1))  # changed during the stream

    connector.update(base_configuration, {})

    read: set[str] = set()
    for kind, _, data in ops.calls:
        if kind == "upsert":
            read.add(data["Id"])
        elif kind == "checkpoint":
            unread = [position(document) for doc_id, document in server_at_noon.documents.items() if doc_id not in read]
            assert all(data["cursors"]["Orders"] <= place for place in unread)
    assert len(read) == 6


@pytest.mark.parametrize("lookback", ["0", "60"], ids=["no-lookback", "lookback-60s"])
def test_documents_newer_than_the_streams_start_less_the_lookback_land_and_the_cursor_ends_at_that_bound(
    server_at_noon, make_document, base_configuration, ops, lookback
):
    base_configuration["lookback_seconds"] = lookback
    old = at(NOW - timedelta(seconds=61))
    recent = at(NOW - timedelta(seconds=30))
    server_at_noon.add(make_document(doc_id="orders/1-A", last_modified=old))
    server_at_noon.add(make_document(doc_id="orders/2-A", last_modified=recent))

    connector.update(base_configuration, {})

    assert {row["Id"] for _, row in ops.upserts} == {"orders/1-A", "orders/2-A"}
    assert is_bound(ops.checkpoints[-1]["cursors"]["Orders"], NOW - timedelta(seconds=int(lookback)))


def test_a_document_read_again_because_of_the_lookback_is_not_upserted_twice(
    server_at_noon, make_document, base_configuration, ops
):
    server_at_noon.add(*(make_document(last_modified=at(NOW - timedelta(seconds=s))) for s in (50, 40, 30)))
    connector.update(base_configuration, {})
    state = ops.checkpoints[-1]
    assert is_bound(state["cursors"]["Orders"], NOW - timedelta(seconds=60))

    server_at_noon.server_date = NOW + timedelta(minutes=5)
    connector.update(base_configuration, state)

    assert len(ops.upserts) == 3
    assert is_bound(ops.checkpoints[-1]["cursors"]["Orders"], NOW + timedelta(minutes=4))
    assert "kept" not in ops.checkpoints[-1]  # nothing the next read returns has landed


def test_a_document_replicated_late_with_an_older_timestamp_lands_within_the_lookback(
    server_at_noon, make_document, base_configuration, ops
):
    """A write from another node arrives after the sync that read newer documents, with an older @last-modified;
    the cursor stays `lookback_seconds` behind the server's clock at the read's start, so the next sync reads it."""
    server_at_noon.add(make_document(doc_id="orders/1-A", last_modified=at(NOW - timedelta(seconds=10))))
    server_at_noon.server_date = NOW + timedelta(seconds=5)
    connector.update(base_configuration, {})
    late = make_document(doc_id="orders/2-B", last_modified=at(NOW - timedelta(seconds=20)))  # written on node B
    server_at_noon.add(late)
    server_at_noon.server_date = NOW + timedelta(seconds=65)

    connector.update(base_configuration, ops.checkpoints[-1])

    assert set(ops.rows("Orders")) == {"orders/1-A", "orders/2-B"}


def test_a_stale_stream_is_not_read_the_index_is_waited_for_and_the_query_sent_again(
    server_at_noon, make_document, base_configuration, ops, logs
):
    server_at_noon.add(make_document(last_modified=at(NOW - timedelta(hours=1))))
    server_at_noon.stale_streams, server_at_noon.stale_waits = 1, 1

    connector.update(base_configuration, {})

    instance = server_at_noon.stores[-1]
    assert len(instance.queries) == 2 and len(instance.index_waits) == 2
    assert len(ops.upserts) == 1
    assert is_bound(ops.checkpoints[-1]["cursors"]["Orders"], NOW - timedelta(seconds=60))
    assert any("waiting for RavenDB's index" in line for line in logs.messages("INFO"))


def test_an_index_still_stale_after_the_wait_lands_what_it_covers_without_moving_the_cursor(
    server_at_noon, make_document, base_configuration, ops, logs, monkeypatch
):
    monkeypatch.setattr(connector, "_INDEX_WAIT_SECONDS", 0.05)
    monkeypatch.setattr(connector, "_INDEX_WAIT_SLICE_SECONDS", 0.01)
    server_at_noon.add(make_document(last_modified=at(NOW - timedelta(hours=1))))
    server_at_noon.stale_streams, server_at_noon.stale_waits = 2, 10**6

    connector.update(base_configuration, {})

    assert len(ops.upserts) == 1
    assert ops.checkpoints[-1]["cursors"]["Orders"] == connector._BEGINNING_OF_TIME
    assert any("still stale" in line for line in logs.messages("WARNING"))


def test_without_a_date_header_the_cursor_stays_and_says_why(
    server_at_noon, make_document, base_configuration, ops, logs
):
    server_at_noon.add(make_document(last_modified=at(NOW - timedelta(hours=1))))
    server_at_noon.server_date = False  # the fake sends no Date header

    connector.update(base_configuration, {})

    assert len(ops.upserts) == 1
    assert ops.checkpoints[-1]["cursors"]["Orders"] == connector._BEGINNING_OF_TIME
    assert any("no Date header" in line for line in logs.messages("WARNING"))


def test_an_error_line_mid_stream_is_retried_from_the_cursor(
    server_at_noon, make_document, base_configuration, ops, logs, no_backoff
):
    """The stream breaks off with an Error line (the client's parser raises a plain RuntimeError); the sync
    retries from its cursor."""
    server_at_noon.add(*(make_document(last_modified=at(NOW - timedelta(hours=1, seconds=-n))) for n in range(5)))
    server_at_noon.error_after = 3

    connector.update(base_configuration, {})

    assert set(ops.rows("Orders")) == set(server_at_noon.documents)
    assert len(ops.upserts) == 5  # the three read before the error are skipped by their versions
    warning = next(line for line in logs.messages("WARNING") if "resuming from the cursor" in line)
    assert "System.OperationCanceledException: gone" in warning and warning.startswith("Orders: ravendb_urls: ")


def test_an_error_line_on_every_attempt_ends_the_sync_in_one_line(
    server_at_noon, make_document, base_configuration, ops, no_backoff
):
    server_at_noon.add(make_document(last_modified=at(NOW - timedelta(hours=1))))

    def always_broken(command):
        server_at_noon.error_after = 0

    server_at_noon.before_command = always_broken

    with pytest.raises(SourceError) as raised:
        connector.update(base_configuration, {})

    assert "\n" not in str(raised.value)
    assert str(raised.value).startswith("ravendb_urls: RavenDB broke off a stream")
    assert "gave up after 5 attempts" in str(raised.value)


def test_a_state_of_version_1_is_read_and_written_as_version_3(server_at_noon, make_document, base_configuration, ops):
    tick = at(NOW - timedelta(hours=1))
    server_at_noon.add(make_document(doc_id="orders/1-A", last_modified=tick))
    state = {"version": 1, "cursors": {"Orders": tick}, "versions_at_cursor": {"Orders": {"orders/1-A": "A:1-x"}}}

    connector.update(base_configuration, state)

    assert ops.upserts == []
    assert ops.checkpoints[-1]["version"] == 3
    assert is_bound(ops.checkpoints[-1]["cursors"]["Orders"], NOW - timedelta(seconds=60))


def test_a_server_refusing_dynamic_queries_gets_one_line_naming_the_setting_to_change(
    fake_store, make_document, base_configuration, ops
):
    fake_store.add(make_document())
    refused = RavenException(
        "System.NotSupportedException: Dynamic queries are not supported by this database because the configuration "
        "'DisableQueryOptimizerGeneratedIndexes' is set to true and the query optimizer needs an index for this "
        "query\nThe server at http://127.0.0.1:8080/databases/Northwind/streams/queries responded with status code: 500"
    )

    def refuse_queries(command):
        if isinstance(command, connector.QueryStreamCommand):
            raise refused

    fake_store.before_command = refuse_queries

    with pytest.raises(SourceError) as raised:
        connector.update(base_configuration, {})

    assert "\n" not in str(raised.value)
    assert "Indexing.DisableQueryOptimizerGeneratedIndexes" in str(raised.value)
    assert "set it to false" in str(raised.value)

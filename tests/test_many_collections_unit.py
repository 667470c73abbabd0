"""Syncs of many collections against a mocked DocumentStore: new small collections are read together, in one read
of the whole database, the rest one collection at a time; every later sync reads them all in one query of the
database."""

import re
from datetime import datetime, timezone

import pytest

import connector

DATABASE_READ = ("GET /streams/docs", {})


def collections(fake_store, make_document, count: int, documents: int, prefix: str = "C") -> list[str]:
    names = [f"{prefix}{number:03d}" for number in range(count)]
    for name in names:
        fake_store.add(*(make_document(name) for _ in range(documents)))
    return names


@pytest.fixture
def every_collection(base_configuration):
    del base_configuration["collection_name"]
    return base_configuration


def test_new_small_collections_are_read_in_one_request(fake_store, make_document, every_collection, ops):
    names = collections(fake_store, make_document, 30, 10)

    connector.update(every_collection, {})

    (instance,) = fake_store.stores
    assert instance.queries == [DATABASE_READ]
    assert all(len(ops.rows(connector.table_name(name))) == 10 for name in names)
    assert ops.checkpoints[-1]["database"]["collections"] == names


def test_after_their_first_read_the_collections_share_one_cursor_at_its_bound(
    fake_store, make_document, every_collection, ops
):
    names = collections(fake_store, make_document, 3, 4)

    connector.update(every_collection, {})

    saved = ops.checkpoints[-1]
    assert saved["cursors"] == {}
    assert saved["database"]["collections"] == names
    assert re.fullmatch(r"2024-05-01T(10:00:00|09:59:59)\.\d{7}Z", saved["database"]["since"])  # 10:01 less 60 s
    assert "floors" not in saved["database"]


def test_the_next_sync_reads_every_collection_in_one_query_of_the_database(
    fake_store, make_document, every_collection, ops
):
    collections(fake_store, make_document, 3, 4)
    connector.update(every_collection, {})
    state = ops.checkpoints[-1]

    connector.update(every_collection, state)

    later = fake_store.stores[-1].queries
    assert later == [(connector._DATABASE_CHANGED_SINCE_RQL, {"since": state["database"]["since"]})]
    assert len(ops.upserts) == 12  # the first sync's; nothing landed twice


def test_checkpoints_during_the_read_keep_the_cursors_where_they_were(fake_store, make_document, every_collection, ops):
    collections(fake_store, make_document, 25, 100)

    connector.update(every_collection, {})

    *during, final = ops.checkpoints
    assert len(during) == 2  # every 1,000 records
    assert all(set(saved["cursors"].values()) == {connector._BEGINNING_OF_TIME} for saved in during)
    assert connector._BEGINNING_OF_TIME not in final["cursors"].values()


def test_a_read_broken_off_is_read_again_without_landing_a_document_twice(
    fake_store, make_document, every_collection, ops, no_backoff
):
    names = collections(fake_store, make_document, 25, 100)
    fake_store.error_after = 1500

    connector.update(every_collection, {})

    upserted = [data["Id"] for kind, _, data in ops.calls if kind == "upsert"]
    assert len(upserted) == len(set(upserted)) == 2500
    assert fake_store.stores[0].queries == [DATABASE_READ, DATABASE_READ]
    assert ops.checkpoints[-1]["database"]["collections"] == names


def test_a_sync_that_failed_during_the_read_starts_it_over_from_a_small_state(
    fake_store, make_document, every_collection, ops
):
    fake_store.server_date = datetime(2024, 5, 1, 10, 5, tzinfo=timezone.utc)  # every document older than the bound
    names = collections(fake_store, make_document, 25, 100)
    fake_store.error_after = 1500
    connector._MAX_ATTEMPTS, attempts = 1, connector._MAX_ATTEMPTS
    try:
        with pytest.raises(connector.SourceError):
            connector.update(every_collection, {})
    finally:
        connector._MAX_ATTEMPTS = attempts
    saved = ops.checkpoints[-1]

    connector.update(every_collection, saved)

    assert set(saved["cursors"].values()) == {connector._BEGINNING_OF_TIME}
    assert sum(len(text) // 8 for kept in saved["kept"].values() for text in kept.values()) <= 60  # its newest second
    assert all(len(ops.rows(connector.table_name(name))) == 100 for name in names)


@pytest.mark.parametrize(
    "shape",
    [
        pytest.param({"small": 1, "large": 0}, id="one-new-collection"),
        pytest.param({"small": 0, "large": 2}, id="collections-past-the-small-size"),
        pytest.param({"small": 3, "large": 1}, id="small-ones-hold-under-half-the-database"),
    ],
)
def test_otherwise_each_collection_is_read_on_its_own(fake_store, make_document, every_collection, shape):
    collections(fake_store, make_document, shape["small"], 10, prefix="S")
    collections(fake_store, make_document, shape["large"], connector._SMALL_COLLECTION + 1, prefix="L")

    connector.update(every_collection, {})

    queries = fake_store.stores[0].queries
    assert DATABASE_READ not in queries
    assert len(queries) == shape["small"] + shape["large"]


def test_only_the_new_collections_are_read_together(fake_store, make_document, every_collection, ops):
    old = collections(fake_store, make_document, 2, 10, prefix="Old")
    connector.update(every_collection, {})
    state = ops.checkpoints[-1]
    new = collections(fake_store, make_document, 5, 10, prefix="New")

    connector.update(every_collection, state)

    queries = fake_store.stores[-1].queries
    assert [rql for rql, _ in queries] == ["GET /streams/docs", connector._DATABASE_CHANGED_SINCE_RQL]
    assert queries[1][1]["since"] <= state["database"]["since"]  # the oldest of the old cursor and the new ones
    assert old == state["database"]["collections"]
    assert all(len(ops.rows(connector.table_name(name))) == 10 for name in new)


def test_documents_of_collections_not_selected_are_skipped(fake_store, make_document, base_configuration, ops):
    base_configuration["collection_name"] = "C000, C001"
    collections(fake_store, make_document, 3, 10)

    connector.update(base_configuration, {})

    assert fake_store.stores[0].queries == [DATABASE_READ]
    assert {table for table, _ in ops.upserts} == {connector.table_name("C000"), connector.table_name("C001")}


def test_a_slow_read_of_the_database_logs_progress_over_every_document_it_reads(
    fake_store, clock, make_document, every_collection, logs
):
    collections(fake_store, make_document, 4, 5)
    fake_store.seconds_per_document = 0.25  # the read takes 5 s on connector.py's clock
    every_collection["progress_log_seconds"] = "1"

    connector.update(every_collection, {})

    line = re.compile(r"4 new collections \(one read of the database\): (\d+) of 20 documents \((\d+)%\), .* left")
    progress = [match for match in map(line.fullmatch, logs.messages("INFO")) if match]
    assert progress
    assert all(int(match.group(2)) == int(match.group(1)) * 100 // 20 for match in progress)
    assert "sync finished: 4 collections, 20 documents upserted" in logs.messages("INFO")[-1]


def test_a_document_with_a_field_named_item_lands_whole_from_the_read_of_the_database(
    fake_store, make_document, every_collection, ops
):
    """GET /streams/docs sends bare documents; the client's parser unwraps any line with an `Item` key."""
    fake_store.add(make_document("A", Item={"Sku": "x-1"}), make_document("B", Item="plain"))

    connector.update(every_collection, {})

    assert fake_store.stores[0].queries == [DATABASE_READ]
    assert [row["Item_Sku"] for row in ops.rows(connector.table_name("A")).values()] == ["x-1"]
    assert [row["Item"] for row in ops.rows(connector.table_name("B")).values()] == ["plain"]


def test_schema_samples_new_small_collections_in_one_request(fake_store, make_document, every_collection):
    names = collections(fake_store, make_document, 30, 10)
    fake_store.add(make_document("C007", Note="text only here"))

    tables = {table["table"]: table["columns"] for table in connector.schema(every_collection)}

    (instance,) = fake_store.stores
    assert instance.queries == [DATABASE_READ] and instance.samples == []
    assert sorted(tables) == sorted(connector.table_name(name) for name in names)
    assert tables[connector.table_name("C007")]["Note"] == "STRING"


def test_schema_samples_the_500_newest_documents_of_each_collection(fake_store, make_document, every_collection):
    fake_store.add(*(make_document("Old", Code="text") for _ in range(100)))
    fake_store.add(*(make_document("Old", Code=n) for n in range(500)))
    fake_store.add(*(make_document("New", Code="text") for _ in range(3)))

    tables = {table["table"]: table["columns"] for table in connector.schema(every_collection)}

    assert fake_store.stores[0].queries == [DATABASE_READ]
    assert "Code" not in tables[connector.table_name("Old")]  # text only in documents older than the newest 500
    assert tables[connector.table_name("New")]["Code"] == "STRING"


def test_schema_samples_each_collection_on_its_own_in_a_large_database(fake_store, make_document, every_collection):
    collections(fake_store, make_document, 2, 10, prefix="S")
    collections(fake_store, make_document, 1, connector._SMALL_COLLECTION + 1, prefix="L")

    connector.schema(every_collection)

    (instance,) = fake_store.stores
    assert instance.queries == [] and sorted(instance.samples) == ["L000", "S000", "S001"]


def test_child_tables_star_finds_the_arrays_of_new_small_collections_from_one_read(
    fake_store, make_document, every_collection, ops
):
    every_collection["child_tables"] = "*"
    for name in ("Carts", "Orders", "Returns"):
        fake_store.add(*(make_document(name, Lines=[{"Sku": f"{name}-{n}"}]) for n in range(3)))

    connector.update(every_collection, {})

    (instance,) = fake_store.stores
    assert instance.samples == [] and instance.queries == [DATABASE_READ, DATABASE_READ]  # the sample, the read
    assert all(
        len(ops.rows(f"{connector.table_name(name)}_lines", ("Id", "lines_index"))) == 3
        for name in ("Carts", "Orders", "Returns")
    )


def test_new_small_collections_past_the_read_together_limit_are_read_one_by_one(
    fake_store, make_document, every_collection
):
    count = connector._MAX_READ_TOGETHER // connector._SMALL_COLLECTION + 1
    collections(fake_store, make_document, count, connector._SMALL_COLLECTION)

    connector.update(every_collection, {})

    queries = fake_store.stores[0].queries
    assert DATABASE_READ not in queries and len(queries) == count


def test_a_collection_no_longer_selected_keeps_its_place_and_is_read_from_it_when_selected_again(
    fake_store, make_document, base_configuration, ops
):
    names = collections(fake_store, make_document, 12, 3)
    everything = {**base_configuration, "collection_name": ",".join(names)}
    without_last = {**base_configuration, "collection_name": ",".join(names[:-1])}
    connector.update(everything, {})
    state = ops.checkpoints[-1]
    connector.update(without_last, state)
    left = ops.checkpoints[-1]
    fake_store.add(make_document(names[-1], last_modified="2024-05-01T10:00:59.9999999Z"))

    connector.update(everything, left)

    assert left["cursors"] == {names[-1]: state["database"]["since"]}
    assert names[-1] not in left["database"]["collections"]
    queries = fake_store.stores[-1].queries
    assert queries[0] == (
        connector._CHANGED_SINCE_RQL.format(collection=names[-1]),
        {"since": left["cursors"][names[-1]]},
    )
    assert queries[1][0] == connector._DATABASE_CHANGED_SINCE_RQL
    assert len(ops.rows(connector.table_name(names[-1]))) == 4
    assert ops.checkpoints[-1]["cursors"] == {}


def test_the_versions_kept_read_back_as_saved(fake_store, make_document, every_collection, ops):
    collections(fake_store, make_document, 3, 40)
    connector.update(every_collection, {})
    saved = ops.checkpoints[-1]

    again = connector.SyncState.load(saved).to_dict()

    assert saved["database"]["kept"] and again == saved


def test_a_stale_index_behind_the_query_of_the_database_is_waited_for_and_the_query_sent_again(
    fake_store, make_document, every_collection, ops
):
    collections(fake_store, make_document, 3, 4)
    connector.update(every_collection, {})
    fake_store.stale_streams, fake_store.stale_waits = 1, 1

    connector.update(every_collection, ops.checkpoints[-1])

    instance = fake_store.stores[-1]
    assert instance.index_waits == [connector._DATABASE_CHANGED_SINCE_RQL] * 2
    assert [rql for rql, _ in instance.queries] == [connector._DATABASE_CHANGED_SINCE_RQL] * 2
    assert len(ops.upserts) == 12  # the first sync's

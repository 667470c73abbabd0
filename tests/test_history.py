"""History tables (`history_collections`): every revision RavenDB keeps of a document lands as a row of
`<table>_history` with its validity interval; in-process syncs against the test server over HTTPS."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from ravendb import ConfigureRevisionsOperation, RevisionsCollectionConfiguration, RevisionsConfiguration

import connector
from tests import documents
from tests.documents import orders
from tests.syncing import configuration_for, sync

KEY = ("Id", "ChangeVector")
VALIDITY = ("ValidFrom", "ValidTo", "IsCurrent", "IsDeleted")


def enable_revisions(store, *collections: str, keep: int | None = None, disabled: bool = False) -> None:
    """Revisions for `collections` (default Orders), keeping at most `keep` per document (None: all)."""
    entry = RevisionsCollectionConfiguration(minimum_revisions_to_keep=keep, disabled=disabled)
    config = RevisionsConfiguration(collections={name: entry for name in collections or ("Orders",)})
    store.maintenance.send(ConfigureRevisionsOperation(config))


def revisions_of(target, doc_id: str, url: str | None = None) -> list[dict]:
    """The document's revisions as a node of RavenDB keeps them, oldest first (GET /revisions?id=)."""
    response = requests.get(
        f"{url or target.urls[0]}/databases/{target.database}/revisions",
        params={"id": doc_id},
        cert=target.client_pem,
        verify=target.ca_pem or True,
        timeout=30,
    )
    response.raise_for_status()
    return response.json()["Results"][::-1]


def expected_history(target, ids: list[str], url: str | None = None) -> dict[tuple[str, str], dict[str, Any]]:
    """The history rows the revisions RavenDB keeps of `ids` make, by key: each revision's fields flattened as the
    main table flattens a document, valid from its @last-modified until the next revision's."""
    rows = {}
    for doc_id in ids:
        revisions = revisions_of(target, doc_id, url)
        for position, revision in enumerate(revisions):
            metadata = revision["@metadata"]
            following = revisions[position + 1]["@metadata"] if position + 1 < len(revisions) else None
            row = {key: value for key, value in connector.flatten(revision).items() if key != "LastModified"}
            row.update(
                ChangeVector=metadata["@change-vector"],
                ValidFrom=connector.parse_last_modified(metadata["@last-modified"]),
                ValidTo=connector.parse_last_modified(following["@last-modified"]) if following else None,
                IsCurrent=following is None,
                IsDeleted="DeleteRevision" in metadata["@flags"],
            )
            rows[(row["Id"], row["ChangeVector"])] = row
    return rows


def write_history(store) -> list[str]:
    """Four orders written five times each; orders/2-A deleted, orders/3-A deleted and written again."""
    for version in range(5):
        documents.put(store, orders(1, 4, Freight=float(version), Status=f"step {version}"))
    documents.delete(store, ["orders/2-A", "orders/3-A"])
    documents.put(store, orders(3, 1, Freight=99.5, Status="again"))
    return [f"orders/{n}-A" for n in range(1, 5)]


def assert_one_chain_per_document(rows: dict[tuple, dict]) -> None:
    by_id: dict[str, list[dict]] = {}
    for row in rows.values():
        by_id.setdefault(row["Id"], []).append(row)
    for doc_id, chain in by_id.items():
        chain.sort(key=lambda row: row["ValidFrom"])
        assert [row["IsCurrent"] for row in chain] == [False] * (len(chain) - 1) + [True], doc_id
        assert [row["ValidTo"] for row in chain[:-1]] == [row["ValidFrom"] for row in chain[1:]], doc_id
        assert chain[-1]["ValidTo"] is None, doc_id


@pytest.fixture
def history_configuration(ravendb_target) -> dict[str, str]:
    return configuration_for(ravendb_target, collection_name="Orders", history_collections="Orders")


def test_the_first_sync_lands_every_revision_ravendb_keeps_value_by_value(
    ravendb_target, ravendb_store, history_configuration, ops
) -> None:
    enable_revisions(ravendb_store)
    ids = write_history(ravendb_store)

    sync(history_configuration, ops)

    landed = ops.rows("Orders_history", KEY)
    assert landed == expected_history(ravendb_target, ids)
    assert len(landed) == 4 * 5 + 2 + 1  # five versions each, two delete revisions, one re-creation
    assert_one_chain_per_document(landed)
    assert [row["IsDeleted"] for key, row in landed.items() if key[0] == "orders/2-A"][-1] is True


def test_a_later_sync_adds_only_the_new_revisions_and_closes_the_rows_they_follow(
    ravendb_target, ravendb_store, history_configuration, ops
) -> None:
    enable_revisions(ravendb_store)
    ids = write_history(ravendb_store)
    state = sync(history_configuration, ops)
    before = len(ops.upserts)

    documents.put(ravendb_store, orders(1, 1, Status="shipped"))
    documents.put(ravendb_store, orders(2, 1, Status="back"))  # orders/2-A was deleted: written again
    documents.put(ravendb_store, orders(1, 1, Status="delivered"))
    sync(history_configuration, ops, state)

    new = sorted((row["Id"], row["Status"]) for table, row in ops.upserts[before:] if table == "Orders_history")
    assert new == [("orders/1-A", "delivered"), ("orders/1-A", "shipped"), ("orders/2-A", "back")]
    landed = ops.rows("Orders_history", KEY)
    assert landed == expected_history(ravendb_target, ids)
    assert_one_chain_per_document(landed)


def test_a_sync_without_changes_lands_nothing(ravendb_store, history_configuration, ops) -> None:
    enable_revisions(ravendb_store)
    write_history(ravendb_store)
    state = sync(history_configuration, ops)
    calls = len(ops.calls)

    sync(history_configuration, ops, state)

    assert [kind for kind, table, _ in ops.calls[calls:] if table == "Orders_history"] == []


def test_a_later_write_during_the_sync_lands_by_the_next_sync(
    ravendb_target, ravendb_store, history_configuration, ops
):
    enable_revisions(ravendb_store)
    ids = write_history(ravendb_store)
    real_upsert, written = ops.upsert, []

    def write_during_the_history_read(table: str, data: dict) -> None:
        real_upsert(table, data)
        if table == "Orders_history" and not written:
            written.append(True)
            documents.put(ravendb_store, orders(4, 1, Status="written during the sync"))

    ops.upsert = write_during_the_history_read
    state = sync(history_configuration, ops)
    ops.upsert = real_upsert
    sync(history_configuration, ops, state)

    landed = ops.rows("Orders_history", KEY)
    assert landed == expected_history(ravendb_target, ids)
    assert_one_chain_per_document(landed)
    assert [row["Status"] for row in landed.values() if row["IsCurrent"] and row["Id"] == "orders/4-A"] == [
        "written during the sync"
    ]


def test_a_sync_that_fails_mid_backfill_resumes_from_its_last_checkpoint(
    ravendb_target, ravendb_store, small_pages, ops
):
    enable_revisions(ravendb_store)
    ids = write_history(ravendb_store)
    real_upsert, landed = ops.upsert, []

    def fail_after_ten_history_rows(table: str, data: dict) -> None:
        if table == "Orders_history" and len(landed) == 10:
            raise KeyboardInterrupt("killed")  # not an error the connector handles: the process ends here
        landed.append(table)
        real_upsert(table, data)

    ops.upsert = fail_after_ten_history_rows
    with pytest.raises(KeyboardInterrupt):
        sync(small_pages, ops)
    ops.upsert = real_upsert
    saved = ops.checkpoints[-1]
    assert sum(saved["history"]["nodes"].values()) > 0
    del ops.calls[ops.calls.index(("checkpoint", None, saved)) + 1 :]  # what never reached a checkpoint is lost

    sync(small_pages, ops, saved)

    assert ops.rows("Orders_history", KEY) == expected_history(ravendb_target, ids)
    assert_one_chain_per_document(ops.rows("Orders_history", KEY))


@pytest.fixture
def small_pages(history_configuration) -> dict[str, str]:
    """Four revisions listed per request (RavenDB lists one more than asked): a checkpoint every few rows."""
    return {**history_configuration, "batch_size": "3"}


def test_rows_of_revisions_ravendb_trims_stay_and_the_chain_stays_unbroken(
    ravendb_target, ravendb_store, history_configuration, ops
):
    enable_revisions(ravendb_store, keep=3)
    for version in range(5):  # RavenDB keeps the last three: versions 0 and 1 never land
        documents.put(ravendb_store, orders(1, 2, Status=f"step {version}"))
    state = sync(history_configuration, ops)
    first = ops.rows("Orders_history", KEY)
    assert first == expected_history(ravendb_target, ["orders/1-A", "orders/2-A"])
    statuses = sorted(row["Status"] for row in first.values() if row["Id"] == "orders/1-A")
    assert statuses == ["step 2", "step 3", "step 4"]

    for version in range(5, 7):  # RavenDB now keeps steps 4 to 6: steps 2 and 3 are trimmed
        documents.put(ravendb_store, orders(1, 1, Status=f"step {version}"))
    sync(history_configuration, ops, state)

    landed = ops.rows("Orders_history", KEY)
    kept = expected_history(ravendb_target, ["orders/1-A", "orders/2-A"])
    assert {key: landed[key] for key in kept} == kept
    assert sorted(row["Status"] for row in landed.values() if row["Id"] == "orders/1-A") == [
        f"step {version}" for version in range(2, 7)
    ]
    assert_one_chain_per_document(landed)


def test_after_a_failover_the_other_node_is_read_from_its_own_first_etag(
    ravendb_target, ravendb_store, history_configuration, ops
):
    if ravendb_target.control is None or len(ravendb_target.urls) < 2:
        pytest.skip("stops a node of the test server's two")
    configuration = {**history_configuration, "lookback_seconds": "0"}
    enable_revisions(ravendb_store)
    ids = write_history(ravendb_store)
    state = sync(configuration, ops)
    (node,) = state["history"]["nodes"]
    before = len(ops.upserts)

    ravendb_target.control.stop_node(node)
    with connector.open_store(connector.validate_configuration(configuration)) as store:
        documents.put(store, orders(1, 2, Status="written on the other node"))
    state = sync(configuration, ops, state)

    assert len(state["history"]["nodes"]) == 2
    new = [row for table, row in ops.upserts[before:] if table == "Orders_history"]
    written = sorted(row["Id"] for row in new if row["Status"] == "written on the other node")
    assert written == ["orders/1-A", "orders/2-A"]
    assert len(new) <= 3  # and again only the revision(s) written at the newest moment the first node listed
    landed = ops.rows("Orders_history", KEY)
    other = next(url for url in ravendb_target.urls if not url.endswith(str(_port_of(ravendb_target, node))))
    assert landed == expected_history(ravendb_target, ids, other)
    assert_one_chain_per_document(landed)


def _port_of(target, tag: str) -> int:
    return next(int(entry["Url"].rsplit(":", 1)[1]) for entry in target.control.nodes() if entry["Tag"] == tag)


def test_a_collection_whose_revisions_are_switched_off_keeps_its_history_and_gets_no_new_rows(
    ravendb_target, ravendb_store, history_configuration, ops, logs
):
    enable_revisions(ravendb_store)
    ids = write_history(ravendb_store)
    state = sync(history_configuration, ops)
    landed = ops.rows("Orders_history", KEY)

    enable_revisions(ravendb_store, disabled=True)
    documents.put(ravendb_store, orders(1, 2, Status="after revisions were switched off"))
    sync(history_configuration, ops, state)

    assert ops.rows("Orders_history", KEY) == landed == expected_history(ravendb_target, ids)
    assert ops.rows("Orders")["orders/1-A"]["Status"] == "after revisions were switched off"
    assert any("Orders: revisions are not enabled" in message for level, message in logs.lines if level == "WARNING")


def test_every_collection_whose_revisions_are_enabled_gets_a_history_table(ravendb_target, ravendb_store, ops):
    enable_revisions(ravendb_store, "Orders")
    documents.put(ravendb_store, [*orders(1, 2), ("companies/1-A", "Companies", {"Name": "Vins et alcools"})])
    configuration = configuration_for(ravendb_target, history_collections="*")

    tables = {table["table"]: table for table in connector.schema(configuration)}
    sync(configuration, ops)

    assert set(tables) == {"Orders", "Companies", "Orders_history"}
    assert tables["Orders_history"]["primary_key"] == ["Id", "ChangeVector"]
    assert {name: tables["Orders_history"]["columns"][name] for name in ("Id", *KEY[1:], *VALIDITY)} == {
        "Id": "STRING",
        "ChangeVector": "STRING",
        "ValidFrom": "UTC_DATETIME",
        "ValidTo": "UTC_DATETIME",
        "IsCurrent": "BOOLEAN",
        "IsDeleted": "BOOLEAN",
    }
    assert {table for _, table, _ in ops.calls if table} == {"Orders", "Companies", "Orders_history"}


def test_body_fields_never_take_the_history_columns(ravendb_store, history_configuration, ops):
    enable_revisions(ravendb_store)
    body = {"Id": "mine", "ChangeVector": "mine", "ValidFrom": "mine", "IsCurrent": "mine", "is_deleted": "mine"}
    documents.put(ravendb_store, [("orders/1-A", "Orders", body)])

    state = sync(history_configuration, ops)

    (row,) = ops.rows("Orders_history", KEY).values()
    assert row["Id"] == "orders/1-A" and row["IsCurrent"] is True and row["IsDeleted"] is False
    names = {path[0]: name for path, name, *_ in state["history"]["columns"]["Orders"]}
    assert names == {
        "Id": "id_2",
        "ChangeVector": "change_vector_2",
        "ValidFrom": "valid_from_2",
        "IsCurrent": "is_current_2",
        "is_deleted": "is_deleted_2",
    }


def test_with_the_setting_off_a_sync_sends_the_same_requests_and_lands_the_same_rows(
    ravendb_target, ravendb_store, ops
):
    if ravendb_target.control is None:
        pytest.skip("counts the test server's requests")
    enable_revisions(ravendb_store)
    write_history(ravendb_store)
    control, database = ravendb_target.control, ravendb_target.database
    runs = []
    for configuration in (configuration_for(ravendb_target), configuration_for(ravendb_target, history_collections="")):
        before, calls = control.database_requests(database), len(ops.calls)
        state = sync(configuration, ops)
        after = control.database_requests(database)
        requests_sent = {path: after[path] - before.get(path, 0) for path in after if after[path] > before.get(path, 0)}
        landed = [call for call in ops.calls[calls:] if call[0] != "checkpoint"]  # states differ by the time read
        runs.append((requests_sent, landed, state))

    (without_key, rows_without, _), (empty, rows_empty, state_empty) = runs
    assert empty == without_key
    deletes_reads = ("revisions/bin", "revisions/config")  # the deletes walk and the deletes line, setting or not
    assert not any("revisions" in path and not path.endswith(deletes_reads) for path in empty)
    assert rows_empty == rows_without and "history" not in state_empty and state_empty.keys() == runs[0][2].keys()
    assert {table for _, table, _ in rows_empty if table} == {"Orders"}


@pytest.mark.parametrize(
    ("value", "collections", "message"),
    [
        ("Orders,,Companies", "", "contains an empty name"),
        ("@hilo", "", "is a RavenDB system collection"),
        ("Orders,orders", "", "lists a collection twice"),
        ("Companies", "Orders", "'Companies' is a collection that collection_name leaves out"),
    ],
    ids=["empty-name", "system-collection", "twice", "not-synced"],
)
def test_a_bad_history_setting_is_one_line_naming_it(base_configuration, value, collections, message):
    configuration = {**base_configuration, "collection_name": collections, "history_collections": value}
    if not collections:
        del configuration["collection_name"]

    with pytest.raises(connector.ConfigurationError) as error:
        connector.validate_configuration(configuration)

    assert error.value.setting == "history_collections"
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_document_written_many_times_since_the_last_sync_closes_its_previous_row(
    ravendb_target, ravendb_store, small_pages, ops
):
    enable_revisions(ravendb_store)
    ids = write_history(ravendb_store)
    state = sync(small_pages, ops)

    for version in range(12):  # more new revisions than one lookup page: the row before them is found all the same
        documents.put(ravendb_store, orders(1, 1, Status=f"again {version}"))
    sync(small_pages, ops, state)

    landed = ops.rows("Orders_history", KEY)
    assert landed == expected_history(ravendb_target, ids)
    assert_one_chain_per_document(landed)


def test_a_history_table_that_would_be_another_collections_table_is_refused(ravendb_target, ravendb_store, ops):
    enable_revisions(ravendb_store, "Orders")
    documents.put(ravendb_store, [*orders(1, 1), ("ordershistory/1", "OrdersHistory", {"Name": "a"})])
    configuration = configuration_for(ravendb_target, history_collections="Orders")

    with pytest.raises(connector.SourceError) as error:
        connector.schema(configuration)

    assert error.value.setting == "history_collections"
    assert "'OrdersHistory'" in str(error.value) and "orders_history" in str(error.value)

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


def revisions_of(target, doc_id: str) -> list[dict]:
    """The document's revisions as RavenDB keeps them, oldest first (GET /revisions?id=, a public endpoint)."""
    response = requests.get(
        f"{target.urls[0]}/databases/{target.database}/revisions",
        params={"id": doc_id},
        cert=target.client_pem,
        verify=target.ca_pem or True,
        timeout=30,
    )
    response.raise_for_status()
    return response.json()["Results"][::-1]


def expected_history(target, ids: list[str]) -> dict[tuple[str, str], dict[str, Any]]:
    """The history rows the revisions RavenDB keeps of `ids` make, by key: each revision's fields flattened as the
    main table flattens a document, valid from its @last-modified until the next revision's."""
    rows = {}
    for doc_id in ids:
        revisions = revisions_of(target, doc_id)
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

"""A typo, a wrong child-table path or untracked deletes are told in one line, through the real client against the
test server (and once each through `fivetran debug`); and the log says only what a sync did."""

import pytest
from ravendb.documents.operations.revisions import (
    ConfigureRevisionsOperation,
    RevisionsCollectionConfiguration,
    RevisionsConfiguration,
)

import connector
from tests import documents
from tests.syncing import configuration_for, debug

ORDER = {
    "Lines": [{"Product": "products/1-A", "Quantity": 2}],
    "Freight": 3.25,
    "ShipTo": {"City": "Lyon"},
    "Tags": ["rush"],
    "Notes": [],
}


@pytest.fixture
def orders(ravendb_target, ravendb_store):
    """Three orders: Lines is an array of objects, Notes an empty array; Freight, ShipTo and Tags are not arrays of
    objects."""
    documents.put(ravendb_store, [(f"orders/{number}-A", "Orders", ORDER) for number in range(1, 4)])
    return ravendb_target


@pytest.mark.parametrize(
    "key, line",
    [
        ("batch_sise", "batch_sise: unknown setting; did you mean batch_size?"),
        ("reconcile_delete_hours", "reconcile_delete_hours: unknown setting; did you mean reconcile_deletes_hours?"),
        ("colour", "colour: unknown setting; the settings are batch_size, certificate_base64, certificate_password, "),
    ],
    ids=["typo", "missing-letter", "unrelated"],
)
def test_an_unknown_setting_is_refused_naming_it_and_the_nearest_known_one(key, line) -> None:
    with pytest.raises(connector.ConfigurationError) as raised:
        connector.validate_configuration({"ravendb_urls": "http://localhost:8080", "database_name": "db", key: "5"})
    assert str(raised.value).startswith(line)
    assert raised.value.setting == key


def test_fivetran_debug_refuses_an_unknown_setting_in_one_line(
    ravendb_target,
    project,
) -> None:
    run = debug(project, configuration_for(ravendb_target, batch_sise="5"))
    assert run.returncode != 0
    assert "error: batch_sise: unknown setting; did you mean batch_size?" in run.output


@pytest.mark.parametrize(
    "path, line",
    [
        ("Orders.Lnies", "Orders.Lnies is in none of the 3 newest Orders documents"),
        ("Orders.Freight", "Orders.Freight is a number in the 3 newest Orders documents"),
        ("Orders.ShipTo", "Orders.ShipTo is an object in the 3 newest Orders documents"),
        ("Orders.Tags", "Orders.Tags is an array of text in the 3 newest Orders documents"),
        ("Orders.Lines.Quantity", "Orders.Lines.Quantity is a number in the 3 newest Orders documents"),
    ],
    ids=["absent", "number", "object", "array-of-text", "grandchild-number"],
)
def test_a_child_tables_path_that_is_not_an_array_of_objects_is_refused_listing_those_there_are(
    orders, path, line
) -> None:
    with pytest.raises(connector.SourceError) as raised:
        connector.schema(configuration_for(orders, child_tables=path))
    assert str(raised.value) == f"child_tables: {line}, not an array of objects (Orders has: Orders.Lines)"


def test_a_child_tables_path_of_a_collection_the_database_lacks_is_refused(orders) -> None:
    with pytest.raises(connector.SourceError) as raised:
        connector.schema(configuration_for(orders, child_tables="Invoices.Lines"))
    assert str(raised.value) == (
        f"child_tables: Invoices.Lines: database {orders.database!r} has no collection 'Invoices' (has: Orders)"
    )


@pytest.mark.parametrize(
    "path, table", [("Orders.Lines", "Orders_lines"), ("Orders.Notes", "Orders_notes")], ids=["objects", "always-empty"]
)
def test_an_array_of_objects_or_an_array_empty_in_every_sampled_document_is_a_child_table(orders, path, table) -> None:
    assert table in {declared["table"] for declared in connector.schema(configuration_for(orders, child_tables=path))}


def test_fivetran_debug_refuses_a_misspelt_child_table_and_creates_no_table(
    orders,
    project,
) -> None:
    run = debug(project, configuration_for(orders, child_tables="Orders.Lnies"))
    assert run.returncode != 0
    assert "child_tables: Orders.Lnies is in none of the 3 newest Orders documents" in run.output
    assert run.count("Upserts") == 0
    assert not (project / "files" / "warehouse.db").exists() or "orders_lnies" not in (
        project / "files" / "warehouse.db"
    ).read_bytes().decode("latin-1")


def _deletes_line(logs) -> str:
    return next(line for line in logs.messages("INFO") if line.startswith("deletes: "))


def test_the_deletes_line_names_the_revisions_bin_when_revisions_are_on(orders, ravendb_store, ops, logs) -> None:
    ravendb_store.maintenance.send(
        ConfigureRevisionsOperation(
            RevisionsConfiguration(default_config=RevisionsCollectionConfiguration(minimum_revisions_to_keep=1))
        )
    )
    connector.update(configuration_for(orders), {})
    assert _deletes_line(logs) == "deletes: Orders: the revisions bin"


def test_the_deletes_line_names_the_reconciliation_when_it_is_set(orders, ops, logs) -> None:
    connector.update(configuration_for(orders, reconcile_deletes_hours="24"), {})
    assert _deletes_line(logs) == "deletes: Orders: reconciliation every 24 h"


def test_the_deletes_line_says_what_would_track_untracked_deletes(orders, ops, logs) -> None:
    connector.update(configuration_for(orders), {})
    assert _deletes_line(logs) == (
        "deletes: Orders: not tracked (deleted documents' rows stay live; enable revisions in RavenDB for those "
        "collections, without PurgeOnDelete, or set reconcile_deletes_hours)"
    )


def test_a_sync_with_no_change_says_what_it_read_and_that_nothing_landed(orders, ops, logs) -> None:
    """A sync after the first reads the documents changed since the cursor, in one query of the database, and says
    that the ones it read again (written less than the lookback before the first sync) had landed already."""
    configuration = configuration_for(orders)
    connector.update(configuration, {})
    first = [line for line in logs.messages("INFO") if line.startswith("Orders: ")]
    logs.lines.clear()

    connector.update(configuration, ops.checkpoints[-1])

    again = [line for line in logs.messages("INFO") if line.startswith("1 collection: ")]
    assert first[0] == "Orders: reading every document (first sync)"
    assert first[1].startswith("Orders: upserted 3 of 3 documents read (0 had landed already) in ")
    assert again[0].startswith("1 collection: sync started from ")
    assert again[1].startswith("1 collection: upserted 0 of 3 documents read in one query of the database in ")

"""Child tables through the real client against the test server (or a real RavenDB): under `fivetran debug` into
DuckDB, Northwind-shaped orders land with one row per order line, and the lines table stays equal to the
documents across syncs that add, change, remove lines and delete orders."""

import os
import random
import signal
import time
from datetime import datetime, timedelta, timezone

import pytest
from ravendb import ConfigureRevisionsOperation, RevisionsCollectionConfiguration, RevisionsConfiguration

import connector
from tests import documents
from tests.standin.sample_data import order
from tests.syncing import (
    configuration_for,
    database_documents,
    debug,
    debug_process,
    query,
    start_debug,
    sync,
    write_configuration,
)

EPOCH, MICROSECOND = datetime(1970, 1, 1, tzinfo=timezone.utc), timedelta(microseconds=1)
LINE_COLUMNS = ("discount", "price_per_unit", "product", "product_name", "quantity")


def northwind_orders(first: int, count: int, seed: int = 1996) -> list[tuple[str, str, dict]]:
    rng = random.Random(seed)
    return [(f"orders/{n}-A", "Orders", order(n, rng)) for n in range(first, first + count)]


def lines_in_database(target) -> set[tuple]:
    """Every line of every order as (id, index, last_modified in µs, discount, price, product, name, quantity)."""
    expected = set()
    for document in database_documents(target, "Orders"):
        metadata = document["@metadata"]
        last_modified = (datetime.fromisoformat(metadata["@last-modified"][:26] + "+00:00") - EPOCH) // MICROSECOND
        for index, line in enumerate(document.get("Lines") or []):
            values = (line["Discount"], line["PricePerUnit"], line["Product"], line["ProductName"], line["Quantity"])
            expected.add((metadata["@id"], index, last_modified, *values))
    return expected


def lines_in_warehouse(project_dir) -> set[tuple]:
    return set(
        query(
            project_dir,
            f"select id, lines_index, epoch_us(last_modified), {', '.join(LINE_COLUMNS)} from tester.orders_lines "
            "where not _fivetran_deleted",
        )
    )


@pytest.fixture
def revisions(ravendb_store):
    configuration = RevisionsConfiguration(
        collections={"Orders": RevisionsCollectionConfiguration(minimum_revisions_to_keep=5)}
    )
    ravendb_store.maintenance.send(ConfigureRevisionsOperation(configuration))


def test_northwind_orders_land_with_one_child_row_per_order_line(ravendb_target, ravendb_store, project):
    documents.put(ravendb_store, northwind_orders(1, 60))
    configuration = configuration_for(ravendb_target, collection_name="Orders", child_tables="Orders.Lines")

    run = debug(project, configuration)

    assert run.returncode == 0, run.output
    expected = lines_in_database(ravendb_target)
    assert len(expected) == sum(1 + n % 4 for n in range(1, 61))
    assert query(project, "select count(*) from tester.orders_lines") == [(len(expected),)]
    assert lines_in_warehouse(project) == expected
    assert query(project, "select count(*) from tester.orders") == [(60,)]
    assert "lines" not in {name for name, *_ in query(project, "describe tester.orders")}


def test_lines_added_changed_removed_and_orders_deleted_leave_the_lines_table_equal_to_the_documents(
    ravendb_target,
    ravendb_store,
    revisions,
    project,
):
    documents.put(ravendb_store, northwind_orders(1, 12))
    configuration = configuration_for(ravendb_target, collection_name="Orders", child_tables="Orders.Lines")
    assert debug(project, configuration).returncode == 0
    assert debug(project, configuration).returncode == 0  # the bin's position is recorded; nothing changes
    bodies = {doc_id: body for doc_id, _, body in northwind_orders(1, 12)}
    product = {"Discount": 0, "PricePerUnit": 9.5, "Product": "products/77-A", "ProductName": "Konbu", "Quantity": 3}
    changes = {
        "orders/1-A": [*bodies["orders/1-A"]["Lines"], product, product],  # lines added
        "orders/2-A": [{**bodies["orders/2-A"]["Lines"][0], "Quantity": 99}, *bodies["orders/2-A"]["Lines"][1:]],
        "orders/3-A": bodies["orders/3-A"]["Lines"][:1],  # 4 lines shrink to one
        "orders/7-A": [],  # 4 lines shrink to none
    }
    documents.put(
        ravendb_store, [(doc_id, "Orders", {**bodies[doc_id], "Lines": lines}) for doc_id, lines in changes.items()]
    )
    documents.delete(ravendb_store, ["orders/11-A"])  # 4 lines go with it

    run = debug(project, configuration)

    assert run.returncode == 0, run.output
    assert lines_in_warehouse(project) == lines_in_database(ravendb_target)
    assert query(
        project, "select count(*) from tester.orders_lines where id = 'orders/11-A' and _fivetran_deleted"
    ) == [(4,)]


def test_a_grandchild_array_lands_in_its_own_table(ravendb_target, ravendb_store, project):
    batches = [{"Lot": "L-1", "Expires": "2025-01-31T00:00:00.0000000"}, {"Lot": "L-2", "Expires": None}]
    body = {"Lines": [{"Product": "products/1-A", "Batches": batches}, {"Product": "products/2-A", "Batches": []}]}
    documents.put(ravendb_store, [("orders/1-A", "Orders", body)])
    configuration = configuration_for(
        ravendb_target, collection_name="Orders", child_tables="Orders.Lines,Orders.Lines.Batches"
    )

    run = debug(project, configuration)

    assert run.returncode == 0, run.output
    assert query(project, "select id, lines_index, product from tester.orders_lines order by 2") == [
        ("orders/1-A", 0, "products/1-A"),
        ("orders/1-A", 1, "products/2-A"),
    ]
    assert query(
        project,
        "select id, lines_index, batches_index, lot, expires::varchar from tester.orders_lines_batches order by 3",
    ) == [("orders/1-A", 0, 0, "L-1", "2025-01-31 00:00:00"), ("orders/1-A", 0, 1, "L-2", None)]


def test_the_setting_off_leaves_todays_tables_unchanged(ravendb_target, ravendb_store, project):
    documents.put(ravendb_store, northwind_orders(1, 5))

    run = debug(project, configuration_for(ravendb_target, collection_name="Orders"))

    assert run.returncode == 0, run.output
    assert query(project, "select table_name from information_schema.tables where table_schema = 'tester'") == [
        ("orders",)
    ]
    lines = dict(query(project, "select id, lines::varchar from tester.orders"))
    assert len(lines) == 5 and all(text.startswith('[{"') for text in lines.values())


@pytest.mark.parametrize("every_document", ["true", ""], ids=["every-document", "newest-500"])
def test_schema_types_element_fields_from_the_same_documents_as_the_collections(
    ravendb_target, ravendb_store, every_document
):
    line = {"Product": "products/1-A", "Code": "A-7"}
    documents.put(ravendb_store, [("orders/1-A", "Orders", {"Lines": [line]})])  # the oldest: text in Code
    documents.put(ravendb_store, [(f"orders/{n}-A", "Orders", {"Lines": [{**line, "Code": n}]}) for n in range(2, 502)])
    configuration = configuration_for(
        ravendb_target, collection_name="Orders", child_tables="Orders.Lines", type_from_every_document=every_document
    )

    tables = {table["table"]: table for table in connector.schema(configuration)}

    assert tables["Orders_lines"]["primary_key"] == ["Id", "lines_index"]
    assert tables["Orders_lines"]["columns"].get("Code") == ("STRING" if every_document else None)


def test_reconciliation_marks_deleted_the_lines_of_orders_that_no_longer_exist(ravendb_target, ravendb_store, ops):
    configuration = configuration_for(
        ravendb_target, collection_name="Orders", child_tables="Orders.Lines", reconcile_deletes_hours="24"
    )
    documents.put(ravendb_store, northwind_orders(1, 8))
    state = sync(configuration, ops)
    documents.delete(ravendb_store, ["orders/3-A", "orders/7-A"])
    state["reconciled_at"]["Orders"] = "2000-01-01T00:00:00+00:00"  # the interval has passed

    sync(configuration, ops, state)

    live = {(key[0], key[1]) for key in ops.rows("Orders_lines", ("Id", "lines_index"))}
    assert live == {line[:2] for line in lines_in_database(ravendb_target)}
    assert {"orders/3-A", "orders/7-A"}.isdisjoint(doc_id for doc_id, _ in live)


@pytest.mark.e2e
def test_a_sync_killed_mid_way_and_resumed_after_lines_changed_leaves_no_orphan_or_missing_line(
    ravendb_target, ravendb_store, tmp_path
):
    count = 4_000
    if ravendb_target.control is not None:
        ravendb_target.control.generate_orders(ravendb_target.database, count)
    else:
        for first in range(1, count + 1, 1000):
            documents.put(ravendb_store, northwind_orders(first, 1000, seed=first))
    configuration = configuration_for(ravendb_target, collection_name="Orders", child_tables="Orders.Lines")
    configuration_path = write_configuration(tmp_path / "configuration.json", configuration)
    project_dir = tmp_path / "project"
    run = start_debug(project_dir, configuration_path, tmp_path / "tmp", "killed.log")
    log_path, deadline, killed_at = tmp_path / "killed.log", time.monotonic() + 120, None
    # kill -9 at the 4th checkpoint the SDK records: one is due every 1,000 documents and at most two more come as
    # the sync starts (for the columns it finds), so the sync has checkpointed 1,000 to 3,000 documents of 4,000
    while killed_at is None:
        assert run.poll() is None, log_path.read_text(errors="replace")[-3000:]
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        if log_path.read_text(errors="replace").count("checkpoint recorded") >= 4:
            os.kill(run.pid, signal.SIGKILL)
            run.wait()
            killed_at = query(project_dir, "select count(distinct id) from tester.orders_lines")[0][0]
        time.sleep(0.01)
    bodies = {doc["@metadata"]["@id"]: doc for doc in database_documents(ravendb_target, "Orders")}
    line = {"Discount": 0, "PricePerUnit": 9.5, "Product": "products/7-A", "ProductName": "Konbu", "Quantity": 2}
    changed = [
        (f"orders/{n}-A", "Orders", {**body_of(bodies[f"orders/{n}-A"]), "Lines": lines})
        for n, lines in [*((n, [line]) for n in range(1, 21)), *((n, [line] * 6) for n in range(21, 31))]
    ]
    documents.put(ravendb_store, changed)  # written after the kill: shrunk to one line, grown to six

    resume_log = tmp_path / "resume.log"
    with resume_log.open("w") as output:
        returncode = debug_process(project_dir, configuration_path, tmp_path / "tmp", output).wait(timeout=600)

    assert 0 < killed_at < count
    assert returncode == 0, resume_log.read_text()[-3000:]
    assert lines_in_warehouse(project_dir) == lines_in_database(ravendb_target)
    assert query(project_dir, "select count(*) from tester.orders_lines where not _fivetran_deleted") == [
        (sum(1 + n % 4 for n in range(31, count + 1)) + 20 + 60,)
    ]


def body_of(document: dict) -> dict:
    return {key: value for key, value in document.items() if key != "@metadata"}

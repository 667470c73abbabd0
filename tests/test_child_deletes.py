"""Child-table deletes cost in proportion to the element rows that can exist, through the real client against the
test server (or a real RavenDB): a table filled for the first time gets no delete, a changed order deletes at
most a few rows beyond those it had, whatever the widest array of the table, and the lines table never keeps an
orphan line: across shrinks, deletes, a sync that dies and resumes, grandchild arrays, and a state written by the
version that kept one width per table."""

import json
import random
from collections import Counter

import pytest
from ravendb import ConfigureRevisionsOperation, RevisionsCollectionConfiguration, RevisionsConfiguration

from tests import documents
from tests.standin.sample_data import order
from tests.syncing import configuration_for, database_documents, sync

LINES = "Orders_lines"
LONG = 300
FEW_DELETES = 10  # per order rewritten, the target


def orders(first: int, count: int) -> list[tuple[str, str, dict]]:
    """Northwind-shaped orders orders/<n>-A of 1 to 4 lines."""
    return [(f"orders/{n}-A", "Orders", order(n, random.Random(n))) for n in range(first, first + count)]


def with_lines(doc_id: str, count: int) -> tuple[str, str, dict]:
    body = order(1, random.Random(doc_id))
    return doc_id, "Orders", {**body, "Lines": [dict(body["Lines"][0], Quantity=n) for n in range(count)]}


def put_long_order_then_small_ones(store, small: int = 60) -> None:
    """orders/1-A with LONG lines, written first, then `small` orders of 1 to 4 lines (orders/2-A on)."""
    documents.put(store, [with_lines("orders/1-A", LONG)])
    documents.put(store, orders(2, small))


@pytest.fixture
def lines_configuration(ravendb_target) -> dict:
    return configuration_for(ravendb_target, collection_name="Orders", child_tables="Orders.Lines")


def deletes(ops, table: str = LINES, since: int = 0) -> Counter:
    """Deletes sent to `table` from the `since`-th call on, per order id."""
    return Counter(keys["Id"] for kind, name, keys in ops.calls[since:] if kind == "delete" and name == table)


def lines_landed(ops) -> set[tuple[str, int]]:
    return set(ops.rows(LINES, ("Id", "lines_index")))


def lines_in_database(target) -> set[tuple[str, int]]:
    return {
        (document["@metadata"]["@id"], index)
        for document in database_documents(target, "Orders")
        for index in range(len(document.get("Lines") or []))
    }


def body_of(document: dict) -> dict:
    return {key: value for key, value in document.items() if key != "@metadata"}


def test_the_first_sync_of_a_fresh_table_sends_no_delete(ravendb_target, ravendb_store, lines_configuration, ops):
    put_long_order_then_small_ones(ravendb_store)

    sync(lines_configuration, ops)

    assert deletes(ops) == Counter()
    assert lines_landed(ops) == lines_in_database(ravendb_target)
    assert len(lines_landed(ops)) == LONG + sum(1 + n % 4 for n in range(2, 62))


def test_rewriting_small_orders_deletes_a_few_rows_each_whatever_the_widest_array(
    ravendb_target, ravendb_store, lines_configuration, ops
):
    put_long_order_then_small_ones(ravendb_store)
    state = sync(lines_configuration, ops)
    rewritten = [(doc_id, "Orders", {**body, "Freight": 1.5}) for doc_id, _, body in orders(2, 40)]
    documents.put(ravendb_store, rewritten)
    mark = len(ops.calls)

    sync(lines_configuration, ops, state)

    assert set(deletes(ops, since=mark)) <= {doc_id for doc_id, _, _ in rewritten}
    assert max(deletes(ops, since=mark).values()) <= FEW_DELETES
    assert lines_landed(ops) == lines_in_database(ravendb_target)


CHANGES = [
    pytest.param([with_lines("orders/1-A", 250)], {"orders/1-A": 50}, id="long-array-shrinks"),
    pytest.param([with_lines("orders/1-A", 2)], {"orders/1-A": LONG - 2}, id="long-array-becomes-short"),
    pytest.param([with_lines("orders/1-A", 400)], {}, id="long-array-grows"),
    pytest.param([with_lines("orders/5-A", 0)], {"orders/5-A": 2}, id="short-array-empties"),
]


@pytest.mark.parametrize(("changed", "expected"), CHANGES)
def test_a_changed_array_deletes_the_rows_it_had_beyond_its_new_length(
    ravendb_target, ravendb_store, lines_configuration, ops, changed, expected
):
    put_long_order_then_small_ones(ravendb_store)
    state = sync(lines_configuration, ops)
    documents.put(ravendb_store, changed)
    mark = len(ops.calls)

    sync(lines_configuration, ops, state)

    sent = deletes(ops, since=mark)
    assert set(sent) == set(expected)
    assert all(expected[doc_id] <= sent[doc_id] <= expected[doc_id] + FEW_DELETES for doc_id in expected)
    assert lines_landed(ops) == lines_in_database(ravendb_target)


def test_a_long_array_grown_then_shrunk_over_three_syncs_leaves_no_orphan(
    ravendb_target, ravendb_store, lines_configuration, ops
):
    put_long_order_then_small_ones(ravendb_store)
    state = sync(lines_configuration, ops)
    documents.put(ravendb_store, [with_lines("orders/7-A", 40)])
    state = sync(lines_configuration, ops, state)
    documents.put(ravendb_store, [with_lines("orders/7-A", 3)])
    mark = len(ops.calls)

    sync(lines_configuration, ops, state)

    assert deletes(ops, since=mark)["orders/7-A"] == 37
    assert lines_landed(ops) == lines_in_database(ravendb_target)


def test_an_order_deleted_takes_exactly_its_lines_with_it(ravendb_target, ravendb_store, lines_configuration, ops):
    ravendb_store.maintenance.send(
        ConfigureRevisionsOperation(
            RevisionsConfiguration(
                collections={"Orders": RevisionsCollectionConfiguration(minimum_revisions_to_keep=1)}
            )
        )
    )
    put_long_order_then_small_ones(ravendb_store)
    state = sync(lines_configuration, ops)
    documents.delete(ravendb_store, ["orders/1-A", "orders/4-A"])
    mark = len(ops.calls)

    sync(lines_configuration, ops, state)

    assert deletes(ops, since=mark)["orders/1-A"] == LONG
    assert deletes(ops, since=mark)["orders/4-A"] <= FEW_DELETES
    assert lines_landed(ops) == lines_in_database(ravendb_target)


class Killed(Exception):
    """The sync's process dies: what it handed over so far has landed, nothing after."""


def test_a_sync_that_dies_mid_way_and_resumes_after_arrays_changed_leaves_no_orphan(
    ravendb_target, ravendb_store, lines_configuration, ops, monkeypatch
):
    documents.put(ravendb_store, [with_lines("orders/1-A", LONG)])
    for first in range(2, 1502, 500):
        documents.put(ravendb_store, orders(first, 500))
    upsert, written = ops.upsert, Counter()

    def dies_after_1200_orders(table: str, data: dict) -> None:
        upsert(table, data)
        written[table] += 1
        if written["Orders"] == 1200:
            raise Killed

    monkeypatch.setattr(ops, "upsert", dies_after_1200_orders)
    with pytest.raises(Killed):
        sync(lines_configuration, ops)
    monkeypatch.setattr(ops, "upsert", upsert)
    assert ops.checkpoints, "the sync checkpointed before it died"
    bodies = {doc["@metadata"]["@id"]: body_of(doc) for doc in database_documents(ravendb_target, "Orders")}
    shrunk = [(f"orders/{n}-A", "Orders", {**bodies[f"orders/{n}-A"], "Lines": []}) for n in range(1100, 1250)]
    documents.put(ravendb_store, [*shrunk, with_lines("orders/1-A", 1)])  # written after the death

    sync(lines_configuration, ops, ops.checkpoints[-1])

    assert lines_landed(ops) == lines_in_database(ravendb_target)


def test_grandchild_rows_follow_their_lines(ravendb_target, ravendb_store, ops):
    configuration = configuration_for(
        ravendb_target, collection_name="Orders", child_tables="Orders.Lines,Orders.Lines.Batches"
    )

    def batched(*batches: int) -> tuple[str, str, dict]:
        lines = [
            {"Product": f"products/{n}-A", "Batches": [{"Lot": f"L-{k}"} for k in range(count)]}
            for n, count in enumerate(batches)
        ]
        return "orders/1-A", "Orders", {"Lines": lines}

    documents.put(ravendb_store, [batched(30, 2, 5)])
    state = sync(configuration, ops)
    assert deletes(ops, "Orders_lines_batches") == Counter()
    documents.put(ravendb_store, [batched(1, 4)])  # a line goes with its batches, the others lose some
    mark = len(ops.calls)

    sync(configuration, ops, state)

    landed = set(ops.rows("Orders_lines_batches", ("Id", "lines_index", "batches_index")))
    assert landed == {("orders/1-A", 0, 0), *(("orders/1-A", 1, k) for k in range(4))}
    had = 29 + 5  # batches 1..29 of line 0, and line 2's five
    beyond = 4 * 8  # at most: indices up to the tables' shared bounds (lines 4, batches 8) that held nothing
    assert had <= sum(deletes(ops, "Orders_lines_batches", since=mark).values()) <= had + beyond


def test_the_state_keeps_a_width_per_table_and_lengths_only_for_long_arrays(ravendb_store, lines_configuration, ops):
    put_long_order_then_small_ones(ravendb_store, small=500)
    documents.put(ravendb_store, [with_lines("orders/600-A", 90)])

    state = sync(lines_configuration, ops)

    rows = state["child_rows"][LINES]
    assert rows["width"] <= 8
    assert sorted(rows["long"]) == [["orders/1-A", LONG], ["orders/600-A", 90]]
    assert len(json.dumps(state["child_rows"])) < 200


def test_a_state_with_one_width_per_table_carries_over_without_orphans(
    ravendb_target, ravendb_store, lines_configuration, ops
):
    put_long_order_then_small_ones(ravendb_store)
    state = sync(lines_configuration, ops)
    state.pop("child_rows")
    state["child_widths"] = {LINES: LONG}  # as the version that kept the widest array per table saved it
    documents.put(ravendb_store, [with_lines("orders/1-A", 2), *orders(2, 5)])

    state = sync(lines_configuration, ops, state)

    assert lines_landed(ops) == lines_in_database(ravendb_target)
    assert "child_widths" not in state and LINES in state["child_rows"]


def test_a_reconciliation_bounds_each_order_by_the_lines_it_holds_now(ravendb_target, ravendb_store, ops):
    configuration = configuration_for(
        ravendb_target, collection_name="Orders", child_tables="Orders.Lines", reconcile_deletes_hours="24"
    )
    put_long_order_then_small_ones(ravendb_store)
    state = sync(configuration, ops)
    state.pop("child_rows")
    state["child_widths"] = {LINES: LONG}  # every order may hold 300 lines, as far as this state knows
    state["reconciled_at"]["Orders"] = "2000-01-01T00:00:00+00:00"  # the interval has passed
    documents.put(ravendb_store, [with_lines("orders/1-A", 3)])
    state = sync(configuration, ops, state)
    documents.put(ravendb_store, [(doc_id, "Orders", {**body, "Freight": 1.5}) for doc_id, _, body in orders(2, 40)])
    mark = len(ops.calls)

    sync(configuration, ops, state)

    assert max(deletes(ops, since=mark).values()) <= FEW_DELETES
    assert lines_landed(ops) == lines_in_database(ravendb_target)

"""The connector under the real `fivetran debug` CLI, into DuckDB, against the test server over HTTPS."""

import json
from pathlib import Path

import pytest

from tests import documents
from tests.documents import orders
from tests.syncing import configuration_for, debug, query


def column_types(project: Path, table: str) -> dict[str, str]:
    return {name: kind for name, kind, *_ in query(project, f"describe tester.{table}")}


def test_first_run_lands_everything_second_nothing_third_exactly_the_changes(ravendb_target, ravendb_store, project):
    documents.put(ravendb_store, [*orders(1, 40), ("companies/1-A", "Companies", {"Name": "Vins et alcools"})])
    configuration = configuration_for(ravendb_target)

    first = debug(project, configuration)
    assert first.returncode == 0, first.output
    assert first.count("Upserts") == 41
    assert query(project, "select count(*) from tester.orders") == [(40,)]
    assert query(project, "select name from tester.companies") == [("Vins et alcools",)]
    assert column_types(project, "orders")["last_modified"] == "TIMESTAMP WITH TIME ZONE"
    assert query(project, "select count(*) from tester.orders where microsecond(last_modified) % 1000000 = 0") == [(0,)]

    second = debug(project, configuration)
    assert second.returncode == 0, second.output
    assert second.count("Upserts") == 0

    documents.put(ravendb_store, [*orders(41, 3), *orders(5, 2, Freight=12.75)])
    third = debug(project, configuration)
    assert third.returncode == 0, third.output
    assert third.count("Upserts") == 5
    assert query(project, "select freight from tester.orders where id = 'orders/5-A'") == [(12.75,)]
    assert query(project, "select count(*), count(distinct id) from tester.orders") == [(43, 43)]


def test_each_value_lands_with_its_ravendb_type_across_syncs(ravendb_target, ravendb_store, project):
    values = {
        "Freight": 32.38,
        "Total": 1234567.89,
        "Latitude": 49.255958199999988,
        "PostalCode": "51100",
        "Zip": "01234",
        "Phone": "(+33) 26.47.15.10",
        "Flag": "true",
        "Paid": True,
        "Quantity": 12,
        "Huge": 2**70,
        "OrderedAt": "1996-07-04T00:00:00.0000000",
        "ShippedAt": "2024-05-01T10:11:12.1234567Z",
        "Code": 17,
    }
    documents.put(ravendb_store, [("orders/1-A", "Orders", values)])
    configuration = configuration_for(ravendb_target, collection_name="Orders")
    assert debug(project, configuration).returncode == 0

    documents.put(ravendb_store, [("orders/2-A", "Orders", {**values, "Code": "A-17", "Total": 5, "Note": "new"})])
    run = debug(project, configuration)

    assert run.returncode == 0, run.output
    types = column_types(project, "orders")
    assert {name: types[name] for name in ("freight", "total", "latitude", "quantity", "paid")} == {
        "freight": "DOUBLE",
        "total": "DOUBLE",
        "latitude": "DOUBLE",
        "quantity": "BIGINT",
        "paid": "BOOLEAN",
    }
    assert {
        name: types[name] for name in ("postal_code", "zip", "phone", "flag", "huge", "code", "note")
    } == dict.fromkeys(("postal_code", "zip", "phone", "flag", "huge", "code", "note"), "VARCHAR")
    assert types["ordered_at"] == "TIMESTAMP" and types["shipped_at"] == "TIMESTAMP WITH TIME ZONE"
    row = query(
        project,
        "select freight, total, latitude, postal_code, zip, flag, huge, code, ordered_at::varchar "
        "from tester.orders where id = 'orders/1-A'",
    )[0]
    assert row == (
        32.38,
        1234567.89,
        49.255958199999988,
        "51100",
        "01234",
        "true",
        str(2**70),
        "17",
        "1996-07-04 00:00:00",
    )


def test_a_bad_setting_stops_the_run_with_its_message_and_leaves_no_secret(ravendb_target, project):
    configuration = configuration_for(ravendb_target, batch_size="0")

    run = debug(project, configuration)

    assert run.returncode != 0
    assert "batch_size: 0 is out of range (expected 1 to 100000)" in run.output
    body = [line for line in Path(ravendb_target.client_pem).read_text().splitlines() if "-----" not in line]
    left_behind = "".join(
        path.read_text(errors="replace")
        for path in project.rglob("*")
        if path.is_file() and path.name != "configuration.json"
    )
    assert not any(line in run.output or line in left_behind for line in body)


ODD_DOCUMENT = {
    "ShipTo_City": "key with underscore",
    "ShipToCity": "camel key",
    "ShipTo": {"City": "nested"},
    "Name": "upper",
    "name": "lower",
    "Payment": {"$type": "Shop.Cash, Shop"},
    "PaymentType": "card",
    "住所": "東京都",
    "Город": "Москва",
    "Item": {"@context": "https://schema.org"},
    "": "empty key",
    "id": 7,
    "Id": "body Id",
    "LastModified": "body LastModified",
    "lastModified": "body lastModified",
    "_fivetran_deleted": "body deleted",
    "_fivetran_synced": "body synced",
    "Big": -(2**63),
    "Small": 5,
    "Tiny": 5e-324,
    "Stock": {f"products/{n}-A": n for n in range(2000)},
}
TABLES = {  # collection -> its table: Fivetran's normal form, plus a tag drawn from the name unless it is plain
    "Заказы": "zakazy_ndoe",
    "Клиенты": "klienty_vpfk",
    "注文": "u_27880_u_25991_mtln",
    "Order Lines": "order_lines_arzs",
    "OrderLines": "order_lines",
    "Order_Lines": "order_lines_dirm",
}


def test_every_name_key_and_value_real_documents_hold_lands_whole(ravendb_target, ravendb_store, project):
    documents.put(
        ravendb_store,
        [
            ("odd/1", "Odd", ODD_DOCUMENT),
            ("odd/2", "Odd", {"id": 7, "Big": 1}),
            ("odd/3", "Odd", {"id": None, "Big": 123456789}),
            *((f"{name}/1", name, {"Collection": name}) for name in TABLES),
        ],
    )

    run = debug(project, configuration_for(ravendb_target))

    assert run.returncode == 0, run.output
    for name, table in TABLES.items():
        assert query(project, f"select id, collection from tester.{table}") == [(f"{name}/1", name)]
    rows = query(project, "select id from tester.odd order by id")
    assert rows == [("odd/1",), ("odd/2",), ("odd/3",)]
    expected = {
        "ship_to_city": "key with underscore",
        "ship_to_city_2": "camel key",
        "ship_to_city_3": "nested",
        "name": "upper",
        "name_2": "lower",
        "payment_type": "Shop.Cash, Shop",
        "payment_type_2": "card",
        "u_20303_u_25152": "東京都",
        "gorod": "Москва",
        "item_context": "https://schema.org",
        "_empty": "empty key",
        "id_2": "7",  # spellings of one name share a declared type: Id holds text, so id is STRING too
        "id_3": "body Id",
        "last_modified_2": "body LastModified",
        "last_modified_3": "body lastModified",
        "fivetran_deleted": "body deleted",
        "fivetran_synced": "body synced",
        "big": -(2**63),
        "small": 5,
    }
    found = query(project, f"select {', '.join(expected)} from tester.odd where id = 'odd/1'")[0]
    assert dict(zip(expected, found, strict=True)) == expected
    tiny, stock = query(project, "select tiny, stock from tester.odd where id = 'odd/1'")[0]
    assert float(tiny) == 5e-324
    assert json.loads(stock) == ODD_DOCUMENT["Stock"]
    assert query(project, "select id, id_2, big from tester.odd where id <> 'odd/1' order by id") == [
        ("odd/2", "7", 1),
        ("odd/3", None, 123456789),
    ]
    types = column_types(project, "odd")
    assert (types["big"], types["tiny"], types["stock"]) == ("BIGINT", "VARCHAR", "JSON")
    assert len(types) < 40


OLD_TEXT = {"Zip": "51100", "Flag": "true", "Day": "2024-05-01", "Ratio": "1.50", "Minus": "-0"}


@pytest.mark.parametrize(
    ("setting", "zip_type"),
    [("true", "VARCHAR"), ("false", "BIGINT")],
    ids=["every-document: text stays text", "newest-500: typed from its values"],
)
def test_text_only_in_documents_older_than_the_newest_500(ravendb_target, ravendb_store, project, setting, zip_type):
    documents.put(ravendb_store, [(f"orders/old-{n}", "Orders", OLD_TEXT) for n in range(3)])
    documents.put(ravendb_store, orders(1, 500))  # newer: the sample of the newest 500 holds no old field

    run = debug(project, configuration_for(ravendb_target, collection_name="Orders", type_from_every_document=setting))

    assert run.returncode == 0, run.output
    assert column_types(project, "orders")["zip"] == zip_type
    if setting == "true":
        found = query(project, "select zip, flag, day, ratio, minus from tester.orders where id = 'orders/old-1'")
        assert found == [tuple(OLD_TEXT.values())]
        types = column_types(project, "orders")
        assert {types[name] for name in ("zip", "flag", "day", "ratio", "minus")} == {"VARCHAR"}

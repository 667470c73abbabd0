"""How RavenDB names become destination names: Fivetran's normal form, never two fields or collections in one."""

import pytest
from fivetran_connector_sdk_core.renaming import Renaming

import connector
from connector import ColumnNames, flatten, table_name

FIVETRAN = Renaming(apply=True)  # what `fivetran debug` applies to each name it is handed


def names_in_destination(row: dict) -> dict:
    return {FIVETRAN.column(name): value for name, value in row.items()}


COLLISIONS = [
    ("underscore-camel-nested", {"ShipTo_City": 1, "ShipToCity": 2, "ShipTo": {"City": 3}}, "ship_to_city"),
    ("case", {"Name": 1, "name": 2}, "name"),
    ("dotnet-type", {"Payment": {"$type": 1}, "PaymentType": 2}, "payment_type"),
    ("connector-columns", {"id": 1, "Id": 2, "LastModified": 3, "lastModified": 4}, None),
    ("fivetran-columns", {"_fivetran_deleted": 1, "_fivetran_synced": 2, "_fivetran_id": 3}, None),
]


@pytest.mark.parametrize(("body", "plain"), [c[1:] for c in COLLISIONS], ids=[c[0] for c in COLLISIONS])
def test_fields_that_fivetran_would_merge_land_in_columns_of_their_own(make_document, body, plain):
    row = names_in_destination(flatten(make_document(**body)))

    body_values = sorted(value for name, value in row.items() if name not in ("id", "last_modified"))
    assert body_values == list(range(1, len(body) + 1))  # every value, once
    assert len(row) == len(body) + 2
    assert not any(name.startswith("_fivetran") for name in row)
    if plain:
        assert row[plain] == 1 and row[f"{plain}_2"] == 2  # the first met keeps the plain name


NAMES = [
    ("cyrillic", "Город", "gorod"),
    ("cyrillic-words", "ГородДоставки", "gorod_dostavki"),
    ("greek", "Πόλη", "poli"),
    ("accents", "Prénom", "prenom"),
    ("han", "住所", "u_20303_u_25152"),
    ("empty", "", "_empty"),
    ("nested-json-ld", "@context", "_context"),
    ("digits", "2024", "_2024"),
]


@pytest.mark.parametrize(("key", "column"), [n[1:] for n in NAMES], ids=[n[0] for n in NAMES])
def test_non_latin_and_odd_keys_get_readable_distinct_columns(make_document, key, column):
    row = names_in_destination(flatten(make_document(**{key: "v"})))

    assert row[column] == "v"


@pytest.mark.parametrize(
    "name",
    ["ShipTo_City", "shipToCity", "ABCTest", "Order2Lines", "a__b", "_x", "x_", "Lines_0", "HTTPServer", "v2Beta"],
)
def test_names_are_fivetran_s_normal_form_which_it_leaves_as_they_are(name):
    normal = connector.destination_name((name,))

    assert FIVETRAN.column(name) == normal and FIVETRAN.column(normal) == normal


def test_collections_get_tables_of_their_own():
    collections = ["Заказы", "Клиенты", "注文", "Order Lines", "OrderLines", "Order_Lines", "Orders", "orders 2"]

    tables = [FIVETRAN.table(table_name(name)) for name in collections]

    assert len(set(tables)) == len(collections)
    assert tables[:2] == ["zakazy_ndoe", "klienty_vpfk"]
    assert tables[4:7] == ["order_lines", "order_lines_dirm", "orders"]
    assert all(FIVETRAN.table(table) == table for table in tables)


def test_a_field_first_seen_later_never_renames_a_column_across_syncs(make_document):
    first = ColumnNames()
    flatten(make_document(ShipToCity="a"), first)
    remembered = ColumnNames(first.to_list())  # the state between two syncs

    row = names_in_destination(flatten(make_document(ShipTo={"City": "b"}, ShipToCity="a"), remembered))

    assert (row["ship_to_city"], row["ship_to_city_2"]) == ("a", "b")
    assert remembered.to_list() == [[["ShipTo", "City"], "ship_to_city_2"], [["ShipToCity"], "ship_to_city"]]


def test_a_dictionary_keyed_by_ids_lands_as_one_json_value(make_document):
    stock = {f"products/{n}-A": n for n in range(2000)}

    row = flatten(make_document(Stock=stock, Name="n"))

    assert row["Stock"] == stock and set(row) == {"Stock", "Name", "Id", "LastModified"}


def test_past_the_column_budget_a_new_object_lands_whole_and_stays_so(make_document, monkeypatch):
    monkeypatch.setattr(connector, "_COLUMN_BUDGET", 4)
    columns = ColumnNames()
    flatten(make_document(A={"x": 1, "y": 2}, B={"x": 1, "y": 2}), columns)

    row = flatten(make_document(A={"x": 1, "y": 2, "z": 3}, C={"k": 1, "l": 2}), columns)
    again = flatten(make_document(A={"x": 4}), ColumnNames(columns.to_list()))

    assert row["A"] == {"x": 1, "y": 2, "z": 3} and row["C"] == {"k": 1, "l": 2}
    assert again["A"] == {"x": 4}  # remembered: A lands whole from then on

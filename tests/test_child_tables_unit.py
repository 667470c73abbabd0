"""Arrays of objects as child tables, against the mocked DocumentStore: the setting, the rows, and exactness
when arrays shrink, documents are deleted, syncs crash, or the selection changes."""

from datetime import datetime

import pytest

import connector
from connector import ConfigurationError

LINES = ("Id", "lines_index")
BATCHES = ("Id", "lines_index", "batches_index")


def line(product: int, quantity: int = 1, **extra) -> dict:
    return {"Product": f"products/{product}-A", "Quantity": quantity, "PricePerUnit": 14.4, **extra}


@pytest.fixture
def child_configuration(base_configuration) -> dict[str, str]:
    return {**base_configuration, "child_tables": "Orders.Lines"}


def lines_of(ops) -> dict[tuple, dict]:
    return ops.rows("Orders_lines", LINES)


def expected_lines(*documents) -> dict[tuple, dict]:
    """What Orders_lines should hold for these documents, written out without the connector's help."""
    expected = {}
    for document in documents:
        metadata = document["@metadata"]
        for index, element in enumerate(document.get("Lines") or []):
            row = {name: str(value) if isinstance(value, float) else value for name, value in element.items()}
            row.update(
                Id=metadata["@id"],
                lines_index=index,
                LastModified=datetime.fromisoformat(metadata["@last-modified"][:26] + "+00:00"),
            )
            expected[(metadata["@id"], index)] = row
    return expected


class TestSetting:
    @pytest.mark.parametrize(
        ("text", "every", "paths"),
        [
            pytest.param("", False, (), id="empty-off"),
            pytest.param("*", True, (), id="every-array-of-objects"),
            pytest.param("Orders.Lines", False, (("Orders", "Lines"),), id="one-path"),
            pytest.param(
                " Orders.Lines , Orders.ShipTo.Stops",
                False,
                (("Orders", "Lines"), ("Orders", "ShipTo", "Stops")),
                id="list-with-spaces-and-nested-object",
            ),
            pytest.param(
                "Orders.Lines,Orders.Lines.Batches",
                False,
                (("Orders", "Lines"), ("Orders", "Lines", "Batches")),
                id="grandchild-inside-its-parent",
            ),
            pytest.param("Orders.A.B.C", False, (("Orders", "A", "B", "C"),), id="deep-object-path"),
        ],
    )
    def test_accepted_values(self, base_configuration, text, every, paths):
        settings = connector.validate_configuration({**base_configuration, "child_tables": text})

        assert settings.child_tables == connector.ChildTableSelection(every=every, paths=paths)

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            pytest.param("Orders", r"'Orders' is not a Collection\.Field path", id="no-field"),
            pytest.param("Orders.", r"'Orders\.' is not a Collection\.Field path", id="empty-field"),
            pytest.param("Orders..Lines", r"'Orders\.\.Lines' is not a Collection\.Field path", id="empty-segment"),
            pytest.param("Orders.@metadata", r"'Orders\.@metadata' is not a Collection\.Field path", id="metadata"),
            pytest.param("*,Orders.Lines", r"'\*' is not a Collection\.Field path", id="star-in-a-list"),
            pytest.param(
                "Orders.A,Orders.A.B,Orders.A.B.C",
                r"'Orders\.A\.B\.C' is deeper than a grandchild table",
                id="great-grandchild",
            ),
            pytest.param(
                "Products.Lines",
                r"'Products\.Lines' names a collection that collection_name leaves out",
                id="unselected",
            ),
        ],
    )
    def test_rejected_values_name_the_setting_in_one_line(self, base_configuration, text, message):
        with pytest.raises(ConfigurationError, match=rf"^child_tables: {message}") as raised:
            connector.validate_configuration({**base_configuration, "child_tables": text})

        assert raised.value.setting == "child_tables"
        assert "\n" not in str(raised.value)


class TestRows:
    def test_each_line_lands_as_a_row_keyed_by_order_id_and_index_with_the_order_last_modified(
        self, fake_store, make_document, child_configuration, ops
    ):
        order = make_document(doc_id="orders/1-A", Freight=3.5, Lines=[line(11, 12), line(42, 10, Discount=0.15)])
        fake_store.add(order)

        connector.update(child_configuration, {})

        assert lines_of(ops) == expected_lines(order)
        assert "Lines" not in ops.rows("Orders")["orders/1-A"]
        assert ops.rows("Orders")["orders/1-A"]["Freight"] == "3.5"

    def test_setting_off_leaves_the_array_as_json_and_writes_no_other_table(
        self, fake_store, make_document, base_configuration, ops
    ):
        fake_store.add(make_document(doc_id="orders/1-A", Lines=[line(11)]))

        connector.update(base_configuration, {})

        assert {table for table, _ in ops.upserts} == {"Orders"}
        assert ops.rows("Orders")["orders/1-A"]["Lines"] == [line(11)]

    def test_an_element_is_flattened_like_a_document(self, fake_store, make_document, child_configuration, ops):
        element = {"Product": {"Name": "Chai", "Tags": ["tea"]}, "Paid": True, "Size": 1.5, "@kind": "box"}
        fake_store.add(make_document(doc_id="orders/1-A", Lines=[element]))

        connector.update(child_configuration, {})

        row = lines_of(ops)[("orders/1-A", 0)]
        as_document = connector.flatten(make_document(doc_id="x", **element))
        assert {name: row[name] for name in as_document if name not in ("Id", "LastModified")} == {
            name: value for name, value in as_document.items() if name not in ("Id", "LastModified")
        }
        assert row["Product_Name"] == "Chai" and row["Product_Tags"] == ["tea"] and row["Paid"] == "true"

    def test_element_fields_named_like_the_key_columns_keep_their_values_in_columns_of_their_own(
        self, fake_store, make_document, child_configuration, ops
    ):
        element = {"Id": "line-7", "LinesIndex": 9, "Value": 3, "LastModified": "yesterday"}
        fake_store.add(make_document(doc_id="orders/1-A", Lines=[element]))

        connector.update(child_configuration, {})

        row = lines_of(ops)[("orders/1-A", 0)]
        assert (row["Id"], row["lines_index"]) == ("orders/1-A", 0)
        assert {name: row[name] for name in ("id_2", "lines_index_2", "value_2", "last_modified_2")} == {
            "id_2": "line-7",
            "lines_index_2": 9,
            "value_2": 3,
            "last_modified_2": "yesterday",
        }

    @pytest.mark.parametrize(
        ("elements", "values"),
        [
            pytest.param([5, "x", None, [1, 2]], [5, "x", None, [1, 2]], id="scalars-and-lists"),
            pytest.param([{"A": 1}, 2.5], [None, "2.5"], id="objects-mixed-with-values"),
        ],
    )
    def test_an_element_that_is_not_an_object_lands_in_a_value_column(
        self, fake_store, make_document, child_configuration, ops, elements, values
    ):
        fake_store.add(make_document(doc_id="orders/1-A", Lines=elements))

        connector.update(child_configuration, {})

        assert [lines_of(ops)[("orders/1-A", index)].get("Value") for index in range(len(values))] == values

    @pytest.mark.parametrize("lines", [None, "none", {"Product": "x"}], ids=["null", "text", "object"])
    def test_a_value_that_is_no_array_stays_in_the_document_row(
        self, fake_store, make_document, child_configuration, ops, lines
    ):
        fake_store.add(make_document(doc_id="orders/1-A", Lines=lines))

        connector.update(child_configuration, {})

        assert lines_of(ops) == {}
        row = ops.rows("Orders")["orders/1-A"]
        assert row.get("Lines", row.get("Lines_Product")) == (lines["Product"] if isinstance(lines, dict) else lines)

    def test_a_grandchild_array_lands_in_its_own_table_keyed_down_the_path(
        self, fake_store, make_document, base_configuration, ops
    ):
        batches = [{"Lot": "L1", "Quantity": 4}, {"Lot": "L2", "Quantity": 8}]
        fake_store.add(make_document(doc_id="orders/1-A", Lines=[line(11), line(42, Batches=batches)]))

        connector.update({**base_configuration, "child_tables": "Orders.Lines,Orders.Lines.Batches"}, {})

        assert set(lines_of(ops)) == {("orders/1-A", 0), ("orders/1-A", 1)}
        assert "Batches" not in lines_of(ops)[("orders/1-A", 1)]
        grandchildren = ops.rows("Orders_lines_batches", BATCHES)
        assert {key: (row["Lot"], row["Quantity"]) for key, row in grandchildren.items()} == {
            ("orders/1-A", 1, 0): ("L1", 4),
            ("orders/1-A", 1, 1): ("L2", 8),
        }

    def test_star_makes_a_table_of_every_array_of_objects_and_leaves_other_arrays_json(
        self, fake_store, make_document, base_configuration, ops
    ):
        order = make_document(
            doc_id="orders/1-A",
            Lines=[line(1, Batches=[{"Lot": "L1"}])],
            ShipTo={"Stops": [{"City": "Reims"}]},
            Tags=["a", "b"],
        )
        fake_store.add(order)

        connector.update({**base_configuration, "child_tables": "*"}, {})

        assert {table for table, _ in ops.upserts} == {
            "Orders",
            "Orders_lines",
            "Orders_lines_batches",
            "Orders_ship_to_stops",
        }
        assert ops.rows("Orders")["orders/1-A"]["Tags"] == ["a", "b"]
        assert ops.rows("Orders_ship_to_stops", ("Id", "ship_to_stops_index"))[("orders/1-A", 0)]["City"] == "Reims"

    def test_an_array_star_found_stays_a_table_when_the_newest_documents_no_longer_hold_it(
        self, fake_store, make_document, base_configuration, ops
    ):
        configuration = {**base_configuration, "child_tables": "*"}
        fake_store.add(make_document(doc_id="orders/1-A", Lines=[line(1)]))
        connector.update(configuration, {})
        state = ops.checkpoints[-1]
        fake_store.add(*(make_document(last_modified=f"2024-06-01T00:00:00.{n:07d}Z") for n in range(1, 501)))

        connector.update(configuration, state)

        assert ops.checkpoints[-1]["child_paths"] == {"Orders": [["Lines"]]}
        assert [table for table, data in ops.upserts].count("Orders") == 501  # orders/1-A was not read again

    def test_star_looks_for_no_array_inside_a_dictionary_keyed_by_ids(
        self, fake_store, make_document, base_configuration, ops
    ):
        stock = {"products/1-A": {"Lots": [{"Lot": "L1"}]}, "products/2-A": {"Lots": [{"Lot": "L2"}]}}
        fake_store.add(make_document(doc_id="orders/1-A", Stock=stock))

        connector.update({**base_configuration, "child_tables": "*"}, {})

        assert {table for table, _ in ops.upserts} == {"Orders"}

    def test_schema_declares_each_child_table_with_its_composite_key(
        self, fake_store, make_document, base_configuration
    ):
        fake_store.add(make_document(Lines=[line(1, Code="7", Batches=[{"Lot": "L1"}])]))

        tables = {table["table"]: table for table in connector.schema({**base_configuration, "child_tables": "*"})}

        assert tables["Orders_lines"]["primary_key"] == ["Id", "lines_index"]
        assert tables["Orders_lines"]["columns"] == {
            "Id": "STRING",
            "LastModified": "UTC_DATETIME",
            "lines_index": "LONG",
            "Product": "STRING",
            "Code": "STRING",
        }
        assert tables["Orders_lines_batches"]["primary_key"] == ["Id", "lines_index", "batches_index"]
        assert "Lines" not in tables["Orders"]["columns"]


class TestNamesThatWouldMeet:
    def test_a_listed_array_whose_table_is_another_collections_is_refused_naming_the_setting(
        self, fake_store, make_document, base_configuration, ops
    ):
        fake_store.add(make_document("Orders", Lines=[line(1)]), make_document("OrdersLines", Product="x"))
        configuration = {**base_configuration, "collection_name": "", "child_tables": "Orders.Lines"}

        with pytest.raises(connector.SourceError, match=r"^child_tables: Orders\.Lines would land in the table of"):
            connector.update(configuration, {})

    def test_star_keeps_such_an_array_as_json(self, fake_store, make_document, base_configuration, ops):
        fake_store.add(make_document("Orders", doc_id="orders/1-A", Lines=[line(1)]), make_document("OrdersLines"))

        connector.update({**base_configuration, "collection_name": "", "child_tables": "*"}, {})

        assert ops.rows("Orders")["orders/1-A"]["Lines"] == [line(1)]
        assert lines_of(ops) == {}


class TestExactUnderChange:
    @pytest.mark.parametrize(
        "after",
        [
            pytest.param([line(1, 5), line(2), line(3), line(4)], id="lines-added"),
            pytest.param([line(1, 9), line(7)], id="lines-changed"),
            pytest.param([line(2)], id="shrinks-to-one"),
            pytest.param([], id="shrinks-to-empty"),
            pytest.param(None, id="array-removed"),
        ],
    )
    def test_the_child_table_follows_the_array_across_syncs(
        self, fake_store, make_document, child_configuration, ops, after
    ):
        fake_store.add(make_document(doc_id="orders/1-A", Lines=[line(1), line(2), line(3)]))
        connector.update(child_configuration, {})
        state = ops.checkpoints[-1]

        changed = make_document(doc_id="orders/1-A", last_modified="2024-06-01T00:00:00.0000000Z", Lines=after)
        fake_store.add(changed)
        connector.update(child_configuration, state)

        assert lines_of(ops) == expected_lines(changed)

    def test_a_document_in_the_revisions_bin_takes_its_child_rows_with_it(
        self, fake_store, make_document, child_configuration, ops
    ):
        kept = make_document(doc_id="orders/1-A", Lines=[line(1)])
        fake_store.add(kept, make_document(doc_id="orders/2-A", Lines=[line(1), line(2), line(3)]))
        fake_store.revisions_bin = []
        connector.update(child_configuration, {})
        state = ops.checkpoints[-1]

        del fake_store.documents["orders/2-A"]
        deletion = {
            "@metadata": {
                "@id": "orders/2-A",
                "@collection": "Orders",
                "@last-modified": "2030-01-01T00:00:00.0000000Z",
                "@flags": "DeleteRevision",
            }
        }
        fake_store.revisions_bin = [deletion]
        connector.update(child_configuration, state)

        assert lines_of(ops) == expected_lines(kept)
        assert set(ops.rows("Orders")) == {"orders/1-A"}

    def test_a_sync_that_dies_after_widening_resumes_without_orphans(
        self, fake_store, make_document, child_configuration, ops, monkeypatch
    ):
        """Rows written after the last checkpoint may have landed; the state still knows how wide they went."""
        fake_store.add(make_document(doc_id="orders/1-A", Lines=[line(1)]))
        connector.update(child_configuration, {})
        state = ops.checkpoints[-1]
        grown = make_document(doc_id="orders/1-A", last_modified="2024-06-01T00:00:00.0000000Z", Lines=[line(1)] * 5)
        fake_store.add(grown)
        upsert = ops.upsert

        def dies_after_the_fifth_line(table, data):
            upsert(table, data)
            if data.get("lines_index") == 4:
                raise ConnectionResetError("sync killed")

        monkeypatch.setattr(ops, "upsert", dies_after_the_fifth_line)
        with pytest.raises(ConnectionResetError):
            connector.update(child_configuration, state)
        monkeypatch.setattr(ops, "upsert", upsert)
        shrunk = make_document(doc_id="orders/1-A", last_modified="2024-06-02T00:00:00.0000000Z", Lines=[line(8)])
        fake_store.add(shrunk)

        connector.update(child_configuration, ops.checkpoints[-1])

        assert lines_of(ops) == expected_lines(shrunk)

    def test_the_state_keeps_one_bound_per_child_table_not_one_entry_per_document(
        self, fake_store, make_document, child_configuration, ops
    ):
        fake_store.add(*(make_document(Lines=[line(n)] * (1 + n % 4)) for n in range(1, 2001)))

        connector.update(child_configuration, {})

        assert ops.checkpoints[-1]["child_rows"] == {"Orders_lines": {"width": 4}}
        assert ops.checkpoints[-1]["child_paths"] == {"Orders": [["Lines"]]}

    def test_selecting_a_new_array_reads_the_collection_again_and_dropping_one_marks_its_rows_deleted(
        self, fake_store, make_document, base_configuration, ops
    ):
        order = make_document(doc_id="orders/1-A", Lines=[line(1)], Notes=[{"Text": "call first"}])
        fake_store.add(order)
        connector.update({**base_configuration, "child_tables": "Orders.Lines"}, {})
        state = ops.checkpoints[-1]

        connector.update({**base_configuration, "child_tables": "Orders.Notes"}, state)

        assert lines_of(ops) == {}
        assert ops.rows("Orders_notes", ("Id", "notes_index"))[("orders/1-A", 0)]["Text"] == "call first"
        assert ops.rows("Orders")["orders/1-A"]["Lines"] == [line(1)]


@pytest.mark.parametrize(
    "child_state",
    [
        pytest.param({"child_paths": {"Orders": 5}}, id="paths-not-a-list"),
        pytest.param({"child_widths": {"Orders_lines": "wide"}}, id="width-not-a-number"),
        pytest.param({"child_rows": {"Orders_lines": {"width": "wide"}}}, id="bound-not-a-number"),
        pytest.param({"child_rows": {"Orders_lines": {"long": [[7, 300]]}}}, id="long-array-without-its-document"),
        pytest.param({"child_rows": {"Orders_lines": [4]}}, id="rows-not-a-mapping"),
        pytest.param({"child_columns": ["Orders_lines"]}, id="columns-not-a-mapping"),
    ],
)
def test_a_child_table_state_the_connector_did_not_write_is_refused_in_one_line(child_state):
    with pytest.raises(connector.SourceError, match=r"^state: the child tables are not in the layout written"):
        connector.SyncState.load({"version": 1, "cursors": {}, **child_state})

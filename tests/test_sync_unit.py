"""update() and schema() against a mocked DocumentStore: what lands, in what order, with which checkpoints."""

import base64
import glob
import os
import stat
import subprocess
import tempfile
from datetime import datetime, timezone

import pytest

import connector
from connector import SourceError, flatten
from tests.certificate_forms import cert_pem, key_pem, self_signed


def store(fake_store, *documents):
    for document in documents:
        fake_store.documents[document["@metadata"]["@id"]] = document


def test_schema_declares_id_and_last_modified_per_configured_collection(fake_store, make_document, base_configuration):
    store(fake_store, make_document("Orders", Freight=3.5), make_document("Companies"))

    tables = connector.schema(base_configuration)

    assert tables == [
        {"table": "Orders", "primary_key": ["Id"], "columns": {"Id": "STRING", "LastModified": "UTC_DATETIME"}}
    ]


def test_schema_discovers_user_collections_without_system_ones(fake_store, make_document, base_configuration):
    del base_configuration["collection_name"]
    store(fake_store, make_document("Orders"), make_document("Companies"), make_document("@hilo"))

    assert [table["table"] for table in connector.schema(base_configuration)] == ["Companies", "Orders"]


def test_first_sync_upserts_every_document_with_id_and_last_modified(
    fake_store, make_document, base_configuration, ops
):
    store(fake_store, make_document(last_modified="2024-05-01T10:11:12.1234567Z", doc_id="orders/1-A", Freight=3))

    connector.update(base_configuration, {})

    assert ops.upserts == [
        (
            "Orders",
            {
                "Freight": 3,
                "Id": "orders/1-A",
                "LastModified": datetime(2024, 5, 1, 10, 11, 12, 123456, tzinfo=timezone.utc),
            },
        )
    ]


def test_cursor_keeps_the_full_seven_digit_timestamp(fake_store, make_document, base_configuration, ops):
    store(fake_store, make_document(last_modified="2024-05-01T10:11:12.1234567Z"))

    connector.update(base_configuration, {})

    assert ops.checkpoints[-1] == {
        "version": 1,
        "cursors": {"Orders": "2024-05-01T10:11:12.1234567Z"},
        "versions_at_cursor": {"Orders": {"orders/1-A": "A:1-x"}},
    }


def test_a_document_that_landed_at_the_cursor_timestamp_is_not_upserted_again(
    fake_store, make_document, base_configuration, ops
):
    store(fake_store, make_document(last_modified="2024-05-01T10:11:12.1234567Z"))
    connector.update(base_configuration, {})
    state = ops.checkpoints[-1]

    connector.update(base_configuration, state)

    assert len(ops.upserts) == 1


def test_past_the_cap_the_versions_at_the_cursor_are_not_kept_and_are_read_again(
    fake_store, make_document, base_configuration, ops, monkeypatch
):
    monkeypatch.setattr(connector, "_MAX_VERSIONS_AT_CURSOR", 2)
    tick = "2024-05-01T10:11:12.1234567Z"
    store(fake_store, *(make_document(last_modified=tick) for _ in range(3)))
    connector.update(base_configuration, {})

    connector.update(base_configuration, ops.checkpoints[-1])

    assert ops.checkpoints[-1]["versions_at_cursor"] == {}
    assert len(ops.upserts) == 6


def test_next_sync_asks_for_documents_at_or_after_the_cursor(fake_store, make_document, base_configuration, ops):
    store(fake_store, make_document())
    state = {"version": 1, "cursors": {"Orders": "2024-05-01T10:11:12.1234567Z"}}

    connector.update(base_configuration, state)

    rql, parameters = fake_store.instances[0].queries[0]
    assert rql == "from 'Orders' where @metadata.'@last-modified' >= $since order by @metadata.'@last-modified'"
    assert parameters == {"since": "2024-05-01T10:11:12.1234567Z"}


def test_documents_sharing_the_cursor_timestamp_are_read_again_not_skipped(
    fake_store, make_document, base_configuration, ops
):
    tick = "2024-05-01T10:11:12.1234567Z"
    store(fake_store, make_document(last_modified=tick, doc_id="orders/2-A"))
    connector.update(base_configuration, {})
    store(fake_store, make_document(last_modified=tick, doc_id="orders/1-A"))  # same tick, smaller id, written later

    connector.update(base_configuration, ops.checkpoints[-1])

    assert set(ops.rows("Orders")) == {"orders/1-A", "orders/2-A"}


def test_checkpoint_every_thousand_records_and_at_the_end(fake_store, make_document, base_configuration, ops):
    store(fake_store, *(make_document(last_modified=f"2024-05-01T10:00:00.{n:07d}Z") for n in range(2500)))

    connector.update(base_configuration, {})

    cursors = [state["cursors"]["Orders"] for state in ops.checkpoints]
    assert cursors == [
        "2024-05-01T10:00:00.0000999Z",
        "2024-05-01T10:00:00.0001999Z",
        "2024-05-01T10:00:00.0002499Z",
        "2024-05-01T10:00:00.0002499Z",
    ]


def test_each_checkpoint_follows_the_upserts_it_covers(fake_store, make_document, base_configuration, ops):
    store(fake_store, *(make_document() for _ in range(1500)))

    connector.update(base_configuration, {})

    first_checkpoint = next(i for i, call in enumerate(ops.calls) if call[0] == "checkpoint")
    assert first_checkpoint == 1000


def test_store_is_closed_and_certificate_file_removed_when_the_sync_fails(
    fake_store, make_document, base_configuration, ops, monkeypatch
):
    store(fake_store, make_document())
    monkeypatch.setattr(connector, "flatten", lambda document, columns: 1 / 0)

    with pytest.raises(ZeroDivisionError):
        connector.update(base_configuration, {})

    assert fake_store.instances[0].closed


def test_unknown_collection_names_the_setting_and_lists_what_exists(fake_store, make_document, base_configuration):
    store(fake_store, make_document("Orders"))
    base_configuration["collection_name"] = "Ordres"

    with pytest.raises(
        SourceError,
        match=r"^collection_name: 'Ordres' does not exist in database 'Northwind' "
        r"\(has: Orders\)$",
    ):
        connector.update(base_configuration, {})


def test_collection_names_match_case_insensitively_as_in_ravendb(fake_store, make_document, base_configuration, ops):
    store(fake_store, make_document("Orders"))
    base_configuration["collection_name"] = "orders"

    connector.update(base_configuration, {})

    assert [table for table, _ in ops.upserts] == ["Orders"]


def test_a_collection_gone_since_the_last_sync_is_logged_not_an_error(
    fake_store, make_document, base_configuration, ops
):
    del base_configuration["collection_name"]
    store(fake_store, make_document("Orders"))
    state = {"version": 1, "cursors": {"Archive": "2024-05-01T10:11:12.1234567Z"}}

    connector.update(base_configuration, state)

    assert ops.checkpoints[-1]["cursors"]["Archive"] == "2024-05-01T10:11:12.1234567Z"


@pytest.mark.parametrize(
    "state",
    [
        {"cursors": {}},
        {"version": 1, "cursors": {"Orders": "2024-05-01"}},
        {"version": 1, "cursors": []},
        {"version": 1, "cursors": {}, "columns": {"Orders": [5]}},
    ],
    ids=["no-version", "truncated-cursor", "cursors-not-a-map", "columns-not-path-name-lists"],
)
def test_a_state_the_connector_did_not_write_is_refused(fake_store, base_configuration, state):
    with pytest.raises(SourceError, match=r"^state: "):
        connector.update(base_configuration, state)


def test_collection_name_with_quotes_is_escaped_not_injected(fake_store, make_document, base_configuration, ops):
    hostile = "Orders' or true or '"
    store(fake_store, make_document(hostile))
    base_configuration["collection_name"] = hostile

    connector.update(base_configuration, {})

    assert fake_store.instances[0].queries[0][0].startswith("from 'Orders\\' or true or \\'' where ")
    assert len(ops.upserts) == 1


class TestFlatten:
    def test_nested_objects_join_with_underscore(self, make_document):
        row = flatten(make_document(ShippingAddress={"City": "Reims", "Location": {"Latitude": 49.25}}))

        assert row["ShippingAddress_City"] == "Reims"
        assert row["ShippingAddress_Location_Latitude"] == "49.25"

    def test_arrays_stay_arrays_for_a_json_column(self, make_document):
        row = flatten(make_document(Lines=[{"Product": "products/1-A", "Quantity": 2}], Tags=[]))

        assert row["Lines"] == [{"Product": "products/1-A", "Quantity": 2}]
        assert row["Tags"] == []

    def test_only_the_top_level_metadata_is_skipped(self, make_document):
        row = flatten(make_document(Name="x", **{"@flags": "y"}, Item={"@context": "https://schema.org"}))

        assert set(row) == {"Name", "_flags", "item_context", "Id", "LastModified"}


def deletion(doc_id: str, deleted_at: str, collection: str = "Orders") -> dict:
    metadata = {"@id": doc_id, "@collection": collection, "@last-modified": deleted_at, "@flags": "DeleteRevision"}
    return {"@metadata": metadata}


class TestDeletes:
    def test_first_sync_records_the_bin_position_without_deleting(
        self, fake_store, make_document, base_configuration, ops
    ):
        store(fake_store, make_document("Orders"))
        fake_store.revisions_bin = [deletion("orders/9-A", "2024-05-02T00:00:00.0000000Z")]

        connector.update(base_configuration, {})

        assert [call for call in ops.calls if call[0] == "delete"] == []
        assert ops.checkpoints[-1]["deletes_since"] == "2024-05-02T00:00:00.0000000Z"

    def test_entries_since_the_last_sync_are_deleted_in_their_collection_only(
        self, fake_store, make_document, base_configuration, ops
    ):
        store(fake_store, make_document("Orders"))
        fake_store.revisions_bin = [
            deletion("orders/3-A", "2024-05-03T00:00:00.0000000Z"),
            deletion("companies/1-A", "2024-05-02T12:00:00.0000000Z", collection="Companies"),
            deletion("orders/2-A", "2024-05-02T00:00:00.0000000Z"),
            deletion("orders/1-A", "2024-05-01T00:00:00.0000000Z"),
        ]
        state = {"version": 1, "cursors": {}, "deletes_since": "2024-05-02T00:00:00.0000000Z"}

        connector.update(base_configuration, state)

        deletes = [(table, keys) for kind, table, keys in ops.calls if kind == "delete"]
        assert deletes == [("Orders", {"Id": "orders/3-A"}), ("Orders", {"Id": "orders/2-A"})]
        assert ops.checkpoints[-1]["deletes_since"] == "2024-05-03T00:00:00.0000000Z"

    def test_bin_is_read_in_pages_of_batch_size(self, fake_store, make_document, base_configuration, ops):
        store(fake_store, make_document("Orders"))
        fake_store.revisions_bin = [deletion(f"orders/{n}-A", f"2024-05-02T00:00:00.{n:07d}Z") for n in range(5, 0, -1)]
        base_configuration["batch_size"] = "2"
        state = {"version": 1, "cursors": {}, "deletes_since": "2024-05-01T00:00:00.0000000Z"}

        connector.update(base_configuration, state)

        assert len([call for call in ops.calls if call[0] == "delete"]) == 5

    def test_without_revisions_there_is_no_delete_and_no_error(
        self, fake_store, make_document, base_configuration, ops
    ):
        store(fake_store, make_document("Orders"))

        connector.update(base_configuration, {})

        assert "deletes_since" not in ops.checkpoints[-1]


def test_a_failing_sync_reports_one_line_through_op_error_without_a_traceback_chain(
    fake_store, base_configuration, ops
):
    base_configuration["collection_name"] = "Missing"

    with pytest.raises(SourceError) as raised:
        connector.update(base_configuration, {})

    assert ops.calls[-1] == ("error", None, str(raised.value))
    assert raised.value.__cause__ is None and raised.value.__context__ is None


@pytest.mark.parametrize("interruption", [KeyboardInterrupt, ConnectionResetError], ids=["interrupt", "error"])
def test_certificate_file_is_owner_only_and_gone_on_every_path(
    fake_store, make_document, base_configuration, monkeypatch, interruption
):
    key, certificate = self_signed()
    base_configuration.update(
        ravendb_urls="https://127.0.0.1:8443",
        certificate_base64=base64.b64encode(cert_pem(certificate) + key_pem(key)).decode(),
    )
    store(fake_store, make_document())
    modes = []

    def interrupt(document, columns):
        path = fake_store.instances[0].certificate_pem_path
        modes.append(stat.S_IMODE(os.stat(path).st_mode))
        raise interruption

    monkeypatch.setattr(connector, "flatten", interrupt)
    pattern = os.path.join(tempfile.gettempdir(), "ravendb-connector-*")
    before = set(glob.glob(pattern))

    with pytest.raises(interruption):
        connector.update(base_configuration, {})

    assert modes == [0o600]
    assert set(glob.glob(pattern)) == before
    assert fake_store.instances[0].closed


def test_a_certificate_folder_left_by_a_killed_sync_is_removed_by_the_next_one(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = finished_process_pid()
    orphan = tmp_path / f"ravendb-connector-{dead}-x1"
    live = tmp_path / f"ravendb-connector-{os.getpid()}-x2"
    for folder in (orphan, live):
        folder.mkdir(mode=0o700)
        (folder / "client.pem").write_text("key material")

    connector._remove_orphaned_private_files()

    assert not orphan.exists()
    assert live.exists()


def finished_process_pid() -> int:
    """A pid no process has now."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid

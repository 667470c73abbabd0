"""update() and schema() against a mocked DocumentStore: what lands, in what order, with which checkpoints."""

import base64
import os
import re
import stat
import subprocess
import tempfile
from datetime import datetime, timezone

import pytest

import connector
from connector import SourceError, flatten
from tests.certificate_forms import cert_pem, key_pem, self_signed


def test_schema_declares_id_and_last_modified_per_configured_collection(fake_store, make_document, base_configuration):
    fake_store.add(make_document("Orders", Freight=3.5), make_document("Companies"))

    tables = connector.schema(base_configuration)

    assert tables == [
        {"table": "Orders", "primary_key": ["Id"], "columns": {"Id": "STRING", "LastModified": "UTC_DATETIME"}}
    ]


def test_schema_discovers_user_collections_without_system_ones(fake_store, make_document, base_configuration):
    del base_configuration["collection_name"]
    fake_store.add(make_document("Orders"), make_document("Companies"), make_document("@hilo"))

    assert [table["table"] for table in connector.schema(base_configuration)] == ["Companies", "Orders"]


def test_first_sync_upserts_every_document_with_id_and_last_modified(
    fake_store, make_document, base_configuration, ops
):
    fake_store.add(make_document(last_modified="2024-05-01T10:11:12.1234567Z", doc_id="orders/1-A", Freight=3))

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


def test_the_state_keeps_the_cursor_as_ravendb_text_and_each_version_in_eight_characters(
    fake_store, make_document, base_configuration, ops
):
    fake_store.add(make_document(last_modified="2024-05-01T10:11:12.1234567Z"))  # newer than the read's bound

    connector.update(base_configuration, {})

    saved = ops.checkpoints[-1]
    assert saved["version"] == 3
    assert re.fullmatch(r"2024-05-01T(10:00:00|09:59:59)\.\d{7}Z", saved["cursors"]["Orders"])  # 10:01 less 60 s
    assert list(saved["kept"]) == ["Orders"]
    assert [(second, len(text)) for second, text in saved["kept"]["Orders"].items()] == [("2024-05-01T10:11:12", 8)]


def test_a_document_that_landed_at_the_cursor_timestamp_is_not_upserted_again(
    fake_store, make_document, base_configuration, ops
):
    fake_store.add(make_document(last_modified="2024-05-01T10:11:12.1234567Z"))
    connector.update(base_configuration, {})
    state = ops.checkpoints[-1]

    connector.update(base_configuration, state)

    assert len(ops.upserts) == 1


def test_every_version_read_again_is_kept_whatever_their_number_and_none_lands_again(
    fake_store, make_document, base_configuration, ops
):
    tick = "2024-05-01T10:11:12.1234567Z"
    fake_store.add(*(make_document(last_modified=tick) for _ in range(10_000)))
    connector.update(base_configuration, {})

    connector.update(base_configuration, ops.checkpoints[-1])

    assert len(ops.upserts) == 10_000
    assert len(ops.checkpoints[-1]["kept"]["Orders"]["2024-05-01T10:11:12"]) == 8 * 10_000


def test_next_sync_asks_for_documents_at_or_after_the_cursor(fake_store, make_document, base_configuration, ops):
    fake_store.add(make_document())
    state = {"version": 1, "cursors": {"Orders": "2024-05-01T10:11:12.1234567Z"}}

    connector.update(base_configuration, state)

    rql, parameters = fake_store.stores[0].queries[0]
    assert rql == "from 'Orders' where @metadata.'@last-modified' >= $since order by @metadata.'@last-modified'"
    assert parameters == {"since": "2024-05-01T10:11:12.1234567Z"}


def test_documents_sharing_the_cursor_timestamp_are_read_again_not_skipped(
    fake_store, make_document, base_configuration, ops
):
    tick = "2024-05-01T10:11:12.1234567Z"
    fake_store.add(make_document(last_modified=tick, doc_id="orders/2-A"))
    connector.update(base_configuration, {})
    fake_store.add(make_document(last_modified=tick, doc_id="orders/1-A"))  # same tick, smaller id, written later

    connector.update(base_configuration, ops.checkpoints[-1])

    assert set(ops.rows("Orders")) == {"orders/1-A", "orders/2-A"}


def test_checkpoint_every_thousand_records_and_at_the_end(fake_store, make_document, base_configuration, ops):
    fake_store.server_date = datetime(2024, 5, 1, 10, 6, tzinfo=timezone.utc)
    fake_store.add(*(make_document(last_modified=f"2024-05-01T10:00:00.{n:07d}Z") for n in range(2500)))

    connector.update(base_configuration, {})

    cursors = [state["cursors"]["Orders"] for state in ops.checkpoints]
    assert cursors[:2] == ["2024-05-01T10:00:00.0000999Z", "2024-05-01T10:00:00.0001999Z"]
    assert cursors[2] > "2024-05-01T10:04:59"  # the read ended: the server's time when it began, less 60 s


def test_a_read_of_documents_older_than_its_bound_keeps_only_the_version_at_its_cursor(
    fake_store, make_document, base_configuration, ops
):
    fake_store.server_date = datetime(2024, 5, 1, 10, 6, tzinfo=timezone.utc)
    fake_store.add(*(make_document(last_modified=f"2024-05-01T10:00:00.{n:07d}Z") for n in range(2500)))

    connector.update(base_configuration, {})

    *during, final = ops.checkpoints
    kept_during = [len(text) for state in during for text in state["kept"]["Orders"].values()]
    assert kept_during == [8, 8]  # one version each: the document at the cursor, which the next read returns again
    assert "kept" not in final


def test_each_checkpoint_follows_the_upserts_it_covers(fake_store, make_document, base_configuration, ops):
    fake_store.add(*(make_document() for _ in range(1500)))

    connector.update(base_configuration, {})

    first_checkpoint = next(i for i, call in enumerate(ops.calls) if call[0] == "checkpoint")
    assert first_checkpoint == 1000


def with_client_certificate(configuration: dict[str, str]) -> dict[str, str]:
    """`configuration` for an https server with a self-signed client certificate and its key."""
    key, certificate = self_signed()
    configuration.update(
        ravendb_urls="https://127.0.0.1:8443",
        certificate_base64=base64.b64encode(cert_pem(certificate) + key_pem(key)).decode(),
    )
    return configuration


def test_store_is_closed_and_certificate_file_removed_when_the_sync_fails(
    fake_store, make_document, base_configuration, ops, monkeypatch
):
    fake_store.add(make_document())
    monkeypatch.setattr(connector, "flatten", lambda document, columns: 1 / 0)

    with pytest.raises(ZeroDivisionError):
        connector.update(with_client_certificate(base_configuration), {})

    (store,) = fake_store.stores
    assert store.closed
    assert store.certificate_pem_path is not None
    assert not os.path.exists(store.certificate_pem_path)
    assert not os.path.exists(os.path.dirname(store.certificate_pem_path))


def test_unknown_collection_names_the_setting_and_lists_what_exists(fake_store, make_document, base_configuration):
    fake_store.add(make_document("Orders"))
    base_configuration["collection_name"] = "Ordres"

    with pytest.raises(
        SourceError,
        match=r"^collection_name: 'Ordres' does not exist in database 'Northwind' "
        r"\(has: Orders\)$",
    ):
        connector.update(base_configuration, {})


def test_collection_names_match_case_insensitively_as_in_ravendb(fake_store, make_document, base_configuration, ops):
    fake_store.add(make_document("Orders"))
    base_configuration["collection_name"] = "orders"

    connector.update(base_configuration, {})

    assert [table for table, _ in ops.upserts] == ["Orders"]


def test_a_collection_gone_since_the_last_sync_is_logged_not_an_error(
    fake_store, make_document, base_configuration, ops
):
    del base_configuration["collection_name"]
    fake_store.add(make_document("Orders"))
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
        {"version": 2, "cursors": {"Orders": "2024-05-01T10:11:12.1234567Z"}, "synced_versions": {"Orders": {"o": 5}}},
        {"version": 3, "cursors": {"Orders": "2024-05-01T10:11:12.1234567Z"}, "kept": {"Orders": {"2024": "abc"}}},
        {"version": 3, "cursors": {}, "database": {"since": "2024-05-01T10:11:12.1234567Z"}},
        {"version": 4, "cursors": {}},
    ],
    ids=[
        "no-version",
        "truncated-cursor",
        "cursors-not-a-map",
        "columns-not-path-name-lists",
        "versions-malformed",
        "kept-not-whole-hashes",
        "database-without-collections",
        "a-later-version",
    ],
)
def test_a_state_the_connector_did_not_write_is_refused(fake_store, base_configuration, state):
    with pytest.raises(SourceError, match=r"^state: "):
        connector.update(base_configuration, state)


def test_collection_name_with_quotes_is_escaped_not_injected(fake_store, make_document, base_configuration, ops):
    hostile = "Orders' or true or '"
    fake_store.add(make_document(hostile))
    base_configuration["collection_name"] = hostile

    connector.update(base_configuration, {})

    assert fake_store.stores[0].queries[0][0].startswith("from 'Orders\\' or true or \\'' where ")
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
    metadata = {
        "@id": doc_id,
        "@collection": collection,
        "@change-vector": f"A:{deleted_at[-8:-1]}-{doc_id}",
        "@last-modified": deleted_at,
        "@flags": "HasRevisions, DeleteRevision, Revision",
    }
    return {"@metadata": metadata}


def at(n: int) -> str:
    """The n-th deletion time of a test bin."""
    return f"2024-05-02T00:00:00.{n:07d}Z"


def position(entry: dict) -> dict:
    """A state whose newest bin entry handled is `entry`."""
    metadata = entry["@metadata"]
    return {
        "version": 1,
        "cursors": {},
        "deletes_since": metadata["@last-modified"],
        "deletes_change_vector": metadata["@change-vector"],
    }


def deleted_ids(ops) -> list[str]:
    return [keys["Id"] for kind, _, keys in ops.calls if kind == "delete"]


class TestDeletes:
    def test_first_sync_records_the_bin_position_without_deleting(
        self, fake_store, make_document, base_configuration, ops
    ):
        fake_store.add(make_document("Orders"))
        newest = deletion("orders/9-A", at(9))
        fake_store.revisions_bin = [None, newest, deletion("orders/8-A", at(8))]

        connector.update(base_configuration, {})

        assert deleted_ids(ops) == []
        assert ops.checkpoints[-1]["deletes_since"] == at(9)
        assert ops.checkpoints[-1]["deletes_change_vector"] == newest["@metadata"]["@change-vector"]

    def test_entries_since_the_last_sync_are_deleted_in_their_collection_only(
        self, fake_store, make_document, base_configuration, ops
    ):
        fake_store.add(make_document("Orders"))
        handled = deletion("orders/2-A", at(2))
        fake_store.revisions_bin = [
            deletion("orders/4-A", at(4)),
            deletion("companies/1-A", at(3), collection="Companies"),
            handled,
            deletion("orders/1-A", at(1)),
        ]

        connector.update(base_configuration, position(handled))

        assert deleted_ids(ops) == ["orders/4-A"]
        assert ops.checkpoints[-1]["deletes_since"] == at(4)

    @pytest.mark.parametrize(
        "raw",
        [
            ["d5", "d4", "d3", "d2", "d1"],
            ["d5", None, None, None, None, "d4", None, "d3", "d2", None, None, None, None, None, "d1"],
            [None, None, None, None, None, None, None, "d5", "d4", "d3", "d2", "d1"],
        ],
        ids=["full-pages", "short-and-empty-pages", "leading-empty-pages"],
    )
    def test_every_entry_is_read_whatever_the_page_shapes(
        self, fake_store, make_document, base_configuration, ops, raw
    ):
        fake_store.add(make_document("Orders"))
        entries = {f"d{n}": deletion(f"orders/{n}-A", at(n + 10)) for n in range(1, 6)}
        handled = deletion("orders/99-A", at(1))
        fake_store.revisions_bin = [entries.get(name) for name in raw] + [handled]
        base_configuration["batch_size"] = "2"

        connector.update(base_configuration, position(handled))

        assert deleted_ids(ops) == [f"orders/{n}-A" for n in (5, 4, 3, 2, 1)]

    def test_pages_advance_by_the_page_size_and_grow_after_an_empty_one(
        self, fake_store, make_document, base_configuration, ops
    ):
        fake_store.add(make_document("Orders"))
        fake_store.revisions_bin = [deletion("orders/1-A", at(20)), *[None] * 12, deletion("orders/2-A", at(2))]
        base_configuration["batch_size"] = "2"
        state = {"version": 1, "cursors": {}, "deletes_since": at(10)}

        connector.update(base_configuration, state)

        pages = [url.split("?", 1)[1] for url in fake_store.stores[-1].bin_requests]
        assert pages == ["start=0&pageSize=2", "start=2&pageSize=2", "start=4&pageSize=4", "start=8&pageSize=8"]
        assert deleted_ids(ops) == ["orders/1-A"]

    def test_walk_stops_at_the_newest_entry_handled_even_within_its_timestamp(
        self, fake_store, make_document, base_configuration, ops
    ):
        fake_store.add(make_document("Orders"))
        handled = deletion("orders/2-A", at(5))
        fake_store.revisions_bin = [deletion("orders/3-A", at(5)), handled, deletion("orders/1-A", at(5))]

        connector.update(base_configuration, position(handled))

        assert deleted_ids(ops) == ["orders/3-A"]

    def test_a_sync_with_nothing_deleted_since_makes_one_bin_request(
        self, fake_store, make_document, base_configuration, ops
    ):
        fake_store.add(make_document("Orders"))
        handled = deletion("orders/2-A", at(2))
        fake_store.revisions_bin = [handled, deletion("orders/1-A", at(1))]

        connector.update(base_configuration, position(handled))

        assert len(fake_store.stores[-1].bin_requests) == 1
        assert deleted_ids(ops) == []

    def test_without_revisions_there_is_no_delete_no_error_and_one_bin_request(
        self, fake_store, make_document, base_configuration, ops
    ):
        fake_store.add(make_document("Orders"))

        connector.update(base_configuration, {})
        connector.update(base_configuration, ops.checkpoints[-1])

        assert deleted_ids(ops) == []
        assert [len(instance.bin_requests) for instance in fake_store.stores] == [1, 1]

    def test_a_saved_entry_no_longer_listed_is_logged_with_the_reconciliation_hint(
        self, fake_store, make_document, base_configuration, ops, logs
    ):
        fake_store.add(make_document("Orders"))
        fake_store.revisions_bin = [deletion("orders/5-A", at(5))]

        connector.update(base_configuration, position(deletion("orders/2-A", at(2))))

        assert deleted_ids(ops) == ["orders/5-A"]
        assert any("reconcile_deletes_hours" in line for line in logs.messages("WARNING"))

    def test_a_sharded_database_is_refused_in_one_line_before_the_bin_is_read(
        self, fake_store, make_document, base_configuration, ops
    ):
        fake_store.add(make_document("Orders"))
        fake_store.revisions_bin = [deletion("orders/5-A", at(5))]
        fake_store.shards = 3

        with pytest.raises(SourceError, match=r"^database_name: 'Northwind' is a sharded database \(3 shards\)"):
            connector.update(base_configuration, {})

        assert [store.bin_requests for store in fake_store.stores] == [[]]


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
    fake_store, make_document, base_configuration, monkeypatch, interruption, tmp_path
):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # no other process's certificate folders
    with_client_certificate(base_configuration)
    fake_store.add(make_document())
    modes = []

    def interrupt(document, columns):
        path = fake_store.stores[0].certificate_pem_path
        modes.append(stat.S_IMODE(os.stat(path).st_mode))
        raise interruption

    monkeypatch.setattr(connector, "flatten", interrupt)

    with pytest.raises(interruption):
        connector.update(base_configuration, {})

    assert modes == [0o600]
    assert list(tmp_path.iterdir()) == []
    assert fake_store.stores[0].closed


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

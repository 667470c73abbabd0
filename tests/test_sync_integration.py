"""update() through the real ravendb client over HTTPS with a client certificate, against the test server
(or a real RavenDB: see README "Tests"). What landed is what op.* received, recorded by the `ops` fixture."""

import time
from pathlib import Path

import pytest
from dateutil.parser import isoparse
from ravendb import ConfigureRevisionsOperation, RevisionsCollectionConfiguration, RevisionsConfiguration

import connector
from connector import ConfigurationError, SourceError
from tests import documents
from tests.documents import orders
from tests.syncing import b64_file, certificate_dirs, configuration_for, database_documents, database_rows, sync


@pytest.fixture
def quick_index_wait(monkeypatch):
    """Tests that keep an index stale on purpose should not wait the production 120 s for it."""
    monkeypatch.setattr(connector, "_INDEX_WAIT_SECONDS", 0.3)


def test_first_sync_lands_every_document_flattened(ravendb_target, ravendb_store, configuration, ops):
    documents.put(ravendb_store, orders(1, 30))

    sync(configuration, ops)

    assert ops.rows("Orders") == database_rows(ravendb_target, "Orders")
    row = ops.rows("Orders")["orders/7-A"]
    assert row["ShipTo_City"] == "Reims"
    assert row["ShipTo_Location_Latitude"] == "49.25595819999999"
    assert row["Lines"] == [{"Product": "products/7-A", "Quantity": 3, "PricePerUnit": 14.4}]
    assert row["LastModified"].tzinfo is not None and row["LastModified"].microsecond > 0


def test_cursor_ends_at_the_reads_start_on_the_server_clock_in_ravendb_seven_digit_text(
    ravendb_store, configuration, ops
):
    documents.put(ravendb_store, orders(1, 3))
    time.sleep(1.1)  # the server's Date header has whole seconds: its next second is after every write above

    state = sync({**configuration, "lookback_seconds": "0"}, ops)

    with ravendb_store.open_session() as session:
        newest = max(
            session.advanced.get_metadata_for(session.load(f"orders/{n}-A"))["@last-modified"] for n in (1, 2, 3)
        )
    cursor = state["cursors"]["Orders"]
    assert newest < cursor and connector._LAST_MODIFIED.fullmatch(cursor)  # every document older has been read


def test_last_modified_lands_as_a_utc_timestamp_to_the_microsecond(ravendb_target, ravendb_store, configuration, ops):
    documents.put(ravendb_store, orders(1, 5))

    sync(configuration, ops)

    for document in database_documents(ravendb_target, "Orders"):
        metadata = document["@metadata"]
        assert ops.rows("Orders")[metadata["@id"]]["LastModified"] == isoparse(metadata["@last-modified"])


def test_second_sync_without_changes_lands_nothing(ravendb_store, configuration, ops):
    documents.put(ravendb_store, orders(1, 50))
    state = sync(configuration, ops)
    first = len(ops.upserts)

    sync(configuration, ops, state)

    assert first == 50
    assert len(ops.upserts) == first


def test_third_sync_lands_exactly_the_inserts_and_updates(ravendb_target, ravendb_store, configuration, ops):
    documents.put(ravendb_store, orders(1, 50))
    state = sync(configuration, ops)
    state = sync(configuration, ops, state)
    before = len(ops.upserts)
    documents.put(ravendb_store, orders(51, 5) + orders(10, 2, Freight=99.5))

    sync(configuration, ops, state)

    changed = {row["Id"] for _, row in ops.upserts[before:]}
    assert changed == {f"orders/{n}-A" for n in (10, 11, 51, 52, 53, 54, 55)}
    assert ops.rows("Orders") == database_rows(ravendb_target, "Orders")


def test_many_documents_sharing_one_timestamp_survive_a_crash_across_checkpoints(
    ravendb_target, ravendb_store, standin_control, configuration, ops, monkeypatch
):
    standin_control.freeze_clock(True)
    documents.put(ravendb_store, orders(1, 2500))
    standin_control.freeze_clock(False)
    real_upsert, calls = ops.upsert, []

    def crash_after_1500(table, data):
        calls.append(data["Id"])
        if len(calls) > 1500:
            raise ConnectionAbortedError("sync killed")
        real_upsert(table, data)

    monkeypatch.setattr(ops, "upsert", crash_after_1500)
    with pytest.raises(ConnectionAbortedError):
        connector.update(configuration, {})
    resumed_from = ops.checkpoints[-1]
    committed = {row["Id"] for _, row in ops.upserts[:1000]}  # what the destination holds at that checkpoint
    monkeypatch.setattr(ops, "upsert", real_upsert)

    sync(configuration, ops, resumed_from)

    assert committed | set(ops.rows("Orders")) == set(database_rows(ravendb_target, "Orders"))
    assert len(set(ops.rows("Orders"))) == 2500


def test_writes_during_a_sync_are_in_the_destination_after_the_next_one(
    ravendb_target, ravendb_store, standin_control, configuration, ops, monkeypatch
):
    documents.put(ravendb_store, orders(1, 1500))
    real_upsert = ops.upsert

    def write_while_syncing(table, data):
        real_upsert(table, data)
        if len(ops.upserts) == 700:
            standin_control.freeze_clock(True)  # the writes below share one timestamp
            documents.put(ravendb_store, orders(5000, 20) + orders(3, 5, Freight=1.5) + orders(1400, 5, Freight=2.5))
            standin_control.freeze_clock(False)

    monkeypatch.setattr(ops, "upsert", write_while_syncing)
    state = sync(configuration, ops)
    after_first = set(ops.rows("Orders"))
    expected = database_rows(ravendb_target, "Orders")
    cursor = state["cursors"]["Orders"]
    older = {
        doc["@metadata"]["@id"]
        for doc in database_documents(ravendb_target, "Orders")
        if doc["@metadata"]["@last-modified"] < cursor
    }
    assert older <= after_first

    sync(configuration, ops, state)

    assert ops.rows("Orders") == expected


def test_a_stale_index_delays_documents_to_the_next_sync_but_never_loses_them(
    ravendb_target, ravendb_store, standin_control, configuration, ops, quick_index_wait, logs
):
    documents.put(ravendb_store, orders(1, 20))
    state = sync(configuration, ops)
    standin_control.pause_indexing(ravendb_target.database)
    documents.put(ravendb_store, orders(21, 10))

    state = sync(configuration, ops, state)
    assert "orders/25-A" not in ops.rows("Orders")
    assert any("stale" in line for line in logs.messages("WARNING"))

    standin_control.resume_indexing(ravendb_target.database)
    sync(configuration, ops, state)

    assert ops.rows("Orders") == database_rows(ravendb_target, "Orders")


def test_every_user_collection_is_synced_and_a_new_one_appears_next_sync(ravendb_target, ravendb_store, ops):
    configuration = configuration_for(ravendb_target)
    documents.put(ravendb_store, [*orders(1, 3), ("companies/1-A", "Companies", {"Name": "Vins"})])
    documents.put(ravendb_store, [("misc/1", None, {"Note": "no collection"})])
    state = sync(configuration, ops)
    assert {table for table, _ in ops.upserts} == {"Orders", "Companies"}

    documents.put(ravendb_store, [("shippers/1-A", "Shippers", {"Name": "Speedy Express"})])
    sync(configuration, ops, state)

    assert set(ops.rows("Shippers")) == {"shippers/1-A"}


class TestDeletesWithRevisions:
    @pytest.fixture
    def revisions(self, ravendb_store):
        configuration = RevisionsConfiguration(
            collections={"Orders": RevisionsCollectionConfiguration(minimum_revisions_to_keep=5)}
        )
        ravendb_store.maintenance.send(ConfigureRevisionsOperation(configuration))

    def test_deletes_reach_the_destination_incrementally_across_restarts(
        self, ravendb_store, revisions, configuration, ops
    ):
        documents.put(ravendb_store, orders(1, 10))
        state = sync(configuration, ops)
        documents.delete(ravendb_store, ["orders/2-A", "orders/3-A"])
        state = sync(configuration, ops, state)
        documents.delete(ravendb_store, ["orders/4-A"])

        sync(configuration, ops, dict(state))  # a new process resuming from the saved state

        deleted = {keys["Id"] for kind, _, keys in ops.calls if kind == "delete"}
        assert deleted == {"orders/2-A", "orders/3-A", "orders/4-A"}
        assert set(ops.rows("Orders")) == {f"orders/{n}-A" for n in (1, 5, 6, 7, 8, 9, 10)}

    def test_a_document_deleted_then_recreated_ends_up_present(self, ravendb_store, revisions, configuration, ops):
        documents.put(ravendb_store, orders(1, 3))
        state = sync(configuration, ops)
        documents.delete(ravendb_store, ["orders/2-A"])
        documents.put(ravendb_store, orders(2, 1, Freight=7.25))

        sync(configuration, ops, state)

        assert ops.rows("Orders")["orders/2-A"]["Freight"] == "7.25"

    def test_every_delete_lands_across_short_and_empty_bin_pages(
        self, ravendb_target, ravendb_store, revisions, configuration, ops
    ):
        self.delete_recreate_and_delete_again(ravendb_store, configuration, ops)

        live = {f"orders/{n}-A" for n in range(401, 501)}  # re-created and not deleted again
        assert set(ops.rows("Orders")) == live
        assert ops.rows("Orders") == database_rows(ravendb_target, "Orders")
        deleted = {keys["Id"] for kind, _, keys in ops.calls if kind == "delete"}
        assert deleted == {f"orders/{n}-A" for n in range(1, 2501)} - live

    def test_that_walk_met_short_and_empty_bin_pages(
        self, ravendb_target, ravendb_store, revisions, standin_control, configuration, ops
    ):
        self.delete_recreate_and_delete_again(ravendb_store, configuration, ops)

        pages = standin_control.revisions_bin_pages(ravendb_target.database)
        assert pages.get("short", 0) > 0 and pages.get("empty", 0) > 0

    def test_a_sync_with_nothing_deleted_since_makes_one_bin_request(
        self, ravendb_target, ravendb_store, revisions, standin_control, configuration, ops
    ):
        documents.put(ravendb_store, orders(1, 10))
        state = sync(configuration, ops)
        documents.delete(ravendb_store, ["orders/2-A", "orders/3-A"])
        state = sync(configuration, ops, state)
        path = f"/databases/{ravendb_target.database}/revisions/bin"
        before = sum(standin_control.requests("GET", path).values())

        sync(configuration, ops, state)

        assert sum(standin_control.requests("GET", path).values()) - before == 1

    def test_a_walk_of_the_bin_stays_on_one_node(
        self, ravendb_target, ravendb_store, revisions, standin_control, configuration, ops
    ):
        configuration = {**configuration, "batch_size": "3"}
        documents.put(ravendb_store, orders(1, 40))
        state = sync(configuration, ops)
        documents.delete(ravendb_store, [f"orders/{n}-A" for n in range(1, 31)])
        documents.put(ravendb_store, orders(11, 10))  # a run of entries the bin no longer lists: empty pages
        database = f"/databases/{ravendb_target.database}"
        before = {path: standin_control.requests("GET", database + path) for path in ("/revisions/bin", "/stats")}

        sync(configuration, ops, state)

        served = {
            path: {
                node: count - before[path].get(node, 0)
                for node, count in standin_control.requests("GET", database + path).items()
                if count > before[path].get(node, 0)
            }
            for path in before
        }
        assert len(served["/revisions/bin"]) == 1 and sum(served["/revisions/bin"].values()) > 5
        assert served["/stats"].keys() == served["/revisions/bin"].keys()

    @staticmethod
    def delete_recreate_and_delete_again(ravendb_store, configuration, ops) -> None:
        """2,500 orders; over three syncs with 40 bin records per request: 2,500 deleted, 300 of them re-created
        (a run of bin records RavenDB no longer lists: short and empty pages), 200 of those deleted again."""
        configuration = {**configuration, "batch_size": "40"}
        documents.put(ravendb_store, orders(1, 2500))
        state = sync(configuration, ops)
        documents.delete(ravendb_store, [f"orders/{n}-A" for n in range(1, 1001)])
        documents.put(ravendb_store, orders(201, 300, Freight=1.5))
        state = sync(configuration, ops, state)
        documents.delete(ravendb_store, [f"orders/{n}-A" for n in range(1001, 2501)])
        documents.delete(ravendb_store, [f"orders/{n}-A" for n in range(201, 401)])
        sync(configuration, ops, state)


def test_a_database_without_revisions_syncs_with_one_bin_request(
    ravendb_target, ravendb_store, standin_control, configuration, ops
):
    documents.put(ravendb_store, orders(1, 5))
    path = f"/databases/{ravendb_target.database}/revisions/bin"
    state = sync(configuration, ops)
    documents.delete(ravendb_store, ["orders/1-A"])
    before = sum(standin_control.requests("GET", path).values())

    sync(configuration, ops, state)

    assert sum(standin_control.requests("GET", path).values()) - before == 1
    assert [kind for kind, _, _ in ops.calls if kind == "delete"] == []


class TestReconciliationWithoutRevisions:
    def test_deleted_ids_are_marked_and_live_ones_untouched(self, ravendb_target, ravendb_store, ops):
        configuration = configuration_for(ravendb_target, collection_name="Orders", reconcile_deletes_hours="24")
        documents.put(ravendb_store, orders(1, 10))
        state = sync(configuration, ops)
        documents.delete(ravendb_store, ["orders/3-A", "orders/7-A"])
        state["reconciled_at"]["Orders"] = "2000-01-01T00:00:00+00:00"  # the interval has passed

        sync(configuration, ops, state)

        assert set(ops.rows("Orders")) == {f"orders/{n}-A" for n in (1, 2, 4, 5, 6, 8, 9, 10)}
        assert ops.rows("Orders") == database_rows(ravendb_target, "Orders")

    def test_it_runs_only_when_the_interval_has_passed(self, ravendb_target, ravendb_store, ops):
        configuration = configuration_for(ravendb_target, collection_name="Orders", reconcile_deletes_hours="24")
        documents.put(ravendb_store, orders(1, 3))
        state = sync(configuration, ops)
        documents.delete(ravendb_store, ["orders/2-A"])

        sync(configuration, ops, state)

        assert [call for call in ops.calls if call[0] == "truncate"] == [("truncate", "Orders", None)]
        assert "orders/2-A" in ops.rows("Orders")

    def test_a_document_changed_after_the_cursor_is_upserted_in_full(self, ravendb_target, ravendb_store, ops):
        documents.put(ravendb_store, orders(1, 3))
        settings = connector.validate_configuration(configuration_for(ravendb_target))
        state = connector.SyncState.load({"version": 1, "cursors": {"Orders": "2000-01-01T00:00:00.0000000Z"}})

        with connector.open_store(settings) as store:
            connector.reconcile_deletes(store, settings, ["Orders"], state)

        assert ops.rows("Orders") == database_rows(ravendb_target, "Orders")
        assert [kind for kind, *_ in ops.calls] == ["truncate", "upsert", "upsert", "upsert", "checkpoint"]

    def test_an_id_whose_case_changed_leaves_only_the_new_spelling_live(self, ravendb_target, ravendb_store, ops):
        configuration = configuration_for(ravendb_target, collection_name="Orders", reconcile_deletes_hours="24")
        documents.put(ravendb_store, [("orders/1", "Orders", {"Freight": 1.5})])
        state = sync(configuration, ops)
        documents.put(ravendb_store, [("Orders/1", "Orders", {"Freight": 2.5})])  # the same document, respelt
        state["reconciled_at"]["Orders"] = "2000-01-01T00:00:00+00:00"

        sync(configuration, ops, state)

        assert [document["@metadata"]["@id"] for document in database_documents(ravendb_target, "Orders")] == [
            "Orders/1"
        ]
        assert ops.rows("Orders") == database_rows(ravendb_target, "Orders")

    def test_a_document_moved_to_another_collection_is_live_only_there(self, ravendb_target, ravendb_store, ops):
        configuration = configuration_for(ravendb_target, reconcile_deletes_hours="24")
        documents.put(ravendb_store, [("docs/1", "Orders", {"Note": "an order"}), *orders(1, 1)])
        state = sync(configuration, ops)
        documents.delete(ravendb_store, ["docs/1"])
        documents.put(ravendb_store, [("docs/1", "Archive", {"Note": "archived"})])
        state["reconciled_at"]["Orders"] = "2000-01-01T00:00:00+00:00"

        sync(configuration, ops, state)

        assert set(ops.rows("Orders")) == {"orders/1-A"}
        assert ops.rows("Archive") == database_rows(ravendb_target, "Archive")


class TestFailuresNameTheSetting:
    def test_unknown_client_certificate(self, ravendb_target):
        configuration = configuration_for(
            ravendb_target, certificate_base64=b64_file(ravendb_target.unknown_client_pem)
        )

        with pytest.raises(SourceError, match=r"^certificate_base64: .* rejected the client certificate"):
            connector.update(configuration, {})

    def test_expired_client_certificate_is_refused_before_connecting(self, ravendb_target):
        configuration = configuration_for(
            ravendb_target, certificate_base64=b64_file(ravendb_target.expired_client_pem)
        )

        with pytest.raises(ConfigurationError, match=r"^certificate_base64: the certificate expired on "):
            connector.update(configuration, {})

    def test_server_certificate_from_an_untrusted_ca(self, ravendb_target):
        configuration = configuration_for(ravendb_target)
        del configuration["server_ca_base64"]

        with pytest.raises(SourceError, match=r"^ravendb_urls: TLS with .* the server certificate is not trusted"):
            connector.update(configuration, {})

    def test_plain_http_to_an_https_server_says_to_use_https(self, ravendb_target):
        configuration = configuration_for(ravendb_target, ravendb_urls=ravendb_target.urls[0].replace("https", "http"))
        del configuration["certificate_base64"], configuration["server_ca_base64"]

        with pytest.raises(SourceError) as raised:
            connector.update(configuration, {})

        assert raised.value.setting == "ravendb_urls"
        assert str(raised.value).startswith(f"ravendb_urls: request to {configuration['ravendb_urls']} failed: ")
        assert str(raised.value).endswith("(a server that only speaks TLS answers http:// like this: use https://)")

    def test_unknown_database(self, ravendb_target):
        configuration = configuration_for(ravendb_target, database_name="no_such_database")

        with pytest.raises(SourceError, match=r"^database_name: database 'no_such_database' does not exist"):
            connector.update(configuration, {})

    def test_unreachable_server(self, ravendb_target):
        configuration = configuration_for(ravendb_target, ravendb_urls="https://127.0.0.1:9")

        with pytest.raises(SourceError, match=r"^ravendb_urls: no server is reachable: https://127.0.0.1:9 \("):
            connector.update(configuration, {})


def test_a_dead_first_node_fails_over_with_a_warning(
    ravendb_target, ravendb_store, standin_control, configuration, ops, logs
):
    documents.put(ravendb_store, orders(1, 20))
    standin_control.stop_node("A")

    sync(configuration, ops)

    assert len(ops.rows("Orders")) == 20
    assert any("unreachable" in line and ravendb_target.urls[0] in line for line in logs.messages("WARNING"))


def test_no_secret_in_logs_errors_or_files_left_behind(
    ravendb_target, ravendb_store, configuration, ops, logs, own_tempdir
):
    documents.put(ravendb_store, orders(1, 5))
    before = certificate_dirs()
    bad = configuration_for(ravendb_target, certificate_base64=b64_file(ravendb_target.unknown_client_pem))
    with pytest.raises(SourceError) as raised:
        connector.update(bad, {})
    sync(configuration, ops)

    key_lines = [line for line in Path(ravendb_target.client_pem).read_text().splitlines() if "-----" not in line]
    emitted = "\n".join([*logs.messages(), str(raised.value), *map(str, ops.checkpoints)])
    assert not any(line in emitted for line in key_lines)
    assert "PRIVATE KEY" not in emitted and configuration["certificate_base64"][:24] not in emitted
    assert certificate_dirs() == before

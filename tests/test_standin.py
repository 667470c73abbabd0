"""The RavenDB stand-in, driven through the real `ravendb` client over HTTPS with client certificates."""

from __future__ import annotations

import datetime
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from ravendb import DocumentStore
from ravendb.documents.commands.batches import ForceRevisionStrategy, PutCommandDataWithJson, SingleNodeBatchCommand
from ravendb.documents.commands.crud import PutDocumentCommand
from ravendb.documents.commands.revisions import GetRevisionsBinEntryCommand
from ravendb.documents.operations.revisions import (
    ConfigureRevisionsOperation,
    RevisionsCollectionConfiguration,
    RevisionsConfiguration,
)
from ravendb.documents.operations.statistics import GetCollectionStatisticsOperation, GetStatisticsOperation
from ravendb.exceptions.exceptions import AuthorizationException, DatabaseDoesNotExistException
from ravendb.exceptions.raven_exceptions import ConcurrencyException, RavenException
from ravendb.serverwide.misc import DocumentsCompressionConfiguration
from ravendb.serverwide.operations.common import GetDatabaseNamesOperation
from ravendb.serverwide.operations.documents_compression import UpdateDocumentsCompressionConfigurationOperation

from tests import documents
from tests.standin import rql, sample_data
from tests.standin.control import StandInControl
from tests.standin.errors import RavenError
from tests.standin.fixtures import RavenTarget, open_store
from tests.standin.server import StandIn
from tests.syncing import node_store

RAVEN_DATE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z$")
LM = "@metadata.'@last-modified'"


class Order:
    """A minimal entity; the client writes its class into Raven-Python-Type."""

    def __init__(self, Company: str | None = None, Freight: float | None = None, Lines: list | None = None) -> None:
        self.Company = Company
        self.Freight = Freight
        self.Lines = Lines or []


def _store_orders(store: DocumentStore, count: int, start: int = 1) -> None:
    with store.open_session() as session:
        for n in range(start, start + count):
            session.store(Order(f"companies/{n}-A", float(n)), f"orders/{n}-A")
        session.save_changes()


def _raw(store: DocumentStore, rql_text: str, **params: Any) -> tuple[list[dict], Any]:
    """Run a raw query; returns (documents as dicts, QueryStatistics)."""
    captured: list[Any] = []
    with store.open_session() as session:
        query = session.advanced.raw_query(rql_text, dict).statistics(captured.append)
        for name, value in params.items():
            query = query.add_parameter(name, value)
        docs = list(query)
        metas = [dict(session.advanced.get_metadata_for(d)) for d in docs]
    for doc, meta in zip(docs, metas, strict=True):
        doc["@metadata"] = meta
    return docs, captured[0]


# ---- basics ------------------------------------------------------------------------------------------------------


def test_topology_lists_every_node(ravendb_store: DocumentStore, ravendb_target: RavenTarget) -> None:
    ravendb_store.maintenance.send(GetStatisticsOperation())
    nodes = ravendb_store.get_request_executor().topology_nodes
    assert [n.url for n in nodes] == ravendb_target.urls
    assert len(nodes) == 2


def test_database_names_include_the_test_database(ravendb_store: DocumentStore, ravendb_target: RavenTarget) -> None:
    names = ravendb_store.maintenance.server.send(GetDatabaseNamesOperation(0, 1000))
    assert ravendb_target.database in names


def test_unknown_database_raises_database_does_not_exist(ravendb_target: RavenTarget) -> None:
    store = ravendb_target.store(database="no_such_db_here")
    try:
        with pytest.raises(DatabaseDoesNotExistException), store.open_session() as session:
            session.load("orders/1-A")
    finally:
        store.close()


def test_store_and_load_sets_metadata_as_ravendb_does(ravendb_store: DocumentStore) -> None:
    with ravendb_store.open_session() as session:
        session.store(Order("companies/1-A", 12.5), "orders/1-A")
        session.save_changes()
    with ravendb_store.open_session() as session:
        loaded = session.load("orders/1-A", Order)
        meta = session.advanced.get_metadata_for(loaded)
        assert loaded.Freight == 12.5
        assert meta["@id"] == "orders/1-A"
        assert meta["@collection"] == "Orders"
        assert RAVEN_DATE.match(meta["@last-modified"])
        assert re.match(r"^[A-Z]:\d+-.+$", meta["@change-vector"])
        assert meta["Raven-Python-Type"].endswith("Order")
        assert "@flags" not in meta
        assert session.load("orders/404-A", Order) is None


def test_etags_and_timestamps_never_go_backwards(ravendb_store: DocumentStore) -> None:
    _store_orders(ravendb_store, 30)
    docs, _ = _raw(ravendb_store, "from Orders")
    etags = [int(d["@metadata"]["@change-vector"].split(":")[1].split("-")[0]) for d in docs]
    stamps = [d["@metadata"]["@last-modified"] for d in docs]
    assert etags == sorted(etags) and len(set(etags)) == 30
    assert stamps == sorted(stamps)


def test_delete_through_bulk_docs(ravendb_store: DocumentStore) -> None:
    _store_orders(ravendb_store, 2)
    with ravendb_store.open_session() as session:
        session.delete("orders/1-A")
        session.save_changes()
    with ravendb_store.open_session() as session:
        assert session.load("orders/1-A", Order) is None
        assert session.load("orders/2-A", Order) is not None


def test_collection_statistics_with_empty_and_hilo(ravendb_store: DocumentStore) -> None:
    _store_orders(ravendb_store, 3, start=100)
    executor = ravendb_store.get_request_executor()
    executor.execute_command(PutDocumentCommand("loose/1", None, {"Name": "no collection"}))
    with ravendb_store.open_session() as session:
        session.store(Order("companies/9-A"))
        session.save_changes()
    stats = ravendb_store.maintenance.send(GetCollectionStatisticsOperation())
    assert stats.collections == {"Orders": 4, "@empty": 1, "@hilo": 1}
    assert stats.count_of_documents == 6
    with ravendb_store.open_session() as session:
        meta = session.advanced.get_metadata_for(session.load("loose/1"))
        assert "@collection" not in meta


def test_database_statistics(ravendb_store: DocumentStore) -> None:
    _store_orders(ravendb_store, 5)
    stats = ravendb_store.maintenance.send(GetStatisticsOperation())
    assert stats.count_of_documents == 5
    assert stats.last_doc_etag >= 5


def test_bulk_insert(ravendb_store: DocumentStore) -> None:
    with ravendb_store.bulk_insert() as bulk:
        for n in range(1, 501):
            bulk.store_as(Order(f"companies/{n}-A", n / 4), f"orders/{n}-A")
    stats = ravendb_store.maintenance.send(GetCollectionStatisticsOperation())
    assert stats.collections["Orders"] == 500
    with ravendb_store.open_session() as session:
        assert session.load("orders/500-A", Order).Freight == 125.0


# ---- queries -----------------------------------------------------------------------------------------------------


def test_collection_query_reads_storage_in_etag_order(ravendb_store: DocumentStore) -> None:
    _store_orders(ravendb_store, 12)
    docs, stats = _raw(ravendb_store, "from 'Orders'")
    assert [d["@metadata"]["@id"] for d in docs] == [f"orders/{n}-A" for n in range(1, 13)]
    assert stats.index_name == "collection/Orders"
    assert stats.is_stale is False
    assert stats.total_results == 12


def test_an_all_docs_collection_query_is_named_all_docs(ravendb_store: DocumentStore) -> None:
    _store_orders(ravendb_store, 2)
    docs, stats = _raw(ravendb_store, "from @all_docs")
    assert stats.index_name == "AllDocs"
    assert [d["@metadata"]["@id"] for d in docs] == ["orders/1-A", "orders/2-A"]


def test_id_equality_is_a_collection_query(ravendb_store: DocumentStore) -> None:
    _store_orders(ravendb_store, 3)
    docs, stats = _raw(ravendb_store, "from Orders where id() = $id", id="orders/2-A")
    assert [d["Company"] for d in docs] == ["companies/2-A"]
    assert stats.index_name == "collection/Orders"


def test_where_and_order_use_an_auto_index(ravendb_store: DocumentStore) -> None:
    _store_orders(ravendb_store, 20)
    text = "from Orders as o where o.Freight >= $low and not (Freight = 15 or Freight > $high) order by Freight desc"
    docs, stats = _raw(ravendb_store, text, low=10, high=18)
    assert [d["Freight"] for d in docs] == [18.0, 17.0, 16.0, 14.0, 13.0, 12.0, 11.0, 10.0]
    assert stats.index_name == "Auto/Orders/ByFreight"
    assert stats.total_results == 8


def test_last_modified_query_index_name_and_paging(ravendb_store: DocumentStore) -> None:
    _store_orders(ravendb_store, 10)
    with ravendb_store.open_session() as session:
        captured: list[Any] = []
        query = (
            session.advanced.raw_query(f"from Orders where {LM} > $since order by {LM}, id()", dict)
            .add_parameter("since", "2000-01-01T00:00:00.0000000Z")
            .statistics(captured.append)
            .skip(2)
            .take(3)
        )
        docs = [session.advanced.get_metadata_for(d)["@id"] for d in query]
    assert docs == ["orders/3-A", "orders/4-A", "orders/5-A"]
    assert captured[0].index_name == "Auto/Orders/By@metadata.@last-modified"
    assert captured[0].total_results == 10


def test_last_modified_comparison_is_chronological(ravendb_store: DocumentStore) -> None:
    _store_orders(ravendb_store, 5)
    docs, _ = _raw(ravendb_store, "from Orders")
    third = docs[2]["@metadata"]["@last-modified"]
    after, _ = _raw(ravendb_store, "from Orders where @metadata.@last-modified > $p", p=third)
    assert {d["@metadata"]["@id"] for d in after} <= {"orders/4-A", "orders/5-A"}
    on_or_after, _ = _raw(ravendb_store, f"from Orders where {LM} >= $p", p=third)
    assert "orders/3-A" in {d["@metadata"]["@id"] for d in on_or_after}


def test_bare_last_modified_is_a_field_that_matches_nothing(ravendb_store: DocumentStore) -> None:
    _store_orders(ravendb_store, 3)
    docs, _ = _raw(ravendb_store, "from Orders where @last-modified > $p", p="2000-01-01T00:00:00.0000000Z")
    assert docs == []


def test_limit_and_offset_in_rql(ravendb_store: DocumentStore) -> None:
    _store_orders(ravendb_store, 10)
    docs, stats = _raw(ravendb_store, "from Orders order by id() desc limit $n offset 1", n=2)
    assert [d["@metadata"]["@id"] for d in docs] == ["orders/8-A", "orders/7-A"]
    assert stats.total_results == 10


def test_bad_query_raises_with_invalid_query_exception(ravendb_store: DocumentStore) -> None:
    for text in ("from Orders where", "from Orders select Company", "from Orders where startsWith(Company, 'c')"):
        with pytest.raises(RavenException, match="InvalidQueryException"):
            _raw(ravendb_store, text)


def test_stream_query_sends_stats_then_items(ravendb_store: DocumentStore) -> None:
    _store_orders(ravendb_store, 25)
    stats_seen: list[Any] = []
    with ravendb_store.open_session() as session:
        query = session.advanced.raw_query(f"from Orders order by {LM} desc", dict)
        results = list(session.advanced.stream_with_statistics(query, stats_seen.append))
    assert [r.key for r in results][:2] == ["orders/25-A", "orders/24-A"]
    assert len(results) == 25
    assert stats_seen[0].total_results == 25
    assert stats_seen[0].index_name == "Auto/Orders/By@metadata.@last-modified"


def test_stream_collection_query(ravendb_store: DocumentStore) -> None:
    _store_orders(ravendb_store, 7)
    with ravendb_store.open_session() as session:
        keys = [r.key for r in session.advanced.stream(session.query_collection("Orders"))]
    assert keys == [f"orders/{n}-A" for n in range(1, 8)]


# ---- hard cases through the control API ------------------------------------------------------------------------


def test_frozen_clock_gives_many_documents_one_timestamp(
    ravendb_store: DocumentStore, standin_control: StandInControl
) -> None:
    standin_control.freeze_clock(True)
    try:
        _store_orders(ravendb_store, 40)
    finally:
        standin_control.freeze_clock(False)
    _store_orders(ravendb_store, 1, start=41)
    docs, _ = _raw(ravendb_store, f"from Orders order by {LM} desc, id()")
    stamps = [d["@metadata"]["@last-modified"] for d in docs]
    assert stamps[0] >= stamps[1]
    assert len(set(stamps[1:])) == 1 and RAVEN_DATE.match(stamps[1])
    assert [d["@metadata"]["@id"] for d in docs[1:4]] == ["orders/1-A", "orders/10-A", "orders/11-A"]


def test_paused_indexing_makes_index_queries_stale(
    ravendb_store: DocumentStore, ravendb_target: RavenTarget, standin_control: StandInControl
) -> None:
    _store_orders(ravendb_store, 3)
    query = f"from Orders where {LM} > $p order by {LM}"
    since = "2000-01-01T00:00:00.0000000Z"
    docs, stats = _raw(ravendb_store, query, p=since)
    assert len(docs) == 3 and stats.is_stale is False
    standin_control.pause_indexing(ravendb_target.database)
    _store_orders(ravendb_store, 1, start=4)
    docs, stats = _raw(ravendb_store, query, p=since)
    assert stats.is_stale is True
    assert "orders/4-A" not in {d["@metadata"]["@id"] for d in docs}
    collection_docs, collection_stats = _raw(ravendb_store, "from Orders")
    assert "orders/4-A" in {d["@metadata"]["@id"] for d in collection_docs}
    assert collection_stats.is_stale is False
    with ravendb_store.open_session() as session:
        waiting = session.advanced.raw_query(query, dict).add_parameter("p", since)
        with pytest.raises(TimeoutError):
            list(waiting.wait_for_non_stale_results(datetime.timedelta(milliseconds=200)))
    standin_control.resume_indexing(ravendb_target.database)
    docs, stats = _raw(ravendb_store, query, p=since)
    assert stats.is_stale is False and len(docs) == 4


def test_indexing_lag(
    ravendb_store: DocumentStore, ravendb_target: RavenTarget, standin_control: StandInControl
) -> None:
    _raw(ravendb_store, "from Orders where Freight > 0")
    standin_control.set_indexing(ravendb_target.database, lag_ms=400)
    _store_orders(ravendb_store, 2)
    docs, stats = _raw(ravendb_store, "from Orders where Freight > 0")
    assert stats.is_stale is True and docs == []
    with ravendb_store.open_session() as session:
        query = session.advanced.raw_query("from Orders where Freight > 0", dict)
        assert len(list(query.wait_for_non_stale_results(datetime.timedelta(seconds=5)))) == 2
    standin_control.set_indexing(ravendb_target.database, lag_ms=0)


def _enable_revisions(store: DocumentStore) -> None:
    config = RevisionsConfiguration(
        default_config=None,
        collections={"Orders": RevisionsCollectionConfiguration(disabled=False, minimum_revisions_to_keep=5)},
    )
    store.maintenance.send(ConfigureRevisionsOperation(config))


def _delete(store: DocumentStore, *numbers: int) -> None:
    for n in numbers:
        with store.open_session() as session:
            session.delete(f"orders/{n}-A")
            session.save_changes()


def _bin_ids(store: DocumentStore, start: int, page_size: int) -> list[str]:
    command = GetRevisionsBinEntryCommand(start, page_size)
    store.get_request_executor().execute_command(command)
    return [entry["@metadata"]["@id"] for entry in command.result.results]


def _bin_http(target: RavenTarget, headers: dict[str, str] | None = None) -> requests.Response:
    """GET the first bin page with plain requests (the client's command cannot send If-None-Match)."""
    url = f"{target.urls[0]}/databases/{target.database}/revisions/bin?start=0&pageSize=10"
    return requests.get(url, headers=headers or {}, cert=target.client_pem, verify=target.ca_pem or True, timeout=30)


def test_revisions_bin_lists_deleted_documents_newest_first(ravendb_store: DocumentStore) -> None:
    _enable_revisions(ravendb_store)
    _store_orders(ravendb_store, 3)
    with ravendb_store.open_session() as session:
        assert session.advanced.get_metadata_for(session.load("orders/1-A", Order))["@flags"] == "HasRevisions"
    _delete(ravendb_store, 1, 2, 3)
    _store_orders(ravendb_store, 1, start=3)
    command = GetRevisionsBinEntryCommand(0, 10)
    ravendb_store.get_request_executor().execute_command(command)
    entries = command.result.results
    assert [e["@metadata"]["@id"] for e in entries] == ["orders/2-A", "orders/1-A"]
    meta = entries[0]["@metadata"]
    assert "DeleteRevision" in meta["@flags"]
    assert meta["@collection"] == "Orders"
    assert RAVEN_DATE.match(meta["@last-modified"])


@pytest.mark.parametrize(
    ("start", "page_size", "expected"),
    [
        (0, 2, ["orders/6-A", "orders/5-A"]),
        (1, 2, ["orders/5-A"]),
        (2, 2, []),
        (3, 3, ["orders/2-A", "orders/1-A"]),
        (6, 10, []),
    ],
    ids=["full", "short", "empty-with-older-entries-left", "skip-counts-raw-records", "past-the-end"],
)
def test_revisions_bin_pages_raw_delete_revisions_before_dropping_documents_that_exist_again(
    ravendb_store: DocumentStore, start: int, page_size: int, expected: list[str]
) -> None:
    # RevisionsStorage.GetRevisionsBinEntries: skip `start` and take `pageSize` raw records, then filter.
    _enable_revisions(ravendb_store)
    _store_orders(ravendb_store, 6)
    _delete(ravendb_store, 1, 2, 3, 4, 5, 6)
    _store_orders(ravendb_store, 2, start=3)  # orders 3 and 4 exist again: raw records 2 and 3 are dropped

    assert _bin_ids(ravendb_store, start, page_size) == expected


def test_revisions_bin_lists_a_document_deleted_twice_once_at_its_newest_delete(ravendb_store: DocumentStore) -> None:
    _enable_revisions(ravendb_store)
    _store_orders(ravendb_store, 2)
    _delete(ravendb_store, 1, 2)
    _store_orders(ravendb_store, 1)
    _delete(ravendb_store, 1)

    assert _bin_ids(ravendb_store, 0, 1) == ["orders/1-A"]
    assert _bin_ids(ravendb_store, 1, 1) == ["orders/2-A"]
    assert _bin_ids(ravendb_store, 2, 1) == []  # the first delete of orders/1-A: superseded by the newer one


def test_revisions_bin_without_revisions_configuration_is_empty_not_an_error(ravendb_store: DocumentStore) -> None:
    _store_orders(ravendb_store, 2)
    _delete(ravendb_store, 1)

    assert _bin_ids(ravendb_store, 0, 10) == []


def test_revisions_bin_etag_is_the_newest_entry_and_if_none_match_gets_304(
    ravendb_target: RavenTarget, ravendb_store: DocumentStore
) -> None:
    _enable_revisions(ravendb_store)
    _store_orders(ravendb_store, 2)
    _delete(ravendb_store, 1, 2)

    first = _bin_http(ravendb_target)
    newest = first.json()["Results"][0]["@metadata"]
    assert newest["@id"] == "orders/2-A"
    assert first.headers["ETag"] == f'"{newest["@change-vector"]}"'
    assert _bin_http(ravendb_target, {"If-None-Match": first.headers["ETag"]}).status_code == 304
    _store_orders(ravendb_store, 1, start=2)  # the newest raw record is no longer a bin entry: no ETag
    assert "ETag" not in _bin_http(ravendb_target, {"If-None-Match": first.headers["ETag"]}).headers


def test_statistics_count_every_revision_including_delete_revisions(ravendb_store: DocumentStore) -> None:
    _enable_revisions(ravendb_store)
    _store_orders(ravendb_store, 3)
    _delete(ravendb_store, 1)

    assert ravendb_store.maintenance.send(GetStatisticsOperation()).count_of_revision_documents == 4


def test_stopped_node_fails_over_to_the_other(ravendb_target: RavenTarget, standin_control: StandInControl) -> None:
    store = ravendb_target.store()
    try:
        _store_orders(store, 1)
        standin_control.stop_node("A")
        with pytest.raises(requests.ConnectionError):
            requests.get(ravendb_target.urls[0] + "/build/version", timeout=5, verify=ravendb_target.ca_pem)
        with store.open_session() as session:
            assert session.load("orders/1-A", Order).Company == "companies/1-A"
        standin_control.start_node("A")
        assert all(n["Running"] for n in standin_control.nodes())
    finally:
        store.close()


def test_server_side_generator(
    ravendb_store: DocumentStore, ravendb_target: RavenTarget, standin_control: StandInControl
) -> None:
    assert standin_control.generate_orders(ravendb_target.database, 2000) == 2000
    with ravendb_store.open_session() as session:
        order = session.load("orders/7-A", dict)
        assert isinstance(order["ShipTo"], dict) and isinstance(order["Lines"], list)
        assert re.match(r"^\d{4}-\d\d-\d\dT00:00:00\.0000000$", order["OrderedAt"])
        keys = [r.key for r in session.advanced.stream(session.query_collection("Orders"))]
    assert len(keys) == 2000


# ---- TLS ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["unknown_client_pem", "expired_client_pem"])
def test_unauthorised_certificates_get_403(ravendb_target: RavenTarget, which: str) -> None:
    pem = getattr(ravendb_target, which)
    if pem is None:
        pytest.skip("certificate variants exist only for the stand-in")
    store = ravendb_target.store(certificate_pem=pem)
    try:
        with pytest.raises(AuthorizationException), store.open_session() as session:
            session.load("orders/1-A")
    finally:
        store.close()


def test_no_client_certificate_gets_403(ravendb_target: RavenTarget) -> None:
    if ravendb_target.control is None:
        pytest.skip("stand-in only")
    response = requests.get(ravendb_target.urls[0] + "/databases", timeout=5, verify=ravendb_target.ca_pem)
    assert response.status_code == 403
    assert set(response.json()) == {"Url", "Type", "Message", "Error"}


def test_plain_http_instance(standin_http: Any) -> None:
    store = open_store(standin_http.urls, "plain", None, None)
    try:
        standin_http.control.reset_database("plain")
        _store_orders(store, 2)
        docs, _ = _raw(store, "from Orders")
        assert len(docs) == 2
    finally:
        store.close()


# ---- RQL parser units --------------------------------------------------------------------------------------------


def test_rql_spellings_of_last_modified_are_one_field() -> None:
    for text in (
        "from Orders where @metadata.@last-modified > 1",
        "from Orders where @metadata.'@last-modified' > 1",
        "from Orders where '@metadata'.'@last-modified' > 1",
    ):
        assert rql.parse(text).index_fields == ("@metadata.@last-modified",)
    assert rql.parse("from Orders where @last-modified > 1").index_fields == ("@last-modified",)


def test_rql_collection_query_detection() -> None:
    assert rql.parse("from Orders").is_collection_query
    assert rql.parse('from "Orders" where id() = $x').is_collection_query
    assert not rql.parse("from Orders where id() > $x").is_collection_query
    assert not rql.parse("from Orders order by id()").is_collection_query
    assert rql.parse("from @all_docs").collection == "@all_docs"


@pytest.mark.parametrize(
    "text",
    ["from", "from Orders where Name = ", "from Orders limit", "from Orders where (A = 1", "from Orders #", ""],
)
def test_rql_errors(text: str) -> None:
    with pytest.raises(RavenError) as info:
        rql.parse(text)
    assert info.value.status == 400


def test_rql_a_query_with_every_clause_parses_into_its_parts() -> None:
    query = rql.parse("from Orders where a = 1 and (b = 2 or not c = 3) order by a desc, id() limit 10 offset 5")

    assert query.collection == "Orders"
    assert query.where == rql.BoolOp(
        "and",
        rql.Compare("a", "=", rql.Literal(1)),
        rql.BoolOp("or", rql.Compare("b", "=", rql.Literal(2)), rql.Not(rql.Compare("c", "=", rql.Literal(3)))),
    )
    assert query.order_by == [rql.OrderKey("a", True, None), rql.OrderKey("id()", False, None)]
    assert (query.limit, query.offset) == (rql.Literal(10), rql.Literal(5))


def test_batch_with_a_concurrency_conflict_writes_nothing(ravendb_store: DocumentStore) -> None:
    _store_orders(ravendb_store, 1)
    commands = [
        PutCommandDataWithJson(
            "orders/2-A", None, {"@metadata": {"@collection": "Orders"}}, ForceRevisionStrategy.NONE
        ),
        PutCommandDataWithJson(
            "orders/1-A", "A:999-x", {"@metadata": {"@collection": "Orders"}}, ForceRevisionStrategy.NONE
        ),
    ]
    with pytest.raises(ConcurrencyException):
        ravendb_store.get_request_executor().execute_command(
            SingleNodeBatchCommand(ravendb_store.conventions, commands)
        )
    with ravendb_store.open_session() as session:
        assert session.load("orders/2-A") is None


def test_demo_sample_data_in_process() -> None:
    server = StandIn(nodes_count=1)
    sample_data.load_demo(server.storage.create("demo"))
    server.start()
    store = open_store(server.urls, "demo", None, None)
    try:
        stats = store.maintenance.send(GetCollectionStatisticsOperation())
        assert stats.collections == {"Companies": 91, "Employees": 9, "Products": 77, "Orders": 300, "@hilo": 1}
        with store.open_session() as session:
            company = session.load("companies/1-A", dict)
            assert company["Address"]["PostalCode"].isalnum() or "-" in company["Address"]["PostalCode"]
            assert len(str(company["Address"]["Location"]["Latitude"])) >= 15
    finally:
        store.close()
        server.stop()


# ---- a real server's index snapshots, streams, replication ---------------------------------------------


def _meta(doc: dict) -> tuple[str, str, str]:
    meta = doc["@metadata"]
    return meta["@id"], meta["@last-modified"], meta["@change-vector"]


def _stream(store: DocumentStore, rql_text: str, **params: Any) -> tuple[list[dict], Any]:
    """Stream a raw query; (documents with @metadata, the stream's statistics)."""
    seen: list[Any] = []
    with store.open_session() as session:
        query = session.advanced.raw_query(rql_text, dict)
        for name, value in params.items():
            query = query.add_parameter(name, value)
        docs = [
            {**r.document, "@metadata": r.metadata} for r in session.advanced.stream_with_statistics(query, seen.append)
        ]
    return docs, seen[0]


CHANGED_SINCE = f"from Orders where {LM} >= $since order by {LM}"
BEGINNING = "0001-01-01T00:00:00.0000000Z"


def test_an_update_the_index_has_not_seen_comes_back_at_its_indexed_place_with_its_new_timestamp(
    ravendb_target: RavenTarget, standin_control: StandInControl
) -> None:
    store = node_store(ravendb_target, "A")
    try:
        _store_orders(store, 5)
        _stream(store, CHANGED_SINCE, since=BEGINNING)  # creates the index and lets it cover the five
        standin_control.pause_indexing(ravendb_target.database)
        _store_orders(store, 1, start=2)  # orders/2-A again: newer than every other
        _store_orders(store, 1, start=6)  # new: the index has not seen it
        with store.open_session() as session:
            session.delete("orders/4-A")
            session.save_changes()

        docs, stats = _stream(store, CHANGED_SINCE, since=BEGINNING)
    finally:
        store.close()
    ids = [_meta(d)[0] for d in docs]
    stamps = {_meta(d)[0]: _meta(d)[1] for d in docs}
    assert ids == ["orders/1-A", "orders/2-A", "orders/3-A", "orders/5-A"]
    assert stamps["orders/2-A"] > stamps["orders/5-A"]
    assert stats.is_stale is True


@pytest.mark.parametrize("renewed", [False, True], ids=["one-snapshot", "renewed-after-4"])
def test_an_index_stream_reads_one_snapshot_and_sees_newer_versions_only_after_a_renewal(
    ravendb_target: RavenTarget, standin_control: StandInControl, renewed: bool
) -> None:
    """Index and documents are opened at the start (Index.QueryInternal); a write during the stream shows in it
    only once the read transaction is renewed, and then as the hit's new version at its indexed place."""
    store = node_store(ravendb_target, "A")
    try:
        _store_orders(store, 10)
        _stream(store, CHANGED_SINCE, since=BEGINNING)
        if renewed:
            standin_control.set_read_pulse(ravendb_target.database, every_docs=4)
        standin_control.pause_stream(ravendb_target.database, after=4)
        seen: list[Any] = []
        with store.open_session() as session:
            query = session.advanced.raw_query(CHANGED_SINCE, dict).add_parameter("since", BEGINNING)
            results = session.advanced.stream_with_statistics(query, seen.append)
            first = [next(results) for _ in range(2)]
            assert standin_control.wait_stream_paused(ravendb_target.database) == 4
            _store_orders(store, 1, start=2)  # already sent
            _store_orders(store, 1, start=8)  # not sent yet
            _store_orders(store, 1, start=11)  # inserted after the index snapshot
            standin_control.release_stream(ravendb_target.database)
            docs = [{**r.document, "@metadata": r.metadata} for r in [*first, *results]]
    finally:
        store.close()
    ids = [_meta(d)[0] for d in docs]
    stamps = [_meta(d)[1] for d in docs]
    assert ids == [f"orders/{n}-A" for n in range(1, 11)]
    assert stamps[1] < stamps[2]  # orders/2-A was sent before it was written again
    assert (stamps[7] > stamps[9]) is renewed  # orders/8-A: its new version at its old place only after a renewal
    assert seen[0].is_stale is False


def test_a_collection_query_reads_storage_without_an_index(
    ravendb_target: RavenTarget, standin_control: StandInControl
) -> None:
    store = node_store(ravendb_target, "A")
    try:
        _store_orders(store, 3)
        standin_control.pause_indexing(ravendb_target.database)
        _store_orders(store, 1, start=1)
        docs, stats = _stream(store, "from 'Orders'")
    finally:
        store.close()
    assert [_meta(d)[0] for d in docs] == ["orders/2-A", "orders/3-A", "orders/1-A"]  # etag order
    assert stats.is_stale is False and stats.index_name == "collection/Orders"


def test_a_throttled_stream_sends_its_results_slowly(
    ravendb_store: DocumentStore, ravendb_target: RavenTarget, standin_control: StandInControl
) -> None:
    _store_orders(ravendb_store, 50)
    standin_control.throttle_streams(ravendb_target.database, docs=10, every_ms=100)
    started = time.monotonic()
    docs, _ = _stream(ravendb_store, CHANGED_SINCE, since=BEGINNING)
    elapsed = time.monotonic() - started
    standin_control.throttle_streams(ravendb_target.database, docs=0, every_ms=0)
    assert len(docs) == 50
    assert elapsed >= 0.4


@pytest.mark.parametrize("times", [1, -1], ids=["once", "always"])
def test_a_stream_can_fail_midway_with_an_error_line(
    ravendb_target: RavenTarget, standin_control: StandInControl, times: int
) -> None:
    store = node_store(ravendb_target, "A")
    try:
        _store_orders(store, 10)
        standin_control.fail_streams(ravendb_target.database, after=3, times=times)
        received: list[str] = []
        with pytest.raises(RuntimeError, match="Error") as failure, store.open_session() as session:
            for result in session.advanced.stream(
                session.advanced.raw_query(CHANGED_SINCE, dict).add_parameter("since", BEGINNING)
            ):
                received.append(result.key)
        again = _stream(store, CHANGED_SINCE, since=BEGINNING)[0] if times == 1 else []
    finally:
        store.close()
    assert received == ["orders/1-A", "orders/2-A", "orders/3-A"]
    assert "'Error'" in str(failure.value)
    assert len(again) == (10 if times == 1 else 0)


def test_replication_keeps_the_origin_timestamp_and_change_vector(
    ravendb_target: RavenTarget, standin_control: StandInControl
) -> None:
    node_a, node_b = node_store(ravendb_target, "A"), node_store(ravendb_target, "B")
    try:
        _store_orders(node_a, 1)
        with node_a.open_session() as session:
            on_a = dict(session.advanced.get_metadata_for(session.load("orders/1-A", dict)))
        with node_b.open_session() as session:
            on_b = dict(session.advanced.get_metadata_for(session.load("orders/1-A", dict)))
        _store_orders(node_b, 1)  # written again on B: B's entry joins A's
        with node_a.open_session() as session:
            again = dict(session.advanced.get_metadata_for(session.load("orders/1-A", dict)))
    finally:
        node_a.close()
        node_b.close()
    assert (on_b["@last-modified"], on_b["@change-vector"]) == (on_a["@last-modified"], on_a["@change-vector"])
    assert re.fullmatch(r"A:\d+-\S+", on_a["@change-vector"])
    assert re.fullmatch(r"A:\d+-\S+, B:\d+-\S+", again["@change-vector"])


def test_delayed_replication_leaves_a_write_on_its_node_until_it_arrives(
    ravendb_target: RavenTarget, standin_control: StandInControl
) -> None:
    node_a, node_b = node_store(ravendb_target, "A"), node_store(ravendb_target, "B")
    try:
        _store_orders(node_a, 2)
        standin_control.set_replication(ravendb_target.database, delay_ms=60_000)
        _store_orders(node_a, 1, start=3)
        with node_a.open_session() as session:
            session.delete("orders/1-A")
            session.save_changes()
        before, _ = _raw(node_b, "from Orders")
        pending = standin_control.flush_replication(ravendb_target.database)["Pending"]
        after, _ = _raw(node_b, "from Orders")
    finally:
        node_a.close()
        node_b.close()
    assert [_meta(d)[0] for d in before] == ["orders/1-A", "orders/2-A"]
    assert pending == 0
    assert [_meta(d)[0] for d in after] == ["orders/2-A", "orders/3-A"]


def test_concurrent_writes_on_two_nodes_converge_on_the_later_one(
    ravendb_target: RavenTarget, standin_control: StandInControl
) -> None:
    node_a, node_b = node_store(ravendb_target, "A"), node_store(ravendb_target, "B")
    try:
        standin_control.pause_replication(ravendb_target.database)
        with node_a.open_session() as session:
            session.store(Order("companies/a", 1.0), "orders/1-A")
            session.save_changes()
        with node_b.open_session() as session:
            session.store(Order("companies/b", 2.0), "orders/1-A")
            session.save_changes()
        standin_control.flush_replication(ravendb_target.database)
        versions = []
        for store in (node_a, node_b):
            with store.open_session() as session:
                loaded = session.load("orders/1-A", dict)
                versions.append((loaded["Company"], session.advanced.get_metadata_for(loaded)["@change-vector"]))
    finally:
        node_a.close()
        node_b.close()
    assert versions[0] == versions[1]
    assert versions[0][0] == "companies/b"
    assert re.fullmatch(r"A:\d+-\S+, B:\d+-\S+", versions[0][1])


def test_a_stopped_node_receives_the_writes_it_missed_when_it_starts_again(
    ravendb_target: RavenTarget, standin_control: StandInControl
) -> None:
    node_a = node_store(ravendb_target, "A")
    try:
        standin_control.stop_node("B")
        _store_orders(node_a, 2)
        pending = standin_control.set_replication(ravendb_target.database)["Pending"]
        standin_control.start_node("B")
        node_b = node_store(ravendb_target, "B")
        try:
            on_b, _ = _raw(node_b, "from Orders")
        finally:
            node_b.close()
    finally:
        node_a.close()
    assert pending == 2
    assert [_meta(d)[0] for d in on_b] == ["orders/1-A", "orders/2-A"]


def test_a_replicated_document_can_be_older_than_what_its_node_wrote_since(
    ravendb_target: RavenTarget, standin_control: StandInControl
) -> None:
    node_a, node_b = node_store(ravendb_target, "A"), node_store(ravendb_target, "B")
    try:
        standin_control.pause_replication(ravendb_target.database)
        _store_orders(node_a, 1, start=1)
        _store_orders(node_b, 1, start=2)
        standin_control.flush_replication(ravendb_target.database)
        by_etag, _ = _raw(node_b, "from Orders")
        by_time, _ = _stream(node_b, CHANGED_SINCE, since=BEGINNING)
    finally:
        node_a.close()
        node_b.close()
    assert [_meta(d)[0] for d in by_etag] == ["orders/2-A", "orders/1-A"]
    assert _meta(by_etag[1])[1] < _meta(by_etag[0])[1]
    assert [_meta(d)[0] for d in by_time] == ["orders/1-A", "orders/2-A"]


def test_a_node_whose_clock_runs_behind_writes_older_timestamps(
    ravendb_target: RavenTarget, standin_control: StandInControl
) -> None:
    node_a, node_b = node_store(ravendb_target, "A"), node_store(ravendb_target, "B")
    try:
        standin_control.set_clock_skew("B", -60_000)
        _store_orders(node_a, 1, start=1)
        _store_orders(node_b, 1, start=2)
        docs, _ = _raw(node_a, "from Orders")
    finally:
        standin_control.set_clock_skew("B", 0)
        node_a.close()
        node_b.close()
    assert [_meta(d)[0] for d in docs] == ["orders/1-A", "orders/2-A"]
    assert _meta(docs[1])[1] < _meta(docs[0])[1]


def test_an_auto_index_deleted_as_idle_is_built_again_by_the_next_query(
    ravendb_store: DocumentStore, ravendb_target: RavenTarget, standin_control: StandInControl
) -> None:
    standin_control.generate_orders(ravendb_target.database, 1000)
    assert len(_stream(ravendb_store, CHANGED_SINCE, since=BEGINNING)[0]) == 1000
    standin_control.delete_auto_indexes(ravendb_target.database)
    assert ravendb_store.maintenance.send(GetStatisticsOperation()).count_of_indexes == 0
    standin_control.set_indexing(ravendb_target.database, build_s=30, new_index_wait_s=0.2)
    docs, stats = _stream(ravendb_store, CHANGED_SINCE, since=BEGINNING)
    assert stats.is_stale is True and len(docs) < 1000


def test_a_stream_that_creates_its_index_waits_for_it_then_answers_stale(
    ravendb_store: DocumentStore, ravendb_target: RavenTarget, standin_control: StandInControl
) -> None:
    standin_control.generate_orders(ravendb_target.database, 1000)
    standin_control.set_indexing(ravendb_target.database, build_s=30, new_index_wait_s=0.3)
    started = time.monotonic()
    docs, stats = _stream(ravendb_store, CHANGED_SINCE, since=BEGINNING)
    waited = time.monotonic() - started
    assert stats.is_stale is True
    assert len(docs) < 1000
    assert waited >= 0.3


def test_a_query_that_creates_its_index_waits_until_the_index_is_built(
    ravendb_store: DocumentStore, ravendb_target: RavenTarget, standin_control: StandInControl
) -> None:
    standin_control.generate_orders(ravendb_target.database, 1000)
    standin_control.set_indexing(ravendb_target.database, build_s=0.5)
    docs, stats = _raw(ravendb_store, CHANGED_SINCE, since=BEGINNING)
    assert stats.is_stale is False and len(docs) == 1000


def test_a_database_without_auto_indexes_refuses_dynamic_queries(
    ravendb_store: DocumentStore, ravendb_target: RavenTarget, standin_control: StandInControl
) -> None:
    _store_orders(ravendb_store, 2)
    standin_control.set_indexing(ravendb_target.database, dynamic_queries_disabled=True)
    with pytest.raises(RavenException, match="DisableQueryOptimizerGeneratedIndexes"):
        _stream(ravendb_store, CHANGED_SINCE, since=BEGINNING)
    assert len(_raw(ravendb_store, "from Orders")[0]) == 2


@pytest.mark.parametrize("include_archived", [False, True], ids=["exclude-archived", "include-archived"])
def test_archived_documents_are_left_out_of_auto_indexes_by_default(
    ravendb_store: DocumentStore, ravendb_target: RavenTarget, standin_control: StandInControl, include_archived: bool
) -> None:
    standin_control.set_indexing(ravendb_target.database, include_archived=include_archived)
    documents.put_archived_orders(ravendb_store)
    indexed, _ = _stream(ravendb_store, CHANGED_SINCE, since=BEGINNING)
    stored, _ = _raw(ravendb_store, "from Orders")
    assert [_meta(d)[0] for d in indexed] == ["orders/1-A", "orders/2-A", "orders/3-A"][:: 1 if include_archived else 2]
    assert len(stored) == 3


def test_collection_statistics_keep_an_emptied_collection_with_count_zero(ravendb_store: DocumentStore) -> None:
    _store_orders(ravendb_store, 2)
    with ravendb_store.open_session() as session:
        session.delete("orders/1-A")
        session.delete("orders/2-A")
        session.save_changes()
    stats = ravendb_store.maintenance.send(GetCollectionStatisticsOperation())
    assert stats.collections == {"Orders": 0}
    assert stats.count_of_documents == 0


# ---- reading storage: collections/docs, streams/docs, pulsed read transactions ---------------------------------


class Company:
    """A second collection for the whole-database reads."""

    def __init__(self, Name: str | None = None) -> None:
        self.Name = Name


def _store_companies(store: DocumentStore, count: int) -> None:
    with store.open_session() as session:
        for n in range(1, count + 1):
            session.store(Company(f"Company {n}"), f"companies/{n}-A")
        session.save_changes()


def _get(target: RavenTarget, path: str) -> requests.Response:
    """GET a path of the test database on node A with plain requests, the client certificate and the CA."""
    url = f"{target.urls[0]}/databases/{target.database}/{path}"
    return requests.get(url, cert=target.client_pem, verify=target.ca_pem or True, timeout=30)


def _ids(docs: list[dict]) -> list[str]:
    return [doc["@metadata"]["@id"] for doc in docs]


def _orders(*numbers: int) -> list[str]:
    return [f"orders/{n}-A" for n in numbers]


@pytest.mark.parametrize("name", ["Orders", "orders", "ORDERS"], ids=["as-written", "lower", "upper"])
def test_collection_documents_come_newest_first_paged_and_by_a_case_insensitive_name(
    ravendb_target: RavenTarget, name: str
) -> None:
    store = node_store(ravendb_target, "A")
    try:
        _store_orders(store, 6)
        _store_companies(store, 2)
        _store_orders(store, 1, start=2)  # orders/2-A again: now the collection's newest
    finally:
        store.close()
    everything = _get(ravendb_target, f"collections/docs?name={name}").json()
    page = _get(ravendb_target, f"collections/docs?name={name}&start=1&pageSize=3").json()
    assert list(everything) == ["Results"]
    assert _ids(everything["Results"]) == _orders(2, 6, 5, 4, 3, 1)
    assert _ids(page["Results"]) == _orders(6, 5, 4)


def test_collection_documents_of_an_unknown_collection_are_none(ravendb_target: RavenTarget) -> None:
    store = node_store(ravendb_target, "A")
    try:
        _store_orders(store, 2)
    finally:
        store.close()
    assert _get(ravendb_target, "collections/docs?name=Invoices").json() == {"Results": []}


def _docs_stream_ids(target: RavenTarget, _session: Any) -> Iterator[str]:
    """GET /streams/docs?format=jsonl on node A (the client's stream_starting_with("") sends startsWith="" and
    gets nothing), read as it arrives: the ids in the order sent."""
    url = f"{target.urls[0]}/databases/{target.database}/streams/docs?format=jsonl"
    response = requests.get(url, cert=target.client_pem, verify=target.ca_pem or True, timeout=60, stream=True)
    response.raise_for_status()
    return (json.loads(line)["@metadata"]["@id"] for line in response.iter_lines() if line)


def _collection_stream_ids(_target: RavenTarget, session: Any) -> Iterator[str]:
    """`from 'Orders'` streamed through the client: the ids in the order sent."""
    return (result.key for result in session.advanced.stream(session.advanced.raw_query("from 'Orders'", dict)))


def test_a_docs_stream_reads_every_document_newest_etag_first(ravendb_target: RavenTarget) -> None:
    store = node_store(ravendb_target, "A")
    try:
        _store_orders(store, 3)
        _store_companies(store, 2)
        _store_orders(store, 1, start=1)
    finally:
        store.close()
    ids = list(_docs_stream_ids(ravendb_target, None))
    assert ids == ["orders/1-A", "companies/2-A", "companies/1-A", "orders/3-A", "orders/2-A"]


def test_a_docs_stream_is_one_document_per_line_with_the_database_change_vector_as_etag(
    ravendb_target: RavenTarget,
) -> None:
    store = node_store(ravendb_target, "A")
    try:
        _store_orders(store, 2)
        vector = store.maintenance.send(GetStatisticsOperation()).database_change_vector
    finally:
        store.close()
    response = _get(ravendb_target, "streams/docs?format=jsonl")
    lines = [json.loads(line) for line in response.text.splitlines() if line]
    assert response.headers["ETag"] == f'"{vector}"'
    assert "Date" in response.headers
    assert _ids(lines) == _orders(2, 1)  # the documents themselves: no Item wrapper, no Stats line


def _stream_across_a_write(
    target: RavenTarget, control: StandInControl, stream: Any, sent_before: int, write: Any
) -> list[str]:
    """Start a stream on node A, let it send `sent_before` documents and pause, make the write, let it finish;
    the ids it sent, in order."""
    store = node_store(target, "A")
    try:
        control.pause_stream(target.database, after=sent_before)
        with store.open_session() as session:
            ids = stream(target, session)
            first = next(ids)
            assert control.wait_stream_paused(target.database) == sent_before
            write(store)
            control.release_stream(target.database)
            return [first, *ids]
    finally:
        store.close()


def _move_and_delete(store: DocumentStore) -> None:
    _store_orders(store, 1, start=9)  # sent already: moves to the newest etag
    _store_orders(store, 1, start=5)  # not sent yet: moves to the newest etag
    _delete(store, 2)  # not sent yet


@pytest.fixture
def ten_orders_on_node_a(ravendb_target: RavenTarget) -> None:
    """orders/1-A to orders/10-A, written on node A, the node the streams below read."""
    store = node_store(ravendb_target, "A")
    try:
        _store_orders(store, 10)
    finally:
        store.close()


@pytest.mark.parametrize(
    ("stream", "expected"),
    [
        (_docs_stream_ids, _orders(10, 9, 8, 7, 6, 5, 4, 3, 2, 1)),
        (_collection_stream_ids, _orders(1, 2, 3, 4, 5, 6, 7, 8, 9, 10)),
    ],
    ids=["docs-stream", "collection-query"],
)
@pytest.mark.usefixtures("ten_orders_on_node_a")
def test_without_renewals_a_stream_reads_the_snapshot_it_started_with(
    ravendb_target: RavenTarget, standin_control: StandInControl, stream: Any, expected: list[str]
) -> None:
    assert _stream_across_a_write(ravendb_target, standin_control, stream, 3, _move_and_delete) == expected


@pytest.mark.usefixtures("ten_orders_on_node_a")
def test_a_renewed_docs_stream_reads_every_unchanged_document_but_not_one_moved_after_the_renewal(
    ravendb_target: RavenTarget, standin_control: StandInControl
) -> None:
    standin_control.set_read_pulse(ravendb_target.database, every_docs=3)
    ids = _stream_across_a_write(ravendb_target, standin_control, _docs_stream_ids, 3, _move_and_delete)
    assert ids == _orders(10, 9, 8, 7, 6, 4, 3, 1)  # orders/5-A moved above the stream, orders/2-A deleted


@pytest.mark.usefixtures("ten_orders_on_node_a")
def test_a_renewed_collection_query_stream_skips_an_unchanged_document_when_a_sent_one_moves(
    ravendb_target: RavenTarget, standin_control: StandInControl
) -> None:
    standin_control.set_read_pulse(ravendb_target.database, every_docs=3)

    def move_a_sent_one(writer: DocumentStore) -> None:
        _store_orders(writer, 1, start=2)

    ids = _stream_across_a_write(ravendb_target, standin_control, _collection_stream_ids, 3, move_a_sent_one)
    assert ids == _orders(1, 2, 3, 5, 6, 7, 8, 9, 10, 2)  # resumed at position 3: orders/4-A never sent


@pytest.mark.usefixtures("ten_orders_on_node_a")
def test_a_renewed_docs_stream_skips_one_document_when_everything_it_read_was_deleted_and_nothing_written(
    ravendb_target: RavenTarget, standin_control: StandInControl
) -> None:
    standin_control.set_read_pulse(ravendb_target.database, every_docs=3)

    def delete_the_sent_ones(writer: DocumentStore) -> None:
        _delete(writer, 10, 9, 8)

    ids = _stream_across_a_write(ravendb_target, standin_control, _docs_stream_ids, 3, delete_the_sent_ones)
    assert ids == _orders(10, 9, 8, 6, 5, 4, 3, 2, 1)  # the seek to orders/8-A's etag fails: orders/7-A skipped


def test_request_counters_name_the_two_storage_reads(
    ravendb_target: RavenTarget, standin_control: StandInControl
) -> None:
    _get(ravendb_target, "collections/docs?name=Orders")
    _get(ravendb_target, "collections/docs?name=Companies")
    _get(ravendb_target, "streams/docs?format=jsonl")
    base = f"/databases/{ravendb_target.database}"
    assert standin_control.requests("GET", f"{base}/collections/docs") == {"A": 2}
    assert standin_control.requests("GET", f"{base}/streams/docs") == {"A": 1}


def test_a_docs_stream_can_fail_midway_with_the_server_error_object(
    ravendb_target: RavenTarget, standin_control: StandInControl
) -> None:
    store = node_store(ravendb_target, "A")
    try:
        _store_orders(store, 5)
    finally:
        store.close()
    standin_control.fail_streams(ravendb_target.database, after=2)
    lines = [json.loads(line) for line in _get(ravendb_target, "streams/docs?format=jsonl").text.splitlines() if line]
    assert _ids(lines[:2]) == _orders(5, 4)
    assert len(lines) == 3 and {"Type", "Message", "Error"} <= set(lines[2])


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "compressed"])
def test_a_collection_query_stream_over_compressed_documents_renews_at_multiples_of_1024_once_over_the_limit(
    ravendb_target: RavenTarget, standin_control: StandInControl, compressed: bool
) -> None:
    """RavenDB 7.x counts decompression buffers towards Databases.PulseReadTransactionLimitInMb: a stream over a
    compressed collection renews its read transaction (checked every 1,024 documents), and a collection query
    resumes by position, so a document sent before the renewal and rewritten makes it skip an unchanged one."""
    standin_control.generate_orders(ravendb_target.database, 3_000)
    if compressed:
        store = node_store(ravendb_target, "A")
        try:
            store.maintenance.send(
                UpdateDocumentsCompressionConfigurationOperation(
                    DocumentsCompressionConfiguration(False, False, ["Orders"])
                )
            )
        finally:
            store.close()
        standin_control.set_pulse_limit(ravendb_target.database, 1)

    def rewrite_a_sent_one(writer: DocumentStore) -> None:
        _store_orders(writer, 1, start=10)

    ids = _stream_across_a_write(ravendb_target, standin_control, _collection_stream_ids, 1_500, rewrite_a_sent_one)
    if compressed:  # renewed at 2,048: resumed at position 2,048 of the new snapshot
        assert "orders/2049-A" not in ids and ids[-1] == "orders/10-A" and len(ids) == 3_000
    else:
        assert ids == [f"orders/{n}-A" for n in range(1, 3_001)]


def test_minimum_revisions_to_keep_trims_the_oldest_revisions_of_an_id(ravendb_store: DocumentStore) -> None:
    """DeleteOldRevisions on every write: an id keeps at most MinimumRevisionsToKeep revisions."""
    ravendb_store.maintenance.send(
        ConfigureRevisionsOperation(
            RevisionsConfiguration(
                collections={"Orders": RevisionsCollectionConfiguration(disabled=False, minimum_revisions_to_keep=2)}
            )
        )
    )
    for _ in range(5):
        _store_orders(ravendb_store, 1)

    assert ravendb_store.maintenance.send(GetStatisticsOperation()).count_of_revision_documents == 2


# ---- auto indexes over every collection, and merged auto indexes -------------------------------------------------


def test_all_docs_query_is_served_by_one_auto_index_over_every_collection(
    ravendb_store: DocumentStore, standin_control: Any, ravendb_target: Any
) -> None:
    _store_orders(ravendb_store, 3)
    documents.put(ravendb_store, [("companies/1-A", "Companies", {"Name": "Acme"})])
    before = standin_control.indexing(ravendb_target.database)["AutoIndexesCreated"]
    docs, stats = _raw(
        ravendb_store, f"from @all_docs where {LM} >= $since order by {LM}", since="2000-01-01T00:00:00.0000000Z"
    )
    again, _ = _raw(ravendb_store, f"from @all_docs where {LM} >= $since", since="2000-01-01T00:00:00.0000000Z")
    assert stats.index_name == "Auto/AllDocs/By@metadata.@last-modified"
    assert [d["@metadata"]["@id"] for d in docs][-1] == "companies/1-A"
    assert {d["@metadata"]["@collection"] for d in docs} >= {"Orders", "Companies"}
    assert len(again) == len(docs)
    assert standin_control.indexing(ravendb_target.database)["AutoIndexesCreated"] == before + 1


def test_a_query_needing_another_field_builds_a_merged_index_and_the_superseded_one_goes_once_it_caught_up(
    ravendb_store: DocumentStore, standin_control: Any, ravendb_target: Any
) -> None:
    database = ravendb_target.database
    _store_orders(ravendb_store, 5)
    standin_control.set_indexing(database, superseded_delete_s=0.5)
    _, first = _raw(ravendb_store, "from Orders where Freight > $low", low=1)
    _, merged = _raw(ravendb_store, f"from Orders where {LM} >= $since", since="2000-01-01T00:00:00.0000000Z")
    names = {ix["Name"]: ix["SupersededBy"] for ix in standin_control.indexing(database)["Indexes"]}
    assert first.index_name == "Auto/Orders/ByFreight"
    assert merged.index_name == "Auto/Orders/By@metadata.@last-modifiedAndFreight"
    assert names.get("Auto/Orders/ByFreight") == merged.index_name
    time.sleep(0.6)
    after = standin_control.indexing(database)
    assert [ix["Name"] for ix in after["Indexes"]] == [merged.index_name]
    _, reused = _raw(ravendb_store, "from Orders where Freight > $low", low=1)
    assert reused.index_name == merged.index_name
    assert after["AutoIndexesCreated"] == 2

"""Reliability: concurrent writers, crash and resume, cluster failover, TLS, hostile input, secrets, odd documents.

Everything goes through update() (or `fivetran debug`) with the real ravendb client over HTTPS against the test
server, or a real RavenDB when RAVENDB_TEST_URLS is set (tests that steer the server skip there). What landed is
compared with the database, id by id and field by field, through connector.flatten of the stored documents.
"""

import base64
import glob
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from ravendb.documents.queries.index_query import IndexQuery

import connector
from connector import ConfigurationError, SourceError
from tests import documents
from tests.documents import orders

REPO_ROOT = Path(__file__).resolve().parents[1]
CONNECTOR_SOURCE = Path(connector.__file__).read_text(encoding="utf-8")


# ----------------------------------------------------------------------------------------------------------
# Helpers


def b64_file(path: str) -> str:
    return base64.b64encode(Path(path).read_bytes()).decode()


def configuration_for(target, **overrides: str) -> dict[str, str]:
    configuration = {"ravendb_urls": ",".join(target.urls), "database_name": target.database}
    if target.client_pem:
        configuration["certificate_base64"] = b64_file(target.client_pem)
    if target.ca_pem:
        configuration["server_ca_base64"] = b64_file(target.ca_pem)
    configuration.update(overrides)
    return configuration


def sync(configuration: dict, ops, state: dict | None = None) -> dict:
    """One sync; the state it checkpointed last."""
    connector.update(configuration, state or {})
    return ops.checkpoints[-1]


def database_documents(target, collection: str) -> list[dict]:
    """The collection's documents through a collection query (storage order, never stale)."""
    settings = connector.validate_configuration(configuration_for(target))
    rql = f"from '{connector.Utils.escape_collection_name(collection)}'"
    with connector.open_store(settings) as store:
        return list(connector.QueryStream(store, settings, IndexQuery(rql)))


def database_rows(target, collection: str) -> dict[str, dict]:
    """The collection as the connector should land it, by id."""
    return {row["Id"]: row for row in map(connector.flatten, database_documents(target, collection))}


def secret_fragments(target, configuration: dict) -> list[str]:
    """Every line of the client PEM's base64 bodies, and chunks of the configured certificate_base64 value."""
    lines = [line.strip() for line in Path(target.client_pem).read_text().splitlines()]
    body = [line for line in lines if line and "-----" not in line and len(line) >= 16]
    value = configuration["certificate_base64"]
    return [*body, *(value[i : i + 40] for i in range(0, len(value) - 40, 40)), "PRIVATE KEY"]


def certificate_dirs() -> set[str]:
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "ravendb-connector-*")))


@pytest.fixture
def configuration(ravendb_target) -> dict[str, str]:
    return configuration_for(ravendb_target, collection_name="Orders")


# ----------------------------------------------------------------------------------------------------------
# 1. Concurrent writers in another process


def wait_for(predicate, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while not (found := predicate()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout} s for {what}")
        time.sleep(0.005)
    return found


def read_report(directory: Path, name: str):
    path = directory / name
    return json.loads(path.read_text()) if path.exists() else None


def test_writes_from_another_process_during_a_sync_land_by_the_next_sync(
    ravendb_target, ravendb_store, configuration, ops, monkeypatch, tmp_path
):
    existing, rounds = 3000, 6
    documents.put(ravendb_store, orders(1, existing))
    arguments = {
        "urls": ravendb_target.urls,
        "database": ravendb_target.database,
        "client_pem": ravendb_target.client_pem,
        "ca_pem": ravendb_target.ca_pem,
        "control": ravendb_target.control is not None,
        "directory": str(tmp_path),
        "rounds": rounds,
        "existing": existing,
    }
    writer = subprocess.Popen(
        [sys.executable, "-m", "tests.writer_process", json.dumps(arguments)], cwd=REPO_ROOT, stdin=subprocess.DEVNULL
    )
    try:
        at_cursor_tick = wait_for(lambda: read_report(tmp_path, "ready"), what="the writer's frozen tick")
        upserted, real_upsert = itertools.count(1), ops.upsert

        def write_while_syncing(table, data):
            real_upsert(table, data)
            count = next(upserted)
            if count == 300:
                (tmp_path / "go").touch()
            elif count == 1500:  # the writer is provably writing while this sync streams
                wait_for(lambda: (read_report(tmp_path, "progress") or 0) >= 2, what="two writer rounds")
            if count > 300:
                time.sleep(0.0003)

        monkeypatch.setattr(ops, "upsert", write_while_syncing)
        state = sync(configuration, ops)
        monkeypatch.setattr(ops, "upsert", real_upsert)
        assert writer.wait(timeout=60) == 0
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    after_first = ops.rows("Orders")
    cursor = state["cursors"]["Orders"]
    expected = database_rows(ravendb_target, "Orders")
    before_cursor = {
        document["@metadata"]["@id"]
        for document in database_documents(ravendb_target, "Orders")
        if document["@metadata"]["@last-modified"] < cursor
    }
    assert before_cursor
    assert {doc_id: after_first.get(doc_id) for doc_id in before_cursor} == {
        doc_id: expected[doc_id] for doc_id in before_cursor
    }
    if ravendb_target.control is not None:  # the frozen tick is the cursor: its later documents come next sync
        assert set(at_cursor_tick) <= set(after_first)
        assert cursor == max(
            row["@metadata"]["@last-modified"]
            for row in database_documents(ravendb_target, "Orders")
            if row["@metadata"]["@id"] == "frozen/1"
        )
        assert not {f"frozen/{n}" for n in range(6, 11)} & set(after_first)

    sync(configuration, ops, state)

    assert ops.rows("Orders") == expected
    assert len(expected) == existing + 10 + rounds * 20


@pytest.mark.xfail(
    strict=True,
    reason="connector.py bug (edge): the cursor remembers ids, not versions, at its exact timestamp; a document "
    "modified again within that same 100-ns tick after it was synced is skipped by every later sync",
)
def test_a_document_modified_again_within_the_cursor_tick_lands_next_sync(
    ravendb_target, ravendb_store, standin_control, configuration, ops
):
    documents.put(ravendb_store, orders(1, 3))
    standin_control.freeze_clock(True)
    documents.put(ravendb_store, orders(4, 1, Freight=1.0))
    state = sync(configuration, ops)
    documents.put(ravendb_store, orders(4, 1, Freight=2.0))  # same tick: the clock is still frozen
    standin_control.freeze_clock(False)

    sync(configuration, ops, state)

    assert ops.rows("Orders")["orders/4-A"]["Freight"] == "2.0"


# ----------------------------------------------------------------------------------------------------------
# 3. Cluster: a node dies in the middle of a sync
# (a first URL dead at the start is test_sync_integration.py::test_a_dead_first_node_fails_over_with_a_warning)


@pytest.mark.parametrize("serving", [True, False], ids=["serving-node-dies", "idle-node-dies"])
def test_a_node_dying_mid_sync_fails_over_or_fails_cleanly_and_the_next_sync_completes(
    ravendb_target, standin_control, configuration, ops, logs, monkeypatch, serving
):
    standin_control.generate_orders(ravendb_target.database, 20_000)  # enough that the stream is mid-flight
    streams, upserted, stopped = [], itertools.count(1), []
    real_upsert = ops.upsert

    class RecordedStreamCommand(connector.QueryStreamCommand):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            streams.append(self)

    def stop_a_node_after_1200(table, data):
        real_upsert(table, data)
        if next(upserted) == 1200:
            url = streams[-1].result.response.url  # the node this stream is being read from
            nodes = standin_control.nodes()
            stopped.append(next(node["Tag"] for node in nodes if url.startswith(node["Url"]) == serving))
            standin_control.stop_node(stopped[-1])

    monkeypatch.setattr(connector, "QueryStreamCommand", RecordedStreamCommand)
    monkeypatch.setattr(ops, "upsert", stop_a_node_after_1200)
    failed = None
    try:
        state = sync(configuration, ops)
    except SourceError as exc:  # allowed: one line naming the setting; the next sync resumes from the checkpoint
        failed = str(exc)
        state = ops.checkpoints[-1]
    resumed = [line for line in logs.messages("WARNING") if "resuming from the cursor" in line]
    monkeypatch.setattr(ops, "upsert", real_upsert)

    sync(configuration, ops, state)

    assert ops.rows("Orders") == database_rows(ravendb_target, "Orders")
    assert len(ops.rows("Orders")) == 20_000
    assert not any(node["Running"] for node in standin_control.nodes() if node["Tag"] == stopped[0])
    if failed is not None:
        assert "\n" not in failed and failed.startswith("ravendb_urls: ")
    if serving:  # the stream in flight broke: retried through the other node, or failed cleanly
        assert resumed or failed
    else:
        assert not resumed and failed is None


# ----------------------------------------------------------------------------------------------------------
# 4. TLS


def test_a_certificate_without_its_key_is_refused_before_connecting(ravendb_target, ops, monkeypatch):
    certificate_only = "".join(
        re.findall(
            r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n?",
            Path(ravendb_target.client_pem).read_text(),
            re.S,
        )
    )
    assert certificate_only and "PRIVATE KEY" not in certificate_only
    configuration = configuration_for(
        ravendb_target, certificate_base64=base64.b64encode(certificate_only.encode()).decode()
    )
    connections = []
    monkeypatch.setattr(connector, "_check_reachable", lambda urls: connections.append(urls))
    monkeypatch.setattr(connector, "DocumentStore", lambda *args: connections.append(args))

    with pytest.raises(ConfigurationError, match=r"^certificate_base64: holds no private key") as raised:
        connector.update(configuration, {})

    assert connections == []
    assert "\n" not in str(raised.value)
    assert ops.calls == [("error", None, str(raised.value))]


@pytest.mark.parametrize(
    "pattern",
    [r"verify\s*=\s*False", r"CERT_NONE", r"check_hostname\s*=\s*False", r"disable_warnings", r"InsecureRequest"],
    ids=["verify-false", "cert-none", "no-hostname-check", "silenced-warnings", "insecure-request"],
)
def test_connector_never_disables_tls_verification(pattern):
    assert re.search(pattern, CONNECTOR_SOURCE) is None


@pytest.mark.parametrize("with_server_ca", [True, False], ids=["private-ca-trust-store", "default-verification"])
def test_the_store_the_connector_opens_verifies_the_server(
    ravendb_target, ravendb_store, ops, monkeypatch, with_server_ca
):
    documents.put(ravendb_store, orders(1, 3))
    configuration = configuration_for(ravendb_target, collection_name="Orders")
    if not with_server_ca:
        configuration.pop("server_ca_base64", None)
    opened, seen = [], []
    real_store, real_upsert = connector.DocumentStore, ops.upsert

    def recording_store(*args, **kwargs):
        store = real_store(*args, **kwargs)
        opened.append(store)
        return store

    def inspect_session(table, data):
        session = opened[-1].get_request_executor().http_session
        trust_store = Path(session.verify).read_bytes() if isinstance(session.verify, str) else session.verify
        seen.append((trust_store, session.cert is not None))
        real_upsert(table, data)

    monkeypatch.setattr(connector, "DocumentStore", recording_store)
    monkeypatch.setattr(ops, "upsert", inspect_session)
    try:
        sync(configuration, ops)
    except SourceError as exc:  # without the private CA the server is (rightly) not trusted
        assert not with_server_ca and ravendb_target.ca_pem and "not trusted" in str(exc)
        assert seen == []
        return

    expected = Path(ravendb_target.ca_pem).read_bytes() if with_server_ca and ravendb_target.ca_pem else True
    assert seen and all(verify == expected and has_cert for verify, has_cert in seen)


# ----------------------------------------------------------------------------------------------------------
# 5. Hostile input through update() with the real server


INJECTIONS = {
    "quote-where-true": "Orders' where true or 'x",
    "double-quote": 'Orders" ',
    "backslash": "Orders\\",
    "quote-limit-comment": "Orders' limit 1 --",
    "quote-or-id": "Orders' or id() = 'orders/1-A",
}


@pytest.mark.parametrize("collection", INJECTIONS.values(), ids=INJECTIONS.keys())
def test_rql_injection_in_collection_name_is_refused_in_one_line(ravendb_target, ravendb_store, ops, collection):
    documents.put(ravendb_store, orders(1, 5))
    configuration = configuration_for(ravendb_target, collection_name=collection)

    with pytest.raises((ConfigurationError, SourceError), match=r"^collection_name: ") as raised:
        connector.update(configuration, {})

    assert "\n" not in str(raised.value)
    assert ops.upserts == []


@pytest.mark.parametrize("collection", INJECTIONS.values(), ids=INJECTIONS.keys())
def test_rql_injection_reaching_the_query_is_a_literal_collection_name(ravendb_target, ravendb_store, collection):
    """Below resolve_collections: the sync query itself takes the name as a literal (nonexistent) collection."""
    documents.put(ravendb_store, orders(1, 5))
    settings = connector.validate_configuration(configuration_for(ravendb_target))
    with connector.open_store(settings) as store:
        try:
            found = list(
                connector.QueryStream(
                    store, settings, connector.changed_since_query(collection, connector._BEGINNING_OF_TIME)
                )
            )
        except SourceError as exc:
            found = []
            assert "\n" not in str(exc)
    assert found == []


@pytest.mark.parametrize(
    "collection",
    ["Or'ders", 'Or"ders', "Or\\ders", "Commandes é", "注文"],
    ids=["quote", "dquote", "backslash", "space-accent", "cjk"],
)
def test_a_collection_whose_name_needs_escaping_syncs_literally(ravendb_target, ravendb_store, ops, collection):
    documents.put(ravendb_store, [(f"odd/{n}", collection, {"N": n}) for n in range(1, 4)] + orders(1, 3))

    sync(configuration_for(ravendb_target, collection_name=collection), ops)

    assert set(ops.rows(collection)) == {"odd/1", "odd/2", "odd/3"}
    assert ops.rows(collection) == database_rows(ravendb_target, collection)
    assert {table for table, _ in ops.upserts} == {collection}


ODD_IDS = {
    "single-quote": "orders/it's",
    "double-quote": 'orders/"quoted"',
    "backslash": "orders/back\\slash",
    "unicode": "orders/ünïcødé/日本語",
    "emoji": "orders/🦅",
    "spaces": "orders/with some spaces",
    "rql-ish": "orders/x' or true --",
}


def test_documents_with_odd_ids_sync(ravendb_target, ravendb_store, configuration, ops):
    documents.put(ravendb_store, [(doc_id, "Orders", {"Label": name}) for name, doc_id in ODD_IDS.items()])

    state = sync(configuration, ops)
    sync(configuration, ops, state)

    assert set(ops.rows("Orders")) == set(ODD_IDS.values())
    assert ops.rows("Orders") == database_rows(ravendb_target, "Orders")
    assert len(ops.upserts) == len(ODD_IDS)  # the second sync lands nothing again
    assert {row["Id"]: row["Label"] for row in ops.rows("Orders").values()} == {v: k for k, v in ODD_IDS.items()}


# ----------------------------------------------------------------------------------------------------------
# 7. Odd documents


def nested(levels: int, leaf: dict) -> dict:
    value = leaf
    for level in reversed(range(levels)):
        value = {f"L{level}": value}
    return value


def test_a_5_mb_document_syncs_whole(ravendb_target, ravendb_store, configuration, ops):
    big = "".join(chr(0x41 + n % 26) for n in range(5 * 1024 * 1024))
    documents.put(ravendb_store, [("orders/big", "Orders", {"Blob": big, "After": 1}), *orders(1, 2)])

    sync(configuration, ops)

    row = ops.rows("Orders")["orders/big"]
    assert len(row["Blob"]) == len(big) and row["Blob"] == big
    assert row["After"] == 1
    assert set(ops.rows("Orders")) == {"orders/big", "orders/1-A", "orders/2-A"}


def test_50_levels_of_nesting_flatten_to_10_and_land_the_rest_as_one_json_value(
    ravendb_target, ravendb_store, configuration, ops
):
    documents.put(ravendb_store, [("orders/deep", "Orders", {**nested(50, {"Leaf": 42}), "Top": "t"})])

    sync(configuration, ops)

    row = ops.rows("Orders")["orders/deep"]
    deep_column = "_".join(f"L{level}" for level in range(connector._MAX_FLATTEN_DEPTH))
    assert set(row) == {"Id", "LastModified", "Top", deep_column}
    remainder = row[deep_column]
    assert remainder == nested(50, {"Leaf": 42})["L0"]["L1"]["L2"]["L3"]["L4"]["L5"]["L6"]["L7"]["L8"]["L9"]
    assert list(remainder) == ["L10"]
    assert row == database_rows(ravendb_target, "Orders")["orders/deep"]


ODD_FIELDS = {
    "Prénom": "Zoë",
    "名前": "山田",
    "with space": 1,
    "dot.ted": 2,
    "da-sh": 3,
    "emoji🦅": "yes",
    "quote'd": "q",
    '"dq"': "dq",
    "back\\slash": "bs",
    "": "empty name",
    "CamelCase": {"Ünder": "nested unicode"},
}


def test_unicode_and_odd_characters_in_field_names(ravendb_target, ravendb_store, configuration, ops):
    documents.put(ravendb_store, [("orders/ödd-fïelds ✓", "Orders", ODD_FIELDS)])

    sync(configuration, ops)

    row = ops.rows("Orders")["orders/ödd-fïelds ✓"]
    assert row == database_rows(ravendb_target, "Orders")["orders/ödd-fïelds ✓"]
    assert row["Prénom"] == "Zoë" and row["名前"] == "山田" and row["emoji🦅"] == "yes"
    assert row["with space"] == 1 and row["dot.ted"] == 2 and row["quote'd"] == "q" and row['"dq"'] == "dq"
    assert row["back\\slash"] == "bs" and row[""] == "empty name" and row["CamelCase_Ünder"] == "nested unicode"


def test_a_field_that_changes_type_between_documents_lands_as_is_and_is_declared_string(
    ravendb_target, ravendb_store, configuration, ops
):
    documents.put(
        ravendb_store,
        [
            ("orders/num", "Orders", {"Value": 42}),
            ("orders/text", "Orders", {"Value": "forty-two"}),
            ("orders/float", "Orders", {"Value": 4.5}),
            ("orders/bool", "Orders", {"Value": True}),
            ("orders/null", "Orders", {"Value": None}),
        ],
    )

    sync(configuration, ops)
    tables = connector.schema(configuration)

    values = {doc_id: row["Value"] for doc_id, row in ops.rows("Orders").items()}
    assert values == {
        "orders/num": 42,
        "orders/text": "forty-two",
        "orders/float": "4.5",
        "orders/bool": "true",
        "orders/null": None,
    }
    assert tables == [
        {
            "table": "Orders",
            "primary_key": ["Id"],
            "columns": {"Id": "STRING", "LastModified": "UTC_DATETIME", "Value": "STRING"},
        }
    ]


def test_empty_objects_and_arrays(ravendb_target, ravendb_store, configuration, ops):
    body = {"EmptyObject": {}, "EmptyArray": [], "Outer": {"Inner": {}, "List": [[], {}]}, "Kept": "k"}
    documents.put(ravendb_store, [("orders/empty", "Orders", body), ("orders/bare", "Orders", {})])

    sync(configuration, ops)

    rows = ops.rows("Orders")
    assert rows == database_rows(ravendb_target, "Orders")
    # An empty object flattens to no column at all (nothing under it); an empty array is the JSON value [].
    assert set(rows["orders/empty"]) == {"Id", "LastModified", "EmptyArray", "Outer_List", "Kept"}
    assert rows["orders/empty"]["EmptyArray"] == [] and rows["orders/empty"]["Outer_List"] == [[], {}]
    assert set(rows["orders/bare"]) == {"Id", "LastModified"}


def test_documents_without_a_collection_are_not_synced(ravendb_target, ravendb_store, ops):
    documents.put(ravendb_store, [*orders(1, 2), ("loose/1", None, {"Note": "no collection"})])
    with ravendb_store.open_session() as session:
        loose = session.advanced.get_metadata_for(session.load("loose/1"))
    assert loose.get("@collection", "@empty") == "@empty"

    sync(configuration_for(ravendb_target), ops)

    assert {table for table, _ in ops.upserts} == {"Orders"}
    assert all(row["Id"] != "loose/1" for _, row in ops.upserts)
    with pytest.raises(ConfigurationError, match=r"^collection_name: '@empty' is a RavenDB system collection"):
        connector.update(configuration_for(ravendb_target, collection_name="@empty"), {})

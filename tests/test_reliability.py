"""Reliability: concurrent writers, crash and resume, cluster failover, TLS, hostile input, secrets, odd documents.

Everything goes through update() (or `fivetran debug`) with the real ravendb client over HTTPS against the test
server, or a real RavenDB when RAVENDB_TEST_URLS is set (tests that steer the server skip there). What landed is
compared with the database, id by id and field by field, through connector.flatten of the stored documents.
"""

import base64
import itertools
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import duckdb
import pytest
from ravendb.serverwide.database_record import DatabaseRecord
from ravendb.serverwide.operations.common import CreateDatabaseOperation, DeleteDatabaseOperation

import connector
from connector import ConfigurationError, SourceError
from tests import documents
from tests.documents import orders
from tests.standin.fixtures import open_store
from tests.syncing import (
    b64_file,
    certificate_dirs,
    configuration_for,
    database_documents,
    database_rows,
    debug_process,
    record_streams,
    start_debug,
    sync,
    write_configuration,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
CONNECTOR_SOURCE = Path(connector.__file__).read_text(encoding="utf-8")


# ----------------------------------------------------------------------------------------------------------
# Helpers


def secret_fragments(target, configuration: dict) -> list[str]:
    """The private key's random part: its PEM body lines after the first, and 40-character chunks of the configured
    certificate_base64 inside the key body. Certificate lines are public, and the first bytes of every key of one
    kind are the same ASN.1 header, so neither would prove a leak."""
    pem = Path(target.client_pem).read_bytes()
    header = re.search(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----\n", pem)
    footer = re.search(rb"-----END [A-Z ]*PRIVATE KEY-----", pem)
    body = pem[header.end() : footer.start()].decode().split()
    value = configuration["certificate_base64"]
    first, last = -(-(header.end() + 64) // 3) * 4, footer.start() // 3 * 4  # base64 of the random key bytes
    return [*body[1:], *(value[i : i + 40] for i in range(first, last - 40, 40))]


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
    configuration = {**configuration, "lookback_seconds": "0"}  # the cursor moves within this test's seconds
    documents.put(ravendb_store, orders(1, existing))
    time.sleep(1.1)  # the server's Date header has whole seconds: the sync starts a second after these writes
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
    if ravendb_target.control is not None:  # written before the sync began: landed, and the cursor not past them
        assert set(at_cursor_tick) <= set(after_first)
        assert cursor <= max(
            row["@metadata"]["@last-modified"]
            for row in database_documents(ravendb_target, "Orders")
            if row["@metadata"]["@id"] == "frozen/1"
        )

    sync(configuration, ops, state)

    assert ops.rows("Orders") == expected
    assert len(expected) == existing + 10 + rounds * 20


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
    ravendb_target, standin_control, configuration, ops, logs, monkeypatch, no_backoff, serving
):
    standin_control.generate_orders(ravendb_target.database, 3_000)
    standin_control.throttle_streams(ravendb_target.database, docs=200, every_ms=100)  # mid-flight at the 1,200th
    streams, upserted, stopped = record_streams(monkeypatch), itertools.count(1), []
    real_upsert = ops.upsert

    def stop_a_node_after_1200(table, data):
        real_upsert(table, data)
        if next(upserted) == 1200:
            url = streams[-1].result.response.url  # the node this stream is being read from
            nodes = standin_control.nodes()
            stopped.append(next(node["Tag"] for node in nodes if url.startswith(node["Url"]) == serving))
            standin_control.stop_node(stopped[-1])

    monkeypatch.setattr(ops, "upsert", stop_a_node_after_1200)
    failed = None
    try:
        state = sync(configuration, ops)
    except SourceError as exc:  # allowed: one line naming the setting; the next sync resumes from the checkpoint
        failed = str(exc)
        state = ops.checkpoints[-1]
    resumed = [line for line in logs.messages("WARNING") if "resuming from the cursor" in line]
    monkeypatch.setattr(ops, "upsert", real_upsert)
    standin_control.throttle_streams(ravendb_target.database, docs=0, every_ms=0)

    sync(configuration, ops, state)

    assert ops.rows("Orders") == database_rows(ravendb_target, "Orders")
    assert len(ops.rows("Orders")) == 3_000
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

    assert set(ops.rows(connector.table_name(collection))) == {"odd/1", "odd/2", "odd/3"}
    assert ops.rows(connector.table_name(collection)) == database_rows(ravendb_target, collection)
    assert {table for table, _ in ops.upserts} == {connector.table_name(collection)}


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
    # Each field in its own column, named as Fivetran names it (accents dropped, other letters escaped).
    assert row["prenom"] == "Zoë" and row["u_21517_u_21069"] == "山田" and row["emoji_u_129413"] == "yes"
    assert row["with_space"] == 1 and row["dot_ted"] == 2 and row["quote_d"] == "q" and row["_dq_"] == "dq"
    assert row["back_slash"] == "bs" and row["_empty"] == "empty name" and row["camel_case_under"] == "nested unicode"


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
    # An empty object is the JSON value {} in its own column; an empty array is the JSON value [].
    assert set(rows["orders/empty"]) == {
        *("Id", "LastModified", "EmptyObject", "EmptyArray", "Outer_Inner", "Outer_List", "Kept")
    }
    assert rows["orders/empty"]["EmptyArray"] == [] and rows["orders/empty"]["Outer_List"] == [[], {}]
    assert rows["orders/empty"]["EmptyObject"] == {} and rows["orders/empty"]["Outer_Inner"] == {}
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


# ----------------------------------------------------------------------------------------------------------
# 2. Crash and resume under `fivetran debug`: kill -9 mid-sync after a chosen checkpoint, rerun, compare DuckDB.
# The seeds and a failing run (unknown client certificate: a crash report) run side by side.

CRASH_DOCUMENTS = 5_000
KILLED_AFTER = {11: 1, 23: 2, 47: 3}  # by seed: kill -9 a seeded 0-0.5 s after the run recorded this many checkpoints
CRASH_STREAM_RATE = 100  # documents per 100 ms the test server streams: a checkpoint a second at most
CRASH_SEEDS = list(KILLED_AFTER)


def checkpoints_recorded(log: str) -> int:
    return log.count("checkpoint recorded")


def warehouse(project: Path) -> tuple[list[str], int, int]:
    """(ids, duplicate ids, rows marked deleted) of tester.orders in the project's DuckDB file."""
    with duckdb.connect(str(project / "files" / "warehouse.db"), read_only=True) as db:
        ids = [row[0] for row in db.execute("select cast(id as varchar) from tester.orders").fetchall()]
        deleted = db.execute("select count(*) from tester.orders where _fivetran_deleted").fetchone()[0]
    return ids, len(ids) - len(set(ids)), deleted


@pytest.fixture(scope="module")
def crash_runs(raven_server, tmp_path_factory):
    """Per seed: the run killed mid-sync and its resumed run; also one failing run. Module-scoped: run once."""
    name = f"test_crash_{uuid.uuid4().hex[:8]}"
    admin = open_store(raven_server.urls, name, raven_server.client_pem, raven_server.ca_pem)
    admin.maintenance.server.send(CreateDatabaseOperation(DatabaseRecord(name)))
    root = tmp_path_factory.mktemp("crash")
    target = raven_server.target(name)
    try:
        if raven_server.control is not None:
            raven_server.control.generate_orders(name, CRASH_DOCUMENTS)
            raven_server.control.throttle_streams(name, docs=CRASH_STREAM_RATE, every_ms=100)
        else:
            for start in range(1, CRASH_DOCUMENTS + 1, 1000):
                documents.put(admin, orders(start, 1000))
        configuration = configuration_for(target, collection_name="Orders")
        configuration_path = write_configuration(root / "configuration.json", configuration)
        failing_path = root / "failing-configuration.json"
        failing = dict(configuration)
        if raven_server.unknown_client_pem:
            failing["certificate_base64"] = b64_file(raven_server.unknown_client_pem)
        else:
            failing["database_name"] = "no_such_database"
        failing_path.write_text(json.dumps(failing))

        runs = {
            seed: start_debug(root / f"seed-{seed}", configuration_path, root / f"tmp-{seed}", f"kill-{seed}.log")
            for seed in CRASH_SEEDS
        }
        failing_run = start_debug(root / "failing", failing_path, root / "tmp-failing", "failing.log")
        killed_at = {}
        started = time.monotonic()
        # A sync checkpoints every 1,000 documents, so the 1st to 3rd checkpoint saves 1,000 to 3,000 of the 5,000
        # documents; the kill comes a seeded moment later, with the documents read since that checkpoint unsaved and
        # thousands still to come: the test server streams 1,000 documents a second, and a real server's sync
        # under `fivetran debug` lands well under 2,000 a second.
        pending = {seed: random.Random(seed).uniform(0, 0.5) for seed in CRASH_SEEDS}
        kill_at = {}
        while pending:
            for seed in list(pending):
                log = (root / f"kill-{seed}.log").read_text(errors="replace")
                assert runs[seed].poll() is None, f"seed {seed}: the run ended before it was killed:\n{log}"
                if seed not in kill_at and checkpoints_recorded(log) >= KILLED_AFTER[seed]:
                    kill_at[seed] = time.monotonic() + pending[seed]
                if seed in kill_at and time.monotonic() >= kill_at[seed]:
                    os.kill(runs[seed].pid, signal.SIGKILL)
                    runs[seed].wait()
                    state = root / f"seed-{seed}" / "files" / "state.json"
                    killed_at[seed] = {
                        "state": json.loads(state.read_text()) if state.exists() else None,
                        "rows": len(warehouse(root / f"seed-{seed}")[0]),
                    }
                    del pending[seed]
            assert time.monotonic() - started < 120, "no sync started"
            time.sleep(0.01)
        failing_run.wait(timeout=120)
        if raven_server.control is not None:
            raven_server.control.throttle_streams(name, docs=0, every_ms=0)
        for seed in CRASH_SEEDS:
            shutil.rmtree(root / f"tmp-{seed}-resume", ignore_errors=True)
        resumed = {
            seed: debug_process(
                root / f"seed-{seed}", configuration_path, root / f"tmp-{seed}", (root / f"resume-{seed}.log").open("w")
            )
            for seed in CRASH_SEEDS
        }
        returncodes = {seed: process.wait(timeout=180) for seed, process in resumed.items()}
        expected = {document["@metadata"]["@id"] for document in database_documents(target, "Orders")}
        yield {
            "root": root,
            "target": target,
            "configuration": configuration,
            "killed_at": killed_at,
            "returncodes": returncodes,
            "failing_returncode": failing_run.returncode,
            "expected": expected,
        }
    finally:
        admin.maintenance.server.send(DeleteDatabaseOperation(name, hard_delete=True))
        admin.close()


@pytest.mark.parametrize("seed", CRASH_SEEDS, ids=[f"seed-{seed}" for seed in CRASH_SEEDS])
def test_a_sync_killed_mid_way_resumes_to_exactly_the_database(crash_runs, seed):
    killed = crash_runs["killed_at"][seed]
    log = (crash_runs["root"] / f"resume-{seed}.log").read_text(errors="replace")
    ids, duplicates, deleted = warehouse(crash_runs["root"] / f"seed-{seed}")

    assert killed["state"] is not None and 0 < killed["rows"] < CRASH_DOCUMENTS  # killed mid-sync, after a checkpoint
    assert crash_runs["returncodes"][seed] == 0, log[-3000:]
    assert "SYNC SUCCEEDED" in log
    assert set(ids) == crash_runs["expected"] and len(crash_runs["expected"]) == CRASH_DOCUMENTS
    assert duplicates == 0 and deleted == 0


def test_a_failing_debug_run_ends_with_a_one_line_error(crash_runs):
    log = (crash_runs["root"] / "failing.log").read_text(errors="replace")

    assert crash_runs["failing_returncode"] != 0
    assert re.search(r"(certificate_base64|database_name): ", log)


# ----------------------------------------------------------------------------------------------------------
# 6. Secrets: nothing the scenarios above left behind holds certificate or key material


def files_under(*roots: Path, skip: tuple[str, ...] = ()) -> list[Path]:
    return [
        path
        for root in roots
        for path in root.rglob("*")
        if path.is_file() and not any(part in skip for part in path.relative_to(root).parts)
    ]


def test_no_secret_in_output_state_warehouse_or_crash_reports_of_debug_runs(crash_runs):
    root = crash_runs["root"]
    fragments = secret_fragments(crash_runs["target"], crash_runs["configuration"])
    scanned = [path for path in files_under(root) if "configuration.json" not in path.name and "tmp-" not in str(path)]

    leaks = {
        str(path): fragment for path in scanned for fragment in fragments if fragment.encode() in path.read_bytes()
    }

    assert leaks == {}
    assert any(path.suffix == ".db" for path in scanned) and any("resume" in path.name for path in scanned)


def test_no_certificate_directory_survives_a_run_that_ends(crash_runs):
    failing_tmp = crash_runs["root"] / "tmp-failing"
    assert list(failing_tmp.glob("ravendb-connector-*")) == []


@pytest.mark.parametrize("seed", CRASH_SEEDS, ids=[f"seed-{seed}" for seed in CRASH_SEEDS])
def test_the_key_folder_of_a_killed_run_is_removed_by_the_resumed_run(crash_runs, seed):
    """kill -9 gives a process no chance to clean up; the next sync removes the owner-only folder it left."""
    assert list((crash_runs["root"] / f"tmp-{seed}").glob("ravendb-connector-*")) == []


def test_no_secret_in_logs_errors_state_or_working_directory_after_in_process_scenarios(
    ravendb_target, ravendb_store, configuration, ops, logs, own_tempdir
):
    documents.put(ravendb_store, orders(1, 5))
    before = certificate_dirs()
    errors = []
    bad_configurations = [
        configuration_for(ravendb_target, collection_name="Orders' where true or 'x"),
        configuration_for(ravendb_target, database_name="no_such_database"),
    ]
    if ravendb_target.unknown_client_pem:
        unknown = b64_file(ravendb_target.unknown_client_pem)
        bad_configurations.append(configuration_for(ravendb_target, certificate_base64=unknown))
    for bad in bad_configurations:
        with pytest.raises((ConfigurationError, SourceError)) as raised:
            connector.update(bad, {})
        errors.append(str(raised.value))
    sync(configuration, ops)

    fragments = secret_fragments(ravendb_target, configuration)
    emitted = "\n".join([*logs.messages(), *errors, *map(json.dumps, ops.checkpoints), *map(str, ops.calls)])
    working = [
        path
        for path in files_under(
            Path.cwd(), skip=(".venv", ".git", "__pycache__", ".pytest_cache", ".ruff_cache", "standin", "tls")
        )
        if path.stat().st_size < 50_000_000
    ]
    assert [fragment for fragment in fragments if fragment in emitted] == []
    assert "PRIVATE KEY" not in emitted
    assert [str(path) for path in working for fragment in fragments if fragment.encode() in path.read_bytes()] == []
    assert certificate_dirs() == before

"""History tables under the real `fivetran debug` CLI, into DuckDB, against the test server over HTTPS: the table
equals the revisions RavenDB keeps, later runs add only new revisions, a run killed mid-backfill resumes, and
with the setting off the tables are today's."""

import os
import signal
import time
from datetime import datetime, timedelta, timezone

import requests

from tests import documents
from tests.documents import orders
from tests.syncing import configuration_for, copy_project, debug, debug_process, query, start_debug, write_configuration
from tests.test_fivetran_debug import column_types
from tests.test_history import enable_revisions, expected_history, write_history

HISTORY = (
    "select id, change_vector, epoch_us(valid_from), epoch_us(valid_to), is_current, is_deleted, status, company, "
    "freight, ship_to_city, ordered_at::varchar from tester.orders_history"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def warehouse_history(project_dir) -> dict[tuple[str, str], tuple]:
    """The history table as it landed in DuckDB, by key; times in microseconds since 1970."""
    return {(doc_id, vector): tuple(values) for doc_id, vector, *values in query(project_dir, HISTORY)}


def ravendb_history(target, ids: list[str]) -> dict[tuple[str, str], tuple]:
    """The revisions RavenDB keeps of `ids` as the history rows they make; times in microseconds since 1970."""
    return {
        key: (
            _micros(row["ValidFrom"]), _micros(row["ValidTo"]), row["IsCurrent"], row["IsDeleted"], row.get("Status"),
            row.get("Company"), float(row["Freight"]) if "Freight" in row else None, row.get("ShipTo_City"),
            _duckdb_timestamp(row.get("OrderedAt")),
        )
        for key, row in expected_history(target, ids).items()
    }  # fmt: skip


def _duckdb_timestamp(raven_date: str | None) -> str | None:
    """A RavenDB date without offset as DuckDB shows the TIMESTAMP it lands as."""
    return raven_date.replace("T", " ").split(".")[0] if raven_date else None


def _micros(moment: datetime | None) -> int | None:
    return (moment - _EPOCH) // timedelta(microseconds=1) if moment is not None else None


def test_the_history_table_equals_the_revisions_ravendb_keeps_and_a_later_run_adds_only_new_ones(
    ravendb_target, ravendb_store, project
):
    enable_revisions(ravendb_store)
    ids = write_history(ravendb_store)
    configuration = configuration_for(ravendb_target, collection_name="Orders", history_collections="Orders")

    first = debug(project, configuration)
    assert first.returncode == 0, first.output
    assert warehouse_history(project) == ravendb_history(ravendb_target, ids)
    types = column_types(project, "orders_history")
    assert {name: types[name] for name in ("valid_from", "valid_to", "is_current", "is_deleted")} == {
        "valid_from": "TIMESTAMP WITH TIME ZONE",
        "valid_to": "TIMESTAMP WITH TIME ZONE",
        "is_current": "BOOLEAN",
        "is_deleted": "BOOLEAN",
    }
    current = "select id from tester.orders_history where is_current group by id having count(*) = 1"
    assert sorted(doc_id for (doc_id,) in query(project, current)) == ids

    documents.put(ravendb_store, orders(1, 2, Status="shipped"))
    documents.put(ravendb_store, orders(1, 1, Status="delivered"))
    second = debug(project, configuration)
    assert second.returncode == 0, second.output
    assert second.count("Upserts") == 2 + 3  # two documents in orders, their three new revisions
    assert warehouse_history(project) == ravendb_history(ravendb_target, ids)
    chained = query(
        project,
        "select count(*) from (select valid_to, lead(valid_from) over (partition by id order by valid_from) as next "
        "from tester.orders_history) where valid_to is distinct from next",
    )
    assert chained == [(0,)]


def test_with_the_setting_off_the_tables_are_todays(ravendb_target, ravendb_store, project, tmp_path):
    enable_revisions(ravendb_store)
    write_history(ravendb_store)
    with_history = copy_project(tmp_path.parent / f"{tmp_path.name}-with-history")

    off = debug(project, configuration_for(ravendb_target, collection_name="Orders"))
    on = debug(with_history, configuration_for(ravendb_target, collection_name="Orders", history_collections="*"))

    assert off.returncode == 0 and on.returncode == 0, off.output + on.output
    tables = "select table_name from information_schema.tables where table_schema = 'tester' order by 1"
    assert [name for (name,) in query(project, tables) if not name.startswith("_")] == ["orders"]
    rows = (
        "select * exclude (_fivetran_synced) replace (epoch_us(last_modified) as last_modified) "
        "from tester.orders order by id"
    )
    assert query(project, rows) == query(with_history, rows)


def test_a_run_killed_mid_backfill_resumes_to_every_revision_once(ravendb_target, ravendb_store, tmp_path):
    count = 1_500
    enable_revisions(ravendb_store)
    control = ravendb_target.control
    if control is not None:
        control.generate_orders(ravendb_target.database, count)
        control.generate_orders(ravendb_target.database, count)  # a second revision of each
    else:
        for _ in range(2):
            for first in range(1, count + 1, 500):
                documents.put(ravendb_store, orders(first, 500))
    configuration = configuration_for(
        ravendb_target, collection_name="Orders", history_collections="Orders", batch_size="500"
    )
    configuration_path = write_configuration(tmp_path / "configuration.json", configuration)
    project_dir = tmp_path / "project"
    run = start_debug(project_dir, configuration_path, tmp_path / "tmp", "killed.log")
    state_path, deadline = project_dir / "files" / "state.json", time.monotonic() + 120
    while not (state_path.exists() and '"history"' in state_path.read_text(errors="replace")):
        assert run.poll() is None, (tmp_path / "killed.log").read_text(errors="replace")[-3000:]
        assert time.monotonic() < deadline, "no history checkpoint within 120 s"
        time.sleep(0.02)
    os.kill(run.pid, signal.SIGKILL)  # kill -9 once a page of revisions is checkpointed
    run.wait()
    killed_at = query(project_dir, "select count(*) from tester.orders_history")[0][0]
    documents.put(ravendb_store, orders(1, 3, Status="written after the kill"))

    resume_log = tmp_path / "resume.log"
    with resume_log.open("w") as output:
        returncode = debug_process(project_dir, configuration_path, tmp_path / "tmp", output).wait(timeout=600)

    assert returncode == 0, resume_log.read_text()[-3000:]
    revisions = _stats(ravendb_target)["CountOfRevisionDocuments"]
    assert 0 < killed_at < revisions == 2 * count + 3
    landed = query(project_dir, "select count(*), count(distinct (id, change_vector)) from tester.orders_history")
    assert landed == [(revisions, revisions)]
    assert query(project_dir, "select count(*), count(distinct id) from tester.orders_history where is_current") == [
        (count, count)
    ]
    chained = query(
        project_dir,
        "select count(*) from (select valid_to, lead(valid_from) over (partition by id order by valid_from) as next "
        "from tester.orders_history) where valid_to is distinct from next",
    )
    assert chained == [(0,)]
    assert (
        query(
            project_dir,
            "select status from tester.orders_history where is_current and id in ('orders/1-A', 'orders/3-A')",
        )
        == [("written after the kill",)] * 2
    )


def _stats(target) -> dict:
    response = requests.get(
        f"{target.urls[0]}/databases/{target.database}/stats",
        cert=target.client_pem,
        verify=target.ca_pem or True,
        timeout=30,
    )
    response.raise_for_status()
    return response.json()

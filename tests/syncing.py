"""What the integration tests share: a configuration for a test server, one sync, the database as it should land,
and the `fivetran` CLI run as a user runs it."""

import base64
import glob
import itertools
import os
import subprocess
import tempfile
from pathlib import Path

import connector


def b64_file(path: str) -> str:
    return base64.b64encode(Path(path).read_bytes()).decode()


def configuration_for(target, **overrides: str) -> dict[str, str]:
    """The connector's configuration for a `ravendb_target`, every value a string as Fivetran passes them."""
    configuration = {"ravendb_urls": ",".join(target.urls), "database_name": target.database}
    if target.client_pem:
        configuration["certificate_base64"] = b64_file(target.client_pem)
    if target.ca_pem:
        configuration["server_ca_base64"] = b64_file(target.ca_pem)
    configuration.update(overrides)
    return configuration


def sync(configuration: dict, ops, state: dict | None = None) -> dict:
    """Run one sync and return the state it checkpointed last."""
    connector.update(configuration, state or {})
    return ops.checkpoints[-1]


def sync_writing_during_a_paused_stream(
    configuration: dict, ops, control, database: str, after: int, write, state: dict | None = None
) -> dict:
    """Run one sync (from `state`) whose stream pauses after `after` documents: once the sync has upserted that
    many, `write()` runs while the stream waits, then the stream goes on. Returns the state the sync checkpointed
    last."""
    control.pause_stream(database, after=after)
    upserted, real_upsert = itertools.count(1), ops.upsert

    def write_while_paused(table: str, data: dict) -> None:
        real_upsert(table, data)
        if next(upserted) == after:
            control.wait_stream_paused(database)
            write()
            control.release_stream(database)

    ops.upsert = write_while_paused
    try:
        return sync(configuration, ops, state)
    finally:
        ops.upsert = real_upsert


def record_streams(monkeypatch) -> list:
    """Every stream the connector opens from now on (query streams, and reads of the whole database), in order;
    each command knows its response, so the node that answered."""
    streams: list = []

    def recorded(command_class: type) -> type:
        class Recorded(command_class):  # type: ignore[misc, valid-type]
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                streams.append(self)

        return Recorded

    monkeypatch.setattr(connector, "QueryStreamCommand", recorded(connector.QueryStreamCommand))
    monkeypatch.setattr(connector, "StreamCommand", recorded(connector.StreamCommand))
    return streams


def database_documents(target, collection: str) -> list[dict]:
    """The collection's documents, read with a collection query (storage order, no index, never stale)."""
    settings = connector.validate_configuration(configuration_for(target))
    with connector.open_store(settings) as store:
        return list(
            connector.QueryStream(store, settings, connector.collection_query("from '{collection}'", collection))
        )


def database_rows(target, collection: str) -> dict[str, dict]:
    """The collection as the connector should land it, by id."""
    return {row["Id"]: row for row in map(connector.flatten, database_documents(target, collection))}


def certificate_dirs() -> set[str]:
    """The connector's temporary certificate folders that exist now."""
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "ravendb-connector-*")))


def run_fivetran(project: Path, *arguments: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`fivetran <arguments>` in a project folder, without a terminal, telemetry off."""
    return subprocess.run(
        ["fivetran", *arguments],
        cwd=project,
        env={**os.environ, "DO_NOT_TRACK": "1"},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )

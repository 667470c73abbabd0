"""What the integration tests share: a configuration for a test server, one sync, the database as it should land,
and the `fivetran` CLI run as a user runs it, into DuckDB.

Every `fivetran` command here runs with `fivetran_environment()`: the SDK's requirements check, which `fivetran
debug` runs before each sync, then runs pipreqs in its local mode (`--use-local`), which answers at once. Online
pipreqs asks PyPI about each import; offline it fails, and the SDK retries it for about 13 s before it skips the
check. tests/test_deploy.py checks what the requirements check says, online and offline.
"""

import atexit
import base64
import functools
import glob
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import IO

import duckdb
from ravendb import DocumentStore

import connector

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent  # where pip installed the fivetran and pipreqs commands
FIVETRAN = str(VENV_BIN / "fivetran")


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


def pipreqs_shim(folder: Path, options: str) -> Path:
    """Write into `folder` a `pipreqs` command that runs the installed pipreqs with `options` first; return
    `folder`, to put first on PATH."""
    shim = folder / "pipreqs"
    shim.write_text(f'#!/bin/sh\nexec "{VENV_BIN / "pipreqs"}" {options} "$@"\n')
    shim.chmod(0o755)
    return folder


@functools.cache
def _local_pipreqs() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="ravendb-tests-pipreqs-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return pipreqs_shim(folder, "--use-local")


def fivetran_environment(**variables: str) -> dict[str, str]:
    """The environment of a `fivetran` command: telemetry off, pipreqs in its local mode first on PATH, and
    `variables`."""
    path = f"{_local_pipreqs()}{os.pathsep}{VENV_BIN}{os.pathsep}{os.environ['PATH']}"
    return {**os.environ, "DO_NOT_TRACK": "1", "PATH": path, **variables}


def run_fivetran(project: Path, *arguments: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`fivetran <arguments>` in a project folder, without a terminal."""
    return subprocess.run(
        [FIVETRAN, *arguments],
        cwd=project,
        env=fivetran_environment(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def copy_project(folder: Path) -> Path:
    """A connector project as a user has it: connector.py and requirements.txt in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("connector.py", "requirements.txt"):
        shutil.copy(REPO / name, folder / name)
    return folder


class DebugRun:
    """What one `fivetran debug` printed, and how it ended."""

    def __init__(self, completed: subprocess.CompletedProcess):
        self.output = completed.stdout + completed.stderr
        self.returncode = completed.returncode

    def count(self, operation: str) -> int:
        return int(re.search(rf"{operation}\s*\|\s*(\d+)", self.output).group(1))


def write_configuration(path: Path, configuration: dict) -> Path:
    """Write `configuration` as the JSON file `fivetran --configuration` reads, readable by its owner only."""
    path.write_text(json.dumps(configuration))
    path.chmod(0o600)
    return path


def debug(project: Path, configuration: dict) -> DebugRun:
    """`fivetran debug` in `project` with `configuration` (written to configuration.json, readable by its owner)."""
    write_configuration(project / "configuration.json", configuration)
    return DebugRun(run_fivetran(project, "debug", "--configuration", "configuration.json"))


def start_debug(project: Path, configuration_path: Path, tmpdir: Path, log_name: str) -> subprocess.Popen:
    """`fivetran debug` started in a new project folder `project`; what it prints goes to `log_name` beside it."""
    copy_project(project)
    tmpdir.mkdir(exist_ok=True)
    with (project.parent / log_name).open("w") as output:
        return debug_process(project, configuration_path, tmpdir, output)


def debug_process(project: Path, configuration_path: Path, tmpdir: Path, output: IO) -> subprocess.Popen:
    """`fivetran debug` started in `project`, its temporary files in `tmpdir`, everything it prints into `output`."""
    return subprocess.Popen(
        [FIVETRAN, "debug", "--configuration", str(configuration_path)],
        cwd=project,
        env=fivetran_environment(TMPDIR=str(tmpdir)),
        stdin=subprocess.DEVNULL,
        stdout=output,
        stderr=subprocess.STDOUT,
    )


def query(project: Path, sql: str) -> list[tuple]:
    """The rows of `sql` in the project's DuckDB warehouse (what `fivetran debug` landed)."""
    with duckdb.connect(str(project / "files" / "warehouse.db"), read_only=True) as db:
        return db.execute(sql).fetchall()


def node_store(target, tag: str) -> DocumentStore:
    """A store that talks to node `tag` of the target only: no topology updates, so the client never moves to
    another node. The caller closes it."""
    store = DocumentStore([target.urls[ord(tag) - ord("A")]], target.database)
    store.conventions.disable_topology_updates = True
    store.certificate_pem_path, store.trust_store_path = target.client_pem, target.ca_pem
    store.initialize()
    return store

"""scripts/demo.sh keeps to its own folder: a user's own warehouse and saved state survive it byte for byte.

Each test runs the demo in a copy of the project's files (with the shared virtual environment, and a
scripts/setup.sh that does nothing, as the environment is set up already), with the SDK's requirements check
run offline through a `pipreqs` placed first on PATH (as tests/test_deploy.py does).
"""

import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import duckdb
import pytest

from tests.syncing import VENV_BIN, configuration_for, pipreqs_shim

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of what the demo uses, with `bin/pipreqs` (offline) for PATH."""
    copy = tmp_path / "repo"
    (copy / "scripts").mkdir(parents=True)
    for name in ("connector.py", "requirements.txt"):
        shutil.copy(REPO / name, copy / name)
    for name in ("demo.sh", "demo_port.py", "demo_configuration.py", "show_warehouse.py"):
        shutil.copy(REPO / "scripts" / name, copy / "scripts" / name)
    (copy / "scripts" / "setup.sh").write_text("#!/bin/sh\nexit 0\n")
    (copy / "scripts" / "setup.sh").chmod(0o755)
    standin = copy / "tests" / "standin"
    shutil.copytree(REPO / "tests" / "standin", standin, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "tests" / "__init__.py", copy / "tests" / "__init__.py")
    (copy / ".venv").symlink_to(VENV_BIN.parent)
    (tmp_path / "bin").mkdir()
    pipreqs_shim(tmp_path / "bin", "--use-local")
    return copy


def _run(project: Path, command: list[str], **env: str) -> subprocess.CompletedProcess:
    path = f"{project.parent / 'bin'}:{VENV_BIN}:{os.environ['PATH']}"
    return subprocess.run(
        command,
        cwd=project,
        env={**os.environ, "DO_NOT_TRACK": "1", "PATH": path, **env},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_the_demo_leaves_a_users_own_warehouse_and_state_byte_identical(
    project: Path, ravendb_target, ravendb_store
) -> None:
    with ravendb_store.open_session() as session:
        session.store({"Name": "mine"}, "things/1")
        session.save_changes()
    (project / "configuration.json").write_text(json.dumps(configuration_for(ravendb_target)))
    own = _run(project, ["fivetran", "debug", "--configuration", "configuration.json"])
    assert own.returncode == 0, own.stdout + own.stderr
    users = {name: (project / "files" / name).read_bytes() for name in ("warehouse.db", "state.json")}

    demo = _run(project, ["scripts/demo.sh"])

    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "pipreqs check failed" not in demo.stdout + demo.stderr  # its requirements check answers offline
    assert {name: (project / "files" / name).read_bytes() for name in users} == users
    warehouse = project / ".demo" / "project" / "files" / "warehouse.db"
    assert f"The demo's warehouse: {warehouse}" in demo.stdout
    assert "tester.orders, first 3 rows:" in demo.stdout
    with duckdb.connect(str(warehouse), read_only=True) as db:
        assert db.execute("select count(*) from tester.orders").fetchone()[0] == 300


def test_a_demo_port_in_use_is_one_line(project: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        demo = _run(project, ["scripts/demo.sh"], DEMO_PORT=str(port))
    assert demo.returncode == 1
    assert demo.stderr.strip() == f"DEMO_PORT={port} is in use; choose another port, or leave DEMO_PORT unset"
    assert "Traceback" not in demo.stdout + demo.stderr

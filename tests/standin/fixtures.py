"""pytest fixtures: a stand-in server in a subprocess (or a real server from the environment), a fresh database
per test, an open DocumentStore and the control client. Load with `pytest_plugins = ["tests.standin.fixtures"]`."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from ravendb import DocumentStore
from ravendb.serverwide.database_record import DatabaseRecord
from ravendb.serverwide.operations.common import CreateDatabaseOperation, DeleteDatabaseOperation

from tests.standin.control import StandInControl
from tests.standin.tls import tls_files

REPO_ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 60
ENV_URLS = "RAVENDB_TEST_URLS"
ENV_CERT = "RAVENDB_TEST_CERTIFICATE"
ENV_CA = "RAVENDB_TEST_CA"


@dataclass(frozen=True)
class RavenServer:
    """A running server for the test session: stand-in subprocess or a real server from the environment."""

    urls: list[str]
    client_pem: str | None
    ca_pem: str | None
    unknown_client_pem: str | None
    expired_client_pem: str | None
    control: StandInControl | None

    def target(self, database: str) -> RavenTarget:
        """What a test gets for one of this server's databases."""
        return RavenTarget(
            self.urls,
            database,
            self.client_pem,
            self.ca_pem,
            self.unknown_client_pem,
            self.expired_client_pem,
            self.control,
        )


@dataclass(frozen=True)
class RavenTarget:
    """What one test gets: server URLs, its own fresh database, certificate paths, control (None on a real server)."""

    urls: list[str]
    database: str
    client_pem: str | None
    ca_pem: str | None
    unknown_client_pem: str | None
    expired_client_pem: str | None
    control: StandInControl | None

    def store(self, certificate_pem: str | None = None, database: str | None = None) -> DocumentStore:
        """An initialised DocumentStore on this target (another certificate or database if given)."""
        return open_store(self.urls, database or self.database, certificate_pem or self.client_pem, self.ca_pem)


def open_store(urls: list[str], database: str, client_pem: str | None, ca_pem: str | None) -> DocumentStore:
    """DocumentStore(urls, db) with the client PEM and CA trust store set, initialised."""
    store = DocumentStore(urls, database)
    if client_pem:
        store.certificate_pem_path = client_pem
    if ca_pem:
        store.trust_store_path = ca_pem
    store.initialize()
    return store


def free_port_block(count: int) -> int:
    """A port p such that p … p+count-1 are all free right now."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + count > 65535:
            continue
        if all(_port_free(base + i) for i in range(count)):
            return base
    raise RuntimeError("no block of free ports found")


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class StandInProcess:
    """`python -m tests.standin …` as a subprocess, waited on until it prints READY."""

    def __init__(self, nodes: int, tls_dir: Path | None) -> None:
        self.port = free_port_block(nodes)
        cmd = [sys.executable, "-m", "tests.standin", "--port", str(self.port), "--nodes", str(nodes)]
        if tls_dir is not None:
            cmd += ["--tls-dir", str(tls_dir)]
        self.process = subprocess.Popen(
            cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL
        )
        self.output: list[str] = []
        self.urls = self._wait_ready()
        threading.Thread(target=self._drain, daemon=True).start()

    def _wait_ready(self) -> list[str]:
        assert self.process.stdout is not None
        urls: list[str] = []
        timer = threading.Timer(READY_TIMEOUT_S, self.process.kill)
        timer.start()
        try:
            for line in self.process.stdout:
                self.output.append(line)
                if line.startswith("Node "):
                    urls.append(line.split(": ", 1)[1].strip())
                if line.strip() == "READY":
                    return urls
        finally:
            timer.cancel()
        raise RuntimeError("stand-in did not start:\n" + "".join(self.output))

    def _drain(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit."""
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def _real_server() -> RavenServer | None:
    urls = [u.strip() for u in os.environ.get(ENV_URLS, "").split(",") if u.strip()]
    if not urls:
        return None
    cert = os.environ.get(ENV_CERT) or None
    return RavenServer(urls, cert, os.environ.get(ENV_CA) or None, None, None, None)


@pytest.fixture(scope="session")
def raven_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RavenServer]:
    """The session's server: RAVENDB_TEST_URLS if set, else a 2-node TLS stand-in subprocess."""
    real = _real_server()
    if real is not None:
        yield real
        return
    tls_dir = tmp_path_factory.mktemp("standin-tls")
    process = StandInProcess(nodes=2, tls_dir=tls_dir)
    files = tls_files(tls_dir)
    control = StandInControl(process.urls, str(files.client_pem), str(files.ca_pem))
    try:
        yield RavenServer(
            process.urls,
            str(files.client_pem),
            str(files.ca_pem),
            str(files.unknown_client_pem),
            str(files.expired_client_pem),
            control,
        )
    finally:
        process.stop()


@pytest.fixture(scope="session")
def standin_http() -> Iterator[RavenServer]:
    """A plain-http single-node stand-in (skipped when testing against a real server)."""
    if _real_server() is not None:
        pytest.skip("plain-http stand-in not used against a real server")
    process = StandInProcess(nodes=1, tls_dir=None)
    try:
        yield RavenServer(process.urls, None, None, None, None, StandInControl(process.urls))
    finally:
        process.stop()


@pytest.fixture
def ravendb_target(raven_server: RavenServer) -> Iterator[RavenTarget]:
    """A fresh, uniquely named database on the session's server, deleted afterwards."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    admin = open_store(raven_server.urls, name, raven_server.client_pem, raven_server.ca_pem)
    try:
        admin.maintenance.server.send(CreateDatabaseOperation(DatabaseRecord(name)))
        yield raven_server.target(name)
        if raven_server.control is not None:
            for node in raven_server.control.nodes():
                if not node["Running"]:
                    raven_server.control.start_node(node["Tag"])
                raven_server.control.set_clock_skew(node["Tag"], 0)
            raven_server.control.freeze_clock(False)
        admin.maintenance.server.send(DeleteDatabaseOperation(name, hard_delete=True))
    finally:
        admin.close()


@pytest.fixture
def ravendb_store(ravendb_target: RavenTarget) -> Iterator[DocumentStore]:
    """An open DocumentStore on the test's fresh database."""
    store = ravendb_target.store()
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def standin_control(ravendb_target: RavenTarget) -> StandInControl:
    """The stand-in control client; skips the test on a real server."""
    if ravendb_target.control is None:
        pytest.skip("needs the stand-in's control endpoints (not available on a real RavenDB server)")
    return ravendb_target.control

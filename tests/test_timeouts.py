"""A wrong address never hangs a sync: an endpoint that never answers, an https:// URL of a plain-HTTP server and
a stream that stops delivering, through the real client (and once each through `fivetran debug`)."""

import json
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import connector
from tests.standin import tls
from tests.syncing import b64_file, configuration_for, debug, run_fivetran

BOUND_SECONDS = 20  # README: a server that never answers fails a sync or a connection test within 20 s


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """host:port of a TCP endpoint that accepts connections (the kernel completes them) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"127.0.0.1:{listener.getsockname()[1]}"


@pytest.mark.parametrize(
    "scheme, seen",
    [
        (
            "http",
            "accepted the connection but sent no answer within 10 s (a proxy, a firewall, or a port that is not "
            "RavenDB's?)",
        ),
        (
            "https",
            "accepted the connection but gave no TLS answer within 10 s; is the server plain http://? (a proxy "
            "or firewall that holds connections looks the same)",
        ),
    ],
    ids=["http", "https"],
)
def test_a_server_that_never_answers_fails_the_schema_step_within_the_bound(
    ravendb_target, silent_endpoint, scheme, seen
) -> None:
    configuration = configuration_for(ravendb_target, ravendb_urls=f"{scheme}://{silent_endpoint}")
    if scheme == "http":
        configuration = {key: configuration[key] for key in ("ravendb_urls", "database_name")}
    started = time.monotonic()
    with pytest.raises(connector.SourceError) as raised:
        connector.schema(configuration)
    assert time.monotonic() - started < BOUND_SECONDS
    assert str(raised.value) == f"ravendb_urls: no server is reachable: {scheme}://{silent_endpoint} {seen}"


def test_a_server_that_never_answers_fails_the_connection_test_within_the_bound(ravendb_target, silent_endpoint):
    configuration = configuration_for(ravendb_target, ravendb_urls=f"https://{silent_endpoint}")
    started = time.monotonic()
    result = connector.connection_test(configuration)
    assert time.monotonic() - started < BOUND_SECONDS
    assert not result.success
    assert result.failure.startswith(
        f"URL reachability failed: ravendb_urls: no server is reachable: https://{silent_endpoint} accepted the "
        "connection but gave no TLS answer within 10 s"
    )


def test_fivetran_debug_against_a_server_that_never_answers_ends_with_one_line(
    ravendb_target,
    silent_endpoint,
    project,
) -> None:
    configuration = configuration_for(ravendb_target, ravendb_urls=f"https://{silent_endpoint}")
    started = time.monotonic()
    run = debug(project, configuration)
    assert time.monotonic() - started < 60  # the SDK's own requirements check included
    assert run.returncode != 0
    line = f"ravendb_urls: no server is reachable: https://{silent_endpoint} accepted the connection but gave no TLS"
    assert f"error: {line} answer within 10 s; is the server plain http://?" in run.output


def test_an_https_url_of_a_plain_http_server_fails_at_once_in_one_line(standin_http, tmp_path) -> None:
    https = standin_http.urls[0].replace("http://", "https://")
    configuration = {"ravendb_urls": https, "database_name": "plain", "certificate_base64": _any_certificate()}
    started = time.monotonic()
    with pytest.raises(connector.SourceError) as raised:
        connector.schema(configuration)
    assert time.monotonic() - started < 5
    assert str(raised.value) == f"ravendb_urls: {https} does not speak TLS on this port; use http:// for such a server"


def test_fivetran_configuration_test_of_an_https_url_of_a_plain_http_server_names_it(standin_http, tmp_path):
    https = standin_http.urls[0].replace("http://", "https://")
    shutil.copy(connector.__file__, tmp_path / "connector.py")
    configuration = {"ravendb_urls": https, "database_name": "plain", "certificate_base64": _any_certificate()}
    (tmp_path / "configuration.json").write_text(json.dumps(configuration))
    completed = run_fivetran(tmp_path, "configuration", "--test", timeout=60)
    assert completed.returncode == 1
    assert f"ravendb_urls: {https} does not speak TLS on this port; use http://" in completed.stdout + completed.stderr


def _any_certificate() -> str:
    """A valid client certificate for the configuration (the plain-HTTP server never sees it)."""
    return b64_file(str(tls.ensure(Path(tempfile.mkdtemp())).client_pem))


def test_a_stream_that_stalls_past_the_read_timeout_is_read_again_from_the_cursor(
    ravendb_target, standin_control, ops, logs
) -> None:
    standin_control.generate_orders(ravendb_target.database, 30)
    standin_control.stall_stream(ravendb_target.database, after=10, seconds=6)
    configuration = configuration_for(ravendb_target, read_timeout_seconds="2")

    connector.update(configuration, {})

    assert len(ops.rows("Orders")) == 30
    assert sorted(data["Id"] for table, data in ops.upserts if table == "Orders") == sorted(ops.rows("Orders"))
    assert any("sent nothing for 2 s (read_timeout_seconds)" in line for line in logs.messages("WARNING"))


def test_fivetran_debug_reads_a_stalled_stream_again_and_lands_every_document_once(
    ravendb_target,
    standin_control,
    project,
) -> None:
    standin_control.generate_orders(ravendb_target.database, 30)
    standin_control.stall_stream(ravendb_target.database, after=10, seconds=6)

    run = debug(project, configuration_for(ravendb_target, read_timeout_seconds="2"))

    assert run.returncode == 0, run.output
    assert "sent nothing for 2 s (read_timeout_seconds)" in run.output
    assert run.count("Upserts") == 30

"""The test server's answers to a TLS handshake on its plain-HTTP port, its stream stalls, and RavenDB's time limit
on query streams (Databases.QueryTimeoutInSec), over real sockets."""

from __future__ import annotations

import json
import socket
import ssl
import time
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from tests.standin.fixtures import RavenTarget


def _client_hello(host: str) -> bytes:
    """The first bytes a TLS client sends: a real ClientHello from Python's ssl module."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname=host)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def _exchange(url: str, data: bytes) -> tuple[bytes, float]:
    """Send `data` to the server behind `url`, read until it closes the connection; what came back and how long."""
    parts = urlsplit(url)
    started = time.monotonic()
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received, time.monotonic() - started


def test_a_tls_handshake_on_the_plain_http_port_gets_400_and_a_closed_connection_at_once(standin_http: Any) -> None:
    answer, seconds = _exchange(standin_http.urls[0], _client_hello("127.0.0.1"))
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"Connection: close\r\n" in answer
    assert seconds < 2


def test_an_https_client_of_the_plain_http_port_fails_at_once_on_the_servers_plain_answer(standin_http: Any) -> None:
    https = standin_http.urls[0].replace("http://", "https://")
    started = time.monotonic()
    with pytest.raises(requests.exceptions.SSLError, match=r"WRONG_VERSION_NUMBER|wrong version number"):
        requests.get(f"{https}/build/version", timeout=30)
    assert time.monotonic() - started < 2


def test_a_plain_request_on_the_same_port_is_still_served(standin_http: Any) -> None:
    answer, _ = _exchange(standin_http.urls[0], b"GET /build/version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")


def _stream_query(target: RavenTarget, rql: str) -> requests.Response:
    url = f"{target.urls[0]}/databases/{target.database}/streams/queries?format=jsonl"
    response = requests.post(
        url, json={"Query": rql}, cert=target.client_pem, verify=target.ca_pem or True, timeout=60, stream=True
    )
    response.raise_for_status()
    return response


def _timed_lines(response: requests.Response) -> list[tuple[float, dict]]:
    """Each non-empty line of a JSONL stream, parsed, with the monotonic time it arrived."""
    return [(time.monotonic(), json.loads(line)) for line in response.iter_lines() if line]


@pytest.fixture
def orders(ravendb_target: RavenTarget, standin_control: Any) -> RavenTarget:
    """Thirty orders in the test database."""
    standin_control.generate_orders(ravendb_target.database, 30)
    return ravendb_target


def test_a_stalled_stream_sends_nothing_for_the_stall_then_the_rest(orders: RavenTarget, standin_control: Any) -> None:
    standin_control.stall_stream(orders.database, after=10, seconds=1.5)
    lines = _timed_lines(_stream_query(orders, "from 'Orders'"))
    items = [(at, line) for at, line in lines if "Item" in line]
    assert len(items) == 30
    assert items[10][0] - items[9][0] >= 1.4
    assert len(_timed_lines(_stream_query(orders, "from 'Orders'"))) == 31  # armed once: the next one runs through


def test_a_query_stream_that_writes_nothing_past_the_query_time_limit_ends_with_a_cancellation(
    orders: RavenTarget, standin_control: Any
) -> None:
    standin_control.set_query_timeout(orders.database, 1)
    standin_control.stall_stream(orders.database, after=5, seconds=5)
    started = time.monotonic()
    lines = [line for _, line in _timed_lines(_stream_query(orders, "from 'Orders'"))]
    assert sum("Item" in line for line in lines) == 5
    assert "System.OperationCanceledException" in lines[-1]["Error"]
    assert time.monotonic() - started < 2.5


def test_a_docs_stream_has_no_query_time_limit(orders: RavenTarget, standin_control: Any) -> None:
    standin_control.set_query_timeout(orders.database, 0.5)
    standin_control.stall_stream(orders.database, after=5, seconds=1.5)
    url = f"{orders.urls[0]}/databases/{orders.database}/streams/docs?format=jsonl"
    response = requests.get(url, cert=orders.client_pem, verify=orders.ca_pem or True, timeout=60)
    assert len([line for line in response.text.splitlines() if line]) == 30


def test_a_query_stream_whose_reader_stops_reading_past_the_query_time_limit_is_cut_off(
    ravendb_target: RavenTarget, standin_control: Any
) -> None:
    """More than the socket buffers hold, so the server's write blocks while the reader sleeps."""
    total = 40_000
    standin_control.generate_orders(ravendb_target.database, total)
    standin_control.set_query_timeout(ravendb_target.database, 1)
    response = _stream_query(ravendb_target, "from 'Orders'")
    lines = response.iter_lines(chunk_size=1)
    assert "Stats" in json.loads(next(lines))
    time.sleep(3)
    received = 0
    with pytest.raises(requests.exceptions.RequestException):
        for line in response.iter_lines(chunk_size=65536):
            received += b'"Item"' in line
    assert received < total

"""A small HTTP/1.1 server (keep-alive, chunked bodies, gzip request bodies) over plain or pyOpenSSL sockets."""

from __future__ import annotations

import contextlib
import gzip
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from cryptography import x509
from OpenSSL import SSL

MAX_HEADER_BYTES = 64 * 1024
REASONS = {
    200: "OK",
    201: "Created",
    204: "No Content",
    304: "Not Modified",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    409: "Conflict",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
}
_IO_ERRORS = (OSError, SSL.Error)


class ConnectionClosed(Exception):
    """The peer closed the connection (or it broke)."""


class BadRequestLine(Exception):
    """A request line Kestrel rejects at once with 400 and a closed connection (see `read_request`)."""


class CancelAfter:
    """RavenDB's OperationCancelToken with a timeout (src/Raven.Server/ServerWide/OperationCancelToken.cs): it fires
    `seconds` after it was created or last re-armed. `delay()` re-arms it, but only once at least max(250 ms,
    seconds / 3) passed since the last re-arm (`GetMinimumDelayTime`), so after the last result written it fires
    between 2/3 of `seconds` and `seconds` later. `fired` is set when it fires."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.armed_at = time.monotonic()
        self.fired = threading.Event()

    @property
    def deadline(self) -> float:
        """Monotonic time at which it fires unless re-armed."""
        return self.armed_at + self.seconds

    def delay(self) -> None:
        """Re-arm, as StreamDocumentQueryResult.AddResultAsync does after each result (GetToken().Delay())."""
        now = time.monotonic()
        if not self.fired.is_set() and now - self.armed_at >= max(0.25, self.seconds / 3):
            self.armed_at = now

    def check(self) -> bool:
        """Whether it has fired (sets `fired` once the deadline passed)."""
        if not self.fired.is_set() and time.monotonic() >= self.deadline:
            self.fired.set()
        return self.fired.is_set()


@dataclass
class Request:
    """A parsed HTTP request."""

    method: str
    target: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    peer_cert: x509.Certificate | None
    tls: bool

    def arg(self, name: str, default: str | None = None) -> str | None:
        """First value of a query-string argument."""
        values = self.query.get(name)
        return values[0] if values else default


@dataclass
class Response:
    """An HTTP response: bytes (Content-Length) or an iterable of chunks (chunked encoding)."""

    status: int
    body: bytes | Iterable[bytes] = b""
    headers: dict[str, str] = field(default_factory=dict)
    cancel: CancelAfter | None = None  # time limit of a chunked body, re-armed after each chunk written


Handler = Callable[[Request], Response]


class Stream:
    """Buffered reads and writes over a socket or an OpenSSL connection."""

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self.buffer = bytearray()

    def _fill(self) -> None:
        try:
            data = self.sock.recv(65536)
        except (SSL.ZeroReturnError, SSL.SysCallError, ConnectionError) as e:
            raise ConnectionClosed() from e
        except _IO_ERRORS as e:
            raise ConnectionClosed() from e
        if not data:
            raise ConnectionClosed()
        self.buffer += data

    def read_until(self, marker: bytes, limit: int = MAX_HEADER_BYTES) -> bytes:
        """Read up to and including marker."""
        while True:
            pos = self.buffer.find(marker)
            if pos >= 0:
                out = bytes(self.buffer[: pos + len(marker)])
                del self.buffer[: pos + len(marker)]
                return out
            if len(self.buffer) > limit:
                raise ConnectionClosed()
            self._fill()

    def read_exact(self, n: int) -> bytes:
        """Read exactly n bytes."""
        while len(self.buffer) < n:
            self._fill()
        out = bytes(self.buffer[:n])
        del self.buffer[:n]
        return out

    def write(self, data: bytes) -> None:
        """Send all bytes."""
        try:
            self.sock.sendall(data)
        except _IO_ERRORS as e:
            raise ConnectionClosed() from e


def _read_chunked(stream: Stream) -> bytes:
    parts: list[bytes] = []
    while True:
        size_line = stream.read_until(b"\r\n").split(b";")[0].strip()
        size = int(size_line, 16)
        if size == 0:
            while stream.read_until(b"\r\n") != b"\r\n":
                pass
            return b"".join(parts)
        parts.append(stream.read_exact(size))
        stream.read_exact(2)


def _check_request_line(stream: Stream) -> None:
    """Wait for the end of the request line: an LF, or a NUL byte, which Kestrel's HttpParser.ParseRequestLine also
    takes for a delimiter (`RequestLineDelimiters => [ByteLF, 0]`) and rejects at once (RejectRequestLine), with
    reason TlsOverHttpError when the first byte is 0x16, a TLS handshake record. A TLS ClientHello carries NUL bytes
    within its first few bytes, so a client speaking TLS to a plain-HTTP port gets its 400 at once instead of a
    server waiting for a newline that never comes."""
    while True:
        newline, nul = stream.buffer.find(b"\n"), stream.buffer.find(b"\0")
        if nul >= 0 and (newline < 0 or nul < newline):
            tls = stream.buffer[:1] == b"\x16"
            raise BadRequestLine("TLS handshake to an endpoint without TLS" if tls else "invalid request line")
        if newline >= 0:
            return
        if len(stream.buffer) > MAX_HEADER_BYTES:
            raise ConnectionClosed()
        stream._fill()


def read_request(stream: Stream, peer_cert: x509.Certificate | None, tls: bool) -> Request:
    """Parse one request (head and whole body)."""
    _check_request_line(stream)
    head = stream.read_until(b"\r\n\r\n").decode("latin-1")
    lines = head.split("\r\n")
    method, target, _version = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = _read_chunked(stream)
    else:
        body = stream.read_exact(int(headers.get("content-length", "0") or 0))
    if headers.get("content-encoding", "").lower() == "gzip" and body:
        body = gzip.decompress(body)
    parts = urlsplit(target)
    query = parse_qs(parts.query, keep_blank_values=True)
    return Request(method.upper(), target, unquote(parts.path), query, headers, body, peer_cert, tls)


def _http_date() -> str:
    return datetime.now(timezone.utc).strftime("%a, %d %b %Y %H:%M:%S GMT")


def write_response(stream: Stream, response: Response, keep_alive: bool, head_only: bool = False) -> None:
    """Send a response; iterables go out chunked, joined into large writes."""
    headers = {"Server": "RavenDB-stand-in", "Date": _http_date()}
    headers.update(response.headers)
    headers["Connection"] = "keep-alive" if keep_alive else "close"
    body = response.body
    chunked = not isinstance(body, (bytes, bytearray))
    if chunked:
        headers["Transfer-Encoding"] = "chunked"
    else:
        headers["Content-Length"] = str(len(body))
    reason = REASONS.get(response.status, "Unknown")
    head = f"HTTP/1.1 {response.status} {reason}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    if not chunked:
        stream.write(head.encode("latin-1") + b"\r\n" + (b"" if head_only else bytes(body)))
        return
    stream.write(head.encode("latin-1") + b"\r\n")
    with _cancelling_writes(stream, response.cancel):
        for chunk in body:
            if chunk:
                stream.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
                if response.cancel is not None:
                    response.cancel.delay()
    stream.write(b"0\r\n\r\n")


@contextlib.contextmanager
def _cancelling_writes(stream: Stream, cancel: CancelAfter | None) -> Iterator[None]:
    """While the body is written, a watcher fires `cancel` at its deadline and then aborts the connection if a write
    is blocked, as a cancelled write to a reader that stopped reading cannot complete. UNSURE: whether Kestrel
    sends anything more on that connection; a reader that stopped reading could not see it before the close anyway.
    """
    if cancel is None:
        yield
        return
    done = threading.Event()

    def watch() -> None:
        while not done.wait(max(cancel.deadline - time.monotonic(), 0.01)):
            if cancel.check():
                time.sleep(0.2)  # the body's own check (between chunks) ends the stream with its error line
                if not done.is_set():
                    _abort(stream.sock)
                return

    watcher = threading.Thread(target=watch, daemon=True, name="stream-time-limit")
    watcher.start()
    try:
        yield
    finally:
        done.set()


def _abort(sock: Any) -> None:
    """Shut the connection down under a blocked write (plain socket or pyOpenSSL connection)."""
    with contextlib.suppress(OSError, SSL.Error):
        if isinstance(sock, SSL.Connection):
            sock.sock_shutdown(socket.SHUT_RDWR)
        else:
            sock.shutdown(socket.SHUT_RDWR)


def server_context(cert_file: str, key_file: str) -> SSL.Context:
    """TLS context that asks for a client certificate and accepts any (authorisation is per request)."""
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
    ctx.use_certificate_chain_file(cert_file)
    ctx.use_privatekey_file(key_file)
    ctx.check_privatekey()
    ctx.set_options(SSL.OP_NO_TICKET)
    ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    ctx.set_verify(SSL.VERIFY_PEER, _accept_any_certificate)
    ctx.set_session_id(b"ravendb-standin")
    return ctx


def _accept_any_certificate(_conn: SSL.Connection, _cert: Any, _errno: int, _depth: int, _ok: int) -> bool:
    """Like Kestrel's AllowCertificate with a permissive callback: the handshake never rejects a client cert."""
    return True


class Listener:
    """One listening port: accepts connections and serves each on its own thread."""

    def __init__(self, host: str, port: int, handler: Handler, tls: SSL.Context | None) -> None:
        self.host = host
        self.port = port
        self.handler = handler
        self.tls = tls
        self.sock: socket.socket | None = None
        self.connections: set[socket.socket] = set()
        self.lock = threading.Lock()

    @property
    def running(self) -> bool:
        """Whether the port is listening."""
        return self.sock is not None

    def start(self) -> None:
        """Bind and start accepting."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(128)
        self.port = sock.getsockname()[1]
        self.sock = sock
        threading.Thread(target=self._accept_loop, args=(sock,), daemon=True, name=f"accept-{self.port}").start()

    def stop(self) -> None:
        """Stop listening (the port refuses connections) and drop open connections."""
        sock, self.sock = self.sock, None
        if sock is not None:
            _shutdown(sock)
        with self.lock:
            conns = list(self.connections)
            self.connections.clear()
        for conn in conns:
            _shutdown(conn)

    def _accept_loop(self, sock: socket.socket) -> None:
        while True:
            try:
                conn, _addr = sock.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                self.connections.add(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            self._serve_connection(conn)
        except ConnectionClosed:
            pass
        finally:
            with self.lock:
                self.connections.discard(conn)
            _shutdown(conn)

    def _handshake(self, conn: socket.socket) -> tuple[Any, x509.Certificate | None]:
        if self.tls is None:
            return conn, None
        tls_conn = SSL.Connection(self.tls, conn)
        tls_conn.set_accept_state()
        try:
            tls_conn.do_handshake()
        except _IO_ERRORS as e:
            raise ConnectionClosed() from e
        peer = tls_conn.get_peer_certificate()
        return tls_conn, peer.to_cryptography() if peer is not None else None

    def _serve_connection(self, conn: socket.socket) -> None:
        raw, peer_cert = self._handshake(conn)
        stream = Stream(raw)
        while self.sock is not None:
            try:
                request = read_request(stream, peer_cert, self.tls is not None)
            except BadRequestLine:
                # Kestrel answers a request it cannot parse with 400 and closes the connection
                # (HttpProtocol.SetBadRequestState: no keep-alive after a bad request).
                write_response(stream, Response(400, b"", {"Server": "Kestrel"}), keep_alive=False)
                return
            keep_alive = request.headers.get("connection", "").lower() != "close"
            response = self.handler(request)
            write_response(stream, response, keep_alive, head_only=request.method == "HEAD")
            if not keep_alive:
                return


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()

"""CLI: python -m tests.standin --port PORT [--nodes N] [--tls-dir DIR] [--sample-data] [--host HOST]."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from tests.standin import sample_data, tls
from tests.standin.server import StandIn

READY_LINE = "READY"


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="python -m tests.standin", description=__doc__)
    parser.add_argument("--port", type=int, default=8080, help="port of node A (node B = port+1, …); 0 = any free")
    parser.add_argument("--nodes", type=int, default=1, help="number of nodes (A, B, …), each on its own port")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--tls-dir", type=Path, help="serve HTTPS; CA/server/client PEMs are read or generated here")
    parser.add_argument("--sample-data", action="store_true", help="create database 'demo' with sample documents")
    parser.add_argument("--trust", type=Path, action="append", default=[], help="extra client certificate PEM to trust")
    return parser.parse_args(argv)


def build(args: argparse.Namespace) -> StandIn:
    """The server described by the options (not yet started)."""
    if args.tls_dir is None:
        return StandIn(host=args.host, port=args.port, nodes_count=args.nodes)
    files = tls.ensure(args.tls_dir)
    server = StandIn(
        host=args.host, port=args.port, nodes_count=args.nodes, tls_cert=files.server_cert, tls_key=files.server_key
    )
    for pem in [files.client_pem, files.expired_client_pem, *args.trust]:
        server.trust(tls.load_certificate(pem))
    print(f"CA certificate: {files.ca_pem}")
    print(f"Server certificate: {files.server_cert}")
    print(f"Client certificate (PEM with key): {files.client_pem}")
    print(f"Unknown client certificate: {files.unknown_client_pem}")
    print(f"Expired client certificate: {files.expired_client_pem}")
    return server


def main(argv: list[str] | None = None) -> int:
    """Start in the foreground; print URLs and READY; run until SIGINT/SIGTERM."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    server = build(args)
    if args.sample_data:
        sample_data.load_demo(server.storage.create("demo"))
    server.start()
    for node in server.nodes:
        print(f"Node {node.tag}: {node.url}")
    print(READY_LINE, flush=True)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Print the port the demo's test server listens on: DEMO_PORT when given (one line and exit 1 if it is taken),
otherwise 18443, or a free port the system picks when 18443 is taken."""

import socket
import sys

DEFAULT_PORT = 18443


def free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def any_free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main(requested: str = "") -> int:
    if requested:
        if not requested.isdigit() or not 0 < int(requested) < 65536:
            print(f"DEMO_PORT={requested} is not a port number (1 to 65535)", file=sys.stderr)
            return 1
        if not free(int(requested)):
            print(f"DEMO_PORT={requested} is in use; choose another port, or leave DEMO_PORT unset", file=sys.stderr)
            return 1
        print(requested)
        return 0
    if free(DEFAULT_PORT):
        print(DEFAULT_PORT)
        return 0
    port = any_free_port()
    print(f"port {DEFAULT_PORT} is in use; the demo's test server uses port {port}", file=sys.stderr)
    print(port)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))

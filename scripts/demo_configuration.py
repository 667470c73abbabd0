"""Print a configuration.json for the demo: the test server's URL, its sample database, the client certificate,
and order lines as a child table."""

import base64
import json
import sys
from pathlib import Path


def main(url: str, tls_dir: str) -> int:
    directory = Path(tls_dir)
    configuration = {
        "ravendb_urls": url,
        "database_name": "demo",
        "certificate_base64": base64.b64encode((directory / "client.pem").read_bytes()).decode(),
        "server_ca_base64": base64.b64encode((directory / "ca.pem").read_bytes()).decode(),
        "child_tables": "Orders.Lines",  # each order line as a row of orders_lines
    }
    print(json.dumps(configuration, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))

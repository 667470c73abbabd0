"""What one `op.checkpoint` costs under `fivetran debug`, against the number of tables the schema declares.

A generated connector declares T tables (Id, LastModified, like the connector's), and its update() runs 5 rounds
of: upsert one row into the next table, checkpoint. Each checkpoint is timed inside update(); then 5 checkpoints
with nothing upserted since the previous one. It prints the median milliseconds of each.

  python bench/checkpoint_cost.py                  # 10, 100, 300 and 1,000 tables
  python bench/checkpoint_cost.py --tables 10 100  # any table counts

Why it grows: when a flush writes rows of a declared table, the SDK's local tester (fivetran_connector_sdk_core
runner.py, `_Sync.flush` -> `_create_missing_declared`) brings every declared table up to its declaration, each
with a few DuckDB information_schema queries, and those queries get slower as the file holds more tables.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository, for tests.syncing
from tests.syncing import pipreqs_shim

ROUNDS = 5

CONNECTOR = '''"""T declared tables; times each checkpoint."""

import json
import statistics
import time

from fivetran_connector_sdk import Connector
from fivetran_connector_sdk import Operations as op


def schema(configuration):
    return [
        {"table": f"T{n}", "primary_key": ["Id"], "columns": {"Id": "STRING", "LastModified": "UTC_DATETIME"}}
        for n in range(int(configuration["tables"]))
    ]


def update(configuration, state):
    tables, rounds = int(configuration["tables"]), int(configuration["rounds"])
    op.checkpoint({"warm": True})  # the first flush creates every declared table: not what is measured
    with_rows, empty = [], []
    for n in range(rounds):
        op.upsert(f"T{n * 7919 % tables}", {"Id": f"r/{n}", "LastModified": "2024-05-01T10:00:00Z"})
        started = time.perf_counter()
        op.checkpoint({"round": n})
        with_rows.append(time.perf_counter() - started)
    for n in range(rounds):
        started = time.perf_counter()
        op.checkpoint({"empty": n})
        empty.append(time.perf_counter() - started)
    print("RESULT " + json.dumps([statistics.median(with_rows), statistics.median(empty)]), flush=True)


connector = Connector(update=update, schema=schema)
'''


def measure(tables: int, work: Path) -> tuple[float, float]:
    project = work / f"t{tables}"
    project.mkdir(parents=True)
    (project / "connector.py").write_text(CONNECTOR, encoding="utf-8")
    (project / "requirements.txt").write_text("", encoding="utf-8")
    configuration = project / "configuration.json"
    configuration.write_text(json.dumps({"tables": str(tables), "rounds": str(ROUNDS)}), encoding="utf-8")
    fivetran = Path(sys.executable).parent / "fivetran"
    (work / "bin").mkdir(exist_ok=True)
    path = f"{pipreqs_shim(work / 'bin', '--use-local')}{os.pathsep}{os.environ['PATH']}"
    result = subprocess.run(
        [str(fivetran), "debug", "--configuration", str(configuration)],
        cwd=project,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env={**os.environ, "DO_NOT_TRACK": "1", "PATH": path},
        check=False,
    )
    match = re.search(r"RESULT (.*)", result.stdout + result.stderr)
    if result.returncode != 0 or match is None:
        raise RuntimeError(f"fivetran debug with {tables} tables failed:\n{(result.stdout + result.stderr)[-3000:]}")
    with_rows, empty = json.loads(match.group(1))
    return with_rows, empty


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tables", type=int, nargs="+", default=[10, 100, 300, 1000])
    args = parser.parse_args()
    print(f"{'declared tables':>15} {'checkpoint, 1 row waiting':>26} {'checkpoint, nothing waiting':>28}")
    with tempfile.TemporaryDirectory(prefix="checkpoint-cost-") as directory:
        for tables in args.tables:
            with_rows, empty = measure(tables, Path(directory))
            print(f"{tables:>15,} {with_rows * 1000:>23.1f} ms {empty * 1000:>25.1f} ms", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

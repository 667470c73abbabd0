"""Print the tables `fivetran debug` wrote to a warehouse (files/warehouse.db by default): each table with its row
count and columns, and with `--rows N` its first N rows (by id; the first columns, long values cut).

Usage: python scripts/show_warehouse.py [--rows N] [path/to/warehouse.db]

Timestamps are read as text (`::varchar`), so the duckdb module needs no `pytz`.
"""

import sys
from pathlib import Path

import duckdb

SHOWN_COLUMNS = 6
VALUE_WIDTH = 22


def main(*args: str) -> int:
    arguments = list(args)
    rows = 0
    if arguments[:1] == ["--rows"] and len(arguments) >= 2 and arguments[1].isdigit():
        rows, arguments = int(arguments[1]), arguments[2:]
    path = arguments[0] if arguments else "files/warehouse.db"
    if not Path(path).exists():
        print(f"{path}: not found; run `fivetran debug` first", file=sys.stderr)
        return 1
    with duckdb.connect(path, read_only=True) as db:
        tables = db.execute(
            "select table_name from information_schema.tables where table_schema = 'tester' order by table_name"
        ).fetchall()
        print(f"{'table':<24} {'rows':>8} {'deleted':>8}  columns")
        for (table,) in tables:
            columns = [row[0] for row in db.execute(f'describe tester."{table}"').fetchall()]
            deleted = (
                db.execute(f'select count(*) from tester."{table}" where _fivetran_deleted').fetchone()[0]
                if "_fivetran_deleted" in columns
                else 0
            )
            count = db.execute(f'select count(*) from tester."{table}"').fetchone()[0]
            shown = ", ".join(c for c in columns if not c.startswith("_fivetran"))
            print(f"{table:<24} {count:>8} {deleted:>8}  {shown[:100]}")
        for (table,) in tables if rows else []:
            print(f"\ntester.{table}, first {rows} rows:")
            _print_rows(db, table, rows)
    return 0


def _print_rows(db: "duckdb.DuckDBPyConnection", table: str, limit: int) -> None:
    described = db.execute(f'describe tester."{table}"').fetchall()
    columns = [name for name, *_ in described if not name.startswith("_fivetran")][:SHOWN_COLUMNS]
    selected = ", ".join(f'"{name}"::varchar' for name in columns)
    order = ", ".join(f'"{name}"' for name in columns if name == "id" or name.endswith("_index")) or "1"
    values = db.execute(f'select {selected} from tester."{table}" order by {order} limit {limit}').fetchall()
    print("  " + " | ".join(f"{name[:VALUE_WIDTH]:<{VALUE_WIDTH}}" for name in columns))
    for row in values:
        print("  " + " | ".join(f"{_cut(value):<{VALUE_WIDTH}}" for value in row))


def _cut(value: object) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= VALUE_WIDTH else text[: VALUE_WIDTH - 1] + "…"


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))

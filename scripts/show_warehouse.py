"""Print the tables `fivetran debug` wrote to files/warehouse.db with their row counts and a sample row."""

import sys
from pathlib import Path

import duckdb


def main(path: str = "files/warehouse.db") -> int:
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
            rows = db.execute(f'select count(*) from tester."{table}"').fetchone()[0]
            shown = ", ".join(c for c in columns if not c.startswith("_fivetran"))
            print(f"{table:<24} {rows:>8} {deleted:>8}  {shown[:100]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))

"""A concurrent writer for tests/test_reliability.py, run as its own process: `python -m tests.writer_process ARGS`.

ARGS is one JSON object: urls, database, client_pem, ca_pem, control (bool: the stand-in's clock can be frozen),
directory (where it reports progress and waits for the go signal), rounds, existing (orders/1-A … that exist).

1. With the clock frozen: writes `frozen/1..5` and modifies orders/2-A…orders/4-A, all at one timestamp T, then
   writes `ready` with T's documents' ids, and waits for the file `go` (created once the sync is streaming).
2. Still at T (the sync's cursor, as its snapshot's newest timestamp): writes `frozen/6..10`, unfreezes.
3. `rounds` rounds, each: inserts 20 new orders, modifies 10 early (already synced) and 5 late orders, every
   other round inside a frozen tick; then writes `progress` = round number.
"""

import json
import sys
import time
from pathlib import Path

from tests import documents
from tests.documents import orders
from tests.standin.control import StandInControl
from tests.standin.fixtures import open_store


def frozen(control: StandInControl | None, write) -> None:
    if control is not None:
        control.freeze_clock(True)
    try:
        write()
    finally:
        if control is not None:
            control.freeze_clock(False)


def report(directory: Path, name: str, value) -> None:
    temporary = directory / f"{name}.tmp"
    temporary.write_text(json.dumps(value))
    temporary.replace(directory / name)


def main(arguments: dict) -> int:
    directory = Path(arguments["directory"])
    store = open_store(arguments["urls"], arguments["database"], arguments["client_pem"], arguments["ca_pem"])
    control = StandInControl(arguments["urls"], arguments["client_pem"], arguments["ca_pem"])
    control = control if arguments["control"] else None
    existing = arguments["existing"]
    try:
        if control is not None:
            control.freeze_clock(True)
        tick = [(f"frozen/{n}", "Orders", {"Batch": "before-sync", "N": n}) for n in range(1, 6)]
        documents.put(store, tick + orders(2, 3, Batch="before-sync"))
        report(directory, "ready", [doc_id for doc_id, _, _ in tick])
        deadline = time.monotonic() + 60
        while not (directory / "go").exists():
            if time.monotonic() > deadline:
                raise TimeoutError("no go signal")
            time.sleep(0.005)
        documents.put(store, [(f"frozen/{n}", "Orders", {"Batch": "during-sync", "N": n}) for n in range(6, 11)])
        if control is not None:
            control.freeze_clock(False)
        for round_number in range(1, arguments["rounds"] + 1):
            new = orders(existing + 1 + (round_number - 1) * 20, 20, Round=round_number)
            early = orders(1 + round_number * 10, 10, Round=round_number)
            late = orders(existing - round_number * 5, 5, Round=round_number)

            def write(new=new, early=early, late=late) -> None:
                documents.put(store, new + early)
                documents.put(store, late)

            if round_number % 2:
                frozen(control, write)
            else:
                write()
            report(directory, "progress", round_number)
            time.sleep(0.02)
    finally:
        if control is not None:
            control.freeze_clock(False)
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1])))

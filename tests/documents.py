"""Write raw JSON documents of any collection through the real client, the way the RavenDB Studio would."""

from collections.abc import Iterable
from typing import Any

from ravendb import DocumentStore
from ravendb.documents.commands.batches import DeleteCommandData, PutCommandDataWithJson, SingleNodeBatchCommand
from ravendb.documents.session.misc import ForceRevisionStrategy


def put(store: DocumentStore, documents: Iterable[tuple[str, str | None, dict[str, Any]]]) -> None:
    """Store (id, collection, body) triples in one batch; a None collection stores a document without one."""
    commands = []
    for doc_id, collection, body in documents:
        metadata = {"@collection": collection} if collection else {}
        commands.append(
            PutCommandDataWithJson(doc_id, None, {**body, "@metadata": metadata}, ForceRevisionStrategy.NONE)
        )
    _execute(store, commands)


def put_archived_orders(store: DocumentStore) -> None:
    """orders/1-A to orders/3-A, of which orders/2-A is archived (`@archived: true`, RavenDB 6.1+ data archival)."""
    _execute(
        store,
        [
            PutCommandDataWithJson(
                f"orders/{n}-A",
                None,
                {"N": n, "@metadata": {"@collection": "Orders", "@archived": n == 2}},
                ForceRevisionStrategy.NONE,
            )
            for n in (1, 2, 3)
        ],
    )


def delete(store: DocumentStore, ids: Iterable[str]) -> None:
    _execute(store, [DeleteCommandData(doc_id, None) for doc_id in ids])


def _execute(store: DocumentStore, commands: list) -> None:
    # SingleNodeBatchCommand, not session.advanced.defer: the 7.2.7 client mishandles deferred PUT results.
    store.get_request_executor().execute_command(SingleNodeBatchCommand(store.conventions, commands))


def orders(start: int, count: int, **extra: Any) -> list[tuple[str, str, dict[str, Any]]]:
    """`count` order documents orders/<n>-A with a nested address, line items, money and a date."""
    return [
        (
            f"orders/{n}-A",
            "Orders",
            {
                "Company": f"companies/{n % 7}-A",
                "Freight": round(n * 1.37, 2),
                "OrderedAt": "1996-07-04T00:00:00.0000000",
                "ShipTo": {"City": "Reims", "PostalCode": "51100", "Location": {"Latitude": 49.255958199999988}},
                "Lines": [{"Product": f"products/{n % 11}-A", "Quantity": n % 5 + 1, "PricePerUnit": 14.4}],
                **extra,
            },
        )
        for n in range(start, start + count)
    ]

"""Query execution on one node: collection queries straight from storage, everything else through an auto index."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from tests.standin.errors import dynamic_queries_disabled, invalid_query
from tests.standin.rql import Compare, Evaluator, OrderKey, Query, resolve, sort_key
from tests.standin.storage import (
    ALL_DOCS,
    ID_FIELD,
    LAST_MODIFIED_FIELD,
    AutoIndex,
    Database,
    Doc,
    extract_values,
)

COLLECTION_INDEX_PREFIX = "collection/"
MAX_PAGE = 2**31 - 1
NEW_INDEX_WAIT_QUERY_S = 15.0  # DynamicQueryRunner.MatchIndex: "allow new auto indexes to have some results"
NEW_INDEX_WAIT_STREAM_S = 60.0  # DynamicQueryRunner.ExecuteStreamQuery: customStalenessWaitTimeout


@dataclass
class QueryRequest:
    """The parts of an IndexQuery body the stand-in honours."""

    query: Query
    params: dict[str, Any]
    start: int = 0
    page_size: int = MAX_PAGE
    wait_for_non_stale: bool = False
    wait_timeout_s: float = 15.0
    stream: bool = False


@dataclass
class Outcome:
    """Documents of the requested page plus the statistics of the whole result. For an index query `docs` are the
    hits in index order as loaded when the query started (one snapshot: Index.QueryInternal opens the index's and
    the documents' read transactions at the start). `renew(read, last)` gives the rest of a stream's results after
    its read transaction is renewed (with the database lock held), `read` results after the start, the last of
    them `last`. `reload` (unused by RavenDB's paths) loads each hit's current version as it is sent."""

    docs: list[Doc]
    total: int
    skipped: int
    index_name: str
    is_stale: bool
    result_etag: int
    index_ticks: int
    reload: bool = False
    renew: Callable[[int, Doc], list[Doc]] | None = None


def parse_timespan(value: Any) -> float:
    """A .NET TimeSpan string ('[d.]hh:mm:ss[.fffffff]') or a number of seconds, in seconds."""
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value)
    days = 0
    if "." in text.split(":")[0]:
        day_part, text = text.split(".", 1)
        days = int(day_part)
    parts = text.split(":")
    if len(parts) != 3:
        return 15.0
    return days * 86400 + int(parts[0]) * 3600 + int(parts[1]) * 60 + float(parts[2])


def _paging(req: QueryRequest) -> tuple[int, int]:
    """RQL limit/offset override the request's Start/PageSize (as IndexQueryServerSide does)."""
    q = req.query
    start = req.start
    page = req.page_size
    if q.offset is not None:
        start = _int_value(resolve(q.offset, req.params, q.text), q.text)
    if q.limit is not None:
        page = _int_value(resolve(q.limit, req.params, q.text), q.text)
    return max(start, 0), max(page, 0)


def _int_value(value: Any, text: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid_query(f"Limit/offset must be an integer, got {value!r}", text)
    return value


def _id_lookup_order(db: Database, q: Query, params: dict[str, Any]) -> list[Doc] | None:
    """For `where id() = …` collection queries: the requested documents of that collection."""
    if q.where is None:
        return None
    evaluator = Evaluator(q, params)
    docs = db.collection_docs(q.collection)
    ids: list[str] = []
    _gather_ids(q.where, evaluator, ids)
    found: list[Doc] = []
    seen: set[str] = set()
    for doc_id in ids:
        key = str(doc_id).lower()
        doc = docs.get(key)
        if doc is not None and key not in seen:
            seen.add(key)
            found.append(doc)
    return found


def _gather_ids(expr: Any, evaluator: Evaluator, out: list[str]) -> None:
    values = getattr(expr, "values", None)
    if hasattr(expr, "left"):
        _gather_ids(expr.left, evaluator, out)
        _gather_ids(expr.right, evaluator, out)
    elif values is not None:
        out.extend(str(evaluator.value(v, ID_FIELD)) for v in values)
    else:
        out.append(str(evaluator.value(expr.value, ID_FIELD)))


def run_collection_query(db: Database, req: QueryRequest) -> Outcome:
    """`from Coll` (etag order) or id() lookups: read storage directly, never stale."""
    q = req.query
    with db.lock:
        by_id = _id_lookup_order(db, q, req.params)
        docs: list[Doc] = by_id if by_id is not None else list(db.collection_docs(q.collection).values())
        etag = db.last_etag
    start, page = _paging(req)
    name = "AllDocs" if q.collection == ALL_DOCS else COLLECTION_INDEX_PREFIX + q.collection  # GetCollectionName
    outcome = Outcome(docs[start : start + page], len(docs), 0, name, False, etag, 0)
    if by_id is None:
        outcome.renew = lambda read, _last: _collection_resumed(db, q.collection, start + read, start + page)
    return outcome


def _collection_resumed(db: Database, collection: str, position: int, end: int) -> list[Doc]:
    """Where a streamed collection query goes on after a read-transaction renewal: by POSITION, not by etag. The
    PulsedTransactionEnumerator's CollectionQueryResultsIterationState counts the results read into `Start`, and the
    new CollectionQueryEnumerable skips that many documents of the new snapshot in etag order
    (src/Raven.Server/Documents/Queries/Dynamic/CollectionQueryRunner.cs). A document already sent that was modified
    (now at the collection's end) or deleted since shifts the unsent ones down: one unsent document is skipped, and a
    modified one comes again at the end."""
    return list(db.collection_docs(collection).values())[position:end]


def _getter(index: AutoIndex, entry: Any) -> Callable[[str], list[Any]]:
    values = entry.values
    doc = entry.doc

    def get(field: str) -> list[Any]:
        found = values.get(field)
        return found if found is not None else extract_values(doc.body(), doc, field)

    return get


def _sort(entries: list[Any], keys: list[OrderKey], index: AutoIndex) -> list[Any]:
    """Multi-key sort; a leading @last-modified key uses etag order while the index is in time order (one node's
    clock never goes back; a replicated document may carry an older @last-modified)."""
    if not keys:
        return entries
    if keys[0].field == LAST_MODIFIED_FIELD and keys[0].sort_as is None and index.in_time_order:
        ordered = entries[::-1] if keys[0].descending else entries
        rest = keys[1:]
        if not rest:
            return ordered
        out: list[Any] = []
        for _, group in itertools.groupby(ordered, key=lambda e: e.doc.ticks):
            out.extend(_full_sort(list(group), rest, index))
        return out
    return _full_sort(entries, keys, index)


def _full_sort(entries: list[Any], keys: list[OrderKey], index: AutoIndex) -> list[Any]:
    if len(entries) < 2:
        return entries
    result = list(entries)
    for key in reversed(keys):
        if key.field == ID_FIELD:
            result.sort(key=lambda e: e.doc.id.lower(), reverse=key.descending)
        elif key.field == LAST_MODIFIED_FIELD:
            result.sort(key=lambda e: e.doc.ticks, reverse=key.descending)
        else:
            field, sort_as = key.field, key.sort_as
            result.sort(key=lambda e, f=field, s=sort_as: sort_key(_getter(index, e)(f), s), reverse=key.descending)
    return result


def _wait_non_stale(db: Database, index: AutoIndex, cutoff: int | None, timeout_s: float) -> None:
    """Block until the index covers `cutoff` (the collection's newest write at query start; None: its newest write
    now, as a wait without a cutoff etag does) or time runs out."""
    deadline = time.monotonic() + timeout_s
    with db.lock:
        while True:
            db.catch_up(index)
            if index.frontier >= (db.collection_last_etag(index.collection) if cutoff is None else cutoff):
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            db.changed.wait(min(remaining, 0.01))


def _is_since_filter(where: Any) -> bool:
    """`@metadata.@last-modified >= x` (or `>`): the shape of an incremental reader's query."""
    return isinstance(where, Compare) and where.field == LAST_MODIFIED_FIELD and where.op in (">=", ">")


def _newest_matching(index: AutoIndex, evaluator: Evaluator, where: Compare) -> list[Any]:
    """The matching tail of the index: entries are kept in etag order and the clock never goes back, so the scan
    from the newest entry stops at the first one that is too old (a range scan, as Lucene/Corax would do)."""
    tail = []
    for entry in reversed(index.entries.values()):
        if not evaluator.matches(where, _getter(index, entry)):
            break
        tail.append(entry)
    return tail[::-1]


def run_index_query(db: Database, req: QueryRequest) -> Outcome:
    """Filter and sort the auto index's entries; return the current stored documents at the indexed positions.

    A query that creates its index waits for it like RavenDB (15 s, a stream 60 s, unless the test set another
    wait), then answers, stale if the index is not done."""
    q = req.query
    index, created = db.find_or_create_index(q.collection, q.index_fields)
    cutoff = db.collection_last_etag(q.collection)
    if req.wait_for_non_stale:
        _wait_non_stale(db, index, cutoff, req.wait_timeout_s)
    elif created:
        wait = db.indexing.new_index_wait_s
        if wait is None:
            wait = NEW_INDEX_WAIT_STREAM_S if req.stream else NEW_INDEX_WAIT_QUERY_S
        _wait_non_stale(db, index, None, wait)
    evaluator = Evaluator(q, req.params)
    with db.lock:
        db.catch_up(index)
        entries: Iterable[Any] = index.entries.values()
        if _is_since_filter(q.where) and index.in_time_order:
            entries = _newest_matching(index, evaluator, q.where)
        elif q.where is not None:
            entries = [e for e in entries if evaluator.matches(q.where, _getter(index, e))]
        entries = _sort(list(entries), q.order_by, index)
        docs = [d for d in (db.docs.get(e.doc.key) for e in entries) if d is not None]
        keys = [doc.key for doc in docs]
        stale = index.frontier < cutoff if req.wait_for_non_stale else db.is_stale(index)
        outcome_index = (index.name, stale, index.frontier, index.last_indexing_ticks)
    start, page = _paging(req)
    name, stale, frontier, ticks = outcome_index
    outcome = Outcome(docs[start : start + page], len(docs), 0, name, stale, frontier, ticks)
    outcome.renew = lambda read, _last: _hits_reloaded(db, keys[start + read : start + page])
    return outcome


def _hits_reloaded(db: Database, unsent: list[str]) -> list[Doc]:
    """Where an index query stream goes on after a read-transaction renewal: the same hits, in the same order
    (the index snapshot stays), each loaded again from the new documents snapshot, so a document rewritten since
    the query began comes back at its indexed place with its new version, and one deleted is skipped
    (Index query streaming through a PulsedTransactionEnumerator, the hits loaded by MapQueryResultRetriever)."""
    return [doc for doc in (db.docs.get(key) for key in unsent) if doc is not None]


def run_query(db: Database, req: QueryRequest) -> Outcome:
    """Dispatch to a collection query or an index query (refused when the database disables auto indexes)."""
    if req.query.is_collection_query:
        return run_collection_query(db, req)
    if db.indexing.dynamic_queries_disabled:
        raise dynamic_queries_disabled()
    return run_index_query(db, req)

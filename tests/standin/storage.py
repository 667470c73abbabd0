"""In-memory storage: per database, one copy per node (documents, etags, auto indexes, revisions bin, HiLo), kept
in step by asynchronous replication that keeps the origin's @last-modified and change vector."""

from __future__ import annotations

import base64
import bisect
import json
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.standin.clock import Clock, format_ticks
from tests.standin.errors import RavenError
from tests.standin.revisions import RevisionStore, delete_revision, revision_of

EMPTY_COLLECTION = "@empty"
HILO_COLLECTION = "@hilo"
ALL_DOCS = "@all_docs"
LAST_MODIFIED_FIELD = "@metadata.@last-modified"
ID_FIELD = "id()"
SERVER_METADATA = ("@id", "@change-vector", "@last-modified", "@flags", "@etag", "@index-score", "@nested-object-types")
DELETE_REVISION_FLAGS = "HasRevisions, DeleteRevision"  # RevisionsStorage.Delete: DeleteRevision | HasRevisions
RESOLVED_FLAGS = "HasRevisions, Resolved"  # a resolved document (Resolved = 0x200) keeps conflict revisions
DEFAULT_INDEXING_LAG_MS = 20  # auto indexes run in the background: a write is indexed this long after it commits
DEFAULT_PULSE_LIMIT_BYTES = 16 << 20  # Databases.PulseReadTransactionLimitInMb on a machine with <= 1 GB of memory
DEFAULT_COMMIT_LATENCY_MS = 2  # a write request commits this long after it read the clock for @last-modified


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON, as the server writes it."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


@dataclass(slots=True)
class Doc:
    """One stored document version; `raw` is its full JSON (with @metadata), serialised once at write time."""

    id: str
    collection: str
    etag: int
    ticks: int
    change_vector: str
    flags: str
    raw: bytes
    key: str  # storage key: the lower-cased id
    archived: bool = False  # @metadata.@archived is true (data archival, 6.1+)

    @property
    def last_modified(self) -> str:
        """@last-modified as RavenDB writes it."""
        return format_ticks(self.ticks)

    def body(self) -> dict[str, Any]:
        """The document as a dict (parsed on demand)."""
        return json.loads(self.raw)


@dataclass(slots=True)
class BinEntry:
    """A delete revision: what the revisions bin lists for a deleted document."""

    id: str
    collection: str
    etag: int
    ticks: int
    change_vector: str

    @property
    def key(self) -> str:
        """Storage key: the lower-cased id."""
        return self.id.lower()

    def to_json(self) -> dict[str, Any]:
        """The entry as GET /revisions/bin returns it."""
        metadata = {"@collection": self.collection} if self.collection != EMPTY_COLLECTION else {}
        metadata.update(
            {
                "@change-vector": self.change_vector,
                "@flags": DELETE_REVISION_FLAGS,
                "@id": self.id,
                "@last-modified": format_ticks(self.ticks),
            }
        )
        return {"@metadata": metadata}


@dataclass
class RevisionsBin:
    """A database's revisions as far as the revisions bin sees them, paged as RavenDB 6.x/7.x pages the bin.

    RevisionsStorage.GetRevisionsBinEntries (src/Raven.Server/Documents/Revisions/RevisionsStorage.cs) walks the
    delete revisions backwards by etag, skips `start` raw records, and counts `pageSize` raw records *before*
    IsRevisionsBinEntry drops the ones whose document exists again or whose id has a newer revision than this
    delete. So a page can be short, or empty, while older entries remain. Each write of a revision trims the id's
    oldest revisions down to MinimumRevisionsToKeep (DeleteOldRevisions; with 0 a delete keeps not even its delete
    revision); PurgeOnDelete removes every revision of the deleted id; the bin cleaner removes every revision of an
    id whose bin entry is older than its age (RevisionsBinCleanMergedCommand).
    """

    deletes: list[BinEntry] = field(default_factory=list)  # every delete revision kept, ascending etag
    revisions: dict[str, list[int]] = field(default_factory=dict)  # lower-cased id -> etags of its revisions kept
    count: int = 0  # every revision kept (GetNumberOfRevisionDocuments, the stats' CountOfRevisionDocuments)
    pages: Counter = field(default_factory=Counter)  # shapes of the pages served: full, short, empty, not modified

    def newest(self, key: str) -> int | None:
        """Etag of the id's newest revision kept."""
        etags = self.revisions.get(key)
        return etags[-1] if etags else None

    def add_revision(self, key: str, etag: int, keep: int | None = None) -> None:
        """A put that created a revision; `keep`: MinimumRevisionsToKeep (None: no limit)."""
        self.revisions.setdefault(key, []).append(etag)
        self.count += 1
        self._trim(key, keep)

    def add_delete(self, entry: BinEntry, keep: int | None = None) -> None:
        """A delete that created a delete revision (then trimmed like any revision)."""
        self.deletes.append(entry)
        self.add_revision(entry.key, entry.etag, keep)

    def _trim(self, key: str, keep: int | None) -> None:
        """DeleteOldRevisions → GetRevisionsForCollectionOrDefault: delete the oldest revisions beyond `keep`."""
        etags = self.revisions.get(key, [])
        if keep is None or len(etags) <= keep:
            return
        dropped = set(etags[: len(etags) - keep])
        self.revisions[key] = etags[len(etags) - keep :]
        if not self.revisions[key]:
            del self.revisions[key]
        self.count -= len(dropped)
        self.deletes = [entry for entry in self.deletes if not (entry.key == key and entry.etag in dropped)]

    def purge(self, key: str) -> None:
        """PurgeOnDelete (or the bin cleaner): the id keeps no revision at all."""
        self.deletes = [entry for entry in self.deletes if entry.key != key]
        self.count -= len(self.revisions.pop(key, []))

    def clean(
        self, before_ticks: int, exists: Callable[[str], bool], purged: Callable[[str], None] | None = None
    ) -> int:
        """The revisions bin cleaner: every id whose bin entry was deleted before `before_ticks` loses all its
        revisions (ForceDeleteAllRevisionsFor), here and in `purged` (the node's revision store). Returns how many
        entries it removed."""
        old = {entry.key for entry in self.deletes if entry.ticks < before_ticks and self.is_entry(entry, exists)}
        for key in old:
            self.purge(key)
            if purged is not None:
                purged(key)
        return len(old)

    def is_entry(self, entry: BinEntry, exists: Callable[[str], bool]) -> bool:
        """IsRevisionsBinEntry: the document does not exist and this delete is its id's newest revision."""
        return not exists(entry.key) and self.newest(entry.key) == entry.etag

    def page(self, start: int, size: int, exists: Callable[[str], bool]) -> list[BinEntry]:
        """Skip `start` raw records newest first, take `size` raw records, then drop those no longer in the bin."""
        end = max(0, len(self.deletes) - max(start, 0))
        window = self.deletes[max(0, end - max(size, 0)) : end][::-1]
        entries = [entry for entry in window if self.is_entry(entry, exists)]
        self.pages["full" if len(entries) == size else "short" if entries else "empty"] += 1
        return entries

    def etag(self, exists: Callable[[str], bool]) -> str | None:
        """GetLatestRevisionsBinEntry: the change vector of the newest raw record, if it is still a bin entry."""
        if self.deletes and self.is_entry(self.deletes[-1], exists):
            return self.deletes[-1].change_vector
        return None


@dataclass(slots=True)
class LogEntry:
    """One write (put or tombstone) in etag order."""

    etag: int
    key: str
    collection: str
    doc: Doc | None
    wall: float


@dataclass(slots=True)
class IndexEntry:
    """What an auto index holds for a document: the version it saw and the field values it extracted."""

    doc: Doc
    values: dict[str, list[Any]]


@dataclass
class AutoIndex:
    """An auto map index on one collection, on one node: covers a prefix (by etag) of that node's writes."""

    name: str
    collection: str
    fields: tuple[str, ...]
    frontier: int = 0
    entries: dict[str, IndexEntry] = field(default_factory=dict)
    last_indexing_ticks: int = 0
    created: float = field(default_factory=time.monotonic)
    build_s: float = 0.0  # a new index covers the writes that exist in proportion to this time, then all
    in_time_order: bool = True  # entries (kept in etag order) have non-decreasing @last-modified
    newest_ticks: int = 0
    superseded_by: str | None = None  # the merged auto index that replaces this one once it has caught up
    caught_up_at: float | None = None  # when the index that supersedes this one first covered what it covers


@dataclass
class IndexingControl:
    """Test knobs for indexing (one per database, every node): paused, lag, build time of new indexes, the wait of
    the query that creates one, and the database settings DisableQueryOptimizerGeneratedIndexes and
    Indexing.Auto.ArchivedDataProcessingBehavior."""

    paused: bool = False
    lag_ms: int = DEFAULT_INDEXING_LAG_MS
    build_s: float = 0.0
    new_index_wait_s: float | None = None  # None: RavenDB's own (15 s for a query, 60 s for a stream)
    dynamic_queries_disabled: bool = False
    include_archived: bool = False  # RavenDB's default for auto indexes is ExcludeArchived
    superseded_delete_s: float = 15.0  # Indexing.TimeBeforeDeletionOfSupersededAutoIndexInSec
    auto_indexes_created: int = 0  # auto indexes the queries of this database created (each once, on every node)


@dataclass
class ReplicationControl:
    """Test knobs for replication between the nodes of one database."""

    delay_ms: int = 0
    paused: bool = False


@dataclass(slots=True)
class Replicated:
    """A document version (raw is None for a delete) on its way from the node that wrote it to another node."""

    target: str
    key: str
    id: str
    collection: str
    ticks: int
    change_vector: str
    flags: str
    raw: bytes | None
    archived: bool
    due: float


@dataclass
class StreamControl:
    """Test knobs for streams (query streams and GET /streams/docs): pause the next stream after N results until
    released; end streams with an error line after N results (a given number of times, or always when times < 0);
    slow every stream down to `throttle_docs` results per `throttle_ms`; renew the read transaction of document
    streams every `read_pulse_docs` documents, as RavenDB does past Databases.PulseReadTransactionLimitInMb (None:
    never, one snapshot per stream); stop the next stream that reaches `stall_after` results for `stall_s` seconds;
    cancel a query stream that writes no result for `query_timeout_s` (Databases.QueryTimeoutInSec, 300 s)."""

    pause_after: int | None = None
    paused_at: int | None = None
    release: threading.Event = field(default_factory=threading.Event)
    error_after: int | None = None
    error_times: int = 0
    error: str = ""
    throttle_docs: int = 0
    throttle_ms: int = 0
    read_pulse_docs: int | None = None
    pulse_limit_bytes: int = DEFAULT_PULSE_LIMIT_BYTES  # Databases.PulseReadTransactionLimitInMb
    stall_after: int | None = None
    stall_s: float = 0.0
    query_timeout_s: float = 300.0

    def cuts(self) -> list[int]:
        """Positions where a stream starting now must stop to check for a pause, a stall or an error."""
        armed = [self.pause_after, self.stall_after, self.error_after if self.error_times else None]
        return sorted(cut for cut in armed if cut is not None)

    def fire_stall(self, sent: int) -> float | None:
        """How long a stream that has sent `sent` results stops sending now, if a stall is armed for that point
        (once)."""
        if self.stall_after is None or sent < self.stall_after:
            return None
        self.stall_after = None
        return self.stall_s

    def fire_error(self, sent: int) -> str | None:
        """The error a stream that has sent `sent` results writes now, if one is armed for that point."""
        if self.error_after is None or self.error_times == 0 or sent < self.error_after:
            return None
        if self.error_times > 0:
            self.error_times -= 1
        return self.error

    def fire_pause(self, sent: int) -> bool:
        """Whether a stream that has sent `sent` results pauses now (a pause is armed once)."""
        if self.pause_after is None or sent < self.pause_after:
            return False
        self.pause_after, self.paused_at = None, sent
        self.release.clear()
        return True


def extract_values(body: dict[str, Any] | None, doc: Doc, path: str) -> list[Any]:
    """Values an index reads for a field path (arrays flatten; missing = [None])."""
    if path == LAST_MODIFIED_FIELD:
        return [doc.ticks]
    if path == ID_FIELD:
        return [doc.id]
    current: list[Any] = [body]
    for part in path.split("."):
        nxt: list[Any] = []
        for item in current:
            if isinstance(item, dict) and part in item:
                value = item[part]
                nxt.extend(value if isinstance(value, list) else [value])
        current = nxt
    return current or [None]


def index_name(collection: str, fields: tuple[str, ...]) -> str:
    """Auto index name as AutoIndexNameFinder builds it."""
    coll = "AllDocs" if collection == ALL_DOCS else collection
    if not fields:
        return f"Auto/{coll}/ById()"
    return f"Auto/{coll}/By" + "And".join(sorted(fields))


def parse_change_vector(text: str | None) -> dict[str, tuple[str, int]]:
    """`A:12-<dbid>, B:3-<dbid>` as {dbid: (node tag, etag)}."""
    entries: dict[str, tuple[str, int]] = {}
    for part in (text or "").split(","):
        part = part.strip()
        if part:
            tag, rest = part.split(":", 1)
            etag, db_id = rest.split("-", 1)
            entries[db_id] = (tag, int(etag))
    return entries


def format_change_vector(entries: dict[str, tuple[str, int]]) -> str:
    """Entries as RavenDB writes them, `TAG:etag-dbid` joined by ", " (here in node-tag order)."""
    ordered = sorted(entries.items(), key=lambda item: (item[1][0], item[0]))
    return ", ".join(f"{tag}:{etag}-{db_id}" for db_id, (tag, etag) in ordered)


def merge_vectors(a: dict[str, tuple[str, int]], b: dict[str, tuple[str, int]]) -> dict[str, tuple[str, int]]:
    """The entry-wise maximum of two change vectors."""
    merged = dict(a)
    for db_id, (tag, etag) in b.items():
        if db_id not in merged or merged[db_id][1] < etag:
            merged[db_id] = (tag, etag)
    return merged


def _same_content(a: bytes, b: bytes) -> bool:
    """Whether two versions have the same body (metadata aside): TryResolveIdenticalDocument."""
    left, right = json.loads(a), json.loads(b)
    left.pop("@metadata", None)
    right.pop("@metadata", None)
    return left == right


def document_conflict(doc_id: str, versions: list[Doc]) -> RavenError:
    """The 409 a load of a conflicted document gets (DocumentConflictException)."""
    return RavenError(
        409,
        "Raven.Client.Exceptions.Documents.DocumentConflictException",
        f"Conflict detected on '{doc_id}', conflict must be resolved before the document will be accessible",
        extra={"DocId": doc_id, "LargestEtag": max((v.etag for v in versions), default=0)},
    )


def vector_status(incoming: str, local: str | None) -> str:
    """How an incoming version relates to the local one: `update` (newer), `already` (same or older), `conflict`."""
    if not local:
        return "update"
    mine, theirs = parse_change_vector(local), parse_change_vector(incoming)
    newer = any(etag > mine.get(db_id, ("", 0))[1] for db_id, (_, etag) in theirs.items())
    older = any(etag > theirs.get(db_id, ("", 0))[1] for db_id, (_, etag) in mine.items())
    if newer and older:
        return "conflict"
    return "update" if newer else "already"


class Database:
    """One node's copy of a database: documents by key, per-collection etag order, write log, indexes, revisions
    bin. Every copy of a database shares the group's lock, clock, revisions configuration and test knobs."""

    def __init__(self, group: DatabaseGroup, node_tag: str) -> None:
        self.group = group
        self.name = group.name
        self.node_tag = node_tag
        self.clock = group.clock
        self.lock = group.lock
        self.changed = group.changed
        self.db_id = base64.b64encode(uuid.uuid4().bytes).decode()[:22]
        self.docs: dict[str, Doc] = {}
        self.by_collection: dict[str, dict[str, Doc]] = {}
        self.all_docs: dict[str, Doc] = {}
        self.last_etag = 0
        self.vector: dict[str, tuple[str, int]] = {}
        self.collection_etag: dict[str, int] = {}
        self.log_etags: list[int] = []
        self.log_walls: list[float] = []
        self.log: list[LogEntry] = []
        self.indexes: dict[str, AutoIndex] = {}
        self.indexing = group.indexing
        self.revisions = RevisionsBin()  # this node's bin: a replicated delete gets this node's etag
        self.revision_store = RevisionStore()  # this node's revisions with their content, by this node's etags
        self.tombstone_vectors: dict[str, str] = {}
        self.conflicts: dict[str, list[Doc]] = {}  # lower-cased id -> conflicting versions (ResolveToLatest = false)
        self.tombstones = 0
        self.operation_id = 0

    @property
    def revisions_config(self) -> dict[str, Any]:
        """The revisions configuration (database record: one for every node)."""
        return self.group.revisions_config

    @revisions_config.setter
    def revisions_config(self, value: dict[str, Any]) -> None:
        self.group.revisions_config = value

    @property
    def raft_index(self) -> int:
        """Index of the last cluster (database record) command."""
        return self.group.raft_index

    @raft_index.setter
    def raft_index(self, value: int) -> None:
        self.group.raft_index = value

    # ---- writes -------------------------------------------------------------------------------------------

    def now(self) -> int:
        """This node's clock: the server clock plus the node's skew (set by a test)."""
        return self.clock.now() + self.group.skew_ticks.get(self.node_tag, 0)

    def _next_etag(self) -> int:
        self.last_etag += 1
        return self.last_etag

    def _local_change_vector(self, previous: str | None, etag: int) -> str:
        """A local write: the previous version's vector with this node's entry set to the new etag."""
        self.vector[self.db_id] = (self.node_tag, etag)  # the previous version's entries are in it already
        if not previous:
            return f"{self.node_tag}:{etag}-{self.db_id}"
        entries = parse_change_vector(previous)
        entries[self.db_id] = (self.node_tag, etag)
        return format_change_vector(entries)

    def revisions_enabled(self, collection: str) -> dict[str, Any] | None:
        """The revisions configuration in force for a collection, or None when disabled."""
        if collection == HILO_COLLECTION:
            return None
        collections = self.revisions_config.get("Collections") or {}
        cfg = collections.get(collection)
        if cfg is None:
            lowered = {k.lower(): v for k, v in collections.items()}
            cfg = lowered.get(collection.lower(), self.revisions_config.get("Default"))
        if not cfg or cfg.get("Disabled"):
            return None
        return cfg

    def _append_log(self, entry: LogEntry) -> None:
        self.log.append(entry)
        self.log_etags.append(entry.etag)
        self.log_walls.append(entry.wall)
        self.collection_etag[entry.collection] = entry.etag

    def _resolve_id(self, doc_id: str) -> str:
        if doc_id.endswith("|"):
            raise RavenError(400, "System.NotSupportedException", "Identities (ids ending with '|') are not supported")
        if doc_id.endswith("/"):
            return f"{doc_id}{self.last_etag + 1:019d}-{self.node_tag}"
        return doc_id

    def put(
        self, doc_id: str, document: dict[str, Any], expected_cv: str | None = None, ticks: int | None = None
    ) -> Doc:
        """Store a document written to this node (server-side metadata set here) and return the new version.
        `ticks`: the @last-modified the write read from the clock before it committed (default: now)."""
        with self.lock:
            doc_id = self._resolve_id(doc_id)
            key = doc_id.lower()
            existing = self.docs.get(key)
            if expected_cv is not None and (existing is None or existing.change_vector != expected_cv):
                actual = existing.change_vector if existing else "none"
                raise RavenError(
                    409,
                    "Raven.Client.Exceptions.ConcurrencyException",
                    f"Document {doc_id} has change vector {actual}, but Put was called with change vector "
                    f"{expected_cv}. Optimistic concurrency violation, transaction will be aborted.",
                )
            metadata = document.get("@metadata")
            metadata = dict(metadata) if isinstance(metadata, dict) else {}
            collection = metadata.get("@collection") or EMPTY_COLLECTION
            if existing is not None and existing.collection.lower() != collection.lower():
                raise RavenError(
                    400,
                    "Raven.Client.Exceptions.Documents.Collections.CollectionMismatchException",
                    f"Changing '{doc_id}' from '{existing.collection}' to '{collection}' via update is not "
                    f"supported. Delete it and recreate the document {doc_id}.",
                )
            if existing is not None:  # ids are case-insensitive: one document, stored under the new spelling
                collection = existing.collection
            return self.store_raw(doc_id, document, metadata, collection, ticks)

    def store_raw(
        self, doc_id: str, document: dict, metadata: dict, collection: str, ticks: int | None = None,
        resolved: bool = False,
    ) -> Doc:  # fmt: skip
        """Write a document version on this node and send it to the other nodes. A write to a conflicted id
        resolves the conflict: its change vector merges every conflicting one, and it is flagged Resolved
        (ConflictsStorage.MergeConflictChangeVectorIfNeededAndDeleteConflicts, DocumentPutAction)."""
        key = doc_id.lower()
        etag = self._next_etag()
        ticks = self.now() if ticks is None else ticks
        old = self.docs.get(key)
        conflicts = self.conflicts.pop(key, None)
        previous = old.change_vector if old else self.tombstone_vectors.get(key)
        if conflicts:
            merged: dict[str, tuple[str, int]] = {}
            for version in conflicts:
                merged = merge_vectors(merged, parse_change_vector(version.change_vector))
            previous, resolved = format_change_vector(merged), True
        cv = self._local_change_vector(previous, etag)
        cfg = self.revisions_enabled(collection)
        flags = RESOLVED_FLAGS if resolved else "HasRevisions" if cfg else ""
        out = {k: v for k, v in metadata.items() if k not in SERVER_METADATA}
        if collection == EMPTY_COLLECTION:
            out.pop("@collection", None)
        out["@change-vector"] = cv
        if flags:
            out["@flags"] = flags
        out["@id"] = doc_id
        out["@last-modified"] = format_ticks(ticks)
        body = {k: v for k, v in document.items() if k != "@metadata"}
        body["@metadata"] = out
        doc = Doc(doc_id, collection, etag, ticks, cv, flags, dumps(body), key, out.get("@archived") is True)
        self._install(doc)
        self.group.replicate(self, doc.key, doc.id, doc.collection, ticks, cv, flags, doc.raw, doc.archived)
        return doc

    def _keep(self, collection: str) -> int | None:
        """MinimumRevisionsToKeep of the collection's revisions configuration (None: no limit)."""
        value = (self.revisions_enabled(collection) or {}).get("MinimumRevisionsToKeep")
        return None if value is None else int(value)

    def _install(self, doc: Doc, replicated: bool = False) -> None:
        """Make `doc` the current version of its id on this node (a new etag, so the end of etag order)."""
        key = doc.key
        old = self.docs.get(key)
        if old is not None:
            self.by_collection[old.collection].pop(key, None)
            self.all_docs.pop(key, None)
        if doc.flags:
            self.revisions.add_revision(key, doc.etag, self._keep(doc.collection))
            self._keep_revision(doc.collection, revision_of(json.loads(doc.raw), doc.etag, doc.ticks, replicated))
        self.docs[key] = doc
        self.by_collection.setdefault(doc.collection, {})[key] = doc
        self.all_docs[key] = doc
        self.tombstone_vectors.pop(key, None)
        self._append_log(LogEntry(doc.etag, key, doc.collection, doc, time.monotonic()))
        self.changed.notify_all()

    def delete(self, doc_id: str, expected_cv: str | None = None, ticks: int | None = None) -> Doc | None:
        """Delete a document on this node; put a delete revision in the bin when revisions apply. Returns the
        deleted doc."""
        with self.lock:
            key = doc_id.lower()
            doc = self.docs.get(key)
            if expected_cv is not None and (doc is None or doc.change_vector != expected_cv):
                raise RavenError(
                    409,
                    "Raven.Client.Exceptions.ConcurrencyException",
                    f"Document {doc_id} does not match change vector {expected_cv}. "
                    "Optimistic concurrency violation, transaction will be aborted.",
                )
            if doc is None:
                return None
            etag = self._next_etag()
            ticks = self.now() if ticks is None else ticks
            cv = self._local_change_vector(doc.change_vector, etag)
            self._remove(doc, etag, ticks, cv)
            self.group.replicate(self, key, doc.id, doc.collection, ticks, cv, doc.flags, None, False)
            return doc

    def _remove(self, doc: Doc, etag: int, ticks: int, cv: str) -> None:
        """Replace `doc` with a tombstone at `etag` (and a delete revision in the bin when revisions apply)."""
        key = doc.key
        self._drop(doc, etag)
        self.tombstones += 1
        self.tombstone_vectors[key] = cv
        cfg = self.revisions_enabled(doc.collection)
        if (cfg or {}).get("PurgeOnDelete"):
            self.revisions.purge(key)
            self.revision_store.purge(key)
        elif cfg is not None or doc.flags:
            self.revisions.add_delete(BinEntry(doc.id, doc.collection, etag, ticks, cv), self._keep(doc.collection))
            self._keep_revision(doc.collection, delete_revision(doc.id, doc.collection, etag, ticks, cv))

    def _drop(self, doc: Doc, etag: int) -> None:
        """Take `doc` out of the documents (a tombstone, or a conflict, takes its place at `etag`)."""
        key = doc.key
        del self.docs[key]
        self.by_collection[doc.collection].pop(key, None)
        self.all_docs.pop(key, None)
        self._append_log(LogEntry(etag, key, doc.collection, None, time.monotonic()))
        self.changed.notify_all()

    def _keep_revision(self, collection: str, revision: Any) -> None:
        """Store a revision's content; the store trims what the collection's configuration no longer keeps."""
        self.revision_store.add(revision, self.revisions_enabled(collection), self.now())

    def receive(self, item: Replicated) -> None:
        """Apply a version replicated from another node: it keeps its @last-modified and change vector and gets
        this node's next etag. A version this node already has (or a newer one) is ignored. Two concurrent
        versions conflict (ConflictManager.HandleConflictForDocument): identical contents only merge their change
        vectors; otherwise, with ResolveToLatest (RavenDB's default), the later @last-modified wins and is written
        again as a local write (PutResolvedDocument: this node's clock, a new change vector, the Resolved flag);
        without it the conflict is kept (ConflictsStorage.AddConflict)."""
        existing = self.docs.get(item.key)
        kept = self.conflicts.get(item.key)
        local_cv = existing.change_vector if existing is not None else self.tombstone_vectors.get(item.key)
        if kept:
            status = "conflict"
            if all(vector_status(item.change_vector, version.change_vector) == "update" for version in kept):
                status = "update"
            elif any(vector_status(item.change_vector, version.change_vector) == "already" for version in kept):
                return
        else:
            status = vector_status(item.change_vector, local_cv)
        if status == "already":
            return
        self.vector = merge_vectors(self.vector, parse_change_vector(item.change_vector))
        if status == "update":
            if kept:
                del self.conflicts[item.key]
            self._apply_replicated(item, existing)
            return
        if existing is not None and item.raw is not None and _same_content(existing.raw, item.raw):
            merged = format_change_vector(
                merge_vectors(parse_change_vector(item.change_vector), parse_change_vector(existing.change_vector))
            )
            body = json.loads(existing.raw)
            body["@metadata"]["@change-vector"] = merged
            self._install(
                Doc(existing.id, existing.collection, self._next_etag(), existing.ticks, merged, existing.flags,
                    dumps(body), existing.key, existing.archived)
            )  # fmt: skip
            return
        if self.group.resolve_to_latest and not kept:
            self._resolve_to_latest(item, existing)
            return
        self._keep_conflict(item, existing)

    def _apply_replicated(self, item: Replicated, existing: Doc | None) -> None:
        etag = self._next_etag()
        if item.raw is None:
            if existing is not None:
                self._remove(existing, etag, item.ticks, item.change_vector)
            else:
                self.tombstone_vectors[item.key] = item.change_vector
            return
        self._install(
            Doc(item.id, item.collection, etag, item.ticks, item.change_vector, item.flags, item.raw, item.key,
                item.archived),
            replicated=True,
        )  # fmt: skip

    def _resolve_to_latest(self, item: Replicated, existing: Doc | None) -> None:
        """ResolveToLatest picks the version with the later @last-modified (a local tombstone has none here), and
        PutResolvedDocument writes it as a new local version over the merged change vector."""
        merged = format_change_vector(
            merge_vectors(parse_change_vector(item.change_vector), parse_change_vector(
                existing.change_vector if existing is not None else self.tombstone_vectors.get(item.key)))
        )  # fmt: skip
        incoming_wins = existing is None or item.ticks >= existing.ticks
        if incoming_wins and item.raw is None:
            if existing is not None:
                etag, ticks = self._next_etag(), self.now()
                cv = self._local_change_vector(merged, etag)
                self._remove(existing, etag, ticks, cv)
                self.group.replicate(self, item.key, item.id, item.collection, ticks, cv, "", None, False)
            else:
                self.tombstone_vectors[item.key] = merged
            return
        raw = item.raw if incoming_wins else existing.raw
        winner_id, collection = (item.id, item.collection) if incoming_wins else (existing.id, existing.collection)
        body = json.loads(raw)
        metadata = body.pop("@metadata", {})
        self.tombstone_vectors[item.key] = merged
        if existing is not None:
            existing.change_vector = merged  # the resolved write builds on every version's change vector
        self.store_raw(winner_id, body, metadata, collection, resolved=True)

    def _keep_conflict(self, item: Replicated, existing: Doc | None) -> None:
        """ResolveToLatest = false: the local version and the incoming one become conflicts; the document leaves
        the documents table without a tombstone (ConflictsStorage.AddConflict), so queries, streams and collection
        reads skip it and GET /docs answers 409 (DocumentConflictException) until a write resolves it."""
        versions = self.conflicts.setdefault(item.key, [])
        if existing is not None:
            versions.append(existing)
            self._drop(existing, self._next_etag())
        versions.append(
            Doc(item.id, item.collection, 0, item.ticks, item.change_vector, item.flags, item.raw or b"null",
                item.key, item.archived)
        )  # fmt: skip

    def get(self, doc_id: str) -> Doc | None:
        """Load a document by id (case-insensitive); 409 DocumentConflictException while it is conflicted."""
        key = doc_id.lower()
        if key in self.conflicts:
            raise document_conflict(doc_id, self.conflicts[key])
        return self.docs.get(key)

    def next_hilo(self, tag: str, separator: str) -> dict[str, Any]:
        """Reserve a HiLo range; the counter lives in Raven/Hilo/<tag> in the @hilo collection."""
        with self.lock:
            hilo_id = f"Raven/Hilo/{tag}"
            current = self.get(hilo_id)
            last_max = int(current.body().get("Max", 0)) if current else 0
            capacity = 32
            new_max = last_max + capacity
            doc = self.store_raw(
                current.id if current else hilo_id, {"Max": new_max}, {"@collection": HILO_COLLECTION}, HILO_COLLECTION
            )
            return {
                "Prefix": f"{tag}{separator}",
                "Low": last_max + 1,
                "High": new_max,
                "LastSize": capacity,
                "ServerTag": self.node_tag,
                "LastRangeAt": doc.last_modified,
            }

    # ---- indexing -----------------------------------------------------------------------------------------

    def find_or_create_index(self, collection: str, fields: tuple[str, ...]) -> tuple[AutoIndex, bool]:
        """The auto index serving these fields: the existing one that has them all, else a new one (created on every
        node, as an auto index is part of the database record). True when it was created now.

        As DynamicQueryToIndexMatcher.Match: among the indexes of the collection that have every field, the one that
        has indexed furthest, then the widest. When none has them all, the new index takes the fields of the widest
        one that has some (a partial match, DynamicQueryMapping.ExtendMappingBasedOn), which is superseded: it
        stays, and serves the queries it can, until the new index has indexed as far, then for
        `superseded_delete_s` (Indexing.TimeBeforeDeletionOfSupersededAutoIndex, 15 s), and is then deleted
        (DynamicQueryRunner.CleanupSupersededAutoIndexes)."""
        with self.lock:
            self.drop_superseded()
            found = self._matching_index(collection, set(fields))
            if found is not None:
                return found, False
            for copy in self.group.copies.values():
                copy._create_index(collection, fields)
            self.indexing.auto_indexes_created += 1
            index = self._matching_index(collection, set(fields))
            assert index is not None
            self.catch_up(index)
            return index, True

    def _matching_index(self, collection: str, wanted: set[str]) -> AutoIndex | None:
        name = collection.lower()
        complete = [ix for ix in self.indexes.values() if ix.collection.lower() == name and wanted <= set(ix.fields)]
        for ix in complete:
            self.catch_up(ix)
        return max(complete, key=lambda ix: (ix.frontier, len(ix.fields)), default=None)

    def _create_index(self, collection: str, fields: tuple[str, ...]) -> None:
        same_coll = [ix for ix in self.indexes.values() if ix.collection.lower() == collection.lower()]
        partial = max(same_coll, key=lambda ix: len(ix.fields), default=None)
        merged = tuple(sorted(set(fields) | set(partial.fields if partial else ())))
        index = AutoIndex(index_name(collection, merged), collection, merged, build_s=self.indexing.build_s)
        if partial is not None:
            partial.superseded_by = index.name
        self.indexes[index.name] = index

    def drop_superseded(self) -> None:
        """Delete each superseded auto index once the index that supersedes it has indexed as far as it had and
        `superseded_delete_s` has passed since (on every node: the deletion is a database-record change)."""
        with self.lock:
            now = time.monotonic()
            for ix in [ix for ix in self.indexes.values() if ix.superseded_by is not None]:
                successor = self.indexes.get(ix.superseded_by)  # type: ignore[arg-type]
                if successor is None:
                    continue
                if ix.caught_up_at is None:
                    self.catch_up(successor)
                    if successor.frontier < ix.frontier:
                        continue
                    ix.caught_up_at = now
                if now - ix.caught_up_at >= self.indexing.superseded_delete_s:
                    for copy in self.group.copies.values():
                        copy.indexes.pop(ix.name, None)

    def _target_etag(self, index: AutoIndex) -> int:
        target = self.last_etag
        if self.indexing.lag_ms > 0:
            cutoff = time.monotonic() - self.indexing.lag_ms / 1000.0
            pos = bisect.bisect_right(self.log_walls, cutoff)
            target = self.log_etags[pos - 1] if pos else 0
        elapsed = time.monotonic() - index.created
        if index.build_s > 0 and elapsed < index.build_s:
            pos = int(len(self.log_etags) * elapsed / index.build_s)
            target = min(target, self.log_etags[pos - 1] if pos else 0)
        return target

    def catch_up(self, index: AutoIndex) -> None:
        """Advance an index over the writes it may see now (none while paused). Archived documents are left out
        unless the database includes them (Indexing.Auto.ArchivedDataProcessingBehavior)."""
        with self.lock:
            if self.indexing.paused:
                return
            target = self._target_etag(index)
            if target <= index.frontier:
                return
            start = bisect.bisect_right(self.log_etags, index.frontier)
            end = bisect.bisect_right(self.log_etags, target)
            all_docs = index.collection == ALL_DOCS
            needs_body = any(f not in (LAST_MODIFIED_FIELD, ID_FIELD) for f in index.fields)
            coll = index.collection.lower()
            skip_archived = not self.indexing.include_archived
            for entry in self.log[start:end]:
                if not all_docs and entry.collection.lower() != coll:
                    continue
                index.entries.pop(entry.key, None)
                if entry.doc is not None and not (skip_archived and entry.doc.archived):
                    body = entry.doc.body() if needs_body else None
                    values = {f: extract_values(body, entry.doc, f) for f in index.fields}
                    index.entries[entry.key] = IndexEntry(entry.doc, values)
                    if entry.doc.ticks < index.newest_ticks:  # replicated with the origin's older @last-modified
                        index.in_time_order = False
                    index.newest_ticks = max(index.newest_ticks, entry.doc.ticks)
            index.frontier = target
            index.last_indexing_ticks = self.clock.now()

    def is_stale(self, index: AutoIndex) -> bool:
        """True while the index has not covered every write of its collection."""
        return self.collection_last_etag(index.collection) > index.frontier

    def collection_last_etag(self, collection: str) -> int:
        """Etag of the newest write (put or delete) in a collection."""
        if collection == ALL_DOCS:
            return self.last_etag
        return max((e for c, e in self.collection_etag.items() if c.lower() == collection.lower()), default=0)

    # ---- statistics ---------------------------------------------------------------------------------------

    def collection_docs(self, collection: str) -> dict[str, Doc]:
        """Documents of a collection (case-insensitive name) in etag order."""
        if collection == ALL_DOCS:
            return self.all_docs
        found = self.by_collection.get(collection)
        if found is not None:
            return found
        for name, docs in self.by_collection.items():
            if name.lower() == collection.lower():
                return docs
        return {}

    def newest_first(self, collection: str | None = None) -> list[Doc]:
        """Documents in reverse etag order (GetDocumentsInReverseEtagOrder): every document, or one collection's
        (case-insensitive name; an unknown one has none)."""
        docs = self.all_docs if collection is None else self.collection_docs(collection)
        return list(docs.values())[::-1]

    def older_than_resumed(self, last_etag: int) -> list[Doc]:
        """Where a reverse-etag stream goes on after a read-transaction renewal: GetDocumentsInReverseEtagOrderFrom
        (last_etag, skip: 1), i.e. Table.SeekBackwardFrom over the all-docs etag index in the new snapshot. The
        iterator seeks to the first etag >= last_etag and steps one back, which lands on the newest etag below
        last_etag whether that document still has it or moved (a write gives it a new, higher etag). When no etag
        >= last_etag is left (everything read so far was deleted and nothing written), the seek fails, the iterator
        starts at the last etag instead, and the step back skips the newest unread document."""
        ascending = list(self.all_docs.values())
        cut = bisect.bisect_left([doc.etag for doc in ascending], last_etag)
        below = ascending[:cut]
        if cut == len(ascending) and below:
            below = below[:-1]
        return below[::-1]

    def collection_stats(self) -> dict[str, Any]:
        """Body of GET /collections/stats: every collection this node ever had, with 0 once emptied."""
        with self.lock:
            collections = {name: len(docs) for name, docs in self.by_collection.items()}
            return {"CountOfDocuments": len(self.docs), "CountOfConflicts": 0, "Collections": collections}

    def index_info(self, index: AutoIndex) -> dict[str, Any]:
        """One entry of the stats' Indexes list."""
        return {
            "Name": index.name,
            "IsStale": self.is_stale(index),
            "State": "Normal",
            "LockMode": "Unlock",
            "Priority": "Normal",
            "Type": "AutoMap",
            "SourceType": "Documents",
            "LastIndexingTime": format_ticks(index.last_indexing_ticks or self.clock.now()),
        }

    def stats(self) -> dict[str, Any]:
        """Body of GET /stats."""
        with self.lock:
            for index in self.indexes.values():
                self.catch_up(index)
            return {
                "CountOfDocuments": len(self.docs),
                "CountOfRevisionDocuments": self.revisions.count,
                "CountOfDocumentsConflicts": len(self.conflicts),
                "CountOfTombstones": self.tombstones,
                "CountOfConflicts": sum(len(versions) for versions in self.conflicts.values()),
                "CountOfAttachments": 0,
                "CountOfUniqueAttachments": 0,
                "CountOfCounterEntries": 0,
                "CountOfTimeSeriesSegments": 0,
                "CountOfIndexes": len(self.indexes),
                "LastDocEtag": self.last_etag,
                "LastDatabaseEtag": self.last_etag,
                "DatabaseChangeVector": format_change_vector(self.vector),
                "DatabaseId": self.db_id,
                "Is64Bit": True,
                "Pager": "Voron.Impl.Paging.RvnMemoryMapPager",
                "Indexes": [self.index_info(ix) for ix in self.indexes.values()],
                "SizeOnDisk": {"HumaneSize": "0 Bytes", "SizeInBytes": 0},
                "TempBuffersSizeOnDisk": {"HumaneSize": "0 Bytes", "SizeInBytes": 0},
                "NumberOfTransactionMergerQueueOperations": 0,
            }


class DatabaseGroup:
    """A database across the cluster: one `Database` copy per node, what the database record holds for all of
    them (revisions configuration, auto index definitions via find_or_create_index), the test knobs, and the
    replication queues. Replication applies each write to each other node in write order, after `delay_ms`
    (at once, inside the write, when the delay is 0 and nothing is queued); a stopped node (`offline`, shared
    with Storage) receives nothing until it is started again, then everything queued for it."""

    def __init__(
        self,
        name: str,
        clock: Clock,
        node_tags: list[str],
        offline: set[str] | None = None,
        skew_ticks: dict[str, int] | None = None,
    ) -> None:
        self.name = name
        self.clock = clock
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.indexing = IndexingControl()
        self.replication = ReplicationControl()
        self.streams = StreamControl()
        self.revisions_config: dict[str, Any] = {}
        self.resolve_to_latest = True  # the conflict solver's ResolveToLatest (RavenDB: `?? true`)
        self.commit_latency_ms = DEFAULT_COMMIT_LATENCY_MS
        self.compression: dict[str, Any] = {}  # DocumentsCompressionConfiguration of the database record
        self.raft_index = 0
        self.shards: dict[int, list[str]] = {}  # a sharded database's shards and the node tags of each; {}: not sharded
        self.pending: dict[str, deque[Replicated]] = {tag: deque() for tag in node_tags}
        self.offline = offline if offline is not None else set()
        self.skew_ticks = skew_ticks if skew_ticks is not None else {}
        self.closed = False
        self._replicator: threading.Thread | None = None
        self.copies = {tag: Database(self, tag) for tag in node_tags}

    def replicate(
        self, origin: Database, key: str, doc_id: str, collection: str, ticks: int, cv: str, flags: str,
        raw: bytes | None, archived: bool,
    ) -> None:  # fmt: skip
        """Send a version written on `origin` to every other node."""
        if len(self.copies) == 1:
            return
        due = time.monotonic() + self.replication.delay_ms / 1000.0
        for tag, copy in self.copies.items():
            if copy is origin:
                continue
            item = Replicated(tag, key, doc_id, collection, ticks, cv, flags, raw, archived, due)
            queue = self.pending[tag]
            if self.replication.delay_ms <= 0 and not self.replication.paused and not queue and tag not in self.offline:
                copy.receive(item)
            else:
                queue.append(item)
                self._start_replicator()

    def _start_replicator(self) -> None:
        if self._replicator is None:
            self._replicator = threading.Thread(target=self._replicate_loop, daemon=True, name=f"repl-{self.name}")
            self._replicator.start()

    def _replicate_loop(self) -> None:
        with self.lock:
            while not self.closed:
                self.apply_due()
                self.changed.wait(0.005)

    def apply_due(self, everything: bool = False) -> int:
        """Apply the queued versions whose delay has passed (all of them with `everything`, even when paused) to
        the nodes that are running."""
        applied = 0
        with self.lock:
            while True:  # a version applied can send another (a resolved conflict is a local write)
                now, before = time.monotonic(), applied
                for tag, queue in self.pending.items():
                    if tag in self.offline:
                        continue
                    while queue and (everything or (not self.replication.paused and queue[0].due <= now)):
                        self.copies[tag].receive(queue.popleft())
                        applied += 1
                if applied == before:
                    return applied

    def compressed_collections(self) -> set[str] | bool | None:
        """What the documents compression configuration covers: True (every collection), the lower-cased names, or
        None (no compression)."""
        config = self.compression
        if config.get("CompressAllCollections"):
            return True
        names = {str(name).lower() for name in config.get("Collections") or []}
        return names or None

    def delete_auto_indexes(self) -> None:
        """Drop every auto index on every node (as RavenDB does with one idle for 72 h); the next query that needs
        one creates it again from etag 0."""
        with self.lock:
            for copy in self.copies.values():
                copy.indexes.clear()

    def replication_state(self) -> dict[str, Any]:
        """What GET/POST /standin/databases/{db}/replication answers."""
        return {
            "DelayMs": self.replication.delay_ms,
            "Paused": self.replication.paused,
            "Pending": sum(len(queue) for queue in self.pending.values()),
            "Nodes": {tag: format_change_vector(copy.vector) for tag, copy in self.copies.items()},
        }

    def close(self) -> None:
        """Stop replicating (the database is dropped)."""
        with self.lock:
            self.closed = True
            self.pending = {tag: deque() for tag in self.pending}
            self.streams.release.set()
            self.changed.notify_all()


class Storage:
    """All databases of the stand-in, each with one copy per node."""

    def __init__(self, node_tags: list[str] | None = None) -> None:
        self.clock = Clock()
        self.lock = threading.Lock()
        self.node_tags = list(node_tags or ["A"])
        self.offline: set[str] = set()  # nodes stopped by the control API: replication waits for them
        self.skew_ticks: dict[str, int] = {}  # per node: added to the clock for that node's writes
        self.databases: dict[str, DatabaseGroup] = {}
        self.operation_id = 0

    def create(self, name: str) -> Database:
        """Create a database on every node (409-style error if it exists); returns the first node's copy."""
        with self.lock:
            if name.lower() in self.databases:
                raise RavenError(
                    409, "Raven.Client.Exceptions.ConcurrencyException", f"Database '{name}' already exists!"
                )
            group = DatabaseGroup(name, self.clock, self.node_tags, self.offline, self.skew_ticks)
            self.databases[name.lower()] = group
            return group.copies[self.node_tags[0]]

    def delete(self, name: str) -> bool:
        """Drop a database; False if it did not exist."""
        with self.lock:
            group = self.databases.pop(name.lower(), None)
        if group is None:
            return False
        group.close()
        return True

    def group(self, name: str) -> DatabaseGroup | None:
        """A database (every node's copy) by name (case-insensitive)."""
        return self.databases.get(name.lower())

    def get(self, name: str, node_tag: str | None = None) -> Database | None:
        """A node's copy of a database (the first node's by default)."""
        group = self.databases.get(name.lower())
        return None if group is None else group.copies[node_tag or self.node_tags[0]]

    def names(self) -> list[str]:
        """Database names in creation order."""
        return [group.name for group in self.databases.values()]

    def next_operation_id(self) -> int:
        """Server-wide operation ids."""
        with self.lock:
            self.operation_id += 1
            return self.operation_id

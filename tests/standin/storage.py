"""In-memory document storage shared by every node: documents, etags, auto indexes, revisions bin, HiLo."""

from __future__ import annotations

import base64
import bisect
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from tests.standin.clock import Clock, format_ticks
from tests.standin.errors import RavenError

EMPTY_COLLECTION = "@empty"
HILO_COLLECTION = "@hilo"
ALL_DOCS = "@all_docs"
LAST_MODIFIED_FIELD = "@metadata.@last-modified"
ID_FIELD = "id()"
SERVER_METADATA = ("@id", "@change-vector", "@last-modified", "@flags", "@etag", "@index-score", "@nested-object-types")
DELETE_REVISION_FLAGS = "HasRevisions, DeleteRevision, Revision"


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

    @property
    def key(self) -> str:
        """Storage key: the lower-cased id."""
        return self.id.lower()

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
    """An auto map index on one collection: covers a prefix (by etag) of the database's writes."""

    name: str
    collection: str
    fields: tuple[str, ...]
    frontier: int = 0
    entries: dict[str, IndexEntry] = field(default_factory=dict)
    last_indexing_ticks: int = 0


@dataclass
class IndexingControl:
    """Test knobs for indexing: paused, or only cover writes older than lag_ms."""

    paused: bool = False
    lag_ms: int = 0


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


class Database:
    """One database: documents by key, per-collection etag order, write log, indexes, revisions."""

    def __init__(self, name: str, clock: Clock) -> None:
        self.name = name
        self.clock = clock
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.db_id = base64.b64encode(uuid.uuid4().bytes).decode()[:22]
        self.docs: dict[str, Doc] = {}
        self.by_collection: dict[str, dict[str, Doc]] = {}
        self.all_docs: dict[str, Doc] = {}
        self.last_etag = 0
        self.collection_etag: dict[str, int] = {}
        self.log_etags: list[int] = []
        self.log_walls: list[float] = []
        self.log: list[LogEntry] = []
        self.indexes: dict[str, AutoIndex] = {}
        self.indexing = IndexingControl()
        self.revisions_config: dict[str, Any] = {}
        self.revisions_bin: dict[str, BinEntry] = {}
        self.count_of_revisions = 0
        self.tombstones = 0
        self.operation_id = 0
        self.raft_index = 0

    # ---- writes -------------------------------------------------------------------------------------------

    def _next_etag(self) -> int:
        self.last_etag += 1
        return self.last_etag

    def change_vector(self, etag: int, node_tag: str) -> str:
        """Change vector of a single-node write."""
        return f"{node_tag}:{etag}-{self.db_id}"

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

    def _resolve_id(self, doc_id: str, node_tag: str) -> str:
        if doc_id.endswith("|"):
            raise RavenError(400, "System.NotSupportedException", "Identities (ids ending with '|') are not supported")
        if doc_id.endswith("/"):
            return f"{doc_id}{self.last_etag + 1:019d}-{node_tag}"
        return doc_id

    def put(self, doc_id: str, document: dict[str, Any], node_tag: str, expected_cv: str | None = None) -> Doc:
        """Store a document (server-side metadata set here) and return the new version."""
        with self.lock:
            doc_id = self._resolve_id(doc_id, node_tag)
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
            return self.store_raw(doc_id, document, metadata, collection, node_tag)

    def store_raw(self, doc_id: str, document: dict, metadata: dict, collection: str, node_tag: str) -> Doc:
        key = doc_id.lower()
        etag = self._next_etag()
        ticks = self.clock.now()
        cv = self.change_vector(etag, node_tag)
        flags = "HasRevisions" if self.revisions_enabled(collection) else ""
        out = {k: v for k, v in metadata.items() if k not in SERVER_METADATA}
        if collection == EMPTY_COLLECTION:
            out.pop("@collection", None)
        out["@change-vector"] = cv
        if flags:
            out["@flags"] = flags
            self.count_of_revisions += 1
        out["@id"] = doc_id
        out["@last-modified"] = format_ticks(ticks)
        body = {k: v for k, v in document.items() if k != "@metadata"}
        body["@metadata"] = out
        doc = Doc(doc_id, collection, etag, ticks, cv, flags, dumps(body))
        old = self.docs.get(key)
        if old is not None:
            self.by_collection[old.collection].pop(key, None)
            self.all_docs.pop(key, None)
        self.docs[key] = doc
        self.by_collection.setdefault(collection, {})[key] = doc
        self.all_docs[key] = doc
        self.revisions_bin.pop(key, None)
        self._append_log(LogEntry(etag, key, collection, doc, time.monotonic()))
        self.changed.notify_all()
        return doc

    def delete(self, doc_id: str, node_tag: str, expected_cv: str | None = None) -> Doc | None:
        """Delete a document; put a delete revision in the bin when revisions apply. Returns the deleted doc."""
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
            del self.docs[key]
            self.by_collection[doc.collection].pop(key, None)
            if not self.by_collection[doc.collection]:
                del self.by_collection[doc.collection]
            self.all_docs.pop(key, None)
            etag = self._next_etag()
            ticks = self.clock.now()
            cv = self.change_vector(etag, node_tag)
            self.tombstones += 1
            cfg = self.revisions_enabled(doc.collection)
            if (cfg is not None or doc.flags) and not (cfg or {}).get("PurgeOnDelete"):
                self.revisions_bin[key] = BinEntry(doc.id, doc.collection, etag, ticks, cv)
                self.count_of_revisions += 1
            self._append_log(LogEntry(etag, key, doc.collection, None, time.monotonic()))
            self.changed.notify_all()
            return doc

    def get(self, doc_id: str) -> Doc | None:
        """Load a document by id (case-insensitive)."""
        return self.docs.get(doc_id.lower())

    def next_hilo(self, tag: str, separator: str, node_tag: str) -> dict[str, Any]:
        """Reserve a HiLo range; the counter lives in Raven/Hilo/<tag> in the @hilo collection."""
        with self.lock:
            hilo_id = f"Raven/Hilo/{tag}"
            current = self.get(hilo_id)
            last_max = int(current.body().get("Max", 0)) if current else 0
            capacity = 32
            new_max = last_max + capacity
            doc = self.store_raw(
                current.id if current else hilo_id,
                {"Max": new_max},
                {"@collection": HILO_COLLECTION},
                HILO_COLLECTION,
                node_tag,
            )
            return {
                "Prefix": f"{tag}{separator}",
                "Low": last_max + 1,
                "High": new_max,
                "LastSize": capacity,
                "ServerTag": node_tag,
                "LastRangeAt": doc.last_modified,
            }

    # ---- indexing -----------------------------------------------------------------------------------------

    def find_or_create_index(self, collection: str, fields: tuple[str, ...]) -> AutoIndex:
        """The auto index serving these fields: an existing superset, else a merged new index."""
        with self.lock:
            wanted = set(fields)
            same_coll = [ix for ix in self.indexes.values() if ix.collection.lower() == collection.lower()]
            for ix in same_coll:
                if wanted <= set(ix.fields):
                    return ix
            merged = tuple(sorted(wanted.union(*(set(ix.fields) for ix in same_coll))))
            for ix in same_coll:
                del self.indexes[ix.name]
            index = AutoIndex(index_name(collection, merged), collection, merged)
            self.indexes[index.name] = index
            self.catch_up(index)
            return index

    def _target_etag(self) -> int:
        if self.indexing.lag_ms <= 0:
            return self.last_etag
        cutoff = time.monotonic() - self.indexing.lag_ms / 1000.0
        pos = bisect.bisect_right(self.log_walls, cutoff)
        return self.log_etags[pos - 1] if pos else 0

    def catch_up(self, index: AutoIndex) -> None:
        """Advance an index over the writes it may see now (none while paused)."""
        with self.lock:
            if self.indexing.paused:
                return
            target = self._target_etag()
            if target <= index.frontier:
                return
            start = bisect.bisect_right(self.log_etags, index.frontier)
            end = bisect.bisect_right(self.log_etags, target)
            all_docs = index.collection == ALL_DOCS
            needs_body = any(f not in (LAST_MODIFIED_FIELD, ID_FIELD) for f in index.fields)
            coll = index.collection.lower()
            for entry in self.log[start:end]:
                if not all_docs and entry.collection.lower() != coll:
                    continue
                index.entries.pop(entry.key, None)
                if entry.doc is not None:
                    body = entry.doc.body() if needs_body else None
                    values = {f: extract_values(body, entry.doc, f) for f in index.fields}
                    index.entries[entry.key] = IndexEntry(entry.doc, values)
            index.frontier = target
            index.last_indexing_ticks = self.clock.now()

    def is_stale(self, index: AutoIndex) -> bool:
        """True while the index has not covered every write of its collection."""
        if index.collection == ALL_DOCS:
            return self.last_etag > index.frontier
        last = max((e for c, e in self.collection_etag.items() if c.lower() == index.collection.lower()), default=0)
        return last > index.frontier

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

    def collection_stats(self) -> dict[str, Any]:
        """Body of GET /collections/stats."""
        with self.lock:
            collections = {name: len(docs) for name, docs in self.by_collection.items() if docs}
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
                "CountOfRevisionDocuments": self.count_of_revisions,
                "CountOfDocumentsConflicts": 0,
                "CountOfTombstones": self.tombstones,
                "CountOfConflicts": 0,
                "CountOfAttachments": 0,
                "CountOfUniqueAttachments": 0,
                "CountOfCounterEntries": 0,
                "CountOfTimeSeriesSegments": 0,
                "CountOfIndexes": len(self.indexes),
                "LastDocEtag": self.last_etag,
                "LastDatabaseEtag": self.last_etag,
                "DatabaseChangeVector": f"A:{self.last_etag}-{self.db_id}" if self.last_etag else "",
                "DatabaseId": self.db_id,
                "Is64Bit": True,
                "Pager": "Voron.Impl.Paging.RvnMemoryMapPager",
                "Indexes": [self.index_info(ix) for ix in self.indexes.values()],
                "SizeOnDisk": {"HumaneSize": "0 Bytes", "SizeInBytes": 0},
                "TempBuffersSizeOnDisk": {"HumaneSize": "0 Bytes", "SizeInBytes": 0},
                "NumberOfTransactionMergerQueueOperations": 0,
            }


class Storage:
    """All databases of the stand-in (one per process, shared by every node)."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.lock = threading.Lock()
        self.databases: dict[str, Database] = {}
        self.operation_id = 0

    def create(self, name: str) -> Database:
        """Create a database; 409-style error if it exists."""
        with self.lock:
            if name.lower() in self.databases:
                raise RavenError(
                    409, "Raven.Client.Exceptions.ConcurrencyException", f"Database '{name}' already exists!"
                )
            db = Database(name, self.clock)
            self.databases[name.lower()] = db
            return db

    def delete(self, name: str) -> bool:
        """Drop a database; False if it did not exist."""
        with self.lock:
            return self.databases.pop(name.lower(), None) is not None

    def get(self, name: str) -> Database | None:
        """A database by name (case-insensitive)."""
        return self.databases.get(name.lower())

    def names(self) -> list[str]:
        """Database names in creation order."""
        return [db.name for db in self.databases.values()]

    def next_operation_id(self) -> int:
        """Server-wide operation ids."""
        with self.lock:
            self.operation_id += 1
            return self.operation_id

"""One node's revisions with their content, as RavenDB's RevisionsStorage keeps them
(src/Raven.Server/Documents/Revisions/RevisionsStorage.cs): keyed by change vector, ordered by this node's etag,
listed per document id, trimmed by MinimumRevisionsToKeep and MinimumRevisionAgeToKeep when a document gets a new
revision, and purged with its document by PurgeOnDelete."""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass, field
from typing import Any

from tests.standin.clock import TICKS_PER_SECOND, format_ticks

# DocumentFlags as RavenDB writes them in a revision's @metadata: the [Flags] enum's ToString(), names in value order
# (HasRevisions 0x2, DeleteRevision 0x4, Revision 0x20, FromReplication 0x40: src/Raven.Server/Documents/
# DocumentFlags.cs); RavenDB's revisions tests assert these strings.
REVISION_FLAGS = "HasRevisions, Revision"
REPLICATED_REVISION_FLAGS = "HasRevisions, Revision, FromReplication"  # a revision made of a replicated version
DELETE_REVISION_FLAGS = "HasRevisions, DeleteRevision"


@dataclass(slots=True)
class Revision:
    """One revision: a document version (or a delete) as stored, with this node's etag."""

    id: str
    collection: str
    etag: int
    ticks: int
    change_vector: str
    raw: bytes  # the revision document as GET /revisions returns it, @metadata included
    deleted: bool = False  # a delete revision

    @property
    def key(self) -> str:
        """Storage key: the lower-cased id."""
        return self.id.lower()

    def debug_entry(self) -> dict[str, Any]:
        """The entry as GET /debug/documents/get-revisions lists it (RevisionsHandlerProcessorForGetRevisionsDebug:
        Id, Etag, LastModified, ChangeVector and nothing else)."""
        return {
            "Id": self.id,
            "Etag": self.etag,
            "LastModified": format_ticks(self.ticks),
            "ChangeVector": self.change_vector,
        }


def revision_of(body: dict[str, Any], etag: int, ticks: int, replicated: bool = False) -> Revision:
    """A document version as its revision: the same body and metadata, with the Revision flag (and FromReplication
    on a node that received the version from another)."""
    metadata = dict(body["@metadata"])
    metadata["@flags"] = REPLICATED_REVISION_FLAGS if replicated else REVISION_FLAGS
    raw = json.dumps({**body, "@metadata": metadata}, ensure_ascii=False, separators=(",", ":")).encode()
    collection = metadata.get("@collection", "@empty")
    return Revision(metadata["@id"], collection, etag, ticks, metadata["@change-vector"], raw)


def delete_revision(doc_id: str, collection: str, etag: int, ticks: int, change_vector: str) -> Revision:
    """The revision RavenDB writes when a document with revisions is deleted: no body, the time of the delete."""
    metadata = {"@collection": collection} if collection != "@empty" else {}
    metadata.update(
        {
            "@change-vector": change_vector,
            "@flags": DELETE_REVISION_FLAGS,
            "@id": doc_id,
            "@last-modified": format_ticks(ticks),
        }
    )
    raw = json.dumps({"@metadata": metadata}, ensure_ascii=False, separators=(",", ":")).encode()
    return Revision(doc_id, collection, etag, ticks, change_vector, raw, deleted=True)


@dataclass
class RevisionStore:
    """A node's revisions: by change vector (GetRevision), by etag (GetRevisionsFrom) and per id (GetRevisions)."""

    by_change_vector: dict[str, Revision] = field(default_factory=dict)
    etags: list[int] = field(default_factory=list)  # ascending
    by_etag: dict[int, Revision] = field(default_factory=dict)
    per_id: dict[str, list[Revision]] = field(default_factory=dict)  # lower-cased id -> oldest first
    trimmed: int = 0  # revisions removed by MinimumRevisionsToKeep / MinimumRevisionAgeToKeep so far

    def add(self, revision: Revision, config: dict[str, Any] | None, now: int) -> list[Revision]:
        """Keep a revision, then remove the id's oldest ones the configuration no longer keeps (RevisionsStorage.Put
        then DeleteOldRevisions: the new revision counts; with MinimumRevisionAgeToKeep only revisions older than
        that age go; with both, only those beyond the count and older than the age). Returns the removed ones."""
        if revision.change_vector in self.by_change_vector:  # the same version again (replication): one revision
            return []
        self.by_change_vector[revision.change_vector] = revision
        bisect.insort(self.etags, revision.etag)
        self.by_etag[revision.etag] = revision
        self.per_id.setdefault(revision.key, []).append(revision)
        return self._trim(revision.key, config or {}, now)

    def _trim(self, key: str, config: dict[str, Any], now: int) -> list[Revision]:
        keep, age = config.get("MinimumRevisionsToKeep"), config.get("MinimumRevisionAgeToKeep")
        if keep is None and age is None:
            return []
        kept = self.per_id[key]
        excess = len(kept) - keep if keep is not None else len(kept)
        oldest_kept = now - int(_timespan_seconds(age) * TICKS_PER_SECOND) if age is not None else None
        removed = []
        while excess > 0 and kept and (oldest_kept is None or kept[0].ticks < oldest_kept):
            removed.append(kept[0])
            self.remove(kept[0])
            excess -= 1
        self.trimmed += len(removed)
        return removed

    def remove(self, revision: Revision) -> None:
        """Forget one revision."""
        del self.by_change_vector[revision.change_vector]
        del self.by_etag[revision.etag]
        self.etags.pop(bisect.bisect_left(self.etags, revision.etag))
        kept = self.per_id[revision.key]
        kept.remove(revision)
        if not kept:
            del self.per_id[revision.key]

    def purge(self, key: str) -> None:
        """PurgeOnDelete: every revision of the id goes."""
        for revision in list(self.per_id.get(key, [])):
            self.remove(revision)

    def from_etag(self, start: int, take: int) -> list[Revision]:
        """GetRevisionsFrom(context, etag: start, take): revisions at etag >= start in etag order. RavenDB yields a
        revision before it counts `take` down (`yield return document; if (take-- <= 0) yield break;`), so a page
        holds take + 1 revisions when that many exist."""
        first = bisect.bisect_left(self.etags, start)
        return [self.by_etag[etag] for etag in self.etags[first : first + max(take, 0) + 1]]

    def of_id(self, key: str) -> list[Revision]:
        """GetRevisions(id): newest first."""
        return self.per_id.get(key, [])[::-1]


def _timespan_seconds(value: Any) -> float:
    """A .NET TimeSpan ('[d.]hh:mm:ss[.fffffff]') or a number of seconds."""
    if isinstance(value, (int, float)):
        return float(value)
    text, days = str(value), 0
    if "." in text.split(":")[0]:
        day_part, text = text.split(".", 1)
        days = int(day_part)
    hours, minutes, seconds = text.split(":")
    return days * 86400 + int(hours) * 3600 + int(minutes) * 60 + float(seconds)

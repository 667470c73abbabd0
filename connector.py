"""Fivetran Connector SDK connector that syncs RavenDB collections into a Fivetran destination.

Each collection becomes one table keyed by the document id. A sync streams every collection ordered by
`@metadata.'@last-modified'` from the cursor saved in the state, flattens each document into a row and
upserts it, checkpointing every 1,000 records (counted across collections) and at the end. Documents deleted from
collections with revisions enabled are read from the revisions bin and marked deleted.

The cursor is RavenDB's own 7-digit `@last-modified` string plus the versions already upserted at exactly that
timestamp, and the query reads `>=` it: a write that lands in the same 100-ns tick as the last synced document,
a stale index or a restart never loses a document, and none lands twice.
"""

import base64
import binascii
import functools
import getpass
import json
import math
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import requests
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from fivetran_connector_sdk import ConfigurationForm, Connector, Test, form_field
from fivetran_connector_sdk import Logging as log
from fivetran_connector_sdk import Operations as op
from ravendb import DocumentStore
from ravendb.documents.commands.revisions import GetRevisionsBinEntryCommand
from ravendb.documents.commands.stream import QueryStreamCommand
from ravendb.documents.operations.statistics import GetCollectionStatisticsOperation
from ravendb.documents.queries.index_query import IndexQuery
from ravendb.exceptions.exceptions import (
    AllTopologyNodesDownException,
    AuthorizationException,
    DatabaseDoesNotExistException,
)
from ravendb.exceptions.raven_exceptions import RavenException
from ravendb.tools.parsers import JSONLRavenStreamParser
from ravendb.tools.utils import Utils

_CHECKPOINT_EVERY_RECORDS = 1_000
_DEFAULT_BATCH_SIZE = 1_000  # entries per revisions-bin request; collections are streamed, not paged
_MAX_BATCH_SIZE = 100_000
_STREAM_READ_BYTES = 1 << 16  # bytes per socket read of a stream (the client's default is 512)
_CONNECT_TIMEOUT_SECONDS = 5.0
_PRIVATE_DIR_PREFIX = "ravendb-connector-"  # + pid: the owner-only temporary folder of the client certificate
_INDEX_WAIT_SECONDS = 120.0  # how long a sync waits for a stale auto index to catch up before reading on
_MAX_ATTEMPTS = 5
_BACKOFF_FIRST_SECONDS = 1.0
_BACKOFF_CAP_SECONDS = 30.0
_SAMPLE_DOCUMENTS = 500  # newest documents per collection that schema() reads to declare text columns
_MAX_FLATTEN_DEPTH = 10  # object levels flattened into columns; deeper objects land as one JSON value
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_DEFAULT_PROGRESS_SECONDS = 30.0  # while a collection streams, at most one progress line this often
_MAX_PROGRESS_SECONDS = 3600.0
_MAX_VERSIONS_AT_CURSOR = 500  # documents at the cursor's exact timestamp whose versions the state keeps
_STATE_VERSION = 1
_BEGINNING_OF_TIME = "0001-01-01T00:00:00.0000000Z"
_DATABASE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}")
_LAST_MODIFIED = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{7}Z")

# Every query the connector sends is one of these constant texts. The collection is the one part RQL cannot take
# as a parameter: it is escaped exactly as the ravendb client escapes it (Utils.escape_collection_name).
_CHANGED_SINCE_RQL = (
    "from '{collection}' where @metadata.'@last-modified' >= $since order by @metadata.'@last-modified'"
)
_NEWEST_RQL = "from '{collection}' order by @metadata.'@last-modified' desc"
_ALL_DOCUMENTS_RQL = "from '{collection}'"  # a collection query: read from storage, no index, never stale
_CONNECTION_STEP_BY_SETTING = {"database_name": "database", "collection_name": "read access to the collections"}
_RAVEN_DATE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,7})?)?(Z|[+-]\d{2}:\d{2})?")


class _FormField(NamedTuple):
    name: str
    label: str
    description: str
    required: bool = False
    secret: bool = False


_FORM_FIELDS = [
    _FormField("ravendb_urls", "RavenDB URLs", "One URL, or the comma-separated URLs of a cluster's nodes.", True),
    _FormField("database_name", "Database", "The database to sync.", True),
    _FormField(
        "certificate_base64",
        "Client certificate",
        "Base64 of the client certificate: the .pfx from the RavenDB Cloud portal, or a PEM with certificate and "
        "key. Required for https://.",
        secret=True,
    ),
    _FormField(
        "certificate_password", "Certificate password", "Only for a protected .pfx or encrypted PEM key.", secret=True
    ),
    _FormField("collection_name", "Collections", "Comma-separated collections; empty: every collection."),
    _FormField(
        "batch_size",
        "Batch size",
        f"Entries per revisions-bin request (default {_DEFAULT_BATCH_SIZE}); collections are streamed whole.",
    ),
    _FormField(
        "reconcile_deletes_hours",
        "Reconcile deletes every (hours)",
        "Without revisions: every so many hours, mark deleted the rows whose documents no longer exist "
        "(reads every document of the collection; see README). Empty or 0: off.",
    ),
    _FormField(
        "progress_log_seconds",
        "Progress log every (seconds)",
        f"While a collection streams, log progress at most this often (default {_DEFAULT_PROGRESS_SECONDS:.0f}).",
    ),
    _FormField(
        "server_ca_base64",
        "Server CA certificate",
        "Base64 of a PEM CA certificate, only for a self-hosted server whose certificate a public CA did not sign.",
    ),
]


class ConnectorError(Exception):
    """A failure told in one line. `setting` is the configuration key to check (None when no setting is at
    fault); the message starts with it, so a user reading only the line knows where to look."""

    def __init__(self, setting: str | None, message: str):
        super().__init__(f"{setting}: {message}" if setting else message)
        self.setting, self.message = setting, message


class ConfigurationError(ConnectorError, ValueError):
    """A configuration value is missing or malformed."""


class SourceError(ConnectorError, RuntimeError):
    """RavenDB refused or failed a request."""


class TransientSourceError(SourceError):
    """A failure that may pass: connection refused or reset, node down, timeout. Retried mid-sync."""


class ClientCertificate(NamedTuple):
    """The client certificate and key as one unencrypted PEM, ready for the ravendb client."""

    pem: bytes
    subject: str
    not_after: datetime

    def __repr__(self) -> str:  # crash reports print locals: never the key
        return f"ClientCertificate(subject={self.subject!r}, not_after={self.not_after.isoformat()}, pem=<hidden>)"


class Settings(NamedTuple):
    urls: tuple[str, ...]
    database: str
    certificate: ClientCertificate | None
    server_ca_pem: bytes | None
    collections: tuple[str, ...]  # empty: every user collection of the database
    batch_size: int
    reconcile_every: timedelta | None  # None: no reconciliation of deletes
    progress_seconds: float = _DEFAULT_PROGRESS_SECONDS


def _fails_in_one_line(entry_point: Callable) -> Callable:
    """Let a ConfigurationError or SourceError end the call as its one-line message and nothing else.

    The error is raised again outside the handler, so no traceback or crash report carries the frames (and
    their locals, such as decoded certificates) where it arose. In update() it goes through op.error, which the
    SDK prints as one line.
    """

    @functools.wraps(entry_point)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return entry_point(*args, **kwargs)
        except ConnectorError as exc:
            error = type(exc)(exc.setting, exc.message)  # a fresh exception: no frames, no cause, no context
        if entry_point.__name__ == "update":
            op.error(str(error))
        raise error

    return run


def validate_configuration(configuration: dict) -> Settings:
    """Parse and check every setting before any I/O; raise ConfigurationError naming the first bad one."""
    urls = _parse_urls(_required(configuration, "ravendb_urls"))
    database = _required(configuration, "database_name")
    if not _DATABASE_NAME.fullmatch(database):
        raise ConfigurationError(
            "database_name",
            f"{database!r} is not a RavenDB database name (expected 1-128 letters, digits, '_', '-' or '.')",
        )
    secure = urls[0].startswith("https://")
    certificate_text = _optional(configuration, "certificate_base64")
    password = _optional(configuration, "certificate_password")
    if secure and certificate_text is None:
        raise ConfigurationError(
            "certificate_base64", "required for https:// URLs (base64 of the client certificate PEM or PFX)"
        )
    if not secure and certificate_text is not None:
        raise ConfigurationError(
            "certificate_base64", "a client certificate needs https:// in ravendb_urls, which use http://"
        )
    certificate = _parse_certificate(certificate_text, password) if certificate_text else None
    server_ca_text = _optional(configuration, "server_ca_base64")
    server_ca = _parse_server_ca(server_ca_text) if server_ca_text else None
    return Settings(
        urls=urls,
        database=database,
        certificate=certificate,
        server_ca_pem=server_ca,
        collections=_parse_collections(_optional(configuration, "collection_name")),
        batch_size=_parse_batch_size(_optional(configuration, "batch_size")),
        reconcile_every=_parse_reconcile_hours(_optional(configuration, "reconcile_deletes_hours")),
        progress_seconds=_parse_progress_seconds(_optional(configuration, "progress_log_seconds")),
    )


@_fails_in_one_line
def schema(configuration: dict) -> list[dict]:
    """One table per collection: Id and LastModified, plus the text and JSON columns a sample of documents shows."""
    settings = validate_configuration(configuration)
    with open_store(settings) as store:
        collections = resolve_collections(store, settings, known=())
        return [
            {"table": name, "primary_key": ["Id"], "columns": declare_columns(newest_documents(store, settings, name))}
            for name in collections
        ]


@_fails_in_one_line
def update(configuration: dict, state: dict) -> None:
    """Sync every selected collection from its saved cursor, then checkpoint the final state."""
    settings = validate_configuration(configuration)
    sync_state = SyncState.load(state)
    with open_store(settings) as store:
        collections = resolve_collections(store, settings, known=tuple(sync_state.cursors))
        progress = Progress(settings.progress_seconds, collections)
        deletes = sync_deletes(store, settings, list(collections), sync_state)
        for collection in collections:
            sync_collection(store, settings, collection, sync_state, progress)
            if reconciliation_due(settings, sync_state, collection, datetime.now(timezone.utc)):
                reconcile_deletes(store, settings, collection, sync_state)
    if sync_state.changed_since_saved():
        checkpoint(sync_state)
    progress.finished(deletes)


def configuration_form() -> ConfigurationForm:
    """The setup form: every setting with its help text, secrets masked, and a four-step connection test."""
    form = ConfigurationForm()
    for setting in _FORM_FIELDS:
        kind = form_field.TextField.password if setting.secret else form_field.TextField.plain_text
        form.add_field(
            form_field.TextField(
                setting.name, setting.label, kind, description=setting.description, required=setting.required
            )
        )
    form.add_test(label="Connect to RavenDB and read the collections", func=connection_test)
    return form


def connection_test(configuration: dict) -> Any:
    """Check, in order: the settings, URL reachability, TLS and the certificate, the database, the collections.

    The first request to the database proves TLS, the certificate and the database at once; which of them
    failed is told by the setting its error names.
    """
    step = "settings"
    try:
        settings = validate_configuration(configuration)
        step = "URL reachability"
        _check_reachable(settings.urls)
        with open_store(settings) as store:
            step = "TLS and client certificate"
            collections = resolve_collections(store, settings, known=())
            step = "read access to the collections"
            for collection in collections:
                _read_one(store, settings, collection)
    except ConnectorError as exc:
        step = _CONNECTION_STEP_BY_SETTING.get(exc.setting, step) if step != "settings" else step
        return Test.failure(f"{step} failed: {exc}")
    return Test.success()


# ----------------------------------------------------------------------------------------------------------
# Configuration parsing (pure)


def _required(configuration: dict, key: str) -> str:
    value = _optional(configuration, key)
    if value is None:
        raise ConfigurationError(key, "required setting is missing or empty")
    return value


def _optional(configuration: dict, key: str) -> str | None:
    value = configuration.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigurationError(key, f"expected a string, got {type(value).__name__}")
    return value.strip() or None


def _parse_urls(text: str) -> tuple[str, ...]:
    urls = tuple(part.strip().rstrip("/") for part in text.split(","))
    for url in urls:
        _check_url(url)
    if len({url.split("://", 1)[0] for url in urls}) > 1:
        raise ConfigurationError("ravendb_urls", "mixes http:// and https:// URLs; a cluster uses one scheme")
    if len(set(urls)) != len(urls):
        raise ConfigurationError("ravendb_urls", "lists the same URL twice")
    return urls


def _check_url(url: str) -> None:
    expected = "expected http(s)://host[:port], comma-separated for a cluster"
    if not url:
        raise ConfigurationError("ravendb_urls", f"contains an empty entry ({expected})")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigurationError("ravendb_urls", f"{url!r} is not a valid URL ({exc}; {expected})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError("ravendb_urls", f"{url!r} is not a valid URL ({expected})")
    if parts.path or parts.query or parts.fragment or parts.username or port == 0:
        raise ConfigurationError("ravendb_urls", f"{url!r} has more than scheme, host and port ({expected})")


def _parse_collections(text: str | None) -> tuple[str, ...]:
    if text is None:
        return ()
    names = tuple(name.strip() for name in text.split(","))
    for name in names:
        if not name:
            raise ConfigurationError("collection_name", "contains an empty name (expected Name1,Name2,...)")
        if name.startswith("@"):
            raise ConfigurationError("collection_name", f"{name!r} is a RavenDB system collection")
        if any(ord(char) < 0x20 or ord(char) == 0x7F for char in name):
            raise ConfigurationError("collection_name", f"{name!r} contains control characters")
    if len({name.lower() for name in names}) != len(names):
        raise ConfigurationError("collection_name", "lists a collection twice (names are case-insensitive)")
    return names


def _parse_batch_size(text: str | None) -> int:
    if text is None:
        return _DEFAULT_BATCH_SIZE
    try:
        value = int(text)
    except ValueError:
        raise ConfigurationError("batch_size", f"{text!r} is not an integer") from None
    if not 1 <= value <= _MAX_BATCH_SIZE:
        raise ConfigurationError("batch_size", f"{value} is out of range (expected 1 to {_MAX_BATCH_SIZE})")
    return value


def _parse_reconcile_hours(text: str | None) -> timedelta | None:
    if text is None:
        return None
    try:
        hours = float(text)
    except ValueError:
        raise ConfigurationError("reconcile_deletes_hours", f"{text!r} is not a number of hours") from None
    if not math.isfinite(hours) or hours < 0 or 0 < hours < 0.01:
        raise ConfigurationError("reconcile_deletes_hours", f"{text!r} is out of range (expected 0 = off, or >= 0.01)")
    return timedelta(hours=hours) if hours else None


def _parse_progress_seconds(text: str | None) -> float:
    if text is None:
        return _DEFAULT_PROGRESS_SECONDS
    try:
        seconds = float(text)
    except ValueError:
        raise ConfigurationError("progress_log_seconds", f"{text!r} is not a number of seconds") from None
    if not math.isfinite(seconds) or not 0.01 <= seconds <= _MAX_PROGRESS_SECONDS:
        raise ConfigurationError(
            "progress_log_seconds", f"{text!r} is out of range (expected 0.01 to {_MAX_PROGRESS_SECONDS:.0f})"
        )
    return seconds


def _decode_base64(key: str, text: str) -> bytes:
    """Line breaks and the `-----BEGIN/END CERTIFICATE-----` lines Windows' `certutil -encode` adds are ignored."""
    compact = "".join(line.strip() for line in text.splitlines() if not line.lstrip().startswith("-----"))
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigurationError(key, "not valid base64 (expected the base64 of a certificate file)") from None


def _parse_certificate(text: str, password: str | None) -> ClientCertificate:
    """Accept a PEM (certificate + key, optional chain) or a PFX/PKCS#12, told apart by content."""
    data = _decode_base64("certificate_base64", text)
    secret = password.encode() if password is not None else None
    if b"-----BEGIN" in data:
        key, certificates = _load_pem(data, secret)
    elif data[:1] == b"\x30":
        key, certificates = _load_pfx(data, secret)
    else:
        raise ConfigurationError("certificate_base64", "decodes to neither a PEM nor a PFX/PKCS#12 file")
    if key is None:
        raise ConfigurationError("certificate_base64", "holds no private key (expected certificate and key)")
    if not certificates:
        raise ConfigurationError("certificate_base64", "holds no certificate (expected certificate and key)")
    leaf = _certificate_for_key(key, certificates)
    _check_validity(leaf)
    chain = [leaf, *(certificate for certificate in certificates if certificate != leaf)]
    pem = b"".join(certificate.public_bytes(serialization.Encoding.PEM) for certificate in chain)
    pem += key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return ClientCertificate(pem=pem, subject=leaf.subject.rfc4514_string(), not_after=leaf.not_valid_after_utc)


def _load_pem(data: bytes, password: bytes | None) -> tuple[Any, list[x509.Certificate]]:
    try:
        certificates = x509.load_pem_x509_certificates(data) if b"CERTIFICATE-----" in data else []
    except ValueError:
        raise ConfigurationError("certificate_base64", "the PEM certificate block is malformed") from None
    match = re.search(rb"-----BEGIN ([A-Z ]*)PRIVATE KEY-----.*?-----END \1PRIVATE KEY-----", data, re.DOTALL)
    if match is None:
        return None, certificates
    encrypted = b"ENCRYPTED" in match.group(0)[:40] or b"Proc-Type: 4,ENCRYPTED" in match.group(0)
    if encrypted and password is None:
        raise ConfigurationError("certificate_password", "the PEM private key is encrypted; a password is required")
    try:
        key = serialization.load_pem_private_key(match.group(0), password if encrypted else None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        if encrypted:
            raise ConfigurationError("certificate_password", "wrong password for the PEM private key") from None
        raise ConfigurationError("certificate_base64", f"the PEM private key cannot be read ({exc})") from None
    return key, certificates


def _load_pfx(data: bytes, password: bytes | None) -> tuple[Any, list[x509.Certificate]]:
    for candidate in (password,) if password is not None else (None, b""):
        try:
            key, leaf, chain = pkcs12.load_key_and_certificates(data, candidate)
        except ValueError:
            continue
        return key, [cert for cert in (leaf, *chain) if cert is not None]
    if password is None:
        raise ConfigurationError(
            "certificate_password", "the PFX file is password-protected (or not a PFX); set certificate_password"
        )
    raise ConfigurationError("certificate_password", "wrong password for the PFX file (or the file is damaged)")


def _certificate_for_key(key: Any, certificates: list[x509.Certificate]) -> x509.Certificate:
    wanted = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    for certificate in certificates:
        found = certificate.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        if found == wanted:
            return certificate
    raise ConfigurationError("certificate_base64", "the private key does not belong to any certificate in the file")


def _check_validity(certificate: x509.Certificate, now: datetime | None = None) -> None:
    now = now or datetime.now(timezone.utc)
    starts, ends = certificate.not_valid_before_utc, certificate.not_valid_after_utc
    if now < starts:
        raise ConfigurationError("certificate_base64", f"the certificate is not valid before {starts.isoformat()}")
    if now > ends:
        raise ConfigurationError("certificate_base64", f"the certificate expired on {ends.isoformat()}")


def _parse_server_ca(text: str) -> bytes:
    data = _decode_base64("server_ca_base64", text)
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ConfigurationError("server_ca_base64", "expected the base64 of a PEM CA certificate") from None
    return b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in certificates)


# ----------------------------------------------------------------------------------------------------------
# Sync state and rows (pure)


class Metadata(NamedTuple):
    """What the connector reads of a document's (or revisions-bin entry's) `@metadata`, parsed once."""

    id: str
    last_modified: str  # RavenDB's 7-digit UTC text, compared as text
    change_vector: str | None
    collection: str | None

    @classmethod
    def of(cls, document: dict) -> "Metadata":
        metadata = document["@metadata"]
        return cls(
            metadata["@id"], metadata["@last-modified"], metadata.get("@change-vector"), metadata.get("@collection")
        )


@dataclass
class CollectionCursor:
    """Where a collection's next read starts: RavenDB's own 7-digit `@last-modified` of the last document upserted,
    and the version (change vector) of each document upserted at exactly that timestamp, which the next read
    (`>=`) skips instead of landing again. A document written again within that same tick has a new change
    vector, so it is read again."""

    since: str = _BEGINNING_OF_TIME
    versions_at_since: dict[str, str] = field(default_factory=dict)  # id -> @change-vector

    def already_synced(self, meta: Metadata) -> bool:
        return meta.last_modified == self.since and self.versions_at_since.get(meta.id) == meta.change_vector

    def advance(self, meta: Metadata) -> None:
        if meta.last_modified != self.since:
            if meta.last_modified < self.since:
                raise SourceError(
                    None, f"RavenDB returned {meta.id} out of @last-modified order ({meta.last_modified})"
                )
            self.since, self.versions_at_since = meta.last_modified, {}
        self.versions_at_since[meta.id] = meta.change_vector or ""


@dataclass
class SyncState:
    """Per-collection cursors and the deletion time of the newest revisions-bin entry handled; and when to save them.

    A checkpoint is due every 1,000 documents upserted, counted across collections (a sync of many small
    collections checkpoints as often as one large collection), and one saves the final state unless the last one
    already did. A sync that fails therefore reads again at most the 999 documents it upserted after its last
    checkpoint, which land again as the same rows.
    """

    cursors: dict[str, CollectionCursor]
    deletes_since: str | None = None
    reconciled_at: dict[str, str] = field(default_factory=dict)  # collection -> ISO time of its last reconciliation
    unsaved_records: int = 0  # handed to Fivetran since the last checkpoint; not part of the saved state
    last_saved: dict | None = field(default=None, repr=False, compare=False)  # what this sync's last checkpoint saved

    def count_record(self) -> bool:
        """One more record handed to Fivetran; True when a checkpoint is due."""
        self.unsaved_records += 1
        return self.unsaved_records >= _CHECKPOINT_EVERY_RECORDS

    def changed_since_saved(self) -> bool:
        """Whether a checkpoint now would save anything the last one of this sync did not."""
        return self.unsaved_records > 0 or self.to_dict() != self.last_saved

    @classmethod
    def load(cls, state: dict | None) -> "SyncState":
        if not state:
            return cls(cursors={})
        cursors, seen = state.get("cursors", {}), state.get("versions_at_cursor", {})
        if state.get("version") != _STATE_VERSION or not isinstance(cursors, dict) or not isinstance(seen, dict):
            raise SourceError(None, f"state: unsupported layout {state!r:.200}; reset the connector to sync again")
        deletes_since = state.get("deletes_since")
        for key, cursor in [*cursors.items(), ("deletes_since", deletes_since or _BEGINNING_OF_TIME)]:
            if not isinstance(cursor, str) or not _LAST_MODIFIED.fullmatch(cursor):
                raise SourceError(None, f"state: cursor of {key!r} is {cursor!r}, not a RavenDB timestamp")
        return cls(
            cursors={name: CollectionCursor(since, dict(seen.get(name, {}))) for name, since in cursors.items()},
            deletes_since=deletes_since,
            reconciled_at=dict(state.get("reconciled_at", {})),
        )

    def cursor(self, collection: str) -> CollectionCursor:
        return self.cursors.setdefault(collection, CollectionCursor())

    def to_dict(self) -> dict:
        state: dict[str, Any] = {
            "version": _STATE_VERSION,
            "cursors": {name: cursor.since for name, cursor in self.cursors.items()},
            "versions_at_cursor": {  # past the cap, the next sync simply reads that timestamp's documents again
                name: dict(cursor.versions_at_since)
                for name, cursor in self.cursors.items()
                if len(cursor.versions_at_since) <= _MAX_VERSIONS_AT_CURSOR
            },
        }
        if self.deletes_since is not None:
            state["deletes_since"] = self.deletes_since
        if self.reconciled_at:
            state["reconciled_at"] = dict(self.reconciled_at)
        return state


def reconciliation_due(settings: Settings, state: SyncState, collection: str, now: datetime) -> bool:
    if settings.reconcile_every is None:
        return False
    last = state.reconciled_at.get(collection)
    return last is None or now - datetime.fromisoformat(last) >= settings.reconcile_every


def flatten(document: dict) -> dict:
    """Turn a RavenDB document into one row: Id, LastModified and its fields, nested objects joined by `_`.

    Values are shaped so the destination types them by their JSON type, without loss: text stays text,
    integers are integers (beyond 64 bits: text), non-integers are exact decimal text (typed DOUBLE, never the
    SDK's 4-byte FLOAT), booleans are `true`/`false`, arrays are JSON.
    """
    meta = Metadata.of(document)
    row: dict[str, Any] = {}
    _flatten_into(row, "", document, _MAX_FLATTEN_DEPTH)
    row["Id"] = meta.id
    row["LastModified"] = parse_last_modified(meta.last_modified)
    return row


def _flatten_into(row: dict, prefix: str, value: dict, depth: int) -> None:
    for key, item in value.items():
        if key[:1] == "@":
            continue
        name = prefix + key
        if isinstance(item, str) or item is None:
            row[name] = item
        elif isinstance(item, dict) and depth > 1:
            _flatten_into(row, name + "_", item, depth - 1)
        else:
            row[name] = _cell(item)


def _cell(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return value if _INT64_MIN <= value <= _INT64_MAX else str(value)
    if isinstance(value, float):
        return _exact_float_text(value)
    return value  # list or (too deep) dict: the SDK sends it as JSON


def _exact_float_text(value: float) -> str | None:
    """The shortest text that reads back as the same double, always with a decimal point (so DOUBLE, not text)."""
    if not math.isfinite(value):
        return None
    text = repr(value)
    if "." in text:
        return text
    mantissa, _, exponent = text.partition("e")
    return f"{mantissa}.0e{exponent}" if exponent else f"{mantissa}.0"


def declare_columns(sample: list[dict]) -> dict[str, str]:
    """Id, LastModified, and STRING or JSON for the fields of the sample whose values would otherwise be mistyped.

    Only types that accept any value are declared, so a later document can never fail the sync: a field with text
    values ("51100", "true") or mixed JSON types becomes STRING, one mixing arrays or objects with others JSON.
    Fields holding only numbers, booleans, RavenDB dates or arrays are left to the destination to type.
    """
    kinds: dict[str, set[str]] = {}
    for document in sample:
        _collect_kinds(kinds, "", document, _MAX_FLATTEN_DEPTH)
    columns = {"Id": "STRING", "LastModified": "UTC_DATETIME"}
    for name, found in sorted(kinds.items()):
        declared = _declared_type(found - {"null"})
        if declared and name not in columns:
            columns[name] = declared
    return columns


def _collect_kinds(kinds: dict[str, set[str]], prefix: str, value: dict, depth: int) -> None:
    for key, item in value.items():
        if key[:1] == "@":
            continue
        name = prefix + key
        if isinstance(item, dict) and depth > 1:
            _collect_kinds(kinds, name + "_", item, depth - 1)
        else:
            kinds.setdefault(name, set()).add(_json_kind(item))


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int" if _INT64_MIN <= value <= _INT64_MAX else "bigint"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "date" if _RAVEN_DATE.fullmatch(value) else "text"
    return "json"


def _declared_type(kinds: set[str]) -> str | None:
    if "json" in kinds:
        return "JSON" if len(kinds) > 1 else None
    if kinds <= {"int", "number"} or kinds in ({"bool"}, {"date"}):
        return None
    return "STRING"


def parse_last_modified(raw: str) -> datetime:
    """RavenDB's `2024-05-01T10:11:12.1234567Z` as an aware UTC datetime, truncated to the microsecond."""
    if len(raw) != 28 or raw[19] != "." or raw[27] != "Z":
        raise SourceError(None, f"RavenDB returned @last-modified {raw!r}, expected yyyy-MM-ddTHH:mm:ss.fffffffZ")
    return datetime.fromisoformat(raw[:26] + "+00:00")


def collection_query(template: str, collection: str, page_size: int | None = None, **parameters: str) -> IndexQuery:
    """One of the constant RQL texts for `collection` (escaped as the client escapes it), values as $parameters."""
    query = IndexQuery(template.format(collection=Utils.escape_collection_name(collection)))
    query.query_parameters = parameters or None
    if page_size is not None:
        query.page_size = page_size
    return query


def changed_since_query(collection: str, since: str) -> IndexQuery:
    return collection_query(_CHANGED_SINCE_RQL, collection, since=since)


# ----------------------------------------------------------------------------------------------------------
# Checkpoints and progress: what a sync saves, and what it tells the log while it runs


def checkpoint(state: SyncState) -> None:
    """Save the state; the records handed to Fivetran before it reach the destination with it."""
    saved = state.to_dict()
    op.checkpoint(saved)
    state.unsaved_records, state.last_saved = 0, saved


class Progress:
    """While a collection streams, at most one line every `every_seconds`: documents done, the collection's document
    count from RavenDB's collection statistics (read once at the start of the sync), percent, rate and time left.
    At the end, one summary line for the sync: collections, documents, deletes, seconds.

    The count is of the whole collection: for an incremental sync, which reads only what changed, the percent is
    low and the time left an upper bound; documents written during the sync can take it past 100%.
    """

    def __init__(self, every_seconds: float, counts: dict[str, int]):
        self.every_seconds, self.counts = every_seconds, counts
        self.started = time.monotonic()
        self.collections = self.documents = 0
        self.collection, self.done, self.collection_started, self.next_line = "", 0, self.started, math.inf

    def start_collection(self, collection: str) -> None:
        self.collections += 1
        self.collection, self.done = collection, 0
        self.collection_started = time.monotonic()
        self.next_line = self.collection_started + self.every_seconds

    def document_done(self) -> None:
        self.done += 1
        self.documents += 1
        now = time.monotonic()
        if now >= self.next_line:
            self.next_line = now + self.every_seconds
            log.info(self._progress_line(now))

    def _progress_line(self, now: float) -> str:
        total = self.counts.get(self.collection, 0)
        rate = self.done / max(now - self.collection_started, 1e-6)
        percent = 100 * self.done / total if total else 100.0
        left = max(total - self.done, 0) / rate
        return (
            f"{self.collection}: {self.done:,} of {total:,} documents ({percent:.0f}%), {rate:,.0f} docs/s, "
            f"about {_duration(left)} left"
        )

    def finished(self, deletes: int) -> None:
        seconds = time.monotonic() - self.started
        log.info(
            f"sync finished: {self.collections} collections, {self.documents:,} documents upserted, "
            f"{deletes:,} deletes, {seconds:.1f} s"
        )


def _duration(seconds: float) -> str:
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


# ----------------------------------------------------------------------------------------------------------
# RavenDB: the only functions that talk to the store


@contextmanager
def open_store(settings: Settings) -> Iterator[DocumentStore]:
    """An initialised DocumentStore; its certificate file exists only inside the block, owner-readable."""
    _check_reachable(settings.urls)
    with _private_files(settings) as (certificate_path, ca_path):
        store = DocumentStore(list(settings.urls), settings.database)
        if certificate_path is not None:
            store.certificate_pem_path = certificate_path
        if ca_path is not None:
            store.trust_store_path = ca_path
        try:
            with _translated_errors(settings):
                store.initialize()
            yield store
        finally:
            store.close()


@contextmanager
def _private_files(settings: Settings) -> Iterator[tuple[str | None, str | None]]:
    _remove_orphaned_private_files()
    with tempfile.TemporaryDirectory(prefix=f"{_PRIVATE_DIR_PREFIX}{os.getpid()}-") as directory:
        certificate_path = _write_private(directory, "client.pem", settings.certificate and settings.certificate.pem)
        ca_path = _write_private(directory, "server-ca.pem", settings.server_ca_pem)
        yield certificate_path, ca_path


def _remove_orphaned_private_files() -> None:
    """Remove what a sync killed outright (SIGKILL, power loss) could not: its owner-only certificate folder."""
    for directory in Path(tempfile.gettempdir()).glob(f"{_PRIVATE_DIR_PREFIX}*-*"):
        pid = directory.name[len(_PRIVATE_DIR_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and directory.owner() == getpass.getuser() and not _process_alive(int(pid)):
            shutil.rmtree(directory, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write_private(directory: str, name: str, content: bytes | None) -> str | None:
    if content is None:
        return None
    path = Path(directory) / name
    path.touch(mode=0o600)
    path.write_bytes(content)
    return str(path)


def _check_reachable(urls: tuple[str, ...]) -> None:
    """Fail fast when no URL accepts a TCP connection; warn about the ones that do not."""
    failures = []
    for url in urls:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            socket.create_connection((parts.hostname, port), timeout=_CONNECT_TIMEOUT_SECONDS).close()
        except OSError as exc:
            failures.append(f"{url} ({exc.strerror or exc})")
    if len(failures) == len(urls):
        raise SourceError("ravendb_urls", f"no server is reachable: {'; '.join(failures)}")
    if failures:
        log.warning(f"ravendb_urls: unreachable, failing over to the other nodes: {'; '.join(failures)}")


def resolve_collections(store: DocumentStore, settings: Settings, known: tuple[str, ...]) -> dict[str, int]:
    """The configured collections, or every user collection, each with its document count from RavenDB's collection
    statistics (one request); a vanished collection is logged, not an error."""
    with _translated_errors(settings):
        statistics = store.maintenance.send(GetCollectionStatisticsOperation())
    present = {name: count for name, count in statistics.collections.items() if not name.startswith("@")}
    if not settings.collections:
        for gone in sorted(set(known) - set(present)):
            log.warning(f"{gone}: collection no longer exists in {settings.database}; its table is kept")
        return {name: present[name] for name in sorted(present)}
    by_lower = {name.lower(): name for name in present}
    selected = {}
    for name in settings.collections:
        actual = by_lower.get(name.lower())
        if actual is not None:
            selected[actual] = present[actual]
        elif name in known:
            log.warning(f"{name}: collection no longer exists in {settings.database}; its table is kept")
        else:
            available = ", ".join(sorted(present)) or "none"
            raise SourceError(
                "collection_name", f"{name!r} does not exist in database {settings.database!r} (has: {available})"
            )
    return selected


def newest_documents(store: DocumentStore, settings: Settings, collection: str) -> list[dict]:
    return list(QueryStream(store, settings, collection_query(_NEWEST_RQL, collection, page_size=_SAMPLE_DOCUMENTS)))


def _read_one(store: DocumentStore, settings: Settings, collection: str) -> None:
    for _ in QueryStream(store, settings, collection_query(_NEWEST_RQL, collection, page_size=1)):
        pass


def sync_collection(
    store: DocumentStore, settings: Settings, collection: str, state: SyncState, progress: Progress
) -> int:
    """Upsert every document of `collection` changed since its cursor, retrying transient failures.

    Its state is saved at the next checkpoint, which comes every 1,000 records across collections (see SyncState)."""
    since = state.cursor(collection).since
    log.info(f"{collection}: sync started from {'the beginning' if since == _BEGINNING_OF_TIME else since}")
    started = time.monotonic()
    progress.start_collection(collection)
    documents = 0
    for attempt in range(1, _MAX_ATTEMPTS + 1):
        try:
            documents += _stream_into_destination(store, settings, collection, state, progress)
            break
        except TransientSourceError as exc:
            if attempt == _MAX_ATTEMPTS:
                raise SourceError(
                    exc.setting, f"{exc.message} ({collection}: gave up after {attempt} attempts)"
                ) from exc
            delay = min(_BACKOFF_CAP_SECONDS, _BACKOFF_FIRST_SECONDS * 2 ** (attempt - 1))
            log.warning(f"{collection}: {exc}; resuming from the cursor in {delay:.0f} s")
            time.sleep(delay)
    seconds = time.monotonic() - started
    log.info(
        f"{collection}: synced {documents} documents in {seconds:.1f} s ({documents / max(seconds, 1e-6):,.0f} docs/s)"
    )
    return documents


def _stream_into_destination(
    store: DocumentStore, settings: Settings, collection: str, state: SyncState, progress: Progress
) -> int:
    """Upsert the documents changed since the cursor. If the index behind the query lagged behind the writes,
    wait for it and read on from the cursor, so that one sync sees every write made before it started."""
    upserted, stale = _upsert_changes(store, settings, collection, state, progress)
    if stale:
        _wait_for_index(store, settings, collection, state.cursor(collection).since)
        upserted += _upsert_changes(store, settings, collection, state, progress)[0]
    return upserted


def _upsert_changes(
    store: DocumentStore, settings: Settings, collection: str, state: SyncState, progress: Progress
) -> tuple[int, bool]:
    cursor = state.cursor(collection)
    stream = QueryStream(store, settings, changed_since_query(collection, cursor.since))
    upserted = 0
    for document in stream:
        meta = Metadata.of(document)
        if cursor.already_synced(meta):
            continue
        op.upsert(collection, flatten(document))
        cursor.advance(meta)
        upserted += 1
        progress.document_done()
        if state.count_record():
            checkpoint(state)
    return upserted, stream.is_stale


def sync_deletes(store: DocumentStore, settings: Settings, collections: list[str], state: SyncState) -> int:
    """Mark deleted the documents that entered the revisions bin since the last sync (newest entries first);
    return how many.

    The first sync only records where the bin stands: its tables start from the documents that exist now.
    """
    first_page = _revisions_bin_page(store, settings, 0)
    if first_page is None:
        return 0  # revisions are not configured: RavenDB keeps no trace of deletes
    if state.deletes_since is None:
        state.deletes_since = Metadata.of(first_page[0]).last_modified if first_page else _BEGINNING_OF_TIME
        return 0
    synced, newest, deleted = set(collections), state.deletes_since, 0
    for entry in _revisions_bin_since(store, settings, first_page, state.deletes_since):
        meta = Metadata.of(entry)
        newest = max(newest, meta.last_modified)
        if meta.collection in synced:
            op.delete(meta.collection, {"Id": meta.id})
            deleted += 1
    state.deletes_since = newest
    if deleted:
        log.info(f"revisions bin: marked {deleted} deleted documents")
    return deleted


def _revisions_bin_since(
    store: DocumentStore, settings: Settings, first_page: list[dict], since: str
) -> Iterator[dict]:
    """Bin entries deleted at or after `since`; the bin lists the newest deletion first."""
    page, start = first_page, 0
    while page:
        for entry in page:
            if Metadata.of(entry).last_modified < since:
                return
            yield entry
        if len(page) < settings.batch_size:
            return
        start += len(page)
        page = _revisions_bin_page(store, settings, start) or []


def _revisions_bin_page(store: DocumentStore, settings: Settings, start: int) -> list[dict] | None:
    """One page of the revisions bin, or None when the database has no revisions configuration."""
    command = GetRevisionsBinEntryCommand(start, settings.batch_size)
    with _translated_errors(settings):
        try:
            store.get_request_executor().execute_command(command)
        except RavenException as exc:  # RavenDB answers 500 RevisionsDisabledException; the client maps it to none
            if "RevisionsDisabledException" in str(exc):
                return None
            raise
    return command.result.results


def reconcile_deletes(store: DocumentStore, settings: Settings, collection: str, state: SyncState) -> None:
    """Mark deleted every row whose document no longer exists, without ever marking a live one.

    op.truncate soft-deletes every row synced before it; each document that exists is then touched again
    (op.update of its Id, or a full upsert if it changed after the cursor). Truncate and touches reach the
    destination together at the next checkpoint, so no live row is ever seen deleted.
    """
    started, documents = time.monotonic(), 0
    cursor = state.cursor(collection)
    op.truncate(collection)
    for document in QueryStream(store, settings, collection_query(_ALL_DOCUMENTS_RQL, collection)):
        meta = Metadata.of(document)
        if meta.last_modified <= cursor.since:
            op.update(collection, {"Id": meta.id})
        else:
            op.upsert(collection, flatten(document))
        documents += 1
    state.reconciled_at[collection] = datetime.now(timezone.utc).isoformat()
    checkpoint(state)
    log.info(f"{collection}: reconciled deletes against {documents} documents in {time.monotonic() - started:.1f} s")


def _wait_for_index(store: DocumentStore, settings: Settings, collection: str, since: str) -> None:
    """Let the auto index behind the query catch up, so one sync reads every write made before it started."""
    rql = changed_since_query(collection, since).query
    timeout = timedelta(seconds=_INDEX_WAIT_SECONDS)
    with store.open_session() as session, _translated_errors(settings):
        query = session.advanced.raw_query(rql).add_parameter("since", since)
        try:
            list(query.wait_for_non_stale_results(timeout).take(0))
        except TimeoutError:
            log.warning(f"{collection}: index still stale after {timeout}; later writes follow next sync")


class QueryStream:
    """The documents of a query, streamed as JSON lines and parsed by the client's own JSONL parser.

    Not the session's stream(): that deep-copies every document and may import the Python class a document
    names in its metadata.
    """

    def __init__(self, store: DocumentStore, settings: Settings, query: IndexQuery):
        self.store, self.settings, self.query = store, settings, query
        self.is_stale = False  # known once iteration has begun

    def __iter__(self) -> Iterator[dict]:
        command = QueryStreamCommand(self.store.conventions, self.query)
        with _translated_errors(self.settings):
            self.store.get_request_executor().execute_command(command)
        response = command.result.response
        try:
            parser = JSONLRavenStreamParser(response.iter_lines(chunk_size=_STREAM_READ_BYTES))
            with _translated_errors(self.settings):
                self.is_stale = bool(parser.next_query_statistics().get("IsStale"))
                while True:
                    try:
                        yield parser.next_item()
                    except StopIteration:
                        return
        finally:
            response.close()


@contextmanager
def _translated_errors(settings: Settings) -> Iterator[None]:
    """Turn the client's exceptions into one-line errors that name the setting to check.

    Connection-level failures become TransientSourceError, which a sync retries; the rest are final.
    """
    urls = ", ".join(settings.urls)
    try:
        yield
    except AuthorizationException as exc:
        raise SourceError(
            "certificate_base64",
            f"{urls} rejected the client certificate for database {settings.database!r} "
            "(unknown to the cluster, expired, or without access to this database)",
        ) from exc
    except DatabaseDoesNotExistException as exc:
        raise SourceError("database_name", f"database {settings.database!r} does not exist on {urls}") from exc
    except (RavenException, AllTopologyNodesDownException, requests.RequestException) as exc:
        raise _classified(exc, urls) from exc


def _classified(exc: Exception, urls: str) -> SourceError:
    # With several nodes the client folds each node's failure into the text of one exception: read the text.
    text = _failure_text(exc)
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return SourceError(
            "ravendb_urls",
            f"TLS with {urls} failed: the server certificate is not trusted "
            "(for a server certificate from a private CA, set server_ca_base64)",
        )
    if "WRONG_VERSION_NUMBER" in text.upper():
        return SourceError("ravendb_urls", f"{urls} does not speak TLS on this port; use http:// for such a server")
    if "SSLError" in text or isinstance(exc, requests.exceptions.SSLError):
        return SourceError("ravendb_urls", f"TLS handshake with {urls} failed: {_last_line(text)}")
    if isinstance(exc, RavenException) and not isinstance(exc.cause, requests.RequestException):
        return SourceError(None, f"RavenDB at {urls} refused a request: {_first_line(text)}")
    hint = ""
    if "RemoteDisconnected" in text and urls.startswith("http://"):
        hint = " (a server that only speaks TLS answers http:// like this: use https://)"
    return TransientSourceError("ravendb_urls", f"request to {urls} failed: {_first_line(text)}{hint}")


def _failure_text(exc: BaseException) -> str:
    chain, seen = [], set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append(f"{type(current).__name__}: {current}")
        current = getattr(current, "cause", None) or current.__cause__ or current.__context__
    return "\n".join(chain)


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), text)


def _last_line(text: str) -> str:
    return next((line.strip() for line in reversed(text.splitlines()) if line.strip()), text)


connector = Connector(update=update, schema=schema, configuration_form=configuration_form)

if __name__ == "__main__":
    with open("configuration.json", encoding="utf-8") as configuration_file:
        connector.debug(configuration=json.load(configuration_file))

"""Fivetran Connector SDK connector that syncs RavenDB collections into a Fivetran destination.

Each collection becomes one table keyed by the document id. A collection's first sync reads it whole (new small
collections together, in one stream of the whole database; larger ones one by one, ordered by
`@metadata.'@last-modified'`). Every later sync reads the changes of every collection in one query of the whole
database (`from @all_docs`, one auto index, one cursor), ordered by `@metadata.'@last-modified'` from the cursor
saved in the state; when `collection_name` lists at most 10 collections, each by its own query instead. Each
document is flattened into a row and upserted, checkpointing every 1,000 records (counted across collections) and
at the end. Documents deleted from collections with revisions enabled are read from the revisions bin and marked
deleted. Arrays named by the `child_tables` setting land as tables of their own, one row per element.

A cursor is RavenDB's own 7-digit `@last-modified` string, and the query reads `>=` it. It moves only to
documents no newer than the moment the server began the query, less `lookback_seconds`, and to that moment once
the read has ended: RavenDB returns each document's current version at its indexed place, so later writes may come
back out of order or not at all, and a cluster node may receive another node's write late with its original
timestamp. Documents past that point are upserted and read again next sync; the versions kept in the state (a
short hash of id and change vector each) keep an unchanged one from landing twice.
"""

import base64
import binascii
import decimal
import functools
import getpass
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import re
import shutil
import socket
import tempfile
import time
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote, urlsplit

import requests
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from fivetran_connector_sdk import ConfigurationForm, Connector, Test, form_field
from fivetran_connector_sdk import Logging as log
from fivetran_connector_sdk import Operations as op
from ravendb import DocumentStore
from ravendb.documents.commands.query import QueryCommand
from ravendb.documents.commands.revisions import GetRevisionsBinEntryCommand
from ravendb.documents.commands.stream import QueryStreamCommand, StreamCommand
from ravendb.documents.operations.statistics import GetCollectionStatisticsOperation, GetStatisticsOperation
from ravendb.documents.queries.index_query import IndexQuery
from ravendb.exceptions.exceptions import (
    AllTopologyNodesDownException,
    AuthorizationException,
    DatabaseDoesNotExistException,
    RequestedNodeUnavailableException,
)
from ravendb.exceptions.raven_exceptions import RavenException
from ravendb.http.raven_command import RavenCommand
from ravendb.tools.parsers import JSONLRavenStreamParser
from ravendb.tools.utils import Utils

__version__ = "1.0.0"  # named in the first log line of every sync

# Settings: limits and defaults (the settings table, _SETTINGS, uses them)
_DEFAULT_BATCH_SIZE = 1_000  # records per revisions-bin request; collections are streamed, not paged
_MAX_BATCH_SIZE = 100_000
_DEFAULT_PROGRESS_SECONDS = 30.0  # while a collection streams, at most one progress line this often
_MAX_PROGRESS_SECONDS = 3600.0
_DEFAULT_LOOKBACK_SECONDS = 60
_MAX_LOOKBACK_SECONDS = 7 * 24 * 3600
_DATABASE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}")
_CONNECTION_STEP_BY_SETTING = {"database_name": "database", "collection_name": "read access to the collections"}

# Certificates
_PRIVATE_DIR_PREFIX = "ravendb-connector-"  # + pid: the owner-only temporary folder of the client certificate

# State
_STATE_VERSION = 3  # versions 1 and 2 (each document's version kept as text) are read and upgraded
_BEGINNING_OF_TIME = "0001-01-01T00:00:00.0000000Z"
_LAST_MODIFIED = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{7}Z")
_VERSION_HASH_BYTES = 6  # bytes of the hash of (id, change vector) the state keeps per document read again next sync

# Rows, types and names
_MAX_FLATTEN_DEPTH = 10  # object levels flattened into columns; deeper objects land as one JSON value
_COLUMN_BUDGET = 500  # columns a table's nested objects may take; past it an object lands as one JSON value
_MAX_NAME_LENGTH = 120  # characters of a table or column name (Redshift takes 127)
_CONNECTOR_COLUMNS = ("id", "last_modified")  # Id and LastModified as Fivetran names them: never a field's column
_PLAIN_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]*")
_NOT_A_WORD_CHARACTER = re.compile(r"[^A-Za-z0-9_]")
_WORD_BREAK = re.compile(r"(?<=[a-z])(?=[A-Z])|(?<=[0-9])(?=[^0-9])|(?<=[^0-9])(?=[0-9])")
_UNDERSCORES = re.compile(r"_+")
_LEADING_UNDERSCORES = re.compile(r"^_+(?=[a-z])")
# Keys that are data rather than names: RavenDB ids (`products/1-A`), dates, numbers, GUIDs.
_DATA_LIKE_KEY = re.compile(r"[^/]*/.*|[0-9][0-9.:/ TZ+-]*|[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")
# Latin letters for the Cyrillic and Greek alphabets (a common romanisation, without diacritics) and for the Latin
# letters that have no accent to drop.
_TRANSLITERATION = {
    **dict(zip("абвгдеёзийклмнопрстуфыэ", "abvgdeezijklmnoprstufye", strict=True)),
    **dict(zip("αβγδεζηικλμνξοπρσςτυφω", "abgdeziiklmnxoprsstyfo", strict=True)),
    **{"ж": "zh", "х": "kh", "ц": "ts", "ч": "ch", "ш": "sh", "щ": "shch", "ъ": "", "ь": "", "ю": "yu", "я": "ya"},
    **{"і": "i", "ї": "yi", "є": "ye", "ґ": "g", "θ": "th", "χ": "ch", "ψ": "ps"},
    **{"ß": "ss", "æ": "ae", "œ": "oe", "ø": "o", "þ": "th", "ð": "d", "đ": "d", "ł": "l", "ı": "i"},
}
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_SMALLEST_NORMAL_DOUBLE = 2.2250738585072014e-308
_RAVEN_DATE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,7})?)?(Z|[+-]\d{2}:\d{2})?")

# Child tables
_MAX_CHILD_TABLE_DEPTH = 2  # array levels that become tables (child, grandchild); deeper arrays stay JSON

# Reading RavenDB
_STREAM_READ_BYTES = 1 << 16  # bytes per socket read of a stream (the client's default is 512)
_CONNECT_TIMEOUT_SECONDS = 5.0
_INDEX_WAIT_SECONDS = 120.0  # how long a sync waits for a stale auto index to catch up before reading on
_INDEX_WAIT_SLICE_SECONDS = 15.0  # one wait request; a progress line is logged after each that ends still stale
_PER_COLLECTION_READS = 10  # at most this many configured collections may be read one query each (reads_database)
_SMALL_COLLECTION = 1_000  # documents: new collections this small are read together, in one read of the database
_MAX_READ_TOGETHER = 50_000  # documents of the collections read (or sampled) together in one read of the database
_ALL_DOCUMENTS_STREAM = "streams/docs?format=jsonl"  # every document of the database, newest etag first
_SAMPLE_DOCUMENTS = 500  # newest documents per collection that schema() reads to declare text columns
# Every query the connector sends is one of these constant texts. The collection is the one part RQL cannot take
# as a parameter: it is escaped exactly as the ravendb client escapes it (Utils.escape_collection_name).
_CHANGED_SINCE_RQL = (
    "from '{collection}' where @metadata.'@last-modified' >= $since order by @metadata.'@last-modified'"
)
_ALL_DOCUMENTS_RQL = "from '{collection}'"  # a collection query: read from storage, no index, never stale
# Every collection at once: one auto index over the whole database, Auto/AllDocs/By@metadata.@last-modified.
_DATABASE_CHANGED_SINCE_RQL = (
    "from @all_docs where @metadata.'@last-modified' >= $since order by @metadata.'@last-modified'"
)

# The sync itself: retries of transient failures
_MAX_ATTEMPTS = 5
_BACKOFF_FIRST_SECONDS = 1.0
_BACKOFF_CAP_SECONDS = 30.0

# Checkpoints
_CHECKPOINT_EVERY_RECORDS = 1_000


# ----------------------------------------------------------------------------------------------------------
# Entry points: schema() and update(), the setup form and its connection test


def _version_line() -> str:
    """What this sync runs on, in one line: the connector, the libraries production installs or provides, Python.

    Fivetran installs requirements.txt next to the SDK and requests it provides, and pip may replace the
    provided requests (README, "Dependencies"); this line says which versions a sync actually ran with.
    """
    versions = []
    for distribution in ("ravendb", "requests", "cryptography", "fivetran-connector-sdk"):
        try:
            versions.append(f"{distribution} {importlib.metadata.version(distribution)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{distribution} not installed")
    versions.append(f"Python {platform.python_version()}")
    return f"RavenDB connector {__version__} on " + ", ".join(versions)


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


@_fails_in_one_line
def schema(configuration: dict) -> list[dict]:
    """One table per collection: Id and LastModified, plus the text and JSON columns a sample of documents shows;
    and one per child-table array, keyed by the document Id and the element's index."""
    settings = validate_configuration(configuration)
    tables = []
    with open_store(settings) as store:
        selection = resolve_collections(store, settings, known=())
        collections = selection.counts
        wants_newest = settings.child_tables.every or not settings.type_from_every_document
        for name, newest in newest_samples(store, settings, selection, wanted=wants_newest):
            paths = settings.child_tables.paths_of(name, newest, collections)
            if settings.type_from_every_document:
                sample: Callable[[], Iterable[dict]] = functools.partial(every_document, store, settings, name)
            else:
                sample = functools.partial(list, newest)
            tables += declare_tables(name, child_tables(name, paths), sample)
    return tables


@_fails_in_one_line
def update(configuration: dict, state: dict) -> None:
    """Sync every selected collection from its saved cursor, then checkpoint the final state."""
    log.info(_version_line())
    settings = validate_configuration(configuration)
    sync_state = SyncState.load(state)
    sync_state.checkpoints.loaded = state
    with open_store(settings) as store:
        selection = resolve_collections(store, settings, known=sync_state.known())
        collections = selection.counts
        select_child_tables(store, settings, selection, sync_state)
        progress = Progress(settings.progress_seconds, collections)
        deletes = sync_deletes(store, settings, list(collections), sync_state)
        database_wide = reads_database(settings, selection)
        together = read_together(selection, sync_state)
        if together:
            sync_new_collections(store, settings, together, selection.documents, sync_state, progress)
        if not database_wide:
            sync_state.leave_database(collections)
        alone = [name for name in collections if name not in together and not sync_state.joined(name)]
        for collection in alone:  # every collection, or those the database's read does not cover yet
            sync_collection(store, settings, collection, sync_state, progress)
        if database_wide:
            sync_database(store, settings, list(collections), [*together, *alone], sync_state, progress)
        now = datetime.now(timezone.utc)
        due = [collection for collection in collections if reconciliation_due(settings, sync_state, collection, now)]
        if due:
            reconcile_deletes(store, settings, due, sync_state, progress)
    sync_state.checkpoints.save_if_changed(nothing_read=progress.read == 0)
    saved = sync_state.checkpoints.last_saved
    progress.finished(deletes, None if saved is None else len(json.dumps(saved, separators=(",", ":"))))


def configuration_form() -> ConfigurationForm:
    """The setup form: every setting with its help text, secrets masked, and a four-step connection test."""
    form = ConfigurationForm()
    for setting in _SETTINGS:
        kind = form_field.TextField.password if setting.secret else form_field.TextField.plain_text
        form.add_field(
            form_field.TextField(
                setting.key, setting.label, kind, description=setting.description, required=setting.required
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
            collections = resolve_collections(store, settings, known=()).counts
            step = "read access to the collections"
            for collection in collections:
                _read_one(store, settings, collection)
    except ConnectorError as exc:
        step = _CONNECTION_STEP_BY_SETTING.get(exc.setting, step) if step != "settings" else step
        return Test.failure(f"{step} failed: {exc}")
    return Test.success()


# ----------------------------------------------------------------------------------------------------------
# Errors: one-line failures that name the setting to check


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


# ----------------------------------------------------------------------------------------------------------
# Settings: the one table of settings; the form, validate_configuration and configuration.json.example follow it


class _Setting(NamedTuple):
    """One setting: its field in the setup form, its value in configuration.json.example, and how it is read.

    `parse` takes the setting's text (its `default` when empty; None when it has none) and a function that gives
    another setting's parsed value, for the settings read together (the certificate needs the URLs' scheme and
    the password; child tables need the collections)."""

    key: str
    label: str
    description: str
    example: str
    parse: Callable[[str | None, Callable[[str], Any]], Any]
    required: bool = False
    secret: bool = False
    default: str | None = None


_SETTINGS = (
    _Setting(
        "ravendb_urls",
        "RavenDB URLs",
        "One URL, or the comma-separated URLs of a cluster's nodes.",
        "https://a.myorg.ravendb.cloud,https://b.myorg.ravendb.cloud",
        lambda text, value: _parse_urls(text),
        required=True,
    ),
    _Setting(
        "database_name",
        "Database",
        "The database to sync.",
        "Northwind",
        lambda text, value: _parse_database(text),
        required=True,
    ),
    _Setting(
        "certificate_base64",
        "Client certificate",
        "Base64 of the client certificate: the .pfx from the RavenDB Cloud portal, or a PEM with certificate and "
        "key. Required for https://.",
        "<base64 of the client .pfx or of a PEM with certificate and private key>",
        lambda text, value: _parse_client_certificate(text, value("ravendb_urls"), value("certificate_password")),
        secret=True,
    ),
    _Setting(
        "certificate_password",
        "Certificate password",
        "Only for a protected .pfx or encrypted PEM key.",
        "",
        lambda text, value: text,
        secret=True,
    ),
    _Setting(
        "collection_name",
        "Collections",
        "Comma-separated collections; empty: every collection.",
        "",
        lambda text, value: _parse_collections(text),
    ),
    _Setting(
        "batch_size",
        "Batch size",
        f"Revisions-bin records per request (default {_DEFAULT_BATCH_SIZE}); collections are streamed whole.",
        f"{_DEFAULT_BATCH_SIZE}",
        lambda text, value: _parse_batch_size(text),
        default=f"{_DEFAULT_BATCH_SIZE}",
    ),
    _Setting(
        "reconcile_deletes_hours",
        "Reconcile deletes every (hours)",
        "Without revisions: every so many hours, mark deleted the rows whose documents no longer exist "
        "(reads every document of the collection; see README). Empty or 0: off.",
        "",
        lambda text, value: _parse_reconcile_hours(text),
    ),
    _Setting(
        "progress_log_seconds",
        "Progress log every (seconds)",
        f"While a collection streams, log progress at most this often (default {_DEFAULT_PROGRESS_SECONDS:g}).",
        f"{_DEFAULT_PROGRESS_SECONDS:g}",
        lambda text, value: _parse_seconds("progress_log_seconds", text, 0.01, _MAX_PROGRESS_SECONDS),
        default=f"{_DEFAULT_PROGRESS_SECONDS:g}",
    ),
    _Setting(
        "child_tables",
        "Child tables",
        "Arrays of objects as tables of their own, one row per element: * for all, or comma-separated "
        "Collection.Field paths (Orders.Lines; Orders.Lines.Batches beside it for a grandchild). "
        "Empty: arrays stay JSON.",
        "",
        lambda text, value: _parse_child_tables(text, value("collection_name")),
    ),
    _Setting(
        "type_from_every_document",
        "Type fields from every document",
        "true: each sync's schema step reads every document, so text in old documents is declared STRING (one "
        "extra read of every collection per sync; see README). Empty or false: the 500 newest documents.",
        "false",
        lambda text, value: _parse_flag("type_from_every_document", text),
        default="false",
    ),
    _Setting(
        "lookback_seconds",
        "Lookback (seconds)",
        "How late a write may reach the node read and still be synced: replication delay and clock skew between "
        f"nodes (default {_DEFAULT_LOOKBACK_SECONDS}). Each sync re-reads the documents changed in this window.",
        f"{_DEFAULT_LOOKBACK_SECONDS}",
        lambda text, value: timedelta(seconds=_parse_seconds("lookback_seconds", text, 0, _MAX_LOOKBACK_SECONDS)),
        default=f"{_DEFAULT_LOOKBACK_SECONDS}",
    ),
    _Setting(
        "server_ca_base64",
        "Server CA certificate",
        "Base64 of a PEM CA certificate, only for a self-hosted server whose certificate a public CA did not sign.",
        "",
        lambda text, value: _parse_server_ca(text) if text else None,
    ),
)


class Settings(NamedTuple):
    """The configuration as parsed: what the rest of the connector reads (the key of each in _SETTINGS)."""

    urls: tuple[str, ...]  # ravendb_urls
    database: str  # database_name
    certificate: "ClientCertificate | None"  # certificate_base64 (and certificate_password)
    server_ca_pem: bytes | None  # server_ca_base64
    collections: tuple[str, ...]  # collection_name; empty: every user collection of the database
    batch_size: int  # batch_size
    reconcile_every: timedelta | None  # reconcile_deletes_hours; None: no reconciliation of deletes
    lookback: timedelta  # lookback_seconds: how far behind the read's start on the server clock the cursor stays
    child_tables: "ChildTableSelection"  # child_tables
    type_from_every_document: bool  # type_from_every_document: schema() reads every document, not the newest 500
    progress_seconds: float  # progress_log_seconds


def validate_configuration(configuration: dict) -> Settings:
    """Parse and check every setting of _SETTINGS before any I/O, in the table's order (a setting that another
    one needs is parsed when it is asked for); raise ConfigurationError naming the first bad one."""
    values: dict[str, Any] = {}

    def value(key: str) -> Any:
        if key not in values:
            setting = _SETTING_BY_KEY[key]
            values[key] = setting.parse(_setting_text(configuration, setting), value)
        return values[key]

    for setting in _SETTINGS:
        value(setting.key)
    return Settings(
        urls=values["ravendb_urls"],
        database=values["database_name"],
        certificate=values["certificate_base64"],
        server_ca_pem=values["server_ca_base64"],
        collections=values["collection_name"],
        batch_size=values["batch_size"],
        reconcile_every=values["reconcile_deletes_hours"],
        lookback=values["lookback_seconds"],
        child_tables=values["child_tables"],
        type_from_every_document=values["type_from_every_document"],
        progress_seconds=values["progress_log_seconds"],
    )


_SETTING_BY_KEY = {setting.key: setting for setting in _SETTINGS}


def _setting_text(configuration: dict, setting: _Setting) -> str | None:
    """The setting's text, stripped; its default when missing or empty (None when it has none)."""
    value = configuration.get(setting.key)
    if value is not None and not isinstance(value, str):
        raise ConfigurationError(setting.key, f"expected a string, got {type(value).__name__}")
    text = value.strip() if value is not None else ""
    if not text and setting.required:
        raise ConfigurationError(setting.key, "required setting is missing or empty")
    return text or setting.default


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


def _parse_database(text: str) -> str:
    if not _DATABASE_NAME.fullmatch(text):
        raise ConfigurationError(
            "database_name",
            f"{text!r} is not a RavenDB database name (expected 1-128 letters, digits, '_', '-' or '.')",
        )
    return text


def _parse_client_certificate(
    text: str | None, urls: tuple[str, ...], password: str | None
) -> "ClientCertificate | None":
    secure = urls[0].startswith("https://")
    if secure and text is None:
        raise ConfigurationError(
            "certificate_base64", "required for https:// URLs (base64 of the client certificate PEM or PFX)"
        )
    if not secure and text is not None:
        raise ConfigurationError(
            "certificate_base64", "a client certificate needs https:// in ravendb_urls, which use http://"
        )
    return _parse_certificate(text, password) if text else None


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


def _parse_batch_size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ConfigurationError("batch_size", f"{text!r} is not an integer") from None
    if not 1 <= value <= _MAX_BATCH_SIZE:
        raise ConfigurationError("batch_size", f"{value} is out of range (expected 1 to {_MAX_BATCH_SIZE})")
    return value


def _parse_flag(key: str, text: str) -> bool:
    if text.lower() == "false":
        return False
    if text.lower() == "true":
        return True
    raise ConfigurationError(key, f"{text!r} is neither true nor false")


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


def _parse_seconds(key: str, text: str, low: float, high: float) -> float:
    """A number of seconds from `low` to `high`."""
    try:
        seconds = float(text)
    except ValueError:
        raise ConfigurationError(key, f"{text!r} is not a number of seconds") from None
    if not math.isfinite(seconds) or not low <= seconds <= high:
        raise ConfigurationError(key, f"{text!r} is out of range (expected {low:g} to {high:g} seconds)")
    return seconds


def _parse_child_tables(text: str | None, collections: tuple[str, ...]) -> "ChildTableSelection":
    """`*`, or `Collection.Key[.Key...]` paths to arrays, through nested objects; a path inside another listed
    path's elements (`Orders.Lines.Batches` beside `Orders.Lines`) is a grandchild table."""
    if text is None:
        return ChildTableSelection()
    if text == "*":
        return ChildTableSelection(every=True)
    expected = "expected * or Collection.Field paths such as Orders.Lines, comma-separated"
    paths = []
    for entry in (part.strip() for part in text.split(",")):
        segments = tuple(segment.strip() for segment in entry.split("."))
        if len(segments) < 2 or not all(segments) or segments[1] == "@metadata":
            raise ConfigurationError("child_tables", f"{entry!r} is not a Collection.Field path ({expected})")
        if collections and segments[0].lower() not in {name.lower() for name in collections}:
            raise ConfigurationError("child_tables", f"{entry!r} names a collection that collection_name leaves out")
        paths.append(segments)
    for path in paths:
        if (
            sum(1 for other in paths if len(other) < len(path) and path[: len(other)] == other)
            >= _MAX_CHILD_TABLE_DEPTH
        ):
            raise ConfigurationError(
                "child_tables",
                f"{'.'.join(path)!r} is deeper than a grandchild table (an array in an array's elements)",
            )
    return ChildTableSelection(paths=tuple(sorted(set(paths))))


# ----------------------------------------------------------------------------------------------------------
# Certificates: the client certificate and server CA the configuration gives, and the owner-only files of them


class ClientCertificate(NamedTuple):
    """The client certificate and key as one unencrypted PEM, ready for the ravendb client."""

    pem: bytes
    subject: str
    not_after: datetime

    def __repr__(self) -> str:  # crash reports print locals: never the key
        return f"ClientCertificate(subject={self.subject!r}, not_after={self.not_after.isoformat()}, pem=<hidden>)"


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
        try:
            owned = directory.owner() == getpass.getuser()
        except FileNotFoundError:  # its own sync ended and removed it between the listing and this look
            continue
        if pid.isdigit() and owned and not _process_alive(int(pid)):
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


# ----------------------------------------------------------------------------------------------------------
# State: cursors with their kept versions, where the revisions bin was left, SyncState composing them (by version)


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


class KeptVersions:
    """The versions (id and change vector) of the documents a read landed at or after its cursor, which the next
    read returns again and skips: each a 6-byte BLAKE2b hash of id and change vector, grouped by the second of the
    document's `@last-modified`, where the next read looks it up. A document written again has a new change vector,
    and lands again.

    The state holds each second as one base64 text, 8 characters per document: about 8 bytes per document written
    at or after the cursor (documents written within `lookback_seconds` before the last sync began, and during it),
    plus about 30 bytes per second that holds any. A document is skipped wrongly only if its new version's hash
    equals that of another version kept in the same second: with n versions kept in that second, a chance of
    n / 2^48 per document read (3.6e-10 with 100,000 in one second)."""

    def __init__(self, saved: dict[str, str] | None = None):
        self.seconds: dict[str, set[bytes]] = {}
        self.texts: dict[str, str] = {}  # second -> its saved text, while no version was added to it since
        self.times: dict[bytes, str] = {}  # the `@last-modified` of each version added in this sync, to prune exactly
        for second, text in (saved or {}).items():
            if not isinstance(second, str) or not isinstance(text, str):
                raise TypeError("a second of kept versions is not text")
            packed = base64.b64decode(text, validate=True)
            if len(packed) % _VERSION_HASH_BYTES:
                raise ValueError("kept versions are not whole hashes")
            step = _VERSION_HASH_BYTES
            self.seconds[second] = {packed[i : i + step] for i in range(0, len(packed), step)}
            self.texts[second] = text

    def __len__(self) -> int:
        return sum(map(len, self.seconds.values()))

    @staticmethod
    def hash_of(meta: Metadata) -> bytes:
        """The version's hash: computed once per document read, for `has` and `add`."""
        key = f"{meta.id}\x1f{meta.change_vector or ''}".encode()
        return hashlib.blake2b(key, digest_size=_VERSION_HASH_BYTES).digest()

    def has(self, meta: Metadata, digest: bytes | None = None) -> bool:
        found = self.seconds.get(meta.last_modified[:19])
        return found is not None and (digest or self.hash_of(meta)) in found

    def add(self, meta: Metadata, digest: bytes | None = None) -> None:
        second, digest = meta.last_modified[:19], digest or self.hash_of(meta)
        self.seconds.setdefault(second, set()).add(digest)
        self.times[digest] = meta.last_modified
        self.texts.pop(second, None)

    def merge(self, other: "KeptVersions", keep_from: str) -> None:
        for second, hashes in other.seconds.items():
            if second >= keep_from[:19]:
                self.seconds.setdefault(second, set()).update(hashes)
                self.texts.pop(second, None)

    def prune(self, keep_from: str) -> None:
        """Drop the versions of documents older than `keep_from`, which no read returns again: every second before
        its own, and in its own second those added in this sync with an older `@last-modified` (a first read keeps
        only the documents at its cursor's tick)."""
        cut = keep_from[:19]
        for second in [second for second in self.seconds if second < cut]:
            for digest in self.seconds.pop(second):
                self.times.pop(digest, None)
            self.texts.pop(second, None)
        same = self.seconds.get(cut)
        if same:
            older = {digest for digest in same if self.times.get(digest, keep_from) < keep_from}
            if older:
                same -= older
                for digest in older:
                    del self.times[digest]
                self.texts.pop(cut, None)
                if not same:
                    del self.seconds[cut]

    def to_dict(self) -> dict[str, str]:
        for second, hashes in self.seconds.items():
            if second not in self.texts:
                self.texts[second] = base64.b64encode(b"".join(sorted(hashes))).decode("ascii")
        return {second: self.texts[second] for second in sorted(self.seconds)}


@dataclass
class CollectionCursor:
    """Where a read's next query starts (one collection's, or the whole database's), and which versions of what that
    query returns have landed already.

    `since` is a RavenDB `@last-modified` (its own 7-digit text) at or before every document not yet read: the
    query reads `>=` it. A document moves it only if it is no newer than the read's `bound`, the time up to which
    that read is known to return every document at its place in `@last-modified` order (see
    `_stream_into_destination`); newer ones are upserted but read again next time. When a read has returned
    everything, `since` moves to its bound (`finish`). `kept` holds the version of each document landed at or
    after `since` (KeptVersions), which the next read skips instead of landing again.

    A read in another order (the first read of new collections, newest etag first) holds the cursor: `since` still
    moves as documents arrive, but the state saves the held value until the read has ended, as a document not yet
    read may be older than every one read so far. Meanwhile the state keeps the versions at or after the moving
    `since` only; the others are kept in memory, for a retry within the sync.
    """

    since: str = _BEGINNING_OF_TIME
    kept: KeptVersions = field(default_factory=KeptVersions)
    held: str | None = None  # while a read not in `@last-modified` order runs: the `since` the state saves

    @property
    def saved_since(self) -> str:
        return self.since if self.held is None else self.held

    def hold(self) -> None:
        self.held = self.saved_since

    def release(self) -> None:
        """The held read has ended: every document it covers has been read, and `since` may be saved."""
        self.held = None

    def already_synced(self, meta: Metadata, digest: bytes | None = None) -> bool:
        return self.kept.has(meta, digest)

    def record(self, meta: Metadata, bound: str | None, landed: bool = True, digest: bytes | None = None) -> None:
        """`meta` was read (and its version is in the destination, if `landed`): move `since` to it if the read's
        `bound` allows (None: never). `digest`: its KeptVersions.hash_of, when already computed."""
        if bound is not None and self.since < meta.last_modified <= bound:
            self.since = meta.last_modified
        if landed and meta.last_modified >= self.saved_since:
            self.kept.add(meta, digest)

    def finish(self, bound: str | None) -> None:
        """The read from `since` has returned everything: every document older than its bound has been read."""
        if bound is not None and bound > self.since:
            self.since = bound

    def versions(self) -> dict[str, str]:
        """The versions the next read (from `since`) can return again, as the state stores them."""
        if self.held is None:
            self.kept.prune(self.since)
            return self.kept.to_dict()
        return {second: text for second, text in self.kept.to_dict().items() if second >= self.since[:19]}


@dataclass
class DatabaseCursor(CollectionCursor):
    """The cursor of the read of every collection in one query (`sync_database`), and the collections it covers.

    A collection joins it with the position its own cursor had (`floors`): the read then starts at the oldest
    of them, and skips a document of that collection older than its floor, which landed before; its kept versions
    join the database's. A floor is dropped once `since` has passed it. A collection that leaves (no longer
    selected, or read again from the beginning) gets its own cursor back at its position."""

    collections: set[str] = field(default_factory=set)
    floors: dict[str, str] = field(default_factory=dict)

    def join(self, collection: str, cursor: CollectionCursor) -> None:
        if not self.collections:
            self.since = cursor.saved_since
        elif cursor.saved_since < self.since:
            for name in self.collections:
                self.floors.setdefault(name, self.since)
            self.since = cursor.saved_since
        self.collections.add(collection)
        if cursor.saved_since > self.since:
            self.floors[collection] = cursor.saved_since
        self.kept.merge(cursor.kept, cursor.saved_since)

    def position(self, collection: str) -> str:
        """Where a read of this collection alone would start: every older document of it has landed."""
        return max(self.floors.get(collection, _BEGINNING_OF_TIME), self.since)

    def leave(self, collection: str) -> CollectionCursor:
        cursor = CollectionCursor(self.position(collection))
        self.collections.discard(collection)
        self.floors.pop(collection, None)
        return cursor

    def landed_before(self, collection: str, meta: Metadata) -> bool:
        floor = self.floors.get(collection)
        return floor is not None and meta.last_modified < floor

    def finish(self, bound: str | None) -> None:
        super().finish(bound)
        self.floors = {name: floor for name, floor in self.floors.items() if floor > self.since}

    def to_dict(self) -> dict:
        saved: dict[str, Any] = {"since": self.saved_since, "collections": sorted(self.collections)}
        floors = {name: floor for name, floor in self.floors.items() if floor > self.saved_since}
        if floors:
            saved["floors"] = floors
        if versions := self.versions():
            saved["kept"] = versions
        return saved


@dataclass
class BinPosition:
    """Where the last walk of the revisions bin stopped: the newest entry it handled, by deletion time and change
    vector. A walk (newest first) stops at that entry, or at one deleted before it."""

    since: str | None = None  # None: the bin was never read
    change_vector: str | None = None  # None: the bin listed nothing when last read

    @classmethod
    def load(cls, state: dict) -> "BinPosition":
        since, change_vector = state.get("deletes_since"), state.get("deletes_change_vector")
        _check_timestamp("deletes_since", since or _BEGINNING_OF_TIME)
        if change_vector is not None and not isinstance(change_vector, str):
            raise SourceError(None, f"state: deletes_change_vector is {change_vector!r}, not a change vector")
        return cls(since, change_vector)

    def save(self, state: dict) -> None:
        if self.since is not None:
            state["deletes_since"] = self.since
        if self.change_vector is not None:
            state["deletes_change_vector"] = self.change_vector

    def reached(self, meta: Metadata) -> bool:
        """Whether a bin entry is the newest one handled before, or was deleted before it."""
        if self.change_vector is not None and meta.change_vector == self.change_vector:
            return True
        return meta.last_modified < (self.since or _BEGINNING_OF_TIME)

    def advance(self, newest: Metadata | None) -> None:
        """Record the newest bin entry a walk read (None: the bin listed nothing new)."""
        if newest is not None:
            self.since = max(self.since or _BEGINNING_OF_TIME, newest.last_modified)
            self.change_vector = newest.change_vector
        elif self.since is None:
            self.since = _BEGINNING_OF_TIME


class SyncState:
    """What a checkpoint saves: each collection's cursor (with the versions it keeps), where the revisions bin was
    left, when each collection was last reconciled, the column each field of each table landed in (ColumnNames),
    and the child tables' paths, widths and columns (ChildTableState). `checkpoints` saves it (Checkpoints).

    `load` reads every state version a release wrote, upgrading it to the current layout (`_STATE_VERSION`);
    `to_dict` writes the current layout.
    """

    def __init__(
        self,
        cursors: dict[str, CollectionCursor],
        database: DatabaseCursor | None = None,
        deletes: BinPosition | None = None,
        reconciled_at: dict[str, str] | None = None,
        column_names: "dict[str, ColumnNames] | None" = None,
        children: "ChildTableState | None" = None,
    ):
        self.cursors = cursors  # collections read by their own query (a first read, or at most 10 listed)
        self.database = database  # the read of every other collection in one query; None until one ran
        self.deletes = deletes or BinPosition()
        self.reconciled_at = reconciled_at or {}  # collection -> ISO time of its last reconciliation
        self.column_names: dict[str, Any] = column_names or {}  # collection -> ColumnNames (saved entries until used)
        self.children = children or ChildTableState()
        self.checkpoints = Checkpoints(self)

    @classmethod
    def load(cls, state: dict | None) -> "SyncState":
        """The state a checkpoint saved, or an empty one when there is none; each part of a malformed state is
        refused in one line."""
        if not state:
            return cls(cursors={})
        current = _upgrade_v1(state) if state.get("version") == 1 else state
        if (
            current is None
            or current.get("version") not in (2, _STATE_VERSION)
            or not isinstance(current.get("cursors", {}), dict)
            or not isinstance(current.get("synced_versions", {}), dict)
        ):
            raise SourceError(None, f"state: unsupported layout {state!r:.200}; reset the connector to sync again")
        cursors, database = _load_cursors(current, current["version"])
        return cls(
            cursors=cursors,
            database=database,
            deletes=BinPosition.load(current),
            reconciled_at=dict(current.get("reconciled_at", {})),
            column_names=_load_column_names(current),
            children=ChildTableState.load(current),
        )

    def to_dict(self) -> dict:
        state: dict[str, Any] = {
            "version": _STATE_VERSION,
            "cursors": {name: cursor.saved_since for name, cursor in self.cursors.items()},
        }
        kept = {name: versions for name, cursor in self.cursors.items() if (versions := cursor.versions())}
        if kept:
            state["kept"] = kept
        if self.database is not None and self.database.collections:
            state["database"] = self.database.to_dict()
        self.deletes.save(state)
        if self.reconciled_at:
            state["reconciled_at"] = dict(self.reconciled_at)
        column_names = {
            name: columns.to_list() if isinstance(columns, ColumnNames) else columns
            for name, columns in self.column_names.items()
        }
        if any(column_names.values()):
            state["columns"] = {name: entries for name, entries in column_names.items() if entries}
        self.children.save(state)
        return state

    def cursor(self, collection: str) -> CollectionCursor:
        """The collection's own cursor (created at the beginning); one the database's read covers leaves it."""
        if self.database is not None and collection in self.database.collections:
            self.cursors[collection] = self.database.leave(collection)
        return self.cursors.setdefault(collection, CollectionCursor())

    def known(self) -> tuple[str, ...]:
        """Every collection a sync has read."""
        joined = self.database.collections if self.database is not None else set()
        return tuple(sorted({*self.cursors, *joined}))

    def joined(self, collection: str) -> bool:
        return self.database is not None and collection in self.database.collections

    def position(self, collection: str) -> str:
        """Every document of the collection older than this has landed."""
        if self.joined(collection):
            return self.database.position(collection)  # type: ignore[union-attr]
        cursor = self.cursors.get(collection)
        return cursor.saved_since if cursor is not None else _BEGINNING_OF_TIME

    def starts_over(self, collection: str) -> bool:
        """Whether the collection's next read is from the beginning (never synced, or to be read again)."""
        return self.position(collection) == _BEGINNING_OF_TIME

    def join_database(self, collections: Iterable[str]) -> DatabaseCursor:
        """The cursor of the read of the whole database, which now covers `collections` (their own cursors join
        it, see DatabaseCursor); a collection it covered that is not among them gets its own cursor back."""
        wanted = set(collections)
        database = self.database = self.database or DatabaseCursor()
        for name in sorted(database.collections - wanted):
            self.cursors[name] = database.leave(name)
        for name in sorted(wanted - database.collections):
            database.join(name, self.cursors.pop(name))
        return database

    def leave_database(self, collections: Iterable[str]) -> None:
        """`collections` are read one by one: each gets its own cursor back."""
        for name in collections:
            if self.joined(name):
                self.cursors[name] = self.database.leave(name)  # type: ignore[union-attr]

    def read_again(self, collection: str) -> None:
        """Read the collection from the beginning next (its child tables changed)."""
        if collection in self.known():
            self.leave_database([collection])
            self.cursors[collection] = CollectionCursor()

    def columns(self, collection: str) -> "ColumnNames":
        """Which column each field of the collection's documents lands in, as named by the syncs before."""
        columns = self.column_names.get(collection)
        if not isinstance(columns, ColumnNames):  # not yet used in this sync: built from the saved entries
            try:
                columns = self.column_names[collection] = ColumnNames(columns)
            except (AttributeError, TypeError, ValueError):
                raise SourceError(
                    None, "state: the column names are not [path, name] lists; reset the connector"
                ) from None
        return columns


def _upgrade_v1(state: dict) -> dict | None:
    """Version 1 kept versions only at the cursor's exact timestamp ({collection: {id: change vector}}): the same
    versions in version 2's layout, which `_load_cursors` reads. None when they are not in that layout."""
    cursors = state.get("cursors", {})
    try:
        kept = {
            name: {doc_id: [cursors.get(name), vector] for doc_id, vector in versions.items()}
            for name, versions in dict(state.get("versions_at_cursor", {})).items()
        }
    except (AttributeError, TypeError, ValueError):
        return None
    upgraded = {key: value for key, value in state.items() if key != "versions_at_cursor"}
    return {**upgraded, "version": 2, "synced_versions": kept}


def _entries(saved: Any) -> list:
    """A table's saved column entries ([path, name] or [path, name, 1]), read by ColumnNames when the sync first
    uses the table (`SyncState.columns`): a sync that lands nothing in most tables builds none of them."""
    if not isinstance(saved, list) or (saved and not (isinstance(saved[0], list) and len(saved[0]) in (2, 3))):
        raise TypeError("column entries are not [path, name] lists")
    return saved


def _check_timestamp(key: str, value: Any) -> str:
    if not isinstance(value, str) or not _LAST_MODIFIED.fullmatch(value):
        raise SourceError(None, f"state: cursor of {key!r} is {value!r}, not a RavenDB timestamp")
    return value


def _load_cursors(state: dict, version: int) -> tuple[dict[str, CollectionCursor], DatabaseCursor | None]:
    """The cursors of a saved state. Version 3 keeps versions as KeptVersions texts, and the database's cursor;
    version 2 kept `synced_versions`, id -> [@last-modified, change vector] per collection, which become kept
    versions of the same documents: a state saved by it carries over with nothing read again that landed, and
    nothing skipped that did not."""
    saved = state.get("cursors", {})
    if not isinstance(saved, dict):
        raise SourceError(None, f"state: unsupported layout {state!r:.200}; reset the connector to sync again")
    cursors = {name: CollectionCursor(_check_timestamp(name, since)) for name, since in saved.items()}
    try:
        if version == _STATE_VERSION:
            for name, texts in dict(state.get("kept", {})).items():
                if name in cursors:
                    cursors[name].kept = KeptVersions(texts)
        else:
            seen = dict(state.get("synced_versions", {}))
            for name, versions in seen.items():
                for doc_id, (last_modified, vector) in dict(versions).items():
                    if name in cursors:
                        cursors[name].kept.add(Metadata(doc_id, str(last_modified), str(vector), name))
    except (AttributeError, TypeError, ValueError, binascii.Error):
        raise SourceError(None, "state: the kept versions are malformed; reset the connector to sync again") from None
    saved_database = state.get("database")
    if saved_database is None:
        return cursors, None
    try:
        database = DatabaseCursor(
            _check_timestamp("database", saved_database["since"]),
            KeptVersions(saved_database.get("kept")),
            collections=set(map(str, saved_database["collections"])),
            floors={name: _check_timestamp(name, floor) for name, floor in saved_database.get("floors", {}).items()},
        )
    except (AttributeError, TypeError, ValueError, KeyError, binascii.Error):
        raise SourceError(None, "state: the database cursor is malformed; reset the connector to sync again") from None
    return cursors, database


def _load_column_names(state: dict) -> dict[str, Any]:
    try:
        return {name: _entries(entries) for name, entries in state.get("columns", {}).items()}
    except (AttributeError, TypeError, ValueError):
        raise SourceError(None, "state: the column names are not [path, name] lists; reset the connector") from None


# ----------------------------------------------------------------------------------------------------------
# Rows and types: destination names, the one walk of a document, flatten and declared columns (pure)


def table_name(collection: str) -> str:
    """The table a collection lands in: its own name when it is plain ASCII letters and digits (Fivetran's naming
    turns `OrderLines` into `order_lines`, and two such names never meet there, as RavenDB's collection names are
    case-insensitive); otherwise Fivetran's normal form of it, transliterated or escaped, plus a tag of four letters
    drawn from the exact name (`Order Lines` -> `order_lines_xxxx`), so that no two collections share a table.

    A pure function of the name: schema() receives no state, and both it and update() must name every table alike.
    """
    if _PLAIN_NAME.fullmatch(collection):
        return collection
    digest = hashlib.sha256(collection.encode("utf-8")).digest()
    tag = "".join(chr(ord("a") + byte % 26) for byte in digest[:4])
    base = _LEADING_UNDERSCORES.sub("", _fivetran_normal(_ascii_name(collection)))[: _MAX_NAME_LENGTH - 5]
    return f"{base.rstrip('_')}_{tag}"


@functools.lru_cache(maxsize=1 << 16)  # pure; many tables share field paths
def destination_name(path: tuple[str, ...]) -> str:
    """Fivetran's normal form of a field path: each key transliterated to ASCII (accents dropped; Cyrillic and Greek
    by table; any other letter escaped as `u` and its decimal code point), the keys joined with `_`, then Fivetran's
    own rules (camelCase split into words, lower case, anything but letters and digits as `_`, one `_` at most),
    cut at 120 characters. Two different paths may get the same name: ColumnNames resolves that."""
    parts = [_ascii_name(key) or "_empty" for key in path]
    return _fivetran_normal("_".join(parts))[:_MAX_NAME_LENGTH] or "_empty"


def _ascii_name(name: str) -> str:
    if name.isascii():
        return name
    out = []
    for char in name:
        if char.isascii():
            out.append(char)
            continue
        plain = "".join(c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c))
        letter = char if char.lower() in _TRANSLITERATION else plain
        if letter.lower() in _TRANSLITERATION:
            latin = _TRANSLITERATION[letter.lower()]
            out.append(latin.capitalize() if letter != letter.lower() else latin)
        elif plain.isascii():
            out.append(plain)
        else:
            out.append(f"_u{ord(char)}_")
    text = "".join(out)  # an escape at either end leaves no `_` there
    start = 1 if out[0][:2] == "_u" and out[0][-1:] == "_" else 0
    return text[start : -1 if out[-1][:2] == "_u" and out[-1][-1:] == "_" else None]


def _fivetran_normal(name: str) -> str:
    """Fivetran's documented column naming on an ASCII name (what its SDK applies when it writes): anything but a
    letter, digit or `_` becomes `_`; a word starts at a capital after a lower-case letter and at each switch between
    digits and other characters (so a leading digit gets a `_` before it); lower case; runs of `_` become one."""
    words = _WORD_BREAK.sub("_", _NOT_A_WORD_CHARACTER.sub("_", name))
    if words[:1].isdigit():
        words = "_" + words
    return _UNDERSCORES.sub("_", words.lower())


class _Field:
    """One field path of a table's documents: its column (once it holds a value), the fields under it when it is an
    object flattened into columns, and whether it lands whole as one JSON value instead."""

    __slots__ = ("children", "column", "whole")

    def __init__(self) -> None:
        self.column: _Column | None = None
        self.children: dict[str, _Field] | None = None
        self.whole = False


class _Column(NamedTuple):
    emitted: str  # the name handed to the SDK; Fivetran's naming turns it into `name`
    name: str  # the destination column, unique in its table
    base: str  # the name before collisions were resolved: columns sharing a base share one declared type


class ColumnNames:
    """Which column each field path of one table's documents lands in, remembered across syncs (the state keeps it).

    A path gets its destination_name(); if another path of the table already holds that name, or it is a column of
    the connector's own (`id`, `last_modified`, anything starting `_fivetran`), it gets the first free of
    `name_2`, `name_3`, ... The first path met keeps the plain name for good; a path first met later never renames
    a column. The name handed to the SDK is the path's own keys joined with `_` when they are plain ASCII letters
    and digits and hold the plain name (`ShipTo_City`; Fivetran's naming makes it `ship_to_city`), otherwise the
    destination name itself.

    Objects are flattened while the table has fewer than _COLUMN_BUDGET columns. An object lands whole as one JSON
    value, for good, when the table first meets it with keys that all look like data (ids such as `products/1-A`,
    dates, numbers, GUIDs: a dictionary, whose keys would each make a column), or when its new fields would take
    the table past the budget. Top-level fields always get their own column.
    """

    def __init__(self, entries: list | None = None):
        self.fields: dict[str, _Field] = {}
        self.taken: set[str] = set(_CONNECTOR_COLUMNS)
        self.columns = 0
        self.changes = 0  # columns added and objects landing whole since built: when to_list must list them again
        self._listed: tuple[int, list] | None = None
        for entry in entries or []:
            path, name, *whole = entry
            field = self._field_at(tuple(path))
            if name is not None:
                field.column = self._column(tuple(path), name)
                self.taken.add(name)
                self.columns += 1
            field.whole = bool(whole and whole[0])

    def _field_at(self, path: tuple[str, ...]) -> _Field:
        fields = self.fields
        for key in path[:-1]:
            parent = fields.setdefault(key, _Field())
            if parent.children is None:
                parent.children = {}
            fields = parent.children
        return fields.setdefault(path[-1], _Field())

    def _column(self, path: tuple[str, ...], name: str) -> _Column:
        base = destination_name(path)
        plain = name == base and all(_PLAIN_NAME.fullmatch(key) for key in path)
        return _Column("_".join(path) if plain else name, name, base)

    def column_for(self, field: _Field, path: tuple[str, ...]) -> _Column:
        if field.column is None:
            base = destination_name(path)
            if base.startswith("_fivetran"):  # Fivetran's own columns: a field never takes their prefix
                base = base.lstrip("_")
            name, number = base, 1
            while name in self.taken:
                number += 1
                name = f"{base[: _MAX_NAME_LENGTH - 8]}_{number}"
            self.taken.add(name)
            self.columns += 1
            self.changes += 1
            field.column = self._column(path, name)
        return field.column

    def whole_column(self, field: _Field, path: tuple[str, ...]) -> _Column:
        """The field is an object that lands whole as one JSON value, for good: its column."""
        field.whole = True
        self.changes += 1
        return self.column_for(field, path)

    def to_list(self) -> list:
        """The state's form: [path, name] for each column, [path, name, 1] for an object that lands whole (listed
        again only after a change: every checkpoint saves every table's)."""
        if self._listed is not None and self._listed[0] == self.changes:
            return self._listed[1]
        entries: list = []
        pending = [((key,), field) for key, field in self.fields.items()]
        while pending:
            path, field = pending.pop()
            if field.column is not None or field.whole:
                entry = [list(path), field.column.name if field.column else None]
                entries.append([*entry, 1] if field.whole else entry)
            if field.children:
                pending.extend(((*path, key), child) for key, child in field.children.items())
        entries.sort(key=lambda entry: entry[0])
        self._listed = (self.changes, entries)
        return entries


def walk(document: dict, columns: ColumnNames) -> list[tuple[_Column, Any]]:
    """The one walk of a document that both its row (flatten) and the declared columns (declare_columns) come from:
    each value with the column it lands in. Every field is kept except the top-level `@metadata`, which is RavenDB's;
    objects are flattened up to _MAX_FLATTEN_DEPTH levels and within the column budget (see ColumnNames)."""
    cells: list[tuple[_Column, Any]] = []
    _walk_into(cells, columns, columns.fields, (), document, _MAX_FLATTEN_DEPTH)
    return cells


class _OverBudget(Exception):
    """A new field of a flattened object would take the table past its column budget."""


def _walk_into(
    cells: list, columns: ColumnNames, fields: dict[str, _Field], prefix: tuple, value: dict, depth: int
) -> None:
    for key, item in value.items():
        if not prefix and key == "@metadata":
            continue
        field = fields.get(key)
        if field is None:
            field = fields[key] = _Field()
        if type(item) is dict and item and depth > 1 and not field.whole:
            path = (*prefix, key)
            if field.children is None:
                if _looks_like_a_dictionary(item) or columns.columns + _leaf_count(item, depth) > _COLUMN_BUDGET:
                    cells.append((columns.whole_column(field, path), item))
                    continue
                field.children = {}
            start = len(cells)
            try:
                _walk_into(cells, columns, field.children, path, item, depth - 1)
            except _OverBudget:
                if prefix:
                    raise
                del cells[start:]
                cells.append((columns.whole_column(field, path), item))
            continue
        if field.column is None and prefix and columns.columns >= _COLUMN_BUDGET:
            raise _OverBudget
        cells.append((field.column or columns.column_for(field, (*prefix, key)), item))


def _looks_like_a_dictionary(value: dict) -> bool:
    return all(_DATA_LIKE_KEY.fullmatch(key) for key in value)


def _leaf_count(value: dict, depth: int) -> int:
    return sum(
        _leaf_count(item, depth - 1) if type(item) is dict and item and depth > 1 else 1 for item in value.values()
    )


def flatten(document: dict, columns: ColumnNames | None = None) -> dict:
    """Turn a RavenDB document into one row: Id, LastModified and a column for each field (see walk and ColumnNames).

    Values are shaped so the destination types them by their JSON type, without loss: text stays text, integers
    are integers (typed LONG; -2**63 as decimal text, also LONG; beyond 64 bits STRING), non-integers exact
    decimal text (typed DOUBLE, never the SDK's 4-byte FLOAT; see _exact_float_text for the doubles a DOUBLE cannot
    hold), booleans `true`/`false`, arrays and whole objects JSON.
    """
    meta = Metadata.of(document)
    cells = walk(document, columns if columns is not None else ColumnNames())
    row: dict[str, Any] = {emitted: item if type(item) is str else _cell(item) for (emitted, _, _), item in cells}
    row["Id"] = meta.id
    row["LastModified"] = parse_last_modified(meta.last_modified)
    return row


def _cell(value: Any) -> Any:
    if isinstance(value, str) or value is None:
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        # -2**63 as text too: the SDK sends an int whose abs() exceeds 2**63 - 1 as a float, turning the column FLOAT
        return value if _INT64_MIN < value <= _INT64_MAX else str(value)
    if isinstance(value, float):
        return _exact_float_text(value)
    return value  # list or whole object: the SDK sends it as JSON


def _exact_float_text(value: float) -> str | None:
    """The shortest text that reads back as the same double, always with a decimal point (so DOUBLE, not text).

    A double no DOUBLE column keeps (a subnormal such as 5e-324, or -0.0: Fivetran's core stores both as 0.0) is
    written without a decimal point (`5e-324`, `-0e-1`), which the destination types as text: its column becomes
    STRING, and every value in it reads back as the same double with float().
    """
    if not math.isfinite(value):
        return None
    if _unkept_by_double(value):
        sign, digits, exponent = decimal.Decimal(repr(value)).as_tuple()
        return f"{'-' if sign else ''}{''.join(map(str, digits))}e{exponent}"
    text = repr(value)
    if "." in text:
        return text
    mantissa, _, exponent = text.partition("e")
    return f"{mantissa}.0e{exponent}" if exponent else f"{mantissa}.0"


def _unkept_by_double(value: float) -> bool:
    return abs(value) < _SMALLEST_NORMAL_DOUBLE and (value != 0 or math.copysign(1.0, value) < 0)


def declare_columns(sample: list[dict], columns: ColumnNames | None = None) -> dict[str, str]:
    """Id, LastModified, and STRING or JSON for the fields of the sample whose values would otherwise be mistyped.

    Only types that accept any value are declared, so a later document can never fail the sync: a field with text
    values ("51100", "true") or mixed JSON types becomes STRING, one mixing arrays or objects with others JSON.
    Fields holding only numbers, booleans, RavenDB dates or arrays are left to the destination to type. Columns
    whose paths share a plain name (`Name`, `name`) share one declared type, as schema() cannot know (it receives no
    state) which of them a sync named first.
    """
    columns = columns if columns is not None else ColumnNames()
    kinds: dict[str, set[str]] = {}
    emitted_by_base: dict[str, set[str]] = {}
    for document in sample:
        for column, item in walk(document, columns):
            kinds.setdefault(column.base, set()).add(_json_kind(item))
            emitted_by_base.setdefault(column.base, set()).add(column.emitted)
    declared = {"Id": "STRING", "LastModified": "UTC_DATETIME"}
    for base, found in sorted(kinds.items()):
        kind = _declared_type(found - {"null"})
        if kind:
            declared.update(dict.fromkeys(sorted(emitted_by_base[base]), kind))
    return declared


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int" if _INT64_MIN <= value <= _INT64_MAX else "bigint"
    if isinstance(value, float):
        return "text" if _unkept_by_double(value) else "number"
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


def format_last_modified(moment: datetime) -> str:
    """An aware datetime as RavenDB's 7-digit UTC text, so that it compares with `@last-modified` values."""
    moment = moment.astimezone(timezone.utc)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond:06d}0Z"


# ----------------------------------------------------------------------------------------------------------
# Child tables: which arrays land as tables, each document's element rows, what the state keeps of them


_ELEMENT_VALUE = "Value"  # the column of an array element that is not an object (a number, a string, a list)


class ChildTableSelection(NamedTuple):
    """The `child_tables` setting: every array of objects (`*`), or the listed (collection, key, key...) paths."""

    every: bool = False
    paths: tuple[tuple[str, ...], ...] = ()

    def paths_of(
        self, collection: str, sample: list[dict], collections: list[str] | tuple[str, ...] = ()
    ) -> tuple[tuple[str, ...], ...]:
        """The array paths of `collection` that become tables; `*` finds them in the sample of its documents.

        A child table whose destination name is the table of one of `collections` (`Orders.Lines` and a
        collection `OrdersLines` both make `orders_lines`) is refused when listed; `*` leaves that array JSON."""
        if self.every:
            paths = tuple(sorted(_object_array_paths(sample, (), _MAX_CHILD_TABLE_DEPTH)))
        else:
            paths = tuple(path[1:] for path in self.paths if path[0].lower() == collection.lower())
        for path, other in _clashing_tables(collection, paths, collections).items():
            if not self.every:
                raise SourceError(
                    "child_tables",
                    f"{collection}.{'.'.join(path)} would land in the table of collection {other!r}; "
                    "leave it out (or use *, which keeps such an array as JSON)",
                )
            paths = tuple(kept for kept in paths if kept[: len(path)] != path)
        return paths


class ChildTable(NamedTuple):
    """An array whose elements land as rows of their own table, keyed by the document's Id and the index of each
    element on the way down (`lines_index`; a grandchild table adds its own, such as `batches_index`)."""

    path: tuple[str, ...]  # keys from the parent (document or element) to the array: ("Lines",), ("ShipTo", "Stops")
    table: str  # the parent's table, `_`, the array's destination name: `Orders_lines` (Fivetran: `orders_lines`)
    keys: tuple[str, ...]  # ("Id", "lines_index")
    children: tuple["ChildTable", ...] = ()


@functools.lru_cache(maxsize=256)
def child_tables(collection: str, paths: tuple[tuple[str, ...], ...]) -> tuple[ChildTable, ...]:
    """The tree of child tables for array paths such as ("Lines",) and ("Lines", "Batches"): a path below another
    listed path is an array inside that array's elements, a grandchild table."""
    return _child_tree(table_name(collection), ("Id",), paths)


def _child_tree(table: str, keys: tuple[str, ...], paths: tuple[tuple[str, ...], ...]) -> tuple[ChildTable, ...]:
    tree = []
    for path in sorted(paths):
        if any(other != path and path[: len(other)] == other for other in paths):
            continue  # inside the elements of a shorter listed path
        name = destination_name(path)
        index = f"{name}_index" if f"{name}_index" not in keys else f"{name}_index_{len(keys)}"
        below = tuple(other[len(path) :] for other in paths if other != path and other[: len(path)] == path)
        tree.append(
            ChildTable(path, f"{table}_{name}", (*keys, index), _child_tree(f"{table}_{name}", (*keys, index), below))
        )
    return tuple(tree)


def _clashing_tables(
    collection: str, paths: tuple[tuple[str, ...], ...], collections: list[str] | tuple[str, ...]
) -> dict[tuple[str, ...], str]:
    """The array paths whose child table Fivetran would name like the table of another collection, with it."""
    if not paths or not collections:
        return {}
    tables = {_fivetran_normal(table_name(name)): name for name in collections}
    clashes: dict[tuple[str, ...], str] = {}

    def visit(children: tuple[ChildTable, ...], prefix: tuple[str, ...]) -> None:
        for child in children:
            full = (*prefix, *child.path)
            if _fivetran_normal(child.table) in tables:
                clashes.setdefault(full, tables[_fivetran_normal(child.table)])
            visit(child.children, full)

    visit(child_tables(collection, paths), ())
    return clashes


def _all_child_tables(children: tuple[ChildTable, ...]) -> Iterator[ChildTable]:
    for child in children:
        yield child
        yield from _all_child_tables(child.children)


def _object_array_paths(values: list, prefix: tuple[str, ...], arrays: int) -> set[tuple[str, ...]]:
    """Paths of the non-empty arrays of objects in these objects (through nested objects that are flattened, not
    through dictionaries keyed by ids or dates), and down to `arrays` array levels, those inside their elements."""
    found: set[tuple[str, ...]] = set()
    for value in values:
        if not isinstance(value, dict):
            continue
        for key, item in value.items():
            if not prefix and key == "@metadata":
                continue
            if isinstance(item, dict) and len(prefix) < _MAX_FLATTEN_DEPTH - 1:
                if item and not _looks_like_a_dictionary(item):  # a dictionary lands whole, as JSON
                    found |= _object_array_paths([item], (*prefix, key), arrays)
            elif isinstance(item, list) and item and all(isinstance(element, dict) for element in item):
                found.add((*prefix, key))
                if arrays > 1:
                    found |= {(*prefix, key, *below) for below in _object_array_paths(item, (), arrays - 1)}
    return found


def _take_arrays(value: dict, children: tuple[ChildTable, ...]) -> tuple[dict, list[list]]:
    """A copy of `value` without its child-table arrays (copying only the objects on their paths), and the elements
    of each array, in the order of `children`. A path that holds no array (missing, null, a value, an object)
    stays in the copy as it is, and gives no elements."""
    value, taken = dict(value), []
    for child in children:
        holder: dict | None = value
        for key in child.path[:-1]:
            inner = holder.get(key)
            if not isinstance(inner, dict):
                holder = None
                break
            holder[key] = holder = dict(inner)
        if holder is not None and isinstance(holder.get(child.path[-1]), list):
            taken.append(holder.pop(child.path[-1]))
        else:
            taken.append([])
    return value, taken


class DocumentRows(NamedTuple):
    """What one document writes: its row and its elements' rows, and the element rows an earlier version of it
    may have left (indices from the array's length up to the widest array written so far): to be deleted."""

    upserts: list[tuple[str, dict]]  # (table, row), the document's row first
    stale: list[tuple[str, dict]]  # (table, primary key)
    widths: dict[str, int]  # child table -> the most elements one of its arrays has in this document


def document_rows(
    table: str,
    document: dict,
    children: tuple[ChildTable, ...],
    widths: dict[str, int],
    columns: ColumnNames,
    element_columns: Callable[[ChildTable], ColumnNames],
) -> DocumentRows:
    """The document's row without its child-table arrays, and one row per element of each of them: the element
    walked and flattened by the same rules as a document (its columns named within its own table), keyed by the
    document's Id and the element's index, with the document's LastModified."""
    parent, arrays = _take_arrays(document, children)
    row = flatten(parent, columns)
    rows = DocumentRows([(table, row)], [], {})
    _element_rows(rows, children, arrays, {"Id": row["Id"]}, row["LastModified"], widths, element_columns)
    return rows


def _element_rows(
    rows: DocumentRows,
    children: tuple[ChildTable, ...],
    arrays: list[list],
    key: dict,
    last_modified: datetime,
    widths: dict[str, int],
    element_columns: Callable[[ChildTable], ColumnNames],
) -> None:
    for child, elements in zip(children, arrays, strict=True):
        columns = element_columns(child) if elements else None
        for index, element in enumerate(elements):
            element_key = {**key, child.keys[-1]: index}
            below: list[list] = [[] for _ in child.children]
            if isinstance(element, dict):
                element, below = _take_arrays(element, child.children)
                row = {column.emitted: _cell(item) for column, item in walk(element, columns)}
            else:
                row = {_ELEMENT_VALUE: _cell(element)}
            row.update(element_key)
            row["LastModified"] = last_modified
            rows.upserts.append((child.table, row))
            _element_rows(rows, child.children, below, element_key, last_modified, widths, element_columns)
        rows.widths[child.table] = max(rows.widths.get(child.table, 0), len(elements))
        _stale_rows(rows.stale, child, key, len(elements), widths)


def _stale_rows(stale: list, child: ChildTable, key: dict, start: int, widths: dict[str, int]) -> None:
    """The keys of elements [start, widest written) of one array, and of every row below them."""
    for index in range(start, widths.get(child.table, 0)):
        element_key = {**key, child.keys[-1]: index}
        stale.append((child.table, element_key))
        for grandchild in child.children:
            _stale_rows(stale, grandchild, element_key, 0, widths)


def deleted_document_rows(doc_id: str, children: tuple[ChildTable, ...], widths: dict[str, int]) -> list:
    """The keys of every element row a deleted document may have left in its child tables."""
    stale: list[tuple[str, dict]] = []
    for child in children:
        _stale_rows(stale, child, {"Id": doc_id}, 0, widths)
    return stale


def element_column_names(child: ChildTable, entries: list | None = None) -> ColumnNames:
    """The column names of a child table: as a document's, with its index columns and `value` kept free too."""
    columns = ColumnNames(entries)
    columns.taken.update({*child.keys[1:], _ELEMENT_VALUE.lower()})
    return columns


@dataclass
class ChildTableState:
    """What the state keeps of child tables: each collection's child-table array paths, the most elements one array
    has had per child table (so the rows of removed elements are found without keeping anything per document),
    and the column each field of a child table's elements landed in."""

    paths: dict[str, list[list[str]]] = field(default_factory=dict)  # collection -> its child-table arrays
    widths: dict[str, int] = field(default_factory=dict)  # child table -> most elements of one array written
    element_columns: dict[str, Any] = field(default_factory=dict)  # child table -> its ColumnNames (saved: entries)

    @classmethod
    def load(cls, state: dict) -> "ChildTableState":
        try:
            return cls(
                paths={name: [list(path) for path in paths] for name, paths in state.get("child_paths", {}).items()},
                widths={table: int(width) for table, width in state.get("child_widths", {}).items()},
                element_columns={table: list(entries) for table, entries in state.get("child_columns", {}).items()},
            )
        except (AttributeError, TypeError, ValueError):
            raise SourceError(
                None, "state: the child tables are not in the layout written; reset the connector"
            ) from None

    def save(self, state: dict) -> None:
        if self.paths:
            state["child_paths"] = {name: [list(path) for path in paths] for name, paths in self.paths.items()}
            state["child_widths"] = dict(self.widths)
        element_columns = {
            table: columns.to_list() if isinstance(columns, ColumnNames) else columns
            for table, columns in self.element_columns.items()
        }
        if any(element_columns.values()):
            state["child_columns"] = {table: entries for table, entries in element_columns.items() if entries}

    def tables(self, collection: str) -> tuple[ChildTable, ...]:
        """The collection's child tables, as a tree (grandchild tables below their child table)."""
        paths = self.paths.get(collection)
        return child_tables(collection, tuple(map(tuple, paths))) if paths else ()

    def table_names(self, collection: str) -> list[str]:
        return [child.table for child in _all_child_tables(self.tables(collection))]

    def select(self, collection: str, fields: tuple[tuple[str, ...], ...]) -> tuple[bool, list[str]]:
        """Make `fields` the child-table arrays of `collection`: whether they changed, and the tables no longer
        selected (their widths and columns are forgotten)."""
        paths = sorted(list(path) for path in fields)
        if paths == self.paths.get(collection, []):
            return False, []
        before = set(self.table_names(collection))
        if paths:
            self.paths[collection] = paths
        else:
            self.paths.pop(collection, None)
        dropped = before - set(self.table_names(collection))
        for table in dropped:
            self.widths.pop(table, None)
            self.element_columns.pop(table, None)
        return True, sorted(dropped)

    def rows(self, collection: str, document: dict, columns: ColumnNames) -> DocumentRows:
        """The rows the document writes (see document_rows), against the widest arrays written so far."""
        children = self.tables(collection)
        return document_rows(table_name(collection), document, children, self.widths, columns, self._columns_of)

    def widen(self, widths: dict[str, int]) -> bool:
        """Raise the widest array written per child table; True when one grew (to be checkpointed before its rows
        are written, so that a later shrink always knows which element rows may exist)."""
        grown = False
        for table, width in widths.items():
            if width > self.widths.get(table, 0):
                self.widths[table], grown = width, True
        return grown

    def row_keys(self, collection: str, document: dict, columns: ColumnNames) -> list[tuple[str, dict]]:
        """The primary key of every row the document writes: its own and its elements' (to touch them)."""
        children = self.tables(collection)
        keys = {child.table: child.keys for child in _all_child_tables(children)}
        rows = document_rows(table_name(collection), document, children, {}, columns, self._columns_of)
        return [(table, {key: row[key] for key in keys.get(table, ("Id",))}) for table, row in rows.upserts]

    def deleted_rows(self, collection: str, doc_id: str) -> list[tuple[str, dict]]:
        """The keys of every element row a deleted document may have left in its child tables."""
        return deleted_document_rows(doc_id, self.tables(collection), self.widths)

    def _columns_of(self, child: ChildTable) -> ColumnNames:
        """Which column each field of a child table's elements lands in, as named by the syncs before."""
        columns = self.element_columns.get(child.table)
        if not isinstance(columns, ColumnNames):  # not yet used in this sync: built from the saved entries
            columns = self.element_columns[child.table] = element_column_names(child, columns)
        return columns


def declare_tables(
    collection: str, children: tuple[ChildTable, ...], documents: Callable[[], Iterable[dict]]
) -> list[dict]:
    """The collection's table and its child tables, each with its primary key and the columns its sampled
    documents or elements show (declared by the rules of declare_columns). `documents` gives the sample anew
    for each table, so that a streamed sample (type_from_every_document) is read once per table, never held."""
    return _declare(table_name(collection), ["Id"], None, children, documents)


def _declare(
    table: str,
    keys: list[str],
    columns: ColumnNames | None,
    children: tuple[ChildTable, ...],
    values: Callable[[], Iterable[dict]],
) -> list[dict]:
    declared = declare_columns((_take_arrays(value, children)[0] for value in values()), columns)
    declared.update(dict.fromkeys(keys[1:], "LONG"))
    tables = [{"table": table, "primary_key": keys, "columns": declared}]
    for position, child in enumerate(children):

        def elements(position: int = position) -> Iterator[dict]:
            for value in values():
                yield from (item for item in _take_arrays(value, children)[1][position] if isinstance(item, dict))

        tables += _declare(child.table, list(child.keys), element_column_names(child), child.children, elements)
    return tables


# ----------------------------------------------------------------------------------------------------------
# Reading RavenDB (requests and streams only): store, constant queries, streams, commands, error translation


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


def collection_query(template: str, collection: str, page_size: int | None = None, **parameters: str) -> IndexQuery:
    """One of the constant RQL texts for `collection` (escaped as the client escapes it), values as $parameters."""
    query = IndexQuery(template.format(collection=Utils.escape_collection_name(collection)))
    query.query_parameters = parameters or None
    if page_size is not None:
        query.page_size = page_size
    return query


def changed_since_query(collection: str, since: str) -> IndexQuery:
    return collection_query(_CHANGED_SINCE_RQL, collection, since=since)


class Selection(NamedTuple):
    """The collections a sync reads, each with its document count, and the count of every document in the database
    (other collections, `@hilo` and documents without a collection among them), from one read of the statistics."""

    counts: dict[str, int]
    documents: int


def resolve_collections(store: DocumentStore, settings: Settings, known: tuple[str, ...]) -> Selection:
    """The configured collections, or every user collection, each with its document count from RavenDB's collection
    statistics (one request); a vanished collection is logged, not an error."""
    with _translated_errors(settings):
        statistics = store.maintenance.send(GetCollectionStatisticsOperation())
    documents = max(statistics.count_of_documents or 0, sum(statistics.collections.values()))
    present = {name: count for name, count in statistics.collections.items() if not name.startswith("@")}
    if not settings.collections:
        for gone in sorted(set(known) - set(present)):
            log.warning(f"{gone}: collection no longer exists in {settings.database}; its table is kept")
        return Selection({name: present[name] for name in sorted(present)}, documents)
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
    return Selection(selected, documents)


def small_together(selection: Selection, candidates: list[str]) -> list[str]:
    """The candidates that hold at most `_SMALL_COLLECTION` documents each, when there are at least two of them
    and together they hold at least half of the database's documents and at most `_MAX_READ_TOGETHER`: one read
    of the database then replaces a request per collection, reads little besides them, and holds (and after a
    failure, reads again) a bounded number of documents. Otherwise none."""
    small = [name for name in candidates if selection.counts[name] <= _SMALL_COLLECTION]
    documents = sum(selection.counts[name] for name in small)
    if len(small) < 2 or 2 * documents < selection.documents or documents > _MAX_READ_TOGETHER:
        return []
    return small


def newest_documents(
    store: DocumentStore, settings: Settings, collection: str, count: int = _SAMPLE_DOCUMENTS
) -> list[dict]:
    """The collection's `count` most recently written documents (GET /collections/docs: from storage, newest etag
    first, no index; on one node that is the order of writes): the sample schema() types fields from, and where
    the child table `*` looks for arrays of objects."""
    command = _CollectionDocumentsCommand(collection, count)
    with _translated_errors(settings):
        _execute(store, command)
    return command.result


def every_document(store: DocumentStore, settings: Settings, collection: str) -> "QueryStream":
    """Every document of the collection, streamed (a collection query: from storage, no index): what schema()
    types the fields from with type_from_every_document."""
    return QueryStream(store, settings, collection_query(_ALL_DOCUMENTS_RQL, collection))


def newest_samples(
    store: DocumentStore, settings: Settings, selection: Selection, wanted: bool
) -> Iterator[tuple[str, list[dict]]]:
    """Each selected collection with its newest documents (empty when not `wanted`): read together where
    `sample_together` can, otherwise one collection at a time, when its turn comes."""
    together = sample_together(store, settings, selection) if wanted else {}
    for name in selection.counts:
        if name in together:
            yield name, together[name]
        else:
            yield name, newest_documents(store, settings, name) if wanted else []


def sample_together(store: DocumentStore, settings: Settings, selection: Selection) -> dict[str, list[dict]]:
    """The newest documents (up to 500) of each small collection when schema() samples them together: those
    `small_together` picks. One read of the database, newest etag first, ended as soon as every sample is full,
    replaces one request per collection. Empty when they are sampled one by one (`newest_documents`)."""
    names = small_together(selection, list(selection.counts))
    if not names:
        return {}
    wanted = {name: min(selection.counts[name], _SAMPLE_DOCUMENTS) for name in names}
    by_lower = {name.lower(): name for name in names}
    samples: dict[str, list[dict]] = {name: [] for name in names}
    unfilled = sum(1 for count in wanted.values() if count)
    if not unfilled:
        return samples
    stream = DatabaseStream(store, settings)
    try:
        for document in stream:
            name = by_lower.get((Metadata.of(document).collection or "").lower())
            if name is None or len(samples[name]) == wanted[name]:
                continue
            samples[name].append(document)
            if len(samples[name]) == wanted[name]:
                unfilled -= 1
                if not unfilled:
                    break
    finally:
        stream.close()
    return samples


def _read_one(store: DocumentStore, settings: Settings, collection: str) -> None:
    newest_documents(store, settings, collection, count=1)


def _wait_for_index(store: DocumentStore, settings: Settings, subject: str, changes: IndexQuery) -> float | None:
    """Wait for the index behind the query to cover every write made before the wait, logging progress.

    Returns the monotonic time at which the wait that succeeded was sent, or None if the index is still stale
    after `_INDEX_WAIT_SECONDS` (for example an auto index still being built for a large collection).
    """
    started = time.monotonic()
    while (waited := time.monotonic() - started) < _INDEX_WAIT_SECONDS:
        sent = time.monotonic()
        query = IndexQuery(changes.query)
        query.query_parameters = changes.query_parameters
        query.wait_for_non_stale_results = True
        query.wait_for_non_stale_results_timeout = timedelta(
            seconds=min(_INDEX_WAIT_SLICE_SECONDS, _INDEX_WAIT_SECONDS - waited)
        )
        query.page_size = 0
        command = QueryCommand(store, query, metadata_only=True, index_entries_only=False)
        with _translated_errors(settings):
            _execute(store, command)
        if not command.result.is_stale:
            return sent
        log.info(
            f"{subject}: waiting for RavenDB's index {command.result.index_name} to catch up "
            f"({time.monotonic() - started:.0f} s of up to {_INDEX_WAIT_SECONDS:.0f} s)"
        )
    log.warning(f"{subject}: index still stale after {_INDEX_WAIT_SECONDS:.0f} s; reading what it covers")
    return None


def stream_bound(stream: "QueryStream", covered_from: float, lookback: timedelta) -> str | None:
    """The newest `@last-modified` at which the stream is known to hold every document at its place: the server's
    clock when this process sent the request that proved the index current (`covered_from`, monotonic), less the
    lookback. None when the server sent no Date header."""
    server_time = stream.server_time_at(covered_from)
    return None if server_time is None else format_last_modified(server_time - lookback)


def _execute(store: DocumentStore, command: Any, node: Any = None) -> None:
    """Run `command` on the sync's node: the first node of the database topology that has not failed.

    Each node has its own storage and indexes, so one sync reads one node; the client moves to another only when a
    request fails (it would otherwise spread requests over every node: wire facts, pitfall 8). A given `node` is
    asked alone, without failover: a revisions-bin walk pins the node of its first page, as each node lists its
    bin in its own etag order. Errors are the client's; callers translate them.
    """
    executor = store.get_request_executor()
    chosen = node or _sync_node(executor)
    if chosen is None:
        executor.execute_command(command)
    else:
        executor.execute(chosen.current_node, chosen.current_index, command, node is None)


def _sync_node(executor: Any) -> Any:
    """The first node of the topology without a recorded failure; the client's preferred node (which waits for
    the first topology) while it knows none; None when every node has failed (the client then chooses)."""
    nodes = getattr(executor, "topology_nodes", None)
    if not nodes:
        return executor.preferred_node
    for node in nodes:
        try:
            return executor.get_requested_node(node.cluster_tag, throw_if_contains_failures=True)
        except RequestedNodeUnavailableException:
            continue
    return None


class RevisionsBinWalk:
    """The revisions-bin entries newer than the state's newest entry handled, newest first, one request per page.

    RavenDB 6.x/7.x skips `start` raw delete revisions and takes `pageSize` of them before dropping those whose
    document exists again or was deleted again later, so a page can be short, or empty, while older entries
    remain: pages advance by the page size, and after an empty page the next one asks for twice as many records
    (up to 100,000). A walk stops only where it proves it reached what the last sync read: that sync's newest
    entry (same change vector), an entry deleted before it, a 304 to `If-None-Match` with that entry's change
    vector (nothing deleted since), or past the count of revisions the node reports (the end of the bin). Every
    request of a walk goes to the node of its first one: each node lists its bin in its own etag order.
    """

    def __init__(self, store: DocumentStore, settings: Settings, position: BinPosition):
        self.store, self.settings, self.position = store, settings, position
        self.reached = False  # known after iteration: stopped at what the last sync read, not at the end of the bin
        self.requests = 0
        self.node: Any = None  # the node every request of this walk goes to, once the first one chose it

    def __iter__(self) -> Iterator[dict]:
        size, start, bound = self.settings.batch_size, 0, None
        page = self._page(start, size, if_none_match=self.position.change_vector)
        while page is not None:
            for entry in page:
                if self.position.reached(Metadata.of(entry)):
                    self.reached = True
                    return
                yield entry
            start += size
            if len(page) < size:  # short or empty: the end only if no raw record can lie beyond
                if bound is None or start >= bound:
                    bound = self._count_of_revisions()
                if start >= bound:
                    return
            size = self.settings.batch_size if page else min(size * 2, _MAX_BATCH_SIZE)
            page = self._page(start, size)
        self.reached = True  # 304 Not Modified

    def _page(self, start: int, size: int, if_none_match: str | None = None) -> list[dict] | None:
        self.requests += 1
        command = self._send(_RevisionsBinPageCommand(start, size, if_none_match))
        if command.continuation_token:
            raise SourceError(
                "database_name",
                f"{self.settings.database!r} is a sharded database: RavenDB pages its revisions bin across shards "
                "with a continuation token that an empty page loses, so deletes cannot be read completely; "
                "sharded databases with revisions are not supported",
            )
        return command.result

    def _count_of_revisions(self) -> int:
        """Every revision the node keeps (delete revisions among them): no bin page starts beyond it."""
        command = self._send(GetStatisticsOperation().get_command(self.store.conventions))
        return command.result.count_of_revision_documents or 0

    def _send(self, command: Any) -> Any:
        """Send `command` to the walk's node: the sync's node when the walk began, then that node alone."""
        self.node = self.node or _sync_node(self.store.get_request_executor())
        with _translated_errors(self.settings):
            _execute(self.store, command, self.node)
        return command


class _RevisionsBinPageCommand(GetRevisionsBinEntryCommand):
    """GET /revisions/bin?start=&pageSize=, optionally with If-None-Match. `result`: the entries, or None for
    304 Not Modified. The page is not kept in the client's HTTP cache (each is read once)."""

    def __init__(self, start: int, page_size: int, if_none_match: str | None = None):
        super().__init__(start, page_size)
        self.if_none_match = if_none_match
        self.continuation_token = False  # a sharded database's answer carries one
        self._can_cache = False

    def create_request(self, node: Any) -> requests.Request:
        request = super().create_request(node)
        if self.if_none_match is not None:
            request.headers["If-None-Match"] = f'"{self.if_none_match}"'
        return request

    def set_response(self, response: str | None, from_cache: bool) -> None:
        if response is None:  # 304: the executor hands over its (absent) cached copy
            self.result = None
            return
        body = json.loads(response)
        self.continuation_token = any(key.lower() == "continuationtoken" for key in body)
        self.result = body["Results"]


class _CollectionDocumentsCommand(RavenCommand):
    """GET /collections/docs?name=&start=0&pageSize=: a page of the collection's documents, newest etag first, from
    storage (RavenDB's CollectionsHandler, in one read transaction). `result`: the documents. Not kept in the
    client's HTTP cache."""

    def __init__(self, collection: str, page_size: int):
        super().__init__(list)
        self.collection, self.page_size = collection, page_size
        self._can_cache = False

    def create_request(self, node: Any) -> requests.Request:
        name = quote(self.collection, safe="")
        return requests.Request(
            "GET",
            f"{node.url}/databases/{node.database}/collections/docs?name={name}&start=0&pageSize={self.page_size}",
        )

    def set_response(self, response: str | None, from_cache: bool) -> None:
        if response is None:
            self._throw_invalid_response()
        self.result = json.loads(response)["Results"]

    def is_read_request(self) -> bool:
        return True


class QueryStream:
    """The documents of a query, streamed as JSON lines and parsed by the client's own JSONL parser.

    Not the session's stream(): that deep-copies every document and may import the Python class a document
    names in its metadata. A broken stream (connection lost, or an `{"Error": ...}` line the server writes when
    the query fails mid-way) is a TransientSourceError.
    """

    def __init__(self, store: DocumentStore, settings: Settings, query: IndexQuery | None):
        """`query` None: a subclass's request (DatabaseStream)."""
        self.store, self.settings, self.query = store, settings, query
        self.is_stale = False  # known once open
        self._response: Any = None
        self._received_at = 0.0  # monotonic time the response headers arrived
        self._server_date: datetime | None = None  # its Date header: whole seconds, never later than the server
        self._last_line = b""

    def open(self) -> "QueryStream":
        """Send the request and read what precedes the documents; they follow on iteration."""
        with _translated_errors(self.settings):
            _execute(self.store, command := self._command())
        self._received_at = time.monotonic()
        self._response = command.result.response
        self._server_date = _http_date(self._response.headers.get("Date"))
        try:
            with self._broken_stream_errors():
                self._start()
        except BaseException:
            self.close()
            raise
        return self

    def _command(self) -> Any:
        return QueryStreamCommand(self.store.conventions, self.query)

    def _start(self) -> None:
        """A query stream begins with its statistics line."""
        self._parser = JSONLRavenStreamParser(self._lines())
        self.is_stale = bool(self._parser.next_query_statistics().get("IsStale"))

    def _documents(self) -> Iterator[dict]:
        while True:
            try:
                yield self._parser.next_item()
            except StopIteration:
                return

    def server_time_at(self, moment: float) -> datetime | None:
        """The server's clock at the local monotonic `moment` before this response, never later than it was."""
        if self._server_date is None:
            return None
        return self._server_date - timedelta(seconds=self._received_at - moment)

    def close(self) -> None:
        if self._response is not None:
            self._response.close()

    def __iter__(self) -> Iterator[dict]:
        if self._response is None:
            self.open()
        try:
            with self._broken_stream_errors():
                yield from self._documents()
        finally:
            self.close()

    def _lines(self) -> Iterator[bytes]:
        for line in self._response.iter_lines(chunk_size=_STREAM_READ_BYTES):
            self._last_line = line
            yield line

    @contextmanager
    def _broken_stream_errors(self) -> Iterator[None]:
        with _translated_errors(self.settings):
            try:
                yield
            except RavenException:
                raise
            except RuntimeError as exc:  # a line that is neither statistics nor a document
                raise TransientSourceError(
                    "ravendb_urls", f"RavenDB broke off a stream from {self._response.url}: {self._failure(exc)}"
                ) from exc

    def _failure(self, exc: RuntimeError) -> str:
        try:
            reported = json.loads(self._last_line).get("Error")
        except (ValueError, AttributeError):
            reported = None
        return _first_line(str(reported)) if reported else _first_line(str(exc))


class DatabaseStream(QueryStream):
    """Every document of the database, newest etag first, read from storage (GET /streams/docs: no index).

    Its lines are bare documents (RavenDB's StreamJsonlResultsWriter), with no statistics line before them, and
    are parsed here: the client's parser takes any line with an `Item` key for a query's `{"Item": ...}` wrapper,
    which would turn a document with a field named `Item` into that field's value."""

    def __init__(self, store: DocumentStore, settings: Settings):
        super().__init__(store, settings, None)

    def _command(self) -> Any:
        return StreamCommand(_ALL_DOCUMENTS_STREAM)

    def _start(self) -> None:
        pass

    def _documents(self) -> Iterator[dict]:
        for line in self._lines():
            if line.strip():
                try:
                    document = json.loads(line)
                except ValueError:
                    raise RuntimeError("a line that is not JSON") from None
                if not isinstance(document, dict) or "@metadata" not in document:
                    raise RuntimeError("a line that is not a document (no @metadata)")
                yield document


def _http_date(value: str | None) -> datetime | None:
    try:
        return parsedate_to_datetime(value).astimezone(timezone.utc) if value else None
    except (TypeError, ValueError):
        return None


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
    if "DisableQueryOptimizerGeneratedIndexes" in text:
        return SourceError(
            None,
            f"RavenDB at {urls} refuses the connector's query: it needs an auto index on @last-modified, which the "
            "database setting Indexing.DisableQueryOptimizerGeneratedIndexes = true forbids; set it to false",
        )
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


# ----------------------------------------------------------------------------------------------------------
# The sync itself: what update() runs, in its order: child tables, deletes, new collections, each collection


def select_child_tables(store: DocumentStore, settings: Settings, selection: Selection, state: SyncState) -> None:
    """Settle which arrays of each collection land as child tables in this sync (`*`: the arrays of objects in
    the same sample schema() reads, and those it found before). A collection whose selection changed is read
    again from the beginning; a child table no longer selected has its rows marked deleted."""
    collections = list(selection.counts)
    for collection, sample in newest_samples(store, settings, selection, wanted=settings.child_tables.every):
        paths = settings.child_tables.paths_of(collection, sample, collections)
        if settings.child_tables.every:  # an array `*` found stays a table when later samples no longer show it
            paths = tuple(sorted({*paths, *map(tuple, state.children.paths.get(collection, []))}))
        changed, dropped = state.children.select(collection, paths)
        if not changed:
            continue
        state.read_again(collection)  # reading every document again fills the new tables
        for table in dropped:
            log.info(f"{table}: no longer a child table; its rows are marked deleted")
            op.truncate(table)
        tables = ", ".join(state.children.table_names(collection)) or "none"
        again = "; reading every document again" if collection in state.cursors else ""
        log.info(f"{collection}: child tables {tables}{again}")


def sync_deletes(store: DocumentStore, settings: Settings, collections: list[str], state: SyncState) -> int:
    """Mark deleted the documents that entered the revisions bin since the last sync (see RevisionsBinWalk);
    return how many.

    The first sync only records where the bin stands: its tables start from the documents that exist now.
    Entries of collections not synced are skipped. It runs before any upsert: a document deleted and re-created
    since the last sync is not in the bin (RavenDB drops it) and is upserted afterwards.
    """
    return _retrying(
        "revisions bin", "reading it again", lambda: _mark_deleted(store, settings, set(collections), state)
    )


def _mark_deleted(store: DocumentStore, settings: Settings, synced: set[str], state: SyncState) -> int:
    first_sync = state.deletes.since is None
    walk = RevisionsBinWalk(store, settings, state.deletes)
    newest, deleted = None, 0
    for entry in walk:
        meta = Metadata.of(entry)
        newest = newest or meta
        if first_sync:
            break
        if meta.collection in synced:
            delete_document(meta.collection, meta.id, state)
            deleted += 1
    if not first_sync and not walk.reached and state.deletes.change_vector is not None:
        log.warning(
            f"revisions bin: neither the entry deleted at {state.deletes.since} that the last sync read last nor any "
            "older one is listed any more: documents deleted before this sync that were purged from the bin "
            "(revisions bin cleaner, revisions expiry) are not marked deleted; reconcile_deletes_hours catches them"
        )
    state.deletes.advance(newest)
    if deleted or walk.requests > 1:
        log.info(f"revisions bin: marked {deleted} deleted documents ({walk.requests} requests)")
    return deleted


def read_together(selection: Selection, state: SyncState) -> list[str]:
    """The new collections whose first sync is one read of the whole database (`sync_new_collections`): those
    `small_together` picks among the collections read from the beginning (never synced, or starting over).
    Larger collections, and a few small ones in a large database, are read one by one in `@last-modified` order,
    where the cursor advances, and checkpoints save it, as the documents stream."""
    return small_together(selection, [name for name in selection.counts if state.starts_over(name)])


def sync_new_collections(
    store: DocumentStore,
    settings: Settings,
    collections: list[str],
    documents: int,
    state: SyncState,
    progress: "Progress",
) -> int:
    """Upsert every document of `collections`, all read from the beginning, from one stream of every document of
    the database (its `documents`), newest etag first, retrying transient failures.

    The stream reads storage, not an index: nothing to build or wait for. RavenDB renews the read transaction of a
    long stream and resumes it after the last etag sent, so every document not written during the stream is read;
    one written during it has a `@last-modified` past the moment the stream began, which bounds each cursor as it
    bounds a collection's read (`stream_bound`). The order is not `@last-modified` order, so each cursor is held
    (checkpoints save it where it was) until the stream has ended; a sync that fails before then reads them again,
    skipping the documents its checkpoints recorded as landed.
    """
    names = {name.lower(): name for name in collections}
    log.info(
        f"{len(collections):,} new collections: sync started, in one read of the database ({documents:,} documents)"
    )
    started = time.monotonic()
    progress.start_read(f"{len(collections):,} new collections (one read of the database)", documents, len(collections))
    cursors = [state.cursor(name) for name in collections]
    for cursor in cursors:
        cursor.hold()
    upserted, bound = 0, None

    def attempt() -> None:
        nonlocal upserted, bound
        covered_from = time.monotonic()
        stream = DatabaseStream(store, settings).open()
        bound = stream_bound(stream, covered_from, settings.lookback)
        if bound is None:
            log.warning("new collections: RavenDB sent no Date header; their cursors stay and they are read again")
        upserted += _upsert_changes(
            stream, lambda meta: names.get((meta.collection or "").lower()), state, bound, progress
        )

    _retrying("new collections", "reading the database again", attempt)
    for cursor in cursors:
        cursor.release()
        cursor.finish(bound)
    seconds = time.monotonic() - started
    log.info(
        f"{len(collections):,} new collections: synced {upserted} documents in {seconds:.1f} s "
        f"({upserted / max(seconds, 1e-6):,.0f} docs/s)"
    )
    return upserted


def sync_collection(
    store: DocumentStore, settings: Settings, collection: str, state: SyncState, progress: "Progress"
) -> int:
    """Upsert every document of `collection` changed since its cursor, retrying transient failures.

    Its state is saved at the next checkpoint, which comes every 1,000 records across collections (see Checkpoints)."""
    since = state.cursor(collection).since
    log.info(f"{collection}: sync started from {'the beginning' if since == _BEGINNING_OF_TIME else since}")
    started = time.monotonic()
    progress.start_collection(collection)
    documents = 0

    def attempt() -> None:
        nonlocal documents
        documents += _stream_into_destination(store, settings, collection, state, progress)

    _retrying(collection, "resuming from the cursor", attempt)
    seconds = time.monotonic() - started
    log.info(
        f"{collection}: synced {documents} documents in {seconds:.1f} s ({documents / max(seconds, 1e-6):,.0f} docs/s)"
    )
    return documents


def _stream_into_destination(
    store: DocumentStore, settings: Settings, collection: str, state: SyncState, progress: "Progress"
) -> int:
    """Upsert the documents changed since the cursor; move the cursor only as far as the read provably covers.

    The index behind the query answers from a snapshot, with each document's current version at its indexed place:
    a document changed after the snapshot comes back early carrying its new `@last-modified`, one written after it
    not at all. Every document no newer than the moment the server began the query (its clock, less the lookback)
    is at its place, so only those move the cursor (`stream_bound`); newer ones are upserted and read again next
    sync. A stale index is first waited for, and the query sent again: the moment the wait began then bounds the
    cursor. If it is still stale after the wait, what it returns is upserted and moves no cursor.
    """
    cursor = state.cursor(collection)
    stream, bound = _open_changes(store, settings, collection, changed_since_query(collection, cursor.since))
    upserted = _upsert_changes(stream, lambda meta: collection, state, bound, progress)
    cursor.finish(bound)
    return upserted


def _open_changes(
    store: DocumentStore, settings: Settings, subject: str, query: IndexQuery
) -> tuple["QueryStream", str | None]:
    """Open the stream of `query` (changes since a cursor), after waiting for its index if it was stale; with the
    `@last-modified` up to which it is known to hold every document at its place (`stream_bound`; None: unknown)."""
    covered_from: float | None = time.monotonic()
    stream = QueryStream(store, settings, query).open()
    if stream.is_stale:
        stream.close()
        covered_from = _wait_for_index(store, settings, subject, query)
        stream = QueryStream(store, settings, query).open()
    bound = None if covered_from is None else stream_bound(stream, covered_from, settings.lookback)
    if bound is None and covered_from is not None:
        log.warning(f"{subject}: RavenDB sent no Date header; the cursor stays and this read is repeated next sync")
    return stream, bound


def _upsert_changes(
    stream: "QueryStream",
    collection_of: Callable[[Metadata], str | None],
    state: SyncState,
    bound: str | None,
    progress: "Progress",
    database: DatabaseCursor | None = None,
) -> int:
    """Upsert what the stream returns into the table of the collection `collection_of` names (None: a document
    no table takes), unless it landed already; each document read may move the cursor of its collection, or the
    `database` cursor when the stream reads the whole database."""
    upserted = 0
    for document in stream:
        meta = Metadata.of(document)
        collection = collection_of(meta)
        cursor = database if database is not None else state.cursor(collection) if collection is not None else None
        if collection is None or cursor is None:
            if cursor is not None:
                cursor.record(meta, bound, landed=False)
            progress.document_read(upserted=False)
            continue
        digest = KeptVersions.hash_of(meta)
        if cursor.already_synced(meta, digest) or (database is not None and database.landed_before(collection, meta)):
            cursor.record(meta, bound, landed=False)  # landed before: it may still move the cursor
            progress.document_read(upserted=False)
            continue
        upsert_document(collection, document, state)
        cursor.record(meta, bound, digest=digest)
        upserted += 1
        progress.document_read(upserted=True)
        state.checkpoints.record_written()
    return upserted


def reads_database(settings: Settings, selection: Selection) -> bool:
    """Whether this sync reads the changes of its collections in one query of the whole database (`sync_database`)
    rather than one query per collection (`sync_collection`).

    One query of the database takes one request and one auto index (`Auto/AllDocs/By@metadata.@last-modified`)
    whatever the number of collections, but reads the changes of every collection, selected or not. One query
    per collection takes a request and an auto index per collection (and, where the application already has an
    auto index on that collection, RavenDB builds a merged one from scratch) but reads only what is selected.
    Per collection therefore when `collection_name` lists at most `_PER_COLLECTION_READS` collections, the cost of
    which is bounded and which may be a small part of a busy database; the whole database otherwise (every
    collection, or a longer list)."""
    return not settings.collections or len(selection.counts) > _PER_COLLECTION_READS


def sync_database(
    store: DocumentStore,
    settings: Settings,
    collections: list[str],
    read_now: list[str],
    state: SyncState,
    progress: "Progress",
) -> int:
    """Upsert every document of `collections` changed since the database's cursor, in one query of the whole
    database in `@last-modified` order, retrying transient failures.

    The cursor rules are those of a collection's read (`_stream_into_destination`). Documents of other
    collections, system collections (`@hilo`) and documents without a collection are read and skipped. The
    collections this sync read on their own (`read_now`: a first read, or the last read of a cursor of its own,
    such as a state saved by an earlier version) join the database's cursor first (DatabaseCursor.join): the
    read starts at the oldest, and skips what landed before. When every collection was read on its own in this
    sync, nothing is left to read: the read of the database is left to the next sync.
    """
    database = state.join_database(collections)
    if set(collections) <= set(read_now):
        return 0
    names = {name.lower(): name for name in collections}
    log.info(f"{len(collections):,} collections: sync started from {database.since}, in one query of the database")
    started = time.monotonic()
    progress.start_read(f"{len(collections):,} collections (one query of the database)", 0, len(collections))
    progress.collections -= len(set(collections) & set(read_now))  # counted by their own read
    upserted = 0

    def attempt() -> None:
        nonlocal upserted
        query = collection_query(_DATABASE_CHANGED_SINCE_RQL, "", since=database.since)
        stream, bound = _open_changes(store, settings, "database", query)
        upserted += _upsert_changes(
            stream, lambda meta: names.get((meta.collection or "").lower()), state, bound, progress, database
        )
        database.finish(bound)

    _retrying("database", "resuming from the cursor", attempt)
    seconds = time.monotonic() - started
    log.info(
        f"{len(collections):,} collections: synced {upserted} documents in {seconds:.1f} s "
        f"({upserted / max(seconds, 1e-6):,.0f} docs/s)"
    )
    return upserted


def upsert_document(collection: str, document: dict, state: SyncState, checkpoint_on_widen: bool = True) -> None:
    """Upsert the document's row and its child-table rows, and delete the element rows an earlier version left.

    The state keeps, per child table, the most elements one array has had (checkpointed before rows beyond it
    are written), so the rows of removed elements are found without keeping anything per document. In a
    reconciliation the widening waits for the reconciliation's own checkpoint, which must carry its truncate and
    its touches together."""
    columns = state.columns(collection)
    if not state.children.tables(collection):
        op.upsert(table_name(collection), flatten(document, columns))
        return
    rows = state.children.rows(collection, document, columns)
    if state.children.widen(rows.widths) and checkpoint_on_widen:
        state.checkpoints.save()
    for table, row in rows.upserts:
        op.upsert(table, row)
    for table, key in rows.stale:
        op.delete(table, key)


def delete_document(collection: str, doc_id: str, state: SyncState) -> None:
    """Mark a deleted document's row deleted, and every element row it may have in its child tables."""
    op.delete(table_name(collection), {"Id": doc_id})
    for table, key in state.children.deleted_rows(collection, doc_id):
        op.delete(table, key)


def reconciliation_due(settings: Settings, state: SyncState, collection: str, now: datetime) -> bool:
    if settings.reconcile_every is None:
        return False
    last = state.reconciled_at.get(collection)
    return last is None or now - datetime.fromisoformat(last) >= settings.reconcile_every


def reconcile_deletes(
    store: DocumentStore,
    settings: Settings,
    collections: list[str],
    state: SyncState,
    progress: "Progress | None" = None,
) -> None:
    """Mark deleted every row of `collections` whose document no longer exists, without ever marking a live one.

    op.truncate soft-deletes every row synced before it; each document that exists is then touched again
    (op.update of its Id, or a full upsert if it changed after the cursor). Truncates and touches reach the
    destination together at the next checkpoint, so no live row is ever seen deleted. Child tables are
    truncated too, and each element row of an existing document touched by its key.

    The documents are read in one read of the database from storage, newest etag first (GET /streams/docs), never
    by position: when RavenDB renews the read transaction of the long read (encrypted databases, 7.x compressed
    documents), it resumes below the last etag read, so every document unchanged since the read began is read once.
    A document rewritten during the read moves above it and may be missed; it is newer than its collection's
    cursor, so the read of each collection's changes that follows lands it before the checkpoint.
    """
    started = time.monotonic()
    by_lower = {name.lower(): name for name in collections}
    documents = dict.fromkeys(collections, 0)
    for collection in collections:
        op.truncate(table_name(collection))
        for child_table in state.children.table_names(collection):
            op.truncate(child_table)
    for document in DatabaseStream(store, settings):
        meta = Metadata.of(document)
        collection = by_lower.get((meta.collection or "").lower())
        if collection is not None:
            _touch(collection, document, meta, state)
            documents[collection] += 1
    progress = progress or Progress(settings.progress_seconds, documents)
    for collection in collections:
        _retrying(
            collection,
            "reading its changes again",
            lambda collection=collection: _stream_into_destination(store, settings, collection, state, progress),
        )
        state.reconciled_at[collection] = datetime.now(timezone.utc).isoformat()
    state.checkpoints.save()
    seconds = time.monotonic() - started
    for collection in collections:
        log.info(f"{collection}: reconciled deletes against {documents[collection]} documents ({seconds:.1f} s)")


def _touch(collection: str, document: dict, meta: Metadata, state: SyncState) -> None:
    """A reconciliation found the document: its row (and element rows) are live again, in full if it changed
    after the cursor."""
    cursor = state.cursor(collection)  # its changes are read by its own query next (a joined one leaves the database's)
    if meta.last_modified > cursor.since:
        upsert_document(collection, document, state, checkpoint_on_widen=False)
        cursor.record(meta, None)  # the read of the changes that follows does not land it again
    elif not state.children.tables(collection):
        op.update(table_name(collection), {"Id": meta.id})
    else:
        for row_table, key in state.children.row_keys(collection, document, state.columns(collection)):
            op.update(row_table, key)


def _retrying(subject: str, again: str, action: Callable[[], Any]) -> Any:
    """Run `action`; after a transient failure wait (capped exponential backoff) and run it again, at most
    `_MAX_ATTEMPTS` times in all. Final errors pass through at once."""
    attempt = 1
    while True:
        try:
            return action()
        except TransientSourceError as exc:
            if attempt == _MAX_ATTEMPTS:
                raise SourceError(exc.setting, f"{exc.message} ({subject}: gave up after {attempt} attempts)") from exc
            delay = min(_BACKOFF_CAP_SECONDS, _BACKOFF_FIRST_SECONDS * 2 ** (attempt - 1))
            log.warning(f"{subject}: {exc}; {again} in {delay:.0f} s")
            time.sleep(delay)
            attempt += 1


# ----------------------------------------------------------------------------------------------------------
# Checkpoints and progress: what a sync saves and when, and what it tells the log while it runs


class Checkpoints:
    """When a sync saves its state, and what it saved last.

    A checkpoint is due every 1,000 records handed to Fivetran, counted across collections (a sync of many small
    collections checkpoints as often as one large collection), and one saves the final state unless the last one
    already did. A sync that fails therefore reads again at most the 999 documents it upserted after its last
    checkpoint, which land again as the same rows; one that fails while new collections are read together (their
    cursors held) reads them again whole, at most `_MAX_READ_TOGETHER` documents.
    """

    def __init__(self, state: SyncState):
        self.state = state
        self.unsaved_records = 0  # handed to Fivetran since the last checkpoint
        self.last_saved: dict | None = None  # what this sync's last checkpoint saved
        self.loaded: dict | None = None  # the state the sync began with, as Fivetran gave it

    def record_written(self) -> None:
        """One more record handed to Fivetran; save when a checkpoint is due."""
        self.unsaved_records += 1
        if self.unsaved_records >= _CHECKPOINT_EVERY_RECORDS:
            self.save()

    def save(self) -> None:
        """Save the state; the records handed to Fivetran before it reach the destination with it."""
        saved = self.state.to_dict()
        op.checkpoint(saved)
        self.unsaved_records, self.last_saved = 0, saved

    def save_if_changed(self, nothing_read: bool = False) -> None:
        """Save unless the last checkpoint of this sync saved the same state with no record since, or this sync
        read no document at all (`nothing_read`), saved nothing and changed nothing of the state it began with but
        where its cursors stand: no document existed past those cursors when its reads began, so the next sync reads
        from them no more than from the bounds this one reached, and nothing is saved for a sync that found
        nothing."""
        if self.unsaved_records > 0:
            self.save()
            return
        current = self.state.to_dict()
        unchanged = self.loaded and _without_positions(current) == _without_positions(self.loaded)
        if nothing_read and self.last_saved is None and unchanged:
            return
        if current != self.last_saved:
            self.save()


def _without_positions(state: dict) -> dict:
    """A saved state without where its cursors stand and the versions they keep: what a sync that lands nothing
    may leave as it found it."""
    stripped = {key: value for key, value in state.items() if key != "kept"}
    stripped["cursors"] = sorted(state.get("cursors", {}))
    if "database" in state:
        database = state["database"]
        stripped["database"] = {"collections": database.get("collections"), "floors": database.get("floors")}
    return stripped


class Progress:
    """While a read streams, at most one line every `every_seconds`: documents read, how many it will read from
    RavenDB's collection statistics (read once at the start of the sync), percent, rate and time left. At the end,
    one summary line for the sync: collections, documents upserted, deletes, seconds.

    A collection's count is of the whole collection: for an incremental sync, which reads only what changed, the
    percent is low and the time left an upper bound; documents written during the sync can take it past 100%. The
    first read of new collections together reads the whole database and counts every document it reads.
    """

    def __init__(self, every_seconds: float, counts: dict[str, int]):
        self.every_seconds, self.counts = every_seconds, counts
        self.started = time.monotonic()
        self.collections = self.documents = 0
        self.read = 0  # documents every read of this sync returned
        self.label, self.total, self.done = "", 0, 0
        self.read_started, self.next_line = self.started, math.inf

    def start_collection(self, collection: str) -> None:
        self.start_read(collection, self.counts.get(collection, 0), collections=1)

    def start_read(self, label: str, total: int, collections: int) -> None:
        self.collections += collections
        self.label, self.total, self.done = label, total, 0
        self.read_started = time.monotonic()
        self.next_line = self.read_started + self.every_seconds

    def document_read(self, upserted: bool) -> None:
        self.read += 1
        self.done += 1
        self.documents += upserted
        now = time.monotonic()
        if now >= self.next_line:
            self.next_line = now + self.every_seconds
            log.info(self._progress_line(now))

    def _progress_line(self, now: float) -> str:
        rate = self.done / max(now - self.read_started, 1e-6)
        percent = 100 * self.done / self.total if self.total else 100.0
        left = max(self.total - self.done, 0) / rate
        return (
            f"{self.label}: {self.done:,} of {self.total:,} documents ({percent:.0f}%), {rate:,.0f} docs/s, "
            f"about {_duration(left)} left"
        )

    def finished(self, deletes: int, state_bytes: int | None) -> None:
        """The summary line; `state_bytes`: the size of the state saved last, None when the sync saved none."""
        seconds = time.monotonic() - self.started
        state = "state unchanged" if state_bytes is None else f"state {_size(state_bytes)}"
        log.info(
            f"sync finished: {self.collections} collections, {self.documents:,} documents upserted, "
            f"{deletes:,} deletes, {seconds:.1f} s, {state}"
        )


def _size(count: int) -> str:
    return f"{count:,} bytes" if count < 10_000 else f"{count / 1000:,.0f} KB"


def _duration(seconds: float) -> str:
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


connector = Connector(update=update, schema=schema, configuration_form=configuration_form)


if __name__ == "__main__":
    with open("configuration.json", encoding="utf-8") as configuration_file:
        connector.debug(configuration=json.load(configuration_file))

"""Fivetran Connector SDK connector that syncs RavenDB collections into a Fivetran destination.

Each collection becomes one table keyed by the document id. A collection's first sync reads it whole (new small
collections together, in one stream of the whole database; larger ones one by one, ordered by
`@metadata.'@last-modified'`). Every later sync reads the changes of every collection in one query of the whole
database (`from @all_docs`, one auto index, one cursor), ordered by `@metadata.'@last-modified'` from the cursor
saved in the state; when `collection_name` lists at most 10 collections, each by its own query instead. Each
document is flattened into a row and upserted, checkpointing every 1,000 records (counted across collections) and
at the end. Documents deleted from collections with revisions enabled are read from the revisions bin and marked
deleted. Arrays named by the `child_tables` setting land as tables of their own, one row per element. With
`history_collections`, every revision RavenDB keeps of those collections' documents lands as a row of
`<table>_history`, valid from its `@last-modified` until the next revision's (read per node by etag: HistoryWalk).

A cursor is RavenDB's own 7-digit `@last-modified` string, and the query reads `>=` it. It moves only to
documents no newer than the moment the server began the query, less `lookback_seconds`, and to that moment once
the read has ended: RavenDB returns each document's current version at its indexed place, so later writes may come
back out of order or not at all, and a cluster node may receive another node's write late with its original
timestamp. Documents past that point are upserted and read again next sync; the versions kept in the state (a
short hash of id and change vector each) keep an unchanged one from landing twice.

The module reads in the order of a sync, one labelled section per concern: the entry points (schema(), update(),
the setup form), errors, settings, certificates, state, rows and types, child tables, history tables, reading
RavenDB, the sync itself, checkpoints and progress.
"""

import base64
import binascii
import bisect
import concurrent.futures
import decimal
import difflib
import functools
import getpass
import hashlib
import heapq
import importlib.metadata
import json
import math
import os
import platform
import re
import shutil
import socket
import ssl
import tempfile
import time
import unicodedata
from array import array
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
_DEFAULT_READ_TIMEOUT_SECONDS = 120.0  # every request after the first: the longest silence (above RavenDB's 60 s)
_MAX_READ_TIMEOUT_SECONDS = 3600.0
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
_CHILD_WIDTH_AT_MOST = 8  # arrays up to this long raise their child table's shared bound; longer ones get their own
_CHILD_LONG_ARRAYS = 1_000  # parents with a bound of their own, per child table; past it the shared bound doubles

# History tables
_HISTORY_SUFFIX = "_history"  # a history table is its collection's table name and this
_HISTORY_COLUMNS = ("change_vector", "valid_from", "valid_to", "is_current", "is_deleted")  # never a field's column

# Reading RavenDB
_STREAM_READ_BYTES = 1 << 16  # bytes per socket read of a stream (the client's default is 512)
_CONNECT_TIMEOUT_SECONDS = 5.0  # every request: time to open the TCP connection
_ANSWER_TIMEOUT_SECONDS = 10.0  # the first request of a sync or connection test: time to TLS and HTTP answers
_INDEX_WAIT_SECONDS = 120.0  # how long a sync waits for a stale auto index to catch up before reading on
_INDEX_WAIT_SLICE_SECONDS = 15.0  # one wait request; a progress line is logged after each that ends still stale
_PER_COLLECTION_READS = 10  # at most this many configured collections may be read one query each (reads_database)
_SMALL_COLLECTION = 1_000  # documents: new collections this small are read together, in one read of the database
_MAX_READ_TOGETHER = 50_000  # documents of the collections read (or sampled) together in one read of the database
_ALL_DOCUMENTS_STREAM = "streams/docs?format=jsonl"  # every document of the database, newest etag first
_SAMPLE_DOCUMENTS = 500  # newest documents per collection that schema() reads to declare text columns
_CONTENTS_PER_GET = 1_000  # change vectors per GET /revisions inside a POST /multi_get
_LOOKUPS_PER_REQUEST = 100  # documents whose previous revision one POST /multi_get asks for
_LOOKUP_PAGE = 8  # newest revisions asked per document: past the new ones, the one before them
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
    one per child-table array, keyed by the document Id and the element's index; and one per history collection,
    keyed by the document Id and the revision's change vector."""
    settings = validate_configuration(configuration)
    tables = []
    with open_store(settings) as store:
        selection = resolve_collections(store, settings, known=())
        collections = selection.counts
        history = set(history_collections(store, settings, collections))
        settings.child_tables.check_collections(settings.database, list(collections))
        child_tables_sampled = settings.child_tables.every or bool(settings.child_tables.paths)
        wants_newest = child_tables_sampled or not settings.type_from_every_document
        for name, newest in newest_samples(store, settings, selection, wanted=wants_newest):
            paths = settings.child_tables.paths_of(name, newest, collections)
            if settings.type_from_every_document:
                sample: Callable[[], Iterable[dict]] = functools.partial(every_document, store, settings, name)
            else:
                sample = functools.partial(list, newest)
            tables += declare_tables(name, child_tables(name, paths), sample)
            if name in history:
                tables.append(declare_history_table(name, sample()))
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
        revisions = revisions_configuration_or_why(store, settings)
        log.info(deletes_line(settings, list(collections), revisions))
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
        sync_history(store, settings, collections, sync_state, revisions)
    sync_state.children.finish(collections)
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
        step = "TLS and client certificate"
        with open_store(settings) as store:
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
        "history_collections",
        "History tables",
        "Every revision RavenDB keeps of a document as a row of <table>_history, with valid_from, valid_to and "
        "is_current: * for every collection whose revisions are enabled, or comma-separated collections. "
        "Empty: off.",
        "",
        lambda text, value: _parse_history(text, value("collection_name")),
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
        "read_timeout_seconds",
        "Read timeout (seconds)",
        "How long a request or a stream may go without receiving anything before it counts as failed (and is "
        f"retried); keep it above RavenDB's 60 s wait for a new index (default {_DEFAULT_READ_TIMEOUT_SECONDS:g}).",
        f"{_DEFAULT_READ_TIMEOUT_SECONDS:g}",
        lambda text, value: _parse_seconds("read_timeout_seconds", text, 1, _MAX_READ_TIMEOUT_SECONDS),
        default=f"{_DEFAULT_READ_TIMEOUT_SECONDS:g}",
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
    history: "HistorySelection"  # history_collections; empty: off
    read_timeout: float  # read_timeout_seconds: how long a request or stream may receive nothing


def validate_configuration(configuration: dict) -> Settings:
    """Parse and check every setting of _SETTINGS before any I/O, in the table's order (a setting that another
    one needs is parsed when it is asked for); raise ConfigurationError naming the first bad one."""
    _check_keys(configuration)
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
        history=values["history_collections"],
        read_timeout=values["read_timeout_seconds"],
    )


_SETTING_BY_KEY = {setting.key: setting for setting in _SETTINGS}


def _check_keys(configuration: dict) -> None:
    """Refuse a key that is no setting (a typo would otherwise leave the setting at its default, silently)."""
    known = list(_SETTING_BY_KEY)
    for key in sorted(configuration, key=str):
        if key not in known:
            nearest = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
            hint = f"did you mean {nearest[0]}?" if nearest else f"the settings are {', '.join(sorted(known))}"
            raise ConfigurationError(str(key), f"unknown setting; {hint}")


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


def _parse_history(text: str | None, collections: tuple[str, ...]) -> "HistorySelection":
    """`*`, or comma-separated collections (among collection_name's, when it names any)."""
    if text is None:
        return HistorySelection()
    if text == "*":
        return HistorySelection(every=True)
    names = tuple(name.strip() for name in text.split(","))
    synced = {name.lower() for name in collections}
    for name in names:
        if not name:
            raise ConfigurationError("history_collections", "contains an empty name (expected * or Name1,Name2,...)")
        if name.startswith("@"):
            raise ConfigurationError("history_collections", f"{name!r} is a RavenDB system collection")
        if synced and name.lower() not in synced:
            raise ConfigurationError("history_collections", f"{name!r} is a collection that collection_name leaves out")
    if len({name.lower() for name in names}) != len(names):
        raise ConfigurationError("history_collections", "lists a collection twice (names are case-insensitive)")
    return HistorySelection(names=names)


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
    the child tables' paths, element-row bounds and columns (ChildTableState), and where each node's revisions
    were read to for the history tables (HistoryCursor). `checkpoints` saves it (Checkpoints).

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
        history: "HistoryCursor | None" = None,
    ):
        self.cursors = cursors  # collections read by their own query (a first read, or at most 10 listed)
        self.database = database  # the read of every other collection in one query; None until one ran
        self.deletes = deletes or BinPosition()
        self.reconciled_at = reconciled_at or {}  # collection -> ISO time of its last reconciliation
        self.column_names: dict[str, Any] = column_names or {}  # collection -> ColumnNames (saved entries until used)
        self.children = children or ChildTableState()
        self.history = history or HistoryCursor()  # where the revisions of history tables are read from, per node
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
            history=HistoryCursor.load(current.get("history")),
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
        self.history.save(state)
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
        collection `OrdersLines` both make `orders_lines`) is refused when listed; `*` leaves that array JSON.
        A listed path that is not an array of objects in the sample is refused (`check_child_path`)."""
        if self.every:
            paths = tuple(sorted(_object_array_paths(sample, (), _MAX_CHILD_TABLE_DEPTH)))
        else:
            paths = tuple(path[1:] for path in self.paths if path[0].lower() == collection.lower())
            for path in paths:
                check_child_path(collection, path, sample)
        for path, other in _clashing_tables(collection, paths, collections).items():
            if not self.every:
                raise SourceError(
                    "child_tables",
                    f"{collection}.{'.'.join(path)} would land in the table of collection {other!r}; "
                    "leave it out (or use *, which keeps such an array as JSON)",
                )
            paths = tuple(kept for kept in paths if kept[: len(path)] != path)
        return paths

    def check_collections(self, database: str, collections: list[str] | tuple[str, ...]) -> None:
        """Refuse a listed path whose collection the database does not have (names are case-insensitive)."""
        present = {name.lower() for name in collections}
        for path in self.paths:
            if path[0].lower() not in present:
                raise SourceError(
                    "child_tables",
                    f"{'.'.join(path)}: database {database!r} has no collection {path[0]!r} "
                    f"(has: {', '.join(sorted(collections)) or 'none'})",
                )


def check_child_path(collection: str, path: tuple[str, ...], sample: list[dict]) -> None:
    """Refuse a listed child-table path that is not an array of objects in the collection's sampled (newest)
    documents, naming what it is there and the arrays of objects the sample has. A path none of them has is refused
    too: a typo is far likelier than a field still to come, which can be listed once documents carry it. An array
    that is empty (or null) in every sampled document passes, as does any path of a collection with no documents:
    nothing there says what it holds."""
    if not sample:
        return
    values = [value for value in _values_at(sample, path) if value is not None]
    if any(value and _is_object_array(value) for value in values) or (values and all(v == [] for v in values)):
        return
    kinds = sorted({_kind_of(value) for value in values})
    arrays = sorted(".".join((collection, *found)) for found in _object_array_paths(sample, (), _MAX_CHILD_TABLE_DEPTH))
    raise SourceError(
        "child_tables",
        f"{'.'.join((collection, *path))} is "
        + (f"{' or '.join(kinds)} in" if kinds else "in none of")
        + f" the {len(sample)} newest {collection} documents, not an array of objects "
        f"({collection} has: {', '.join(arrays) or 'no arrays of objects'})",
    )


def _values_at(documents: list[dict], path: tuple[str, ...]) -> list[Any]:
    """The values at `path` in these documents: through nested objects, and into the elements of the arrays on
    the way (a grandchild path); documents without it give nothing."""
    current: list[Any] = list(documents)
    for depth, key in enumerate(path):
        found = []
        for value in current:
            holders = (
                [element for element in value if isinstance(element, dict)] if isinstance(value, list) else [value]
            )
            found += [holder[key] for holder in holders if isinstance(holder, dict) and key in holder]
        current = found if depth == len(path) - 1 else [value for value in found if isinstance(value, (dict, list))]
    return current


def _is_object_array(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(element, dict) for element in value)


def _kind_of(value: Any) -> str:
    if isinstance(value, list):
        if not value:
            return "an empty array"
        return f"an array of {' and '.join(sorted({_plural_kind_of(element) for element in value}))}"
    return {dict: "an object", bool: "true/false", int: "a number", float: "a number"}.get(type(value), "text")


def _plural_kind_of(value: Any) -> str:
    if isinstance(value, list):
        return "arrays"
    return {dict: "objects", bool: "true/false", int: "numbers", float: "numbers", type(None): "nulls"}.get(
        type(value), "text"
    )


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


Bound = Callable[[str, tuple], int]  # (child table, parent key) -> its element rows the destination may hold: [0, n)


class DocumentRows(NamedTuple):
    """What one document writes: its row and its elements' rows; the element rows an earlier version of it may have
    left (indices from each array's length up to the parent's bound), to be deleted; and each array's length."""

    upserts: list[tuple[str, dict]]  # (table, row), the document's row first
    stale: list[tuple[str, dict]]  # (table, primary key)
    lengths: list[tuple[str, tuple, int]]  # (child table, parent key, elements now written)


def document_rows(
    table: str,
    document: dict,
    children: tuple[ChildTable, ...],
    bound: Bound,
    columns: ColumnNames,
    element_columns: Callable[[ChildTable], ColumnNames],
) -> DocumentRows:
    """The document's row without its child-table arrays, and one row per element of each of them: the element
    walked and flattened by the same rules as a document (its columns named within its own table), keyed by the
    document's Id and the element's index, with the document's LastModified."""
    parent, arrays = _take_arrays(document, children)
    row = flatten(parent, columns)
    rows = DocumentRows([(table, row)], [], [])
    _element_rows(rows, children, arrays, {"Id": row["Id"]}, row["LastModified"], bound, element_columns)
    return rows


def _element_rows(
    rows: DocumentRows,
    children: tuple[ChildTable, ...],
    arrays: list[list],
    key: dict,
    last_modified: datetime,
    bound: Bound,
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
            _element_rows(rows, child.children, below, element_key, last_modified, bound, element_columns)
        _stale_rows(rows, child, key, len(elements), bound)


def _stale_rows(rows: DocumentRows, child: ChildTable, key: dict, start: int, bound: Bound) -> None:
    """The keys of elements [start, the parent's bound) of one array, and of every row below them; the array's
    length is now `start`."""
    parent = tuple(key.values())
    for index in range(start, bound(child.table, parent)):
        element_key = {**key, child.keys[-1]: index}
        rows.stale.append((child.table, element_key))
        for grandchild in child.children:
            _stale_rows(rows, grandchild, element_key, 0, bound)
    rows.lengths.append((child.table, parent, start))


def deleted_document_rows(doc_id: str, children: tuple[ChildTable, ...], bound: Bound) -> DocumentRows:
    """The keys of every element row a deleted document may have left in its child tables (`stale`)."""
    rows = DocumentRows([], [], [])
    for child in children:
        _stale_rows(rows, child, {"Id": doc_id}, 0, bound)
    return rows


def _nothing(table: str, parent: tuple) -> int:
    """The bound of a table that holds no element row."""
    return 0


def element_column_names(child: ChildTable, entries: list | None = None) -> ColumnNames:
    """The column names of a child table: as a document's, with its index columns and `value` kept free too."""
    columns = ColumnNames(entries)
    columns.taken.update({*child.keys[1:], _ELEMENT_VALUE.lower()})
    return columns


def _power_of_two(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


class _Written:
    """The parents a sync wrote to one child table, as 64-bit hashes, 8 bytes each: the newest in a set, the others
    in sorted arrays of 2**16, 2**17, ... hashes, merged as a binary counter carries. A parent never written whose
    hash equals a written one's (odds about parents / 2**64) counts as written: it then deletes up to its bound,
    more deletes than needed, never fewer."""

    _BLOCK = 1 << 16

    def __init__(self) -> None:
        self.newest: set[int] = set()
        self.blocks: list[array] = []  # sorted; each at least twice as long as the next

    def add(self, parent: tuple) -> None:
        self.newest.add(hash(parent))
        if len(self.newest) < self._BLOCK:
            return
        block = array("q", sorted(self.newest))
        self.newest.clear()
        while self.blocks and len(self.blocks[-1]) <= len(block):
            block = array("q", heapq.merge(self.blocks.pop(), block))
        self.blocks.append(block)

    def __contains__(self, parent: tuple) -> bool:
        digest = hash(parent)
        if digest in self.newest:
            return True
        for block in self.blocks:
            at = bisect.bisect_left(block, digest)
            if at < len(block) and block[at] == digest:
                return True
        return False


@dataclass
class ChildRows:
    """The element rows one child table may hold in the destination, which the connector cannot read: for each
    parent (the document; for a grandchild table, the element that holds the array, i.e. the row key without its
    last index), the rows at indices below a bound. Rows from there up to the bound are what a changed parent
    deletes beyond its new length, and a deleted one deletes from 0.

    The bound of a parent is its last length when that exceeded `width`, kept in `long`; otherwise `width`, a
    power of two covering every array up to `_CHILD_WIDTH_AT_MOST` long ever written, doubled whenever `long`
    would hold more than `_CHILD_LONG_ARRAYS` parents. So a changed parent deletes at most `width` - 1 rows it
    did not have, whatever the longest array of the table, and the state holds two numbers and the long arrays.

    Rows are written after the state that covers them is saved. `pending` bounds every parent's rows written after
    the checkpoint that saved it: each checkpoint sets it to the power of two above the longest array written
    since the one before (a guess at what comes next), and a longer array raises it and is checkpointed before its
    rows are written. A sync that resumes after one that died bounds every parent by it too (`inherited`), until it
    completes. A table the state does not name held no row when the sync began: a parent this sync has not written
    (`written`) has none.
    """

    width: int = 0
    long: dict[tuple, int] = field(default_factory=dict)
    pending: int = 0
    inherited: int = 0  # not saved: `pending` as the state this sync began from holds it
    written: _Written | None = None  # not saved: set when the table held no row when this sync began
    since_checkpoint: int = 0  # not saved: the longest array written since the last checkpoint

    def bound(self, parent: tuple) -> int:
        if self.written is not None and parent not in self.written:
            return 0
        return max(self.long.get(parent, self.width), self.inherited)

    def record(self, parent: tuple, length: int) -> bool:
        """The parent now has `length` elements written and none beyond. True when `pending` grew: a checkpoint must
        save it before those rows are written."""
        if self.written is not None:
            self.written.add(parent)
        if length <= self.width:
            self.long.pop(parent, None)
        elif length <= _CHILD_WIDTH_AT_MOST:
            self.width = _power_of_two(length)
            self.long = {key: bound for key, bound in self.long.items() if bound > self.width}
        else:
            self.long[parent] = length
            if len(self.long) > _CHILD_LONG_ARRAYS:
                self.width = max(self.width, _CHILD_WIDTH_AT_MOST)
                while sum(bound > self.width for bound in self.long.values()) > _CHILD_LONG_ARRAYS // 2:
                    self.width *= 2
                self.long = {key: bound for key, bound in self.long.items() if bound > self.width}
        self.since_checkpoint = max(self.since_checkpoint, length)
        if length <= self.pending:
            return False
        self.pending = _power_of_two(length)
        return True

    def checkpointed(self) -> None:
        """A checkpoint saves the state now: what was written before it needs `pending` no more."""
        self.pending = max(self.inherited, _power_of_two(self.since_checkpoint) if self.since_checkpoint else 0)
        self.since_checkpoint = 0

    def finish(self) -> None:
        self.pending = self.inherited = self.since_checkpoint = 0

    def to_dict(self) -> dict:
        saved: dict[str, Any] = {}
        if self.width:
            saved["width"] = self.width
        if self.long:
            saved["long"] = [[*parent, bound] for parent, bound in self.long.items()]
        if self.pending:
            saved["pending"] = self.pending
        return saved

    @classmethod
    def load(cls, saved: dict) -> "ChildRows":
        pending = int(saved.get("pending", 0))
        long = {tuple(entry[:-1]): int(entry[-1]) for entry in saved.get("long", [])}
        if any(not parent or not isinstance(parent[0], str) for parent in long):
            raise ValueError("a parent is not a document id")
        return cls(width=int(saved.get("width", 0)), long=long, pending=pending, inherited=pending)


@dataclass
class ChildTableState:
    """What the state keeps of child tables: each collection's child-table array paths, the element rows each child
    table may hold (ChildRows: so the rows of removed elements are found without keeping anything per document,
    except for long arrays), and the column each field of a child table's elements landed in.

    A state saved by the version that kept the most elements one array of a table had (`child_widths`) loads as that
    number for every parent of the table."""

    paths: dict[str, list[list[str]]] = field(default_factory=dict)  # collection -> its child-table arrays
    bounds: dict[str, ChildRows] = field(default_factory=dict)  # child table -> the element rows it may hold
    element_columns: dict[str, Any] = field(default_factory=dict)  # child table -> its ColumnNames (saved: entries)

    @classmethod
    def load(cls, state: dict) -> "ChildTableState":
        try:
            bounds = {table: ChildRows(width=int(width)) for table, width in state.get("child_widths", {}).items()}
            bounds.update((table, ChildRows.load(saved)) for table, saved in dict(state.get("child_rows", {})).items())
            return cls(
                paths={name: [list(path) for path in paths] for name, paths in state.get("child_paths", {}).items()},
                bounds=bounds,
                element_columns={table: list(entries) for table, entries in state.get("child_columns", {}).items()},
            )
        except (AttributeError, TypeError, ValueError, IndexError):
            raise SourceError(
                None, "state: the child tables are not in the layout written; reset the connector"
            ) from None

    def save(self, state: dict) -> None:
        if self.paths:
            state["child_paths"] = {name: [list(path) for path in paths] for name, paths in self.paths.items()}
        bounds = {table: saved for table, rows in self.bounds.items() if (saved := rows.to_dict())}
        if bounds:
            state["child_rows"] = bounds
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
        selected (their bounds and columns are forgotten)."""
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
            self.bounds.pop(table, None)
            self.element_columns.pop(table, None)
        return True, sorted(dropped)

    def rows(self, collection: str, document: dict, columns: ColumnNames) -> DocumentRows:
        """The rows the document writes (see document_rows), against the element rows its parents may hold."""
        children = self.tables(collection)
        return document_rows(table_name(collection), document, children, self.bound, columns, self._columns_of)

    def bound(self, table: str, parent: tuple) -> int:
        """The element rows of `parent` that `table` may hold: those at indices below this."""
        rows = self.bounds.get(table)
        return 0 if rows is None else rows.bound(parent)

    def record_lengths(self, lengths: list[tuple[str, tuple, int]]) -> bool:
        """Each (table, parent, length): the parent's elements now written, the rows beyond them deleted. True when
        a checkpoint must save the state before those rows are written (ChildRows.pending)."""
        due = False
        for table, parent, length in lengths:
            if table not in self.bounds:  # no row of it when this sync began: a parent it has not written has none
                self.bounds[table] = ChildRows(written=_Written())
            due = self.bounds[table].record(parent, length) or due
        return due

    def row_keys(self, collection: str, document: dict, columns: ColumnNames) -> DocumentRows:
        """The rows the document writes, each as its primary key (to touch them), and its arrays' lengths; no
        stale rows."""
        children = self.tables(collection)
        keys = {child.table: child.keys for child in _all_child_tables(children)}
        rows = document_rows(table_name(collection), document, children, _nothing, columns, self._columns_of)
        touched = [(table, {key: row[key] for key in keys.get(table, ("Id",))}) for table, row in rows.upserts]
        return rows._replace(upserts=touched)

    def rebuilding(self, collection: str) -> dict[str, ChildRows]:
        """Empty bounds for the collection's child tables, to record the lengths a reconciliation touches."""
        return {table: ChildRows() for table in self.table_names(collection)}

    def rebuilt(self, rebuilt: dict[str, ChildRows]) -> None:
        """These child tables hold exactly the element rows recorded in `rebuilt` (a reconciliation truncated them
        and touched those): their bounds start again from them."""
        for table, rows in rebuilt.items():
            kept = self.bounds.get(table) or ChildRows()
            rows.pending, rows.inherited, rows.since_checkpoint = kept.pending, kept.inherited, kept.since_checkpoint
            self.bounds[table] = rows

    def deleted_rows(self, collection: str, doc_id: str) -> DocumentRows:
        """The keys of every element row a deleted document may have left in its child tables (`stale`)."""
        return deleted_document_rows(doc_id, self.tables(collection), self.bound)

    def checkpointed(self) -> None:
        """A checkpoint saves the state now (ChildRows.checkpointed)."""
        for rows in self.bounds.values():
            rows.checkpointed()

    def finish(self, collections: Iterable[str]) -> None:
        """The sync completes: every parent written after a checkpoint was written again or deleted since, so the
        child tables of these collections owe nothing more to a sync that did not complete."""
        for collection in collections:
            for table in self.table_names(collection):
                if table in self.bounds:
                    self.bounds[table].finish()

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
# History tables: which collections have one, their names and columns, a revision's row, where reads stand (pure)


class HistorySelection(NamedTuple):
    """The collections whose revisions land in a `<table>_history` table: every one whose revisions are enabled
    (`*`), or the ones named. Falsy when the setting is empty (off)."""

    every: bool = False
    names: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return self.every or bool(self.names)

    def chosen(self, collections: Iterable[str], revisions: "RevisionsConfiguration") -> list[str]:
        """Of the synced collections, the ones with a history table: `*` keeps those whose revisions the
        configuration enables now, a list those it names (names are case-insensitive)."""
        collections = list(collections)
        if self.every:
            chosen = [name for name in collections if revisions.enabled(name)]
        else:
            wanted = {name.lower() for name in self.names}
            chosen = [name for name in collections if name.lower() in wanted]
        tables = {_fivetran_normal(table_name(name)): name for name in collections}
        for name in chosen:
            clash = tables.get(_fivetran_normal(history_table(name)))
            if clash is not None:
                raise SourceError(
                    "history_collections",
                    f"the history table of {name!r} would be the table of collection {clash!r} "
                    f"({_fivetran_normal(history_table(name))}); leave one of them out",
                )
        return chosen


class RevisionsConfiguration(NamedTuple):
    """The database's revisions configuration (GET /revisions/config): the default and per-collection entries."""

    default: dict | None
    collections: dict[str, dict]  # lower-cased collection -> its entry

    def enabled(self, collection: str) -> bool:
        entry = self.collections.get(collection.lower(), self.default)
        return bool(entry) and not entry.get("Disabled", False)

    def keeps_deletes(self, collection: str) -> bool:
        """Whether deletes in the collection reach the revisions bin: revisions on for it (its own entry, else the
        default) and not purged on delete."""
        entry = self.collections.get(collection.lower(), self.default)
        return self.enabled(collection) and not entry.get("PurgeOnDelete", False)

    def trims(self, collection: str) -> bool:
        """Whether RavenDB removes old revisions of the collection (MinimumRevisionsToKeep or -AgeToKeep set)."""
        entry = self.collections.get(collection.lower(), self.default) or {}
        return entry.get("MinimumRevisionsToKeep") is not None or entry.get("MinimumRevisionAgeToKeep") is not None


def history_table(collection: str) -> str:
    """The table of a collection's revisions: its table's name and `_history`."""
    return f"{table_name(collection)}{_HISTORY_SUFFIX}"


def history_column_names(entries: list | None = None) -> ColumnNames:
    """A history table's column names: as a document table's, with the history columns kept free too."""
    columns = ColumnNames(entries)
    columns.taken.update(_HISTORY_COLUMNS)
    return columns


def declare_history_table(collection: str, sample: Iterable[dict]) -> dict:
    """The history table with its key (`Id`, `ChangeVector`), its validity columns and the text and JSON columns
    the sample shows, by the rules of declare_columns; arrays stay JSON (no child tables)."""
    declared = declare_columns(sample, history_column_names())
    declared.pop("LastModified")
    declared.update(ChangeVector="STRING", ValidFrom="UTC_DATETIME", ValidTo="UTC_DATETIME")
    declared.update(IsCurrent="BOOLEAN", IsDeleted="BOOLEAN")
    return {"table": history_table(collection), "primary_key": ["Id", "ChangeVector"], "columns": declared}


class ListedRevision(NamedTuple):
    """One entry of GET /debug/documents/get-revisions: a revision of any collection, on the node listed."""

    id: str
    etag: int
    last_modified: str
    change_vector: str

    @classmethod
    def of(cls, entry: dict) -> "ListedRevision":
        return cls(entry["Id"], int(entry["Etag"]), entry["LastModified"], entry["ChangeVector"])


def history_row(revision: dict, columns: ColumnNames, valid_to: str | None, is_current: bool) -> dict[str, Any]:
    """A revision as a history row: its fields flattened as a document's (arrays as JSON), its key, when it became
    the document's version (`ValidFrom`, its `@last-modified`) and until when (`ValidTo`: the next revision's,
    null while it is the newest), whether it is the newest, and whether it records a delete."""
    metadata = revision["@metadata"]
    row: dict[str, Any] = {
        emitted: item if type(item) is str else _cell(item) for (emitted, _, _), item in walk(revision, columns)
    }
    row.update(
        Id=metadata["@id"],
        ChangeVector=metadata["@change-vector"],
        ValidFrom=parse_last_modified(metadata["@last-modified"]),
        ValidTo=parse_last_modified(valid_to) if valid_to else None,
        IsCurrent=is_current,
        IsDeleted="DeleteRevision" in str(metadata.get("@flags", "")).split(", "),
    )
    return row


@dataclass
class HistoryCursor:
    """Where the next read of revisions starts on each node, for which collections, and what the history tables'
    columns are named. A collection newly given a history table starts every node's read over (the rows of the
    others land again, unchanged).

    RavenDB numbers revisions with each node's own etags, so the cursor is kept per node (by cluster tag): a node
    read before goes on from its own etag, which every revision that reached it since (written there or
    replicated) is past. A node never read is listed from its first etag; the revisions older than `covered` (the
    newest `@last-modified` listed when a read of another node last reached its end) less the lookback are taken
    to be in the destination already and are not read again, as a replicated write is taken to arrive within
    the lookback everywhere else in the connector.
    """

    nodes: dict[str, int] = field(default_factory=dict)  # cluster tag -> the etag the node's next read starts at
    newest: str | None = None  # the newest @last-modified listed on any node
    covered: str | None = None  # `newest` when a read last reached the end of a node's revisions
    column_names: dict[str, ColumnNames] = field(default_factory=dict)  # collection -> its history columns
    collections: list[str] = field(default_factory=list)  # the collections the node cursors have read for

    @classmethod
    def load(cls, saved: Any) -> "HistoryCursor":
        if not saved:
            return cls()
        try:
            nodes = {str(tag): int(etag) for tag, etag in saved.get("nodes", {}).items()}
            columns = {name: history_column_names(entries) for name, entries in saved.get("columns", {}).items()}
        except (AttributeError, TypeError, ValueError):
            raise SourceError(None, "state: history is not in the layout written; reset the connector") from None
        for key in ("newest", "covered"):
            value = saved.get(key)
            if value is not None and (not isinstance(value, str) or not _LAST_MODIFIED.fullmatch(value)):
                raise SourceError(None, f"state: history {key} is {value!r}, not a RavenDB timestamp")
        collections = saved.get("collections", [])
        if not isinstance(collections, list) or not all(isinstance(name, str) for name in collections):
            raise SourceError(None, "state: history collections are not a list of names; reset the connector")
        return cls(nodes, saved.get("newest"), saved.get("covered"), columns, collections)

    def save(self, state: dict) -> None:
        """Into the state's `history` key, once history tables were read (never with the setting off)."""
        if not self.nodes and not self.column_names:
            return
        saved: dict[str, Any] = {"nodes": dict(self.nodes), "collections": list(self.collections)}
        if self.newest is not None:
            saved["newest"] = self.newest
        if self.covered is not None:
            saved["covered"] = self.covered
        columns = {name: entries for name, names in self.column_names.items() if (entries := names.to_list())}
        if columns:
            saved["columns"] = columns
        state["history"] = saved

    def columns(self, collection: str) -> ColumnNames:
        return self.column_names.setdefault(collection, history_column_names())


# ----------------------------------------------------------------------------------------------------------
# Reading RavenDB (requests and streams only): store, constant queries, streams, commands, error translation


@contextmanager
def open_store(settings: Settings) -> Iterator[DocumentStore]:
    """An initialised DocumentStore whose every request has a connect and a read timeout; its certificate file
    exists only inside the block, owner-readable.

    Before the client's first request, some URL must answer within `_CONNECT_TIMEOUT_SECONDS` +
    `_ANSWER_TIMEOUT_SECONDS` (`_check_reachable`), so an address that accepts connections and never answers fails
    the sync (or the connection test) within that bound, with one line."""
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
                _with_timeouts(store.get_request_executor(), settings)
            refuse_sharded_database(store, settings)
            yield store
        finally:
            store.close()


def refuse_sharded_database(store: DocumentStore, settings: Settings) -> None:
    """Refuse a sharded database (RavenDB 6.0+) before anything is read from it.

    Its orchestrator answers the reads a sync relies on differently: `GET /streams/docs` as one JSON object without
    `ETag`, and the revisions bin with a continuation token that an empty page does not carry on, so a sync could
    land part of the database or miss deletes without a word. The database record tells: `GET /databases?name=`
    lists one entry per shard, named `<database>$<shard>` (RavenDB's DatabasesHandlerProcessorForGet, through
    `RawDatabaseRecord.AsShardsOrNormal`); `$` is not allowed in a database name, so no unsharded database looks
    like that. One request, sent to the sync's node.
    """
    command = _DatabaseInfoCommand(settings.database)
    with _translated_errors(settings):
        _execute(store, command)
    prefix = f"{settings.database.lower()}$"
    shards = [name for name in command.result or () if name.lower().startswith(prefix)]
    if shards:
        raise SourceError(
            "database_name",
            f"{settings.database!r} is a sharded database ({len(shards)} shards): sharded databases are not supported "
            "yet; sync an unsharded database (one server or a replicated cluster)",
        )


class _TimeoutAdapter(requests.adapters.HTTPAdapter):
    """Sends every request with (connect, read) timeouts unless it names its own: the ravendb client sends its
    requests, streams included, without any. The read timeout bounds each wait for bytes, so a stream that
    delivers nothing for that long fails as a broken stream."""

    def __init__(self, timeouts: tuple[float, float]):
        super().__init__()
        self.timeouts = timeouts

    def send(self, request: requests.PreparedRequest, stream: bool = False, timeout: Any = None, **kwargs: Any) -> Any:
        return super().send(request, stream=stream, timeout=timeout or self.timeouts, **kwargs)


def _with_timeouts(executor: Any, settings: Settings) -> None:
    """Mount `_TimeoutAdapter` on the request executor's HTTP session (public `http_session`, created on first use).

    The executor sends its first request (the topology) from a thread of its own as soon as it exists, so that
    request may go out before the adapter is mounted; `_check_reachable` has just proved the server answers. If that
    thread created the session at the same moment, the session the executor keeps is mounted too (the loop)."""
    while True:
        session = executor.http_session
        adapter = _TimeoutAdapter((_CONNECT_TIMEOUT_SECONDS, settings.read_timeout))
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        if executor.http_session is session:
            return


def _check_reachable(urls: tuple[str, ...]) -> None:
    """Fail fast, in one line, when no URL answers; warn about the ones that do not.

    Each URL, at the same time, must accept a TCP connection within `_CONNECT_TIMEOUT_SECONDS` and then answer
    within `_ANSWER_TIMEOUT_SECONDS`: an https:// URL with a TLS handshake, an http:// one with a response to
    `GET /build/version`. Any answer counts, even one the client will refuse (it names that failure itself); only
    silence fails here: an address that accepts connections and never answers (a proxy, a firewall, a wrong port,
    an https:// URL of a server that speaks plain HTTP and still waits for a request line). The handshake carries
    no client certificate and verifies the server against the public CAs; a server it cannot verify (a private
    CA) has answered all the same, and nothing is sent over the connection."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(urls)) as pool:
        failures = [text for text in pool.map(_silence, urls) if text is not None]
    if len(failures) == len(urls):
        raise SourceError("ravendb_urls", f"no server is reachable: {'; '.join(failures)}")
    if failures:
        log.warning(f"ravendb_urls: unreachable, failing over to the other nodes: {'; '.join(failures)}")


def _silence(url: str) -> str | None:
    """What the URL did instead of answering, or None when it answered."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        connection = socket.create_connection((parts.hostname, port), timeout=_CONNECT_TIMEOUT_SECONDS)
    except OSError as exc:
        return f"{url} ({exc.strerror or exc})"
    with connection:
        connection.settimeout(_ANSWER_TIMEOUT_SECONDS)
        try:
            if parts.scheme == "https":
                ssl.create_default_context().wrap_socket(connection, server_hostname=parts.hostname).close()
            else:
                connection.sendall(f"GET /build/version HTTP/1.1\r\nHost: {parts.netloc}\r\n\r\n".encode())
                connection.recv(1)
        except TimeoutError:
            if parts.scheme == "https":
                return (
                    f"{url} accepted the connection but gave no TLS answer within {_ANSWER_TIMEOUT_SECONDS:g} s; "
                    "is the server plain http://? (a proxy or firewall that holds connections looks the same)"
                )
            return (
                f"{url} accepted the connection but sent no answer within {_ANSWER_TIMEOUT_SECONDS:g} s "
                "(a proxy, a firewall, or a port that is not RavenDB's?)"
            )
        except (OSError, ssl.SSLError):
            return None  # an answer, or a failure the client will name
    return None


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
        return self._send(_RevisionsBinPageCommand(start, size, if_none_match)).result

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


class _ReadCommand(RavenCommand):
    """A request of the connector's own that only reads (`is_read_request`), its answer never kept in the client's
    HTTP cache (each answer is read once)."""

    def __init__(self, result_class: type) -> None:
        super().__init__(result_class)
        self._can_cache = False

    def is_read_request(self) -> bool:
        return True


class _DatabaseInfoCommand(_ReadCommand):
    """GET /databases?name=: the names of the databases the server lists for it (the database itself, or each of
    its shards). `result`: the names, or None when the server knows no such database (404). Not kept in the
    client's HTTP cache."""

    def __init__(self, database: str):
        super().__init__(list)
        self.database = database

    def create_request(self, node: Any) -> requests.Request:
        return requests.Request("GET", f"{node.url}/databases?name={quote(self.database, safe='')}")

    def set_response(self, response: str | None, from_cache: bool) -> None:
        databases = json.loads(response).get("Databases") if response else None
        self.result = (
            None
            if databases is None
            else [str(entry.get("Name") if isinstance(entry, dict) else entry) for entry in databases]
        )


class _RevisionsBinPageCommand(GetRevisionsBinEntryCommand):
    """GET /revisions/bin?start=&pageSize=, optionally with If-None-Match. `result`: the entries, or None for
    304 Not Modified. The page is not kept in the client's HTTP cache (each is read once)."""

    def __init__(self, start: int, page_size: int, if_none_match: str | None = None):
        super().__init__(start, page_size)
        self.if_none_match = if_none_match
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
        self.result = json.loads(response)["Results"]


def revisions_configuration(store: DocumentStore, settings: Settings) -> RevisionsConfiguration:
    """GET /revisions/config (a read for any valid user); no configuration (404): nothing enabled."""
    command = _RevisionsConfigurationCommand()
    with _translated_errors(settings):
        _execute(store, command)
    config = command.result or {}
    collections = {name.lower(): entry for name, entry in (config.get("Collections") or {}).items()}
    return RevisionsConfiguration(config.get("Default"), collections)


_UNKNOWN: Any = object()  # a lookup whose page did not reach the revision before the one asked about


def _revisions_paging(size: int) -> list[tuple[str, str]]:
    return [("start", "0"), ("pageSize", str(size)), ("metadataOnly", "true")]


def _revisions_of_query(doc_id: str, size: int) -> str:
    """The query string of GET /revisions for a document's `size` newest revisions, metadata only."""
    return "?" + "&".join(
        f"{name}={quote(value, safe='')}" for name, value in [("id", doc_id), *_revisions_paging(size)]
    )


def _older(revision: ListedRevision, results: list[dict], size: int) -> Any:
    """Of a document's newest revisions (newest first, at most `size`), the one just before `revision`: its change
    vector and `@last-modified`; None when RavenDB keeps none older; _UNKNOWN when the page ends before it."""
    metadata = [entry["@metadata"] for entry in results]
    vectors = [entry.get("@change-vector") for entry in metadata]
    if revision.change_vector in vectors:
        position = vectors.index(revision.change_vector)
        if position + 1 < len(metadata):
            return metadata[position + 1]["@change-vector"], metadata[position + 1]["@last-modified"]
        return None if len(metadata) < size else _UNKNOWN
    if len(metadata) < size:  # removed since it was listed: the newest one older than it
        older = [entry for entry in metadata if entry["@last-modified"] <= revision.last_modified]
        return (older[0]["@change-vector"], older[0]["@last-modified"]) if older else None
    return _UNKNOWN


class _MultiGetCommand(_ReadCommand):
    """POST /multi_get: several GET requests of the database in one round trip (RavenDB's
    AbstractMultiGetHandlerProcessorForPost), each a path under the database and its query string. `result`: one
    `{"Result", "StatusCode", "Headers"}` per request, in order."""

    def __init__(self, queries: list[str], path: str = "/revisions"):
        super().__init__(list)
        self.queries, self.path = queries, path

    def create_request(self, node: Any) -> requests.Request:
        url = f"/databases/{node.database}{self.path}"
        body = {"Requests": [{"Url": url, "Query": query, "Method": "GET"} for query in self.queries]}
        return requests.Request("POST", f"{node.url}/databases/{node.database}/multi_get", data=body)

    def set_response(self, response: str | None, from_cache: bool) -> None:
        if response is None:
            self._throw_invalid_response()
        self.result = json.loads(response)["Results"]


class _ListRevisionsCommand(_ReadCommand):
    """GET /debug/documents/get-revisions?start=&pageSize=: the node's revisions of every collection at etags from
    `start`, in etag order, metadata only (RevisionsHandlerProcessorForGetRevisionsDebug; RavenDB 6.x/7.x return
    up to pageSize + 1). `result`: the entries."""

    def __init__(self, start: int, page_size: int):
        super().__init__(list)
        self.start, self.page_size = start, page_size

    def create_request(self, node: Any) -> requests.Request:
        return requests.Request(
            "GET",
            f"{node.url}/databases/{node.database}/debug/documents/get-revisions"
            f"?start={self.start}&pageSize={self.page_size}",
        )

    def set_response(self, response: str | None, from_cache: bool) -> None:
        if response is None:
            self._throw_invalid_response()
        self.result = json.loads(response)["Revisions"]


class _RevisionsCommand(_ReadCommand):
    """GET /revisions with its query string percent-encoded (the client's GetRevisionsCommand puts change vectors
    and ids in the URL as they are, so the `+` of a change vector arrives as a space). By `changeVector` (repeated):
    `{"Results": [...]}`, null for one the node does not keep; by `id`: newest first. `result`: the answer, or None
    for 404 (the one change vector asked is not kept)."""

    def __init__(self, parameters: list[tuple[str, str]]):
        super().__init__(dict)
        self.parameters = parameters

    def create_request(self, node: Any) -> requests.Request:
        query = "&".join(f"{name}={quote(value, safe='')}" for name, value in self.parameters)
        return requests.Request("GET", f"{node.url}/databases/{node.database}/revisions?{query}")

    def set_response(self, response: str | None, from_cache: bool) -> None:
        self.result = json.loads(response) if response else None


def revisions_configuration_or_why(store: DocumentStore, settings: Settings) -> "RevisionsConfiguration | str":
    """The database's revisions configuration, or, when it cannot be read, why (for the deletes line, which then
    says so instead of failing the sync)."""
    try:
        return revisions_configuration(store, settings)
    except SourceError as exc:
        return exc.message


class _RevisionsConfigurationCommand(_ReadCommand):
    """GET /revisions/config: the database's revisions configuration (RavenDB's RevisionsHandler, any valid
    certificate); 404 when it has none. `result`: the configuration, or None."""

    def __init__(self) -> None:
        super().__init__(dict)

    def create_request(self, node: Any) -> requests.Request:
        return requests.Request("GET", f"{node.url}/databases/{node.database}/revisions/config")

    def set_response(self, response: str | None, from_cache: bool) -> None:
        self.result = json.loads(response) if response else None


class _CollectionDocumentsCommand(_ReadCommand):
    """GET /collections/docs?name=&start=0&pageSize=: a page of the collection's documents, newest etag first, from
    storage (RavenDB's CollectionsHandler, in one read transaction). `result`: the documents. Not kept in the
    client's HTTP cache."""

    def __init__(self, collection: str, page_size: int):
        super().__init__(list)
        self.collection, self.page_size = collection, page_size

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
        raise _classified(exc, urls, settings.read_timeout) from exc


def _classified(exc: Exception, urls: str, read_timeout: float = _DEFAULT_READ_TIMEOUT_SECONDS) -> SourceError:
    # With several nodes the client folds each node's failure into the text of one exception: read the text.
    text = _failure_text(exc)
    if "Read timed out" in text:
        return TransientSourceError(
            "ravendb_urls", f"{urls} sent nothing for {read_timeout:g} s (read_timeout_seconds); the request is dropped"
        )
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
# The sync itself: what update() runs, in its order: child tables, deletes, new collections, each collection,
# history tables


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


def deletes_line(settings: Settings, collections: list[str], configuration: "RevisionsConfiguration | str") -> str:
    """One line saying how this sync tracks deletes in each collection: the revisions bin (the collection keeps
    revisions and does not purge them on delete), a reconciliation every `reconcile_deletes_hours`, both, or not at
    all, with what would turn tracking on."""
    every = settings.reconcile_every
    reconciled = f"reconciliation every {every.total_seconds() / 3600:g} h" if every else None
    unknown = isinstance(configuration, str)
    groups: dict[str, list[str]] = {}
    for collection in collections:
        how = ["the revisions bin"] if unknown or configuration.keeps_deletes(collection) else []
        how += [reconciled] if reconciled else []
        groups.setdefault(" and ".join(how) or "not tracked", []).append(collection)
    parts = []
    for how, names in groups.items():
        shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
        parts.append(f"{shown}: {how}")
    line = "deletes: " + "; ".join(parts) if parts else "deletes: no collections"
    if "not tracked" in groups:
        line += (
            " (deleted documents' rows stay live; enable revisions in RavenDB for those collections, without "
            "PurgeOnDelete, or set reconcile_deletes_hours)"
        )
    if unknown:
        line += f" (the bin holds deletes only where RavenDB keeps revisions; its configuration: {configuration})"
    return line


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
    tally, bound = Tally(), None

    def attempt() -> None:
        nonlocal bound
        covered_from = time.monotonic()
        stream = DatabaseStream(store, settings).open()
        bound = stream_bound(stream, covered_from, settings.lookback)
        if bound is None:
            log.warning("new collections: RavenDB sent no Date header; their cursors stay and they are read again")
        _upsert_changes(stream, lambda meta: names.get((meta.collection or "").lower()), state, bound, progress, tally)

    _retrying("new collections", "reading the database again", attempt)
    for cursor in cursors:
        cursor.release()
        cursor.finish(bound)
    seconds = time.monotonic() - started
    log.info(
        f"{len(collections):,} new collections: upserted {tally.upserted} documents of {tally.read} read in "
        f"{seconds:.1f} s ({tally.read / max(seconds, 1e-6):,.0f} docs/s)"
    )
    return tally.upserted


def sync_collection(
    store: DocumentStore, settings: Settings, collection: str, state: SyncState, progress: "Progress"
) -> int:
    """Upsert every document of `collection` changed since its cursor, retrying transient failures.

    Its state is saved at the next checkpoint, which comes every 1,000 records across collections (see Checkpoints).
    The lines it logs say what is read and what it did: a cursor at the beginning (a first sync, a collection read
    again, or one whose documents are all newer than the lookback) reads every document, and skips those that
    landed already."""
    first = collection not in state.cursors
    since = state.cursor(collection).since
    if since == _BEGINNING_OF_TIME:
        log.info(f"{collection}: reading every document{' (first sync)' if first else ''}")
    else:
        log.info(f"{collection}: reading the documents changed since {since}")
    started = time.monotonic()
    progress.start_collection(collection)
    tally = Tally()
    _retrying(
        collection,
        "resuming from the cursor",
        lambda: _stream_into_destination(store, settings, collection, state, progress, tally),
    )
    seconds = time.monotonic() - started
    log.info(
        f"{collection}: upserted {tally.upserted} of {tally.read} documents read ({tally.read - tally.upserted} had "
        f"landed already) in {seconds:.1f} s ({tally.read / max(seconds, 1e-6):,.0f} docs/s)"
    )
    return tally.upserted


@dataclass
class Tally:
    """Documents read and upserted by the attempts of one read (a failed attempt's count as well)."""

    read: int = 0
    upserted: int = 0


def _stream_into_destination(
    store: DocumentStore,
    settings: Settings,
    collection: str,
    state: SyncState,
    progress: "Progress",
    tally: Tally | None = None,
) -> None:
    """Upsert the documents changed since the cursor (counted into `tally` when given); move the cursor only as far
    as the read provably covers.

    The index behind the query answers from a snapshot, with each document's current version at its indexed place:
    a document changed after the snapshot comes back early carrying its new `@last-modified`, one written after it
    not at all. Every document no newer than the moment the server began the query (its clock, less the lookback)
    is at its place, so only those move the cursor (`stream_bound`); newer ones are upserted and read again next
    sync. A stale index is first waited for, and the query sent again: the moment the wait began then bounds the
    cursor. If it is still stale after the wait, what it returns is upserted and moves no cursor.
    """
    cursor = state.cursor(collection)
    stream, bound = _open_changes(store, settings, collection, changed_since_query(collection, cursor.since))
    _upsert_changes(stream, lambda meta: collection, state, bound, progress, tally or Tally())
    cursor.finish(bound)


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
    tally: Tally,
    database: DatabaseCursor | None = None,
) -> None:
    """Upsert what the stream returns into the table of the collection `collection_of` names (None: a document
    no table takes), unless it landed already, counting into `tally`; each document read may move the cursor of its
    collection, or the `database` cursor when the stream reads the whole database."""
    for document in stream:
        tally.read += 1
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
        tally.upserted += 1
        progress.document_read(upserted=True)
        state.checkpoints.record_written()


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
    log.info(
        f"{_counted(len(collections), 'collection')}: sync started from {database.since}, in one query of the database"
    )
    started = time.monotonic()
    progress.start_read(f"{_counted(len(collections), 'collection')} (one query of the database)", 0, len(collections))
    progress.collections -= len(set(collections) & set(read_now))  # counted by their own read
    tally = Tally()

    def attempt() -> None:
        query = collection_query(_DATABASE_CHANGED_SINCE_RQL, "", since=database.since)
        stream, bound = _open_changes(store, settings, "database", query)
        _upsert_changes(
            stream, lambda meta: names.get((meta.collection or "").lower()), state, bound, progress, tally, database
        )
        database.finish(bound)

    _retrying("database", "resuming from the cursor", attempt)
    seconds = time.monotonic() - started
    log.info(
        f"{_counted(len(collections), 'collection')}: upserted {tally.upserted} of {tally.read} documents read in one "
        f"query of the database in {seconds:.1f} s ({tally.read / max(seconds, 1e-6):,.0f} docs/s)"
    )
    return tally.upserted


def upsert_document(collection: str, document: dict, state: SyncState, checkpoint_ahead: bool = True) -> None:
    """Upsert the document's row and its child-table rows, and delete the element rows an earlier version left.

    The state bounds the element rows each parent may hold (ChildRows), so the rows of removed elements are found
    without reading the destination: the deletes go first, then the state records the new lengths, and when they
    exceed what the last checkpoint covers, a checkpoint saves it before the rows are written. In a
    reconciliation that checkpoint waits for the reconciliation's own, which must carry its truncate and its
    touches together."""
    columns = state.columns(collection)
    if not state.children.tables(collection):
        op.upsert(table_name(collection), flatten(document, columns))
        return
    rows = state.children.rows(collection, document, columns)
    for table, key in rows.stale:
        op.delete(table, key)
    if state.children.record_lengths(rows.lengths) and checkpoint_ahead:
        state.checkpoints.save()
    for table, row in rows.upserts:
        op.upsert(table, row)


def delete_document(collection: str, doc_id: str, state: SyncState) -> None:
    """Mark a deleted document's row deleted, and every element row it may have in its child tables."""
    op.delete(table_name(collection), {"Id": doc_id})
    rows = state.children.deleted_rows(collection, doc_id)
    for table, key in rows.stale:
        op.delete(table, key)
    state.children.record_lengths(rows.lengths)


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
    truncated too, and each element row of an existing document touched by its key; their bounds (ChildRows) then
    start again from the arrays the documents hold, whose element rows are the only ones left live (a document
    the read misses keeps none live, and the read of its changes lands it against those bounds).

    The documents are read in one read of the database from storage, newest etag first (GET /streams/docs), never
    by position: when RavenDB renews the read transaction of the long read (encrypted databases, 7.x compressed
    documents), it resumes below the last etag read, so every document unchanged since the read began is read once.
    A document rewritten during the read moves above it and may be missed; it is newer than its collection's
    cursor, so the read of each collection's changes that follows lands it before the checkpoint.
    """
    started = time.monotonic()
    by_lower = {name.lower(): name for name in collections}
    documents = dict.fromkeys(collections, 0)
    rebuilt = {
        table: rows for collection in collections for table, rows in state.children.rebuilding(collection).items()
    }
    for collection in collections:
        op.truncate(table_name(collection))
        for child_table in state.children.table_names(collection):
            op.truncate(child_table)
    for document in DatabaseStream(store, settings):
        meta = Metadata.of(document)
        collection = by_lower.get((meta.collection or "").lower())
        if collection is not None:
            _touch(collection, document, meta, state, rebuilt)
            documents[collection] += 1
    state.children.rebuilt(rebuilt)
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


def _touch(collection: str, document: dict, meta: Metadata, state: SyncState, rebuilt: dict[str, "ChildRows"]) -> None:
    """A reconciliation found the document: its row (and element rows) are live again, in full if it changed
    after the cursor; its arrays' lengths go to the child tables' new bounds (`rebuilt`)."""
    cursor = state.cursor(collection)  # its changes are read by its own query next (a joined one leaves the database's)
    touched = None
    if state.children.tables(collection):
        touched = state.children.row_keys(collection, document, state.columns(collection))
        for child_table, parent, length in touched.lengths:
            rebuilt[child_table].record(parent, length)
    if meta.last_modified > cursor.since:
        upsert_document(collection, document, state, checkpoint_ahead=False)
        cursor.record(meta, None)  # the read of the changes that follows does not land it again
    elif touched is None:
        op.update(table_name(collection), {"Id": meta.id})
    else:
        for row_table, key in touched.upserts:
            op.update(row_table, key)


def history_collections(store: DocumentStore, settings: Settings, collections: Iterable[str]) -> list[str]:
    """The synced collections with a history table (none, without a request, when the setting is off)."""
    if not settings.history:
        return []
    return settings.history.chosen(collections, revisions_configuration(store, settings))


def sync_history(
    store: DocumentStore,
    settings: Settings,
    collections: Iterable[str],
    state: SyncState,
    revisions: "RevisionsConfiguration | str",
) -> int:
    """Land the revisions of the history collections that RavenDB made since the last sync (every one it keeps, the
    first time), close the rows they follow, and return how many rows landed (see HistoryWalk). Sends nothing when
    the setting is off. `revisions` is the configuration the sync read for its deletes line, or why it could not
    be read, in which case it is read again here and its error ends the sync. A collection newly given a history
    table starts every node's read over (the rows of the others land again, unchanged)."""
    if not settings.history:
        return 0
    if isinstance(revisions, str):
        revisions = revisions_configuration(store, settings)
    chosen = settings.history.chosen(collections, revisions)
    for name in chosen:
        if not revisions.enabled(name):
            log.warning(
                f"{name}: revisions are not enabled for this collection; its history table keeps the revisions "
                "RavenDB has and gets no new ones"
            )
    if not chosen:
        return 0
    cursor = state.history
    added = sorted(set(chosen) - set(cursor.collections))
    if added and cursor.nodes:
        log.info(f"revisions: {', '.join(added)} newly with history: every revision is read again")
        cursor.nodes, cursor.covered = {}, None
    cursor.collections = sorted(chosen)
    trimmed = {name for name in chosen if revisions.trims(name)}
    return _retrying(
        "revisions", "reading them again", lambda: HistoryWalk(store, settings, chosen, trimmed, state).run()
    )


class HistoryWalk:
    """One read of the revisions of one node, from where the last read of that node ended, in etag order.

    Each page of GET /debug/documents/get-revisions (every collection's revisions, metadata only) is followed by
    one POST /multi_get of GET /revisions?changeVector=... for their content (a revision RavenDB removed meanwhile
    comes back null and is skipped; those of other collections are dropped). Revisions of one document are ordered
    as RavenDB orders them, by etag; each row's `ValidTo` is its successor's `@last-modified`. The first revision of
    a document in a sync closes the row of the one before it: known from this sync's earlier pages, or asked of
    RavenDB (GET /revisions?id=, newest first, metadata only, 100 documents per POST /multi_get) when the node's
    read did not start at its first etag in this sync. The node's cursor moves, and is checkpointed, after each
    page's rows. Memory holds, per document listed in the sync, its newest revision's change vector and time.
    """

    def __init__(
        self, store: DocumentStore, settings: Settings, collections: list[str], trimmed: set[str], state: SyncState
    ):
        self.store, self.settings, self.state = store, settings, state
        self.cursor = state.history
        self.wanted = {name.lower(): name for name in collections}
        self.trimmed = trimmed  # collections whose old revisions RavenDB removes
        self.unclosed = 0  # documents of those whose revision before this sync's first one RavenDB no longer has
        self.newest_of: dict[str, tuple[str, str]] = {}  # lower-cased id -> (change vector, @last-modified)
        self.requests = 0
        self.node: Any = None

    def run(self) -> int:
        started = time.monotonic()
        self.node = _sync_node(self.store.get_request_executor())
        tag = getattr(getattr(self.node, "current_node", None), "cluster_tag", None) or "?"
        first_read = tag not in self.cursor.nodes
        start = self.cursor.nodes.get(tag, 0)
        skip_before = None
        if first_read and self.cursor.covered is not None:
            skip_before = format_last_modified(parse_last_modified(self.cursor.covered) - self.settings.lookback)
            log.info(f"revisions: first read of node {tag}; revisions before {skip_before} are in the destination")
        landed = 0
        size = self.settings.batch_size
        while True:
            page = self._list(start, size)
            if page:
                landed += self._land(page, closes_from_ravendb=not first_read, skip_before=skip_before)
                start = page[-1].etag + 1
                newest = max(revision.last_modified for revision in page)
                self.cursor.newest = max(self.cursor.newest or newest, newest)
                self.cursor.nodes[tag] = start
                self.state.checkpoints.save()
            if len(page) < size:
                break
        self.cursor.nodes.setdefault(tag, start)
        self.cursor.covered = self.cursor.newest
        if self.unclosed:
            log.warning(
                f"revisions: {self.unclosed} documents have no revision older than the first one this sync read, "
                "in collections whose old revisions RavenDB removes: for those written more often since the last "
                "sync than MinimumRevisionsToKeep keeps, the row that was newest stays is_current without valid_to"
            )
        if landed or self.requests > 1:
            log.info(
                f"revisions: {landed} history rows from node {tag} in {time.monotonic() - started:.1f} s "
                f"({self.requests} requests)"
            )
        return landed

    def _land(self, page: list[ListedRevision], closes_from_ravendb: bool, skip_before: str | None) -> int:
        wanted_page = [revision for revision in page if skip_before is None or revision.last_modified >= skip_before]
        contents = self._contents([revision.change_vector for revision in wanted_page])
        landing: dict[str, list[tuple[ListedRevision, dict]]] = {}
        for revision in page:
            content = contents.get(revision.change_vector)
            if content is None:
                if revision.change_vector not in contents:  # in the destination already: a predecessor
                    self.newest_of[revision.id.lower()] = (revision.change_vector, revision.last_modified)
                continue
            collection = self.wanted.get(str(content["@metadata"].get("@collection", "")).lower())
            if collection is not None:
                landing.setdefault(revision.id.lower(), []).append((revision, content))
        asked = {key: revisions[0][0] for key, revisions in landing.items() if key not in self.newest_of}
        found = self._predecessors(list(asked.values())) if closes_from_ravendb and asked else {}
        landed = 0
        for key, revisions in landing.items():
            collection = self.wanted[str(revisions[0][1]["@metadata"]["@collection"]).lower()]
            table, columns = history_table(collection), self.cursor.columns(collection)
            first = revisions[0][0]
            before = self.newest_of.get(key)
            if before is None and closes_from_ravendb:
                before = found.get(first.change_vector)
                self.unclosed += before is None and collection in self.trimmed
            if before is not None:
                op.update(
                    table,
                    {"Id": revisions[0][1]["@metadata"]["@id"], "ChangeVector": before[0],
                     "ValidTo": parse_last_modified(first.last_modified), "IsCurrent": False},
                )  # fmt: skip
            for position, (_, content) in enumerate(revisions):
                successor = revisions[position + 1][0] if position + 1 < len(revisions) else None
                valid_to = successor.last_modified if successor else None
                op.upsert(table, history_row(content, columns, valid_to, successor is None))
                landed += 1
            last = revisions[-1][0]
            self.newest_of[key] = (last.change_vector, last.last_modified)
        return landed

    def _predecessors(self, revisions: list[ListedRevision]) -> dict[str, tuple[str, str]]:
        """For each revision, the one RavenDB keeps just before it of the same document (change vector and
        `@last-modified`; left out when it keeps none older): GET /revisions?id= for each, newest first and
        metadata only, _LOOKUPS_PER_REQUEST of them in one POST /multi_get."""
        found: dict[str, tuple[str, str]] = {}
        for first in range(0, len(revisions), _LOOKUPS_PER_REQUEST):
            chunk = revisions[first : first + _LOOKUPS_PER_REQUEST]
            command = _MultiGetCommand([_revisions_of_query(revision.id, _LOOKUP_PAGE) for revision in chunk])
            self._send(command)
            for revision, answer in zip(chunk, command.result, strict=True):
                if answer.get("StatusCode") != 200 or not isinstance(answer.get("Result"), dict):
                    raise TransientSourceError(
                        "ravendb_urls",
                        f"RavenDB answered {answer.get('StatusCode')} to the revisions of {revision.id!r}",
                    )
                older, size = _older(revision, answer["Result"].get("Results", []), _LOOKUP_PAGE), _LOOKUP_PAGE
                while older is _UNKNOWN:  # more revisions since than the page held: ask that document alone
                    size *= 4
                    single = _RevisionsCommand([("id", revision.id), *_revisions_paging(size)])
                    self._send(single)
                    older = _older(revision, (single.result or {}).get("Results", []), size)
                if older is not None:
                    found[revision.change_vector] = older
        return found

    def _list(self, start: int, size: int) -> list[ListedRevision]:
        command = _ListRevisionsCommand(start, size)
        self._send(command)
        return [ListedRevision.of(entry) for entry in command.result]

    def _contents(self, vectors: list[str]) -> dict[str, dict | None]:
        """The content of each revision, by change vector (None: RavenDB no longer keeps it): GET /revisions with
        _CONTENTS_PER_GET change vectors each, all of them in one POST /multi_get, whose body, unlike a URL, has no
        length limit."""
        if not vectors:
            return {}
        chunks = [vectors[first : first + _CONTENTS_PER_GET] for first in range(0, len(vectors), _CONTENTS_PER_GET)]
        queries = ["?" + "&".join(f"changeVector={quote(vector, safe='')}" for vector in chunk) for chunk in chunks]
        command = _MultiGetCommand(queries)
        self._send(command)
        contents: dict[str, dict | None] = {}
        for chunk, answer in zip(chunks, command.result, strict=True):
            status, result = answer.get("StatusCode"), answer.get("Result")
            if status == 404 and len(chunk) == 1:  # the one change vector asked is not kept
                contents[chunk[0]] = None
            elif status == 200 and isinstance(result, dict):
                contents.update(zip(chunk, result["Results"], strict=True))
            else:
                raise TransientSourceError("ravendb_urls", f"RavenDB answered {status} to the content of revisions")
        return contents

    def _send(self, command: Any) -> None:
        self.requests += 1
        with _translated_errors(self.settings):
            _execute(self.store, command, self.node)


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
        self.state.children.checkpointed()
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
            f"sync finished: {_counted(self.collections, 'collection')}, {self.documents:,} documents upserted, "
            f"{deletes:,} deletes, {seconds:.1f} s, {state}"
        )


def _counted(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


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

"""The stand-in server: nodes (one port each, each with its own copy of every database), RavenDB HTTP endpoints,
/standin control."""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from cryptography import x509

from tests.standin import sample_data
from tests.standin.clock import format_ticks
from tests.standin.engine import MAX_PAGE, Outcome, QueryRequest, parse_timespan, run_query
from tests.standin.errors import RavenError, database_missing
from tests.standin.httpcore import CancelAfter, Listener, Request, Response, server_context
from tests.standin.rql import parse
from tests.standin.storage import Database, Doc, Storage, dumps, format_change_vector
from tests.standin.tls import thumbprint, thumbprint_sha256

JSON = {"Content-Type": "application/json; charset=utf-8"}
STREAM_CHUNK_DOCS = 2000
PULSE_CHECK_DOCS = 1024  # PulsedEnumerationState.DefaultNumberOfEnumeratedDocumentsToCheckIfPulseLimitExceeded
# What a stream that fails midway writes by default: the exception's ToString(), as the JSONL writer does.
STREAM_ERROR = (
    "System.OperationCanceledException: The operation was canceled.\r\n"
    "   at Raven.Server.Documents.Queries.AbstractQueryRunner (stand-in: injected mid-stream failure)"
)
# What a query stream cancelled by its time limit (Databases.QueryTimeoutInSec) writes.
QUERY_TIMEOUT_ERROR = (
    "System.OperationCanceledException: The operation was canceled.\r\n"
    "   at Raven.Server.Documents.Queries.StreamDocumentQueryResult.AddResultAsync (stand-in: no result written "
    "within Databases.QueryTimeoutInSec)"
)
Route = Callable[["Node", Request, re.Match], Response]


def json_response(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON body response."""
    return Response(status, dumps(value), {**JSON, **(headers or {})})


def body_json(request: Request) -> Any:
    """The request body parsed as JSON (400 if malformed)."""
    if not request.body:
        return None
    try:
        return json.loads(request.body)
    except ValueError as e:
        raise RavenError(400, "System.IO.InvalidDataException", f"Request body is not valid JSON: {e}") from e


@dataclass
class Node:
    """One cluster node: a tag and a port, served by the shared server."""

    tag: str
    listener: Listener
    server: StandIn

    @property
    def url(self) -> str:
        """Base URL of this node."""
        scheme = "https" if self.listener.tls else "http"
        return f"{scheme}://{self.server.host_name}:{self.listener.port}"

    def database(self, name: str) -> Database:
        """This node's copy of a database, or the 503 Database-Missing error."""
        db = self.server.storage.get(name, self.tag)
        if db is None:
            raise database_missing(name)
        return db


@dataclass
class StandIn:
    """A RavenDB-compatible server with N nodes on consecutive ports; each database has one copy per node."""

    host: str = "127.0.0.1"
    port: int = 0
    nodes_count: int = 1
    tls_cert: Path | None = None
    tls_key: Path | None = None
    trusted: set[str] = field(default_factory=set)
    host_name: str = ""
    storage: Storage = field(default_factory=Storage)
    nodes: list[Node] = field(default_factory=list)
    requests: Counter = field(default_factory=Counter)  # "NODE METHOD /path" -> requests (control API aside)
    requests_lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.host_name = self.host_name or ("localhost" if self.tls_cert else self.host)
        tls = server_context(str(self.tls_cert), str(self.tls_key)) if self.tls_cert and self.tls_key else None
        for i in range(self.nodes_count):
            port = self.port + i if self.port else 0
            listener = Listener(self.host, port, _refuse, tls)
            node = Node(chr(ord("A") + i), listener, self)
            listener.handler = self._handler_for(node)
            self.nodes.append(node)
        self.storage.node_tags = [node.tag for node in self.nodes]
        self.routes = build_routes()

    # ---- lifecycle ----------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start listening on every node."""
        for node in self.nodes:
            node.listener.start()

    def stop(self) -> None:
        """Stop every node."""
        for node in self.nodes:
            node.listener.stop()

    @property
    def urls(self) -> list[str]:
        """One URL per node."""
        return [node.url for node in self.nodes]

    def trust(self, cert: x509.Certificate) -> None:
        """Register a client certificate (by SHA-1 and SHA-256 thumbprint)."""
        self.trusted.add(thumbprint(cert))
        self.trusted.add(thumbprint_sha256(cert))

    def node(self, tag: str) -> Node:
        """A node by tag."""
        for node in self.nodes:
            if node.tag == tag.upper():
                return node
        raise RavenError(404, "System.ArgumentException", f"No node with tag '{tag}'")

    # ---- request handling ---------------------------------------------------------------------------------

    def _handler_for(self, node: Node) -> Callable[[Request], Response]:
        def handler(request: Request) -> Response:
            if not request.path.startswith("/standin/"):
                with self.requests_lock:
                    self.requests[f"{node.tag} {request.method} {request.path}"] += 1
            try:
                self.authorize(request)
                response = self.dispatch(node, request)
            except RavenError as e:
                response = json_response(e.body(node.url + request.target), e.status, e.headers)
            response.headers.setdefault("Date", self.http_date(node.tag))
            return response

        return handler

    def http_date(self, tag: str) -> str:
        """The `Date` header a node sends: its own clock, the one that stamps its writes (the server clock, frozen
        while a test freezes it, plus the node's skew, which a test sets or steps), to the second, as Kestrel writes
        it on every response."""
        ticks = self.storage.clock.now() + self.storage.skew_ticks.get(tag, 0)
        return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(ticks / 10_000_000))

    def authorize(self, request: Request) -> None:
        """Per-request client-certificate check on a TLS server: 403 unless a known, unexpired cert was sent."""
        if not request.tls:
            return
        cert = request.peer_cert
        if cert is None:
            raise RavenError(
                403,
                "InvalidAuth",
                "This server requires client certificate for authentication, but none was provided by the client.",
            )
        subject = cert.subject.rfc4514_string()
        tp = thumbprint(cert)
        if tp not in self.trusted and thumbprint_sha256(cert) not in self.trusted:
            raise RavenError(
                403,
                "InvalidAuth",
                f"The supplied client certificate '{subject} (Thumbprint: {tp})' is unknown to the server. "
                "In order to register your certificate please contact your system administrator.",
            )
        now = datetime.now(timezone.utc)
        if now > cert.not_valid_after_utc or now < cert.not_valid_before_utc:
            raise RavenError(
                403,
                "InvalidAuth",
                f"The supplied client certificate '{subject} (Thumbprint: {tp})' has expired on "
                f"{cert.not_valid_after_utc:%m/%d/%Y %H:%M:%S}",
            )

    def dispatch(self, node: Node, request: Request) -> Response:
        """Find the route for method + path."""
        for method, pattern, route in self.routes:
            if method != request.method and not (method == "GET" and request.method == "HEAD"):
                continue
            match = pattern.fullmatch(request.path)
            if match:
                if route in SHARDED_UNMODELLED:
                    _refuse_sharded_read(node, request, match)
                return route(node, request, match)
        raise RavenError(
            501,
            "System.NotSupportedException",
            f"The RavenDB stand-in does not implement {request.method} {request.path}",
        )


def _refuse(_request: Request) -> Response:
    """Handler of a listener not yet bound to a node."""
    return Response(503)


# ---- cluster / server-wide -------------------------------------------------------------------------------------


def topology(node: Node, request: Request, _m: re.Match) -> Response:
    """GET /topology?name=db: every node of the cluster as a Member."""
    name = request.arg("name")
    if name:
        node.database(name)
    nodes = [{"Url": n.url, "ClusterTag": n.tag, "Database": name, "ServerRole": "Member"} for n in node.server.nodes]
    return json_response({"Nodes": nodes, "Etag": 1})


def cluster_topology(node: Node, _r: Request, _m: re.Match) -> Response:
    """GET /cluster/topology."""
    members = {n.tag: n.url for n in node.server.nodes}
    body = {
        "Topology": {
            "TopologyId": "standin",
            "Members": members,
            "Promotables": {},
            "Watchers": {},
            "LastNodeId": node.server.nodes[-1].tag,
            "Etag": 1,
        },
        "Leader": node.server.nodes[0].tag,
        "LeaderShipDuration": 0,
        "CurrentState": "Leader" if node.tag == "A" else "Follower",
        "NodeTag": node.tag,
        "CurrentTerm": 1,
        "NodeLicenseDetails": {},
        "Etag": 1,
        "Status": {},
    }
    return json_response(body)


def build_version(_n: Node, _r: Request, _m: re.Match) -> Response:
    """GET /build/version."""
    return json_response(
        {"ProductVersion": "7.1", "BuildVersion": 71000, "CommitHash": "standin", "FullVersion": "7.1.0-standin"}
    )


def database_names(node: Node, request: Request, _m: re.Match) -> Response:
    """GET /databases?namesOnly=true, or GET /databases?name= (one database's information: `database_info`)."""
    if request.arg("name") is not None:
        return database_info(node, request.arg("name") or "")
    names = node.server.storage.names()
    start = int(request.arg("start", "0") or 0)
    size = int(request.arg("pageSize", str(MAX_PAGE)) or MAX_PAGE)
    return json_response({"Databases": names[start : start + size]})


def create_database(node: Node, request: Request, _m: re.Match) -> Response:
    """PUT /admin/databases?name=…: CreateDatabaseOperation."""
    record = body_json(request) or {}
    name = request.arg("name") or record.get("DatabaseName")
    if not name:
        raise RavenError(400, "System.ArgumentException", "Database name is required")
    shards = _shards_of(record, [n.tag for n in node.server.nodes])
    node.server.storage.create(name)
    if shards:
        node.server.storage.group(name).shards = shards
    members = [n.tag for n in node.server.nodes]
    topo = {
        "Members": members,
        "Promotables": [],
        "Rehabs": [],
        "PredefinedMentors": {},
        "DemotionReasons": {},
        "PromotablesStatus": {},
        "ReplicationFactor": len(members),
        "DynamicNodesDistribution": False,
        "Stamp": {"Index": 1, "Term": 1, "LeadersTicks": 0},
        "DatabaseTopologyIdBase64": "c3RhbmRpbg",
        "PriorityOrder": [],
    }
    return json_response({"RaftCommandIndex": 1, "Name": name, "Topology": topo, "NodesAddedTo": members}, 201)


def delete_databases(node: Node, request: Request, _m: re.Match) -> Response:
    """DELETE /admin/databases: DeleteDatabaseOperation."""
    params = body_json(request) or {}
    names = params.get("DatabaseNames") or []
    for name in names:
        if not node.server.storage.delete(name):
            raise database_missing(name)
    return json_response({"RaftCommandIndex": 1, "PendingDeletes": []})


def database_record(node: Node, request: Request, _m: re.Match) -> Response:
    """GET /admin/databases?name=…: a minimal record (404 when missing)."""
    db = node.server.storage.get(request.arg("name") or "")
    if db is None:
        return Response(404)
    members = [n.tag for n in node.server.nodes]
    if db.group.shards:  # a sharded record has no Topology of its own (DatabaseHelper.Validate)
        sharding = {"Shards": {str(n): {"Members": tags} for n, tags in db.group.shards.items()}}
        return json_response({"DatabaseName": db.name, "Disabled": False, "Sharding": sharding, "Etag": 1})
    return json_response({"DatabaseName": db.name, "Disabled": False, "Topology": {"Members": members}, "Etag": 1})


def _shards_of(record: dict[str, Any], node_tags: list[str]) -> dict[int, list[str]]:
    """The shards a creation record asks for (`Sharding.Shards`: shard number -> topology), each with its node
    tags: the ones its topology lists, else one node, spread over the cluster (replication factor 1, the python
    client's default). RavenDB refuses a sharded record that also carries a `Topology`
    (src/Raven.Server/Web/System/DatabaseHelper.cs `Validate`, as a BadRequestException)."""
    shards = ((record.get("Sharding") or {}).get("Shards")) or {}
    if shards and record.get("Topology") is not None:
        raise RavenError(
            400,
            "Raven.Client.Exceptions.BadRequestException",
            "Database document validation failed. Sharded database can't have field Topology defined in its record.",
        )
    return {
        int(number): list((topology or {}).get("Members") or [node_tags[int(number) % len(node_tags)]])
        for number, topology in shards.items()
    }


def database_info(node: Node, name: str) -> Response:
    """GET /databases?name=: the database's information, as RavenDB 6.x/7.x serves it
    (src/Raven.Server/Web/System/Processors/Databases/DatabasesHandlerProcessorForGet.cs): `{"Databases": [...]}`
    with one `DatabaseInfo` per record from `RawDatabaseRecord.AsShardsOrNormal()`: the database itself, or for a
    sharded database one per shard, named `<database>$<shard number>` (`ShardHelper.ToShardName`; `$` is not
    allowed in a database name, src/Raven.Client/Util/ResourceNameValidator.cs) with that shard's nodes in
    `NodesTopology`. An unknown database: 404 with `Database-Missing`. Sizes, uptime and counts are not modelled
    (zeros)."""
    group = node.server.storage.group(name)
    if group is None:
        return Response(404, b"", {"Database-Missing": name})
    if group.shards:
        records = [(f"{group.name}${number}", tags) for number, tags in sorted(group.shards.items())]
    else:
        records = [(group.name, list(group.copies))]
    return json_response({"Databases": [_database_info(node, name, tags) for name, tags in records]})


def _database_info(node: Node, name: str, tags: list[str]) -> dict[str, Any]:
    """One `DatabaseInfo` as `DatabaseInfo.ToJson` writes it
    (src/Raven.Client/ServerWide/Operations/DatabasesInfo.cs)."""
    urls = {n.tag: n.url for n in node.server.nodes}
    size = {"HumaneSize": "0 Bytes", "SizeInBytes": 0}
    return {
        "Name": name,
        "Disabled": False,
        "TotalSize": size,
        "TempBuffersSize": size,
        "IsAdmin": True,
        "IsEncrypted": False,
        "UpTime": None,
        "BackupInfo": None,
        "Alerts": 0,
        "PerformanceHints": 0,
        "RejectClients": False,
        "IndexingErrors": 0,
        "DocumentsCount": 0,
        "HasRevisionsConfiguration": False,
        "HasExpirationConfiguration": False,
        "HasRefreshConfiguration": False,
        "IndexesCount": 0,
        "IndexingStatus": "Running",
        "NodesTopology": {
            "Members": [{"NodeTag": tag, "NodeUrl": urls.get(tag), "ResponsibleNode": None} for tag in tags],
            "Promotables": [],
            "Rehabs": [],
            "Status": {tag: {"LastStatus": "Ok", "LastError": None} for tag in tags},
            "PriorityOrder": [],
        },
        "ReplicationFactor": len(tags),
        "DynamicNodesDistribution": False,
        "DeletionInProgress": {},
        "Environment": "None",
    }


def _refuse_sharded_read(node: Node, request: Request, match: re.Match) -> None:
    """The stand-in models a sharded database's record and writes to it, not how its orchestrator reads across
    shards: such a read gets 501 rather than an answer RavenDB would not give."""
    group = node.server.storage.group(match["db"])
    if group is not None and group.shards:
        raise RavenError(
            501,
            "System.NotSupportedException",
            f"The RavenDB stand-in does not model {request.method} {request.path} on a sharded database",
        )


# ---- documents ---------------------------------------------------------------------------------------------------


def docs_get(node: Node, request: Request, m: re.Match) -> Response:
    """GET/POST /databases/{db}/docs: by id(s), or a page of all documents; 404 for a single missing id."""
    db = node.database(m["db"])
    ids = request.query.get("id", [])
    if request.method == "POST":
        ids = (body_json(request) or {}).get("Ids", [])
    if not ids:
        return _docs_page(db, request)
    with db.lock:
        found = [db.get(i) for i in ids]
    if len(ids) == 1 and found[0] is None:
        return Response(404)
    if request.method == "HEAD":
        return Response(200, b"", {"ETag": f'"{found[0].change_vector}"'})
    parts = [d.raw if d else b"null" for d in found]
    return Response(200, b'{"Results":[' + b",".join(parts) + b'],"Includes":{}}', dict(JSON))


def _docs_page(db: Database, request: Request) -> Response:
    """GET /docs?start=&pageSize=[&startsWith=]: documents by etag (or by id for a prefix)."""
    start = int(request.arg("start", "0") or 0)
    size = int(request.arg("pageSize", "1024") or 1024)
    prefix = (request.arg("startsWith") or "").lower()
    with db.lock:
        docs = (
            list(db.all_docs.values())[::-1]
            if not prefix
            else sorted((d for k, d in db.docs.items() if k.startswith(prefix)), key=lambda d: d.key)
        )
    parts = [d.raw for d in docs[start : start + size]]
    return Response(200, b'{"Results":[' + b",".join(parts) + b"]}", dict(JSON))


def docs_put(node: Node, request: Request, m: re.Match) -> Response:
    """PUT /databases/{db}/docs?id=…"""
    db = node.database(m["db"])
    doc_id = request.arg("id")
    document = body_json(request)
    if not doc_id or not isinstance(document, dict):
        raise RavenError(400, "System.ArgumentException", "PUT docs needs ?id= and a JSON object body")
    expected = request.headers.get("if-match", "").strip('"') or None
    ticks = _clock_then_commit_latency(db, 1)[0]
    doc = db.put(doc_id, document, expected, ticks)
    return json_response({"Id": doc.id, "ChangeVector": doc.change_vector}, 201)


def docs_delete(node: Node, request: Request, m: re.Match) -> Response:
    """DELETE /databases/{db}/docs?id=…"""
    db = node.database(m["db"])
    expected = request.headers.get("if-match", "").strip('"') or None
    ticks = _clock_then_commit_latency(db, 1)[0]
    db.delete(request.arg("id") or "", expected, ticks)
    return Response(204)


def _clock_then_commit_latency(db: Database, writes: int) -> list[int]:
    """The @last-modified of each write of a transaction, read from the node's clock as each put runs
    (DocumentPutAction.PutDocument → DocumentsStorage.GetOrCreateLastModifiedTicks), then the wait until the
    transaction commits (the transaction merger batches and commits later), during which other writes may commit
    first: a write becomes visible after its @last-modified, and a later etag can carry an earlier timestamp."""
    ticks = [db.now() for _ in range(writes)]
    latency = db.group.commit_latency_ms
    if latency > 0:
        time.sleep(latency / 1000)
    return ticks


def bulk_docs(node: Node, request: Request, m: re.Match) -> Response:
    """POST /databases/{db}/bulk_docs: PUT and DELETE commands, applied in order."""
    db = node.database(m["db"])
    commands = (body_json(request) or {}).get("Commands") or []
    results: list[dict[str, Any]] = []
    stamps = _clock_then_commit_latency(db, len(commands))
    with db.lock:
        for command in commands:
            _validate_command(db, command)
        for command, ticks in zip(commands, stamps, strict=True):
            results.append(_apply_command(db, node, command, ticks))
    return json_response({"Results": results, "TransactionIndex": 0}, 201)


def _validate_command(db: Database, command: dict[str, Any]) -> None:
    """Reject the whole batch before any write (a batch is one transaction): type, id, change vector."""
    kind = command.get("Type")
    if kind not in ("PUT", "DELETE"):
        raise RavenError(
            400, "System.NotSupportedException", f"Batch command type '{kind}' is not supported by the stand-in"
        )
    if not isinstance(command.get("Id"), str) or not command["Id"]:
        raise RavenError(400, "System.ArgumentException", f"{kind} command without an Id")
    expected = command.get("ChangeVector")
    existing = db.docs.get(command["Id"].lower())  # a write to a conflicted id resolves it
    if expected is not None and (existing is None or existing.change_vector != expected):
        raise RavenError(
            409,
            "Raven.Client.Exceptions.ConcurrencyException",
            f"Document {command['Id']} has change vector {existing.change_vector if existing else 'none'}, "
            f"but {kind} was called with change vector {expected}. Optimistic concurrency violation, "
            "transaction will be aborted.",
        )


def _apply_command(db: Database, node: Node, command: dict[str, Any], ticks: int) -> dict[str, Any]:
    kind = command.get("Type")
    doc_id = command.get("Id")
    if kind == "PUT":
        doc = db.put(doc_id, command.get("Document") or {}, command.get("ChangeVector"), ticks)
        result = {"Type": "PUT", "@id": doc.id}
        if doc.collection != "@empty":
            result["@collection"] = doc.collection
        result.update({"@change-vector": doc.change_vector, "@last-modified": doc.last_modified})
        if doc.flags:
            result["@flags"] = doc.flags
        return result
    if kind == "DELETE":
        deleted = db.delete(doc_id, command.get("ChangeVector"), ticks)
        return {"Type": "DELETE", "Id": doc_id, "Deleted": deleted is not None}
    raise RavenError(
        400, "System.NotSupportedException", f"Batch command type '{kind}' is not supported by the stand-in"
    )


def hilo_next(node: Node, request: Request, m: re.Match) -> Response:
    """GET /databases/{db}/hilo/next?tag=…"""
    db = node.database(m["db"])
    tag = request.arg("tag") or ""
    separator = request.arg("identityPartsSeparator") or "/"
    return json_response(db.next_hilo(tag, separator))


def hilo_return(node: Node, _r: Request, m: re.Match) -> Response:
    """PUT /databases/{db}/hilo/return: accepted and ignored (ranges are never reused)."""
    node.database(m["db"])
    return Response(204)


def next_operation_id(node: Node, _r: Request, m: re.Match) -> Response:
    """GET /databases/{db}/operations/next-operation-id."""
    db = node.database(m["db"])
    with db.lock:
        db.operation_id += 1
        return json_response({"Id": db.operation_id, "NodeTag": node.tag})


def operation_state(node: Node, _r: Request, m: re.Match) -> Response:
    """GET /databases/{db}/operations/state?id=…: every operation completes synchronously."""
    node.database(m["db"])
    return json_response({"Status": "Completed", "Result": None, "Progress": None})


def bulk_insert(node: Node, request: Request, m: re.Match) -> Response:
    """POST /databases/{db}/bulk_insert: a JSON array of PUT commands streamed by the client."""
    db = node.database(m["db"])
    commands = body_json(request) or []
    with db.lock:
        for command in commands:
            if command.get("Type") != "PUT":
                raise RavenError(
                    400,
                    "System.NotSupportedException",
                    f"Bulk insert command '{command.get('Type')}' is not supported by the stand-in",
                )
            db.put(command["Id"], command.get("Document") or {})
    return Response(200, b"", dict(JSON))


# ---- queries -----------------------------------------------------------------------------------------------------


def _query_request(request: Request) -> QueryRequest:
    body = body_json(request) or {}
    query = parse(body.get("Query", ""))
    params = body.get("QueryParameters") or {}
    page = body.get("PageSize")
    return QueryRequest(
        query,
        params,
        int(body.get("Start") or 0),
        MAX_PAGE if page is None else int(page),
        bool(body.get("WaitForNonStaleResults")),
        parse_timespan(body.get("WaitForNonStaleResultsTimeout") or "00:00:15"),
    )


def _stats(outcome: Outcome, db: Database) -> dict[str, Any]:
    ticks = outcome.index_ticks or db.clock.now()
    return {
        "IsStale": outcome.is_stale,
        "IndexName": outcome.index_name,
        "TotalResults": outcome.total,
        "ResultEtag": outcome.result_etag,
        "IndexTimestamp": format_ticks(ticks),
    }


def queries(node: Node, request: Request, m: re.Match) -> Response:
    """POST /databases/{db}/queries."""
    db = node.database(m["db"])
    outcome = run_query(db, _query_request(request))
    stats = _stats(outcome, db)
    meta = {
        **stats,
        "LongTotalResults": outcome.total,
        "SkippedResults": outcome.skipped,
        "LastQueryTime": format_ticks(db.clock.now()),
        "NodeTag": node.tag,
        "DurationInMs": 0,
        "Includes": {},
        "IncludedPaths": None,
    }
    tail = dumps(meta)
    body = b'{"Results":[' + b",".join(d.raw for d in outcome.docs) + b"]," + tail[1:]
    return Response(200, body, {**JSON, "ETag": f'"{outcome.result_etag}"'})


def stream_query(node: Node, request: Request, m: re.Match) -> Response:
    """POST /databases/{db}/streams/queries?format=jsonl: Stats line, then one {"Item": doc} per line.

    It runs under RavenDB's query time limit (AbstractStreamingHandlerProcessorForGetStreamQuery.ExecuteAsync:
    CreateHttpRequestBoundTimeLimitedOperationTokenForQuery, Databases.QueryTimeoutInSec, 300 s by default), re-armed
    after each result written (StreamDocumentQueryResult.AddResultAsync → OperationCancelToken.Delay): a stream that
    writes no result for that long, because its reader stopped reading or the server stalled, is cancelled
    (`set_query_timeout` shortens it for tests)."""
    db = node.database(m["db"])
    with db.lock:
        cancel = CancelAfter(db.group.streams.query_timeout_s)
    req = _query_request(request)
    req.wait_for_non_stale = False
    req.stream = True
    outcome = run_query(db, req)
    first = dumps({"Stats": _stats(outcome, db)}) + b"\n"
    lines = _query_lines(first, db, outcome, cancel)
    return Response(200, lines, {"Content-Type": "application/jsonl; charset=utf-8"}, cancel=cancel)


def _query_lines(first: bytes, db: Database, outcome: Outcome, cancel: CancelAfter | None = None) -> Iterator[bytes]:
    """The Stats line, then `{"Item": doc}` lines (StreamJsonlDocumentQueryResultWriter.AddResultAsync); a failure
    ends it with the `{"Error": ...}` line its WriteErrorAsync writes."""
    yield first
    for part in _paced(db, outcome.docs, outcome.reload, outcome.renew, cancel):
        if isinstance(part, str):
            yield dumps({"Error": part}) + b"\n"
            return
        yield b'{"Item":' + b'}\n{"Item":'.join(d.raw for d in part) + b"}\n"


def _paced(
    db: Database,
    hits: list[Doc],
    reload: bool,
    renew: Callable[[int, Doc], list[Doc]] | None,
    cancel: CancelAfter | None = None,
) -> Iterator[list[Doc] | str]:
    """A stream's documents in batches, produced as the socket takes them, or the error message that ends it.

    A stream reads the snapshot it started with (index hits were loaded at the start). It renews its read
    transaction, like PulsedTransactionEnumerator.MoveNext, and takes the rest from `renew` in the new snapshot:
    every `read_pulse_docs` documents when a test set that, and, on a database whose documents compression covers
    the collection read (RavenDB 7.x counts decompression buffers in LowLevelTransaction.AdditionalMemoryUsageSize),
    at each multiple of 1,024 documents (PulsedEnumerationState) once the compressed documents read since the last
    renewal reach the pulse limit. `reload` (no caller sets it now) loads each hit's current version as it is sent.
    The test knobs: a stream pauses after N hits until released; stalls (sends nothing) for `stall_s` after
    `stall_after` hits; an error ends it; a throttle sends `throttle_docs` hits every `throttle_ms`. A query
    stream's time limit (`cancel`) that fires ends it with the OperationCanceledException line."""
    streams = db.group.streams
    with db.lock:
        cuts = streams.cuts()
        chunk, delay_s = streams.throttle_docs or STREAM_CHUNK_DOCS, streams.throttle_ms / 1000
        pulse = streams.read_pulse_docs if renew is not None else None
        compressed = db.group.compressed_collections() if renew is not None else None
        pulse_limit = streams.pulse_limit_bytes
    pending, at, sent, last = hits, 0, 0, None  # pending[at:]: what the current snapshot has left to send
    buffered = 0  # bytes of compressed documents read since the last renewal
    while True:
        renewing = pulse and sent and sent % pulse == 0
        if compressed is not None and sent and sent % PULSE_CHECK_DOCS == 0 and buffered >= pulse_limit:
            renewing = True
        if renewing and renew is not None and last is not None:
            with db.lock:
                pending, at, buffered = renew(sent, last), 0, 0
        if at >= len(pending):
            return
        if sent and delay_s:
            time.sleep(delay_s)
        if cancel is not None and cancel.check():
            yield QUERY_TIMEOUT_ERROR
            return
        stops = [sent + chunk, *(cut for cut in cuts if cut > sent)]
        if pulse:
            stops.append((sent // pulse + 1) * pulse)
        if compressed is not None:
            stops.append((sent // PULSE_CHECK_DOCS + 1) * PULSE_CHECK_DOCS)
        batch = pending[at : at + min(stops) - sent]
        at += len(batch)
        sent += len(batch)
        last = batch[-1]
        if compressed is not None:
            buffered += sum(len(doc.raw) for doc in batch if compressed is True or doc.collection.lower() in compressed)
        if reload:
            with db.lock:
                batch = [doc for doc in (db.docs.get(hit.key) for hit in batch) if doc is not None]
        if batch:
            yield batch
        if sent not in cuts:
            continue
        with db.lock:
            error, pause, stall = streams.fire_error(sent), streams.fire_pause(sent), streams.fire_stall(sent)
            db.changed.notify_all()
        if error is not None:
            yield error
            return
        if stall:
            if cancel is None:
                time.sleep(stall)
            elif cancel.fired.wait(stall):
                yield QUERY_TIMEOUT_ERROR
                return
        if pause:
            streams.release.wait(60)
            with db.lock:
                streams.paused_at = None


def _page_args(request: Request) -> tuple[int, int]:
    """`start` (default 0) and `pageSize` (default int.MaxValue: everything), as RequestHandler.GetStart /
    GetPageSize read them."""
    start = int(request.arg("start", "0") or 0)
    size = request.arg("pageSize")
    return max(start, 0), MAX_PAGE if not size else max(int(size), 0)


def stream_docs(node: Node, request: Request, m: re.Match) -> Response:
    """GET /databases/{db}/streams/docs, as StreamingHandlerProcessorForGetDocs serves it: without `startsWith`,
    every document newest etag first (GetDocumentsInReverseEtagOrder), resumed after a read-transaction renewal
    from the last etag read (GetDocumentsInReverseEtagOrderFrom, see Database.older_than_resumed); with `startsWith`,
    by id, one snapshot (its renewals are not modelled). `ETag` = the database change vector. With format=jsonl
    each document is a line of its own (StreamJsonlResultsWriter: no `Item` wrapper, no Stats line), otherwise one
    `{"Results": [...]}` object (StreamResultsWriter)."""
    db = node.database(m["db"])
    prefix = (request.arg("startsWith") or "").lower()
    start, size = _page_args(request)
    renew: Callable[[int, Doc], list[Doc]] | None = None
    with db.lock:
        if prefix:
            docs = sorted((d for k, d in db.docs.items() if k.startswith(prefix)), key=lambda d: d.key)
        else:
            docs = db.newest_first()

            def renew(read: int, last: Doc) -> list[Doc]:
                return db.older_than_resumed(last.etag)[: max(size - read, 0)]

        etag = format_change_vector(db.vector)
    parts = _paced(db, docs[start : start + size], False, renew)
    if (request.arg("format") or "").lower() == "jsonl":
        jsonl = {"Content-Type": "application/jsonl; charset=utf-8", "ETag": f'"{etag}"'}
        return Response(200, _docs_lines(node, request, parts), jsonl)
    return Response(200, _docs_results(node, request, parts), {**JSON, "ETag": f'"{etag}"'})


def _docs_lines(node: Node, request: Request, parts: Iterator[list[Doc] | str]) -> Iterator[bytes]:
    for part in parts:
        if isinstance(part, str):
            yield _stream_error(node, request, part) + b"\n"
            return
        yield b"\n".join(d.raw for d in part) + b"\n"


def _docs_results(node: Node, request: Request, parts: Iterator[list[Doc] | str]) -> Iterator[bytes]:
    yield b'{"Results":['
    first = True
    for part in parts:
        if isinstance(part, str):
            yield b"]}" + _stream_error(node, request, part)
            return
        yield (b"" if first else b",") + b",".join(d.raw for d in part)
        first = False
    yield b"]}"


def _stream_error(node: Node, request: Request, message: str) -> bytes:
    """What a docs stream that fails midway appends: the server's error object (the docs writers have no error
    line of their own). UNSURE: how RavenDB ends a response that has started when the handler throws."""
    error = RavenError(500, "System.OperationCanceledException", message.splitlines()[0] if message else "")
    return dumps(error.body(node.url + request.target))


def collection_docs(node: Node, request: Request, m: re.Match) -> Response:
    """GET /databases/{db}/collections/docs?name=&start=&pageSize=, as CollectionsHandlerProcessorForGetCollection
    Documents serves it: one read transaction, the collection's documents newest etag first
    (GetDocumentsInReverseEtagOrder(context, name, start, pageSize)), the name case-insensitive, an unknown
    collection empty; `{"Results": [...]}` and nothing else."""
    db = node.database(m["db"])
    name = request.arg("name")
    if not name or not name.strip():
        raise RavenError(400, "System.ArgumentException", "Query string name is mandatory, but wasn't specified.")
    start, size = _page_args(request)
    with db.lock:
        docs = db.newest_first(name)[start : start + size]
    return Response(200, b'{"Results":[' + b",".join(d.raw for d in docs) + b"]}", dict(JSON))


# ---- stats / revisions ---------------------------------------------------------------------------------------


def stats(node: Node, _r: Request, m: re.Match) -> Response:
    """GET /databases/{db}/stats."""
    return json_response(node.database(m["db"]).stats())


def collection_stats(node: Node, _r: Request, m: re.Match) -> Response:
    """GET /databases/{db}/collections/stats."""
    return json_response(node.database(m["db"]).collection_stats())


def revisions_config(node: Node, request: Request, m: re.Match) -> Response:
    """POST /databases/{db}/admin/revisions/config: {Default, Collections}."""
    db = node.database(m["db"])
    config = body_json(request) or {}
    with db.lock:
        db.revisions_config = config
        db.raft_index += 1
        return json_response({"RaftCommandIndex": db.raft_index})


def revisions_bin(node: Node, request: Request, m: re.Match) -> Response:
    """GET /databases/{db}/revisions/bin?start=&pageSize=, as RavenDB 6.x/7.x answers it
    (RevisionsHandlerProcessorForGetRevisionsBin): no check of the revisions configuration (without one the bin is
    simply empty), `ETag` = change vector of the newest raw delete revision while it is a bin entry, 304 when
    `If-None-Match` carries it, otherwise one page of raw records (see RevisionsBin.page). Each node answers from
    its own bin."""
    db = node.database(m["db"])
    start = int(request.arg("start", "0") or 0)
    size = int(request.arg("pageSize", str(MAX_PAGE)) or MAX_PAGE)
    with db.lock:
        bin_ = db.revisions
        etag = bin_.etag(lambda key: key in db.docs)
        if etag is not None and request.headers.get("if-none-match", "").strip('"') == etag:
            bin_.pages["not modified"] += 1
            return Response(304, b"", {"ETag": f'"{etag}"'})
        results = [entry.to_json() for entry in bin_.page(start, size, lambda key: key in db.docs)]
    headers = {"ETag": f'"{etag}"'} if etag is not None else {}
    return json_response({"Results": results}, headers=headers)


def revisions_config_get(node: Node, _r: Request, m: re.Match) -> Response:
    """GET /databases/{db}/revisions/config: the database record's revisions configuration, 404 when it has none
    (RevisionsHandler `GetRevisionsConfig`; AbstractRevisionsHandlerProcessorForGetRevisionsConfiguration in later
    versions; a Read endpoint for any valid user)."""
    db = node.database(m["db"])
    with db.lock:
        config = db.revisions_config
        if not config:
            return Response(404, b"", {})
        return json_response({"Default": config.get("Default"), "Collections": config.get("Collections") or {}})


def revisions_debug(node: Node, request: Request, m: re.Match) -> Response:
    """GET /databases/{db}/debug/documents/get-revisions?start=&pageSize=, as RavenDB 6.x/7.x answers it
    (RevisionsHandlerProcessorForGetRevisionsDebug, RevisionsStorage.GetRevisionsFrom): this node's revisions of
    every collection at etag >= start, in etag order, pageSize + 1 of them (GetRevisionsFrom counts after it
    yields), metadata only: `{"Revisions": [{Id, Etag, LastModified, ChangeVector}]}`. `start` defaults to 0 and
    pageSize to int.MaxValue; 5.x named the parameter `etag`, which 6.x/7.x ignore."""
    db = node.database(m["db"])
    start = int(request.arg("start", "0") or 0)
    size = int(request.arg("pageSize", str(2**31 - 1)) or 2**31 - 1)
    with db.lock:
        page = [revision.debug_entry() for revision in db.revision_store.from_etag(start, size)]
    return json_response({"Revisions": page})


def revisions_get(node: Node, request: Request, m: re.Match) -> Response:
    """GET /databases/{db}/revisions, as RavenDB 6.x/7.x answers it (RevisionsHandlerProcessorForGetRevisions):
    with `changeVector` (repeatable) `{"Results": [...]}` in the order asked, null for a revision this node does
    not hold, but 404 when the one change vector asked is missing; with `id` (and `start`, `pageSize`) the id's
    revisions newest first and `TotalResults`. `metadataOnly=true` leaves the bodies out.
    Each node answers from its own revisions."""
    db = node.database(m["db"])
    metadata_only = (request.arg("metadataOnly") or "").lower() == "true"
    vectors = request.query.get("changeVector") or []
    with db.lock:
        store = db.revision_store
        if vectors:
            found = [store.by_change_vector.get(vector) for vector in vectors]
            if len(vectors) == 1 and found[0] is None:
                return Response(404, b"", {})
            total = None
        else:
            doc_id = request.arg("id")
            if not doc_id:
                raise RavenError(400, "System.ArgumentException", "Query string 'id' or 'changeVector' is mandatory")
            every = store.of_id(doc_id.lower())
            start = int(request.arg("start", "0") or 0)
            size = int(request.arg("pageSize", str(2**31 - 1)) or 2**31 - 1)
            found, total = every[start : start + size], len(every)
        parts = [b"null" if revision is None else _revision_json(revision.raw, metadata_only) for revision in found]
    body = b'{"Results":[' + b",".join(parts) + b"]"
    body += b"}" if total is None else b',"TotalResults":' + str(total).encode() + b"}"
    return Response(200, body, dict(JSON))


def _revision_json(raw: bytes, metadata_only: bool) -> bytes:
    if not metadata_only:
        return raw
    return dumps({"@metadata": json.loads(raw)["@metadata"]})


def multi_get(node: Node, request: Request, m: re.Match) -> Response:
    """POST /databases/{db}/multi_get {"Requests": [{"Url", "Query", "Method"?, "Headers"?}]}, as RavenDB 6.x/7.x
    answers it (AbstractMultiGetHandlerProcessorForPost): each request is routed by its `Url` (the full path,
    `/databases/{db}/...`) and `Query` (`?a=b`) on this node, in order, and answered as
    `{"Results": [{"Result", "StatusCode", "Headers"}]}`; an entry without `Url` or `Query` gets `{}`, a path
    without a handler 400 with `{"Error": "There is no handler for path: ..."}`, a failing one its error object."""
    node.database(m["db"])
    body = body_json(request) or {}
    entries = body.get("Requests")
    if not isinstance(entries, list):
        raise RavenError(400, "System.ArgumentException", "Request should have a property named 'Requests'")
    results: list[dict[str, Any]] = []
    for entry in entries:
        url, query = entry.get("Url"), entry.get("Query")
        if url is None or query is None:
            results.append({})
            continue
        method = entry.get("Method") or "GET"
        headers = {name.lower(): value for name, value in (entry.get("Headers") or {}).items() if value}
        parameters = parse_qs(query.removeprefix("?"), keep_blank_values=True)
        inner = Request(method, url + query, url, parameters, headers, b"", request.peer_cert, request.tls)
        if not any(verb == method and pattern.fullmatch(url) for verb, pattern, _ in node.server.routes):
            error = {"Error": f"There is no handler for path: {method} {url}{query}"}
            results.append({"StatusCode": 400, "Result": error})
            continue
        try:
            response = node.server.dispatch(node, inner)
        except RavenError as e:
            response = json_response(e.body(node.url + url + query), e.status, e.headers)
        content = response.body if isinstance(response.body, bytes) else b"".join(response.body)
        result = json.loads(content) if content else None
        extra = {k: v for k, v in response.headers.items() if k.lower() != "content-type"}
        results.append({"Result": result, "StatusCode": response.status, "Headers": extra})
    return json_response({"Results": results})


def control_revisions_bin(node: Node, _r: Request, m: re.Match) -> Response:
    """GET /standin/databases/{db}/revisions/bin: the shapes of the bin pages every node served so far, and the raw
    records of this node's bin."""
    db = node.database(m["db"])
    pages: Counter = Counter()
    with db.lock:
        for copy in db.group.copies.values():
            pages.update(copy.revisions.pages)
        return json_response({"Pages": dict(pages), "DeleteRevisions": len(db.revisions.deletes)})


def control_requests(node: Node, _r: Request, _m: re.Match) -> Response:
    """GET /standin/requests: how many requests each node got per "METHOD /path" (control API aside), since start."""
    with node.server.requests_lock:
        return json_response({"Requests": dict(node.server.requests)})


# ---- /standin control --------------------------------------------------------------------------------------------


def control_clock(node: Node, request: Request, _m: re.Match) -> Response:
    """POST /standin/clock {"frozen": bool}: freeze or release the server clock."""
    clock = node.server.storage.clock
    body = body_json(request) or {}
    if "frozen" in body:
        clock.freeze(bool(body["frozen"]))
    return json_response({"Frozen": clock.frozen, "Now": format_ticks(clock.now())})


def control_indexing(node: Node, request: Request, m: re.Match) -> Response:
    """POST /standin/databases/{db}/indexing {"paused"?, "lag_ms"?, "build_s"?, "new_index_wait_s"?,
    "dynamic_queries_disabled"?, "include_archived"?, "superseded_delete_s"?, "delete_auto_indexes"?}: on every node.
    Answers the knobs, how many auto indexes queries created, and the indexes of the node asked."""
    db = node.database(m["db"])
    body = body_json(request) or {}
    knobs = db.indexing
    with db.lock:
        if "lag_ms" in body:
            knobs.lag_ms = int(body["lag_ms"])
        if "build_s" in body:
            knobs.build_s = float(body["build_s"])
        if "new_index_wait_s" in body:
            wait = body["new_index_wait_s"]
            knobs.new_index_wait_s = None if wait is None else float(wait)
        if "dynamic_queries_disabled" in body:
            knobs.dynamic_queries_disabled = bool(body["dynamic_queries_disabled"])
        if "include_archived" in body:
            knobs.include_archived = bool(body["include_archived"])
        if "superseded_delete_s" in body:
            knobs.superseded_delete_s = float(body["superseded_delete_s"])
        if body.get("delete_auto_indexes"):
            db.group.delete_auto_indexes()
        if "paused" in body:
            knobs.paused = bool(body["paused"])
            if not knobs.paused:
                for copy in db.group.copies.values():
                    for index in copy.indexes.values():
                        copy.catch_up(index)
        db.drop_superseded()
        db.changed.notify_all()
        state = {
            "Paused": knobs.paused,
            "LagMs": knobs.lag_ms,
            "BuildS": knobs.build_s,
            "NewIndexWaitS": knobs.new_index_wait_s,
            "DynamicQueriesDisabled": knobs.dynamic_queries_disabled,
            "IncludeArchived": knobs.include_archived,
            "SupersededDeleteS": knobs.superseded_delete_s,
            "AutoIndexesCreated": knobs.auto_indexes_created,
            "Indexes": [{**db.index_info(ix), "SupersededBy": ix.superseded_by} for ix in db.indexes.values()],
        }
    return json_response(state)


def control_replication(node: Node, request: Request, m: re.Match) -> Response:
    """POST /standin/databases/{db}/replication {"delay_ms"?, "paused"?, "flush"?}: flush applies every queued
    write now (even while paused)."""
    group = node.database(m["db"]).group
    body = body_json(request) or {}
    with group.lock:
        if "delay_ms" in body:
            group.replication.delay_ms = int(body["delay_ms"])
        if "paused" in body:
            group.replication.paused = bool(body["paused"])
        if body.get("flush"):
            group.apply_due(everything=True)
        group.changed.notify_all()
        return json_response(group.replication_state())


def control_streams(node: Node, request: Request, m: re.Match) -> Response:
    """POST /standin/databases/{db}/streams {"pause_after"?, "release"?, "error_after"?, "error_times"?, "error"?,
    "throttle_docs"?, "throttle_ms"?, "read_pulse_docs"?, "stall_after"?, "stall_s"?, "query_timeout_s"?}: arm a
    pause of the next stream that reaches N results, or a stall of `stall_s` seconds (then it goes on by itself),
    release a paused stream, end streams that reach N results with an error (error_times: how many streams; -1 =
    every one; 0 disarms), slow every stream down (throttle_docs 0 = full speed), or make document streams renew
    their read transaction every N documents (null or 0: never). Query streams and GET /streams/docs alike, except
    `query_timeout_s` (null: RavenDB's 300 s), the time limit of query streams only: GET /streams/docs runs under
    a token without one (AbstractStreamingHandlerProcessorForGetDocs: CreateOperationToken)."""
    group = node.database(m["db"]).group
    body = body_json(request) or {}
    streams = group.streams
    with group.lock:
        if "pause_after" in body:
            streams.pause_after = None if body["pause_after"] is None else int(body["pause_after"])
        if body.get("release"):
            streams.release.set()
        if "throttle_docs" in body:
            streams.throttle_docs = int(body["throttle_docs"] or 0)
            streams.throttle_ms = int(body.get("throttle_ms") or 0)
        if "read_pulse_docs" in body:
            every = body["read_pulse_docs"]
            streams.read_pulse_docs = None if not every else int(every)
        if "stall_after" in body:
            streams.stall_after = None if body["stall_after"] is None else int(body["stall_after"])
            streams.stall_s = float(body.get("stall_s") or 0)
        if "query_timeout_s" in body:
            timeout = body["query_timeout_s"]
            streams.query_timeout_s = 300.0 if timeout is None else float(timeout)
        if "pulse_limit_bytes" in body:
            streams.pulse_limit_bytes = int(body["pulse_limit_bytes"])
        if "error_after" in body:
            streams.error_after = None if body["error_after"] is None else int(body["error_after"])
            streams.error_times = int(body.get("error_times", 1))
            streams.error = str(body.get("error") or STREAM_ERROR)
        return json_response(
            {
                "PauseAfter": streams.pause_after,
                "PausedAt": streams.paused_at,
                "ErrorAfter": streams.error_after,
                "ErrorTimes": streams.error_times,
                "ThrottleDocs": streams.throttle_docs,
                "ThrottleMs": streams.throttle_ms,
                "ReadPulseDocs": streams.read_pulse_docs,
                "StallAfter": streams.stall_after,
                "StallS": streams.stall_s,
                "QueryTimeoutS": streams.query_timeout_s,
                "PulseLimitBytes": streams.pulse_limit_bytes,
            }
        )


def _nodes_state(server: StandIn) -> dict[str, Any]:
    return {"Nodes": [{"Tag": n.tag, "Url": n.url, "Running": n.listener.running} for n in server.nodes]}


def control_nodes(node: Node, _r: Request, _m: re.Match) -> Response:
    """GET /standin/nodes."""
    return json_response(_nodes_state(node.server))


def control_node_action(node: Node, _r: Request, m: re.Match) -> Response:
    """POST /standin/nodes/{tag}/stop|start: stopping closes the port (a node may stop itself) and holds back the
    replication to it until it starts again."""
    target = node.server.node(m["tag"])
    storage = node.server.storage
    if m["action"] == "start":
        if not target.listener.running:
            target.listener.start()
        storage.offline.discard(target.tag)
        for group in list(storage.databases.values()):
            group.apply_due()
        return json_response(_nodes_state(node.server))
    storage.offline.add(target.tag)
    state = _nodes_state(node.server)
    for entry in state["Nodes"]:
        if entry["Tag"] == target.tag:
            entry["Running"] = False
    if target is node:
        threading.Timer(0.05, target.listener.stop).start()
    else:
        target.listener.stop()
    return json_response(state)


def control_node_clock(node: Node, request: Request, m: re.Match) -> Response:
    """POST /standin/nodes/{tag}/clock {"skew_ms"?: n, "step_back_ms"?: n}: that node's clock (its writes'
    @last-modified and its `Date` header) is the server clock + skew_ms; step_back_ms sets the node's clock back
    by that much from where it is now, as time synchronisation does to a clock that ran ahead."""
    target = node.server.node(m["tag"])
    skew = node.server.storage.skew_ticks
    body = body_json(request) or {}
    if "skew_ms" in body:
        skew[target.tag] = int(body["skew_ms"]) * 10_000
    if "step_back_ms" in body:
        skew[target.tag] = skew.get(target.tag, 0) - int(body["step_back_ms"]) * 10_000
    return json_response({"Tag": target.tag, "SkewMs": skew.get(target.tag, 0) // 10_000})


def control_conflicts(node: Node, request: Request, m: re.Match) -> Response:
    """POST /standin/databases/{db}/conflicts {"resolve_to_latest"?: bool}: the conflict solver of the database
    record (ModifyConflictSolverOperation's ResolveToLatest; RavenDB resolves to the latest unless it is false).
    Answers the conflicts each node keeps."""
    group = node.database(m["db"]).group
    body = body_json(request) or {}
    with group.lock:
        if "resolve_to_latest" in body:
            group.resolve_to_latest = bool(body["resolve_to_latest"])
        kept = {tag: sorted(copy.conflicts) for tag, copy in group.copies.items()}
        return json_response({"ResolveToLatest": group.resolve_to_latest, "Conflicts": kept})


def control_writes(node: Node, request: Request, m: re.Match) -> Response:
    """POST /standin/databases/{db}/writes {"commit_latency_ms"}: how long each write request (PUT, DELETE,
    bulk_docs) waits, after reading the clock for its @last-modified, before it commits and becomes visible."""
    group = node.database(m["db"]).group
    body = body_json(request) or {}
    with group.lock:
        if "commit_latency_ms" in body:
            group.commit_latency_ms = int(body["commit_latency_ms"])
        return json_response({"CommitLatencyMs": group.commit_latency_ms})


def control_clean_revisions_bin(node: Node, request: Request, m: re.Match) -> Response:
    """POST /standin/databases/{db}/revisions/bin/clean {"older_than_s"}: run the revisions bin cleaner once on
    every node (RevisionsBinCleaner.ExecuteCleanup with MinimumEntriesAgeToKeep = older_than_s): every id whose
    bin entry is older loses all its revisions. RavenDB runs it every RefreshFrequency when the database record
    has a RevisionsBin configuration (none by default)."""
    group = node.database(m["db"]).group
    body = body_json(request) or {}
    removed = {}
    with group.lock:
        for tag, copy in group.copies.items():
            before = copy.now() - int(float(body.get("older_than_s", 0)) * 10_000_000)
            removed[tag] = copy.revisions.clean(before, lambda key, c=copy: key in c.docs, copy.revision_store.purge)
    return json_response({"Removed": removed})


def documents_compression(node: Node, request: Request, m: re.Match) -> Response:
    """POST /databases/{db}/admin/documents-compression/config (UpdateDocumentsCompressionConfigurationOperation):
    {Collections, CompressAllCollections, CompressRevisions} into the database record. The stand-in stores documents
    as they are; what compression changes for a reader is that RavenDB 7.x renews the read transaction of long
    streams over compressed documents (see _paced)."""
    db = node.database(m["db"])
    config = body_json(request) or {}
    with db.lock:
        db.group.compression = dict(config)
        db.raft_index += 1
        return json_response({"RaftCommandIndex": db.raft_index})


def control_generate(node: Node, request: Request, m: re.Match) -> Response:
    """POST /standin/databases/{db}/generate {"count", "collection"?, "start"?}: server-side order documents."""
    db = node.database(m["db"])
    body = body_json(request) or {}
    count = int(body.get("count", 0))
    generated = sample_data.generate_orders(db, count, body.get("collection", "Orders"), int(body.get("start", 1)))
    return json_response({"Generated": generated, "LastEtag": db.last_etag})


def control_reset(node: Node, _r: Request, m: re.Match) -> Response:
    """POST /standin/databases/{db}/reset: drop and re-create the database empty."""
    storage = node.server.storage
    storage.delete(m["db"])
    storage.create(m["db"])
    return json_response({"Reset": m["db"]})


def control_db_delete(node: Node, _r: Request, m: re.Match) -> Response:
    """DELETE /standin/databases/{db}."""
    return json_response({"Deleted": node.server.storage.delete(m["db"])})


def control_ping(node: Node, _r: Request, _m: re.Match) -> Response:
    """GET /standin/ping."""
    return json_response({"Tag": node.tag, "Urls": node.server.urls})


# Reads a sharded database's orchestrator serves by merging its shards, which the stand-in does not model.
SHARDED_UNMODELLED = frozenset(
    {docs_get, queries, stream_query, stream_docs, stats, collection_stats, collection_docs, revisions_bin}
)

DB = r"/databases/(?P<db>[^/]+)"


def build_routes() -> list[tuple[str, re.Pattern, Route]]:
    """Method, path pattern and handler of every endpoint."""
    table: list[tuple[str, str, Route]] = [
        ("GET", r"/topology", topology),
        ("GET", r"/cluster/topology", cluster_topology),
        ("GET", r"/build/version", build_version),
        ("GET", r"/databases", database_names),
        ("PUT", r"/admin/databases", create_database),
        ("DELETE", r"/admin/databases", delete_databases),
        ("GET", r"/admin/databases", database_record),
        ("GET", DB + r"/docs", docs_get),
        ("POST", DB + r"/docs", docs_get),
        ("PUT", DB + r"/docs", docs_put),
        ("DELETE", DB + r"/docs", docs_delete),
        ("POST", DB + r"/bulk_docs", bulk_docs),
        ("GET", DB + r"/hilo/next", hilo_next),
        ("PUT", DB + r"/hilo/return", hilo_return),
        ("GET", DB + r"/operations/next-operation-id", next_operation_id),
        ("GET", DB + r"/operations/state", operation_state),
        ("POST", DB + r"/bulk_insert", bulk_insert),
        ("POST", DB + r"/queries", queries),
        ("POST", DB + r"/streams/queries", stream_query),
        ("GET", DB + r"/streams/docs", stream_docs),
        ("GET", DB + r"/stats", stats),
        ("GET", DB + r"/collections/stats", collection_stats),
        ("GET", DB + r"/collections/docs", collection_docs),
        ("POST", DB + r"/admin/revisions/config", revisions_config),
        ("GET", DB + r"/revisions/config", revisions_config_get),
        ("GET", DB + r"/revisions/bin", revisions_bin),
        ("GET", DB + r"/revisions", revisions_get),
        ("GET", DB + r"/debug/documents/get-revisions", revisions_debug),
        ("POST", DB + r"/multi_get", multi_get),
        ("POST", r"/standin/clock", control_clock),
        ("GET", r"/standin/nodes", control_nodes),
        ("POST", r"/standin/nodes/(?P<tag>[A-Za-z])/(?P<action>stop|start)", control_node_action),
        ("POST", r"/standin/nodes/(?P<tag>[A-Za-z])/clock", control_node_clock),
        ("POST", r"/standin" + DB + r"/indexing", control_indexing),
        ("POST", r"/standin" + DB + r"/replication", control_replication),
        ("POST", r"/standin" + DB + r"/streams", control_streams),
        ("POST", r"/standin" + DB + r"/generate", control_generate),
        ("POST", r"/standin" + DB + r"/reset", control_reset),
        ("DELETE", r"/standin" + DB, control_db_delete),
        ("GET", r"/standin/ping", control_ping),
        ("GET", r"/standin/requests", control_requests),
        ("GET", r"/standin" + DB + r"/revisions/bin", control_revisions_bin),
        ("POST", r"/standin" + DB + r"/revisions/bin/clean", control_clean_revisions_bin),
        ("POST", r"/standin" + DB + r"/conflicts", control_conflicts),
        ("POST", r"/standin" + DB + r"/writes", control_writes),
        ("POST", DB + r"/admin/documents-compression/config", documents_compression),
    ]
    return [(method, re.compile(pattern), route) for method, pattern, route in table]

"""The stand-in's revisions as RavenDB 6.x/7.x serves them: every revision by etag (debug/documents/get-revisions),
their content by change vector (GET /revisions), per document, trimmed by the configuration, and per node."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests
from ravendb import DocumentStore
from ravendb.documents.operations.revisions import (
    ConfigureRevisionsOperation,
    RevisionsCollectionConfiguration,
    RevisionsConfiguration,
)

from tests.standin.fixtures import RavenTarget

pytest_plugins = ["tests.standin.fixtures"]


def _configure(store: DocumentStore, keep: int | None = None, age: str | None = None, *names: str) -> None:
    collections = {
        name: RevisionsCollectionConfiguration(
            disabled=False, minimum_revisions_to_keep=keep, minimum_revisions_age_to_keep=age
        )
        for name in names or ("Orders",)
    }
    store.maintenance.send(ConfigureRevisionsOperation(RevisionsConfiguration(collections=collections)))


def _put(store: DocumentStore, doc_id: str, collection: str = "Orders", **fields: Any) -> None:
    with store.open_session() as session:
        session.store(fields, doc_id)
        session.advanced.get_metadata_for(fields)["@collection"] = collection
        session.save_changes()


def _delete(store: DocumentStore, doc_id: str) -> None:
    with store.open_session() as session:
        session.delete(doc_id)
        session.save_changes()


def _get(target: RavenTarget, path: str, url: str | None = None) -> requests.Response:
    base = url or target.urls[0]
    return requests.get(
        f"{base}/databases/{target.database}/{path}", cert=target.client_pem, verify=target.ca_pem or True, timeout=30
    )


def _listed(target: RavenTarget, start: int = 0, page_size: int = 100, url: str | None = None) -> list[dict]:
    response = _get(target, f"debug/documents/get-revisions?start={start}&pageSize={page_size}", url)
    assert response.status_code == 200
    return response.json()["Revisions"]


def _by_change_vector(target: RavenTarget, *vectors: str) -> requests.Response:
    query = "&".join(f"changeVector={requests.utils.quote(vector, safe='')}" for vector in vectors)
    return _get(target, f"revisions?{query}")


def test_every_revision_is_listed_by_etag_with_id_etag_last_modified_and_change_vector(
    ravendb_store: DocumentStore, ravendb_target: RavenTarget
) -> None:
    _configure(ravendb_store, None, None, "Orders", "Companies")
    _put(ravendb_store, "orders/1", Total=1)
    _put(ravendb_store, "companies/1", "Companies", Name="a")
    _put(ravendb_store, "orders/1", Total=2)
    _delete(ravendb_store, "orders/1")

    listed = _listed(ravendb_target)

    assert [entry["Id"] for entry in listed] == ["orders/1", "companies/1", "orders/1", "orders/1"]
    assert all(set(entry) == {"Id", "Etag", "LastModified", "ChangeVector"} for entry in listed)
    assert [entry["Etag"] for entry in listed] == sorted(entry["Etag"] for entry in listed)


@pytest.mark.parametrize(("page_size", "listed"), [(0, 1), (1, 2), (2, 3), (10, 4)], ids=["0", "1", "2", "past-end"])
def test_a_page_holds_one_revision_more_than_its_size_from_the_start_etag_on(
    ravendb_store: DocumentStore, ravendb_target: RavenTarget, page_size: int, listed: int
) -> None:
    # RevisionsStorage.GetRevisionsFrom yields a revision before it counts `take` down.
    _configure(ravendb_store)
    for total in range(4):
        _put(ravendb_store, "orders/1", Total=total)
    every = _listed(ravendb_target)

    assert _listed(ravendb_target, 0, page_size) == every[:listed]
    assert _listed(ravendb_target, every[1]["Etag"], 0) == every[1:2]  # start is inclusive


def test_content_by_change_vector_in_the_order_asked_with_null_for_one_not_held(
    ravendb_store: DocumentStore, ravendb_target: RavenTarget
) -> None:
    _configure(ravendb_store)
    _put(ravendb_store, "orders/1", Total=1)
    _put(ravendb_store, "orders/1", Total=2)
    _delete(ravendb_store, "orders/1")
    vectors = [entry["ChangeVector"] for entry in _listed(ravendb_target)]

    results = _by_change_vector(ravendb_target, vectors[2], "A:999-none", vectors[0]).json()["Results"]

    deleted, missing, first = results
    assert missing is None
    assert first["Total"] == 1
    assert first["@metadata"]["@flags"].split(", ")[:2] == ["HasRevisions", "Revision"]  # FromReplication may follow
    assert first["@metadata"]["@change-vector"] == vectors[0]
    assert first["@metadata"]["@collection"] == "Orders"
    assert set(deleted) == {"@metadata"}
    assert deleted["@metadata"]["@flags"].split(", ")[:2] == ["HasRevisions", "DeleteRevision"]
    assert deleted["@metadata"]["@id"] == "orders/1"


def test_one_change_vector_not_held_is_404(ravendb_store: DocumentStore, ravendb_target: RavenTarget) -> None:
    _configure(ravendb_store)
    _put(ravendb_store, "orders/1", Total=1)

    assert _by_change_vector(ravendb_target, "A:999-none").status_code == 404


def test_the_client_reads_a_documents_revisions_newest_first(ravendb_store: DocumentStore) -> None:
    _configure(ravendb_store)
    for total in range(3):
        _put(ravendb_store, "orders/1", Total=total)

    with ravendb_store.open_session() as session:
        revisions = session.advanced.revisions.get_for("orders/1", dict)

    assert [revision["Total"] for revision in revisions] == [2, 1, 0]


@pytest.mark.parametrize(
    ("keep", "age", "sleep", "kept"),
    [(2, None, 0, [3, 4]), (None, "00:00:00.5", 0.7, [4]), (2, "01:00:00", 0, [0, 1, 2, 3, 4])],
    ids=["minimum-revisions-to-keep", "minimum-revision-age-to-keep", "age-keeps-young-ones-beyond-the-count"],
)
def test_the_configuration_trims_the_oldest_revisions_when_a_document_gets_a_new_one(
    ravendb_store: DocumentStore, ravendb_target: RavenTarget, keep: int | None, age: str | None, sleep: float,
    kept: list[int],
) -> None:  # fmt: skip
    _configure(ravendb_store, keep, age)
    for total in range(4):
        _put(ravendb_store, "orders/1", Total=total)
    time.sleep(sleep)
    _put(ravendb_store, "orders/1", Total=4)

    with ravendb_store.open_session() as session:
        totals = [revision["Total"] for revision in session.advanced.revisions.get_for("orders/1", dict)]
    assert totals[::-1] == kept
    assert len(_listed(ravendb_target)) == len(kept)


def test_revisions_configuration_is_readable_and_404_without_one(
    ravendb_store: DocumentStore, ravendb_target: RavenTarget
) -> None:
    assert _get(ravendb_target, "revisions/config").status_code == 404
    _configure(ravendb_store, 5, None, "Orders")

    config = _get(ravendb_target, "revisions/config").json()

    assert config["Collections"]["Orders"]["MinimumRevisionsToKeep"] == 5
    assert config["Collections"]["Orders"]["Disabled"] is False


def test_each_node_lists_its_own_revisions_by_its_own_etags(
    ravendb_store: DocumentStore, ravendb_target: RavenTarget
) -> None:
    if len(ravendb_target.urls) < 2:
        pytest.skip("needs a cluster of two nodes")
    _configure(ravendb_store)
    _put(ravendb_store, "orders/1", Total=1)
    _put(ravendb_store, "orders/1", Total=2)
    deadline = time.monotonic() + 10
    while len(_listed(ravendb_target, url=ravendb_target.urls[1])) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)

    first, second = (_listed(ravendb_target, url=url) for url in ravendb_target.urls[:2])

    assert [entry["ChangeVector"] for entry in first] == [entry["ChangeVector"] for entry in second]
    assert [entry["LastModified"] for entry in first] == [entry["LastModified"] for entry in second]


def test_multi_get_answers_each_request_in_order_with_its_status(
    ravendb_store: DocumentStore, ravendb_target: RavenTarget
) -> None:
    _configure(ravendb_store)
    _put(ravendb_store, "orders/1", Total=1)
    base = f"/databases/{ravendb_target.database}"
    body = {
        "Requests": [
            {"Url": f"{base}/revisions", "Query": "?id=orders%2F1&metadataOnly=true", "Method": "GET"},
            {"Url": f"{base}/revisions", "Query": "?changeVector=A%3A999-none"},
            {"Url": f"{base}/no-such-endpoint", "Query": ""},
        ]
    }

    response = requests.post(
        f"{ravendb_target.urls[0]}{base}/multi_get",
        json=body,
        cert=ravendb_target.client_pem,
        verify=ravendb_target.ca_pem or True,
        timeout=30,
    )

    found, missing, unknown = response.json()["Results"]
    assert found["StatusCode"] == 200 and found["Result"]["Results"][0]["@metadata"]["@id"] == "orders/1"
    assert missing["StatusCode"] == 404 and missing["Result"] is None
    assert unknown["StatusCode"] == 400 and "There is no handler for path" in unknown["Result"]["Error"]

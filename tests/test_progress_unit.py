"""Long syncs against a mocked DocumentStore: the checkpoint cadence across collections, progress and summary lines."""

import itertools
import re
from datetime import datetime, timezone

import connector


def deletion(doc_id: str, deleted_at: str) -> dict:
    metadata = {"@id": doc_id, "@collection": "Orders", "@last-modified": deleted_at, "@flags": "DeleteRevision"}
    return {"@metadata": metadata}


PROGRESS_LINE = re.compile(r"Orders: ([\d,]+) of 20 documents \((\d+)%\), [\d,]+ docs/s, about \d+ s left")


def test_checkpoints_count_records_across_collections(fake_store, make_document, base_configuration, ops):
    del base_configuration["collection_name"]
    for number in range(25):  # 25 collections of 100 documents: 2,500 records
        fake_store.add(*(make_document(f"C{number:02d}", doc_id=f"c{number}/{n}") for n in range(100)))

    connector.update(base_configuration, {})

    upserts_before = [
        sum(1 for kind, *_ in ops.calls[:i] if kind == "upsert")
        for i, call in enumerate(ops.calls)
        if call[0] == "checkpoint"
    ]
    assert upserts_before == [1000, 2000, 2500]
    assert ops.checkpoints[-1]["database"]["collections"] == [f"C{number:02d}" for number in range(25)]


def test_a_sync_with_nothing_new_checkpoints_once(fake_store, make_document, base_configuration, ops):
    del base_configuration["collection_name"]
    fake_store.add(make_document("Orders"), make_document("Companies"))
    connector.update(base_configuration, {})
    state, ops.calls[:] = ops.checkpoints[-1], []

    connector.update(base_configuration, state)

    assert [kind for kind, _, _ in ops.calls] == ["checkpoint"]  # the cursor, at the new read's bound
    assert ops.checkpoints[-1]["database"]["collections"] == state["database"]["collections"]


def test_a_stream_slower_than_the_interval_logs_progress_once_per_interval(
    fake_store, clock, make_document, base_configuration, logs
):
    fake_store.add(*(make_document() for _ in range(20)))
    fake_store.seconds_per_document = 0.25  # the stream takes 5 s on connector.py's clock: 5 intervals
    base_configuration["progress_log_seconds"] = "1"

    connector.update(base_configuration, {})

    progress = [match for match in map(PROGRESS_LINE.fullmatch, logs.messages("INFO")) if match]
    done = [int(match.group(1)) for match in progress]
    assert len(done) == 5
    assert [later - earlier for earlier, later in itertools.pairwise(done)] == [4, 4, 4, 4]  # 1 s apart: 4 documents
    assert [int(match.group(2)) for match in progress] == [n * 100 // 20 for n in done]


def test_a_stream_faster_than_the_interval_logs_no_progress(fake_store, make_document, base_configuration, logs):
    fake_store.add(*(make_document() for _ in range(20)))

    connector.update(base_configuration, {})

    assert not any(PROGRESS_LINE.fullmatch(message) for message in logs.messages())


def test_one_summary_line_counts_collections_documents_and_deletes(fake_store, make_document, base_configuration, logs):
    del base_configuration["collection_name"]
    fake_store.add(*(make_document("Orders") for _ in range(3)), make_document("Companies"))
    fake_store.revisions_bin = [
        deletion("orders/9-A", "2024-05-03T00:00:00.0000000Z"),
        deletion("orders/8-A", "2024-05-02T00:00:00.0000000Z"),
    ]
    state = {"version": 1, "cursors": {}, "deletes_since": "2024-05-01T00:00:00.0000000Z"}

    connector.update(base_configuration, state)

    summaries = [message for message in logs.messages("INFO") if message.startswith("sync finished:")]
    assert len(summaries) == 1
    pattern = r"sync finished: 2 collections, 4 documents upserted, 2 deletes, \d+\.\d s, state \d+ bytes"
    assert re.fullmatch(pattern, summaries[0]), summaries[0]


def test_no_final_checkpoint_when_the_last_one_saved_everything(fake_store, make_document, base_configuration, ops):
    fake_store.server_date = False  # no Date header: the end of the read moves no cursor
    fake_store.add(*(make_document() for _ in range(2000)))

    connector.update(base_configuration, {})

    assert [kind for kind, *_ in ops.calls].count("checkpoint") == 2
    assert ops.calls[-1][0] == "checkpoint"


def test_a_sync_that_reads_nothing_saves_nothing_and_says_the_state_is_unchanged(
    fake_store, make_document, base_configuration, ops, logs
):
    del base_configuration["collection_name"]
    fake_store.server_date = datetime(2024, 5, 1, 10, 5, tzinfo=timezone.utc)  # every document older than the bound
    fake_store.add(make_document("Orders"), make_document("Companies"))
    connector.update(base_configuration, {})
    state, ops.calls[:] = ops.checkpoints[-1], []

    connector.update(base_configuration, state)

    assert ops.calls == []
    assert logs.messages("INFO")[-1].endswith(", state unchanged")

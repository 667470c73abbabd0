"""The setup form of SDK 3 and its connection test, directly and through `fivetran configuration --test`."""

import json
import re
import shutil
from pathlib import Path

import pytest

import connector
from tests.syncing import b64_file, configuration_for, run_fivetran

REPO = Path(__file__).resolve().parents[1]


def test_form_has_every_setting_with_help_and_masks_the_secrets():
    fields = {field.name: field for field in connector.configuration_form()._fields}

    assert set(fields) == {
        "ravendb_urls", "database_name", "certificate_base64", "certificate_password", "collection_name",
        "batch_size", "reconcile_deletes_hours", "progress_log_seconds", "type_from_every_document", "lookback_seconds",
        "child_tables", "server_ca_base64",
    }  # fmt: skip
    assert all(field.label and field.description for field in fields.values())
    assert {name for name, field in fields.items() if field.text_field == 1} == {
        "certificate_base64",
        "certificate_password",
    }
    assert {name for name, field in fields.items() if field.required} == {"ravendb_urls", "database_name"}


def test_connection_test_passes_on_a_good_configuration(ravendb_target, ravendb_store):
    from tests import documents

    documents.put(ravendb_store, documents.orders(1, 1))

    assert connector.connection_test(configuration_for(ravendb_target)).success


FAILING_STEPS = [
    ("settings", {"batch_size": "0"}, r"^settings failed: batch_size: 0 is out of range"),
    ("reachability", {"ravendb_urls": "https://127.0.0.1:9"}, r"^URL reachability failed: ravendb_urls: no server"),
    ("certificate", {"certificate_base64": "unknown"}, r"^TLS and client certificate failed: certificate_base64: "),
    ("server-ca", {"server_ca_base64": None}, r"^TLS and client certificate failed: ravendb_urls: TLS with "),
    (
        "database",
        {"database_name": "missing_db"},
        r"^database failed: database_name: database 'missing_db' does not exist",
    ),
    ("collections", {"collection_name": "Nope"}, r"^read access to the collections failed: collection_name: 'Nope'"),
]


@pytest.mark.parametrize(
    ("changes", "message"), [step[1:] for step in FAILING_STEPS], ids=[s[0] for s in FAILING_STEPS]
)
def test_connection_test_names_the_first_step_that_fails(ravendb_target, changes, message):
    configuration = configuration_for(ravendb_target)
    for key, value in changes.items():
        if value is None:
            del configuration[key]
        elif value == "unknown":
            configuration[key] = b64_file(ravendb_target.unknown_client_pem)
        else:
            configuration[key] = value

    result = connector.connection_test(configuration)

    assert not result.success
    assert re.match(message, result.failure), result.failure


@pytest.mark.e2e
def test_fivetran_configuration_test_runs_the_connection_test(ravendb_target, tmp_path):
    shutil.copy(REPO / "connector.py", tmp_path / "connector.py")
    configuration = configuration_for(ravendb_target, database_name="missing_db")
    (tmp_path / "configuration.json").write_text(json.dumps(configuration))

    completed = run_fivetran(tmp_path, "configuration", "--test")

    assert completed.returncode == 1
    assert "database failed: database_name: database 'missing_db' does not exist" in completed.stdout + completed.stderr

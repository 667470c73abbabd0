"""Each certificate form a user may hold (RavenDB Cloud's .pfx included) syncs over HTTPS with client-certificate
authentication; nothing of the key is left behind."""

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

import connector
from tests import certificate_forms, documents
from tests.certificate_forms import FORM_NAMES, b64
from tests.documents import orders
from tests.syncing import certificate_dirs, configuration_for


@pytest.fixture
def client_forms(ravendb_target) -> dict[str, tuple[bytes, str | None]]:
    """The test server's trusted client certificate, in every form."""
    pem = Path(ravendb_target.client_pem).read_bytes()
    key = serialization.load_pem_private_key(pem, None)
    certificate = x509.load_pem_x509_certificates(pem)[0]
    ca = x509.load_pem_x509_certificates(Path(ravendb_target.ca_pem).read_bytes())[0]
    return certificate_forms.forms(key, certificate, ca)


@pytest.mark.parametrize("form", FORM_NAMES)
def test_each_certificate_form_syncs_over_https(
    ravendb_target, ravendb_store, client_forms, ops, logs, form, own_tempdir
):
    documents.put(ravendb_store, orders(1, 3))
    content, password = client_forms[form]
    configuration = configuration_for(ravendb_target, certificate_base64=b64(content), collection_name="Orders")
    if password:
        configuration["certificate_password"] = password
    before = certificate_dirs()

    connector.update(configuration, {})

    assert set(ops.rows("Orders")) == {"orders/1-A", "orders/2-A", "orders/3-A"}
    assert certificate_dirs() == before
    key_body = [line for line in Path(ravendb_target.client_pem).read_text().splitlines() if "-----" not in line]
    emitted = "\n".join([*logs.messages(), *map(str, ops.checkpoints)])
    assert not any(line in emitted for line in key_body)

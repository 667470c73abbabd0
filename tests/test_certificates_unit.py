"""certificate_base64 and certificate_password: every form RavenDB hands out works; every bad one says why."""

import base64

import pytest
from cryptography import x509

from connector import ConfigurationError, validate_configuration
from tests import certificate_forms
from tests.certificate_forms import FORM_NAMES, PASSWORD, b64, cert_pem, key_pem, pfx, self_signed


@pytest.fixture(scope="module")
def client():
    return self_signed()


@pytest.fixture
def https_configuration(base_configuration):
    return {**base_configuration, "ravendb_urls": "https://127.0.0.1:8443"}


def configured(configuration: dict, content: bytes, password: str | None = None) -> dict:
    configuration = {**configuration, "certificate_base64": b64(content)}
    if password is not None:
        configuration["certificate_password"] = password
    return configuration


@pytest.mark.parametrize("form", FORM_NAMES)
def test_each_form_becomes_one_unencrypted_pem_with_certificate_first(https_configuration, client, form):
    key, certificate = client
    _, ca_certificate = self_signed("test-ca")
    content, password = certificate_forms.forms(key, certificate, ca_certificate)[form]

    settings = validate_configuration(configured(https_configuration, content, password))

    pem = settings.certificate.pem
    assert x509.load_pem_x509_certificates(pem)[0] == certificate
    assert x509.load_pem_x509_certificates(pem).count(certificate) == 1
    assert b"-----BEGIN PRIVATE KEY-----" in pem
    assert b"ENCRYPTED" not in pem


def test_ec_keys_are_accepted(https_configuration):
    key, certificate = self_signed(key_type="ec")

    settings = validate_configuration(configured(https_configuration, cert_pem(certificate) + key_pem(key)))

    assert settings.certificate.subject == "CN=connector-test-client"


def test_base64_as_windows_certutil_writes_it_is_accepted(https_configuration, client):
    key, certificate = client
    encoded = base64.encodebytes(pfx(key, certificate)).decode()
    wrapped = (
        f"-----BEGIN CERTIFICATE-----\r\n{encoded.replace(chr(10), chr(13) + chr(10))}-----END CERTIFICATE-----\r\n"
    )

    settings = validate_configuration({**https_configuration, "certificate_base64": wrapped})

    assert settings.certificate is not None


def bad_cases(key, certificate):
    expired_key, expired = self_signed(days_valid=10, days_ago=40)
    future_key, future = self_signed(days_valid=10, days_ago=-5)
    other_key, _ = self_signed()
    return [
        ("not-base64", "this is not base64!", None, r"^certificate_base64: not valid base64"),
        ("neither-pem-nor-pfx", b64(b"hello world"), None, r"^certificate_base64: decodes to neither a PEM nor a PFX"),
        ("certificate-without-key", b64(cert_pem(certificate)), None, r"^certificate_base64: holds no private key"),
        ("key-without-certificate", b64(key_pem(key)), None, r"^certificate_base64: holds no certificate"),
        (
            "key-of-another-certificate",
            b64(cert_pem(certificate) + key_pem(other_key)),
            None,
            r"^certificate_base64: the private key does not belong to any certificate",
        ),
        (
            "pfx-needs-password",
            b64(pfx(key, certificate, PASSWORD)),
            None,
            r"^certificate_password: the PFX file is password-protected",
        ),
        (
            "pfx-wrong-password",
            b64(pfx(key, certificate, PASSWORD)),
            "wrong",
            r"^certificate_password: wrong password for the PFX file",
        ),
        (
            "pem-key-needs-password",
            b64(cert_pem(certificate) + key_pem(key, "pkcs8", PASSWORD)),
            None,
            r"^certificate_password: the PEM private key is encrypted; a password is required$",
        ),
        (
            "pem-key-wrong-password",
            b64(cert_pem(certificate) + key_pem(key, "pkcs8", PASSWORD)),
            "wrong",
            r"^certificate_password: wrong password for the PEM private key$",
        ),
        (
            "expired",
            b64(cert_pem(expired) + key_pem(expired_key)),
            None,
            r"^certificate_base64: the certificate expired on \d{4}-\d\d-\d\dT",
        ),
        (
            "not-yet-valid",
            b64(cert_pem(future) + key_pem(future_key)),
            None,
            r"^certificate_base64: the certificate is not valid before \d{4}-\d\d-\d\dT",
        ),
    ]


BAD_CASES = [
    "not-base64",
    "neither-pem-nor-pfx",
    "certificate-without-key",
    "key-without-certificate",
    "key-of-another-certificate",
    "pfx-needs-password",
    "pfx-wrong-password",
    "pem-key-needs-password",
    "pem-key-wrong-password",
    "expired",
    "not-yet-valid",
]


@pytest.fixture(scope="module")
def bad_certificates(client):
    return {case[0]: case[1:] for case in bad_cases(*client)}


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_certificate_gets_one_line_naming_the_setting_without_key_material(
    https_configuration, bad_certificates, case
):
    text, password, message = bad_certificates[case]
    configuration = {**https_configuration, "certificate_base64": text}
    if password is not None:
        configuration["certificate_password"] = password

    with pytest.raises(ConfigurationError, match=message) as raised:
        validate_configuration(configuration)

    error = str(raised.value)
    assert "\n" not in error
    assert "PRIVATE KEY" not in error and text[:40] not in error
    assert raised.value.__cause__ is None
    assert raised.value.__context__ is None or raised.value.__suppress_context__  # no chained traceback


def test_settings_repr_never_shows_the_certificate_or_key(https_configuration, client):
    key, certificate = client
    settings = validate_configuration(configured(https_configuration, cert_pem(certificate) + key_pem(key)))

    assert "BEGIN" not in repr(settings)
    assert "subject='CN=connector-test-client'" in repr(settings)

"""validate_configuration: every bad value gets one line naming the setting; good values parse once."""

import base64

import pytest

import connector
from connector import ConfigurationError, validate_configuration


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def test_minimal_http_configuration_parses_to_settings(base_configuration):
    settings = validate_configuration(base_configuration)

    assert settings.urls == ("http://127.0.0.1:8080",)
    assert settings.database == "Northwind"
    assert settings.collections == ("Orders",)
    assert settings.batch_size == connector._DEFAULT_BATCH_SIZE
    assert settings.certificate is None


def test_cluster_urls_collections_and_batch_size_are_split_and_trimmed(base_configuration):
    base_configuration.update(
        ravendb_urls=" http://a:8080/ , http://b:8080",
        collection_name="Orders, Companies",
        batch_size=" 250 ",
    )

    settings = validate_configuration(base_configuration)

    assert settings.urls == ("http://a:8080", "http://b:8080")
    assert settings.collections == ("Orders", "Companies")
    assert settings.batch_size == 250


def test_no_collection_means_every_collection(base_configuration):
    del base_configuration["collection_name"]

    assert validate_configuration(base_configuration).collections == ()


BAD_CONFIGURATIONS = [
    ("urls-missing", {"ravendb_urls": None}, r"^ravendb_urls: required setting is missing or empty$"),
    ("urls-empty", {"ravendb_urls": "  "}, r"^ravendb_urls: required"),
    ("urls-not-string", {"ravendb_urls": 8080}, r"^ravendb_urls: expected a string, got int$"),
    ("urls-no-scheme", {"ravendb_urls": "localhost:8080"}, r"^ravendb_urls: 'localhost:8080' is not a valid URL"),
    ("urls-ftp", {"ravendb_urls": "ftp://a"}, r"^ravendb_urls: 'ftp://a' is not a valid URL"),
    ("urls-bad-port", {"ravendb_urls": "http://a:99999"}, r"^ravendb_urls: 'http://a:99999' is not a valid URL"),
    ("urls-path", {"ravendb_urls": "http://a:8080/studio"}, r"^ravendb_urls: .* has more than scheme, host and port"),
    ("urls-empty-entry", {"ravendb_urls": "http://a,,http://b"}, r"^ravendb_urls: contains an empty entry"),
    ("urls-mixed", {"ravendb_urls": "http://a,https://b"}, r"^ravendb_urls: mixes http:// and https://"),
    ("urls-duplicate", {"ravendb_urls": "http://a,http://a/"}, r"^ravendb_urls: lists the same URL twice$"),
    ("database-missing", {"database_name": ""}, r"^database_name: required setting is missing or empty$"),
    ("database-space", {"database_name": "North wind"}, r"^database_name: 'North wind' is not a RavenDB database"),
    ("database-injection", {"database_name": "db/../x"}, r"^database_name: 'db/../x' is not a RavenDB database"),
    ("collection-empty-entry", {"collection_name": "Orders,,Companies"}, r"^collection_name: contains an empty"),
    ("collection-system", {"collection_name": "@hilo"}, r"^collection_name: '@hilo' is a RavenDB system collection"),
    ("collection-newline", {"collection_name": "Orders\nselect"}, r"^collection_name: .* contains control char"),
    ("collection-twice", {"collection_name": "Orders,orders"}, r"^collection_name: lists a collection twice"),
    ("batch-text", {"batch_size": "many"}, r"^batch_size: 'many' is not an integer$"),
    ("batch-float", {"batch_size": "10.5"}, r"^batch_size: '10.5' is not an integer$"),
    ("batch-zero", {"batch_size": "0"}, r"^batch_size: 0 is out of range \(expected 1 to 100000\)$"),
    ("batch-negative", {"batch_size": "-5"}, r"^batch_size: -5 is out of range"),
    ("batch-huge", {"batch_size": "1000001"}, r"^batch_size: 1000001 is out of range"),
    ("https-without-certificate", {"ravendb_urls": "https://a"}, r"^certificate_base64: required for https://"),
    (
        "certificate-with-http",
        {"certificate_base64": b64("x")},
        r"^certificate_base64: a client certificate needs https",
    ),
    ("reconcile-text", {"reconcile_deletes_hours": "daily"}, r"^reconcile_deletes_hours: 'daily' is not a number"),
    ("reconcile-negative", {"reconcile_deletes_hours": "-1"}, r"^reconcile_deletes_hours: '-1' is out of range"),
    ("reconcile-nan", {"reconcile_deletes_hours": "nan"}, r"^reconcile_deletes_hours: 'nan' is out of range"),
    ("type-flag-yes", {"type_from_every_document": "yes"}, r"^type_from_every_document: 'yes' is neither true nor"),
    ("ca-not-base64", {"server_ca_base64": "%%%"}, r"^server_ca_base64: not valid base64"),
    ("ca-not-pem", {"server_ca_base64": b64("hello")}, r"^server_ca_base64: expected the base64 of a PEM CA"),
]


@pytest.mark.parametrize(
    ("changes", "message"), [case[1:] for case in BAD_CONFIGURATIONS], ids=[case[0] for case in BAD_CONFIGURATIONS]
)
def test_bad_value_is_rejected_with_one_line_naming_the_setting(base_configuration, changes, message):
    base_configuration.update(changes)
    configuration = {key: value for key, value in base_configuration.items() if value is not None}

    with pytest.raises(ConfigurationError, match=message) as raised:
        validate_configuration(configuration)

    assert "\n" not in str(raised.value)

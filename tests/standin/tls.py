"""Test PKI for the stand-in: a CA, a localhost server certificate and client PEMs (known, unknown, expired)."""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path
from typing import NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_PEM = "ca.pem"
SERVER_CERT = "server.crt"
SERVER_KEY = "server.key"
CLIENT_PEM = "client.pem"
UNKNOWN_CLIENT_PEM = "unknown-client.pem"
EXPIRED_CLIENT_PEM = "expired-client.pem"


class TlsFiles(NamedTuple):
    """Paths of the generated files."""

    directory: Path
    ca_pem: Path
    server_cert: Path
    server_key: Path
    client_pem: Path
    unknown_client_pem: Path
    expired_client_pem: Path


def tls_files(directory: Path) -> TlsFiles:
    """The file layout inside a TLS directory."""
    d = Path(directory)
    return TlsFiles(
        d, d / CA_PEM, d / SERVER_CERT, d / SERVER_KEY, d / CLIENT_PEM, d / UNKNOWN_CLIENT_PEM, d / EXPIRED_CLIENT_PEM
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _builder(
    subject: str, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey, start: datetime.datetime, days: int
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=days))
    )


def _make_ca(common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    cert = (
        _builder(common_name, _name(common_name), key.public_key(), _now() - datetime.timedelta(days=1), 3650)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _issue(
    subject: str,
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    usage: x509.ObjectIdentifier,
    start: datetime.datetime,
    days: int,
    hosts: tuple[str, ...] = (),
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    ca_cert, ca_key = ca
    key = _key()
    builder = (
        _builder(subject, ca_cert.subject, key.public_key(), start, days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if hosts:
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write_private(path: Path, data: bytes) -> None:
    """Write a file readable by its owner only (created 0600, never world-readable in between)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600)


def generate(directory: Path, hosts: tuple[str, ...] = ("localhost", "127.0.0.1")) -> TlsFiles:
    """Create CA, server certificate and the three client PEMs (certificate + PKCS#8 key) in directory."""
    files = tls_files(directory)
    files.directory.mkdir(parents=True, exist_ok=True)
    os.chmod(files.directory, 0o700)
    ca = _make_ca("RavenDB stand-in test CA")
    other_ca = _make_ca("Unknown test CA")
    start = _now() - datetime.timedelta(days=1)
    server = _issue(hosts[0], ca, ExtendedKeyUsageOID.SERVER_AUTH, start, 825, hosts)
    client = _issue("standin-client", ca, ExtendedKeyUsageOID.CLIENT_AUTH, start, 825)
    unknown = _issue("unknown-client", other_ca, ExtendedKeyUsageOID.CLIENT_AUTH, start, 825)
    expired = _issue("expired-client", ca, ExtendedKeyUsageOID.CLIENT_AUTH, _now() - datetime.timedelta(days=30), 2)
    _write_private(files.ca_pem, _cert_pem(ca[0]))
    _write_private(files.server_cert, _cert_pem(server[0]) + _cert_pem(ca[0]))
    _write_private(files.server_key, _key_pem(server[1]))
    for path, (cert, key) in ((files.client_pem, client), (files.unknown_client_pem, unknown)):
        _write_private(path, _cert_pem(cert) + _key_pem(key))
    _write_private(files.expired_client_pem, _cert_pem(expired[0]) + _key_pem(expired[1]))
    return files


def ensure(directory: Path) -> TlsFiles:
    """Generate the files unless they all exist already."""
    files = tls_files(directory)
    if all(Path(p).exists() for p in files[1:]):
        return files
    return generate(directory)


def load_certificate(pem_path: Path) -> x509.Certificate:
    """The first certificate in a PEM file."""
    return x509.load_pem_x509_certificate(Path(pem_path).read_bytes())


def thumbprint(cert: x509.Certificate) -> str:
    """SHA-1 thumbprint in upper-case hex, as RavenDB shows it."""
    return cert.fingerprint(hashes.SHA1()).hex().upper()


def thumbprint_sha256(cert: x509.Certificate) -> str:
    """SHA-256 thumbprint in upper-case hex."""
    return cert.fingerprint(hashes.SHA256()).hex().upper()

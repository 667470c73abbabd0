"""Every form in which a user may hand the connector a client certificate, built from one key and certificate."""

import base64
from datetime import datetime, timedelta, timezone

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

PASSWORD = "s3cret-pa$$"
FORM_NAMES = (
    "pem-pkcs8",
    "pem-traditional",
    "pem-key-first",
    "pem-with-chain",
    "pem-encrypted-key",
    "pfx-no-password",
    "pfx-password",
)


def self_signed(
    name: str = "connector-test-client", days_valid: int = 30, days_ago: int = 1, key_type: str = "rsa"
) -> tuple:
    """A private key and a self-signed client certificate (valid from `days_ago` days ago for `days_valid`)."""
    key = rsa.generate_private_key(65537, 2048) if key_type == "rsa" else ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    starts = datetime.now(timezone.utc) - timedelta(days=days_ago)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(starts)
        .not_valid_after(starts + timedelta(days=days_valid))
        .sign(key, hashes.SHA256())
    )
    return key, certificate


def cert_pem(certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def key_pem(key, form: str = "pkcs8", password: str | None = None) -> bytes:
    private_format = {
        "pkcs8": serialization.PrivateFormat.PKCS8,
        "traditional": serialization.PrivateFormat.TraditionalOpenSSL,
    }[form]
    encryption = serialization.BestAvailableEncryption(password.encode()) if password else serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, private_format, encryption)


def pfx(key, certificate, password: str | None = None, chain: list | None = None) -> bytes:
    encryption = serialization.BestAvailableEncryption(password.encode()) if password else serialization.NoEncryption()
    return pkcs12.serialize_key_and_certificates(b"client", key, certificate, chain, encryption)


def forms(key, certificate, ca_certificate=None) -> dict[str, tuple[bytes, str | None]]:
    """Form name -> (file content, password to configure)."""
    chain = cert_pem(ca_certificate) if ca_certificate is not None else b""
    return {
        "pem-pkcs8": (cert_pem(certificate) + key_pem(key), None),
        "pem-traditional": (cert_pem(certificate) + key_pem(key, "traditional"), None),
        "pem-key-first": (key_pem(key) + cert_pem(certificate), None),
        "pem-with-chain": (cert_pem(certificate) + chain + key_pem(key), None),
        "pem-encrypted-key": (cert_pem(certificate) + key_pem(key, "pkcs8", PASSWORD), PASSWORD),
        "pfx-no-password": (pfx(key, certificate), None),
        "pfx-password": (pfx(key, certificate, PASSWORD), PASSWORD),
    }


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()

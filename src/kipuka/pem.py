"""Reading certificates and keys from PEM files (operator-supplied, trusted input)."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes


def load_certificates(path: Path) -> list[x509.Certificate]:
    certs = x509.load_pem_x509_certificates(Path(path).read_bytes())
    if not certs:
        raise ValueError(f"{path}: no PEM certificate found")
    return certs


def load_private_key(path: Path) -> PrivateKeyTypes:
    return serialization.load_pem_private_key(Path(path).read_bytes(), password=None)


def certificates_pem(certs: list[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)

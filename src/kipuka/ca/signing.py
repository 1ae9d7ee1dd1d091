"""Which hash a CA key signs with, and a raw signature for health probes."""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from kipuka import pq


def signing_hash(issuer_key: CertificateIssuerPrivateKeyTypes) -> hashes.HashAlgorithm | None:
    """None for the algorithms that hash inside (Ed25519, ML-DSA: RFC 9881 signs the DER tbs bytes whole)."""
    if isinstance(issuer_key, ed25519.Ed25519PrivateKey) or pq.is_mldsa(issuer_key):
        return None
    if isinstance(issuer_key, ec.EllipticCurvePrivateKey) and issuer_key.curve.key_size > 256:
        return hashes.SHA384()
    return hashes.SHA256()


def signature_of(key: CertificateIssuerPrivateKeyTypes, data: bytes) -> bytes:
    """A signature with whatever kind of key a CA holds (used as a health probe)."""
    if isinstance(key, ed25519.Ed25519PrivateKey) or pq.is_mldsa(key):
        return key.sign(data)  # type: ignore[union-attr]
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(hashes.SHA256()))
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    raise TypeError(f"unsupported CA key {type(key).__name__}")

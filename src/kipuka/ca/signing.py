"""Which hash a CA key signs with, and the raw signature it makes (certificates, health probes)."""

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
    """The signature a CA key makes over `data` as it signs certificates (signing_hash; PKCS#1 v1.5
    for RSA, as CertificateBuilder does): ca/spliced.py signs TBSCertificates with it, health
    probes sign a probe."""
    algorithm = signing_hash(key)
    if algorithm is None:  # Ed25519, ML-DSA: the key hashes inside
        return key.sign(data)  # type: ignore[call-arg, union-attr]
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(algorithm))
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), algorithm)
    raise TypeError(f"unsupported CA key {type(key).__name__}")

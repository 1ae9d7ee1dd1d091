"""Naming and making key pairs: one vocabulary for config, policy and CLI."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes, PrivateKeyTypes

from kipuka import pq

EC_CURVES = {"secp256r1": "ec-p256", "secp384r1": "ec-p384", "secp521r1": "ec-p521"}


def key_type_of(public_key: CertificatePublicKeyTypes) -> str:
    """The policy name of a public key: ec-p256, ec-p384, ec-p521, rsa, ed25519, ml-dsa-44/65/87 or other."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return EC_CURVES.get(public_key.curve.name, "ec-" + public_key.curve.name)
    if isinstance(public_key, rsa.RSAPublicKey):
        return "rsa"
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return "ed25519"
    return pq.key_type(public_key) or "other"


def generate_private_key(key_type: str) -> PrivateKeyTypes:
    """Make a key for kipuka's own use (CAs, TLS): ec-p256, ec-p384, rsa2048, rsa3072, ml-dsa-44/65/87."""
    curves = {"ec-p256": ec.SECP256R1(), "ec-p384": ec.SECP384R1(), "ec-p521": ec.SECP521R1()}
    if key_type in curves:
        return ec.generate_private_key(curves[key_type])
    if key_type.startswith("rsa") and key_type[3:].isdigit():
        return rsa.generate_private_key(public_exponent=65537, key_size=int(key_type[3:]))
    if key_type in pq.KEY_TYPES:
        return pq.generate(key_type)
    raise ValueError(f"unknown key type {key_type!r}")

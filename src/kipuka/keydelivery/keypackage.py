"""The private key itself: OneAsymmetricKey (RFC 5958) and AsymmetricKeyPackage.

RFC 7030 4.4.2 delivers an unencrypted key as `application/pkcs8`, a DER
PrivateKeyInfo, and an encrypted one as an AsymmetricKeyPackage inside a
SignedData. Both are PKCS#8 shaped: never the algorithm-specific PKCS#1 or
SEC 1 forms, which Bouncy Castle's EST client rejects as PrivateKeyInfo.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from pyasn1_modules import rfc5958

from kipuka.keydelivery._der import KeyDeliveryError, decode, encode, tlv

# One private key in PKCS#8 form; RSA-16384 is about 9.5 kB.
MAX_KEY_BYTES = 64 * 1024


def one_asymmetric_key(private_key: PrivateKeyTypes) -> bytes:
    """DER OneAsymmetricKey v1 (= PKCS#8 PrivateKeyInfo), unencrypted: the `application/pkcs8` body."""
    return private_key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def asymmetric_key_package(keys: list[bytes]) -> bytes:
    """DER AsymmetricKeyPackage ::= SEQUENCE SIZE (1..MAX) OF OneAsymmetricKey (RFC 5958 section 2).

    This, not a bare OneAsymmetricKey, is the content that id-ct-KP-aKeyPackage names.
    Each element is checked to be a OneAsymmetricKey and copied verbatim.
    """
    if not keys:
        raise ValueError("an AsymmetricKeyPackage holds at least one key")
    for der in keys:
        decode(der, rfc5958.OneAsymmetricKey(), "OneAsymmetricKey", MAX_KEY_BYTES)
    return tlv(0x30, b"".join(keys))


def read_asymmetric_key_package(der: bytes) -> list[bytes]:
    """The OneAsymmetricKey DERs of an AsymmetricKeyPackage, each checked to load as a key."""
    package = decode(der, rfc5958.AsymmetricKeyPackage(), "AsymmetricKeyPackage")
    if len(package) == 0:
        raise KeyDeliveryError("AsymmetricKeyPackage is empty")
    keys = [encode(item) for item in package]
    for key in keys:
        load_private_key(key)
    return keys


def load_private_key(der: bytes) -> PrivateKeyTypes:
    """A private key from DER PKCS#8; refuses anything else (PKCS#1, SEC 1, encrypted)."""
    decode(der, rfc5958.OneAsymmetricKey(), "OneAsymmetricKey", MAX_KEY_BYTES)
    try:
        return serialization.load_der_private_key(der, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyDeliveryError(f"OneAsymmetricKey does not load: {exc}") from None

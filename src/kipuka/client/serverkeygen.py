"""Server-generated keys (RFC 7030 4.4): how the client asks for the key to be delivered, and opens it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from cryptography.hazmat.primitives import serialization

from kipuka.client import cms, wire
from kipuka.client.csr import CsrSource
from kipuka.client.errors import DecryptionError, InvalidResponse


@dataclass(frozen=True)
class AsymmetricDecryptKey:
    """Ask for the key encrypted to this key (RFC 7030 4.4.1.2, AsymmetricDecryptKeyIdentifier)."""

    key_id: bytes
    private_key: object


@dataclass(frozen=True)
class SymmetricDecryptKey:
    """Ask for the key encrypted with a pre-shared AES key (RFC 7030 4.4.1.1, DecryptKeyIdentifier)."""

    key_id: bytes
    key: bytes


PKCS8 = "pkcs8"        # no encryption beyond TLS: application/pkcs8 expected
CSR_KEY = "csr-key"    # encrypted to the CSR's own public key (the client keeps that key)
Delivery = Union[str, AsymmetricDecryptKey, SymmetricDecryptKey]


def open_key(media: wire.MediaType, der: bytes, delivery: Delivery, source: CsrSource) -> cms.OpenedKey:
    """The private key of a serverkeygen answer's key part, decrypted as `delivery` (or the label) chose."""
    if media.type == wire.PKCS8:
        if delivery != PKCS8:
            raise InvalidResponse("serverkeygen: the server sent the key unencrypted (application/pkcs8) "
                                  "although an encrypted delivery was requested")
        try:  # a PKCS#1 or SEC1 key labelled PKCS#8 loads as well
            key = serialization.load_der_private_key(der, None)
        except TypeError:
            raise DecryptionError("serverkeygen: the application/pkcs8 part is password-encrypted") from None
        except ValueError as exc:
            raise InvalidResponse(f"serverkeygen: the key part is not a private key: {exc}") from None
        pkcs8 = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
        return cms.OpenedKey(key, pkcs8, signed=False)
    if isinstance(delivery, SymmetricDecryptKey):
        return cms.open_server_generated_key(der, kek=delivery.key, kek_id=delivery.key_id)
    if isinstance(delivery, AsymmetricDecryptKey):
        return cms.open_server_generated_key(der, private_key=delivery.private_key)
    if delivery == CSR_KEY:
        assert source.spec is not None
        return cms.open_server_generated_key(der, private_key=source.spec.key)
    try:  # signed but not encrypted needs no key; anything encrypted does
        return cms.open_server_generated_key(der)
    except DecryptionError:
        pass
    if source.spec is not None:
        # The label's policy, not the client, picks the delivery: a label that allows only
        # csr-key encrypts to the CSR's key whatever was asked. The certificate is issued by
        # now, so the key must be opened rather than thrown away.
        try:
            return cms.open_server_generated_key(der, private_key=source.spec.key)
        except DecryptionError:
            pass
    raise DecryptionError("serverkeygen: the server sent an encrypted key; ask for a delivery with a "
                          "decryption key (csr-key, AsymmetricDecryptKey or SymmetricDecryptKey)")

"""Key escrow for /serverkeygen: archiving to a key recovery certificate, and offline recovery.

The archive is a CMS EnvelopedData (RFC 5652) of the key's PKCS#8
PrivateKeyInfo (content type id-data) to the escrow certificate: RSA key
transport (RSAES-OAEP) or EC key agreement, AES-256-CBC. Only the escrow
certificate is configured on the server; its private key stays offline, so a
copy of the database does not give the keys away. Recovery is
`kipuka keys recover`, or with openssl alone:

    openssl cms -decrypt -inform DER -in archive.der -recip escrow.pem -inkey escrow.key \\
        | openssl pkey -inform DER
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from kipuka.keydelivery import (ID_DATA, KeyDeliveryError, decrypt_enveloped, enveloped_for_certificate,
                                    load_private_key, one_asymmetric_key)
from kipuka.pem import load_certificates


class RecoveryError(Exception):
    """The archive cannot be opened with the key given, or holds the wrong key."""


@dataclass(frozen=True)
class EscrowTarget:
    """The key recovery certificate of a label, loaded once per configuration."""

    certificate: x509.Certificate
    sha256: str  # of the certificate's DER: names which recovery key opens an archive

    @classmethod
    def load(cls, path: Path) -> "EscrowTarget":
        certs = load_certificates(path)
        if not certs:
            raise ValueError(f"escrow_cert {path}: no certificate in the file")
        cert = certs[0]
        if not isinstance(cert.public_key(), (rsa.RSAPublicKey, ec.EllipticCurvePublicKey)):
            raise ValueError(f"escrow_cert {path}: the key must be RSA or EC (to encrypt to)")
        der = cert.public_bytes(serialization.Encoding.DER)
        return cls(cert, hashlib.sha256(der).hexdigest())

    def archive(self, private_key: PrivateKeyTypes) -> bytes:
        """DER ContentInfo(EnvelopedData) of the key's PKCS#8, to the escrow certificate."""
        return enveloped_for_certificate(one_asymmetric_key(private_key), ID_DATA, self.certificate)


def recover(ciphertext: bytes, escrow_key: PrivateKeyTypes, certificate: x509.Certificate | None) -> PrivateKeyTypes:
    """Open an archive with the escrow private key; check it holds the certificate's key."""
    if not isinstance(escrow_key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        raise RecoveryError("the escrow key must be RSA or EC")
    try:
        content_type, content = decrypt_enveloped(ciphertext, private_key=escrow_key)
        if content_type != ID_DATA:
            raise RecoveryError(f"the archive holds {content_type}, not id-data")
        key = load_private_key(content)
    except KeyDeliveryError as exc:
        raise RecoveryError(f"cannot open the archive with this escrow key: {exc}") from None
    if certificate is not None and _spki(key.public_key()) != _spki(certificate.public_key()):  # type: ignore[union-attr]
        raise RecoveryError("the recovered key does not match the certificate's public key")
    return key


def _spki(public_key: object) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER,  # type: ignore[attr-defined]
                                   serialization.PublicFormat.SubjectPublicKeyInfo)

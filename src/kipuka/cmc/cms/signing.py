"""Signing a CMS SignedData (RFC 5652 §5) over any content type, which cryptography signs only for id-data."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from kipuka.cmc import der, oids
from kipuka.cmc.cms.algorithms import (DIGEST_OID, PRIVATE_KEY_CLASSES, PrivateKey, default_hash, sign_bytes,
                                       signature_algorithm_der, spki_der)
from kipuka.cmc.cms.identifiers import cert_ski, name_der


@dataclass
class CmsSigner:
    """A key that signs a CMS SignedData, and how the SignerInfo names it.

    `sid` is "issuerAndSerialNumber" (needs `certificate`) or
    "subjectKeyIdentifier" (the certificate's SKI extension, or `ski` for a key
    with no certificate: RFC 5272 §3.2, a PKIData signed with the key of its own
    certification request). `hash` defaults to SHA-256, SHA-384 for P-384 and
    SHA-512 for P-521, Ed25519 and ML-DSA. `rsa_pss` signs RSA keys with RSASSA-PSS
    (salt = hash length) instead of PKCS#1 v1.5. `chain` certificates are added
    to the SignedData certificate set with `certificate`.
    """

    key: PrivateKey
    certificate: x509.Certificate | None = None
    sid: str = "issuerAndSerialNumber"
    ski: bytes | None = None
    hash: hashes.HashAlgorithm | None = None
    rsa_pss: bool = False
    chain: Sequence[x509.Certificate] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not isinstance(self.key, PRIVATE_KEY_CLASSES):
            raise TypeError("CmsSigner needs an RSA, EC, Ed25519 or ML-DSA private key")
        if self.sid not in ("issuerAndSerialNumber", "subjectKeyIdentifier"):
            raise ValueError("sid must be 'issuerAndSerialNumber' or 'subjectKeyIdentifier'")
        if self.certificate is None and (self.sid != "subjectKeyIdentifier" or self.ski is None):
            raise ValueError("a signer without a certificate needs sid='subjectKeyIdentifier' and ski")
        if self.certificate is not None and spki_der(self.certificate.public_key()) != spki_der(self.key.public_key()):
            raise ValueError("the certificate does not belong to the key")
        if self.sid == "subjectKeyIdentifier" and self.ski is None:
            self.ski = cert_ski(self.certificate) or x509.SubjectKeyIdentifier.from_public_key(
                self.key.public_key()).digest
        if self.hash is None:
            self.hash = default_hash(self.key)

    def sid_der(self) -> bytes:
        if self.sid == "subjectKeyIdentifier":
            return der.tlv(0x80, self.ski or b"")
        cert = self.certificate
        assert cert is not None
        return der.seq(name_der(cert.issuer), der.integer(cert.serial_number))

    def digest_algorithm_der(self) -> bytes:
        assert self.hash is not None
        return der.algorithm(DIGEST_OID[self.hash.name])

    def signature_algorithm_der(self) -> bytes:
        assert self.hash is not None
        return signature_algorithm_der(self.key, self.hash, self.rsa_pss)

    def sign(self, data: bytes) -> bytes:
        assert self.hash is not None
        return sign_bytes(self.key, self.hash, self.rsa_pss, data)


def signed_data(econtent_type: str, econtent: bytes, signers: Sequence[CmsSigner], *,
                certificates: Iterable[x509.Certificate] = (), signing_time: dt.datetime | None = None,
                include_signing_time: bool = True) -> bytes:
    """A DER ContentInfo(SignedData) over `econtent` (RFC 5652 §5), attached content.

    Signed attributes: content-type, message-digest and (unless disabled)
    signing-time. The certificate set holds each signer's certificate and chain
    plus `certificates`, de-duplicated and in DER SET OF order.
    """
    if not signers:
        raise ValueError("at least one signer is needed")
    when = signing_time or dt.datetime.now(dt.timezone.utc)
    cert_ders: dict[bytes, None] = {}
    for s in signers:
        for c in ([s.certificate] if s.certificate is not None else []) + list(s.chain):
            cert_ders[c.public_bytes(serialization.Encoding.DER)] = None
    for c in certificates:
        cert_ders[c.public_bytes(serialization.Encoding.DER)] = None
    digest_algs: dict[bytes, None] = {}
    infos = []
    for s in signers:
        assert s.hash is not None
        h = hashes.Hash(type(s.hash)())
        h.update(econtent)
        attrs = [
            der.seq(der.oid(oids.ID_CONTENT_TYPE), der.set_of([der.oid(econtent_type)])),
            der.seq(der.oid(oids.ID_MESSAGE_DIGEST), der.set_of([der.octets(h.finalize())])),
        ]
        if include_signing_time:
            attrs.append(der.seq(der.oid(oids.ID_SIGNING_TIME), der.set_of([der.cms_time(when)])))
        signed_attrs = der.set_of(attrs)
        signature = s.sign(signed_attrs)
        digest_alg = s.digest_algorithm_der()
        digest_algs[digest_alg] = None
        version = 3 if s.sid == "subjectKeyIdentifier" else 1
        infos.append(der.seq(
            der.integer(version), s.sid_der(), digest_alg, der.retag(signed_attrs, 0xA0),
            s.signature_algorithm_der(), der.octets(signature)))
    parts = [
        der.integer(3),  # RFC 5652 §5.1: eContentType is not id-data
        der.set_of(digest_algs),
        der.seq(der.oid(econtent_type), der.explicit(0, der.octets(econtent))),
    ]
    if cert_ders:
        parts.append(der.tlv(0xA0, b"".join(sorted(cert_ders))))
    parts.append(der.set_of(infos))
    return der.seq(der.oid(oids.ID_SIGNED_DATA), der.explicit(0, der.seq(*parts)))

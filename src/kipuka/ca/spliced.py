"""End-entity certificates assembled from DER parts encoded once per issuer and label.

Why by hand: cryptography's CertificateBuilder turns every name, extension and
time into Python objects and encodes them again for each certificate, about
110 µs per enrollment of which the signature is 25; at a thousand enrollments a
second that was 8% of a worker. No library offers "this template, with these
five fields changed", so this module keeps, per (issuer, EKUs, URLs, key family),
the TBSCertificate's constant parts as the bytes CertificateBuilder itself
produced for a reference certificate, and splices in the parts that change per
request: serial, validity, subject, public key, subject key identifier and
SAN. The result is the same DER CertificateBuilder would give for the same
input (tests/unit/test_spliced_certificates.py holds the two side by side for
every key type), and it is parsed back by cryptography before anyone sees it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
from dataclasses import dataclass
from typing import Callable

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import (CertificateIssuerPrivateKeyTypes,
                                                             CertificatePublicKeyTypes)

from kipuka.ca.signing import signature_of
from kipuka.keydelivery._der import children, split_tlv, tlv

_SEQUENCE, _BIT_STRING, _OCTET_STRING, _INTEGER = 0x30, 0x03, 0x04, 0x02
_VERSION_3 = bytes.fromhex("a003020102")  # [0] EXPLICIT INTEGER 2
_SKI_OID = bytes.fromhex("0603551d0e")  # 2.5.29.14
_SAN_OID = bytes.fromhex("0603551d11")  # 2.5.29.17
_CRITICAL = bytes.fromhex("0101ff")
_UTC_TIME_YEARS = range(1950, 2050)  # RFC 5280 4.1.2.5: UTCTime through 2049, GeneralizedTime after


@dataclass(frozen=True)
class _Parts:
    """The bytes every certificate of one template shares."""

    signature_algorithm: bytes  # AlgorithmIdentifier TLV, in the TBS and after it
    issuer: bytes  # Name TLV
    before_ski: bytes  # extension TLVs that precede the SKI (BasicConstraints, KeyUsage)
    after_ski: bytes  # extension TLVs between the SKI and the SAN (AKI, EKU, CRL DP, AIA)


_cache: dict[tuple, _Parts] = {}
_cache_lock = threading.Lock()
_CACHE_LIMIT = 256  # labels x CAs x key families: a deployment has a handful


def assemble(reference: Callable[[], x509.Certificate], key_of_template: tuple, *,
             issuer_key: CertificateIssuerPrivateKeyTypes, serial: int, not_before: dt.datetime,
             not_after: dt.datetime, subject: x509.Name, public_key: CertificatePublicKeyTypes,
             san: x509.SubjectAlternativeName | None) -> x509.Certificate:
    """The signed certificate; `reference()` builds a CertificateBuilder certificate of the same
    template (no SAN), called only the first time `key_of_template` is seen."""
    parts = _cache.get(key_of_template)
    if parts is None:
        parts = _parts_of(reference())
        with _cache_lock:
            if len(_cache) >= _CACHE_LIMIT:
                _cache.clear()
            _cache[key_of_template] = parts
    spki = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    extensions = parts.before_ski + _ski_extension(spki) + parts.after_ski
    if san is not None:
        # RFC 5280 4.2.1.6: SAN is critical when the subject is empty.
        extensions += tlv(_SEQUENCE, _SAN_OID + (_CRITICAL if len(subject) == 0 else b"")
                          + tlv(_OCTET_STRING, san.public_bytes()))
    tbs = tlv(_SEQUENCE, b"".join((
        _VERSION_3,
        _integer(serial),
        parts.signature_algorithm,
        parts.issuer,
        tlv(_SEQUENCE, _time(not_before) + _time(not_after)),
        subject.public_bytes(),
        spki,
        tlv(0xA3, tlv(_SEQUENCE, extensions)),
    )))
    signature = signature_of(issuer_key, tbs)
    der = tlv(_SEQUENCE, tbs + parts.signature_algorithm + tlv(_BIT_STRING, b"\x00" + signature))
    return x509.load_der_x509_certificate(der)


def _parts_of(reference: x509.Certificate) -> _Parts:
    """Cut a CertificateBuilder certificate into the parts a template reuses."""
    fields = children(reference.tbs_certificate_bytes)
    # version, serial, signature, issuer, validity, subject, spki, [3] extensions
    if len(fields) != 8 or fields[0] != _VERSION_3 or fields[7][0] != 0xA3:
        raise ValueError("reference certificate does not have the expected TBSCertificate layout")
    _, start, end = split_tlv(fields[7])
    extensions = children(fields[7][start:end])
    ski_at = next(i for i, ext in enumerate(extensions) if children(ext)[0] == _SKI_OID)
    if any(children(ext)[0] == _SAN_OID for ext in extensions):
        raise ValueError("the reference certificate must not carry a SAN")
    return _Parts(signature_algorithm=fields[2], issuer=fields[3],
                  before_ski=b"".join(extensions[:ski_at]), after_ski=b"".join(extensions[ski_at + 1:]))


def _ski_extension(spki: bytes) -> bytes:
    """RFC 5280 4.2.1.2 method (1), as x509.SubjectKeyIdentifier.from_public_key computes it:
    SHA-1 over the subjectPublicKey BIT STRING's value, unused-bits octet excluded."""
    _, start, end = split_tlv(spki)
    _, _, pos = split_tlv(spki, start)  # the AlgorithmIdentifier
    tag, key_start, key_end = split_tlv(spki, pos)
    if tag != _BIT_STRING or key_end != end:
        raise ValueError("SubjectPublicKeyInfo without a trailing BIT STRING")
    digest = hashlib.sha1(spki[key_start + 1:key_end]).digest()  # noqa: S324 - the RFC's method
    return tlv(_SEQUENCE, _SKI_OID + tlv(_OCTET_STRING, tlv(_OCTET_STRING, digest)))


def _integer(value: int) -> bytes:
    """A serial number: positive and at most 20 octets (RFC 5280 4.1.2.2), as CertificateBuilder checks."""
    if value <= 0 or value.bit_length() >= 160:
        raise ValueError("a serial number is positive and at most 159 bits")
    return tlv(_INTEGER, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def _time(when: dt.datetime) -> bytes:
    """UTCTime or GeneralizedTime to the second, "Z" (an f-string: strftime costs three times as much)."""
    t = when.astimezone(dt.timezone.utc)
    clock = f"{t.month:02d}{t.day:02d}{t.hour:02d}{t.minute:02d}{t.second:02d}Z"
    if t.year in _UTC_TIME_YEARS:
        return b"\x17\x0d" + f"{t.year % 100:02d}{clock}".encode()
    return b"\x18\x0f" + f"{t.year:04d}{clock}".encode()

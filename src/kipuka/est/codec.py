"""EST wire encodings (RFC 7030 with RFC 8951).

Requests: base64 of DER, tolerating CR, LF, space and tab anywhere, ignoring
Content-Transfer-Encoding; PEM armour and raw DER are accepted too, since
clients in the field send both. Responses: base64 wrapped at 64 columns with
LF (CRLF breaks GNU `base64 -d`).
"""

from __future__ import annotations

import base64
import binascii
import re

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7

from kipuka.errors import BadRequest
from kipuka.keydelivery._der import tlv as _tlv

CERTS_ONLY = "application/pkcs7-mime; smime-type=certs-only"
CSRATTRS = "application/csrattrs"
PKCS10 = "application/pkcs10"

_WS = re.compile(rb"[\r\n\t ]+")
_PEM = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END \1-----", re.S)
_PEM_LABELS = {b"CERTIFICATE REQUEST", b"NEW CERTIFICATE REQUEST"}


def decode_body(body: bytes, what: str = "CSR") -> bytes:
    """DER bytes from a request body (base64, PEM or raw DER)."""
    if not body.strip():
        raise BadRequest(f"request body is empty; expected a base64-encoded {what}")
    if body[:1] == b"\x30" and len(body) > 1 and body[1] >= 0x80:
        return body  # raw DER: a SEQUENCE with a long-form length is never valid base64 text
    stripped = body.strip()
    if stripped.startswith(b"-----BEGIN"):
        m = _PEM.search(stripped)
        if not m or m.group(1) not in _PEM_LABELS:
            raise BadRequest(f"PEM body is not a {what} (expected BEGIN CERTIFICATE REQUEST)")
        stripped = m.group(2)
    text = _WS.sub(b"", stripped)
    try:
        der = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("request body is not valid base64 (RFC 8951)") from None
    if not der:
        raise BadRequest(f"request body decodes to nothing; expected a {what}")
    return der


def encode_body(der: bytes) -> bytes:
    b64 = base64.b64encode(der)
    return b"".join(b64[i:i + 64] + b"\n" for i in range(0, len(b64), 64))


def certs_only(certs: list[x509.Certificate]) -> bytes:
    """A degenerate PKCS#7 SignedData carrying only certificates (DER)."""
    return pkcs7.serialize_certificates(certs, serialization.Encoding.DER)


def certs_only_in_order(certs: list[x509.Certificate]) -> bytes:
    """Certs-only PKCS#7 that keeps the given order (issuing CA first, root last).

    The reference page promises /cacerts "in order from the issuing CA to the
    root". cryptography (rightly, for DER) sorts the SET OF certificates, so the
    root may come first; OpenSSL, curl users and EST clients read the set in
    stored order. Only the certificate set differs from DER's canonical order;
    the structure is the RFC 5652 degenerate SignedData, written out here as
    fixed TLVs because no library offers an unsorted certificate set.
    """
    signed_data = _tlv(0x30, b"".join([
        _tlv(0x02, b"\x01"),                                   # version 1
        _tlv(0x31, b""),                                       # digestAlgorithms: none
        _tlv(0x30, _tlv(0x06, _ID_DATA)),                      # encapContentInfo: id-data, no content
        _tlv(0xA0, b"".join(c.public_bytes(serialization.Encoding.DER) for c in certs)),  # [0] certificates
        _tlv(0x31, b""),                                       # signerInfos: none
    ]))
    return _tlv(0x30, _tlv(0x06, _ID_SIGNED_DATA) + _tlv(0xA0, signed_data))


_ID_DATA = bytes.fromhex("2a864886f70d010701")         # 1.2.840.113549.1.7.1
_ID_SIGNED_DATA = bytes.fromhex("2a864886f70d010702")  # 1.2.840.113549.1.7.2

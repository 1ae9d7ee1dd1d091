"""EST wire encodings (RFC 7030 with RFC 8951).

Requests: base64 of DER, tolerating CR, LF, space and tab anywhere and missing
padding, ignoring Content-Transfer-Encoding; PEM armour and raw DER are accepted too, since
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
    if b"=" not in text and len(text) % 4 in (2, 3):
        # Unpadded base64 (some clients strip the "="): the length says how much padding is
        # missing, so the bytes are unambiguous (RFC 8951's tolerance). A length of 1 mod 4
        # cannot be base64 at all and stays an error, as does wrong padding.
        text += b"=" * (4 - len(text) % 4)
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
    """A degenerate PKCS#7 SignedData carrying only certificates, in DER (RFC 5652 5.1, RFC 8951 3).

    DER (X.690 11.6) puts the SET OF certificates in ascending order of their
    encodings, so the order of `certs` is not kept: a PKCS#7 certificate set has
    no order, and a client builds the chain from names and signatures. /cacerts
    used to write the chain in order (issuing CA first), which is BER and which
    pyca/cryptography only reads with a warning it says will become an error.
    pyca/cryptography sorts the set as DER requires; tests/der_strict.py checks
    every response kipuka sends with an independent DER re-encoding.
    """
    return pkcs7.serialize_certificates(certs, serialization.Encoding.DER)

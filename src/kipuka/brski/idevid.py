"""What a pledge's IDevID certificate says about the device (RFC 8995 §2.3).

The serial number is the subject's serialNumber attribute (§2.3.1); the MASA
is named by the id-pe-masa-url extension (§2.3.2), an IA5String holding a URI
or just its authority; idevid-issuer is the certificate's Authority Key
Identifier as a DER OCTET STRING (RFC 8366 §5.3).
"""

from __future__ import annotations

import hashlib
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from pyasn1.codec.der import decoder, encoder
from pyasn1.error import PyAsn1Error
from pyasn1.type import char, univ

ID_PE_MASA_URL = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.32")
WELL_KNOWN = "/.well-known/brski"
MAX_URL = 2048


class IdevidError(ValueError):
    """The IDevID lacks what BRSKI needs of it (a serial number, a usable MASA URL)."""


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER certificate, hex: how the store names a pledge."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def serial_number(cert: x509.Certificate) -> str | None:
    values = cert.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)
    if len(values) != 1:
        return None
    value = values[0].value
    return value if isinstance(value, str) and value else None


def masa_url(cert: x509.Certificate) -> str | None:
    """The raw id-pe-masa-url value, or None when the certificate has none."""
    try:
        ext = cert.extensions.get_extension_for_oid(ID_PE_MASA_URL)
    except x509.ExtensionNotFound:
        return None
    raw = ext.value.value if isinstance(ext.value, x509.UnrecognizedExtension) else b""
    try:
        value, rest = decoder.decode(raw, asn1Spec=char.IA5String())
    except PyAsn1Error:
        raise IdevidError("the IDevID's MASA URL extension is not an IA5String") from None
    if rest or not str(value) or len(str(value)) > MAX_URL:
        raise IdevidError("the IDevID's MASA URL extension is malformed")
    return str(value)


def masa_url_extension(url: str) -> x509.UnrecognizedExtension:
    """The extension as a manufacturer puts it into an IDevID (used by `kipuka` tooling and tests)."""
    return x509.UnrecognizedExtension(ID_PE_MASA_URL, encoder.encode(char.IA5String(url)))


def requestvoucher_url(base: str) -> str:
    """https://<authority>[/path]/.well-known/brski/requestvoucher from a MASA URL value.

    RFC 8995 §2.3.2 allows the authority alone ("masa.example.com:8443") or a URI
    with the https scheme and an optional path prefix. Anything else is refused
    rather than guessed at.
    """
    value = base.strip()
    if "://" not in value:
        value = "https://" + value
    parts = urlsplit(value)
    if parts.scheme.lower() != "https" or not parts.hostname or parts.query or parts.fragment or parts.username:
        raise IdevidError(f"MASA URL {base[:100]!r} is not an https URI or authority")
    path = parts.path.rstrip("/")
    if path.endswith(WELL_KNOWN):
        path = path[: -len(WELL_KNOWN)]
    return f"https://{parts.netloc}{path}{WELL_KNOWN}/requestvoucher"


def idevid_issuer(cert: x509.Certificate) -> bytes | None:
    """The Authority Key Identifier as DER OCTET STRING (0x04, length, keyIdentifier), RFC 8366 §5.3."""
    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except (x509.ExtensionNotFound, ValueError):
        return None
    if aki.key_identifier is None:
        return None
    return encoder.encode(univ.OctetString(aki.key_identifier))

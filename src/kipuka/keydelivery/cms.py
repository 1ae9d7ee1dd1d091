"""ContentInfo wrapping and certificate fields shared by SignedData and EnvelopedData."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pyasn1.type import univ
from pyasn1_modules import rfc5280, rfc5652

from kipuka.keydelivery._der import KeyDeliveryError, children, decode, encode, oid, tlv


def content_info(content_type: str, content: bytes) -> bytes:
    """DER ContentInfo: the outermost CMS wrapper (RFC 5652 section 3)."""
    ci = rfc5652.ContentInfo()
    ci["contentType"] = oid(content_type)
    ci["content"] = univ.Any(content)
    return encode(ci)


def read_content_info(der: bytes) -> tuple[str, bytes]:
    """(content type, DER content) of a ContentInfo."""
    ci = decode(der, rfc5652.ContentInfo(), "CMS ContentInfo")
    return str(ci["contentType"]), bytes(ci["content"])


def issuer_and_serial(cert: x509.Certificate) -> rfc5652.IssuerAndSerialNumber:
    """IssuerAndSerialNumber with the issuer Name bytes exactly as the certificate carries them.

    Recipients match this field against their certificate byte for byte (or by a
    canonical form), so it is taken from the certificate's DER, not rebuilt.
    """
    der = cert.public_bytes(serialization.Encoding.DER)
    tbs = children(children(der)[0])
    i = 1 if tbs[0][0] == 0xA0 else 0  # [0] EXPLICIT version is optional
    serial_raw, issuer_raw = tbs[i], tbs[i + 2]
    raw = tlv(0x30, issuer_raw + serial_raw)
    value = decode(raw, rfc5652.IssuerAndSerialNumber(), "IssuerAndSerialNumber")
    if encode(value) != raw:
        raise KeyDeliveryError("the certificate's issuer name is not DER; it cannot be referenced exactly")
    return value


def certificate_choice(cert: x509.Certificate) -> rfc5652.CertificateChoices:
    """A certificate for a CertificateSet, checked to re-encode to the very same bytes."""
    der = cert.public_bytes(serialization.Encoding.DER)
    value = decode(der, rfc5280.Certificate(), "certificate")
    if encode(value) != der:
        raise KeyDeliveryError("the certificate is not DER; it would not survive re-encoding")
    choice = rfc5652.CertificateChoices()
    choice["certificate"] = value
    return choice


def subject_key_identifier(cert: x509.Certificate) -> bytes | None:
    """The certificate's SubjectKeyIdentifier extension value, if it has one."""
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return None


def key_identifier(public_key: object) -> bytes:
    """SHA-1 of the subjectPublicKey bits (RFC 5280 4.2.1.2 method 1): the usual key identifier."""
    return x509.SubjectKeyIdentifier.from_public_key(public_key).digest  # type: ignore[arg-type]

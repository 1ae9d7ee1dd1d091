"""What a request works with and what it can come to: a label's runtime state, a
requester cleared to enroll, and the two outcomes of an enrollment (issued, held).

Kept apart from `authority` so that issuance, approval, serverkeygen and Full CMC
share these types without importing each other.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from kipuka.ca.base import CertificateAuthority
from kipuka.config import Label
from kipuka.ra.requester import Requester
from kipuka.store import OtpRecord

CMC_RA = x509.ObjectIdentifier("1.3.6.1.5.5.7.3.28")  # id-kp-cmcRA, RFC 6402


@dataclass(frozen=True)
class LabelRuntime:
    label: Label
    ca: CertificateAuthority
    bootstrap_anchors: tuple[x509.Certificate, ...]
    ra_anchors: tuple[x509.Certificate, ...]
    holds_requests: bool = False  # the CA may hold a request (RemoteIssuer): retries are looked up first


@dataclass(frozen=True)
class Enrolled:
    certificate: x509.Certificate
    redelivered: bool = False


@dataclass(frozen=True)
class Held:
    """The request waits for an RA officer: answer 202 and come back after `retry_after` s."""

    request_id: int
    retry_after: int


@dataclass(frozen=True)
class Authorized:
    """A requester cleared to enroll on a label, and the CSR it may have certified."""

    rt: LabelRuntime
    op: str
    entity: str
    auth: str  # "otp" | "mtls"
    csr: x509.CertificateSigningRequest
    san: x509.SubjectAlternativeName | None
    pubkey: str  # SHA-256 of the CSR's SubjectPublicKeyInfo
    otp: OtpRecord | None = None
    credential: tuple[str, str] | None = None  # (ca_id, serial) of a kipuka-issued client certificate


def hex_serial(serial: int) -> str:
    """Serials are stored as lower-case hex text: random 159-bit serials overflow BIGINT."""
    return format(serial, "x")


def has_eku(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> bool:
    try:
        return oid in cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False


def requester_key(who: Requester, entity: str, auth: str) -> str:
    """Who asks, for matching a retry: the OTP's entity, or the client certificate itself."""
    if auth == "otp":
        return f"otp:{entity}"
    assert who.client_cert is not None
    return "cert:" + hashlib.sha256(who.client_cert.public_bytes(serialization.Encoding.DER)).hexdigest()

"""The contract every signing back end meets.

A back end only signs: the RA has already decided the subject, names, key
usages and lifetime. Back ends report temporary trouble with
kipuka.errors.Unavailable (503 + Retry-After) and hard failures with
InternalError (500).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from kipuka.ca.revocation import OcspAnswer, RevokedEntry


def directly_issued(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """True when `issuer`'s key signed `cert` (names match and the signature verifies)."""
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


@dataclass(frozen=True)
class IssueRequest:
    """A certificate template the RA has approved."""

    subject: x509.Name
    public_key: CertificatePublicKeyTypes
    san: x509.SubjectAlternativeName | None
    ekus: tuple[x509.ObjectIdentifier, ...]
    validity: dt.timedelta
    crl_urls: tuple[str, ...] = ()
    ocsp_urls: tuple[str, ...] = ()


@dataclass(frozen=True)
class Issued:
    certificate: x509.Certificate


class CertificateAuthority(Protocol):
    id: str

    def ca_certificates(self) -> list[x509.Certificate]:
        """The issuing CA first, then every certificate up to and including the root."""

    def is_issuer_of(self, cert: x509.Certificate) -> bool:
        """True when `cert` was signed by this CA's key (checked cryptographically)."""

    async def issue(self, req: IssueRequest) -> Issued:
        """Sign `req` with a fresh random serial."""

    async def sign_crl(self, entries: list[RevokedEntry], number: int, this_update: dt.datetime,
                       next_update: dt.datetime) -> bytes:
        """A DER CRL over `entries`."""

    async def sign_ocsp(self, answer: OcspAnswer, this_update: dt.datetime, next_update: dt.datetime,
                        nonce: bytes | None) -> bytes:
        """A DER OCSP response (signed by the CA or its delegated responder)."""

    async def health(self) -> str:
        """"ok" when the CA can sign right now (a real test signature), else a reason."""

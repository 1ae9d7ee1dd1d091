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
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes


@dataclass(frozen=True)
class IssueRequest:
    """A certificate template the RA has approved."""

    subject: x509.Name
    public_key: CertificatePublicKeyTypes
    san: x509.SubjectAlternativeName | None
    ekus: tuple[x509.ObjectIdentifier, ...]
    validity: dt.timedelta


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

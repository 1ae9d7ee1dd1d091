"""The contract every signing back end meets.

A back end only signs: the RA has already decided the subject, names, key
usages and lifetime. Back ends report temporary trouble with
kipuka.errors.Unavailable (503 + Retry-After) and hard failures with
InternalError (500).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

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
    # For back ends that forward a request instead of signing a template (Dogtag,
    # an upstream EST server): the requester's PKCS#10 as received, and the label
    # it came in on (a back end may map labels to its own profiles).
    csr_der: bytes | None = None
    label: str = ""


@dataclass(frozen=True)
class Issued:
    certificate: x509.Certificate


class IssuancePending(Exception):
    """The back end holds the request (a Dogtag agent queue, an upstream EST 202).

    `ref` is the back end's own handle for it (a Dogtag request id, an opaque
    token for an upstream EST retry); the RA keeps it with its pending record and
    hands it to `collect()` when the requester retries.
    """

    def __init__(self, ref: str, retry_after: int | None = None, reason: str = "") -> None:
        super().__init__(reason or f"pending at the CA as {ref}")
        self.ref = ref
        self.retry_after = retry_after
        self.reason = reason or f"pending at the CA as {ref}"


class IssuanceRejected(Exception):
    """The back end refused the request for good (an agent rejected it, an upstream 4xx).

    `status` is the HTTP status the requester should see (400 for a request the
    CA finds malformed, 403 for a refusal); `reason` is one line of text.
    """

    def __init__(self, reason: str, status: int = 403) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@runtime_checkable
class RemoteIssuer(Protocol):
    """Optional capability of a back end that can hold a request (raise IssuancePending)."""

    async def collect(self, ref: str, req: IssueRequest) -> Issued:
        """The certificate for a request held as `ref`; raises IssuancePending while it waits,
        IssuanceRejected once refused. `req` is the same request as the first `issue()`
        (rebuilt from the stored CSR), for back ends that ask again rather than by id."""


@runtime_checkable
class RemoteRevoker(Protocol):
    """Optional capability of a back end whose revocation lives at the CA (Dogtag).

    The RA calls it before it records a revocation, so kipuka never shows a
    certificate revoked that the CA still considers good.
    """

    async def revoke(self, serial: int, reason: x509.ReasonFlags) -> None: ...


@runtime_checkable
class KeyArchivingIssuer(Protocol):
    """Optional capability: the CA's own key archive generates and keeps the key
    (Dogtag's KRA). Used for /serverkeygen when the back end sets `archives_keys`."""

    archives_keys: bool

    async def issue_with_archived_key(self, req: IssueRequest, key_type: str) -> tuple[Issued, bytes]:
        """Certificate for a key the archive generated from `key_type` ("ec-p256", "ec-p384", "rsa2048", ...),
        and that private key as unencrypted PKCS#8 DER, for kipuka to wrap for delivery."""


@runtime_checkable
class CmcForwarder(Protocol):
    """Optional capability: the CA takes a whole CMC Full PKI Request (Dogtag's CMC profiles)."""

    async def submit_cmc(self, pki_data_der: bytes, label: str) -> bytes:
        """The CA's DER Full PKI Response to a DER Full PKI Request."""


def forwards_requests(ca: object) -> bool:
    """True for a back end that forwards the requester's CSR (IssueRequest.csr_der)
    rather than signing a template: its CSR must hold the certified key."""
    return getattr(ca, "forwards_requests", False)


def signs_revocation(ca: object) -> bool:
    """False for a back end whose CRLs and OCSP are published by the remote CA itself."""
    return getattr(ca, "signs_revocation", True)


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

"""Issuance: sign a cleared request with the label's CA, then record it in one transaction.

Shared by every operation that issues (simpleenroll, simplereenroll, serverkeygen,
Full CMC, approval). The transaction that records the certificate also writes its
audit event and, where the request needs it, spends the OTP use, checks the client
certificate is still unrevoked, or stores the escrowed key: a certificate is never
recorded without them, and they never without it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from typing import TYPE_CHECKING, Awaitable, Callable

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from kipuka import metrics
from kipuka.ca.base import IssuancePending, IssuanceRejected, IssueRequest, Issued, forwards_requests
from kipuka.config import Config
from kipuka.errors import BadRequest, Forbidden, InternalError, NotImplementedYet, Unauthenticated
from kipuka.ra import csr as csrcheck
from kipuka.ra import subject_policy
from kipuka.ra.requester import Requester
from kipuka.ra.revocation import Revocation
from kipuka.ra.runtime import Enrolled, Held, LabelRuntime, hex_serial, requester_key
from kipuka.ra.trail import Trail, stored
from kipuka.store import AsyncStore, AuditEvent, CertRecord, OtpRecord, SerialCollision
from kipuka.store.escrow import Escrow, EscrowFailed
from kipuka.store.records import utcnow
from kipuka.store.sql import Revoked

if TYPE_CHECKING:
    from kipuka.ra.approval import Approvals

SERIAL_RETRIES = 3
OTP_USED_OTHER_NAMES = ("OTP already used; a retry within the recovery window gets the certificate again only "
                        "for the same key and the same names")


class Issuance:
    def __init__(self, config: Config, store: AsyncStore, revocation: Revocation, trail: Trail,
                 approvals: "Approvals") -> None:
        self.config = config
        self.store = store
        self.revocation = revocation
        self.trail = trail
        self.approvals = approvals
        self._profiles: dict[str, IssueRequest] = {}  # per label; an Authority (and this) is rebuilt on reload

    # --- templates ------------------------------------------------------------------

    def template(self, rt: LabelRuntime, csr: x509.CertificateSigningRequest,
                 san: x509.SubjectAlternativeName | None, csr_der: bytes | None = None) -> IssueRequest:
        if csr_der is None and forwards_requests(rt.ca):  # only a forwarding back end reads the CSR itself
            csr_der = csr.public_bytes(serialization.Encoding.DER)
        return self.template_for(rt, csr.subject, csr.public_key(), san, csr_der)  # type: ignore[arg-type]

    def template_for(self, rt: LabelRuntime, subject: x509.Name, public_key: CertificatePublicKeyTypes,
                     san: x509.SubjectAlternativeName | None, csr_der: bytes | None = None) -> IssueRequest:
        """The certificate a request of any form (PKCS#10, CRMF) gets on this label."""
        base = self._profiles.get(rt.label.name)
        if base is None:  # what the label's policy puts in every certificate: worked out once
            crl_urls, ocsp_urls = self.revocation.urls(rt.ca.id)
            base = self._profiles[rt.label.name] = dataclasses.replace(
                csrcheck.template_for(subject, public_key, san, rt.label.policy),
                crl_urls=crl_urls, ocsp_urls=ocsp_urls, label=rt.label.name)
        if subject_policy.changes_subject(rt.label.policy):  # fixed attributes in, unlisted ones (drop) out
            subject = subject_policy.certified_subject(subject, rt.label.policy)
        return dataclasses.replace(base, subject=subject, public_key=public_key, san=san, csr_der=csr_der)

    # --- sign and record ------------------------------------------------------------

    async def issue(self, rt: LabelRuntime, op: str, who: Requester, entity: str, auth: str,
                    csr: x509.CertificateSigningRequest | None, san: x509.SubjectAlternativeName | None, *,
                    otp: OtpRecord | None = None, pubkey: str | None = None, template: IssueRequest | None = None,
                    credential: tuple[str, str] | None = None, public_key: CertificatePublicKeyTypes | None = None,
                    archive: Callable[[CertRecord], Escrow] | None = None, reason: str = "",
                    csr_der: bytes | None = None, sign: Callable[[IssueRequest], Awaitable[Issued]] | None = None,
                    record_with: Callable[[CertRecord, AuditEvent], Awaitable[None]] | None = None,
                    replaces: tuple[str, str] | None = None) -> Enrolled | Held:
        """Sign, then record in one transaction (spending the OTP use, if any).

        `public_key` replaces the CSR's key (serverkeygen), and `csr_der` the CSR a
        forwarding back end receives (one signed by that key); `sign` replaces the
        CA's issue() (a key archive that generates the key). `archive` gives the
        escrow row for a record, written in the same transaction as the certificate.
        `template` (with `pubkey`) stands for a request that is not a CSR (fullcmc CRMF).
        A remote CA may hold the request (Held) or refuse it. `record_with` replaces
        the plain record_issuance (BRSKI links the LDevID to the IDevID in the same transaction).
        `replaces` (ca_id, serial) is the certificate a renewal replaces: the store keeps the lineage.
        """
        req = template or self.template(rt, csr, san)  # type: ignore[arg-type]
        if public_key is not None:
            req = dataclasses.replace(req, public_key=public_key)
        if csr_der is not None:
            req = dataclasses.replace(req, csr_der=csr_der)
        pubkey = pubkey or csrcheck.public_key_sha256(csr)  # type: ignore[arg-type]
        window = dt.timedelta(seconds=self.config.otp.recovery_window)
        reject = self.trail.reject
        for _ in range(SERIAL_RETRIES):
            try:
                issued = (await (sign or rt.ca.issue)(req)).certificate
            except IssuancePending as exc:
                if csr is None or public_key is not None or archive is not None or op not in ("enroll", "reenroll"):
                    await reject(rt, op, who, entity, NotImplementedYet(
                        f"the CA holds this {op} request for approval ({exc.ref}); kipuka can wait for a "
                        "remote CA's approval only for simpleenroll and simplereenroll"))
                return await self.approvals.create_pending(
                    rt, op, who, entity, auth, requester_key(who, entity, auth), req.csr_der or b"", pubkey,
                    csr.subject, san, otp_id=otp.id if otp else None, credential=credential, ca_ref=exc.ref,
                    retry_after=exc.retry_after)
            except IssuanceRejected as exc:
                await reject(rt, op, who, entity, (BadRequest if exc.status == 400 else Forbidden)(
                    f"the CA refused the request: {exc.reason}"))
            if sign is not None:  # the key was made by the CA: the record names that key
                pubkey = hashlib.sha256(issued.public_key().public_bytes(
                    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).hexdigest()
            record = certificate_record(rt, issued, entity, auth, pubkey, otp.id if otp else None,
                                        None if forwards_requests(rt.ca) or sign is not None else req,
                                        replaces=replaces, requested=req)
            event = self.trail.event(rt, op, "success", who, entity, reason, auth=auth, serial=record.serial)
            try:
                if archive is not None:
                    outcome, der = await stored(self.store.escrow_key(
                        archive(record), record, event, otp_id=otp.id if otp else None, now=utcnow(),
                        recovery_window=window, credential=credential))
                elif otp is not None:
                    outcome, der = await stored(self.store.issue_with_otp(otp.id, record, event, utcnow(), window))
                elif record_with is not None:
                    await stored(record_with(record, event))
                    outcome, der = "issued", None
                else:
                    await stored(self.store.record_issuance(record, event, credential))
                    outcome, der = "issued", None
                if outcome == "recovered":
                    return Enrolled(x509.load_der_x509_certificate(der), redelivered=True)
                if outcome in ("spent", "different"):
                    await reject(rt, op, who, entity, Unauthenticated(
                        OTP_USED_OTHER_NAMES if outcome == "different" else "OTP already used"))
            except SerialCollision:
                if forwards_requests(rt.ca):  # asking a remote CA again would issue a second certificate
                    await reject(rt, op, who, entity, InternalError(
                        f"CA {rt.ca.id} returned serial {record.serial}, which is already recorded"))
                continue
            except Revoked:
                await reject(rt, op, who, entity, Unauthenticated("client certificate has been revoked"))
            except EscrowFailed as exc:
                await reject(rt, op, who, entity, InternalError(
                    f"the generated key could not be archived ({exc}); no key or certificate was issued"))
            metrics.ISSUED.labels(rt.label.name, rt.ca.id).inc()
            return Enrolled(issued)
        await reject(rt, op, who, entity, InternalError("could not allocate a unique serial number"))


def certificate_record(rt: LabelRuntime, cert: x509.Certificate, entity: str, auth: str, pubkey: str,
                       otp_id: int | None, template: IssueRequest | None = None,
                       replaces: tuple[str, str] | None = None, requested: IssueRequest | None = None
                       ) -> CertRecord:
    """The store's row for an issued certificate.

    `template` is the request a back end that signs templates as given (a local or
    PKCS#11 CA: ca/profile.py) signed: its subject and SANs are the certificate's, and
    reading them from there saves parsing every extension of the certificate again.
    Otherwise the names come from the certificate, and where they differ from what
    `requested` asked for (a remote CA's profile rewrote them), the record keeps the
    request's too: a retry after a lost response asks for those.
    """
    der = cert.public_bytes(serialization.Encoding.DER)
    requested_subject = requested_sans = None
    if template is not None:
        subject, sans = template.subject.rfc4514_string(), sans_text(template.san)
    else:
        subject = cert.subject.rfc4514_string()
        try:
            sans = sans_text(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
        except x509.ExtensionNotFound:
            sans = ""
        if requested is not None:
            asked = requested.subject.rfc4514_string(), sans_text(requested.san)
            if asked != (subject, sans):
                requested_subject, requested_sans = asked
    return CertRecord(
        ca_id=rt.ca.id, serial=hex_serial(cert.serial_number), subject=subject, sans=sans,
        not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc, label=rt.label.name,
        entity=entity, auth=auth, pubkey_sha256=pubkey, fingerprint_sha256=hashlib.sha256(der).hexdigest(),
        der=der, issued_at=utcnow(), otp_id=otp_id,
        replaces_ca=replaces[0] if replaces else None, replaces_serial=replaces[1] if replaces else None,
        requested_subject=requested_subject, requested_sans=requested_sans,
    )


def renewed(op: str, auth: str, ca_id: str | None, serial: str | None) -> tuple[str, str] | None:
    """The certificate a request renews: the client certificate of an mTLS (re)enrollment, if
    this server issued it (a bootstrap or RA certificate renews nothing)."""
    return (ca_id, serial) if op in ("enroll", "reenroll") and auth == "mtls" and ca_id and serial else None


def sans_text(san: x509.SubjectAlternativeName | None) -> str:
    return ",".join(str(n.value) for n in san) if san else ""

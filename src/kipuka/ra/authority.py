"""The registration authority: authorizes a requester, validates the CSR against
the label's policy, has the label's CA sign, and records the result.

Everything a request needs (labels, CAs, trust anchors, the OTP keyring) is
held in one `Authority` built from the configuration; a reload builds a new one
and swaps it in, so a request in flight finishes with the state it started on.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import Awaitable, Callable

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from kipuka import metrics
from kipuka.ca.base import (CertificateAuthority, IssuancePending, IssuanceRejected, IssueRequest, Issued,
                            RemoteIssuer, forwards_requests,
                            directly_issued)
from kipuka.config import Config, Label
from kipuka.errors import (BadRequest, Conflict, Forbidden, InternalError, NotFound, NotImplementedYet,
                           Unauthenticated)
from kipuka.pem import load_certificates
from kipuka.ra import csr as csrcheck
from kipuka.ra.change_subject import change_subject_name
from kipuka.ra.otp import OtpKeyring
from kipuka.ra.fullcmc import FullCmc
from kipuka.ra.linking import check_linking
from kipuka.ra.revocation import Revocation
from kipuka.ra.serverkeygen import ServerKeygen
from kipuka.ra.requester import Requester
from kipuka.store import AsyncStore, AuditEvent, CertRecord, OtpRecord, SerialCollision, StoreUnavailable
from kipuka.store.escrow import Escrow, EscrowFailed
from kipuka.store.records import PendingRecord, utcnow
from kipuka.store.sql import Revoked

SERIAL_RETRIES = 3
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


@dataclass(frozen=True)
class Held:
    """The request waits for an RA officer: answer 202 and come back after `retry_after` s."""

    request_id: int
    retry_after: int


class Authority:
    def __init__(self, config: Config, cas: dict[str, CertificateAuthority], store: AsyncStore,
                 keyring: OtpKeyring) -> None:
        self.config = config
        self.cas = cas
        self.store = store
        self.keyring = keyring
        self.revocation = Revocation(cas, store, config.revocation)
        self._issuer_cache: dict[bytes, CertificateAuthority | None] = {}
        self.keygen = ServerKeygen(self)
        self.cmc = FullCmc(self)
        self.labels = {
            name: LabelRuntime(
                label, cas[label.ca],
                tuple(c for p in label.policy.bootstrap_anchors for c in load_certificates(p)),
                tuple(c for p in label.policy.ra_anchors for c in load_certificates(p)),
                isinstance(cas[label.ca], RemoteIssuer),  # once here: a Protocol isinstance is slow per request
            )
            for name, label in config.labels.items()
        }

    def runtime(self, label: str) -> LabelRuntime:
        try:
            return self.labels[label]
        except KeyError:
            raise NotFound(f"unknown EST label {label!r}") from None

    # --- enrollment -----------------------------------------------------------------

    async def enroll(self, label: str, csr_der: bytes, who: Requester) -> Enrolled | Held:
        rt = self.runtime(label)
        a = await self.authorize(rt, "enroll", csr_der, who)
        if rt.label.policy.require_approval:
            return await self._hold(rt, a.op, who, a.entity, a.auth, csr_der, a.csr, a.pubkey,
                                    otp_id=a.otp.id if a.otp else None, credential=a.credential)
        if rt.holds_requests:  # a retry of a request the CA holds: where does it stand?
            resumed = await self._resume(rt, a.op, who, a.entity, self._requester(who, a.entity, a.auth), a.pubkey)
            if resumed is not None:
                return resumed
        if a.otp is not None:
            redelivered = await self.check_otp_usable(a, who, redeliver=True)
            if redelivered is not None:
                return redelivered
        return await self._issue(rt, a.op, who, a.entity, a.auth, a.csr, a.san, otp=a.otp, pubkey=a.pubkey,
                                 credential=a.credential)

    async def authorize(self, rt: LabelRuntime, op: str, csr_der: bytes, who: Requester) -> Authorized:
        """The checks every enrollment shares (simpleenroll, serverkeygen): the credential, then the CSR.

        OTP: lockout, the OTP itself, the CSR against the label policy and the entity's names.
        mTLS: the certificate's dates, the CSR, and that the certificate may enroll here.
        Whether an OTP still has a use left is checked by `check_otp_usable`.
        """
        if who.basic is not None:
            return await self._authorize_otp(rt, op, csr_der, who)
        if who.client_cert is None:
            await self._reject(rt, op, who, "", Unauthenticated("authentication required: "
                                                               "HTTP Basic with an OTP, or a client certificate"))
        cert = who.client_cert
        entity = cert.subject.rfc4514_string()
        await self._check_dates(rt, op, who, entity, cert)
        csr, san = await self._valid_csr(rt, op, who, entity, csr_der)
        credential = await self.mtls_credential(rt, op, who, entity, cert, csr.subject, san)
        return Authorized(rt, op, entity, "mtls", csr, san, csrcheck.public_key_sha256(csr), credential=credential)

    async def mtls_credential(self, rt: LabelRuntime, op: str, who: Requester, entity: str, cert: x509.Certificate,
                              subject: x509.Name, san: x509.SubjectAlternativeName | None) -> tuple[str, str] | None:
        """May this client certificate enroll for these names here? The credential to keep unrevoked, if any."""
        issuer = self._kipuka_issuer(cert)
        if issuer is not None:
            if not csrcheck.same_names(cert, subject, san):
                await self._reject(rt, op, who, entity, Forbidden(
                    "a certificate issued by this server may only request its own names again"))
            return (issuer.id, _hex(cert.serial_number))
        if self._issued_by_any(cert, rt.bootstrap_anchors) or (
                _has_eku(cert, CMC_RA) and self._issued_by_any(cert, rt.ra_anchors)):
            return None
        await self._reject(rt, op, who, entity, Forbidden(
            "client certificate is not authorized to enroll on this label"))
        raise AssertionError("unreachable")

    async def reenroll(self, label: str, csr_der: bytes, who: Requester) -> Enrolled | Held:
        rt = self.runtime(label)
        op = "reenroll"
        cert = who.client_cert
        if cert is None:
            await self._reject(rt, op, who, who.basic.entity if who.basic else "",
                               Unauthenticated("re-enrollment requires the current certificate as TLS client certificate"))
        entity = cert.subject.rfc4514_string()
        await self._check_dates(rt, op, who, entity, cert)
        if not rt.ca.is_issuer_of(cert):
            await self._reject(rt, op, who, entity, Forbidden(
                "client certificate was not issued by this label's CA"))
        csr, san = await self._valid_csr(rt, op, who, entity, csr_der)
        if not csrcheck.same_names(cert, csr.subject, san):
            if not rt.label.policy.allow_subject_change:
                await self._reject(rt, op, who, entity, Forbidden(
                    "CSR subject or subjectAltName differs from the current certificate"))
            change = await self._guard(rt, op, who, entity, lambda: change_subject_name(csr_der))
            if change is None or not change.names_certificate(cert):
                await self._reject(rt, op, who, entity, Forbidden(
                    "a name change needs a ChangeSubjectName attribute naming the current certificate"))
        credential = (rt.ca.id, _hex(cert.serial_number))
        if rt.holds_requests:
            resumed = await self._resume(rt, op, who, entity, self._requester(who, entity, "mtls"),
                                         csrcheck.public_key_sha256(csr))
            if resumed is not None:
                return resumed
        if rt.label.policy.reenroll_requires_approval:
            return await self._hold(rt, op, who, entity, "mtls", csr_der, csr, csrcheck.public_key_sha256(csr),
                                    credential=credential)
        return await self._issue(rt, op, who, entity, "mtls", csr, san, credential=credential)

    # --- OTP ------------------------------------------------------------------------

    async def _authorize_otp(self, rt: LabelRuntime, op: str, csr_der: bytes, who: Requester) -> Authorized:
        entity = who.basic.entity  # type: ignore[union-attr]
        otp = await self.authenticate_otp(rt, op, who)
        csr, san = await self._valid_csr(rt, op, who, entity, csr_der)
        await self._guard(rt, op, who, entity,
                          lambda: csrcheck.check_names_for_entity(csr.subject, san, entity,
                                                                  rt.label.policy.otp_name_rule))
        return Authorized(rt, op, entity, "otp", csr, san, csrcheck.public_key_sha256(csr), otp=otp)

    async def authenticate_otp(self, rt: LabelRuntime, op: str, who: Requester) -> OtpRecord:
        """The HTTP Basic entity:OTP, checked against the store after the lockout (audited 401 if wrong)."""
        basic = who.basic
        assert basic is not None
        entity = basic.entity
        now = utcnow()
        locked = await self._db(self.store.locked_until(entity, who.client_addr, now))
        if locked is not None:
            await self._reject(rt, op, who, entity, Unauthenticated(
                f"too many failed attempts; locked until {locked:%Y-%m-%dT%H:%M:%SZ}"))
        otp = self._match_otp(await self._db(self.store.otps_for(entity)), rt, basic.entity, basic.secret)
        if otp is None:
            await self._otp_failure(rt, op, who, entity, now)
        assert otp is not None
        return otp

    async def check_otp_usable(self, a: Authorized, who: Requester, *, redeliver: bool) -> Enrolled | None:
        """A spent or expired OTP ends the request (401) before anything is signed.

        With `redeliver`, a retry whose first response was lost gets its certificate
        again instead (same OTP and CSR key, within [otp] recovery_window).
        """
        otp, now = a.otp, utcnow()
        assert otp is not None
        if otp.uses_left > 0 and otp.expires_at > now:
            return None
        if redeliver:
            window = dt.timedelta(seconds=self.config.otp.recovery_window)
            der = await self._db(self.store.recovered_certificate(otp.id, a.pubkey, now - window))
            if der is not None:
                await self._db(self.store.add_audit(self._event(a.rt, a.op + ".redeliver", "success", who, a.entity,
                                                                "certificate re-sent for a retried request")))
                return Enrolled(x509.load_der_x509_certificate(der), redelivered=True)
        await self._reject(a.rt, a.op, who, a.entity, Unauthenticated(
            "OTP already used" if otp.uses_left <= 0 else "OTP expired"))
        raise AssertionError("unreachable")

    def _match_otp(self, candidates: list[OtpRecord], rt: LabelRuntime, entity: str,
                   secret: str) -> OtpRecord | None:
        found = None
        for otp in candidates:  # every candidate is hashed and compared: no early exit
            if self.keyring.matches(otp.key_id, entity, secret, otp.digest):
                if otp.label is None or otp.label == rt.label.name:
                    found = found or otp
        return found

    async def _otp_failure(self, rt: LabelRuntime, op: str, who: Requester, entity: str, now: dt.datetime) -> None:
        reason = "invalid entity id or OTP"
        otp_cfg = self.config.otp
        locked = await self._db(self.store.record_auth_failure(
            entity, who.client_addr, now, otp_cfg.max_failures, dt.timedelta(seconds=otp_cfg.lockout),
            self._event(rt, op, "rejected", who, entity, reason, auth="otp")))
        metrics.OTP_FAILURES.inc()
        if locked is not None:
            metrics.OTP_LOCKOUTS.inc()
            reason += f"; too many failed attempts, locked until {locked:%Y-%m-%dT%H:%M:%SZ}"
        exc = Unauthenticated(reason)
        exc.audited = True  # type: ignore[attr-defined]  # record_auth_failure wrote the event
        raise exc

    # --- approval (RFC 7030 4.2.3) ------------------------------------------------------

    async def _hold(self, rt: LabelRuntime, op: str, who: Requester, entity: str, auth: str, csr_der: bytes,
                    csr: x509.CertificateSigningRequest | None, pubkey: str, *, otp_id: int | None = None,
                    credential: tuple[str, str] | None = None, subject: x509.Name | None = None,
                    san: x509.SubjectAlternativeName | None = None, requester: str | None = None
                    ) -> Enrolled | Held:
        """Answer a request that needs approval: first time, hold it; on a retry, say where it stands.

        A retry is recognised by requester and CSR public key, not by CSR bytes:
        a CSR linked to the TLS session changes with every connection. Without a
        `csr` (a CRMF request of fullcmc), `subject`, `san` and `requester` say who
        asks for what.
        """
        requester = requester or self._requester(who, entity, auth)
        if csr is not None:
            subject, san = csr.subject, csrcheck.requested_san(csr)
        assert subject is not None
        resumed = await self._resume(rt, op, who, entity, requester, pubkey)
        if resumed is not None:
            return resumed
        return await self._create_pending(rt, op, who, entity, auth, requester, csr_der, pubkey, subject, san,
                                          otp_id=otp_id, credential=credential)

    @staticmethod
    def _requester(who: Requester, entity: str, auth: str) -> str:
        """Who asks, for matching a retry: the OTP's entity, or the client certificate itself."""
        if auth == "otp":
            return f"otp:{entity}"
        return "cert:" + hashlib.sha256(who.client_cert.public_bytes(serialization.Encoding.DER)).hexdigest()

    async def _resume(self, rt: LabelRuntime, op: str, who: Requester, entity: str, requester: str,
                      pubkey: str) -> Enrolled | Held | None:
        """Where an earlier copy of this request stands (RFC 7030 4.2.3): None when there is none to resume."""
        now = utcnow()
        existing = await self._db(self.store.find_pending(requester, pubkey))
        if existing is not None and existing.status == "pending" and existing.expires_at <= now:
            await self._db(self.store.expire_pending(now))
            existing = await self._db(self.store.find_pending(requester, pubkey))
        if existing is None:
            return None
        if existing.status == "pending":
            if existing.ca_ref:
                return await self._collect(rt, existing, who)
            return Held(existing.id, self.config.est.retry_after)
        if existing.status == "issued" and existing.serial:
            record = await self._db(self.store.certificate_status(existing.ca_id, existing.serial))
            if record is not None:
                return Enrolled(x509.load_der_x509_certificate(record.der), redelivered=True)
        if existing.status == "rejected":
            by = "the CA" if (existing.decided_by or "").startswith("ca:") else "an RA officer"
            await self._reject(rt, op, who, entity, Forbidden(
                f"request {existing.id} was rejected by {by}: {existing.reason}"))
        return None

    async def _create_pending(self, rt: LabelRuntime, op: str, who: Requester, entity: str, auth: str,
                              requester: str, csr_der: bytes, pubkey: str, subject: x509.Name,
                              san: x509.SubjectAlternativeName | None, *, otp_id: int | None,
                              credential: tuple[str, str] | None, ca_ref: str | None = None,
                              retry_after: int | None = None) -> Held:
        """Store a held request (reserving its OTP use) and answer 202."""
        now = utcnow()
        values = dict(
            op=op, label=rt.label.name, ca_id=rt.ca.id, requester=requester, entity=entity, auth=auth,
            client_addr=who.client_addr, otp_id=otp_id, credential_ca=credential[0] if credential else None,
            credential_serial=credential[1] if credential else None, pubkey_sha256=pubkey, csr_der=csr_der,
            subject=subject.rfc4514_string(), sans=_sans_text(san), status="pending", ca_ref=ca_ref,
            reason="", created_at=now, expires_at=now + dt.timedelta(seconds=self.config.est.pending_ttl))
        why = f"held by the CA as {ca_ref}" if ca_ref else "held for approval"
        request_id = await self._db(self.store.create_pending(
            values, self._event(rt, op + ".pending", "success", who, entity, why, auth=auth)))
        if request_id is None:
            await self._reject(rt, op, who, entity, Unauthenticated("OTP already used or expired"))
        return Held(request_id, retry_after or self.config.est.retry_after)

    async def _collect(self, rt: LabelRuntime, pending: PendingRecord, who: Requester) -> Enrolled | Held:
        """Ask the remote CA about a request it holds; record the certificate once it is issued."""
        ca_ref = pending.ca_ref
        assert ca_ref is not None
        who_label = f"ca:{rt.ca.id}"
        try:
            issued = (await rt.ca.collect(ca_ref, self._pending_template(rt, pending))).certificate  # type: ignore[attr-defined]
        except IssuancePending as exc:
            return Held(pending.id, exc.retry_after or self.config.est.retry_after)
        except IssuanceRejected as exc:
            reason = f"the CA refused request {pending.id}: {exc.reason}"
            audit = AuditEvent(event=pending.op, outcome="rejected", reason=reason, label=rt.label.name,
                               entity=pending.entity, client_addr=who.client_addr, auth=who_label, ca_id=rt.ca.id)
            await self._db(self.store.reject_pending(pending.id, exc.reason[:500], who_label, utcnow(), audit))
            error = BadRequest(reason) if exc.status == 400 else Forbidden(reason)
            error.audited = True  # type: ignore[attr-defined]
            raise error from None
        record = _record(rt, issued, pending.entity, pending.auth, pending.pubkey_sha256, pending.otp_id)
        audit = AuditEvent(event=pending.op, outcome="success", reason=f"request {pending.id} issued by the CA "
                           f"({ca_ref})", label=rt.label.name, entity=pending.entity, client_addr=who.client_addr,
                           auth=pending.auth, ca_id=rt.ca.id, serial=record.serial)
        try:
            done = await self._db(self.store.approve_pending(pending.id, record, audit, who_label, utcnow()))
        except SerialCollision:  # a concurrent retry recorded this same certificate first
            done = False
        except Revoked:
            await self._reject(rt, pending.op, who, pending.entity, Unauthenticated(
                "client certificate has been revoked"))
        if not done:
            again = await self._db(self.store.pending(pending.id))
            if again is not None and again.status == "issued" and again.serial:
                found = await self._db(self.store.certificate_status(again.ca_id, again.serial))
                if found is not None:
                    return Enrolled(x509.load_der_x509_certificate(found.der), redelivered=True)
            raise Conflict(f"request {pending.id} is {again.status if again else 'gone'}, not pending")
        metrics.ISSUED.labels(rt.label.name, rt.ca.id).inc()
        return Enrolled(issued)

    def _pending_template(self, rt: LabelRuntime, pending: PendingRecord) -> IssueRequest:
        """The request a held record stands for, checked again against the label's current policy."""
        if pending.op == "fullcmc":  # a PKCS#10 or a CRMF CertReqMsg
            return self.cmc.approved_template(rt, pending.csr_der)
        csr = csrcheck.parse_csr(pending.csr_der)
        csrcheck.check_proof_of_possession(csr, rt.label.policy)
        san = csrcheck.requested_san(csr)
        csrcheck.check_names(csr.subject, san, rt.label.policy)
        return self._template(rt, csr, san, pending.csr_der)

    async def approve(self, request_id: int, officer: str) -> CertRecord | str:
        """Issue a held request; the requester's next retry receives the certificate.

        With a remote CA that holds the request in turn (a Dogtag agent queue), the
        answer is the CA's request id instead: the requester's retry collects it.
        """
        pending = await self._db(self.store.pending(request_id))
        if pending is None:
            raise NotFound(f"no request {request_id}")
        if pending.status != "pending":
            raise Conflict(f"request {request_id} is {pending.status}, not pending")
        if pending.ca_ref:
            raise Conflict(f"request {request_id} was approved here and is held by the CA as {pending.ca_ref}")
        rt = self.runtime(pending.label)
        req = self._pending_template(rt, pending)
        for _ in range(SERIAL_RETRIES):
            try:
                issued = (await rt.ca.issue(req)).certificate
            except IssuancePending as exc:
                audit = AuditEvent(event=pending.op, outcome="success", label=rt.label.name, entity=pending.entity,
                                   client_addr=pending.client_addr, auth=officer, ca_id=rt.ca.id,
                                   reason=f"request {request_id} approved; held by the CA as {exc.ref}")
                if not await self._db(self.store.set_ca_ref(request_id, exc.ref, audit)):
                    raise Conflict(f"request {request_id} is no longer pending") from None
                return exc.ref
            except IssuanceRejected as exc:
                raise Conflict(f"the CA refused request {request_id}: {exc.reason}; reject it") from None
            record = _record(rt, issued, pending.entity, pending.auth, pending.pubkey_sha256, pending.otp_id)
            audit = AuditEvent(event=pending.op, outcome="success", reason=f"request {request_id} approved",
                               label=rt.label.name, entity=pending.entity, client_addr=pending.client_addr,
                               auth=officer, ca_id=rt.ca.id, serial=record.serial)
            try:
                done = await self._db(self.store.approve_pending(request_id, record, audit, officer, utcnow()))
            except SerialCollision:
                continue
            except Revoked:
                raise Conflict("the requester's client certificate has been revoked; reject the request") from None
            if not done:
                raise Conflict(f"request {request_id} is no longer pending")
            metrics.ISSUED.labels(rt.label.name, rt.ca.id).inc()
            return record
        raise InternalError("could not allocate a unique serial number")

    async def reject(self, request_id: int, reason: str, officer: str) -> None:
        pending = await self._db(self.store.pending(request_id))
        if pending is None:
            raise NotFound(f"no request {request_id}")
        reason = reason.strip()[:500] or "no reason given"
        audit = AuditEvent(event=pending.op, outcome="rejected", reason=f"request {request_id}: {reason}",
                           label=pending.label, entity=pending.entity, client_addr=pending.client_addr,
                           auth=officer, ca_id=pending.ca_id)
        if not await self._db(self.store.reject_pending(request_id, reason, officer, utcnow(), audit)):
            raise Conflict(f"request {request_id} is {pending.status}, not pending")

    def _template(self, rt: LabelRuntime, csr: x509.CertificateSigningRequest,
                  san: x509.SubjectAlternativeName | None, csr_der: bytes | None = None) -> IssueRequest:
        return dataclasses.replace(self.template_for(rt, csr.subject, csr.public_key(), san),  # type: ignore[arg-type]
                                   csr_der=csr_der or csr.public_bytes(serialization.Encoding.DER))

    def template_for(self, rt: LabelRuntime, subject: x509.Name, public_key: CertificatePublicKeyTypes,
                     san: x509.SubjectAlternativeName | None) -> IssueRequest:
        crl_urls, ocsp_urls = self.revocation.urls(rt.ca.id)
        return dataclasses.replace(csrcheck.template_for(subject, public_key, san, rt.label.policy),
                                   crl_urls=crl_urls, ocsp_urls=ocsp_urls, label=rt.label.name)

    # --- shared steps ---------------------------------------------------------------

    async def _issue(self, rt: LabelRuntime, op: str, who: Requester, entity: str, auth: str,
                     csr: x509.CertificateSigningRequest | None, san: x509.SubjectAlternativeName | None, *,
                     otp: OtpRecord | None = None, pubkey: str | None = None, template: IssueRequest | None = None,
                     credential: tuple[str, str] | None = None, public_key: CertificatePublicKeyTypes | None = None,
                     archive: Callable[[CertRecord], Escrow] | None = None, reason: str = "",
                     csr_der: bytes | None = None, sign: Callable[[IssueRequest], Awaitable[Issued]] | None = None,
                     ) -> Enrolled | Held:
        """Sign, then record in one transaction (spending the OTP use, if any).

        `public_key` replaces the CSR's key (serverkeygen), and `csr_der` the CSR a
        forwarding back end receives (one signed by that key); `sign` replaces the
        CA's issue() (a key archive that generates the key). `archive` gives the
        escrow row for a record, written in the same transaction as the certificate.
        `template` (with `pubkey`) stands for a request that is not a CSR (fullcmc CRMF).
        A remote CA may hold the request (Held) or refuse it.
        """
        req = template or self._template(rt, csr, san)  # type: ignore[arg-type]
        if public_key is not None:
            req = dataclasses.replace(req, public_key=public_key)
        if csr_der is not None:
            req = dataclasses.replace(req, csr_der=csr_der)
        pubkey = pubkey or csrcheck.public_key_sha256(csr)  # type: ignore[arg-type]
        window = dt.timedelta(seconds=self.config.otp.recovery_window)
        for _ in range(SERIAL_RETRIES):
            try:
                issued = (await (sign or rt.ca.issue)(req)).certificate
            except IssuancePending as exc:
                if csr is None or public_key is not None or archive is not None or op not in ("enroll", "reenroll"):
                    await self._reject(rt, op, who, entity, NotImplementedYet(
                        f"the CA holds this {op} request for approval ({exc.ref}); kipuka can wait for a "
                        "remote CA's approval only for simpleenroll and simplereenroll"))
                return await self._create_pending(
                    rt, op, who, entity, auth, self._requester(who, entity, auth), req.csr_der or b"", pubkey,
                    csr.subject, san, otp_id=otp.id if otp else None, credential=credential, ca_ref=exc.ref,
                    retry_after=exc.retry_after)
            except IssuanceRejected as exc:
                await self._reject(rt, op, who, entity, (BadRequest if exc.status == 400 else Forbidden)(
                    f"the CA refused the request: {exc.reason}"))
            if sign is not None:  # the key was made by the CA: the record names that key
                pubkey = hashlib.sha256(issued.public_key().public_bytes(
                    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).hexdigest()
            record = _record(rt, issued, entity, auth, pubkey, otp.id if otp else None)
            event = self._event(rt, op, "success", who, entity, reason, auth=auth, serial=record.serial)
            try:
                if archive is not None:
                    outcome, der = await self._db(self.store.escrow_key(
                        archive(record), record, event, otp_id=otp.id if otp else None, now=utcnow(),
                        recovery_window=window, credential=credential))
                elif otp is not None:
                    outcome, der = await self._db(self.store.issue_with_otp(otp.id, record, event, utcnow(), window))
                else:
                    await self._db(self.store.record_issuance(record, event, credential))
                    outcome, der = "issued", None
                if outcome == "recovered":
                    return Enrolled(x509.load_der_x509_certificate(der), redelivered=True)
                if outcome == "spent":
                    await self._reject(rt, op, who, entity, Unauthenticated("OTP already used"))
            except SerialCollision:
                if forwards_requests(rt.ca):  # asking a remote CA again would issue a second certificate
                    await self._reject(rt, op, who, entity, InternalError(
                        f"CA {rt.ca.id} returned serial {record.serial}, which is already recorded"))
                continue
            except Revoked:
                await self._reject(rt, op, who, entity, Unauthenticated("client certificate has been revoked"))
            except EscrowFailed as exc:
                await self._reject(rt, op, who, entity, InternalError(
                    f"the generated key could not be archived ({exc}); no key or certificate was issued"))
            metrics.ISSUED.labels(rt.label.name, rt.ca.id).inc()
            return Enrolled(issued)
        await self._reject(rt, op, who, entity, InternalError("could not allocate a unique serial number"))
        raise AssertionError("unreachable")

    async def _valid_csr(self, rt: LabelRuntime, op: str, who: Requester, entity: str, der: bytes
                         ) -> tuple[x509.CertificateSigningRequest, x509.SubjectAlternativeName | None]:
        """Parse, proof of possession, key and name shape: everything that makes a CSR a 400."""
        def check() -> tuple[x509.CertificateSigningRequest, x509.SubjectAlternativeName | None]:
            csr = csrcheck.parse_csr(der)
            csrcheck.check_proof_of_possession(csr, rt.label.policy)
            check_linking(csr, lambda: who.channel_binding, rt.label.policy, exempt=lambda: self._is_ra(rt, who))
            san = csrcheck.requested_san(csr)
            csrcheck.check_names(csr.subject, san, rt.label.policy)
            return csr, san
        return await self._guard(rt, op, who, entity, check)

    async def _check_dates(self, rt: LabelRuntime, op: str, who: Requester, entity: str,
                           cert: x509.Certificate) -> None:
        now = utcnow()
        if cert.not_valid_after_utc < now:
            await self._reject(rt, op, who, entity, Unauthenticated("client certificate has expired"))
        if cert.not_valid_before_utc > now:
            await self._reject(rt, op, who, entity, Unauthenticated("client certificate is not yet valid"))

    def _is_ra(self, rt: LabelRuntime, who: Requester) -> bool:
        """An RA client (RFC 7030 §3.7): id-kp-cmcRA, issued by one of the label's RA anchors."""
        cert = who.client_cert
        return cert is not None and _has_eku(cert, CMC_RA) and self._issued_by_any(cert, rt.ra_anchors)

    def _kipuka_issuer(self, cert: x509.Certificate) -> CertificateAuthority | None:
        """Which of our CAs signed `cert`; cached per certificate (a signature check each time
        costs more than the rest of an mTLS request's authorization)."""
        key = cert.signature
        if key in self._issuer_cache:
            return self._issuer_cache[key]
        found = next((ca for ca in self.cas.values() if ca.is_issuer_of(cert)), None)
        if len(self._issuer_cache) >= 8192:
            self._issuer_cache.clear()
        self._issuer_cache[key] = found
        return found

    @staticmethod
    def _issued_by_any(cert: x509.Certificate, anchors: tuple[x509.Certificate, ...]) -> bool:
        return any(directly_issued(cert, anchor) for anchor in anchors)

    async def _guard(self, rt: LabelRuntime, op: str, who: Requester, entity: str, fn):  # type: ignore[no-untyped-def]
        """Run a check; a BadRequest or Forbidden it raises is audited, then re-raised."""
        try:
            return fn()
        except (BadRequest, Forbidden) as exc:
            await self._reject(rt, op, who, entity, exc)

    async def _reject(self, rt: LabelRuntime, op: str, who: Requester, entity: str, exc: Exception) -> None:
        await self._audit_rejection(rt.label.name, rt.ca.id, op, who, entity, getattr(exc, "reason", str(exc)))
        exc.audited = True  # type: ignore[attr-defined]
        raise exc

    async def record_rejection(self, label: str, op: str, who: Requester, exc: Exception) -> None:
        """Audit a request the front end refused before it reached the RA (bad body, unknown label)."""
        if getattr(exc, "audited", False):
            return
        rt = self.labels.get(label)
        entity = who.basic.entity if who.basic else (
            who.client_cert.subject.rfc4514_string() if who.client_cert else "")
        await self._audit_rejection(label, rt.ca.id if rt else "", op, who, entity,
                                    getattr(exc, "reason", str(exc)))

    async def _audit_rejection(self, label: str, ca_id: str, op: str, who: Requester, entity: str,
                               reason: str) -> None:
        auth = "otp" if who.basic is not None else ("mtls" if who.client_cert is not None else "none")
        try:
            await self.store.add_audit(AuditEvent(event=op, outcome="rejected", reason=reason, label=label,
                                                  entity=entity, client_addr=who.client_addr, auth=auth,
                                                  ca_id=ca_id))
        except StoreUnavailable:
            pass  # the rejection stands; the store error is reported by the request that needs it

    @staticmethod
    async def _db(awaitable):  # type: ignore[no-untyped-def]
        try:
            return await awaitable
        except StoreUnavailable as exc:
            raise InternalError(f"database error: {exc}") from None

    def _event(self, rt: LabelRuntime, op: str, outcome: str, who: Requester, entity: str, reason: str,
               auth: str = "", serial: str = "") -> AuditEvent:
        if not auth:
            auth = "otp" if who.basic is not None else ("mtls" if who.client_cert is not None else "none")
        return AuditEvent(event=op, outcome=outcome, reason=reason, label=rt.label.name, entity=entity,
                          client_addr=who.client_addr, auth=auth, ca_id=rt.ca.id, serial=serial)


def _record(rt: LabelRuntime, cert: x509.Certificate, entity: str, auth: str, pubkey: str,
            otp_id: int | None) -> CertRecord:
    der = cert.public_bytes(serialization.Encoding.DER)
    try:
        sans = _sans_text(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        sans = ""
    return CertRecord(
        ca_id=rt.ca.id, serial=_hex(cert.serial_number), subject=cert.subject.rfc4514_string(), sans=sans,
        not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc, label=rt.label.name,
        entity=entity, auth=auth, pubkey_sha256=pubkey, fingerprint_sha256=hashlib.sha256(der).hexdigest(),
        der=der, issued_at=utcnow(), otp_id=otp_id,
    )


def _sans_text(san: x509.SubjectAlternativeName | None) -> str:
    return ",".join(str(n.value) for n in san) if san else ""


def _hex(serial: int) -> str:
    return format(serial, "x")


def _has_eku(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> bool:
    try:
        return oid in cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False


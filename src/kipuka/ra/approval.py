"""Requests that wait (RFC 7030 §4.2.3): held for an RA officer, or held by a remote CA.

The server keeps all pending state; the client repeats the same request after
Retry-After, possibly on a new TLS connection. A retry is recognised by requester
and CSR public key, not by CSR bytes: a CSR linked to the TLS session changes
with every connection.
"""

from __future__ import annotations

import datetime as dt
from typing import Callable

from cryptography import x509

from kipuka import metrics
from kipuka.ca.base import IssuancePending, IssuanceRejected, IssueRequest
from kipuka.config import Config
from kipuka.errors import BadRequest, Conflict, Forbidden, InternalError, NotFound, Unauthenticated
from kipuka.ra import csr as csrcheck
from kipuka.ra.issuance import SERIAL_RETRIES, certificate_record, renewed, sans_text
from kipuka.ra.requester import Requester
from kipuka.ra.runtime import Enrolled, Held, LabelRuntime, requester_key
from kipuka.ra.trail import Trail, stored
from kipuka.store import AsyncStore, AuditEvent, CertRecord, SerialCollision
from kipuka.store.records import PendingRecord, utcnow
from kipuka.store.sql import Revoked

TemplateOf = Callable[[LabelRuntime, PendingRecord], IssueRequest]


class Approvals:
    def __init__(self, config: Config, store: AsyncStore, trail: Trail, runtime: Callable[[str], LabelRuntime],
                 template_of: TemplateOf) -> None:
        self.config = config
        self.store = store
        self.trail = trail
        self._runtime = runtime
        self._template_of = template_of  # the request a held record stands for, re-checked against policy

    async def hold(self, rt: LabelRuntime, op: str, who: Requester, entity: str, auth: str, csr_der: bytes,
                   csr: x509.CertificateSigningRequest | None, pubkey: str, *, otp_id: int | None = None,
                   credential: tuple[str, str] | None = None, subject: x509.Name | None = None,
                   san: x509.SubjectAlternativeName | None = None, requester: str | None = None
                   ) -> Enrolled | Held:
        """Answer a request that needs approval: first time, hold it; on a retry, say where it stands.

        Without a `csr` (a CRMF request of fullcmc), `subject`, `san` and `requester`
        say who asks for what.
        """
        requester = requester or requester_key(who, entity, auth)
        if csr is not None:
            subject, san = csr.subject, csrcheck.requested_san(csr)
        assert subject is not None
        resumed = await self.resume(rt, op, who, entity, requester, pubkey)
        if resumed is not None:
            return resumed
        return await self.create_pending(rt, op, who, entity, auth, requester, csr_der, pubkey, subject, san,
                                         otp_id=otp_id, credential=credential)

    async def resume(self, rt: LabelRuntime, op: str, who: Requester, entity: str, requester: str,
                     pubkey: str) -> Enrolled | Held | None:
        """Where an earlier copy of this request stands: None when there is none to resume."""
        now = utcnow()
        existing = await stored(self.store.find_pending(requester, pubkey))
        if existing is not None and existing.status == "pending" and existing.expires_at <= now:
            await stored(self.store.expire_pending(now))
            existing = await stored(self.store.find_pending(requester, pubkey))
        if existing is None:
            return None
        if existing.status == "pending":
            if existing.ca_ref:
                return await self._collect(rt, existing, who)
            return Held(existing.id, self.config.est.retry_after)
        if existing.status == "issued" and existing.serial:
            record = await stored(self.store.certificate_status(existing.ca_id, existing.serial))
            if record is not None:
                return Enrolled(x509.load_der_x509_certificate(record.der), redelivered=True)
        if existing.status == "rejected":
            by = "the CA" if (existing.decided_by or "").startswith("ca:") else "an RA officer"
            await self.trail.reject(rt, op, who, entity, Forbidden(
                f"request {existing.id} was rejected by {by}: {existing.reason}"))
        return None

    async def create_pending(self, rt: LabelRuntime, op: str, who: Requester, entity: str, auth: str,
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
            subject=subject.rfc4514_string(), sans=sans_text(san), status="pending", ca_ref=ca_ref,
            reason="", created_at=now, expires_at=now + dt.timedelta(seconds=self.config.est.pending_ttl))
        why = f"held by the CA as {ca_ref}" if ca_ref else "held for approval"
        request_id = await stored(self.store.create_pending(
            values, self.trail.event(rt, op + ".pending", "success", who, entity, why, auth=auth)))
        if request_id is None:
            await self.trail.reject(rt, op, who, entity, Unauthenticated("OTP already used or expired"))
        return Held(request_id, retry_after or self.config.est.retry_after)

    async def _collect(self, rt: LabelRuntime, pending: PendingRecord, who: Requester) -> Enrolled | Held:
        """Ask the remote CA about a request it holds; record the certificate once it is issued."""
        ca_ref = pending.ca_ref
        assert ca_ref is not None
        who_label = f"ca:{rt.ca.id}"
        req = self._template_of(rt, pending)
        try:
            issued = (await rt.ca.collect(ca_ref, req)).certificate  # type: ignore[attr-defined]
        except IssuancePending as exc:
            return Held(pending.id, exc.retry_after or self.config.est.retry_after)
        except IssuanceRejected as exc:
            reason = f"the CA refused request {pending.id}: {exc.reason}"
            audit = AuditEvent(event=pending.op, outcome="rejected", reason=reason, label=rt.label.name,
                               entity=pending.entity, client_addr=who.client_addr, auth=who_label, ca_id=rt.ca.id)
            await stored(self.store.reject_pending(pending.id, exc.reason[:500], who_label, utcnow(), audit))
            error = BadRequest(reason) if exc.status == 400 else Forbidden(reason)
            error.audited = True  # type: ignore[attr-defined]
            raise error from None
        record = certificate_record(rt, issued, pending.entity, pending.auth, pending.pubkey_sha256, pending.otp_id,
                                    replaces=_renews(pending), requested=req)
        audit = AuditEvent(event=pending.op, outcome="success", reason=f"request {pending.id} issued by the CA "
                           f"({ca_ref})", label=rt.label.name, entity=pending.entity, client_addr=who.client_addr,
                           auth=pending.auth, ca_id=rt.ca.id, serial=record.serial)
        try:
            done = await stored(self.store.approve_pending(pending.id, record, audit, who_label, utcnow()))
        except SerialCollision:  # a concurrent retry recorded this same certificate first
            done = False
        except Revoked:
            await self.trail.reject(rt, pending.op, who, pending.entity, Unauthenticated(
                "client certificate has been revoked"))
        if not done:
            again = await stored(self.store.pending(pending.id))
            if again is not None and again.status == "issued" and again.serial:
                found = await stored(self.store.certificate_status(again.ca_id, again.serial))
                if found is not None:
                    return Enrolled(x509.load_der_x509_certificate(found.der), redelivered=True)
            raise Conflict(f"request {pending.id} is {again.status if again else 'gone'}, not pending")
        metrics.ISSUED.labels(rt.label.name, rt.ca.id).inc()
        return Enrolled(issued)

    # --- the officer's side ---------------------------------------------------------

    async def approve(self, request_id: int, officer: str) -> CertRecord | str:
        """Issue a held request; the requester's next retry receives the certificate.

        With a remote CA that holds the request in turn (a Dogtag agent queue), the
        answer is the CA's request id instead: the requester's retry collects it.
        """
        pending = await stored(self.store.pending(request_id))
        if pending is None:
            raise NotFound(f"no request {request_id}")
        if pending.status != "pending":
            raise Conflict(f"request {request_id} is {pending.status}, not pending")
        if pending.ca_ref:
            raise Conflict(f"request {request_id} was approved here and is held by the CA as {pending.ca_ref}")
        rt = self._runtime(pending.label)
        req = self._template_of(rt, pending)
        for _ in range(SERIAL_RETRIES):
            try:
                issued = (await rt.ca.issue(req)).certificate
            except IssuancePending as exc:
                audit = AuditEvent(event=pending.op, outcome="success", label=rt.label.name, entity=pending.entity,
                                   client_addr=pending.client_addr, auth=officer, ca_id=rt.ca.id,
                                   reason=f"request {request_id} approved; held by the CA as {exc.ref}")
                if not await stored(self.store.set_ca_ref(request_id, exc.ref, audit)):
                    raise Conflict(f"request {request_id} is no longer pending") from None
                return exc.ref
            except IssuanceRejected as exc:
                raise Conflict(f"the CA refused request {request_id}: {exc.reason}; reject it") from None
            record = certificate_record(rt, issued, pending.entity, pending.auth, pending.pubkey_sha256,
                                        pending.otp_id, replaces=_renews(pending), requested=req)
            audit = AuditEvent(event=pending.op, outcome="success", reason=f"request {request_id} approved",
                               label=rt.label.name, entity=pending.entity, client_addr=pending.client_addr,
                               auth=officer, ca_id=rt.ca.id, serial=record.serial)
            try:
                done = await stored(self.store.approve_pending(request_id, record, audit, officer, utcnow()))
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
        pending = await stored(self.store.pending(request_id))
        if pending is None:
            raise NotFound(f"no request {request_id}")
        reason = reason.strip()[:500] or "no reason given"
        audit = AuditEvent(event=pending.op, outcome="rejected", reason=f"request {request_id}: {reason}",
                           label=pending.label, entity=pending.entity, client_addr=pending.client_addr,
                           auth=officer, ca_id=pending.ca_id)
        if not await stored(self.store.reject_pending(request_id, reason, officer, utcnow(), audit)):
            raise Conflict(f"request {request_id} is {pending.status}, not pending")


def _renews(pending: PendingRecord) -> tuple[str, str] | None:
    return renewed(pending.op, pending.auth, pending.credential_ca, pending.credential_serial)

"""The operations a PKIData's body parts ask for (enroll, revoke, queryPending, confirm), each answered as a Part."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.x509.oid import NameOID

from kipuka.ca.revocation import RFC5280_REASON_NAMES
from kipuka.cmc import CertId, CMCFailInfo, CmcError, CMCStatus, OtherRequest, RevokeRequest
from kipuka.cmc.model import PKIData
from kipuka.errors import Forbidden, InternalError, KipukaError
from kipuka.ra import cmc_requests
from kipuka.ra.cmc_answers import CmcAnswers
from kipuka.ra.cmc_outcome import OP, Part, Principal, Refusal
from kipuka.ra.cmc_requests import Candidate
from kipuka.ra.requester import Requester
from kipuka.ra.runtime import Authorized, Held
from kipuka.ra.trail import stored
from kipuka.store import StoreUnavailable
from kipuka.store.records import AuditEvent, utcnow

if TYPE_CHECKING:
    from kipuka.ra.authority import Authority
    from kipuka.ra.runtime import LabelRuntime

_REASON_NAMES = {flag: name for name, flag in RFC5280_REASON_NAMES.items()}


class BodyPartHandlers:
    """One handler per kind of body part; a failure is audited and answered for that body part only."""

    def __init__(self, authority: "Authority", answers: CmcAnswers) -> None:
        self.authority = authority
        self.answers = answers

    async def enroll(self, rt: "LabelRuntime", who: Requester, pki: PKIData, principal: Principal,
                     request) -> Part:  # type: ignore[no-untyped-def]
        bpid = request.body_part_id
        try:
            if isinstance(request, OtherRequest):
                raise Refusal(None, [bpid], f"orm requests ({request.message_type}) are not supported",
                              status=CMCStatus.noSupport)
            cand = cmc_requests.candidate(request, rt.label.policy, ra_vouches=principal.kind == "ra",
                                          signed_with_this_key=principal.request_bpid == bpid,
                                          binding_of=lambda: who.channel_binding)
            entity, credential = await self._authorize_names(rt, who, pki, principal, cand)
            return await self._issue_or_hold(rt, who, principal, cand, entity, credential)
        except (CmcError, KipukaError) as exc:
            return await self.answers.failed(rt, who, principal, bpid, exc)

    async def _authorize_names(self, rt: "LabelRuntime", who: Requester, pki: PKIData, principal: Principal,
                               cand: Candidate) -> tuple[str, tuple[str, str] | None]:
        a = self.authority
        from kipuka.ra import csr as csrcheck, name_policy

        ids = [cand.body_part_id]
        if principal.kind == "ra":
            return (pki.identification() or _name_of(cand.subject, cand.san))[:255], principal.credential
        if principal.kind == "holder":
            cert = principal.cert
            assert cert is not None
            if not csrcheck.same_names(cert, cand.subject, cand.san):
                change = pki.change_subject_name()
                if not (rt.label.policy.allow_subject_change and change is not None
                        and change.subject_der == cert.subject.public_bytes()):
                    raise Refusal(CMCFailInfo.badRequest, ids, "a certificate issued by this label's CA may only "
                                  "request its own names again (or, where the policy allows it, others with a "
                                  "changeSubjectName control naming its current subject)", Forbidden)
            return principal.entity, principal.credential
        if principal.kind == "otp":
            rule = rt.label.policy.otp_name_rule
            await a.trail.guard(rt, OP, who, principal.entity,
                           lambda: name_policy.check_names_for_entity(cand.subject, cand.san, principal.entity, rule))
            return principal.entity, None
        assert principal.cert is not None
        credential = await a.mtls_credential(rt, OP, who, principal.entity, principal.cert, cand.subject, cand.san)
        return principal.entity, credential

    async def _issue_or_hold(self, rt: "LabelRuntime", who: Requester, principal: Principal, cand: Candidate,
                             entity: str, credential: tuple[str, str] | None) -> Part:
        a = self.authority
        policy = rt.label.policy
        approval = policy.reenroll_requires_approval if principal.kind == "holder" else policy.require_approval
        otp = principal.otp
        if approval:
            result = await a.approvals.hold(rt, OP, who, entity, principal.auth, cand.der, None, cand.pubkey_sha256,
                                   otp_id=otp.id if otp else None, credential=credential, subject=cand.subject,
                                   san=cand.san, requester=principal.requester)
        else:
            result = None
            if otp is not None:
                result = await a.check_otp_usable(Authorized(rt, OP, entity, principal.auth, None, cand.san,  # type: ignore[arg-type]
                                                             cand.pubkey_sha256, otp=otp), who, redeliver=True,
                                                    subject=cand.subject)
            if result is None:
                result = await a.issuance.issue(rt, OP, who, entity, principal.auth, None, cand.san, otp=otp,
                                        pubkey=cand.pubkey_sha256, credential=credential,
                                        template=a.template_for(rt, cand.subject, cand.public_key, cand.san))
        if isinstance(result, Held):
            return Part(cand.body_part_id, CMCStatus.pending, f"waiting for approval (request {result.request_id})",
                        pend_token=cmc_requests.pend_token(result.request_id),
                        pend_time=utcnow() + dt.timedelta(seconds=result.retry_after))
        return Part(cand.body_part_id, CMCStatus.success, "issued again (an earlier answer was lost)"
                    if result.redelivered else "issued", certificate=result.certificate)

    async def revoke(self, rt: "LabelRuntime", who: Requester, principal: Principal, rr: RevokeRequest) -> Part:
        a = self.authority
        bpid = rr.body_part_id
        ids = [bpid]
        try:
            if principal.kind not in ("ra", "holder"):
                raise Refusal(CMCFailInfo.badRequest, ids, "only an RA agent, or a certificate's holder signing "
                              "with it, may revoke", Forbidden)
            if rr.issuer_der != rt.ca.ca_certificates()[0].subject.public_bytes():
                raise Refusal(CMCFailInfo.badCertId, ids, "the certificate to revoke was not issued by this "
                              "label's CA")
            if principal.kind == "holder" and principal.cert is not None \
                    and principal.cert.serial_number != rr.serial_number:
                raise Refusal(CMCFailInfo.badRequest, ids, "a certificate holder may revoke only the certificate "
                              "it signs with", Forbidden)
            serial = format(rr.serial_number, "x")
            record = await stored(a.store.certificate_status(rt.ca.id, serial))
            if record is None or (principal.kind == "ra" and record.label != rt.label.name):
                raise Refusal(CMCFailInfo.badCertId, ids, f"no certificate with serial {serial} was issued "
                              f"through this label")
            if record.revoked_at is not None:
                return Part(bpid, CMCStatus.success, f"already revoked ({record.revocation_reason})")
            flag = rr.reason_flag
            reason = _REASON_NAMES.get(flag) if flag is not None else None
            if reason is None or reason == "removeFromCRL":
                raise Refusal(CMCFailInfo.badRequest, ids, f"CRLReason {rr.reason} cannot be used to revoke")
            try:
                await a.revocation.revoke(serial, reason, principal.auth, rt.ca.id)
            except StoreUnavailable as exc:
                raise InternalError(f"database error: {exc}") from None
            await stored(a.store.add_audit(AuditEvent(
                event=OP + ".revoke", outcome="success", reason=f"serial {serial} revoked ({reason})",
                label=rt.label.name, entity=principal.entity, client_addr=who.client_addr, auth=principal.auth,
                ca_id=rt.ca.id, serial=serial)))
            return Part(bpid, CMCStatus.success, f"revoked ({reason})")
        except (CmcError, KipukaError) as exc:
            return await self.answers.failed(rt, who, principal, bpid, exc)

    async def query(self, rt: "LabelRuntime", who: Requester, principal: Principal, token: bytes,
                    bpid: int) -> Part:
        a = self.authority
        ids = [bpid]
        try:
            request_id = cmc_requests.pending_id(token)
            pending = await stored(a.store.pending(request_id)) if request_id is not None else None
            if pending is None or pending.label != rt.label.name:
                raise Refusal(CMCFailInfo.badRequest, ids, "no pending request of this label has this pendToken")
            if principal.kind != "ra" and pending.requester != principal.requester:
                raise Refusal(CMCFailInfo.badRequest, ids, "this pending request belongs to another requester",
                              Forbidden)
            now = utcnow()
            if pending.status == "pending" and pending.expires_at <= now:
                await stored(a.store.expire_pending(now))
                pending = await stored(a.store.pending(pending.id))
                assert pending is not None
            if pending.status == "pending":
                return Part(bpid, CMCStatus.pending, f"still waiting for approval (request {pending.id})",
                            pend_token=token, pend_time=now + dt.timedelta(seconds=a.config.est.retry_after))
            if pending.status == "issued" and pending.serial:
                record = await stored(a.store.certificate_status(pending.ca_id, pending.serial))
                if record is not None:
                    return Part(bpid, CMCStatus.success, "issued",
                                certificate=x509.load_der_x509_certificate(record.der))
            if pending.status == "rejected":
                raise Refusal(CMCFailInfo.badRequest, ids, f"request {pending.id} was rejected by an RA officer: "
                              f"{pending.reason}", Forbidden)
            raise Refusal(CMCFailInfo.badRequest, ids, f"request {pending.id} is {pending.status}")
        except (CmcError, KipukaError) as exc:
            return await self.answers.failed(rt, who, principal, bpid, exc)

    async def confirm(self, rt: "LabelRuntime", who: Requester, principal: Principal, cert_id: CertId) -> Part:
        a = self.authority
        ids = [cert_id.body_part_id]
        try:
            serial = format(cert_id.serial_number, "x")
            record = None
            if cert_id.issuer_der == rt.ca.ca_certificates()[0].subject.public_bytes():
                record = await stored(a.store.certificate_status(rt.ca.id, serial))
            if record is None:
                raise Refusal(CMCFailInfo.badCertId, ids, f"this label's CA issued no certificate with serial "
                              f"{serial}")
            return Part(cert_id.body_part_id, CMCStatus.success, "acceptance noted")
        except (CmcError, KipukaError) as exc:
            return await self.answers.failed(rt, who, principal, cert_id.body_part_id, exc)


def _name_of(subject: x509.Name, san: x509.SubjectAlternativeName | None) -> str:
    cns = subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if cns:
        return str(cns[0].value)
    if san is not None:
        for name in san:
            return str(name.value)
    return subject.rfc4514_string()

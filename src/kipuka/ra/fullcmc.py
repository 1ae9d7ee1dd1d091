"""Full CMC (RFC 5272/6402 over RFC 7030 4.3): authorization and processing of PKIData.

Every request that reaches this module gets a Full PKI Response, failures
included (RFC 7030 §4.3.2); `CmcAnswer.failure` says which kind of refusal it
was (a kipuka error class) so the front end can pick the HTTP status.

Who may do what (one SignerInfo per PKIData):

* RA agent: the signer certificate carries id-kp-cmcRA and is issued directly by
  one of the label's `ra_anchors`. It may request certificates for any names the
  policy allows (a CRMF `raVerified` POP stands on its word), revoke any
  certificate issued through the label, query any of the label's pending
  requests, and batch other PKIData (id-cmc-batchRequests), which it vouches for.
* Holder: the signer certificate was issued by the label's CA (unexpired,
  unrevoked). Like simplereenroll, it may request its own names again (another
  name only with `allow_subject_change` and a changeSubjectName control naming its
  current subject), honouring `reenroll_requires_approval`, and it may revoke the
  certificate it signs with. A TLS client certificate, if any, is not required.
* Self-signed: the PKIData is signed with the key of its one request (tcr or
  crm; proof of possession). It needs a second credential, checked exactly as
  simpleenroll checks it: an OTP as HTTP Basic credentials, or a TLS client
  certificate. identityProofV2 (or v1) is verified with the OTP of the Basic
  credentials as the shared secret (kipuka keeps only keyed hashes of OTPs, so a
  proof cannot be checked without it); an identification control must name the
  Basic entity. The OTP is spent with the certificate, in one transaction.

Replays: a senderNonce, and the transactionId of a message that starts a
transaction (requests, revocations, batches), may be used once per signer key
(table cmc_replay). A repeat fails the whole request with badRequest. Messages
that only continue a transaction (queryPending, confirmCertAcceptance) may
repeat the transactionId, as RFC 5272 §6.6 expects; their nonce must be fresh.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from kipuka.ca.base import CmcForwarder, IssueRequest, forwards_requests
from kipuka.ca.revocation import RFC5280_REASON_NAMES
from kipuka.cmc import (DEFAULT_MAX_SIZE, CertId, CMCFailInfo, CmcError, CMCStatus, CmsSigner, OtherRequest,
                        RevokeRequest, SignedPKIData, TaggedContent, echo_controls, has_cmc_ra_eku,
                        parse_cmc_request, status_info_v2)
from kipuka.cmc import BodyPartIds, batch_responses_control, cms, encode_pki_response, oids
from kipuka.cmc.model import ControlReader, PKIData
from kipuka.errors import (BadRequest, Conflict, Disabled, Forbidden, InternalError, KipukaError, NotFound,
                           Unauthenticated, Unavailable)
from kipuka.ra import cmc_requests
from kipuka.ra.cmc_requests import Candidate
from kipuka.ra.cmc_signer import ca_signer, configured_signer, sign_response
from kipuka.ra.requester import Requester
from kipuka.ra.runtime import Authorized, Held
from kipuka.ra.trail import stored
from kipuka.store import OtpRecord, StoreUnavailable
from kipuka.store.records import AuditEvent, utcnow

if TYPE_CHECKING:
    from kipuka.ra.authority import Authority
    from kipuka.ra.runtime import LabelRuntime

log = logging.getLogger("kipuka.ra.fullcmc")

OP = "fullcmc"

# Controls acted on, or harmless to accept. Any other control RFC 5272 / 6402
# defines fails the whole request with noSupport; an unknown one with badRequest.
SUPPORTED_CONTROLS = frozenset({
    oids.ID_CMC_TRANSACTION_ID, oids.ID_CMC_SENDER_NONCE, oids.ID_CMC_RECIPIENT_NONCE, oids.ID_CMC_IDENTIFICATION,
    oids.ID_CMC_IDENTITY_PROOF, oids.ID_CMC_IDENTITY_PROOF_V2, oids.ID_CMC_DATA_RETURN, oids.ID_CMC_REVOKE_REQUEST,
    oids.ID_CMC_REG_INFO, oids.ID_CMC_QUERY_PENDING, oids.ID_CMC_CONFIRM_CERT_ACCEPTANCE,
    oids.ID_CMC_BATCH_REQUESTS, oids.ID_CMC_CHANGE_SUBJECT_NAME,
})
_REASON_NAMES = {flag: name for name, flag in RFC5280_REASON_NAMES.items()}


@dataclass(frozen=True)
class CmcAnswer:
    """A signed Full PKI Response; `failure` is the kind of refusal (None: the request was served)."""

    der: bytes
    failure: type[Exception] | None = None
    retry_after: int | None = None


class Refusal(CmcError):
    """A CmcError with the kind of refusal it is (a kipuka error class), and the CMCStatus to answer."""

    def __init__(self, fail_info: CMCFailInfo | None, body_part_ids, reason: str,  # type: ignore[no-untyped-def]
                 kind: type[KipukaError] = BadRequest, status: CMCStatus = CMCStatus.failed) -> None:
        super().__init__(fail_info if fail_info is not None else CMCFailInfo.badRequest, body_part_ids, reason)
        self.kind = kind
        self.status = status
        self.report_fail_info = fail_info


@dataclass(frozen=True)
class Principal:
    """Who signed a PKIData, as far as authorization goes."""

    kind: str                  # "ra" | "holder" | "otp" | "mtls"
    auth: str                  # recorded with certificates and audit rows: "cmc-ra", "cmc-cert", ...
    entity: str
    requester: str             # pending_requests.requester
    signer_key: bytes          # SPKI of the message signer: the scope of replay detection
    cert: x509.Certificate | None = None
    otp: OtpRecord | None = None
    credential: tuple[str, str] | None = None   # (ca_id, serial) that must stay unrevoked until issuance
    request_bpid: int | None = None             # self-signed: the request whose key signed


@dataclass
class Part:
    """The outcome for one body part: a statusInfoV2 of the response."""

    ref: int
    status: CMCStatus
    reason: str = ""
    fail_info: CMCFailInfo | None = None
    kind: type[Exception] | None = None
    pend_token: bytes | None = None
    pend_time: dt.datetime | None = None
    certificate: x509.Certificate | None = None


@dataclass
class Outcome:
    parts: list[Part] = field(default_factory=list)
    nested: list[bytes] = field(default_factory=list)          # signed PKIResponses answering a batch
    certificates: list[x509.Certificate] = field(default_factory=list)


class FullCmc:
    def __init__(self, authority: "Authority") -> None:
        self.authority = authority
        config = authority.config
        self._configured = configured_signer(config.est)
        self._signers: dict[str, CmsSigner] = {}
        for label in config.labels.values():
            if config.est.fullcmc or label.policy.fullcmc:
                ca = authority.cas[label.ca]
                if isinstance(ca, CmcForwarder):
                    continue  # the CA answers CMC itself
                if forwards_requests(ca):
                    where = f"labels.{label.name}" if label.name else "policy"
                    raise ValueError(f"{where}: fullcmc needs a CA that takes CMC requests; CA {label.ca!r} "
                                     "only forwards PKCS#10 enrollments")
                self._signer(label.ca)  # a label that cannot sign its responses is a configuration error

    # --- entry points (the front end calls these) --------------------------------------

    def check_enabled(self, label: str) -> None:
        rt = self.authority.runtime(label)
        if not self.enabled(rt):
            where = f"label {label!r}" if label else "the unlabeled path"
            raise Disabled(f"fullcmc is not enabled on {where} (set fullcmc = true)")

    def enabled(self, rt: "LabelRuntime") -> bool:
        return self.authority.config.est.fullcmc or rt.label.policy.fullcmc

    async def refuse(self, label: str, who: Requester, exc: KipukaError) -> CmcAnswer:
        """Answer a request the front end could not decode (media type, base64, size) with a CMC failure."""
        rt = self.authority.runtime(label)
        fail = CMCFailInfo.badIdentity if isinstance(exc, Unauthenticated) else CMCFailInfo.badRequest
        return await self._refused(rt, who, None, Refusal(fail, (), exc.reason, type(exc)), _entity_of(who))

    async def fullcmc(self, label: str, request_der: bytes, who: Requester) -> CmcAnswer:
        rt = self.authority.runtime(label)
        if not self.enabled(rt):
            self.check_enabled(label)
        if isinstance(rt.ca, CmcForwarder):
            return await self._forward(rt, request_der, who)
        try:
            return await self._fullcmc(rt, request_der, who)
        except Exception:  # a bug must still be answered with a CMC response (RFC 7030 §4.3.2)
            log.exception("unhandled error in fullcmc")
            return await self._refused(rt, who, None, Refusal(CMCFailInfo.internalCAError, (), "internal error",
                                                              InternalError), _entity_of(who))

    async def _forward(self, rt: "LabelRuntime", request_der: bytes, who: Requester) -> CmcAnswer:
        """Hand the whole Full PKI Request to a CA that takes CMC (Dogtag's CMC profiles): it
        authenticates the request and signs the response; kipuka audits and relays. A CA that
        cannot be reached is a plain-text error, as kipuka has no key to sign a CMC failure."""
        entity = _entity_of(who)
        try:
            der = await rt.ca.submit_cmc(request_der, rt.label.name)  # type: ignore[attr-defined]
        except KipukaError as exc:
            await self._audit_refusal(rt, who, entity, f"CA {rt.ca.id}: {exc.reason}", exc)
            exc.audited = True  # type: ignore[attr-defined]
            raise
        await self.authority.store.add_audit(self.authority.trail.event(
            rt, OP + ".forward", "success", who, entity, f"forwarded to CA {rt.ca.id}"))
        return CmcAnswer(der)

    def approved_template(self, rt: "LabelRuntime", request_der: bytes) -> IssueRequest:
        """The certificate template of a fullcmc request an officer approved (PKCS#10 or CRMF)."""
        cand = cmc_requests.stored_candidate(request_der, rt.label.policy)
        return self.authority.template_for(rt, cand.subject, cand.public_key, cand.san)

    # --- one request ------------------------------------------------------------------

    async def _fullcmc(self, rt: "LabelRuntime", request_der: bytes, who: Requester) -> CmcAnswer:
        max_size = min(self.authority.config.server.max_body, DEFAULT_MAX_SIZE)
        try:
            spd = parse_cmc_request(request_der, max_size=max_size)
        except CmcError as exc:
            return await self._refused(rt, who, None, exc, _entity_of(who))
        pki = spd.pki_data
        principal: Principal | None = None
        try:
            _check_structure(pki)
            principal = await self._principal(rt, who, spd)
            await self._check_replay(pki, principal)
            outcome = await self._operations(rt, who, spd, principal, pki)
        except (CmcError, KipukaError) as exc:
            return await self._refused(rt, who, pki, exc, principal.entity if principal else _signer_name(spd, who))
        der = self._response(rt, pki, outcome)
        served = [p for p in outcome.parts if p.status in (CMCStatus.success, CMCStatus.pending, CMCStatus.partial)]
        if served:
            return CmcAnswer(der)
        first = outcome.parts[0]
        return CmcAnswer(der, first.kind or BadRequest, self._retry_after(first.kind))

    async def _principal(self, rt: "LabelRuntime", who: Requester, spd: SignedPKIData) -> Principal:
        a = self.authority
        if len(spd.signers) != 1:
            raise Refusal(CMCFailInfo.badRequest, (), "kipuka accepts a PKIData with exactly one SignerInfo")
        signer = spd.signers[0]
        spki = cms.spki_der(signer.public_key)
        if signer.request_body_part_id is not None:
            return await self._self_signed(rt, who, spd.pki_data, signer.request_body_part_id, spki)
        cert = signer.certificate
        assert cert is not None
        entity = cert.subject.rfc4514_string()[:255]
        now = utcnow()
        if cert.not_valid_after_utc < now or cert.not_valid_before_utc > now:
            raise Refusal(CMCFailInfo.badIdentity, (), "the signer certificate has expired" if
                          cert.not_valid_after_utc < now else "the signer certificate is not yet valid", Unauthenticated)
        requester = "cert:" + hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
        if has_cmc_ra_eku(cert) and a.issued_by_any(cert, rt.ra_anchors):
            issuer = a.kipuka_issuer(cert)
            credential = (issuer.id, format(cert.serial_number, "x")) if issuer is not None else None
            if credential and await stored(a.store.is_revoked(*credential)):
                raise Refusal(CMCFailInfo.badIdentity, (), "the RA certificate has been revoked", Unauthenticated)
            return Principal("ra", "cmc-ra", entity, requester, spki, cert, credential=credential)
        if rt.ca.is_issuer_of(cert):
            credential = (rt.ca.id, format(cert.serial_number, "x"))
            if await stored(a.store.is_revoked(*credential)):
                raise Refusal(CMCFailInfo.badIdentity, (), "the signer certificate has been revoked", Unauthenticated)
            return Principal("holder", "cmc-cert", entity, requester, spki, cert, credential=credential)
        raise Refusal(CMCFailInfo.badIdentity, (), "the signer certificate is neither an RA certificate of this "
                      "label (id-kp-cmcRA, issued by one of its ra_anchors) nor issued by this label's CA",
                      Unauthenticated)

    async def _self_signed(self, rt: "LabelRuntime", who: Requester, pki: PKIData, bpid: int,
                           spki: bytes) -> Principal:
        a = self.authority
        if len(pki.requests) != 1 or pki.requests[0].body_part_id != bpid:
            raise Refusal(CMCFailInfo.badRequest, [r.body_part_id for r in pki.requests],
                          "a PKIData signed with a request's own key may carry only that one request")
        others = [c.body_part_id for c in pki.controls
                  if c.attr_type in (oids.ID_CMC_REVOKE_REQUEST, oids.ID_CMC_BATCH_REQUESTS)]
        if others:
            raise Refusal(CMCFailInfo.badRequest, others, "revocations and batches need an RA or holder "
                          "certificate signature, not a request key's", Forbidden)
        if who.basic is not None:
            otp = await a.authenticate_otp(rt, OP, who)
            entity = who.basic.entity
            ident = pki.identification()
            if ident is not None and ident != entity:
                ids = [c.body_part_id for c in pki.controls_of(oids.ID_CMC_IDENTIFICATION)]
                raise Refusal(CMCFailInfo.badIdentity, ids, "the identification control names another entity "
                              "than the HTTP Basic credentials", Unauthenticated)
            if pki.has_identity_proof():
                try:
                    pki.verify_identity_proof(who.basic.secret)
                except CmcError as exc:
                    raise Refusal(exc.fail_info, exc.body_part_ids, exc.reason,
                                  Unauthenticated if exc.fail_info == CMCFailInfo.badIdentity else BadRequest
                                  ) from None
            return Principal("otp", "cmc-otp", entity, f"otp:{entity}", spki, otp=otp, request_bpid=bpid)
        if pki.has_identity_proof():
            raise Refusal(CMCFailInfo.badIdentity, [], "an identity proof is checked against the OTP sent as "
                          "HTTP Basic credentials (entity-id:otp), which this request lacks", Unauthenticated)
        cert = who.client_cert
        if cert is None:
            raise Refusal(CMCFailInfo.badIdentity, [], "a PKIData signed with its own request key needs a second "
                          "credential: an OTP as HTTP Basic credentials, or a TLS client certificate",
                          Unauthenticated)
        entity = cert.subject.rfc4514_string()[:255]
        await a.check_dates(rt, OP, who, entity, cert)
        requester = "cert:" + hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
        return Principal("mtls", "cmc-mtls", entity, requester, spki, cert=cert, request_bpid=bpid)

    async def _check_replay(self, pki: PKIData, principal: Principal) -> None:
        a = self.authority
        scope = hashlib.sha256(principal.signer_key).digest()
        entries = []
        nonce = pki.sender_nonce()
        if nonce is not None:
            entries.append(("nonce", hashlib.sha256(scope + b"nonce:" + nonce).hexdigest()))
        txid = pki.transaction_id()
        starts = bool(pki.requests or pki.revoke_requests() or pki.batch_requests())
        if txid is not None and starts:
            entries.append(("transaction", hashlib.sha256(scope + b"transaction:" + str(txid).encode()).hexdigest()))
        seen = await stored(a.store.remember_cmc(entries, utcnow()))
        if seen == "nonce":
            raise Refusal(CMCFailInfo.badRequest, _ids(pki, oids.ID_CMC_SENDER_NONCE),
                          "replayed message: this senderNonce was used before")
        if seen == "transaction":
            raise Refusal(CMCFailInfo.badRequest, _ids(pki, oids.ID_CMC_TRANSACTION_ID),
                          "replayed message: this transactionId was used before by this signer")

    async def _operations(self, rt: "LabelRuntime", who: Requester, spd: SignedPKIData, principal: Principal,
                          pki: PKIData) -> Outcome:
        batch = pki.batch_contents()
        if batch and principal.kind != "ra":
            raise Refusal(CMCFailInfo.badRequest, _ids(pki, oids.ID_CMC_BATCH_REQUESTS),
                          "only an RA agent may send batchRequests", Forbidden)
        out = Outcome()
        for request in pki.requests:
            out.parts.append(await self._enroll(rt, who, pki, principal, request))
        for rr in pki.revoke_requests():
            out.parts.append(await self._revoke(rt, who, principal, rr))
        token = pki.query_pending()
        if token is not None:
            out.parts.append(await self._query(rt, who, principal, token, _ids(pki, oids.ID_CMC_QUERY_PENDING)[0]))
        for cert_id in pki.confirm_cert_acceptance():
            out.parts.append(await self._confirm(rt, who, principal, cert_id))
        for item in batch:
            part, nested, certs = await self._batch_item(rt, who, principal, item)
            out.parts.append(part)
            if nested is not None:
                out.nested.append(nested)
            out.certificates += certs
        return out

    # --- operations -------------------------------------------------------------------

    async def _enroll(self, rt: "LabelRuntime", who: Requester, pki: PKIData, principal: Principal,
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
            return await self._failed(rt, who, principal, bpid, exc)

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

    async def _revoke(self, rt: "LabelRuntime", who: Requester, principal: Principal, rr: RevokeRequest) -> Part:
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
            return await self._failed(rt, who, principal, bpid, exc)

    async def _query(self, rt: "LabelRuntime", who: Requester, principal: Principal, token: bytes,
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
            return await self._failed(rt, who, principal, bpid, exc)

    async def _confirm(self, rt: "LabelRuntime", who: Requester, principal: Principal, cert_id: CertId) -> Part:
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
            return await self._failed(rt, who, principal, cert_id.body_part_id, exc)

    async def _batch_item(self, rt: "LabelRuntime", who: Requester, ra: Principal, item: TaggedContent
                          ) -> tuple[Part, bytes | None, list[x509.Certificate]]:
        """One nested PKIData an RA batched: processed with the RA's authority, answered by a nested response."""
        bpid = item.body_part_id
        if item.nested is None:
            exc = item.error or Refusal(CMCFailInfo.badRequest, [bpid], "the batched content is not a Full PKI "
                                                                         "Request (SignedData over PKIData)")
            return await self._failed(rt, who, ra, bpid, exc), None, []
        nested = item.nested
        pki = nested.pki_data
        try:
            _check_structure(pki)
            if len(nested.signers) != 1:
                raise Refusal(CMCFailInfo.badRequest, (), "kipuka accepts a PKIData with exactly one SignerInfo")
            principal = dataclasses.replace(ra, signer_key=cms.spki_der(nested.signers[0].public_key),
                                            request_bpid=nested.signers[0].request_body_part_id)
            await self._check_replay(pki, principal)
            outcome = await self._operations(rt, who, nested, principal, pki)
        except (CmcError, KipukaError) as exc:
            fail_info, kind, status = _classify(exc)
            await self._audit_refusal(rt, who, ra.entity, f"batched body part {bpid}: {_describe(exc, fail_info)}",
                                      exc)
            response = self._failure_response(rt, pki, exc)
            return Part(bpid, status, f"batched request refused: {getattr(exc, 'reason', exc)}",
                        fail_info if status == CMCStatus.failed else None, kind), response, []
        certs = [p.certificate for p in outcome.parts if p.certificate is not None] + outcome.certificates
        statuses = {p.status for p in outcome.parts}
        if len(statuses) == 1:
            status = statuses.pop()
        else:
            status = CMCStatus.partial
        first_failure = next((p for p in outcome.parts if p.status not in (CMCStatus.success, CMCStatus.pending)),
                             None)
        part = Part(bpid, status, "see the nested response",
                    fail_info=first_failure.fail_info if status == CMCStatus.failed and first_failure else None,
                    kind=first_failure.kind if first_failure else None)
        return part, self._response(rt, pki, outcome), certs

    # --- failures ---------------------------------------------------------------------

    async def _failed(self, rt: "LabelRuntime", who: Requester, principal: Principal, bpid: int,
                      exc: Exception) -> Part:
        fail_info, kind, status = _classify(exc)
        await self._audit_refusal(rt, who, principal.entity, f"body part {bpid}: {_describe(exc, fail_info)}", exc)
        return Part(bpid, status, getattr(exc, "reason", str(exc)), fail_info if status == CMCStatus.failed else None,
                    kind)

    async def _refused(self, rt: "LabelRuntime", who: Requester, pki: PKIData | None, exc: Exception,
                       entity: str) -> CmcAnswer:
        fail_info, kind, _status = _classify(exc)
        await self._audit_refusal(rt, who, entity, _describe(exc, fail_info), exc)
        return CmcAnswer(self._failure_response(rt, pki, exc), kind, self._retry_after(kind, exc))

    async def _audit_refusal(self, rt: "LabelRuntime", who: Requester, entity: str, reason: str,
                             exc: Exception) -> None:
        if getattr(exc, "audited", False):
            return  # the Authority step that refused it wrote the audit row
        await self.authority.trail.rejection(rt.label.name, rt.ca.id, OP, who, entity, reason[:500])

    def _retry_after(self, kind: type[Exception] | None, exc: Exception | None = None) -> int | None:
        if kind is Unavailable:
            return getattr(exc, "retry_after", None) or self.authority.config.est.retry_after
        return None

    # --- responses --------------------------------------------------------------------

    def _signer(self, ca_id: str) -> CmsSigner:
        if self._configured is not None:
            return self._configured
        if ca_id not in self._signers:
            self._signers[ca_id] = ca_signer(self.authority.cas[ca_id])
        return self._signers[ca_id]

    def _response(self, rt: "LabelRuntime", pki: PKIData, outcome: Outcome) -> bytes:
        ids = BodyPartIds()
        controls = [status_info_v2(ids.next(), p.status, [p.ref], status_string=p.reason or None,
                                   fail_info=p.fail_info, pend_token=p.pend_token, pend_time=p.pend_time)
                    for p in outcome.parts]
        contents = [(ids.next(), nested) for nested in outcome.nested]
        if contents:
            controls.append(batch_responses_control(ids.next(), [b for b, _ in contents]))
        controls += echo_controls(pki, ids)
        certs = [p.certificate for p in outcome.parts if p.certificate is not None] + outcome.certificates
        return sign_response(self._signer(rt.ca.id), encode_pki_response(controls, contents), certs)

    def _failure_response(self, rt: "LabelRuntime", pki: ControlReader | None, exc: Exception) -> bytes:
        fail_info, _kind, status = _classify(exc)
        ids = BodyPartIds()
        body = list(getattr(exc, "body_part_ids", ()) or ()) or [0]
        controls = [status_info_v2(ids.next(), status, body, status_string=getattr(exc, "reason", str(exc)) or None,
                                   fail_info=fail_info if status == CMCStatus.failed else None)]
        controls += echo_controls(pki, ids)
        return sign_response(self._signer(rt.ca.id), encode_pki_response(controls), [])


# --- helpers ------------------------------------------------------------------------------

def _check_structure(pki: PKIData) -> None:
    """What fails a whole PKIData before anyone is authorized: unknown or unsupported parts."""
    unknown = pki.unrecognised_controls()
    if unknown:
        raise Refusal(CMCFailInfo.badRequest, [c.body_part_id for c in unknown],
                      "unrecognised control(s): " + ", ".join(sorted({c.attr_type for c in unknown})))
    unsupported = [c for c in pki.controls if c.attr_type not in SUPPORTED_CONTROLS]
    if unsupported:
        raise Refusal(None, [c.body_part_id for c in unsupported], "control(s) not supported by kipuka: "
                      + ", ".join(sorted({c.name or c.attr_type for c in unsupported})), status=CMCStatus.noSupport)
    if pki.other_msgs:
        raise Refusal(None, [m.body_part_id for m in pki.other_msgs], "otherMsgSequence is not supported",
                      status=CMCStatus.noSupport)
    batched = set(pki.batch_requests())
    loose = [c.body_part_id for c in pki.cms_sequence if c.body_part_id not in batched]
    if loose:
        raise Refusal(None, loose, "cmsSequence content other than batched requests is not supported",
                      status=CMCStatus.noSupport)
    revocations = pki.revoke_requests()
    if revocations and pki.sender_nonce() is None:
        raise Refusal(CMCFailInfo.badRequest, [r.body_part_id for r in revocations],
                      "a revokeRequest needs a senderNonce (replay protection)")
    if not (pki.requests or revocations or batched or pki.query_pending() is not None
            or pki.confirm_cert_acceptance()):
        raise Refusal(CMCFailInfo.badRequest, (), "the PKIData asks for nothing (no request, revokeRequest, "
                      "queryPending, confirmCertAcceptance or batchRequests)")


def _classify(exc: Exception) -> tuple[CMCFailInfo | None, type[Exception], CMCStatus]:
    """(failInfo, kind of refusal, CMCStatus) of an exception raised while serving a request."""
    if isinstance(exc, Refusal):
        return exc.report_fail_info, exc.kind, exc.status
    if isinstance(exc, CmcError):
        return exc.fail_info, BadRequest, CMCStatus.failed
    if isinstance(exc, Unauthenticated):
        return CMCFailInfo.badIdentity, Unauthenticated, CMCStatus.failed
    if isinstance(exc, (Forbidden, BadRequest, Conflict, NotFound)):
        return CMCFailInfo.badRequest, type(exc), CMCStatus.failed
    if isinstance(exc, Unavailable):
        return CMCFailInfo.tryLater, Unavailable, CMCStatus.failed
    if isinstance(exc, KipukaError) and not isinstance(exc, InternalError):
        return CMCFailInfo.badRequest, type(exc), CMCStatus.failed
    return CMCFailInfo.internalCAError, InternalError, CMCStatus.failed


def _describe(exc: Exception, fail_info: CMCFailInfo | None) -> str:
    reason = getattr(exc, "reason", str(exc))
    return f"{fail_info.name}: {reason}" if fail_info is not None else f"noSupport: {reason}"


def _ids(pki: PKIData, attr_type: str) -> list[int]:
    return [c.body_part_id for c in pki.controls_of(attr_type)]


def _entity_of(who: Requester) -> str:
    if who.basic is not None:
        return who.basic.entity
    return who.client_cert.subject.rfc4514_string()[:255] if who.client_cert is not None else ""


def _signer_name(spd: SignedPKIData, who: Requester) -> str:
    cert = spd.signers[0].certificate if spd.signers else None
    return cert.subject.rfc4514_string()[:255] if cert is not None else _entity_of(who)


def _name_of(subject: x509.Name, san: x509.SubjectAlternativeName | None) -> str:
    cns = subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if cns:
        return str(cns[0].value)
    if san is not None:
        for name in san:
            return str(name.value)
    return subject.rfc4514_string()

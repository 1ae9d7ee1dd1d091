"""Full CMC (RFC 5272/6402 over RFC 7030 4.3): the RA's entry points, and the dispatch of a PKIData.

Every request that reaches this module gets a Full PKI Response, failures
included (RFC 7030 §4.3.2); `CmcAnswer.failure` says which kind of refusal it
was (a kipuka error class) so the front end can pick the HTTP status.

Who may do what is decided by who signed the PKIData (kipuka.ra.cmc_principal);
each body part is then served by kipuka.ra.cmc_handlers and answered through
kipuka.ra.cmc_answers. This module dispatches: it checks the structure and
replays, runs the handlers, and batches.

Replays: a senderNonce, and the transactionId of a message that starts a
transaction (requests, revocations, batches), may be used once per signer key
(table cmc_replay). A repeat fails the whole request with badRequest. Messages
that only continue a transaction (queryPending, confirmCertAcceptance) may
repeat the transactionId, as RFC 5272 §6.6 expects; their nonce must be fresh.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from typing import TYPE_CHECKING

from cryptography import x509

from kipuka.ca.base import CmcForwarder, IssueRequest, forwards_requests
from kipuka.cmc import (DEFAULT_MAX_SIZE, CMCFailInfo, CmcError, CMCStatus, SignedPKIData, TaggedContent, cms, oids,
                        parse_cmc_request)
from kipuka.cmc.model import PKIData
from kipuka.errors import BadRequest, Disabled, Forbidden, InternalError, KipukaError, Unauthenticated
from kipuka.ra import cmc_requests
from kipuka.ra.cmc_answers import CmcAnswers, classify, describe
from kipuka.ra.cmc_handlers import BodyPartHandlers
from kipuka.ra.cmc_outcome import OP, CmcAnswer, Outcome, Part, Principal, Refusal
from kipuka.ra.cmc_principal import authorize_signer
from kipuka.ra.requester import Requester
from kipuka.ra.trail import stored
from kipuka.store.records import utcnow

if TYPE_CHECKING:
    from kipuka.ra.authority import Authority
    from kipuka.ra.runtime import LabelRuntime

log = logging.getLogger("kipuka.ra.fullcmc")

# Controls acted on, or harmless to accept. Any other control RFC 5272 / 6402
# defines fails the whole request with noSupport; an unknown one with badRequest.
SUPPORTED_CONTROLS = frozenset({
    oids.ID_CMC_TRANSACTION_ID, oids.ID_CMC_SENDER_NONCE, oids.ID_CMC_RECIPIENT_NONCE, oids.ID_CMC_IDENTIFICATION,
    oids.ID_CMC_IDENTITY_PROOF, oids.ID_CMC_IDENTITY_PROOF_V2, oids.ID_CMC_DATA_RETURN, oids.ID_CMC_REVOKE_REQUEST,
    oids.ID_CMC_REG_INFO, oids.ID_CMC_QUERY_PENDING, oids.ID_CMC_CONFIRM_CERT_ACCEPTANCE,
    oids.ID_CMC_BATCH_REQUESTS, oids.ID_CMC_CHANGE_SUBJECT_NAME,
})


class FullCmc:
    """The /fullcmc operation of every label that turns it on: each request gets a signed Full PKI Response."""

    def __init__(self, authority: "Authority") -> None:
        self.authority = authority
        config = authority.config
        self.answers = CmcAnswers(authority)
        self.handlers = BodyPartHandlers(authority, self.answers)
        for label in config.labels.values():
            if config.est.fullcmc or label.policy.fullcmc:
                ca = authority.cas[label.ca]
                if isinstance(ca, CmcForwarder):
                    continue  # the CA answers CMC itself
                if forwards_requests(ca):
                    where = f"labels.{label.name}" if label.name else "policy"
                    raise ValueError(f"{where}: fullcmc needs a CA that takes CMC requests; CA {label.ca!r} "
                                     "only forwards PKCS#10 enrollments")
                self.answers.signer(label.ca)  # a label that cannot sign its responses is a configuration error

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
        return await self.answers.refused(rt, who, None, Refusal(fail, (), exc.reason, type(exc)), _entity_of(who))

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
            return await self.answers.refused(rt, who, None, Refusal(CMCFailInfo.internalCAError, (),
                                                                     "internal error", InternalError),
                                              _entity_of(who))

    async def _forward(self, rt: "LabelRuntime", request_der: bytes, who: Requester) -> CmcAnswer:
        """Hand the whole Full PKI Request to a CA that takes CMC (Dogtag's CMC profiles): it
        authenticates the request and signs the response; kipuka audits and relays. A CA that
        cannot be reached is a plain-text error, as kipuka has no key to sign a CMC failure."""
        entity = _entity_of(who)
        try:
            der = await rt.ca.submit_cmc(request_der, rt.label.name)  # type: ignore[attr-defined]
        except KipukaError as exc:
            await self.answers.audit_refusal(rt, who, entity, f"CA {rt.ca.id}: {exc.reason}", exc)
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
            return await self.answers.refused(rt, who, None, exc, _entity_of(who))
        pki = spd.pki_data
        principal: Principal | None = None
        try:
            _check_structure(pki)
            principal = await authorize_signer(self.authority, rt, who, spd)
            await self._check_replay(pki, principal)
            outcome = await self._operations(rt, who, spd, principal, pki)
        except (CmcError, KipukaError) as exc:
            return await self.answers.refused(rt, who, pki, exc,
                                              principal.entity if principal else _signer_name(spd, who))
        der = self.answers.response(rt, pki, outcome)
        served = [p for p in outcome.parts if p.status in (CMCStatus.success, CMCStatus.pending, CMCStatus.partial)]
        if served:
            return CmcAnswer(der)
        first = outcome.parts[0]
        return CmcAnswer(der, first.kind or BadRequest, self.answers.retry_after(first.kind))

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
            out.parts.append(await self.handlers.enroll(rt, who, pki, principal, request))
        for rr in pki.revoke_requests():
            out.parts.append(await self.handlers.revoke(rt, who, principal, rr))
        token = pki.query_pending()
        if token is not None:
            out.parts.append(await self.handlers.query(rt, who, principal, token,
                                                       _ids(pki, oids.ID_CMC_QUERY_PENDING)[0]))
        for cert_id in pki.confirm_cert_acceptance():
            out.parts.append(await self.handlers.confirm(rt, who, principal, cert_id))
        for item in batch:
            part, nested, certs = await self._batch_item(rt, who, principal, item)
            out.parts.append(part)
            if nested is not None:
                out.nested.append(nested)
            out.certificates += certs
        return out

    async def _batch_item(self, rt: "LabelRuntime", who: Requester, ra: Principal, item: TaggedContent
                          ) -> tuple[Part, bytes | None, list[x509.Certificate]]:
        """One nested PKIData an RA batched: processed with the RA's authority, answered by a nested response."""
        bpid = item.body_part_id
        if item.nested is None:
            exc = item.error or Refusal(CMCFailInfo.badRequest, [bpid], "the batched content is not a Full PKI "
                                                                         "Request (SignedData over PKIData)")
            return await self.answers.failed(rt, who, ra, bpid, exc), None, []
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
            fail_info, kind, status = classify(exc)
            await self.answers.audit_refusal(rt, who, ra.entity,
                                             f"batched body part {bpid}: {describe(exc, fail_info)}", exc)
            response = self.answers.failure_response(rt, pki, exc)
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
        return part, self.answers.response(rt, pki, outcome), certs


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


def _ids(pki: PKIData, attr_type: str) -> list[int]:
    return [c.body_part_id for c in pki.controls_of(attr_type)]


def _entity_of(who: Requester) -> str:
    if who.basic is not None:
        return who.basic.entity
    return who.client_cert.subject.rfc4514_string()[:255] if who.client_cert is not None else ""


def _signer_name(spd: SignedPKIData, who: Requester) -> str:
    cert = spd.signers[0].certificate if spd.signers else None
    return cert.subject.rfc4514_string()[:255] if cert is not None else _entity_of(who)

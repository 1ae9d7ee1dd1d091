"""Full PKI Responses: signing them for a label's CA, and turning a refusal into an audited CMC failure."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kipuka.cmc import (BodyPartIds, CMCFailInfo, CmcError, CMCStatus, CmsSigner, batch_responses_control,
                        echo_controls, encode_pki_response, status_info_v2)
from kipuka.cmc.model import ControlReader, PKIData
from kipuka.errors import (BadRequest, Conflict, Forbidden, InternalError, KipukaError, NotFound, Unauthenticated,
                           Unavailable)
from kipuka.ra.cmc_outcome import OP, CmcAnswer, Outcome, Part, Principal, Refusal
from kipuka.ra.cmc_signer import ca_signer, configured_signer, sign_response
from kipuka.ra.requester import Requester

if TYPE_CHECKING:
    from kipuka.ra.authority import Authority
    from kipuka.ra.runtime import LabelRuntime


class CmcAnswers:
    """Signs a label's Full PKI Responses (the configured CMC signer, else its CA's key) and answers refusals."""

    def __init__(self, authority: "Authority") -> None:
        self.authority = authority
        self._configured = configured_signer(authority.config.est)
        self._signers: dict[str, CmsSigner] = {}

    async def failed(self, rt: "LabelRuntime", who: Requester, principal: Principal, bpid: int,
                     exc: Exception) -> Part:
        fail_info, kind, status = classify(exc)
        await self.audit_refusal(rt, who, principal.entity, f"body part {bpid}: {describe(exc, fail_info)}", exc)
        return Part(bpid, status, getattr(exc, "reason", str(exc)), fail_info if status == CMCStatus.failed else None,
                    kind)

    async def refused(self, rt: "LabelRuntime", who: Requester, pki: PKIData | None, exc: Exception,
                      entity: str) -> CmcAnswer:
        fail_info, kind, _status = classify(exc)
        await self.audit_refusal(rt, who, entity, describe(exc, fail_info), exc)
        return CmcAnswer(self.failure_response(rt, pki, exc), kind, self.retry_after(kind, exc))

    async def audit_refusal(self, rt: "LabelRuntime", who: Requester, entity: str, reason: str,
                            exc: Exception) -> None:
        if getattr(exc, "audited", False):
            return  # the Authority step that refused it wrote the audit row
        await self.authority.trail.rejection(rt.label.name, rt.ca.id, OP, who, entity, reason[:500])

    def retry_after(self, kind: type[Exception] | None, exc: Exception | None = None) -> int | None:
        if kind is Unavailable:
            return getattr(exc, "retry_after", None) or self.authority.config.est.retry_after
        return None

    def signer(self, ca_id: str) -> CmsSigner:
        if self._configured is not None:
            return self._configured
        if ca_id not in self._signers:
            self._signers[ca_id] = ca_signer(self.authority.cas[ca_id])
        return self._signers[ca_id]

    def response(self, rt: "LabelRuntime", pki: PKIData, outcome: Outcome) -> bytes:
        ids = BodyPartIds()
        controls = [status_info_v2(ids.next(), p.status, [p.ref], status_string=p.reason or None,
                                   fail_info=p.fail_info, pend_token=p.pend_token, pend_time=p.pend_time)
                    for p in outcome.parts]
        contents = [(ids.next(), nested) for nested in outcome.nested]
        if contents:
            controls.append(batch_responses_control(ids.next(), [b for b, _ in contents]))
        controls += echo_controls(pki, ids)
        certs = [p.certificate for p in outcome.parts if p.certificate is not None] + outcome.certificates
        return sign_response(self.signer(rt.ca.id), encode_pki_response(controls, contents), certs)

    def failure_response(self, rt: "LabelRuntime", pki: ControlReader | None, exc: Exception) -> bytes:
        fail_info, _kind, status = classify(exc)
        ids = BodyPartIds()
        body = list(getattr(exc, "body_part_ids", ()) or ()) or [0]
        controls = [status_info_v2(ids.next(), status, body, status_string=getattr(exc, "reason", str(exc)) or None,
                                   fail_info=fail_info if status == CMCStatus.failed else None)]
        controls += echo_controls(pki, ids)
        return sign_response(self.signer(rt.ca.id), encode_pki_response(controls), [])


def classify(exc: Exception) -> tuple[CMCFailInfo | None, type[Exception], CMCStatus]:
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


def describe(exc: Exception, fail_info: CMCFailInfo | None) -> str:
    reason = getattr(exc, "reason", str(exc))
    return f"{fail_info.name}: {reason}" if fail_info is not None else f"noSupport: {reason}"

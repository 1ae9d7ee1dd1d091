"""Who signed a PKIData, and so what it may ask for: an RA agent, a certificate holder, or its own request key.

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
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import serialization

from kipuka.cmc import CMCFailInfo, CmcError, SignedPKIData, cms, has_cmc_ra_eku, oids
from kipuka.cmc.model import PKIData
from kipuka.errors import BadRequest, Forbidden, Unauthenticated
from kipuka.ra.cmc_outcome import OP, Principal, Refusal
from kipuka.ra.requester import Requester
from kipuka.ra.trail import stored
from kipuka.store.records import utcnow

if TYPE_CHECKING:
    from kipuka.ra.authority import Authority
    from kipuka.ra.runtime import LabelRuntime


async def authorize_signer(authority: "Authority", rt: "LabelRuntime", who: Requester,
                           spd: SignedPKIData) -> Principal:
    """The Principal of a PKIData's one SignerInfo; a Refusal if the signer may not use this label."""
    a = authority
    if len(spd.signers) != 1:
        raise Refusal(CMCFailInfo.badRequest, (), "kipuka accepts a PKIData with exactly one SignerInfo")
    signer = spd.signers[0]
    spki = cms.spki_der(signer.public_key)
    if signer.request_body_part_id is not None:
        return await _self_signed(authority, rt, who, spd.pki_data, signer.request_body_part_id, spki)
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


async def _self_signed(authority: "Authority", rt: "LabelRuntime", who: Requester, pki: PKIData, bpid: int,
                       spki: bytes) -> Principal:
    a = authority
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

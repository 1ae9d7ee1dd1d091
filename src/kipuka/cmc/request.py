"""Parsing and verifying Full PKI Requests (and, for clients and tests, Full PKI Responses).

`parse_cmc_request(der)`:
  1. size bound, then one bounded BER walk of the whole message (`der.check`);
  2. ContentInfo -> SignedData (RFC 5652 §5) whose eContentType is
     id-cct-PKIData (anything else, AuthenticatedData included: badRequest);
  3. PKIData (RFC 5272 §3.2.1): controls decoded, bodyPartIDs unique across the
     four sequences (§3.2.2), tcr / crm / orm requests read;
  4. every SignerInfo verified (`cms.verify_signer`); a signer not in the
     certificate set may be a request key named by its Subject Key Identifier
     (RFC 5272 §3.2), in which case exactly one SignerInfo is allowed; only
     then are the requests' POP signatures checked (no work for forgeries);
  5. cmsSequence: a SignedData over a PKIData (an RA's batch, §6.17) is parsed
     and verified recursively, at most `max_depth` PKIData deep and
     `max_messages` in all; a nested one that fails records its CmcError in
     its TaggedContent instead of failing the whole request. Limits always
     fail the whole request (`CmcLimitError`).

Every failure raises CmcError; any other exception escaping the decoders is
turned into CmcError(badRequest).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from pyasn1.codec.der import encoder as der_encoder
from pyasn1.type import univ
from pyasn1_modules import rfc4211

from kipuka.cmc import asn1, cms, der, oids
from kipuka.cmc.errors import CmcError, CmcLimitError
from kipuka.cmc.model import (CertificationRequest, Control, CrmfRequest, OtherMsg, OtherRequest, PKIData,
                              PKIResponse, Pop, SignedPKIData, SignedPKIResponse, TaggedContent, TaggedRequest,
                              TemplateExtension)

DEFAULT_MAX_SIZE = 1 << 20       # bytes
DEFAULT_MAX_DEPTH = 4            # PKIData levels: the request and three nested batch levels
DEFAULT_MAX_ELEMENTS = der.DEFAULT_MAX_ELEMENTS
DEFAULT_MAX_MESSAGES = 64        # PKIData (outer + nested) per request


@dataclass
class _Ctx:
    max_depth: int
    max_messages: int
    budget: der.Budget
    messages: int = 0


def parse_cmc_request(data: bytes, *, max_size: int = DEFAULT_MAX_SIZE, max_depth: int = DEFAULT_MAX_DEPTH,
                      max_elements: int = DEFAULT_MAX_ELEMENTS, max_messages: int = DEFAULT_MAX_MESSAGES,
                      ) -> SignedPKIData:
    """Decode and verify a Full PKI Request (DER ContentInfo). Raises CmcError only."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise der.bad("a CMC request is bytes")
    data = bytes(data)
    if len(data) > max_size:
        raise CmcLimitError(f"CMC request larger than {max_size} bytes")
    ctx = _Ctx(max_depth=max_depth, max_messages=max_messages,
               budget=der.Budget(max_elements, der.DEFAULT_MAX_TLV_DEPTH))
    return _guard(lambda: _parse_signed(data, ctx, 1))


def parse_pki_response(data: bytes, *, max_size: int = DEFAULT_MAX_SIZE,
                       max_elements: int = DEFAULT_MAX_ELEMENTS) -> SignedPKIResponse:
    """Decode and verify a Full PKI Response (SignedData over id-cct-PKIResponse).

    The signer must be in the certificate set; as for requests, whether it is
    trusted is the caller's decision. Nested cmsSequence content is kept raw.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise der.bad("a CMC response is bytes")
    data = bytes(data)
    if len(data) > max_size:
        raise CmcLimitError(f"CMC response larger than {max_size} bytes")
    budget = der.Budget(max_elements, der.DEFAULT_MAX_TLV_DEPTH)

    def run() -> SignedPKIResponse:
        der.check(data, budget)
        sd = _signed_data(der.definite(data), oids.ID_CCT_PKI_RESPONSE)
        der.check(sd.econtent, budget)  # type: ignore[arg-type]
        econtent = der.definite(sd.econtent)  # type: ignore[arg-type]
        three = der.decode(econtent, asn1.ThreeRaw(), "PKIResponse")
        controls = _controls(three["controlSequence"].asOctets())
        contents = [TaggedContent(b, t, ci) for b, t, ci in _contents(three["cmsSequence"].asOctets())]
        others = _other_msgs(three["otherMsgSequence"].asOctets())
        _unique([c.body_part_id for c in controls] + [c.body_part_id for c in contents]
                + [o.body_part_id for o in others])
        resp = PKIResponse(tuple(controls), tuple(contents), tuple(others), econtent)
        resp.validate_controls()
        signers = tuple(cms.verify_signer(sd, si) for si in sd.signer_infos)
        return SignedPKIResponse(resp, signers, sd.certificates, data)

    return _guard(run)


def _guard(fn):
    try:
        return fn()
    except CmcError:
        raise
    except RecursionError as exc:
        raise der.bad("CMC message nested too deeply") from exc
    except Exception as exc:  # noqa: BLE001 - the contract is "CmcError only" on hostile input
        raise der.bad(f"malformed CMC message ({type(exc).__name__})") from exc


def _signed_data(data: bytes, econtent_type: str, ids: Iterable[int] = ()) -> cms.RawSignedData:
    ids = tuple(ids)
    ctype, content = cms.open_content_info(data, ids)
    if ctype == oids.ID_CT_AUTH_DATA:
        raise der.bad("AuthenticatedData-protected CMC messages are not supported", ids)
    if ctype != oids.ID_SIGNED_DATA:
        raise der.bad(f"the ContentInfo carries {ctype}, not a SignedData", ids)
    sd = cms.read_signed_data(content, ids)
    if sd.econtent_type != econtent_type:
        raise der.bad(f"eContentType is {sd.econtent_type}, not {econtent_type}", ids)
    if sd.econtent is None:
        raise der.bad("detached content is not supported: eContent is absent", ids)
    if not sd.signer_infos:
        raise der.bad("the SignedData has no SignerInfo", ids)
    return sd


def _parse_signed(data: bytes, ctx: _Ctx, depth: int, sd: cms.RawSignedData | None = None) -> SignedPKIData:
    if depth > ctx.max_depth:
        raise CmcLimitError(f"PKIData nested more than {ctx.max_depth} deep")
    ctx.messages += 1
    if ctx.messages > ctx.max_messages:
        raise CmcLimitError(f"more than {ctx.max_messages} PKIData in one request")
    if sd is None:
        der.check(data, ctx.budget)
        sd = _signed_data(der.definite(data), oids.ID_CCT_PKI_DATA)
    econtent = sd.econtent
    assert econtent is not None
    der.check(econtent, ctx.budget)
    econtent = der.definite(econtent)
    four = der.decode(econtent, asn1.FourRaw(), "PKIData")
    req_sequence_der = four["reqSequence"].asOctets()
    controls = _controls(four["controlSequence"].asOctets())
    pending = _requests(req_sequence_der)
    requests = [r for r, _pop in pending]
    raw_contents = _contents(four["cmsSequence"].asOctets())
    others = _other_msgs(four["otherMsgSequence"].asOctets())
    _unique([c.body_part_id for c in controls] + [r.body_part_id for r in requests]
            + [b for b, _t, _c in raw_contents] + [o.body_part_id for o in others])
    shallow = PKIData(tuple(controls), tuple(requests), (), tuple(others), econtent, req_sequence_der)
    shallow.validate_controls()

    def lookup(sid: cms.SignerId):
        return shallow.request_key(sid.subject_key_identifier) if sid.subject_key_identifier is not None else None

    signers = tuple(cms.verify_signer(sd, si, key_lookup=lookup) for si in sd.signer_infos)
    if any(s.request_body_part_id is not None for s in signers) and len(signers) != 1:
        raise der.bad("a PKIData signed with a certification request's key must have exactly one "
                      "SignerInfo (RFC 5272 §3.2)")
    # POP signatures are checked only once the message signature holds (no work for forgers)
    requests = [replace(r, pop=pop()) if pop is not None else r for r, pop in pending]
    contents = tuple(_tagged_content(b, t, ci, ctx, depth) for b, t, ci in raw_contents)
    pki = PKIData(tuple(controls), tuple(requests), contents, tuple(others), econtent, req_sequence_der)
    return SignedPKIData(pki, signers, sd.certificates, sd.crls, data, depth)


def _tagged_content(bpid: int, ctype: str, ci: bytes, ctx: _Ctx, depth: int) -> TaggedContent:
    if ctype != oids.ID_SIGNED_DATA:
        return TaggedContent(bpid, ctype, ci)
    try:
        _inner_type, content = cms.open_content_info(der.definite(ci), [bpid])
        sd = cms.read_signed_data(content, [bpid])
    except CmcError as exc:
        return TaggedContent(bpid, ctype, ci, error=CmcError(exc.fail_info, [bpid], exc.reason))
    if sd.econtent_type != oids.ID_CCT_PKI_DATA:
        return TaggedContent(bpid, ctype, ci)
    try:
        if sd.econtent is None or not sd.signer_infos:
            raise der.bad("the nested SignedData has no content or no SignerInfo")
        nested = _parse_signed(ci, ctx, depth + 1, sd)
    except CmcLimitError:
        raise
    except CmcError as exc:
        return TaggedContent(bpid, ctype, ci, error=CmcError(exc.fail_info, [bpid, *exc.body_part_ids],
                                                            f"nested request {bpid}: {exc.reason}"))
    return TaggedContent(bpid, ctype, ci, nested=nested)


def _unique(ids: list[int]) -> None:
    seen: set[int] = set()
    dups: set[int] = set()
    for i in ids:
        (dups if i in seen else seen).add(i)
    if dups:
        raise der.bad("bodyPartIDs must be unique within a PKIData (RFC 5272 §3.2.2)", sorted(dups))


def _controls(raw: bytes) -> list[Control]:
    seq = der.decode(raw, asn1.TaggedAttributes(), "controlSequence")
    return [Control(int(ta["bodyPartID"]), str(ta["attrType"]), tuple(v.asOctets() for v in ta["attrValues"]))
            for ta in seq]


def _contents(raw: bytes) -> list[tuple[int, str, bytes]]:
    out = []
    for tci in der.decode(raw, asn1.TaggedContentInfos(), "cmsSequence"):
        bpid = int(tci["bodyPartID"])
        ci = tci["contentInfo"].asOctets()
        ctype, _content = cms.open_content_info(der.definite(ci), [bpid])
        out.append((bpid, ctype, ci))
    return out


def _other_msgs(raw: bytes) -> list[OtherMsg]:
    return [OtherMsg(int(m["bodyPartID"]), str(m["otherMsgType"]), m["otherMsgValue"].asOctets())
            for m in der.decode(raw, asn1.OtherMsgs(), "otherMsgSequence")]


_UNCHECKED = Pop("unchecked", False, None, "the message signature has not been verified")
PopCheck = Callable[[], Pop]


def _requests(raw: bytes) -> list[tuple[TaggedRequest, PopCheck | None]]:
    """The TaggedRequests, each with the deferred check of its proof of possession."""
    out: list[tuple[TaggedRequest, PopCheck | None]] = []
    for item in der.decode(raw, asn1.AnySeq(), "reqSequence"):
        tr = item.asOctets()
        tag = der.tag_of(tr)
        if tag == 0xA0:
            out.append(_tcr(der.retag(tr, 0x30)))
        elif tag == 0xA1:
            out.append(_crm(der.retag(tr, 0x30)))
        elif tag == 0xA2:
            orm = der.decode(der.retag(tr, 0x30), asn1.OtherRequest(), "orm request")
            out.append((OtherRequest(int(orm["bodyPartID"]), str(orm["requestMessageType"]),
                                     orm["requestMessageValue"].asOctets()), None))
        else:
            raise der.bad("a TaggedRequest is tcr [0], crm [1] or orm [2]")
    return out


def _tcr(raw: bytes) -> tuple[CertificationRequest, PopCheck]:
    tcr = der.decode(raw, asn1.TaggedCertificationRequest(), "tcr request")
    bpid = int(tcr["bodyPartID"])
    csr_der = tcr["certificationRequest"].asOctets()
    try:
        csr = x509.load_der_x509_csr(csr_der)
        cri = der.children(csr_der)[0]
        spki = der.children(cri)[2]
    except (ValueError, IndexError, CmcError) as exc:
        raise der.bad("the tcr request is not a readable PKCS#10 request", [bpid]) from exc
    alg = csr.signature_algorithm_oid.dotted_string

    def pop() -> Pop:
        if alg == oids.ID_ALG_NO_SIGNATURE:
            return Pop("noSignature", False, alg, "the PKCS#10 request is signed with id-alg-noSignature")
        try:
            ok = csr.is_signature_valid
        except (UnsupportedAlgorithm, ValueError, InvalidSignature) as exc:
            return Pop("signature", False, alg, f"the PKCS#10 signature cannot be checked ({exc})")
        return Pop("signature", ok, alg, None if ok else "the PKCS#10 signature does not verify")

    try:
        ski = csr.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except (x509.ExtensionNotFound, ValueError):
        ski = None
    return CertificationRequest(bpid, csr_der, csr, spki, ski, _UNCHECKED), pop


class _RegInfo(univ.SequenceOf):
    componentType = rfc4211.AttributeTypeAndValue()


def _crm(msg_der: bytes) -> tuple[CrmfRequest, PopCheck]:
    """CertReqMsg ::= SEQUENCE { certReq CertRequest, popo ProofOfPossession OPTIONAL,
    regInfo SEQUENCE OF AttributeTypeAndValue OPTIONAL } (RFC 4211 §3), read part by part:
    pyasn1-modules' whole CertReqMsg schema is so large that formatting one decoding error
    costs ~0.5 s of CPU."""
    try:
        parts = der.children(msg_der)
    except CmcError as exc:
        raise der.bad("malformed crm request") from exc
    if not parts:
        raise der.bad("malformed crm request")
    cert_req_raw, popo_raw, reg_raw = parts[0], None, None
    for p in parts[1:]:
        if der.tag_of(p) in (0x80, 0xA1, 0xA2, 0xA3) and popo_raw is None and reg_raw is None:
            popo_raw = p
        elif der.tag_of(p) == 0x30 and reg_raw is None:
            reg_raw = p
        else:
            raise der.bad("malformed crm request")
    cert_req = der.decode(cert_req_raw, rfc4211.CertRequest(), "crm CertRequest")
    cert_req_id = int(cert_req["certReqId"])
    if not 0 <= cert_req_id <= 4294967295:
        raise der.bad("certReqId is not a valid BodyPartID")
    ids = [cert_req_id]
    template = cert_req["certTemplate"]
    template_der = der.children(cert_req_raw)[1]
    subject_der = der_encoder.encode(template["subject"]["rdnSequence"]) if template["subject"].isValue else None
    pk_der = der.retag(der_encoder.encode(template["publicKey"]), 0x30) if template["publicKey"].isValue else None
    exts: list[TemplateExtension] = []
    ski = None
    if template["extensions"].isValue:
        for e in template["extensions"]:
            ext = TemplateExtension(str(e["extnID"]), bool(e["critical"]), bytes(e["extnValue"]))
            exts.append(ext)
            if ext.oid == oids.ID_CE_SUBJECT_KEY_IDENTIFIER:
                ski = bytes(der.decode(ext.value, univ.OctetString(), "subjectKeyIdentifier", ids))
    controls = tuple((str(a["type"]), a["value"].asOctets()) for a in cert_req["controls"]) \
        if cert_req["controls"].isValue else ()
    reg_info = tuple((str(a["type"]), a["value"].asOctets())
                     for a in der.decode(reg_raw, _RegInfo(), "crm regInfo", ids)) if reg_raw is not None else ()
    poposk_key, pop = _crmf_pop(popo_raw, cert_req_raw, pk_der, ids)
    return CrmfRequest(
        body_part_id=cert_req_id, cert_req_id=cert_req_id, der=msg_der, template_der=der.retag(template_der, 0x30),
        subject_der=subject_der, public_key_der=pk_der or poposk_key, extensions=tuple(exts),
        subject_key_identifier=ski, pop=_UNCHECKED, controls=controls, reg_info=reg_info), pop


_POP_METHODS = {0x80: "raVerified", 0xA1: "signature", 0xA2: "keyEncipherment", 0xA3: "keyAgreement"}


def _crmf_pop(popo_raw: bytes | None, cert_req_raw: bytes, template_key: bytes | None,
              ids: list[int]) -> tuple[bytes | None, PopCheck]:
    """(key from poposkInput, deferred POP check). RFC 4211 §4: only the signature form is checked (§4.1)."""
    if popo_raw is None:
        return None, lambda: Pop("none", False)
    method = _POP_METHODS[der.tag_of(popo_raw)]
    if method == "raVerified" and popo_raw != b"\x80\x00":
        raise der.bad("raVerified must be NULL", ids)
    if method != "signature":
        return None, lambda: Pop(method, False, None, f"{method} proof of possession is not verified by the codec")
    sk = der.decode(der.retag(popo_raw, 0x30), rfc4211.POPOSigningKey(), "crm POPOSigningKey", ids)
    alg = str(sk["algorithmIdentifier"]["algorithm"])
    params = sk["algorithmIdentifier"]["parameters"]
    params_der = params.asOctets() if params.isValue else None
    if params_der == der.null():
        params_der = None
    signature = sk["signature"].asOctets()
    poposk_key = None
    reason = None
    if sk["poposkInput"].isValue:
        # §4.1: the signature covers the DER of POPOSigningKeyInput (as its own SEQUENCE).
        inp = sk["poposkInput"]
        signed = der.retag(der_encoder.encode(inp), 0x30)
        poposk_key = der_encoder.encode(inp["publicKey"])
        if inp["authInfo"].getName() == "publicKeyMAC":
            reason = "POPOSigningKeyInput publicKeyMAC is not verified by the codec"
    else:
        signed = cert_req_raw  # §4.1: without poposkInput the signature covers the DER of certReq
    key_der = template_key or poposk_key

    def check() -> Pop:
        if template_key is not None and poposk_key is not None and template_key != poposk_key:
            return Pop("signature", False, alg, "poposkInput and the template name different keys")
        if key_der is None:
            return Pop("signature", False, alg, "no public key to check the POP signature with")
        try:
            key = cms.load_public_key(key_der, ids)
            ok = cms.verify_signature(key, alg, params_der, signature, signed, ids=ids)
        except CmcError as exc:
            return Pop("signature", False, alg, exc.reason)
        if not ok:
            return Pop("signature", False, alg, "the CRMF POP signature does not verify")
        return Pop("signature", True, alg, reason)

    return poposk_key, check

"""The parsed form of CMC messages, and readers for the common controls.

Every type here is an immutable result. Control values stay as the DER the
sender wrote (`Control.values`); the readers decode the controls RFC 5272 /
RFC 6402 define that a server acts on, and raise `CmcError(badRequest, [id])`
naming the control's bodyPartID when one is malformed or repeated where the
RFC allows one.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Union

from cryptography import x509
from pyasn1.codec.der import encoder as der_encoder
from pyasn1.type import char, univ
from pyasn1_modules import rfc5280, rfc6402

from kipuka.cmc import asn1, der, oids
from kipuka.cmc.cms import PublicKey, VerifiedSigner, name_from_der
from kipuka.cmc.errors import CMCFailInfo, CmcError, CMCStatus

HASHLIB: dict[str, str] = {
    oids.ID_SHA1: "sha1", oids.ID_SHA224: "sha224", oids.ID_SHA256: "sha256",
    oids.ID_SHA384: "sha384", oids.ID_SHA512: "sha512",
}
HMACS: dict[str, str] = {
    oids.ID_HMAC_SHA1: "sha1", oids.ID_HMAC_SHA1_IPSEC: "sha1", oids.ID_HMAC_SHA224: "sha224",
    oids.ID_HMAC_SHA256: "sha256", oids.ID_HMAC_SHA384: "sha384", oids.ID_HMAC_SHA512: "sha512",
}
HMAC_OID: dict[str, str] = {
    "sha1": oids.ID_HMAC_SHA1, "sha224": oids.ID_HMAC_SHA224, "sha256": oids.ID_HMAC_SHA256,
    "sha384": oids.ID_HMAC_SHA384, "sha512": oids.ID_HMAC_SHA512,
}
HASH_OID: dict[str, str] = {v: k for k, v in HASHLIB.items()}


# ----------------------------------------------------------------------------- controls

@dataclass(frozen=True)
class Control:
    """TaggedAttribute (RFC 5272 §3.2.1.2): one control, values as received (DER each)."""

    body_part_id: int
    attr_type: str
    values: tuple[bytes, ...]

    @property
    def name(self) -> str | None:
        return oids.CMC_CONTROL_NAMES.get(self.attr_type)

    @property
    def recognised(self) -> bool:
        return self.attr_type in oids.CMC_CONTROL_NAMES

    def encode(self) -> bytes:
        return der.seq(der.integer(self.body_part_id), der.oid(self.attr_type), der.set_of(self.values))


@dataclass(frozen=True)
class IdentityProofV2:
    """IdentifyProofV2 (RFC 5272 §6.2.1): proofAlgID (hash), macAlgId, witness."""

    body_part_id: int
    proof_algorithm: str
    mac_algorithm: str
    witness: bytes


@dataclass(frozen=True)
class RevokeRequest:
    """RevokeRequest (RFC 5272 §6.11)."""

    body_part_id: int
    issuer_der: bytes
    serial_number: int
    reason: int                          # CRLReason value (RFC 5280 §5.3.1)
    invalidity_date: dt.datetime | None = None
    passphrase: bytes | None = None
    comment: str | None = None

    @property
    def issuer(self) -> x509.Name | None:
        return name_from_der(self.issuer_der)

    @property
    def reason_flag(self) -> x509.ReasonFlags | None:
        return CRL_REASONS.get(self.reason)


CRL_REASONS: dict[int, x509.ReasonFlags] = {
    0: x509.ReasonFlags.unspecified, 1: x509.ReasonFlags.key_compromise, 2: x509.ReasonFlags.ca_compromise,
    3: x509.ReasonFlags.affiliation_changed, 4: x509.ReasonFlags.superseded,
    5: x509.ReasonFlags.cessation_of_operation, 6: x509.ReasonFlags.certificate_hold,
    8: x509.ReasonFlags.remove_from_crl, 9: x509.ReasonFlags.privilege_withdrawn,
    10: x509.ReasonFlags.aa_compromise,
}
CRL_REASON_CODES: dict[x509.ReasonFlags, int] = {v: k for k, v in CRL_REASONS.items()}


@dataclass(frozen=True)
class CertId:
    """CMCCertId ::= IssuerAndSerialNumber (confirmCertAcceptance, RFC 5272 §6.14)."""

    body_part_id: int
    issuer_der: bytes
    serial_number: int

    @property
    def issuer(self) -> x509.Name | None:
        return name_from_der(self.issuer_der)


@dataclass(frozen=True)
class ChangeSubjectName:
    """ChangeSubjectName (RFC 6402 §2.8): the subject / subjectAltName the client asks to change to."""

    body_part_id: int
    subject_der: bytes | None
    subject_alt_der: bytes | None      # GeneralNames DER

    @property
    def subject(self) -> x509.Name | None:
        return name_from_der(self.subject_der) if self.subject_der is not None else None


BodyPartRef = Union[int, tuple[int, ...]]  # bodyPartID, or bodyPartPath (RFC 5272 §3.2.2)


@dataclass(frozen=True)
class StatusInfoV2:
    """CMCStatusInfoV2 (RFC 5272 §6.1.1); otherInfo is one of fail_info, pend_*, extended_fail_info."""

    status: CMCStatus
    body_list: tuple[BodyPartRef, ...]
    status_string: str | None = None
    fail_info: CMCFailInfo | int | None = None
    pend_token: bytes | None = None
    pend_time: dt.datetime | None = None
    extended_fail_info: tuple[str, bytes] | None = None   # (failInfoOID, failInfoValue DER)

    def encode(self) -> bytes:
        if not self.body_list:
            raise ValueError("bodyList needs at least one body part reference")
        refs = []
        for ref in self.body_list:
            if isinstance(ref, int):
                refs.append(der.integer(_bpid(ref)))
            else:
                if not ref:
                    raise ValueError("an empty bodyPartPath")
                refs.append(der.seq(*(der.integer(_bpid(x)) for x in ref)))
        parts = [der.integer(int(self.status)), der.seq(*refs)]
        if self.status_string is not None:
            parts.append(der.utf8(self.status_string))
        others = [x is not None for x in (self.fail_info, self.pend_token, self.extended_fail_info)]
        if sum(others) > 1:
            raise ValueError("otherInfo is one of failInfo, pendInfo, extendedFailInfo")
        if self.fail_info is not None:
            parts.append(der.integer(int(self.fail_info)))
        elif self.pend_token is not None:
            if self.pend_time is None:
                raise ValueError("pendInfo needs pendTime")
            parts.append(der.seq(der.octets(self.pend_token), der.generalized_time(self.pend_time)))
        elif self.extended_fail_info is not None:
            parts.append(der.seq(der.oid(self.extended_fail_info[0]), self.extended_fail_info[1]))
        return der.seq(*parts)

    def to_control(self, body_part_id: int) -> Control:
        return Control(body_part_id, oids.ID_CMC_STATUS_INFO_V2, (self.encode(),))


def _bpid(n: int) -> int:
    if not 0 <= int(n) <= 4294967295:
        raise ValueError("a BodyPartID is 0..4294967295")
    return int(n)


def _bad(reason: str, ids: Iterable[int] = ()) -> CmcError:
    return CmcError(CMCFailInfo.badRequest, ids, reason)


class ControlReader:
    """Typed access to the controls of a PKIData or PKIResponse (`self.controls`)."""

    controls: tuple[Control, ...]

    def controls_of(self, attr_type: str) -> list[Control]:
        return [c for c in self.controls if c.attr_type == attr_type]

    def unrecognised_controls(self) -> list[Control]:
        """Controls whose type is not one RFC 5272 / RFC 6402 defines."""
        return [c for c in self.controls if not c.recognised]

    def _one(self, attr_type: str) -> Control | None:
        found = self.controls_of(attr_type)
        if not found:
            return None
        name = oids.CMC_CONTROL_NAMES.get(attr_type, attr_type)
        if len(found) > 1:
            raise _bad(f"the {name} control occurs more than once", [c.body_part_id for c in found])
        if len(found[0].values) != 1:
            raise _bad(f"the {name} control must carry exactly one value", [found[0].body_part_id])
        return found[0]

    def _value(self, control: Control, spec, what: str, value: bytes | None = None):
        return der.decode(control.values[0] if value is None else value, spec, f"{what} control",
                          [control.body_part_id])

    def _all_values(self, attr_type: str) -> list[tuple[Control, bytes]]:
        return [(c, v) for c in self.controls_of(attr_type) for v in c.values]

    def transaction_id(self) -> int | None:
        """id-cmc-transactionId (RFC 5272 §6.6): INTEGER."""
        c = self._one(oids.ID_CMC_TRANSACTION_ID)
        return None if c is None else int(self._value(c, univ.Integer(), "transactionId"))

    def sender_nonce(self) -> bytes | None:
        """id-cmc-senderNonce (RFC 5272 §6.6): OCTET STRING."""
        c = self._one(oids.ID_CMC_SENDER_NONCE)
        return None if c is None else bytes(self._value(c, univ.OctetString(), "senderNonce"))

    def recipient_nonce(self) -> bytes | None:
        """id-cmc-recipientNonce (RFC 5272 §6.6): OCTET STRING."""
        c = self._one(oids.ID_CMC_RECIPIENT_NONCE)
        return None if c is None else bytes(self._value(c, univ.OctetString(), "recipientNonce"))

    def identification(self) -> str | None:
        """id-cmc-identification (RFC 5272 §6.2.3): UTF8String."""
        c = self._one(oids.ID_CMC_IDENTIFICATION)
        if c is None:
            return None
        return _text(self._value(c, char.UTF8String(), "identification"), c.body_part_id)

    def identity_proof_v2(self) -> IdentityProofV2 | None:
        """id-cmc-identityProofV2 (RFC 5272 §6.2.1)."""
        c = self._one(oids.ID_CMC_IDENTITY_PROOF_V2)
        if c is None:
            return None
        v = self._value(c, rfc6402.IdentifyProofV2(), "identityProofV2")
        return IdentityProofV2(c.body_part_id, str(v["proofAlgID"]["algorithm"]), str(v["macAlgId"]["algorithm"]),
                               bytes(v["witness"]))

    def identity_proof(self) -> bytes | None:
        """id-cmc-identityProof (RFC 5272 §6.2.2, version 1): OCTET STRING (HMAC-SHA1 witness)."""
        c = self._one(oids.ID_CMC_IDENTITY_PROOF)
        return None if c is None else bytes(self._value(c, univ.OctetString(), "identityProof"))

    def data_return(self) -> bytes | None:
        """id-cmc-dataReturn (RFC 5272 §6.4): OCTET STRING, to be echoed in the response."""
        c = self._one(oids.ID_CMC_DATA_RETURN)
        return None if c is None else bytes(self._value(c, univ.OctetString(), "dataReturn"))

    def query_pending(self) -> bytes | None:
        """id-cmc-queryPending (RFC 5272 §6.13): the pendToken of an earlier pending response."""
        c = self._one(oids.ID_CMC_QUERY_PENDING)
        return None if c is None else bytes(self._value(c, univ.OctetString(), "queryPending"))

    def revoke_requests(self) -> list[RevokeRequest]:
        """id-cmc-revokeRequest (RFC 5272 §6.11); each value is one revocation."""
        out = []
        for c, value in self._all_values(oids.ID_CMC_REVOKE_REQUEST):
            v = self._value(c, rfc6402.RevokeRequest(), "revokeRequest", value)
            inv = v["invalidityDate"]
            out.append(RevokeRequest(
                body_part_id=c.body_part_id,
                issuer_der=der_encoder.encode(v["issuerName"]),
                serial_number=int(v["serialNumber"]),
                reason=int(v["reason"]),
                invalidity_date=_time(inv, c.body_part_id) if inv.isValue else None,
                passphrase=bytes(v["passphrase"]) if v["passphrase"].isValue else None,
                comment=_text(v["comment"], c.body_part_id) if v["comment"].isValue else None,
            ))
        return out

    def batch_requests(self) -> list[int]:
        """id-cmc-batchRequests (RFC 5272 §6.17): BodyPartList naming cmsSequence entries."""
        c = self._one(oids.ID_CMC_BATCH_REQUESTS)
        if c is None:
            return []
        return [int(x) for x in self._value(c, rfc6402.BodyPartList(), "batchRequests")]

    def batch_responses(self) -> list[int]:
        """id-cmc-batchResponses (RFC 5272 §6.17): BodyPartList naming cmsSequence entries."""
        c = self._one(oids.ID_CMC_BATCH_RESPONSES)
        if c is None:
            return []
        return [int(x) for x in self._value(c, rfc6402.BodyPartList(), "batchResponses")]

    def confirm_cert_acceptance(self) -> list[CertId]:
        """id-cmc-confirmCertAcceptance (RFC 5272 §6.14): CMCCertId per value."""
        out = []
        for c, value in self._all_values(oids.ID_CMC_CONFIRM_CERT_ACCEPTANCE):
            v = self._value(c, rfc6402.CMCCertId(), "confirmCertAcceptance", value)
            out.append(CertId(c.body_part_id, der_encoder.encode(v["issuer"]), int(v["serialNumber"])))
        return out

    def reg_info(self) -> list[bytes]:
        """id-cmc-regInfo (RFC 5272 §6.12): OCTET STRING per value, meaning agreed out of band."""
        return [bytes(self._value(c, univ.OctetString(), "regInfo", v))
                for c, v in self._all_values(oids.ID_CMC_REG_INFO)]

    def response_info(self) -> list[bytes]:
        """id-cmc-responseInfo (RFC 5272 §6.12): OCTET STRING per value."""
        return [bytes(self._value(c, univ.OctetString(), "responseInfo", v))
                for c, v in self._all_values(oids.ID_CMC_RESPONSE_INFO)]

    def change_subject_name(self) -> ChangeSubjectName | None:
        """id-cmc-changeSubjectName (RFC 6402 §2.8).

        ChangeSubjectName ::= SEQUENCE { subject Name OPTIONAL, subjectAlt
        SubjectAltName OPTIONAL }, at least one present. Both members are
        untagged SEQUENCEs, so a lone member is told apart by its first element:
        a Name holds SETs (RDNs), a GeneralNames holds context-tagged choices.
        """
        c = self._one(oids.ID_CMC_CHANGE_SUBJECT_NAME)
        if c is None:
            return None
        value = c.values[0]
        try:
            der.check(value)
            if der.tag_of(value) != 0x30:
                raise _bad("changeSubjectName is not a SEQUENCE", [c.body_part_id])
            members = der.children(value)
        except CmcError as exc:
            raise _bad("malformed changeSubjectName control", [c.body_part_id]) from exc
        subj = alt = None
        for i, m in enumerate(members):
            inner = der.children(m) if der.tag_of(m) == 0x30 else None
            if inner is None:
                raise _bad("malformed changeSubjectName control", [c.body_part_id])
            is_name = not inner or der.tag_of(inner[0]) == 0x31
            if is_name and i == 0 and subj is None:
                self._value(c, rfc5280.Name(), "changeSubjectName subject", m)
                subj = m
            elif not is_name and alt is None:
                self._value(c, rfc5280.GeneralNames(), "changeSubjectName subjectAlt", m)
                alt = m
            else:
                raise _bad("malformed changeSubjectName control", [c.body_part_id])
        if subj is None and alt is None:
            raise _bad("changeSubjectName names neither subject nor subjectAlt", [c.body_part_id])
        return ChangeSubjectName(c.body_part_id, subj, alt)

    def status_info_v2(self) -> list[StatusInfoV2]:
        """id-cmc-statusInfoV2 (RFC 5272 §6.1.1), one per value."""
        out = []
        for c, value in self._all_values(oids.ID_CMC_STATUS_INFO_V2):
            out.append(_status_info_v2(self._value(c, asn1.CMCStatusInfoV2(), "statusInfoV2", value),
                                       c.body_part_id))
        return out

    def validate_controls(self) -> None:
        """Decode every control this package reads; raise on the first malformed one."""
        self.transaction_id()
        self.sender_nonce()
        self.recipient_nonce()
        self.identification()
        self.identity_proof_v2()
        self.identity_proof()
        self.data_return()
        self.query_pending()
        self.revoke_requests()
        self.batch_requests()
        self.batch_responses()
        self.confirm_cert_acceptance()
        self.reg_info()
        self.response_info()
        self.change_subject_name()
        self.status_info_v2()


def _text(value, body_part_id: int) -> str:
    try:
        return str(value)
    except Exception as exc:  # noqa: BLE001 - pyasn1 decodes the characters lazily
        raise _bad("a string is not valid UTF-8", [body_part_id]) from exc


def _time(value, body_part_id: int) -> dt.datetime:
    try:
        return value.asDateTime.astimezone(dt.timezone.utc)
    except Exception as exc:  # noqa: BLE001
        raise _bad("unreadable time", [body_part_id]) from exc


def _status_info_v2(v, body_part_id: int) -> StatusInfoV2:
    try:
        status = CMCStatus(int(v["cMCStatus"]))
    except ValueError:
        raise _bad("unknown CMCStatus", [body_part_id]) from None
    refs: list[BodyPartRef] = []
    for ref in v["bodyList"]:
        if ref.getName() == "bodyPartID":
            refs.append(int(ref["bodyPartID"]))
        else:
            refs.append(tuple(int(x) for x in ref["bodyPartPath"]))
    if not refs:
        raise _bad("statusInfoV2 with an empty bodyList", [body_part_id])
    kw: dict = {}
    if v["statusString"].isValue:
        kw["status_string"] = _text(v["statusString"], body_part_id)
    if v["otherInfo"].isValue:
        other = v["otherInfo"].asOctets()
        tag = der.tag_of(other)
        inner = der.children(other) if tag == 0x30 else []
        if tag == 0x02:
            n = int(der.decode(other, univ.Integer(), "statusInfoV2 failInfo", [body_part_id]))
            kw["fail_info"] = CMCFailInfo(n) if n in CMCFailInfo._value2member_map_ else n
        elif inner and der.tag_of(inner[0]) == 0x04:
            p = der.decode(other, asn1.PendInfo(), "statusInfoV2 pendInfo", [body_part_id])
            kw["pend_token"] = bytes(p["pendToken"])
            kw["pend_time"] = _time(p["pendTime"], body_part_id)
        elif inner and der.tag_of(inner[0]) == 0x06:
            e = der.decode(other, asn1.ExtendedFailInfo(), "statusInfoV2 extendedFailInfo", [body_part_id])
            kw["extended_fail_info"] = (str(e["failInfoOID"]), e["failInfoValue"].asOctets())
        else:
            raise _bad("statusInfoV2 otherInfo is none of failInfo, pendInfo, extendedFailInfo", [body_part_id])
    return StatusInfoV2(status, tuple(refs), **kw)


# ----------------------------------------------------------------------------- requests

@dataclass(frozen=True)
class Pop:
    """Proof of possession of a request's private key, as far as the codec can tell.

    method: "signature" (PKCS#10 self-signature or CRMF POPOSigningKey),
    "noSignature" (PKCS#10 signed with id-alg-noSignature), "raVerified",
    "keyEncipherment", "keyAgreement" (CRMF; need an encryptedPOP exchange), or
    "none". `verified` is True only for a signature checked here.
    """

    method: str
    verified: bool
    algorithm: str | None = None
    reason: str | None = None

    def require(self, body_part_id: int) -> None:
        """Raise CmcError(popFailed) for a failed signature, CmcError(popRequired) for none checked."""
        if self.verified:
            return
        if self.method == "signature":
            raise CmcError(CMCFailInfo.popFailed, [body_part_id], self.reason or "the POP signature does not verify")
        raise CmcError(CMCFailInfo.popRequired, [body_part_id], f"no verifiable proof of possession ({self.method})")


@dataclass(frozen=True)
class TemplateExtension:
    oid: str
    critical: bool
    value: bytes          # extnValue contents (the DER of the extension value)


@dataclass(frozen=True)
class CertificationRequest:
    """tcr: TaggedCertificationRequest (RFC 5272 §3.2.1.3.1), a PKCS#10 request."""

    body_part_id: int
    der: bytes
    csr: x509.CertificateSigningRequest
    public_key_der: bytes                 # SubjectPublicKeyInfo DER
    subject_key_identifier: bytes | None  # from the extensionRequest, if any
    pop: Pop
    kind: str = field(default="tcr", init=False)


@dataclass(frozen=True)
class CrmfRequest:
    """crm: CertReqMsg (RFC 5272 §3.2.1.3.2, RFC 4211); bodyPartID is the certReqId."""

    body_part_id: int
    cert_req_id: int
    der: bytes                            # the CertReqMsg as a SEQUENCE
    template_der: bytes                   # the CertTemplate as a SEQUENCE
    subject_der: bytes | None
    public_key_der: bytes | None          # from the template, else from poposkInput
    extensions: tuple[TemplateExtension, ...]
    subject_key_identifier: bytes | None
    pop: Pop
    controls: tuple[tuple[str, bytes], ...]   # CRMF Controls (regToken, oldCertID, ...): (type, value DER)
    reg_info: tuple[tuple[str, bytes], ...]
    kind: str = field(default="crm", init=False)

    @property
    def subject(self) -> x509.Name | None:
        return name_from_der(self.subject_der) if self.subject_der is not None else None

    def extension(self, oid: str) -> TemplateExtension | None:
        return next((e for e in self.extensions if e.oid == oid), None)


@dataclass(frozen=True)
class OtherRequest:
    """orm: a request of another format (RFC 5272 §3.2.1.3.3), kept raw."""

    body_part_id: int
    message_type: str
    value: bytes
    kind: str = field(default="orm", init=False)


TaggedRequest = Union[CertificationRequest, CrmfRequest, OtherRequest]


@dataclass(frozen=True)
class TaggedContent:
    """TaggedContentInfo (RFC 5272 §3.2.1.4).

    When the ContentInfo is a SignedData over a PKIData (a nested request, as an
    RA batches them), `nested` is its verified parse, or `error` says why it
    could not be accepted: a bad nested request fails its body part only.
    """

    body_part_id: int
    content_type: str
    content_info: bytes
    nested: SignedPKIData | None = None
    error: CmcError | None = None


@dataclass(frozen=True)
class OtherMsg:
    body_part_id: int
    msg_type: str
    value: bytes


@dataclass(frozen=True)
class PKIData(ControlReader):
    """PKIData (RFC 5272 §3.2.1): the content of a Full PKI Request."""

    controls: tuple[Control, ...]
    requests: tuple[TaggedRequest, ...]
    cms_sequence: tuple[TaggedContent, ...]
    other_msgs: tuple[OtherMsg, ...]
    der: bytes
    req_sequence_der: bytes               # reqSequence exactly as received (identity proof input)

    def request(self, body_part_id: int) -> TaggedRequest | None:
        return next((r for r in self.requests if r.body_part_id == body_part_id), None)

    def content(self, body_part_id: int) -> TaggedContent | None:
        return next((c for c in self.cms_sequence if c.body_part_id == body_part_id), None)

    def batch_contents(self) -> list[TaggedContent]:
        """The cmsSequence entries batchRequests names, in its order (badRequest if one is missing)."""
        out = []
        for bpid in self.batch_requests():
            item = self.content(bpid)
            if item is None:
                raise _bad(f"batchRequests names body part {bpid}, which is not in cmsSequence", [bpid])
            out.append(item)
        return out

    def has_identity_proof(self) -> bool:
        return bool(self.controls_of(oids.ID_CMC_IDENTITY_PROOF_V2) or self.controls_of(oids.ID_CMC_IDENTITY_PROOF))

    def verify_identity_proof(self, shared_secret: bytes | str) -> None:
        """Check identityProofV2 (or, failing that, the version 1 identityProof).

        RFC 5272 §6.2.1: key = proofAlgID-hash(shared-secret), or of the
        shared-secret followed by the Identification control's UTF-8 value when
        that control is present (§6.2.3); witness = macAlgId-MAC(key,
        reqSequence as encoded in the request, tag and length included). Version 1
        (§6.2.2) is the same with SHA-1 and HMAC-SHA1. Raises
        CmcError(badIdentity) when no proof is present or it does not match,
        CmcError(badAlg) for an algorithm not offered.
        """
        secret = shared_secret.encode("utf-8") if isinstance(shared_secret, str) else bytes(shared_secret)
        ident = self.identification()
        material = secret + (ident.encode("utf-8") if ident is not None else b"")
        v2 = self.identity_proof_v2()
        if v2 is not None:
            hash_name = HASHLIB.get(v2.proof_algorithm)
            mac_name = HMACS.get(v2.mac_algorithm)
            if hash_name is None or mac_name is None:
                raise CmcError(CMCFailInfo.badAlg, [v2.body_part_id], "identityProofV2 algorithm not supported")
            witness, bpid = v2.witness, v2.body_part_id
        else:
            v1 = self.identity_proof()
            if v1 is None:
                raise CmcError(CMCFailInfo.badIdentity, [], "the request carries no identity proof")
            hash_name = mac_name = "sha1"
            witness, bpid = v1, self.controls_of(oids.ID_CMC_IDENTITY_PROOF)[0].body_part_id
        key = hashlib.new(hash_name, material).digest()
        expected = hmac.new(key, self.req_sequence_der, mac_name).digest()
        if not hmac.compare_digest(expected, witness):
            raise CmcError(CMCFailInfo.badIdentity, [bpid], "the identity proof does not match")

    def request_key(self, ski: bytes) -> tuple[PublicKey, int] | None:
        """(public key, bodyPartID) of the request declaring Subject Key Identifier `ski` (RFC 5272 §3.2)."""
        from kipuka.cmc.cms import load_public_key
        for r in self.requests:
            if isinstance(r, (CertificationRequest, CrmfRequest)) and r.subject_key_identifier == ski \
                    and r.public_key_der is not None:
                try:
                    return load_public_key(r.public_key_der, [r.body_part_id]), r.body_part_id
                except CmcError:
                    return None
        return None


@dataclass(frozen=True)
class SignedPKIData:
    """A Full PKI Request (RFC 5272 §3.2) whose signatures verified.

    `signers` are the SignerInfos, each with the certificate it was found by or,
    for a request signed with the key of one of its own certification requests,
    `request_body_part_id`. The codec checks signatures only: whether the signer
    certificates chain to a trusted anchor, carry id-kp-cmcRA, are valid now or
    revoked is the caller's policy (`certificates` holds the whole set).
    """

    pki_data: PKIData
    signers: tuple[VerifiedSigner, ...]
    certificates: tuple[x509.Certificate, ...]
    crls: tuple[bytes, ...]
    der: bytes
    depth: int = 1

    @property
    def self_signed(self) -> bool:
        return any(s.request_body_part_id is not None for s in self.signers)

    @property
    def controls(self) -> tuple[Control, ...]:
        return self.pki_data.controls

    @property
    def requests(self) -> tuple[TaggedRequest, ...]:
        return self.pki_data.requests

    @property
    def cms_sequence(self) -> tuple[TaggedContent, ...]:
        return self.pki_data.cms_sequence

    @property
    def other_msgs(self) -> tuple[OtherMsg, ...]:
        return self.pki_data.other_msgs


@dataclass(frozen=True)
class PKIResponse(ControlReader):
    """PKIResponse (RFC 5272 §3.3.2)."""

    controls: tuple[Control, ...]
    cms_sequence: tuple[TaggedContent, ...]
    other_msgs: tuple[OtherMsg, ...]
    der: bytes


@dataclass(frozen=True)
class SignedPKIResponse:
    """A Full PKI Response whose signatures verified; `certificates` is the SignedData set."""

    response: PKIResponse
    signers: tuple[VerifiedSigner, ...]
    certificates: tuple[x509.Certificate, ...]
    der: bytes

    @property
    def controls(self) -> tuple[Control, ...]:
        return self.response.controls


def has_cmc_ra_eku(cert: x509.Certificate) -> bool:
    """True if `cert` has extendedKeyUsage id-kp-cmcRA (RFC 6402 §2.10)."""
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except (x509.ExtensionNotFound, ValueError):
        return False
    return any(u.dotted_string == oids.ID_KP_CMC_RA for u in eku)


"""Typed, checked access to the controls of a PKIData or PKIResponse (RFC 5272 / RFC 6402).

The readers decode the controls RFC 5272 / RFC 6402 define that a server acts
on, and raise `CmcError(badRequest, [id])` naming the control's bodyPartID when
one is malformed or repeated where the RFC allows one.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from pyasn1.codec.der import encoder as der_encoder
from pyasn1.type import char, univ
from pyasn1_modules import rfc5280, rfc6402

from kipuka.cmc import asn1, der, oids
from kipuka.cmc.errors import CMCFailInfo, CmcError, CMCStatus
from kipuka.cmc.model.controls import CertId, ChangeSubjectName, Control, IdentityProofV2, RevokeRequest
from kipuka.cmc.model.status import BodyPartRef, StatusInfoV2


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

"""pyasn1 specifications used for decoding.

Most are pyasn1-modules' own (rfc5652, rfc6402, rfc4211, rfc5280). Where the
exact received bytes matter (the signed attributes a signature covers, the
reqSequence an identity proof covers, certificates handed to cryptography, the
CertRequest a CRMF POP signature covers) the field is decoded as ANY so pyasn1
keeps its encoding, and is decoded again on its own. Untagged ANY keeps the
whole TLV; an IMPLICIT-tagged ANY keeps only the contents octets.
"""

from __future__ import annotations

from pyasn1.type import char, namedtype, tag, univ, useful
from pyasn1_modules import rfc5652, rfc6402


def _ctx(n: int, constructed: bool = True) -> tag.Tag:
    return tag.Tag(tag.tagClassContext, tag.tagFormatConstructed if constructed else tag.tagFormatSimple, n)


class AnySet(univ.SetOf):
    componentType = univ.Any()


class AnySeq(univ.SequenceOf):
    componentType = univ.Any()


class SignerInfo(univ.Sequence):
    """RFC 5652 §5.3 SignerInfo with signedAttrs / unsignedAttrs kept raw (contents octets)."""

    componentType = namedtype.NamedTypes(
        namedtype.NamedType("version", rfc5652.CMSVersion()),
        namedtype.NamedType("sid", rfc5652.SignerIdentifier()),
        namedtype.NamedType("digestAlgorithm", rfc5652.DigestAlgorithmIdentifier()),
        namedtype.OptionalNamedType("signedAttrs", univ.Any().subtype(implicitTag=_ctx(0))),
        namedtype.NamedType("signatureAlgorithm", rfc5652.SignatureAlgorithmIdentifier()),
        namedtype.NamedType("signature", rfc5652.SignatureValue()),
        namedtype.OptionalNamedType("unsignedAttrs", univ.Any().subtype(implicitTag=_ctx(1))),
    )


class SignerInfos(univ.SetOf):
    componentType = SignerInfo()


class SignedData(univ.Sequence):
    """RFC 5652 §5.1 SignedData with certificates and CRLs kept as raw TLVs."""

    componentType = namedtype.NamedTypes(
        namedtype.NamedType("version", rfc5652.CMSVersion()),
        namedtype.NamedType("digestAlgorithms", AnySet()),
        namedtype.NamedType("encapContentInfo", rfc5652.EncapsulatedContentInfo()),
        namedtype.OptionalNamedType("certificates", AnySet().subtype(implicitTag=_ctx(0))),
        namedtype.OptionalNamedType("crls", AnySet().subtype(implicitTag=_ctx(1))),
        namedtype.NamedType("signerInfos", SignerInfos()),
    )


class Attributes(univ.SetOf):
    """SET OF Attribute (the signed attributes once re-tagged as a SET)."""

    componentType = rfc5652.Attribute()


class FourRaw(univ.Sequence):
    """PKIData ::= SEQUENCE { controlSequence, reqSequence, cmsSequence, otherMsgSequence }."""

    componentType = namedtype.NamedTypes(
        namedtype.NamedType("controlSequence", univ.Any()),
        namedtype.NamedType("reqSequence", univ.Any()),
        namedtype.NamedType("cmsSequence", univ.Any()),
        namedtype.NamedType("otherMsgSequence", univ.Any()),
    )


class ThreeRaw(univ.Sequence):
    """PKIResponse ::= SEQUENCE { controlSequence, cmsSequence, otherMsgSequence }."""

    componentType = namedtype.NamedTypes(
        namedtype.NamedType("controlSequence", univ.Any()),
        namedtype.NamedType("cmsSequence", univ.Any()),
        namedtype.NamedType("otherMsgSequence", univ.Any()),
    )


class TaggedAttribute(univ.Sequence):
    """RFC 5272 §3.2.1.2 TaggedAttribute (values kept raw)."""

    componentType = namedtype.NamedTypes(
        namedtype.NamedType("bodyPartID", rfc6402.BodyPartID()),
        namedtype.NamedType("attrType", univ.ObjectIdentifier()),
        namedtype.NamedType("attrValues", AnySet()),
    )


class TaggedAttributes(univ.SequenceOf):
    componentType = TaggedAttribute()


class TaggedCertificationRequest(univ.Sequence):
    """tcr [0] TaggedCertificationRequest, read after re-tagging [0] as SEQUENCE."""

    componentType = namedtype.NamedTypes(
        namedtype.NamedType("bodyPartID", rfc6402.BodyPartID()),
        namedtype.NamedType("certificationRequest", univ.Any()),
    )


class OtherRequest(univ.Sequence):
    """orm [2] SEQUENCE { bodyPartID, requestMessageType, requestMessageValue }."""

    componentType = namedtype.NamedTypes(
        namedtype.NamedType("bodyPartID", rfc6402.BodyPartID()),
        namedtype.NamedType("requestMessageType", univ.ObjectIdentifier()),
        namedtype.NamedType("requestMessageValue", univ.Any()),
    )


class TaggedContentInfo(univ.Sequence):
    """RFC 5272 §3.2.1.4 TaggedContentInfo with the ContentInfo kept raw."""

    componentType = namedtype.NamedTypes(
        namedtype.NamedType("bodyPartID", rfc6402.BodyPartID()),
        namedtype.NamedType("contentInfo", univ.Any()),
    )


class TaggedContentInfos(univ.SequenceOf):
    componentType = TaggedContentInfo()


class OtherMsgs(univ.SequenceOf):
    componentType = rfc6402.OtherMsg()


class ContentInfo(univ.Sequence):
    """RFC 5652 §3 ContentInfo; `content` keeps the TLV inside [0] EXPLICIT."""

    componentType = namedtype.NamedTypes(
        namedtype.NamedType("contentType", univ.ObjectIdentifier()),
        namedtype.NamedType("content", univ.Any().subtype(explicitTag=_ctx(0))),
    )



class BodyPartReference(univ.Choice):
    """BodyPartReference ::= CHOICE { bodyPartID BodyPartID, bodyPartPath BodyPartPath } (RFC 5272 §3.2.2)."""

    componentType = namedtype.NamedTypes(
        namedtype.NamedType("bodyPartID", rfc6402.BodyPartID()),
        namedtype.NamedType("bodyPartPath", rfc6402.BodyPartPath()),
    )


class BodyPartReferences(univ.SequenceOf):
    componentType = BodyPartReference()


class CMCStatusInfoV2(univ.Sequence):
    """CMCStatusInfoV2 (RFC 5272 §6.1.1, RFC 6402) with otherInfo kept raw.

    otherInfo's pendInfo and extendedFailInfo are both untagged SEQUENCEs, a
    CHOICE pyasn1 cannot decode; the caller tells them apart by their first
    element (OCTET STRING pendToken vs OBJECT IDENTIFIER failInfoOID).
    """

    componentType = namedtype.NamedTypes(
        namedtype.NamedType("cMCStatus", univ.Integer()),
        namedtype.NamedType("bodyList", BodyPartReferences()),
        namedtype.OptionalNamedType("statusString", char.UTF8String()),
        namedtype.OptionalNamedType("otherInfo", univ.Any()),
    )


class PendInfo(univ.Sequence):
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("pendToken", univ.OctetString()),
        namedtype.NamedType("pendTime", useful.GeneralizedTime()),
    )


class ExtendedFailInfo(univ.Sequence):
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("failInfoOID", univ.ObjectIdentifier()),
        namedtype.NamedType("failInfoValue", univ.Any()),
    )

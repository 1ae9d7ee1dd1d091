"""The ASN.1 of RFC 9908 (CSR attributes templates) as pyasn1 types.

RFC 9908 (January 2026) lets a /csrattrs answer carry a partly filled-in PKCS#10
CertificationRequestInfo: subject RDNs whose values may be absent, a key
algorithm without a key, and extensions whose values may be absent. pyasn1-modules
has no module for it, so the types are written here from the RFC's ASN.1 module
(Appendix A, `CRITemplateModule`, DEFINITIONS IMPLICIT TAGS):

    CertificationRequestInfoTemplate ::= SEQUENCE {
        version       INTEGER { v1(0) } (v1, ... ),
        subject       NameTemplate OPTIONAL,
        subjectPKInfo [0] SubjectPublicKeyInfoTemplate {{ PKInfoAlgorithms }} OPTIONAL,
        attributes    [1] Attributes{{ CRIAttributes }} }
    NameTemplate ::= CHOICE { rdnSequence RDNSequenceTemplate }
    RDNSequenceTemplate ::= SEQUENCE OF RelativeDistinguishedNameTemplate
    RelativeDistinguishedNameTemplate ::= SET SIZE (1 .. MAX) OF SingleAttributeTemplate
    SingleAttributeTemplate ::= SEQUENCE { type OBJECT IDENTIFIER, value ANY OPTIONAL }
    SubjectPublicKeyInfoTemplate ::= SEQUENCE {
        algorithm AlgorithmIdentifier, subjectPublicKey BIT STRING OPTIONAL }
    ExtensionReqTemplate ::= SEQUENCE SIZE (1..MAX) OF ExtensionTemplate
    ExtensionTemplate ::= SEQUENCE {
        extnID OBJECT IDENTIFIER, critical BOOLEAN DEFAULT FALSE, extnValue OCTET STRING OPTIONAL }

Sources checked (the published RFC text itself could not be read where this was
written; see docs/est-endpoints.md, "RFC 9908 templates"):
- the ASN.1 above: the LAMPS working group's draft repository
  (github.com/lamps-wg/lamps-rfc7030-csrattrs, CRITemplateModule.asn and
  lamps-rfc7030-csrattrs.mkd §"Use of CSR templates"), where the OIDs are still TBD;
- the OIDs: russhousley/pyasn1-alt-modules, pyasn1_alt_modules/rfc9908.py, by the
  document's shepherd, which says it is transcribed from rfc9908.txt: id-aa 61
  (certificationRequestInfoTemplate) and 62 (extensionReqTemplate) under
  1.2.840.113549.1.9.16.2, "SMI Security for S/MIME Attributes". Other implementations
  citing RFC 9908 Appendix A / IANA use the same; one implementation has one stored
  version with .63 and another with .61.
"""

from __future__ import annotations

from pyasn1.codec.der import decoder, encoder
from pyasn1.error import PyAsn1Error
from pyasn1.type import constraint, namedtype, namedval, tag, univ
from pyasn1_modules import rfc5280

MAX = float("inf")

ID_AA = "1.2.840.113549.1.9.16.2"  # SMI Security for S/MIME Attributes
ID_AA_CERTIFICATION_REQUEST_INFO_TEMPLATE = ID_AA + ".61"  # RFC 9908 Appendix A (csrinfo)
ID_AA_EXTENSION_REQ_TEMPLATE = ID_AA + ".62"  # RFC 9908 Appendix A (extnReqTemplate)
ID_EXTENSION_REQ = "1.2.840.113549.1.9.14"  # PKCS#9 extensionRequest, the full-value form


class SingleAttributeTemplate(univ.Sequence):
    """An RDN attribute whose value may be absent: the requester fills it in."""

    componentType = namedtype.NamedTypes(
        namedtype.NamedType("type", univ.ObjectIdentifier()),
        namedtype.OptionalNamedType("value", univ.Any()),
    )


class RelativeDistinguishedNameTemplate(univ.SetOf):
    componentType = SingleAttributeTemplate()
    subtypeSpec = constraint.ValueSizeConstraint(1, MAX)


class RDNSequenceTemplate(univ.SequenceOf):
    componentType = RelativeDistinguishedNameTemplate()


class NameTemplate(univ.Choice):
    componentType = namedtype.NamedTypes(namedtype.NamedType("rdnSequence", RDNSequenceTemplate()))


class SubjectPublicKeyInfoTemplate(univ.Sequence):
    """The key algorithm the requester is to use; a key only to give an RSA modulus length."""

    componentType = namedtype.NamedTypes(
        namedtype.NamedType("algorithm", rfc5280.AlgorithmIdentifier()),
        namedtype.OptionalNamedType("subjectPublicKey", univ.BitString()),
    )


class ExtensionTemplate(univ.Sequence):
    """An extension the requester is to include; without extnValue it chooses the value."""

    componentType = namedtype.NamedTypes(
        namedtype.NamedType("extnID", univ.ObjectIdentifier()),
        namedtype.DefaultedNamedType("critical", univ.Boolean(False)),
        namedtype.OptionalNamedType("extnValue", univ.OctetString()),
    )


class ExtensionReqTemplate(univ.SequenceOf):
    componentType = ExtensionTemplate()
    subtypeSpec = constraint.ValueSizeConstraint(1, MAX)


class Attributes(univ.SetOf):
    """PKCS#10 Attributes (RFC 5912 PKCS-10 module): a SET OF Attribute, possibly empty."""

    componentType = rfc5280.Attribute()


class CertificationRequestInfoTemplate(univ.Sequence):
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("version", univ.Integer(namedValues=namedval.NamedValues(("v1", 0)))),
        namedtype.OptionalNamedType("subject", NameTemplate()),
        namedtype.OptionalNamedType("subjectPKInfo", SubjectPublicKeyInfoTemplate().subtype(
            implicitTag=tag.Tag(tag.tagClassContext, tag.tagFormatConstructed, 0))),
        namedtype.NamedType("attributes", Attributes().subtype(
            implicitTag=tag.Tag(tag.tagClassContext, tag.tagFormatConstructed, 1))),
    )


class TemplateError(ValueError):
    """A template that is not DER of the RFC 9908 structure or breaks one of its MUSTs."""


def encode(value: univ.Asn1Item) -> bytes:
    return encoder.encode(value)


def decode_template(der: bytes) -> CertificationRequestInfoTemplate:
    """A CertificationRequestInfoTemplate, checked against RFC 9908 §3.4's MUSTs."""
    value = _decode(der, CertificationRequestInfoTemplate(), "CertificationRequestInfoTemplate")
    if int(value["version"]) != 0:
        raise TemplateError("template version is not v1 (0)")
    kinds = [str(a["type"]) for a in value["attributes"]]
    if kinds.count(ID_AA_EXTENSION_REQ_TEMPLATE) > 1:
        raise TemplateError("template carries more than one extensionReqTemplate attribute")
    if ID_AA_EXTENSION_REQ_TEMPLATE in kinds and ID_EXTENSION_REQ in kinds:
        raise TemplateError("template carries both extensionRequest and extensionReqTemplate")
    return value


def decode_extension_req_template(der: bytes) -> ExtensionReqTemplate:
    return _decode(der, ExtensionReqTemplate(), "ExtensionReqTemplate")


def _decode(der: bytes, spec: univ.Asn1Item, what: str):  # type: ignore[no-untyped-def]
    try:
        value, rest = decoder.decode(der, asn1Spec=spec)
    except PyAsn1Error as exc:
        raise TemplateError(f"not a {what}: {(str(exc).splitlines() or ['parse error'])[0][:160]}") from None
    if rest:
        raise TemplateError(f"trailing bytes after the {what}")
    return value

"""Encoding the CsrAttrs of RFC 7030 4.5.2 from what a label's policy asks for.

pyasn1-modules' rfc7030 module encodes the RFC's own example byte for byte,
so it is used rather than hand-built DER. With `csr_template`, the answer also
carries an RFC 9908 CertificationRequestInfoTemplate (kipuka.est.csr_template)
built from the same policy keys that kipuka.ra.csr enforces.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pyasn1.codec.der import decoder, encoder
from pyasn1.type import univ
from pyasn1_modules import rfc5280, rfc7030

from kipuka import pq
from kipuka.config import Policy
from kipuka.est import csr_template as tpl
from kipuka.ra.csr import subject_requirements

ID_EC_PUBLIC_KEY = "1.2.840.10045.2.1"
RSA_ENCRYPTION = "1.2.840.113549.1.1.1"
ED25519 = "1.3.101.112"
ECDSA_WITH_SHA256 = "1.2.840.10045.4.3.2"
ECDSA_WITH_SHA384 = "1.2.840.10045.4.3.3"
SHA256_WITH_RSA = "1.2.840.113549.1.1.11"
EXTENSION_REQUEST = "1.2.840.113549.1.9.14"
SUBJECT_ALT_NAME = "2.5.29.17"
CHALLENGE_PASSWORD = "1.2.840.113549.1.9.7"
CURVES = {"ec-p256": "1.2.840.10045.3.1.7", "ec-p384": "1.3.132.0.34", "ec-p521": "1.3.132.0.35"}


def csrattrs_for(policy: Policy) -> bytes | None:
    """DER CsrAttrs for a policy, or None when it asks for nothing (204)."""
    if not policy.csrattrs and not policy.require_linking:
        return None
    items = rfc7030.CsrAttrs()
    curves = [CURVES[k] for k in policy.key_types if k in CURVES]
    if curves:
        items.append(_oid(ECDSA_WITH_SHA384 if curves[0] != CURVES["ec-p256"] else ECDSA_WITH_SHA256))
        items.append(_attribute(ID_EC_PUBLIC_KEY, curves))
    if "rsa" in policy.key_types:  # RFC 9908 §3.2 (example 5.4): rsaEncryption with the modulus length
        items.append(_oid(SHA256_WITH_RSA))
        items.append(_attribute_values(RSA_ENCRYPTION, [univ.Integer(policy.rsa_min_bits)]))
    if "ed25519" in policy.key_types:
        items.append(_oid(ED25519))
    for kind in policy.key_types:  # RFC 9881: id-ml-dsa-NN names the key and the signature algorithm alike
        if kind in pq.OID_BY_TYPE:
            items.append(_oid(pq.OID_BY_TYPE[kind]))
    if policy.san_types:
        # "Include a subjectAltName" with no value to impose: the extension's OID on its own.
        # RFC 9908 §3.2 requires an extensionRequest attribute to hold complete Extensions
        # (extnValue included), so RFC 7030's OID-inside-extensionRequest form is not used.
        items.append(_oid(SUBJECT_ALT_NAME))
    if policy.require_linking:  # RFC 7030 §3.5: ask for tls-unique / tls-exporter in challengePassword
        items.append(_oid(CHALLENGE_PASSWORD))
    if policy.csr_template and policy.csrattrs:  # RFC 9908 §4: legacy clients ignore it, newer ones use only it
        items.append(_attribute_values(tpl.ID_AA_CERTIFICATION_REQUEST_INFO_TEMPLATE, [template_for(policy)]))
    return encoder.encode(items)


def template_for(policy: Policy) -> tpl.CertificationRequestInfoTemplate:
    """RFC 9908 §3.4: the subject RDNs, key and extensions the label requires, values only where fixed.

    The template has room for one key algorithm: the first of `key_types` (any of them is
    accepted). An RSA size is told, as the RFC says, by a dummy key of that modulus length.
    """
    value = tpl.CertificationRequestInfoTemplate()
    value["version"] = 0
    rdns = subject_requirements(policy)
    if rdns:
        sequence = value["subject"]["rdnSequence"]
        for oid, fixed in rdns:
            rdn = tpl.RelativeDistinguishedNameTemplate()
            rdn.append(_rdn_attribute(oid, fixed))
            sequence.append(rdn)
    _fill_key(value["subjectPKInfo"], policy.key_types[0], policy.rsa_min_bits)
    if policy.require_san:
        extensions = tpl.ExtensionReqTemplate()
        wanted = tpl.ExtensionTemplate()
        wanted["extnID"] = univ.ObjectIdentifier(SUBJECT_ALT_NAME)  # no extnValue: the requester picks its names
        extensions.append(wanted)
        attr = rfc5280.Attribute()
        attr["type"] = univ.ObjectIdentifier(tpl.ID_AA_EXTENSION_REQ_TEMPLATE)
        attr["values"].append(encoder.encode(extensions))
        value["attributes"].append(attr)
    else:
        value["attributes"].clear()  # present and empty: nothing to ask for
    return value


def _rdn_attribute(oid: x509.ObjectIdentifier, fixed: str | None) -> tpl.SingleAttributeTemplate:
    item = tpl.SingleAttributeTemplate()
    item["type"] = univ.ObjectIdentifier(oid.dotted_string)
    if fixed is not None:  # the string type cryptography picks for the attribute (C: PrintableString, ...)
        der = x509.Name([x509.NameAttribute(oid, fixed)]).public_bytes()
        name, _ = decoder.decode(der, asn1Spec=rfc5280.Name())
        item["value"] = name["rdnSequence"][0][0]["value"]
    return item


def _fill_key(spki: tpl.SubjectPublicKeyInfoTemplate, key_type: str, rsa_bits: int) -> None:
    alg = spki["algorithm"]
    if key_type in CURVES:
        alg["algorithm"] = univ.ObjectIdentifier(ID_EC_PUBLIC_KEY)
        alg["parameters"] = encoder.encode(univ.ObjectIdentifier(CURVES[key_type]))
    elif key_type == "rsa":
        alg["algorithm"] = univ.ObjectIdentifier(RSA_ENCRYPTION)
        alg["parameters"] = encoder.encode(univ.Null(""))
        spki["subjectPublicKey"] = univ.BitString.fromOctetString(_dummy_rsa_key(rsa_bits))
    elif key_type in pq.OID_BY_TYPE:  # RFC 9881 §2: parameters absent
        alg["algorithm"] = univ.ObjectIdentifier(pq.OID_BY_TYPE[key_type])
    else:  # ed25519: RFC 8410, no parameters
        alg["algorithm"] = univ.ObjectIdentifier(ED25519)


def _dummy_rsa_key(bits: int) -> bytes:
    """RSAPublicKey DER with a `bits`-bit modulus: a placeholder nobody can use, only its length counts."""
    numbers = rsa.RSAPublicNumbers(65537, (1 << (bits - 1)) | 1)
    return numbers.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)


def _oid(dotted: str) -> rfc7030.AttrOrOID:
    item = rfc7030.AttrOrOID()
    item["oid"] = univ.ObjectIdentifier(dotted)
    return item


def _attribute_values(attr_type: str, values: list[univ.Asn1Item]) -> rfc7030.AttrOrOID:
    item = rfc7030.AttrOrOID()
    attr = item["attribute"]
    attr["attrType"] = univ.ObjectIdentifier(attr_type)
    for value in values:
        attr["attrValues"].append(encoder.encode(value))
    return item


def _attribute(attr_type: str, value_oids: list[str]) -> rfc7030.AttrOrOID:
    item = rfc7030.AttrOrOID()
    attr = item["attribute"]
    attr["attrType"] = univ.ObjectIdentifier(attr_type)
    for dotted in value_oids:
        attr["attrValues"].append(univ.ObjectIdentifier(dotted))
    return item

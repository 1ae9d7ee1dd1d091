"""Encoding the CsrAttrs of RFC 7030 4.5.2 from what a label's policy asks for.

pyasn1-modules' rfc7030 module encodes the RFC's own example byte for byte,
so it is used rather than hand-built DER.
"""

from __future__ import annotations

from pyasn1.codec.der import encoder
from pyasn1.type import univ
from pyasn1_modules import rfc7030

from kipuka.config import Policy

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
    if "rsa" in policy.key_types:
        items.append(_oid(SHA256_WITH_RSA))
        items.append(_oid(RSA_ENCRYPTION))
    if "ed25519" in policy.key_types:
        items.append(_oid(ED25519))
    if policy.san_types:
        items.append(_attribute(EXTENSION_REQUEST, [SUBJECT_ALT_NAME]))
    if policy.require_linking:  # RFC 7030 §3.5: ask for tls-unique / tls-exporter in challengePassword
        items.append(_oid(CHALLENGE_PASSWORD))
    return encoder.encode(items)


def _oid(dotted: str) -> rfc7030.AttrOrOID:
    item = rfc7030.AttrOrOID()
    item["oid"] = univ.ObjectIdentifier(dotted)
    return item


def _attribute(attr_type: str, value_oids: list[str]) -> rfc7030.AttrOrOID:
    item = rfc7030.AttrOrOID()
    attr = item["attribute"]
    attr["attrType"] = univ.ObjectIdentifier(attr_type)
    for dotted in value_oids:
        attr["attrValues"].append(univ.ObjectIdentifier(dotted))
    return item

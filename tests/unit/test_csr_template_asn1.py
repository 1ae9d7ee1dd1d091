"""RFC 9908 ASN.1 against the RFC's own examples: decode, check the meaning, re-encode byte for byte.

Vectors:
- RFC9908_TEMPLATE is the CertificationRequestInfoTemplate of RFC 9908 §3.4 (the server wants a CN
  filled in, OU=myDept and OU=myGroup, an EC P-256 key, a subjectAltName with DNS www.myServer.com
  and an IP address to fill in, keyUsage critical digitalSignature+keyAgreement, and an
  extKeyUsage to fill in). The RFC prints it only as a dumpasn1 listing (the WG source has it as
  examples/template.txt); these bytes are that listing in DER, written out by hand and checked
  with `openssl asn1parse` against it, with id-aa-extensionReqTemplate = 1.2.840.113549.1.9.16.2.62.
- RFC9908_EXAMPLES are the base64 CsrAttrs of RFC 9908 §5.1-5.5 (§5.6 repeats §5.3's bytes), as
  transcribed from the RFC in pyasn1-alt-modules tests/test_rfc9908.py by the RFC's shepherd.
"""

from __future__ import annotations

import base64

import pytest
from pyasn1.codec.der import decoder, encoder
from pyasn1.type import univ
from pyasn1_modules import rfc5280, rfc7030

from kipuka.config import Policy
from kipuka.est import csr_template as tpl
from kipuka.est.csrattrs import csrattrs_for, template_for

RFC9908_TEMPLATE = bytes.fromhex(
    "308193020100302c310730050603550403310f300d060355040b0c066d79446570743110300e060355040b0c07"
    "6d7947726f7570a015301306072a8648ce3d020106082a8648ce3d030107a1493047060b2a864886f70d010910"
    "023e31383036301d0603551d110416301482107777772e6d795365727665722e636f6d8700300e0603551d0f01"
    "01ff04040302038830050603551d25")

RFC9908_EXAMPLES = {
    "5.1 ACP otherName": "MGgwZgYJKoZIhvcNAQkOMVkwVzBVBgNVHREBAf8ESzBJoEcGCCsGAQUFBwgKoDsWOXJmYzg5OTQrZmQ3"
                         "MzlmYzIzYzM0NDAxMTIyMzM0NDU1MDAwMDAwMDArQGFjcC5leGFtcGxlLmNvbQ==",
    "5.2 RFC 7030 original": "MDIGCSqGSIb3DQEJBzASBgcqhkjOPQIBMQcGBSuBBAAiBgcrBgEBAQEWBggqhkjOPQQDAw==",
    "5.3 specific extension": "MEUGCSqGSIb3DQEJBzASBgcqhkjOPQIBMQcGBSuBBAAjBgkqhkiG9w0BCRQGCgmSJomT8ixkAQUG"
                              "A1UEBQYIKoZIzj0EAwQ=",
    "5.4 RSA 4096": "MCkGCSqGSIb3DQEJBzARBgkqhkiG9w0BAQExBAICEAAGCSqGSIb3DQEBCw==",
    "5.5 curve P-384": "MC4GCSqGSIb3DQEJBzASBgcqhkjOPQIBMQcGBSuBBAAiBgNVBAUGCCqGSM49BAMD",
}


def _string(any_value: univ.Any) -> str:
    return str(decoder.decode(bytes(any_value))[0])


def test_rfc9908_template_example_round_trips_byte_for_byte():
    value = tpl.decode_template(RFC9908_TEMPLATE)
    assert tpl.encode(value) == RFC9908_TEMPLATE
    rdns = [(str(rdn[0]["type"]), _string(rdn[0]["value"]) if rdn[0]["value"].isValue else None)
            for rdn in value["subject"]["rdnSequence"]]
    assert rdns == [("2.5.4.3", None), ("2.5.4.11", "myDept"), ("2.5.4.11", "myGroup")]
    alg = value["subjectPKInfo"]["algorithm"]
    assert str(alg["algorithm"]) == "1.2.840.10045.2.1"
    assert str(decoder.decode(bytes(alg["parameters"]))[0]) == "1.2.840.10045.3.1.7"  # secp256r1
    assert not value["subjectPKInfo"]["subjectPublicKey"].isValue
    (attr,) = value["attributes"]
    assert str(attr["type"]) == tpl.ID_AA_EXTENSION_REQ_TEMPLATE
    raw = bytes(attr["values"][0])
    extensions = tpl.decode_extension_req_template(raw)
    assert encoder.encode(extensions) == raw
    san, key_usage, eku = extensions
    assert str(san["extnID"]) == "2.5.29.17" and not san["critical"]
    names, _ = decoder.decode(bytes(san["extnValue"]), asn1Spec=rfc5280.SubjectAltName())
    assert bytes(names[0]["dNSName"]) == b"www.myServer.com" and bytes(names[1]["iPAddress"]) == b""
    assert str(key_usage["extnID"]) == "2.5.29.15" and key_usage["critical"]
    bits, _ = decoder.decode(bytes(key_usage["extnValue"]), asn1Spec=rfc5280.KeyUsage())
    named = rfc5280.KeyUsage.namedValues
    assert {n for n in ("digitalSignature", "keyAgreement", "keyEncipherment") if bits[named[n]]} \
        == {"digitalSignature", "keyAgreement"}
    assert str(eku["extnID"]) == "2.5.29.37" and not eku["extnValue"].isValue  # to be filled in


def test_rfc9908_template_inside_csrattrs_round_trips():
    """The template as /csrattrs carries it: an AttrOrOID attribute id-aa-certificationRequestInfoTemplate."""
    item = rfc7030.AttrOrOID()
    item["attribute"]["attrType"] = univ.ObjectIdentifier(tpl.ID_AA_CERTIFICATION_REQUEST_INFO_TEMPLATE)
    item["attribute"]["attrValues"].append(RFC9908_TEMPLATE)
    attrs = rfc7030.CsrAttrs()
    attrs.append(item)
    der = encoder.encode(attrs)
    decoded, rest = decoder.decode(der, asn1Spec=rfc7030.CsrAttrs())
    assert not rest and encoder.encode(decoded) == der
    assert der[6:19] == bytes.fromhex("060b2a864886f70d010910023d")  # OID 1.2.840.113549.1.9.16.2.61
    assert tpl.encode(tpl.decode_template(bytes(decoded[0]["attribute"]["attrValues"][0]))) == RFC9908_TEMPLATE


@pytest.mark.parametrize("name", sorted(RFC9908_EXAMPLES))
def test_rfc9908_section5_examples_round_trip(name):
    der = base64.b64decode(RFC9908_EXAMPLES[name])
    decoded, rest = decoder.decode(der, asn1Spec=rfc7030.CsrAttrs())
    assert not rest and encoder.encode(decoded) == der


def test_rfc9908_acp_example_extensions_read_as_extension_templates():
    """§5.1: the extensionRequest value is one Extensions; ExtensionTemplate is its superset."""
    decoded, _ = decoder.decode(base64.b64decode(RFC9908_EXAMPLES["5.1 ACP otherName"]), asn1Spec=rfc7030.CsrAttrs())
    raw = bytes(decoded[0]["attribute"]["attrValues"][0])
    extensions = tpl.decode_extension_req_template(raw)
    assert encoder.encode(extensions) == raw
    assert str(extensions[0]["extnID"]) == "2.5.29.17" and extensions[0]["critical"]
    assert b"@acp.example.com" in bytes(extensions[0]["extnValue"])


def _with(value: tpl.CertificationRequestInfoTemplate, **changes) -> bytes:
    for name, v in changes.items():
        value[name] = v
    return tpl.encode(value)


def test_template_decoder_enforces_rfc9908_musts():
    base = tpl.decode_template(RFC9908_TEMPLATE)
    with pytest.raises(tpl.TemplateError, match="v1"):
        tpl.decode_template(_with(tpl.decode_template(RFC9908_TEMPLATE), version=1))
    twice = tpl.decode_template(RFC9908_TEMPLATE)
    twice["attributes"].append(base["attributes"][0])
    with pytest.raises(tpl.TemplateError, match="more than one extensionReqTemplate"):
        tpl.decode_template(tpl.encode(twice))
    both = tpl.decode_template(RFC9908_TEMPLATE)
    ext_req = rfc5280.Attribute()
    ext_req["type"] = univ.ObjectIdentifier(tpl.ID_EXTENSION_REQ)
    ext_req["values"].append(encoder.encode(univ.Null("")))
    both["attributes"].append(ext_req)
    with pytest.raises(tpl.TemplateError, match="both extensionRequest and extensionReqTemplate"):
        tpl.decode_template(tpl.encode(both))
    with pytest.raises(tpl.TemplateError, match="trailing"):
        tpl.decode_template(RFC9908_TEMPLATE + b"\x00")
    with pytest.raises(tpl.TemplateError, match="not a CertificationRequestInfoTemplate"):
        tpl.decode_template(RFC9908_TEMPLATE[:-3])


def test_policy_template_has_the_rfc_shape():
    """What kipuka builds decodes with the same types and keeps its bytes."""
    policy = Policy(key_types=("rsa",), rsa_min_bits=3072, subject_rdns=("C=NZ", "O=Example Corp", "OU"),
                    require_san=True, csr_template=True)
    der = tpl.encode(template_for(policy))
    value = tpl.decode_template(der)
    assert tpl.encode(value) == der
    rdns = [(str(r[0]["type"]), _string(r[0]["value"]) if r[0]["value"].isValue else None)
            for r in value["subject"]["rdnSequence"]]
    assert rdns == [("2.5.4.6", "NZ"), ("2.5.4.10", "Example Corp"), ("2.5.4.11", None), ("2.5.4.3", None)]
    assert bytes(value["subject"]["rdnSequence"][0][0]["value"])[0] == 0x13  # C is a PrintableString
    spki = value["subjectPKInfo"]
    assert str(spki["algorithm"]["algorithm"]) == "1.2.840.113549.1.1.1"
    modulus = decoder.decode(spki["subjectPublicKey"].asOctets())[0][0]
    assert int(modulus).bit_length() == 3072  # RFC 9908 §3.4: a dummy key of the wanted modulus length
    (ext,) = tpl.decode_extension_req_template(bytes(value["attributes"][0]["values"][0]))
    assert str(ext["extnID"]) == "2.5.29.17" and not ext["extnValue"].isValue


def test_template_is_only_sent_when_the_label_asks_for_it():
    assert tpl.ID_AA_CERTIFICATION_REQUEST_INFO_TEMPLATE not in _attr_types(csrattrs_for(Policy()))
    assert tpl.ID_AA_CERTIFICATION_REQUEST_INFO_TEMPLATE in _attr_types(csrattrs_for(Policy(csr_template=True)))
    assert csrattrs_for(Policy(csr_template=True, csrattrs=False)) is None


def _attr_types(der: bytes) -> list[str]:
    decoded, _ = decoder.decode(der, asn1Spec=rfc7030.CsrAttrs())
    return [str(i["attribute"]["attrType"]) for i in decoded if i.getName() == "attribute"]


def test_client_reads_the_rfc_template_and_follows_it():
    """kipuka-est's reading of the §3.4 example; RFC 9908 §4: the template decides the key type."""
    from kipuka.client import wire
    legacy = base64.b64decode(RFC9908_EXAMPLES["5.4 RSA 4096"])  # asks for RSA 4096 the old way
    decoded, _ = decoder.decode(legacy, asn1Spec=rfc7030.CsrAttrs())
    item = rfc7030.AttrOrOID()
    item["attribute"]["attrType"] = univ.ObjectIdentifier(tpl.ID_AA_CERTIFICATION_REQUEST_INFO_TEMPLATE)
    item["attribute"]["attrValues"].append(RFC9908_TEMPLATE)
    decoded.append(item)
    attrs = wire.csr_attributes(encoder.encode(decoded))
    assert attrs.template is not None and attrs.key_type("rsa2048") == "ec-p256" and attrs.key_types() == ["ec-p256"]
    assert attrs.template.rdns == (("2.5.4.3", None), ("2.5.4.11", "myDept"), ("2.5.4.11", "myGroup"))
    assert [(o, c, v is None) for o, c, v in attrs.template.extensions] == [
        ("2.5.29.17", False, False), ("2.5.29.15", True, False), ("2.5.29.37", False, True)]
    assert attrs.template.wants_san
    assert wire.csr_attributes(legacy).key_type() == "rsa4096"  # without the template: the legacy answer


def test_client_ignores_a_template_it_cannot_read():
    from kipuka.client import wire
    item = rfc7030.AttrOrOID()
    item["attribute"]["attrType"] = univ.ObjectIdentifier(tpl.ID_AA_CERTIFICATION_REQUEST_INFO_TEMPLATE)
    item["attribute"]["attrValues"].append(encoder.encode(univ.Integer(7)))
    attrs = rfc7030.CsrAttrs()
    attrs.append(item)
    assert wire.csr_attributes(encoder.encode(attrs)).template is None

"""RFC 9908 CSR templates on a real server: /csrattrs over TLS, and what arrives held to what was advertised.

One server, with a label that advertises a template (fixed C and O, an OU and a CN to fill in, an
EC P-384 key, a subjectAltName) and an RSA label that asks for 3072-bit keys.
"""

from __future__ import annotations

import base64
import json
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from pyasn1.codec.der import decoder
from pyasn1_modules import rfc7030

from kipuka.config import ConfigError, load_config
from kipuka.est import csr_template as tpl
from tests.helpers import b64, certs_from, edit_config, make_csr, make_server, new_key, unique

LABELS = """
[labels.templated]
ca = "iot-fleet"
key_types = ["ec-p384", "ec-p256"]
subject_rdns = ["C=NZ", "O=Example Corp", "OU"]
require_san = true
csr_template = true

[labels.rsa-templated]
key_types = ["rsa"]
rsa_min_bits = 3072
csr_template = true
"""
CURVES = {"1.2.840.10045.3.1.7": ec.SECP256R1(), "1.3.132.0.34": ec.SECP384R1()}


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    server = make_server(tmp_path_factory.mktemp("template"), append=LABELS).start()
    yield server
    server.stop()


def csrattrs_der(srv, label: str | None) -> bytes:
    r = srv.get("csrattrs", label=label)
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/csrattrs"
    return base64.b64decode(r.content)


def template_of(der: bytes) -> tpl.CertificationRequestInfoTemplate | None:
    attrs, rest = decoder.decode(der, asn1Spec=rfc7030.CsrAttrs())
    assert not rest
    found = [i["attribute"] for i in attrs if i.getName() == "attribute"
             and str(i["attribute"]["attrType"]) == tpl.ID_AA_CERTIFICATION_REQUEST_INFO_TEMPLATE]
    assert len(found) <= 1
    return tpl.decode_template(bytes(found[0]["attrValues"][0])) if found else None


def csr_from_template(template, key, *, fill: dict, sans: list[x509.GeneralName]) -> bytes:
    """What an RFC 9908 client does: keep fixed RDN values, fill the open ones, add the asked extensions."""
    rdns = []
    for rdn in template["subject"]["rdnSequence"]:
        oid = x509.ObjectIdentifier(str(rdn[0]["type"]))
        fixed = rdn[0]["value"]
        value = str(decoder.decode(bytes(fixed))[0]) if fixed.isValue else fill[oid]
        rdns.append(x509.NameAttribute(oid, value))
    asked = {str(e["extnID"]) for a in template["attributes"] if str(a["type"]) == tpl.ID_AA_EXTENSION_REQ_TEMPLATE
             for e in tpl.decode_extension_req_template(bytes(a["values"][0]))}
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(rdns))
    if "2.5.29.17" in asked:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(key, hashes.SHA384()).public_bytes(serialization.Encoding.DER)


def test_template_over_tls_read_by_kipuka_and_openssl(srv, tmp_path):
    der = csrattrs_der(srv, "templated")
    template = template_of(der)
    assert template is not None
    rdns = [(str(r[0]["type"]), str(decoder.decode(bytes(r[0]["value"]))[0]) if r[0]["value"].isValue else None)
            for r in template["subject"]["rdnSequence"]]
    assert rdns == [("2.5.4.6", "NZ"), ("2.5.4.10", "Example Corp"), ("2.5.4.11", None), ("2.5.4.3", None)]
    alg = template["subjectPKInfo"]["algorithm"]
    assert str(alg["algorithm"]) == "1.2.840.10045.2.1"
    assert str(decoder.decode(bytes(alg["parameters"]))[0]) == "1.3.132.0.34"  # the label's first type, P-384
    assert not template["subjectPKInfo"]["subjectPublicKey"].isValue
    (ext,) = tpl.decode_extension_req_template(bytes(template["attributes"][0]["values"][0]))
    assert str(ext["extnID"]) == "2.5.29.17" and not ext["extnValue"].isValue
    (tmp_path / "csrattrs.der").write_bytes(der)
    out = subprocess.run(["openssl", "asn1parse", "-inform", "DER", "-in", str(tmp_path / "csrattrs.der"), "-i"],
                         capture_output=True, text=True, check=True).stdout
    for expected in ("1.2.840.113549.1.9.16.2.61", "1.2.840.113549.1.9.16.2.62", ":NZ", ":Example Corp",
                     ":organizationalUnitName", "cont [ 0 ]", "cont [ 1 ]", ":secp384r1",
                     ":X509v3 Subject Alternative Name"):
        assert expected in out, out
    # the legacy elements RFC 9908 §4 keeps for older clients are still there; subjectAltName is asked
    # for as a bare OID, never as an extensionRequest without an extension value (RFC 9908 §3.2)
    assert ":id-ecPublicKey" in out and ":prime256v1" in out and ":Extension Request" not in out


def test_labels_without_csr_template_answer_as_before(srv):
    assert template_of(csrattrs_der(srv, None)) is None
    assert template_of(csrattrs_der(srv, "iot-fleet")) is None


def test_rsa_size_is_a_dummy_key_of_that_length(srv):
    template = template_of(csrattrs_der(srv, "rsa-templated"))
    spki = template["subjectPKInfo"]
    assert str(spki["algorithm"]["algorithm"]) == "1.2.840.113549.1.1.1"
    modulus = decoder.decode(spki["subjectPublicKey"].asOctets())[0][0]
    assert int(modulus).bit_length() == 3072


def test_csr_built_from_the_template_is_accepted(srv):
    entity = unique()
    otp = srv.otp(entity, "--label", "templated")
    template = template_of(csrattrs_der(srv, "templated"))
    curve = CURVES[str(decoder.decode(bytes(template["subjectPKInfo"]["algorithm"]["parameters"]))[0])]
    der = csr_from_template(template, ec.generate_private_key(curve),
                            fill={NameOID.ORGANIZATIONAL_UNIT_NAME: "Sensors",
                                  NameOID.COMMON_NAME: f"{entity}.example.com"},
                            sans=[x509.DNSName(f"{entity}.example.com")])
    (cert,) = certs_from(srv.post("simpleenroll", b64(der), label="templated", auth=(entity, otp)))
    assert cert.subject.rfc4514_string() == f"CN={entity}.example.com,OU=Sensors,O=Example Corp,C=NZ"


def _subject(*pairs) -> x509.Name:
    return x509.Name([x509.NameAttribute(oid, v) for oid, v in pairs])


def _csr(subject: x509.Name, key=None, san: str | None = "dns") -> bytes:
    key = key or ec.generate_private_key(ec.SECP384R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    cn = subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if san and cn:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(str(cn[0].value))]), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


C, O, OU, CN = NameOID.COUNTRY_NAME, NameOID.ORGANIZATION_NAME, NameOID.ORGANIZATIONAL_UNIT_NAME, NameOID.COMMON_NAME


@pytest.mark.parametrize("case, make, reason", [
    ("missing OU", lambda cn: _csr(_subject((C, "NZ"), (O, "Example Corp"), (CN, cn))),
     "CSR subject has no OU (this label requires one)"),
    ("missing C", lambda cn: _csr(_subject((O, "Example Corp"), (OU, "x"), (CN, cn))),
     "CSR subject C must be 'NZ' on this label"),
    ("other O", lambda cn: _csr(_subject((C, "NZ"), (O, "Evil Corp"), (OU, "x"), (CN, cn))),
     "CSR subject O must be 'Example Corp' on this label"),
    ("extra O", lambda cn: _csr(_subject((C, "NZ"), (O, "Example Corp"), (O, "Evil Corp"), (OU, "x"), (CN, cn))),
     "CSR subject O 'Evil Corp' is not allowed (this label fixes O to 'Example Corp')"),
    ("no SAN", lambda cn: _csr(_subject((C, "NZ"), (O, "Example Corp"), (OU, "x"), (CN, cn)), san=None),
     "CSR has no subjectAltName extension (this label requires one)"),
    ("RSA key", lambda cn: _csr(_subject((C, "NZ"), (O, "Example Corp"), (OU, "x"), (CN, cn)),
                                key=rsa.generate_private_key(65537, 2048)),
     "key type rsa is not allowed here (allowed: ec-p384, ec-p256)"),
])
def test_csr_against_the_advertised_template_is_400(srv, case, make, reason):
    entity = unique()
    otp = srv.otp(entity, "--uses", "2", "--label", "templated")
    r = srv.post("simpleenroll", b64(make(f"{entity}.example.com")), label="templated", auth=(entity, otp))
    assert r.status_code == 400, (case, r.status_code, r.text)
    assert r.headers["Content-Type"].startswith("text/plain")
    assert r.text.strip() == reason, case


def test_rsa_key_below_the_advertised_size_is_400(srv):
    entity = unique()
    otp = srv.otp(entity, "--label", "rsa-templated")
    _, der = make_csr(f"{entity}.example.com", new_key("rsa2048"))
    r = srv.post("simpleenroll", b64(der), label="rsa-templated", auth=(entity, otp))
    assert r.status_code == 400 and r.text.strip() == "RSA key of 2048 bits is too small (minimum 3072)"
    _, der = make_csr(f"{entity}.example.com", new_key("rsa3072"))
    certs_from(srv.post("simpleenroll", b64(der), label="rsa-templated", auth=(entity, otp)))


@pytest.mark.parametrize("pattern, replacement, key, words", [
    (r"^require_san = true\ncsr_template = true$", "require_san = true\ncsr_template = true\nrequire_linking = true",
     "labels.templated.csr_template", "cannot ask for challengePassword"),
    (r"^subject_rdns = .*$", 'subject_rdns = ["Org=Example"]', "labels.templated.subject_rdns", "'Org'"),
    (r"^subject_rdns = .*$", 'subject_rdns = ["C=NZL"]', "labels.templated.subject_rdns", "two letters"),
    (r"^subject_rdns = .*$", 'subject_rdns = ["O="]', "labels.templated.subject_rdns", "empty value"),
])
def test_config_refuses_what_a_template_cannot_say(srv, pattern, replacement, key, words):
    config = srv.dir / "check.toml"  # beside the server's own, so its relative paths still resolve
    config.write_text(srv.config.read_text())
    load_config(config)
    edit_config(config, {pattern: replacement})
    with pytest.raises(ConfigError) as err:
        load_config(config)
    assert err.value.key == key and words in err.value.message


# --- kipuka-est reads the template and fills a CSR from it --------------------------------------------

def kipuka_est(srv, capsys, *args: str) -> tuple[int, str, str]:
    from kipuka.client.cli import main
    code = main([args[0], "-s", f"https://localhost:{srv.port}", "--trust", srv.ca_bundle, "--label", "templated",
                 *args[1:]])
    out, err = capsys.readouterr()
    return code, out, err


def test_kipuka_est_shows_the_template(srv, capsys):
    code, out, _ = kipuka_est(srv, capsys, "csrattrs", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["key_type"] == "ec-p384"
    assert doc["csrattrs"]["template"]["subject"] == [
        {"type": "2.5.4.6", "value": "NZ"}, {"type": "2.5.4.10", "value": "Example Corp"},
        {"type": "2.5.4.11", "value": None}, {"type": "2.5.4.3", "value": None}]
    assert doc["csrattrs"]["template"]["extensions"] == [{"oid": "2.5.29.17", "critical": False, "value": None}]
    code, out, _ = kipuka_est(srv, capsys, "csrattrs")
    assert "template subject: C=NZ, O=Example Corp, OU=<fill in>, CN=<fill in>" in out
    assert "template key: ec-p384" in out


def test_kipuka_est_enrolls_from_the_template(srv, capsys, tmp_path):
    entity = unique()
    otp = srv.otp(entity, "--label", "templated")
    names = ("-u", entity, "--otp", otp, "--cn", f"{entity}.example.com", "--out-cert", str(tmp_path / "d.crt"),
             "--out-key", str(tmp_path / "d.key"))
    code, _, err = kipuka_est(srv, capsys, "enroll", *names)  # what the template asks for and is missing
    assert code != 0 and "the server's CSR template asks for a subjectAltName: give --san" in err, err
    code, _, err = kipuka_est(srv, capsys, "enroll", *names, "--san", f"dns:{entity}.example.com")
    assert code != 0 and "the server's CSR template asks for a subject OU: give --rdn OU=VALUE" in err, err
    code, _, err = kipuka_est(srv, capsys, "enroll", *names, "--rdn", "OU=Sensors",
                              "--san", f"dns:{entity}.example.com")
    assert code == 0, err
    cert = x509.load_pem_x509_certificate((tmp_path / "d.crt").read_bytes())
    assert cert.subject.rfc4514_string() == f"CN={entity}.example.com,OU=Sensors,O=Example Corp,C=NZ"
    key = serialization.load_pem_private_key((tmp_path / "d.key").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1"  # the template's curve

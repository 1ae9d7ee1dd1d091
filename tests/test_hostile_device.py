"""A hostile device with one valid OTP or one device certificate (issue #16).

Each test is one attack against the configuration `kipuka init` writes: the status
and one-line reason, no certificate in the store, a rejection in the audit trail,
and the legitimate variant of the same request still issued. The `lenient` server
shows that each knob lets an operator opt back in deliberately.
"""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from tests.helpers import (admin_call, admin_token, b64, certs_from, enroll_identity, make_csr, make_server,
                           new_key, unique)

LENIENT = """
[labels.lenient]
ca = "corp-devices"
mtls_enroll_cas = ["default"]   # holders of the unlabeled path's certificates may enroll here
subject_unlisted = "drop"       # O, OU ... are left out instead of refused
dns_suffixes = ["*"]            # any domain
max_sans = 50

[labels.fixed]
ca = "default"
subject_fixed = ["O=kipuka demo"]   # the CA puts it in; a CSR may only repeat it
"""


@pytest.fixture(scope="module")
def lenient(tmp_path_factory):
    srv = make_server(tmp_path_factory.mktemp("lenient"), append=LENIENT).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def token(server):
    return admin_token(server, unique("hostile"))


def _csr(key, attrs: list[tuple[x509.ObjectIdentifier, str]], sans: list[x509.GeneralName] | None = None) -> bytes:
    """A CSR with any subject, past cryptography's own length checks (what an attacker sends)."""
    subject = x509.Name([x509.NameAttribute(oid, value, _validate=False) for oid, value in attrs])
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def _otp_enroll(srv, entity: str, der: bytes, *, label: str | None = None, otp: str | None = None):
    otp = otp or srv.otp(entity, *(["--label", label] if label else []))
    return srv.post("simpleenroll", b64(der), auth=(entity, otp), label=label)


def _refused(srv, token: str, r, status: int, reason: str, entity: str, certs_before: int = 0) -> None:
    """The status and its one-line reason; nothing issued (store, audit); the rejection audited."""
    assert r.status_code == status, (r.status_code, r.text)
    assert reason in r.text and r.text.strip().count("\n") == 0, r.text
    certs = admin_call(srv, "GET", "/admin/certs", token, params={"entity": entity}).json()["items"]
    assert len(certs) == certs_before, certs
    events = admin_call(srv, "GET", "/admin/audit", token, params={"entity": entity}).json()["items"]
    assert any(e["outcome"] == "rejected" and reason in e["reason"] for e in events), events
    issued = [e for e in events if e["outcome"] == "success" and e["event"] in ("enroll", "reenroll")]
    assert len(issued) == certs_before, issued


# --- 1. an OTP's names: the entity id, then a boundary, inside the allowed domains ------------

def test_otp_of_dev_1_cannot_get_dev_10(server, token):
    entity = unique("dev")
    r = _otp_enroll(server, entity, make_csr(f"{entity}0.example.com")[1])
    _refused(server, token, r, 403, "is not allowed for entity", entity)
    assert certs_from(_otp_enroll(server, entity, make_csr(f"{entity}.example.com")[1]))


def test_otp_cannot_get_its_id_under_a_foreign_domain(server, token):
    entity = unique("dev")
    r = _otp_enroll(server, entity, make_csr(f"{entity}.evil.com")[1])
    _refused(server, token, r, 400, "outside the allowed domains (example.com)", entity)


def test_otp_cannot_get_an_email_under_a_foreign_domain(server, token):
    entity = unique("dev")
    sans = [x509.RFC822Name(f"{entity}@evil.com")]
    r = _otp_enroll(server, entity, make_csr(f"{entity}.example.com", sans=sans)[1])
    _refused(server, token, r, 400, "outside the allowed domains", entity)
    good = [x509.RFC822Name(f"{entity}@example.com")]
    assert certs_from(_otp_enroll(server, entity, make_csr(f"{entity}.example.com", sans=good)[1]))


def test_otp_cannot_get_another_entitys_email(server, token):
    entity = unique("dev")
    sans = [x509.RFC822Name(f"{entity}0@example.com")]
    r = _otp_enroll(server, entity, make_csr(f"{entity}.example.com", sans=sans)[1])
    _refused(server, token, r, 403, "is not allowed for entity", entity)


def test_any_domain_is_an_explicit_opt_in(lenient):
    entity = unique("dev")
    assert certs_from(_otp_enroll(lenient, entity, make_csr(f"{entity}.evil.com")[1], label="lenient"))


# --- 2. label isolation for mTLS /simpleenroll ---------------------------------------------

def test_unlabeled_certificate_cannot_enroll_on_corp_devices(server, token, tmp_path):
    crt, key, cert = enroll_identity(server, tmp_path)
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    r = server.post("simpleenroll", b64(make_csr(cn)[1]), label="corp-devices", cert=(crt, key))
    _refused(server, token, r, 403, "not by this label's CA 'corp-devices'", cert.subject.rfc4514_string())
    assert certs_from(server.post("simpleenroll", b64(make_csr(cn)[1]), cert=(crt, key)))  # its own label


def test_iot_fleet_certificate_cannot_enroll_on_corp_devices(server, token, tmp_path):
    crt, key, cert = enroll_identity(server, tmp_path, label="iot-fleet")
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    r = server.post("simpleenroll", b64(make_csr(cn)[1]), label="corp-devices", cert=(crt, key))
    _refused(server, token, r, 403, "was issued by CA 'iot-fleet'", cert.subject.rfc4514_string())
    assert certs_from(server.post("simpleenroll", b64(make_csr(cn)[1]), label="iot-fleet", cert=(crt, key)))


def test_a_label_may_accept_another_cas_holders(lenient, tmp_path):
    crt, key, cert = enroll_identity(lenient, tmp_path)
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert certs_from(lenient.post("simpleenroll", b64(make_csr(cn)[1]), label="lenient", cert=(crt, key)))


# --- 3. subject attributes: an allow-list ----------------------------------------------------

def test_organization_and_ou_in_the_csr_are_refused(server, token):
    entity = unique("dev")
    attrs = [(NameOID.ORGANIZATION_NAME, "Other Corp"), (NameOID.ORGANIZATIONAL_UNIT_NAME, "admins"),
             (NameOID.COMMON_NAME, f"{entity}.example.com")]
    r = _otp_enroll(server, entity, _csr(new_key(), attrs))
    _refused(server, token, r, 403, "subject attribute O is not allowed on this label", entity)


def test_a_label_may_drop_unlisted_attributes_instead(lenient):
    entity = unique("dev")
    attrs = [(NameOID.ORGANIZATION_NAME, "Other Corp"), (NameOID.ORGANIZATIONAL_UNIT_NAME, "admins"),
             (NameOID.COMMON_NAME, f"{entity}.example.com")]
    cert = certs_from(_otp_enroll(lenient, entity, _csr(new_key(), attrs), label="lenient"))[0]
    assert cert.subject.rfc4514_string() == f"CN={entity}.example.com"


def test_a_label_may_fix_attributes_the_ca_puts_in_itself(lenient, tmp_path):
    entity = unique("dev")
    otp = lenient.otp(entity, "--label", "fixed", "--uses", "2")
    other = [(NameOID.ORGANIZATION_NAME, "Other Corp"), (NameOID.COMMON_NAME, f"{entity}.example.com")]
    r = _otp_enroll(lenient, entity, _csr(new_key(), other), label="fixed", otp=otp)
    assert r.status_code == 403 and "set by this label's CA to 'kipuka demo'" in r.text, r.text
    key = new_key()
    cert = certs_from(_otp_enroll(lenient, entity, make_csr(f"{entity}.example.com", key)[1], label="fixed",
                                  otp=otp))[0]
    assert cert.subject.rfc4514_string() == f"CN={entity}.example.com,O=kipuka demo"
    crt = tmp_path / "fixed.crt"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "fixed.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                          serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
    renewed = lenient.post("simplereenroll", b64(make_csr(f"{entity}.example.com", key)[1]), label="fixed",
                           cert=(str(crt), str(tmp_path / "fixed.key")))  # the CSR need not repeat O
    assert certs_from(renewed)[0].subject == cert.subject


# --- 4. common name content ------------------------------------------------------------------

@pytest.mark.parametrize("attack, suffix, reason", [
    ("a 3,005-character CN", ".example.com" + "x" * 2980, "RFC 5280 allows at most 64"),
    ("a NUL", ".example.com\x00.evil.com", "contains a NUL or control character"),
    ("a control character", ".example.com\x1b[2J", "contains a NUL or control character"),
    ("a wildcard", ".*.example.com", "wildcard"),
])
def test_cn_content_is_refused(server, token, attack, suffix, reason):
    entity = unique("dev")
    r = _otp_enroll(server, entity, _csr(new_key(), [(NameOID.COMMON_NAME, entity + suffix)]))
    _refused(server, token, r, 400, reason, entity)


def test_a_64_character_cn_is_issued(server):
    entity = unique("dev").ljust(52, "x")
    cn = f"{entity}.example.com"
    assert len(cn) == 64
    assert certs_from(_otp_enroll(server, entity, make_csr(cn)[1]))


def test_nul_in_a_san_is_refused(server, token):
    entity = unique("dev")
    sans = [x509.UniformResourceIdentifier(f"https://{entity}.example.com/\x00evil")]
    r = _otp_enroll(server, entity, make_csr(f"{entity}.example.com", sans=sans)[1])
    _refused(server, token, r, 400, "contains a NUL or control character", entity)


# --- 5. SAN count ----------------------------------------------------------------------------

def test_more_sans_than_max_sans_are_refused(server, token, lenient):
    entity = unique("dev")
    sans = [x509.DNSName(f"{entity}.s{i}.example.com") for i in range(11)]
    r = _otp_enroll(server, entity, make_csr(f"{entity}.example.com", sans=sans)[1])
    _refused(server, token, r, 400, "allows at most 10", entity)
    assert certs_from(_otp_enroll(server, entity, make_csr(f"{entity}.example.com", sans=sans[:10])[1]))
    assert certs_from(_otp_enroll(lenient, entity, make_csr(f"{entity}.example.com", sans=sans)[1],
                                  label="lenient"))


# --- 6. OTP scope ----------------------------------------------------------------------------

def test_otp_made_without_a_label_is_refused_on_a_label(server, token):
    entity = unique("dev")
    otp = server.otp(entity)
    der = make_csr(f"{entity}.example.com")[1]
    r = _otp_enroll(server, entity, der, label="corp-devices", otp=otp)
    _refused(server, token, r, 401, "invalid entity id or OTP", entity)
    assert certs_from(_otp_enroll(server, entity, der, otp=otp))  # the unlabeled path


def test_otp_for_any_label_is_an_explicit_choice(server, token):
    entity = unique("dev")
    otp = server.otp(entity, "--label", "any", "--uses", "2")
    der = make_csr(f"{entity}.example.com")[1]
    assert certs_from(_otp_enroll(server, entity, der, label="corp-devices", otp=otp))
    listed = server.cli("otp", "list", "--entity", entity).stdout
    assert "\tany\t" in listed


def test_admin_api_otp_scope_defaults_to_the_unlabeled_path(server, token):
    made = admin_call(server, "POST", "/admin/otp", token, json_body={"entity": unique("dev")}).json()["items"][0]
    assert made["label"] == ""
    entity = made["entity"]
    r = _otp_enroll(server, entity, make_csr(f"{entity}.example.com")[1], label="iot-fleet", otp=made["otp"])
    _refused(server, token, r, 401, "invalid entity id or OTP", entity)
    listed = admin_call(server, "POST", "/admin/otp", token,
                        json_body={"entity": unique("dev"), "label": ["iot-fleet", "corp-devices"]}).json()
    assert listed["items"][0]["label"] == "iot-fleet,corp-devices"
    anyone = admin_call(server, "POST", "/admin/otp", token, json_body={"entity": unique("dev"), "label": "any"})
    assert anyone.json()["items"][0]["label"] == "any"


# --- 7. the recovery window matches the names too --------------------------------------------

def test_recovery_retry_with_the_same_key_and_other_names_gets_nothing(server, token):
    entity = unique("dev")
    otp = server.otp(entity)
    key = new_key()
    first_csr = make_csr(f"{entity}.example.com", key)[1]
    first = certs_from(_otp_enroll(server, entity, first_csr, otp=otp))[0]
    other = make_csr(f"{entity}.example.com", key, sans=[x509.DNSName(f"{entity}.admin.example.com")])[1]
    r = _otp_enroll(server, entity, other, otp=otp)
    _refused(server, token, r, 401, "the same key and the same names", entity, certs_before=1)
    again = certs_from(_otp_enroll(server, entity, first_csr, otp=otp))[0]  # a lost response, retried
    assert again == first

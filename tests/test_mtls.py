"""mTLS authentication for /simpleenroll and /simplereenroll."""

import subprocess

import pytest
import requests
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.helpers import (b64, certs_from, enroll_identity, make_csr, make_test_ca, new_key, sign_certificate,
                           unique, write_identity)

CMC_RA = x509.ObjectIdentifier("1.3.6.1.5.5.7.3.28")


def _csr_from_cert(cert: x509.Certificate, key, *, cn: str | None = None, sans=None) -> bytes:
    name = cn or cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)[0].value
    return b64(make_csr(name, key, sans=sans)[1])


def _key_of(path: str):
    from cryptography.hazmat.primitives import serialization
    return serialization.load_pem_private_key(open(path, "rb").read(), None)


# --- simpleenroll over mTLS ------------------------------------------------------------------

def test_mtls_enroll_with_own_names_is_200(server, tmp_path):
    crt, key, cert = enroll_identity(server, tmp_path)
    new = new_key()
    r = server.post("simpleenroll", _csr_from_cert(cert, new), cert=(crt, key))
    issued = certs_from(r)[0]
    assert issued.subject == cert.subject and issued.public_key() == new.public_key()


def test_mtls_enroll_with_other_names_is_403(server, tmp_path):
    crt, key, cert = enroll_identity(server, tmp_path)
    r = server.post("simpleenroll", _csr_from_cert(cert, new_key(), cn="other.example.com"), cert=(crt, key))
    assert r.status_code == 403 and "its own names" in r.text


def test_mtls_enroll_without_any_credential_is_401(server):
    r = server.post("simpleenroll", b64(make_csr("x.example.com")[1]))
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == 'Basic realm="est"'


def test_expired_client_certificate_is_401_with_reason(server, tmp_path):
    key = new_key()
    cert = sign_certificate(server.dir / "ca" / "default.pem", server.dir / "private" / "default.key",
                            key.public_key(), "old.example.com", days=-1, not_before_days=-30)
    crt, k = write_identity(tmp_path, "expired", key, cert)
    r = server.post("simpleenroll", _csr_from_cert(cert, key), cert=(crt, k))
    assert r.status_code == 401 and "expired" in r.text
    r = server.post("simplereenroll", _csr_from_cert(cert, key), cert=(crt, k))
    assert r.status_code == 401 and "expired" in r.text
    assert "WWW-Authenticate" not in r.headers  # a certificate-only operation: no Basic challenge


def test_not_yet_valid_client_certificate_is_401(server, tmp_path):
    key = new_key()
    cert = sign_certificate(server.dir / "ca" / "default.pem", server.dir / "private" / "default.key",
                            key.public_key(), "future.example.com", days=30, not_before_days=2)
    crt, k = write_identity(tmp_path, "future", key, cert)
    r = server.post("simplereenroll", _csr_from_cert(cert, key), cert=(crt, k))
    assert r.status_code == 401 and "not yet valid" in r.text


def test_revoked_client_certificate_is_401(server, tmp_path):
    crt, key, cert = enroll_identity(server, tmp_path)
    server.cli("certs", "revoke", format(cert.serial_number, "x"), "--reason", "keyCompromise")
    for op in ("simpleenroll", "simplereenroll"):
        r = server.post(op, _csr_from_cert(cert, _key_of(key)), cert=(crt, key))
        assert r.status_code == 401 and "revoked" in r.text


def test_client_certificate_from_unknown_issuer_fails_the_tls_handshake(server, tmp_path):
    ca_crt, ca_key = make_test_ca(tmp_path, "Stranger CA")
    key = new_key()
    cert = sign_certificate(ca_crt, ca_key, key.public_key(), "stranger.example.com")
    crt, k = write_identity(tmp_path, "stranger", key, cert)
    # The handshake is aborted before any HTTP exchange: the client sees the
    # connection closed during the handshake and never gets a status code.
    with pytest.raises((requests.exceptions.SSLError, requests.exceptions.ConnectionError)):
        server.post("simpleenroll", _csr_from_cert(cert, key), cert=(crt, k))
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", server.ca_bundle,
                          "--cert", crt, "--key", k, "-X", "POST", server.url("simpleenroll")],
                         capture_output=True, text=True, timeout=30)
    assert out.stdout == "000" and out.returncode in (35, 52, 56), (out.returncode, out.stdout)


def test_bootstrap_anchor_certificate_may_request_other_names(fresh_server, tmp_path):
    """A manufacturer (IDevID) certificate bootstraps a device under its operational name."""
    ca_crt, ca_key = make_test_ca(tmp_path, "Acme IDevID CA")
    srv = fresh_server(replacements={r"^csrattrs = true.*$": f'csrattrs = true\nbootstrap_anchors = ["{ca_crt}"]'})
    with open(srv.dir / "tls" / "client-ca.pem", "ab") as fh:
        fh.write(ca_crt.read_bytes())
    srv.stop(); srv.start()
    key = new_key()
    idevid = sign_certificate(ca_crt, ca_key, key.public_key(), "SN-0042")
    crt, k = write_identity(tmp_path, "idevid", key, idevid)
    r = srv.post("simpleenroll", b64(make_csr("sensor-42.example.com", new_key())[1]), cert=(crt, k))
    assert certs_from(r)[0].subject.rfc4514_string() == "CN=sensor-42.example.com"


def test_ra_certificate_with_cmc_ra_may_enroll_for_others(fresh_server, tmp_path):
    ca_crt, ca_key = make_test_ca(tmp_path, "RA CA")
    srv = fresh_server(replacements={r"^csrattrs = true.*$": f'csrattrs = true\nra_anchors = ["{ca_crt}"]'})
    with open(srv.dir / "tls" / "client-ca.pem", "ab") as fh:
        fh.write(ca_crt.read_bytes())
    srv.stop(); srv.start()
    key = new_key()
    ra = sign_certificate(ca_crt, ca_key, key.public_key(), "ra-agent", ekus=[CMC_RA, ExtendedKeyUsageOID.CLIENT_AUTH])
    crt, k = write_identity(tmp_path, "ra", key, ra)
    r = srv.post("simpleenroll", b64(make_csr("device-77.example.com", new_key())[1]), cert=(crt, k))
    assert r.status_code == 200
    # The same CA without the cmcRA usage is not an RA.
    plain = sign_certificate(ca_crt, ca_key, key.public_key(), "not-ra", ekus=[ExtendedKeyUsageOID.CLIENT_AUTH])
    crt2, k2 = write_identity(tmp_path, "notra", key, plain)
    r = srv.post("simpleenroll", b64(make_csr("device-78.example.com", new_key())[1]), cert=(crt2, k2))
    assert r.status_code == 403


# --- simplereenroll ------------------------------------------------------------------------

def test_reenroll_with_same_names_returns_a_fresh_certificate(server, tmp_path):
    crt, key, cert = enroll_identity(server, tmp_path)
    r = server.post("simplereenroll", _csr_from_cert(cert, _key_of(key)), cert=(crt, key))
    renewed = certs_from(r)[0]
    assert renewed.subject == cert.subject and renewed.serial_number != cert.serial_number


def test_reenroll_with_a_new_key_rekeys(server, tmp_path):
    crt, key, cert = enroll_identity(server, tmp_path)
    new = new_key()
    renewed = certs_from(server.post("simplereenroll", _csr_from_cert(cert, new), cert=(crt, key)))[0]
    assert renewed.public_key() == new.public_key()


def test_reenroll_without_client_certificate_is_401_without_a_basic_challenge(server):
    """Only the current certificate, as TLS client certificate, can authenticate a re-enrollment:
    a `WWW-Authenticate: Basic` challenge would invite credentials that can never succeed."""
    entity = unique()
    otp = server.otp(entity)
    csr = b64(make_csr(f"{entity}.example.com")[1])
    for auth in (None, (entity, otp)):  # no credentials at all, and Basic credentials
        r = server.post("simplereenroll", csr, auth=auth)
        assert r.status_code == 401 and r.headers["Content-Type"] == "text/plain; charset=utf-8"
        assert "WWW-Authenticate" not in r.headers
        assert "current certificate" in r.text and "TLS client certificate" in r.text


def test_reenroll_with_another_subject_is_403(server, tmp_path):
    crt, key, cert = enroll_identity(server, tmp_path)
    r = server.post("simplereenroll", _csr_from_cert(cert, _key_of(key), cn="other.example.com"), cert=(crt, key))
    assert r.status_code == 403 and "differs" in r.text


def test_reenroll_with_an_added_subject_alt_name_is_403(server, tmp_path):
    crt, key, cert = enroll_identity(server, tmp_path)
    body = _csr_from_cert(cert, _key_of(key), sans=[x509.DNSName("extra.example.com")])
    assert server.post("simplereenroll", body, cert=(crt, key)).status_code == 403


def test_reenroll_on_another_labels_ca_is_403(server, tmp_path):
    crt, key, cert = enroll_identity(server, tmp_path)
    r = server.post("simplereenroll", _csr_from_cert(cert, _key_of(key)), cert=(crt, key), label="iot-fleet")
    assert r.status_code == 403 and "this label's CA" in r.text


def test_reenroll_on_its_own_label(server, tmp_path):
    crt, key, cert = enroll_identity(server, tmp_path, label="iot-fleet")
    r = server.post("simplereenroll", _csr_from_cert(cert, _key_of(key)), cert=(crt, key), label="iot-fleet")
    renewed = certs_from(r)[0]
    assert renewed.issuer == cert.issuer


def test_every_reenrollment_is_recorded_with_its_auth_method(server, tmp_path):
    crt, key, cert = enroll_identity(server, tmp_path)
    renewed = certs_from(server.post("simplereenroll", _csr_from_cert(cert, _key_of(key)), cert=(crt, key)))[0]
    shown = server.cli("certs", "show", format(renewed.serial_number, "x")).stdout
    assert "auth: mtls" in shown and "status: valid" in shown


def _with_change_subject_name(csr_der: bytes, key, old_subject: x509.Name) -> bytes:
    """The CSR re-signed with a ChangeSubjectName attribute (RFC 6402 §2.8) naming `old_subject`.

    cryptography cannot add a structured attribute, so the CertificationRequestInfo is edited
    with pyasn1 and signed again with the same key."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from pyasn1.codec.der import decoder, encoder
    from pyasn1.type import univ
    from pyasn1_modules import rfc2986

    req, _ = decoder.decode(csr_der, asn1Spec=rfc2986.CertificationRequest())
    info = req["certificationRequestInfo"]
    attr = rfc2986.Attribute()
    attr["type"] = univ.ObjectIdentifier("1.3.6.1.5.5.7.7.36")
    attr["values"].append(univ.Any(b"\x30" + _der_len(len(old_subject.public_bytes())) + old_subject.public_bytes()))
    info["attributes"].append(attr)
    tbs = encoder.encode(info)
    req["signature"] = univ.BitString.fromOctetString(key.sign(tbs, ec.ECDSA(hashes.SHA256())))
    return encoder.encode(req)


def _der_len(n: int) -> bytes:
    return bytes([n]) if n < 128 else bytes([0x81, n]) if n < 256 else bytes([0x82, n >> 8, n & 0xFF])


def test_reenroll_with_new_names_and_change_subject_name_is_200_where_allowed(fresh_server, tmp_path):
    """allow_subject_change: a new subject is accepted when ChangeSubjectName names the current one."""
    srv = fresh_server(replacements={r"^allow_subject_change = false": "allow_subject_change = true"})
    crt, key_path, cert = enroll_identity(srv, tmp_path)
    key = _key_of(key_path)
    entity_prefix = cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)[0].value
    renamed = f"renamed-{entity_prefix}"
    plain = make_csr(renamed, key)[1]
    r = srv.post("simplereenroll", b64(plain), cert=(crt, key_path))
    assert r.status_code == 403 and "ChangeSubjectName" in r.text
    stranger = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "someone-else.example.com")])
    r = srv.post("simplereenroll", b64(_with_change_subject_name(plain, key, stranger)), cert=(crt, key_path))
    assert r.status_code == 403 and "ChangeSubjectName" in r.text
    r = srv.post("simplereenroll", b64(_with_change_subject_name(plain, key, cert.subject)), cert=(crt, key_path))
    assert r.status_code == 200, r.text
    renewed = certs_from(r)[0]
    assert renewed.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)[0].value == renamed

"""Revocation: re-enrollment refused, CRL and OCSP as openssl reads them."""

import subprocess

import pytest
import requests
from cryptography import x509

from tests.helpers import admin_call, admin_token, b64, enroll_identity, make_csr, public_url


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    from tests.helpers import make_server
    server = make_server(tmp_path_factory.mktemp("revocation")).start()
    server.token = admin_token(server)
    yield server
    server.stop()


def _revoke(srv, cert, reason="keyCompromise"):
    r = admin_call(srv, "POST", f"/admin/certs/{cert.serial_number:x}/revoke", srv.token, json_body={"reason": reason})
    assert r.status_code == 200, r.text


def _crl(srv, tmp_path, ca="default") -> str:
    r = requests.get(public_url(srv, f"/crl/{ca}.crl"), timeout=10)
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/pkix-crl"
    path = tmp_path / f"{ca}.crl"
    path.write_bytes(r.content)
    return str(path)


def test_revoked_certificate_cannot_reenroll(srv, tmp_path):
    crt, key, cert = enroll_identity(srv, tmp_path)
    _revoke(srv, cert)
    from cryptography.hazmat.primitives import serialization
    k = serialization.load_pem_private_key(open(key, "rb").read(), None)
    r = srv.post("simplereenroll", b64(make_csr(cert.subject.rfc4514_string()[3:], k)[1]), cert=(crt, key))
    assert r.status_code == 401 and "revoked" in r.text


def test_openssl_crl_lists_the_revoked_serial(srv, tmp_path):
    _, _, cert = enroll_identity(srv, tmp_path)
    _revoke(srv, cert, "superseded")
    path = _crl(srv, tmp_path)
    out = subprocess.run(["openssl", "crl", "-inform", "DER", "-in", path, "-noout", "-text"],
                         capture_output=True, text=True, check=True).stdout
    assert f"{cert.serial_number:X}".rjust(2, "0") in out.replace(":", "").upper()
    assert "X509v3 CRL Number" in out and "Next Update" in out and "Superseded" in out
    verify = subprocess.run(["openssl", "crl", "-inform", "DER", "-in", path, "-noout",
                             "-CAfile", str(srv.dir / "ca" / "default.pem")], capture_output=True, text=True)
    assert "verify OK" in verify.stdout + verify.stderr


def test_crl_number_increases_with_each_revocation(srv, tmp_path):
    def number():
        return x509.load_der_x509_crl(open(_crl(srv, tmp_path), "rb").read()).extensions.get_extension_for_class(
            x509.CRLNumber).value.crl_number
    before = number()
    _, _, cert = enroll_identity(srv, tmp_path)
    _revoke(srv, cert)
    assert number() > before


def test_each_ca_has_its_own_crl(srv, tmp_path):
    _, _, cert = enroll_identity(srv, tmp_path, label="iot-fleet")
    _revoke(srv, cert)
    iot = x509.load_der_x509_crl(open(_crl(srv, tmp_path, "iot-fleet"), "rb").read())
    default = x509.load_der_x509_crl(open(_crl(srv, tmp_path, "default"), "rb").read())
    assert iot.get_revoked_certificate_by_serial_number(cert.serial_number) is not None
    assert default.get_revoked_certificate_by_serial_number(cert.serial_number) is None
    assert requests.get(public_url(srv, "/crl/nope.crl"), timeout=10).status_code == 404


def _ocsp(srv, tmp_path, crt):
    return subprocess.run(["openssl", "ocsp", "-issuer", str(srv.dir / "ca" / "default.pem"), "-cert", crt,
                           "-url", public_url(srv, "/ocsp/default"), "-CAfile", srv.ca_bundle, "-resp_text"],
                          capture_output=True, text=True, timeout=30)


def test_openssl_ocsp_reports_good_then_revoked(srv, tmp_path):
    crt, _, cert = enroll_identity(srv, tmp_path)
    good = _ocsp(srv, tmp_path, crt)
    assert f"{crt}: good" in good.stdout and "Response verify OK" in good.stderr, good.stdout + good.stderr
    _revoke(srv, cert, "keyCompromise")
    revoked = _ocsp(srv, tmp_path, crt)
    assert f"{crt}: revoked" in revoked.stdout and "Reason: keyCompromise" in revoked.stdout
    assert "Response verify OK" in revoked.stderr


def test_ocsp_get_form_and_unknown_serial(srv, tmp_path):
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509 import ocsp
    import base64
    _, _, cert = enroll_identity(srv, tmp_path)
    issuer = x509.load_pem_x509_certificate((srv.dir / "ca" / "default.pem").read_bytes())
    req = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1()).build()
    encoded = base64.b64encode(req.public_bytes(serialization.Encoding.DER)).decode()
    r = requests.get(public_url(srv, f"/ocsp/default/{encoded}"), timeout=10)
    assert r.headers["Content-Type"] == "application/ocsp-response"
    assert ocsp.load_der_ocsp_response(r.content).certificate_status == ocsp.OCSPCertStatus.GOOD
    unknown = ocsp.OCSPRequestBuilder().add_certificate_by_hash(
        req.issuer_name_hash, req.issuer_key_hash, 12345, hashes.SHA1()).build()
    r = requests.post(public_url(srv, "/ocsp/default"), data=unknown.public_bytes(serialization.Encoding.DER),
                      headers={"Content-Type": "application/ocsp-request"}, timeout=10)
    assert ocsp.load_der_ocsp_response(r.content).certificate_status == ocsp.OCSPCertStatus.UNKNOWN


def test_ocsp_garbage_is_malformed_request(srv):
    from cryptography.x509 import ocsp
    r = requests.post(public_url(srv, "/ocsp/default"), data=b"\x30\x03garbage", timeout=10)
    assert ocsp.load_der_ocsp_response(r.content).response_status == ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_issued_certificates_carry_crl_and_ocsp_urls(srv, tmp_path):
    _, _, cert = enroll_identity(srv, tmp_path)
    cdp = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert cdp[0].full_name[0].value == f"http://localhost:{srv.public_port}/crl/default.crl"
    aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert aia[0].access_location.value == f"http://localhost:{srv.public_port}/ocsp/default"


def test_cli_revoke_reaches_the_crl(srv, tmp_path):
    _, _, cert = enroll_identity(srv, tmp_path)
    srv.cli("certs", "revoke", f"{cert.serial_number:x}", "--reason", "cessationOfOperation")
    crl = x509.load_der_x509_crl(open(_crl(srv, tmp_path), "rb").read())
    assert crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None

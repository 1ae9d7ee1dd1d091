"""Pending approval (RFC 7030 4.2.3): 202 + Retry-After, then the certificate or 403."""

import subprocess

from tests.helpers import admin_call, admin_token, b64, certs_from, make_csr, new_key, unique, enroll_identity

APPROVAL = {r"^require_approval = false.*$": "require_approval = true",
            r'^retry_after = "60s".*$': 'retry_after = "7s"'}


def _submit(srv, entity, otp, key):
    _, der = make_csr(f"{entity}.example.com", key)
    return srv.post("simpleenroll", b64(der), auth=(entity, otp))


def _pending_id(srv, token, entity):
    items = admin_call(srv, "GET", "/admin/requests", token).json()["items"]
    return next(r["id"] for r in items if r["entity"] == entity)


def test_curl_gets_202_then_the_certificate_after_approval(fresh_server, tmp_path):
    srv = fresh_server(replacements=APPROVAL)
    token = admin_token(srv)
    entity = unique()
    otp = srv.otp(entity)
    key, der = make_csr(f"{entity}.example.com")
    (tmp_path / "csr.b64").write_bytes(b64(der))
    curl = ["curl", "-s", "-D", "-", "-o", str(tmp_path / "out.p7b"), "--cacert", srv.ca_bundle, "-u",
            f"{entity}:{otp}", "-H", "Content-Type: application/pkcs10", "--data-binary",
            f"@{tmp_path / 'csr.b64'}", srv.url("simpleenroll")]
    first = subprocess.run(curl, capture_output=True, text=True, timeout=30).stdout
    assert first.startswith("HTTP/1.1 202 Accepted")
    assert "Retry-After: 7" in first and "Content-Length: 0" in first
    again = subprocess.run(curl, capture_output=True, text=True, timeout=30).stdout
    assert again.startswith("HTTP/1.1 202")
    r = admin_call(srv, "POST", f"/admin/requests/{_pending_id(srv, token, entity)}/approve", token)
    assert r.status_code == 200, r.text
    issued_serial = r.json()["certificate"]["serial"]
    done = subprocess.run(curl, capture_output=True, text=True, timeout=30).stdout
    assert done.startswith("HTTP/1.1 200")
    out = subprocess.run(f"base64 -d {tmp_path / 'out.p7b'} | openssl pkcs7 -inform DER -print_certs | "
                         "openssl x509 -noout -serial", shell=True, capture_output=True, text=True).stdout
    assert int(out.strip().split("=")[1], 16) == int(issued_serial, 16)


def test_retry_on_a_new_connection_with_a_new_csr_of_the_same_key_is_the_same_request(fresh_server):
    srv = fresh_server(replacements=APPROVAL)
    token = admin_token(srv)
    entity, key = unique(), new_key()
    otp = srv.otp(entity)
    assert _submit(srv, entity, otp, key).status_code == 202
    assert _submit(srv, entity, otp, key).status_code == 202  # requests opens a new connection each time
    items = [r for r in admin_call(srv, "GET", "/admin/requests", token).json()["items"] if r["entity"] == entity]
    assert len(items) == 1
    admin_call(srv, "POST", f"/admin/requests/{items[0]['id']}/approve", token)
    cert = certs_from(_submit(srv, entity, otp, key))[0]
    assert cert.public_key() == key.public_key()
    # ...and again: the same certificate, not a second one
    assert certs_from(_submit(srv, entity, otp, key))[0] == cert
    assert len(srv.cli("certs", "list", "--entity", entity).stdout.strip().splitlines()) == 1


def test_rejected_request_gets_403_with_the_officers_reason_and_frees_the_otp(fresh_server):
    srv = fresh_server(replacements=APPROVAL)
    token = admin_token(srv)
    entity, key = unique(), new_key()
    otp = srv.otp(entity)
    assert _submit(srv, entity, otp, key).status_code == 202
    r = admin_call(srv, "POST", f"/admin/requests/{_pending_id(srv, token, entity)}/reject", token,
                   json_body={"reason": "unknown device serial"})
    assert r.status_code == 200 and r.json()["status"] == "rejected"
    denied = _submit(srv, entity, otp, key)
    assert denied.status_code == 403 and "unknown device serial" in denied.text
    # The reserved use came back: the same OTP can submit a new request with a new key.
    assert _submit(srv, entity, otp, new_key()).status_code == 202


def test_pending_request_reserves_the_otp_use(fresh_server):
    srv = fresh_server(replacements=APPROVAL)
    entity = unique()
    otp = srv.otp(entity)
    assert _submit(srv, entity, otp, new_key()).status_code == 202
    other = _submit(srv, entity, otp, new_key())  # a second key: the single use is reserved
    assert other.status_code == 401


def test_expired_request_is_closed_and_releases_the_otp(fresh_server):
    srv = fresh_server(replacements={**APPROVAL, r'^pending_ttl = "7d".*$': 'pending_ttl = "2s"'})
    token = admin_token(srv)
    entity, key = unique(), new_key()
    otp = srv.otp(entity)
    assert _submit(srv, entity, otp, key).status_code == 202
    import time
    time.sleep(2.5)
    # The retry finds the request expired: a fresh request is held instead.
    assert _submit(srv, entity, otp, key).status_code == 202
    statuses = sorted(r["status"] for r in admin_call(srv, "GET", "/admin/requests", token,
                                                      params={"status": "all"}).json()["items"]
                      if r["entity"] == entity)
    assert statuses == ["expired", "pending"]


def test_cli_approves_a_request(fresh_server):
    srv = fresh_server(replacements=APPROVAL)
    entity, key = unique(), new_key()
    otp = srv.otp(entity)
    assert _submit(srv, entity, otp, key).status_code == 202
    listing = srv.cli("requests", "list").stdout
    request_id = next(line.split("\t")[0] for line in listing.splitlines() if entity in line)
    srv.cli("requests", "approve", request_id)
    assert certs_from(_submit(srv, entity, otp, key))[0].public_key() == key.public_key()


def test_reenroll_can_require_approval(fresh_server, tmp_path):
    srv = fresh_server(replacements={r"^reenroll_requires_approval = false.*$": "reenroll_requires_approval = true"})
    token = admin_token(srv)
    crt, k, cert = enroll_identity(srv, tmp_path)
    from cryptography.hazmat.primitives import serialization
    key = serialization.load_pem_private_key(open(k, "rb").read(), None)
    body = b64(make_csr(cert.subject.rfc4514_string()[3:], key)[1])
    assert srv.post("simplereenroll", body, cert=(crt, k)).status_code == 202
    pending = [r for r in admin_call(srv, "GET", "/admin/requests", token).json()["items"] if r["op"] == "reenroll"]
    admin_call(srv, "POST", f"/admin/requests/{pending[0]['id']}/approve", token)
    assert certs_from(srv.post("simplereenroll", body, cert=(crt, k)))[0].subject == cert.subject

"""The admin API: every endpoint, authentication, JSON errors."""

import json

import pytest

from tests.helpers import admin_call, admin_token, b64, enroll_identity, make_csr, unique


@pytest.fixture(scope="module")
def admin(tmp_path_factory):
    from tests.helpers import make_server
    srv = make_server(tmp_path_factory.mktemp("admin"), replacements={
        r"^require_approval = false.*$": "require_approval = false",
        r"^# client_ca = \"tls/admin-ca.pem\".*$": 'client_ca = "tls/client-ca.pem"',  # with one subject
        r"^subjects = \[\].*$": 'subjects = ["CN=admin-ops.example.com"]'}).start()
    srv.token = admin_token(srv)
    yield srv
    srv.stop()


def _assert_json_error(r, status, code):
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["Content-Type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error", "message"} and body["error"] == code and body["message"]


# --- authentication -------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/admin/health", "/admin/otp", "/admin/certs", "/admin/requests", "/admin/ca",
                                  "/admin/audit", "/metrics", "/admin/openapi.json"])
def test_every_endpoint_needs_a_credential(admin, path):
    r = admin_call(admin, "GET", path)
    _assert_json_error(r, 401, "unauthorized")
    assert r.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_wrong_token_is_401(admin):
    _assert_json_error(admin_call(admin, "GET", "/admin/certs", "not-a-token"), 401, "unauthorized")


def test_a_revoked_token_is_401(admin):
    token = admin_token(admin, "short-lived")
    assert admin_call(admin, "GET", "/admin/ca", token).status_code == 200
    admin.cli("admin", "token", "revoke", "short-lived")
    _assert_json_error(admin_call(admin, "GET", "/admin/ca", token), 401, "unauthorized")


def test_liveness_needs_no_credential(admin):
    assert admin_call(admin, "GET", "/admin/health/live").json() == {"status": "ok"}


def test_admin_client_certificate_authenticates_until_revoked(admin, tmp_path):
    crt, key, cert = enroll_identity(admin, tmp_path, "admin-ops")
    assert cert.subject.rfc4514_string() == "CN=admin-ops.example.com"
    assert admin_call(admin, "GET", "/admin/ca", cert=(crt, key)).status_code == 200
    admin_call(admin, "POST", f"/admin/certs/{cert.serial_number:x}/revoke", admin.token,
               json_body={"reason": "keyCompromise"})
    _assert_json_error(admin_call(admin, "GET", "/admin/ca", cert=(crt, key)), 401, "unauthorized")


def test_a_device_certificate_is_not_an_admin(admin, tmp_path):
    crt, key, _ = enroll_identity(admin, tmp_path)
    _assert_json_error(admin_call(admin, "GET", "/admin/ca", cert=(crt, key)), 401, "unauthorized")


# --- health and CAs -----------------------------------------------------------------------

def test_health_reports_database_and_each_ca(admin):
    body = admin_call(admin, "GET", "/admin/health", admin.token).json()
    assert body["status"] == "ok"
    assert set(body["components"]) == {"database", "ca:default", "ca:iot-fleet", "ca:corp-devices"}
    assert admin_call(admin, "GET", "/admin/health/ready", admin.token).status_code == 200


def test_ca_listing_has_chains_and_labels(admin):
    items = admin_call(admin, "GET", "/admin/ca", admin.token).json()["items"]
    iot = next(c for c in items if c["id"] == "iot-fleet")
    assert iot["labels"] == ["iot-fleet"] and len(iot["chain"]) == 2 and iot["health"] == "ok"
    assert iot["crl_urls"] == [f"http://localhost:{admin.public_port}/crl/iot-fleet.crl"]
    assert admin_call(admin, "GET", "/admin/ca/iot-fleet", admin.token).json()["id"] == "iot-fleet"
    _assert_json_error(admin_call(admin, "GET", "/admin/ca/nope", admin.token), 404, "not_found")


# --- OTPs -----------------------------------------------------------------------------------

def test_create_one_otp_and_enroll_with_it(admin):
    entity = unique()
    r = admin_call(admin, "POST", "/admin/otp", admin.token, json_body={"entity": entity, "ttl": "1h"})
    assert r.status_code == 201
    item = r.json()["items"][0]
    assert item["entity"] == entity and item["uses"] == 1
    _, der = make_csr(f"{entity}.example.com")
    assert admin.post("simpleenroll", b64(der), auth=(entity, item["otp"])).status_code == 200


def test_bulk_otps_for_provisioning(admin):
    entities = [unique("bulk") for _ in range(25)]
    r = admin_call(admin, "POST", "/admin/otp", admin.token,
                   json_body={"items": [{"entity": e, "label": "iot-fleet", "uses": 2} for e in entities]})
    assert r.status_code == 201
    created = r.json()["items"]
    assert [c["entity"] for c in created] == entities and len({c["otp"] for c in created}) == 25


def test_a_json_body_arriving_in_pieces_is_read_whole(admin):
    """A large body sent in small chunks with pauses between them (a slow or busy client) is read to
    its end, not cut at whatever the first TCP segments held."""
    import time

    import requests

    body = json.dumps({"items": [{"entity": unique("slow")} for _ in range(300)]}).encode()

    def pieces():
        for i in range(0, len(body), 1000):
            yield body[i:i + 1000]
            time.sleep(0.005)
    r = requests.post(f"https://localhost:{admin.admin_port}/admin/otp", data=pieces(), timeout=30,
                      headers={"Authorization": f"Bearer {admin.token}", "Content-Type": "application/json"},
                      verify=admin.ca_bundle)
    assert r.status_code == 201, r.text
    assert len(r.json()["items"]) == 300


def test_otp_listing_never_shows_secrets(admin):
    entity = unique()
    secret = admin_call(admin, "POST", "/admin/otp", admin.token, json_body={"entity": entity}).json()["items"][0]["otp"]
    r = admin_call(admin, "GET", "/admin/otp", admin.token, params={"entity": entity})
    assert secret not in r.text
    (item,) = r.json()["items"]
    assert item["status"] == "active" and "otp" not in item


def test_revoke_otp(admin):
    entity = unique()
    created = admin_call(admin, "POST", "/admin/otp", admin.token, json_body={"entity": entity}).json()["items"][0]
    assert admin_call(admin, "DELETE", f"/admin/otp/{created['id']}", admin.token).status_code == 204
    _assert_json_error(admin_call(admin, "DELETE", f"/admin/otp/{created['id']}", admin.token), 404, "not_found")
    _, der = make_csr(f"{entity}.example.com")
    assert admin.post("simpleenroll", b64(der), auth=(entity, created["otp"])).status_code == 401


@pytest.mark.parametrize("body", [{"entity": ""}, {"entity": "x", "uses": 0}, {"entity": "x", "ttl": "soon"},
                                  {"items": []}, {"entity": "x", "bogus": 1},
                                  {"entity": "a:b"}])
def test_bad_otp_requests_are_400_json(admin, body):
    _assert_json_error(admin_call(admin, "POST", "/admin/otp", admin.token, json_body=body), 400, "bad_request")


def test_otp_for_an_unknown_label_is_404(admin):
    _assert_json_error(admin_call(admin, "POST", "/admin/otp", admin.token,
                                  json_body={"entity": "x", "label": "no-such"}), 404, "not_found")


def test_malformed_json_is_400(admin):
    r = admin_call(admin, "POST", "/admin/otp", admin.token, data=b"{not json")
    _assert_json_error(r, 400, "bad_request")


# --- certificates -------------------------------------------------------------------------

def test_certificate_search_filters_and_pages(admin, tmp_path):
    prefix = unique("search")
    for i in range(5):
        enroll_identity(admin, tmp_path, f"{prefix}-{i}", label="corp-devices")
    seen, cursor = [], None
    while True:
        params = {"subject_prefix": f"CN={prefix}", "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = admin_call(admin, "GET", "/admin/certs", admin.token, params=params).json()
        seen += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(seen) == 5 and all(c["label"] == "corp-devices" and c["status"] == "valid" for c in seen)
    exact = admin_call(admin, "GET", "/admin/certs", admin.token,
                       params={"subject": f"CN={prefix}-3.example.com"}).json()["items"]
    assert len(exact) == 1 and exact[0]["entity"] == f"{prefix}-3"
    by_entity = admin_call(admin, "GET", "/admin/certs", admin.token, params={"entity": f"{prefix}-1",
                                                                               "ca": "corp-devices"}).json()
    assert len(by_entity["items"]) == 1


def test_certificate_detail_has_the_pem(admin, tmp_path):
    _, _, cert = enroll_identity(admin, tmp_path)
    body = admin_call(admin, "GET", f"/admin/certs/{cert.serial_number:x}", admin.token).json()
    from cryptography import x509
    assert x509.load_pem_x509_certificate(body["pem"].encode()) == cert
    _assert_json_error(admin_call(admin, "GET", "/admin/certs/abcdef", admin.token), 404, "not_found")
    _assert_json_error(admin_call(admin, "GET", "/admin/certs/not-hex", admin.token), 400, "bad_request")


def test_revoke_certificate_with_reason(admin, tmp_path):
    _, _, cert = enroll_identity(admin, tmp_path)
    path = f"/admin/certs/{cert.serial_number:x}/revoke"
    _assert_json_error(admin_call(admin, "POST", path, admin.token, json_body={"reason": "whim"}), 400,
                       "bad_request")
    r = admin_call(admin, "POST", path, admin.token, json_body={"reason": "superseded"})
    assert r.json()["status"] == "revoked" and r.json()["revocation_reason"] == "superseded"
    _assert_json_error(admin_call(admin, "POST", path, admin.token, json_body={"reason": "superseded"}), 409,
                       "conflict")
    revoked = admin_call(admin, "GET", "/admin/certs", admin.token, params={"status": "revoked"}).json()["items"]
    assert f"{cert.serial_number:x}" in {c["serial"] for c in revoked}


# --- requests, audit, metrics -----------------------------------------------------------------

def test_unknown_request_is_404_and_bad_id_400(admin):
    _assert_json_error(admin_call(admin, "POST", "/admin/requests/999999/approve", admin.token), 404, "not_found")
    _assert_json_error(admin_call(admin, "GET", "/admin/requests/abc", admin.token), 400, "bad_request")
    _assert_json_error(admin_call(admin, "GET", "/admin/requests", admin.token, params={"status": "bogus"}),
                       400, "bad_request")


def test_audit_lists_events_newest_first_with_filters(admin):
    entity = unique()
    admin_call(admin, "POST", "/admin/otp", admin.token, json_body={"entity": entity})
    items = admin_call(admin, "GET", "/admin/audit", admin.token, params={"entity": entity}).json()["items"]
    assert items[0]["event"] == "otp.create" and items[0]["auth"] == "token:tests"
    ids = [e["id"] for e in admin_call(admin, "GET", "/admin/audit", admin.token).json()["items"]]
    assert ids == sorted(ids, reverse=True)


def test_audit_verify_endpoint(admin):
    body = admin_call(admin, "GET", "/admin/audit/verify", admin.token).json()
    assert body["ok"] is True and body["checked"] > 0


def test_metrics_are_prometheus_text(admin):
    entity = unique()
    otp = admin.otp(entity)
    _, der = make_csr(f"{entity}.example.com")
    admin.post("simpleenroll", b64(der), auth=(entity, otp))
    admin.post("simpleenroll", b64(der), auth=(entity, "wrong"))
    text = admin_call(admin, "GET", "/metrics", admin.token).text
    assert 'kipuka_est_requests_total{label="",operation="simpleenroll",status="200"}' in text
    assert "kipuka_est_request_seconds_bucket" in text
    assert "kipuka_otp_failures_total" in text and "kipuka_pending_requests" in text
    assert 'kipuka_certificates_issued_total{ca="default",label=""}' in text


def test_unknown_admin_path_is_json_404(admin):
    _assert_json_error(admin_call(admin, "GET", "/admin/nothing", admin.token), 404, "not_found")


def test_openapi_document_lists_every_route(admin):
    doc = admin_call(admin, "GET", "/admin/openapi.json", admin.token).json()
    assert doc["openapi"].startswith("3.")
    assert {"/admin/otp", "/admin/certs/{serial}/revoke", "/admin/requests/{id}/approve", "/metrics"} <= set(doc["paths"])


def test_request_logs_are_json_with_request_id_and_no_secrets(admin):
    entity = unique()
    otp = admin.otp(entity)
    _, der = make_csr(f"{entity}.example.com")
    r = admin.post("simpleenroll", b64(der), auth=(entity, otp))
    request_id = r.headers["X-Request-Id"]
    import time
    time.sleep(0.3)
    lines = [json.loads(line) for line in admin.log.read_text().splitlines() if line.startswith("{")]
    mine = [l for l in lines if l.get("request_id") == request_id]
    assert mine and mine[0]["status"] == 200 and mine[0]["path"] == "/.well-known/est/simpleenroll"
    assert otp not in admin.log.read_text() and admin.token not in admin.log.read_text()

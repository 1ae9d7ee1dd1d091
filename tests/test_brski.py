"""BRSKI (RFC 8995): kipuka as registrar, over real TLS, with a real test MASA and a pledge driver.

One kipuka server and one MASA for the module; each test makes its own devices (IDevIDs with
their own serial numbers), so the tests do not depend on each other's order.
"""

from __future__ import annotations

import base64
import json
import subprocess
import uuid

import pytest
import requests

from tests.brski.masa import TestMasa
from tests.brski.pki import idevid, make_ca, registrar_identity
from tests.brski.pledge import Pledge, VoucherRejected
from tests.helpers import (admin_call, admin_token, b64, enroll_identity, free_port, make_csr, make_server,
                           new_key)

MEDIA = "application/voucher-cms+json"


@pytest.fixture(scope="module")
def brski(tmp_path_factory):
    root = tmp_path_factory.mktemp("brski")
    acme, globex, masa_ca = make_ca("ACME IDevID CA"), make_ca("Globex IDevID CA"), make_ca("ACME MASA CA")
    masa_port = free_port()
    server = make_server(root, replacements={  # LDevIDs are named SERIAL.devices.example
        r"^dns_suffixes = .*$": 'dns_suffixes = ["example.com", "devices.example"]'}, append=f"""
[brski]
registrar_cert = "private/registrar.crt"
registrar_key = "private/registrar.key"
registrar_chain = "ca/root.pem"
unknown_devices = "hold"
retry_after = "5s"
enroll_window = "1h"

[brski.manufacturers.acme]
ca = "brski/acme-ca.pem"
masa_ca = "brski/masa-ca.pem"
voucher_ca = "brski/masa-ca.pem"
owned_serials = ["ACME-OWN-*"]
label = "iot-fleet"

[brski.manufacturers.globex]
ca = "brski/globex-ca.pem"
masa_ca = "brski/masa-ca.pem"
masa_url = "https://localhost:{masa_port}"
unknown_devices = "reject"
owned_serials = ["GX-1*"]
""")
    (server.dir / "brski").mkdir()
    acme.pem_file(server.dir / "brski" / "acme-ca.pem")
    globex.pem_file(server.dir / "brski" / "globex-ca.pem")
    masa_ca.pem_file(server.dir / "brski" / "masa-ca.pem")
    registrar_identity(server.dir)
    masa = TestMasa(root, masa_ca, acme, server.dir / "ca" / "root.pem", masa_port).start()
    masa.globex = globex  # type: ignore[attr-defined]
    server.start()
    ctx = Context(server, masa, acme, globex, masa_ca, root, admin_token(server))
    yield ctx
    server.stop()
    masa.stop()


class Context:
    def __init__(self, server, masa, acme, globex, masa_ca, root, token) -> None:
        self.server, self.masa, self.acme, self.globex, self.masa_ca = server, masa, acme, globex, masa_ca
        self.root, self.token = root, token

    def pledge(self, prefix: str = "ACME-OWN-", *, maker=None, masa_url: str | None = None) -> Pledge:
        serial = f"{prefix}{uuid.uuid4().hex[:8].upper()}"
        cert = idevid(maker or self.acme, serial, masa_url or self.masa.url)
        return Pledge(cert, self.root, self.masa_ca.cert, port=self.server.port)

    def admin(self, method: str, path: str, **kwargs) -> requests.Response:
        return admin_call(self.server, method, path, self.token, **kwargs)

    def audit(self, entity: str) -> list[dict]:
        r = self.admin("GET", "/admin/audit", params={"entity": entity, "limit": 100})
        assert r.status_code == 200, r.text
        return r.json()["items"]


@pytest.fixture
def ctx(brski):
    brski.masa.mode = "ok"
    return brski


def owned_voucher(ctx, pledge: Pledge) -> dict:
    return pledge.accept_voucher(pledge.post_voucher_request())


# --- the whole flow (RFC 8995 §5) ------------------------------------------------------------

def test_an_owned_pledge_gets_a_voucher_enrolls_with_its_idevid_and_reports_both_statuses(ctx):
    pledge = ctx.pledge()
    voucher = owned_voucher(ctx, pledge)
    assert voucher["assertion"] == "logged" and voucher["serial-number"] == pledge.serial

    # §5.5: the registrar's request to the MASA carries the pledge's own request and its nonce.
    sent = ctx.masa.seen[-1]
    assert sent["nonce"] == base64.b64encode(pledge.nonce).decode()
    assert sent["serial-number"] == pledge.serial

    assert pledge.report("voucher_status", True).status_code == 200
    enrolled = pledge.enroll()  # the unlabeled path: served on the label the ownership names
    ldevid = pledge.ldevid(enrolled)
    assert ldevid.subject.rfc4514_string() == f"CN={pledge.serial}.devices.example"
    assert pledge.report("enrollstatus", True, "LDevID installed").status_code == 200

    serial = format(ldevid.serial_number, "x")
    record = ctx.admin("GET", f"/admin/certs/{serial}").json()
    assert record["label"] == "iot-fleet" and record["auth"] == "idevid"
    assert record["idevid"]["serial_number"] == pledge.serial and record["idevid"]["manufacturer"] == "acme"
    pledge_json = ctx.admin("GET", f"/admin/brski/pledges/{record['idevid']['id']}").json()
    assert pledge_json["ldevids"] == [{"ca": "iot-fleet", "serial": serial}]
    assert json.loads(pledge_json["enroll_status"])["status"] is True
    assert pledge_json["voucher_at"] is not None and pledge_json["voucher"]

    events = [(e["event"], e["outcome"]) for e in reversed(ctx.audit(f"idevid:acme/{pledge.serial}"))]
    assert events == [("brski.pledge", "success"), ("brski.voucher", "success"),
                      ("brski.voucher_status", "success"), ("enroll", "success"), ("brski.enrollstatus", "success")]
    assert ctx.admin("GET", "/admin/audit/verify").json()["ok"] is True


def test_the_voucher_is_returned_unchanged_as_the_masa_signed_it(ctx):
    pledge = ctx.pledge()
    response = pledge.post_voucher_request()
    pledge.accept_voucher(response)
    record = ctx.admin("GET", "/admin/brski/pledges", params={"status": "owned"}).json()["items"]
    stored = next(p for p in record if p["serial_number"] == pledge.serial)
    detail = ctx.admin("GET", f"/admin/brski/pledges/{stored['id']}").json()
    assert base64.b64decode(detail["voucher"]) == response.content


def test_a_failure_the_pledge_reports_is_audited_as_an_error(ctx):
    pledge = ctx.pledge()
    owned_voucher(ctx, pledge)
    assert pledge.report("voucher_status", False, "clock skew").status_code == 200
    [event] = [e for e in ctx.audit(f"idevid:acme/{pledge.serial}") if e["event"] == "brski.voucher_status"]
    assert event["outcome"] == "error" and "clock skew" in event["reason"]


# --- who may ask ---------------------------------------------------------------------------

def test_an_idevid_of_an_unknown_manufacturer_fails_the_tls_handshake(ctx):
    stranger = ctx.pledge(maker=make_ca("Unknown Corp IDevID CA"))
    # Refused in the handshake; on TLS 1.3 the client may see it only as the connection closing.
    with pytest.raises((requests.exceptions.SSLError, requests.exceptions.ConnectionError)):
        stranger.post_voucher_request()


def test_a_client_certificate_that_is_no_idevid_gets_403(ctx, tmp_path):
    crt, key, _ = enroll_identity(ctx.server, tmp_path)  # a kipuka certificate: trusted, but no IDevID
    pledge = ctx.pledge()
    response = pledge.post_voucher_request(cert=(crt, key))
    assert response.status_code == 403 and "not an IDevID" in response.text


def test_a_voucher_request_without_a_client_certificate_gets_401(ctx):
    pledge = ctx.pledge()
    response = requests.post(pledge._url("brski", "requestvoucher"), data=pledge.voucher_request(), verify=False,
                             headers={"Content-Type": MEDIA}, timeout=30)
    assert response.status_code == 401


def test_a_voucher_request_signed_by_another_idevid_is_refused(ctx):
    pledge, other = ctx.pledge(), ctx.pledge()
    response = pledge.post_voucher_request(other.voucher_request())
    assert response.status_code == 400 and "SignerInfo" in response.text


def test_a_voucher_request_naming_another_registrar_as_proximity_cert_is_refused(ctx):
    pledge = ctx.pledge()
    response = pledge.post_voucher_request(pledge.voucher_request(proximity=ctx.masa_ca.cert))
    assert response.status_code == 400 and "proximity-registrar-cert" in response.text
    assert ctx.masa.seen and all(s["serial-number"] != pledge.serial for s in ctx.masa.seen)


def test_a_voucher_request_must_assert_proximity_and_carry_a_nonce(ctx):
    pledge = ctx.pledge()
    assert pledge.post_voucher_request(pledge.voucher_request(assertion="logged")).status_code == 400
    assert pledge.post_voucher_request(pledge.voucher_request(nonce=None)).status_code == 400


def test_a_voucher_request_of_another_media_type_gets_415(ctx):
    pledge = ctx.pledge()
    assert pledge.post_voucher_request(content_type="application/json").status_code == 415


def test_a_voucher_request_signed_by_openssl_is_accepted(ctx, tmp_path):
    """Interop: the pledge's CMS made by `openssl cms -sign` (not by the test's or kipuka's code)."""
    pledge = ctx.pledge()
    from tests.brski import cms
    content, _, _ = cms.verify(pledge.voucher_request())
    (tmp_path / "vr.json").write_bytes(content)
    crt, key = pledge.files
    der = subprocess.run(["openssl", "cms", "-sign", "-in", str(tmp_path / "vr.json"), "-signer", crt, "-inkey", key,
                          "-econtent_type", "1.2.840.113549.1.9.16.1.40", "-nodetach", "-binary", "-nosmimecap",
                          "-outform", "DER"], capture_output=True, check=True).stdout
    pledge.accept_voucher(pledge.post_voucher_request(der))


# --- ownership -----------------------------------------------------------------------------

def test_a_device_no_rule_owns_gets_403_where_unknown_devices_are_rejected(ctx):
    pledge = ctx.pledge("GX-9", maker=ctx.globex)
    response = pledge.post_voucher_request()
    assert response.status_code == 403 and "not owned" in response.text
    [event] = ctx.audit(f"idevid:globex/{pledge.serial}")
    assert (event["event"], event["outcome"]) == ("brski.voucher", "rejected")


def test_a_manufacturers_masa_url_in_the_configuration_overrides_the_idevids(ctx):
    pledge = ctx.pledge("GX-1", maker=ctx.globex, masa_url="masa.invalid.example")
    ctx.masa.manufacturer_ca, saved = ctx.globex, ctx.masa.manufacturer_ca
    try:
        owned_voucher(ctx, pledge)
    finally:
        ctx.masa.manufacturer_ca = saved


def test_an_unknown_device_is_held_with_202_until_an_officer_approves_it(ctx):
    pledge = ctx.pledge("ACME-NEW-")
    held = pledge.post_voucher_request()
    assert held.status_code == 202 and 0 < int(held.headers["Retry-After"]) <= 60
    assert pledge.post_voucher_request().status_code == 202  # a retry before the decision: still held
    pending = ctx.admin("GET", "/admin/brski/pledges", params={"status": "pending"}).json()["items"]
    [mine] = [p for p in pending if p["serial_number"] == pledge.serial]
    approved = ctx.admin("POST", f"/admin/brski/pledges/{mine['id']}/approve", json_body={"label": "corp-devices"})
    assert approved.status_code == 200 and approved.json()["status"] == "approved"
    owned_voucher(ctx, pledge)
    assert pledge.enroll("corp-devices").status_code == 200
    assert pledge.enroll("iot-fleet").status_code == 403


def test_a_device_an_officer_rejected_gets_403(ctx):
    pledge = ctx.pledge("ACME-NEW-")
    assert pledge.post_voucher_request().status_code == 202
    [mine] = [p for p in ctx.admin("GET", "/admin/brski/pledges", params={"status": "pending"}).json()["items"]
              if p["serial_number"] == pledge.serial]
    assert ctx.admin("POST", f"/admin/brski/pledges/{mine['id']}/reject",
                     json_body={"reason": "not ours"}).status_code == 200
    response = pledge.post_voucher_request()
    assert response.status_code == 403 and "not ours" in response.text
    assert pledge.enroll().status_code == 403


def test_an_ownership_rule_added_through_the_admin_api_owns_matching_devices(ctx):
    pattern = f"ACME-LAB-{uuid.uuid4().hex[:4].upper()}-*"
    added = ctx.admin("POST", "/admin/brski/ownership",
                      json_body={"manufacturer": "acme", "pattern": pattern, "label": "corp-devices"})
    assert added.status_code == 201, added.text
    assert ctx.admin("POST", "/admin/brski/ownership",
                     json_body={"manufacturer": "acme", "pattern": pattern}).status_code == 409
    rules = ctx.admin("GET", "/admin/brski/ownership").json()["items"]
    assert {"manufacturer": "acme", "pattern": "ACME-OWN-*", "label": "iot-fleet"}.items() <= rules[0].items()
    pledge = ctx.pledge(pattern[:-1])
    owned_voucher(ctx, pledge)
    assert pledge.ldevid(pledge.enroll("corp-devices"))
    assert ctx.admin("DELETE", f"/admin/brski/ownership/{added.json()['id']}").status_code == 204
    again = ctx.pledge(pattern[:-1])
    assert again.post_voucher_request().status_code == 202  # acme holds unknown devices


def test_ownership_rules_are_checked_against_configured_manufacturers_and_labels(ctx):
    assert ctx.admin("POST", "/admin/brski/ownership",
                     json_body={"manufacturer": "nobody", "pattern": "*"}).status_code == 400
    assert ctx.admin("POST", "/admin/brski/ownership",
                     json_body={"manufacturer": "acme", "pattern": "*", "label": "no-such"}).status_code == 400


# --- the MASA -----------------------------------------------------------------------------

def test_a_voucher_with_another_nonce_from_the_masa_is_not_passed_on(ctx):
    ctx.masa.mode = "wrong-nonce"
    pledge = ctx.pledge()
    response = pledge.post_voucher_request()
    assert response.status_code == 502 and "nonce" in response.text
    latest = ctx.audit(f"idevid:acme/{pledge.serial}")[0]
    assert (latest["event"], latest["outcome"]) == ("brski.voucher", "error")


def test_the_pledge_rejects_a_voucher_for_another_nonce(ctx):
    pledge = ctx.pledge()
    response = pledge.post_voucher_request()
    pledge.nonce = b"another nonce..."
    with pytest.raises(VoucherRejected, match="nonce"):
        pledge.verify_voucher(response.content)


def test_the_pledge_rejects_a_voucher_not_signed_by_its_masa(ctx):
    pledge = ctx.pledge()
    response = pledge.post_voucher_request()
    pledge.masa_anchor = make_ca("Some Other MASA").cert
    with pytest.raises(VoucherRejected, match="MASA"):
        pledge.verify_voucher(response.content)


def test_a_masa_that_refuses_is_a_403_with_its_reason(ctx):
    ctx.masa.mode = "refuse"
    response = ctx.pledge().post_voucher_request()
    assert response.status_code == 403 and "does not sell to your domain" in response.text


def test_a_masa_that_is_down_is_a_503_and_the_pledge_can_retry_later(ctx):
    port = free_port()
    pledge = ctx.pledge(masa_url=f"https://localhost:{port}")
    down = pledge.post_voucher_request()
    assert down.status_code == 503 and "unreachable" in down.text and down.headers["Retry-After"] == "5"
    assert ctx.audit(f"idevid:acme/{pledge.serial}")[0]["outcome"] == "error"
    masa = TestMasa(ctx.root, ctx.masa_ca, ctx.acme, ctx.server.dir / "ca" / "root.pem", port)
    masa.signer = ctx.masa.signer
    masa.start()
    try:
        owned_voucher(ctx, pledge)
    finally:
        masa.stop()


def test_a_busy_masa_is_a_503(ctx):
    ctx.masa.mode = "busy"
    response = ctx.pledge().post_voucher_request()
    assert response.status_code == 503 and "Retry-After" in response.headers


# --- what an IDevID may not do (RFC 8995 §5.9 is its only door into EST) ----------------------

def test_an_idevid_cannot_enroll_before_its_device_has_a_voucher(ctx):
    pledge = ctx.pledge()
    response = pledge.enroll()
    assert response.status_code == 403 and "no voucher" in response.text


def test_an_idevid_cannot_enroll_on_a_label_its_owner_did_not_choose(ctx):
    pledge = ctx.pledge()
    owned_voucher(ctx, pledge)
    for label in ("corp-devices", "no-such-label"):
        assert pledge.enroll(label).status_code in (403, 404)
    assert pledge.enroll("iot-fleet").status_code == 200


def test_an_idevid_may_only_request_names_of_its_serial_number(ctx):
    pledge = ctx.pledge()
    owned_voucher(ctx, pledge)
    response = pledge.enroll(cn="someone-else.devices.example")
    assert response.status_code == 403 and pledge.serial in response.text


def test_an_idevid_cannot_reenroll_use_serverkeygen_or_fullcmc(ctx):
    pledge = ctx.pledge()
    owned_voucher(ctx, pledge)
    _, csr = make_csr(f"{pledge.serial}.devices.example", new_key())
    for op in ("simplereenroll", "serverkeygen"):
        r = requests.post(pledge._url("est", op), data=b64(csr), cert=pledge.files, verify=str(pledge.pinned),
                          headers={"Content-Type": "application/pkcs10"}, timeout=30)
        assert r.status_code in (403, 404), (op, r.status_code, r.text)


def test_an_idevid_is_no_credential_on_the_admin_listener(ctx):
    pledge = ctx.pledge()
    r = requests.get(f"https://localhost:{ctx.server.admin_port}/admin/certs", cert=pledge.files, verify=False,
                     timeout=30)
    assert r.status_code == 401


def test_a_status_report_from_a_certificate_that_is_no_pledges_is_refused(ctx, tmp_path):
    crt, key, _ = enroll_identity(ctx.server, tmp_path)
    r = requests.post(ctx.pledge()._url("brski", "enrollstatus"), data=b'{"version":1,"status":true}',
                      cert=(crt, key), verify=False, headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 403


def test_a_malformed_status_report_is_a_400(ctx):
    pledge = ctx.pledge()
    owned_voucher(ctx, pledge)
    r = requests.post(pledge._url("brski", "voucher_status"), data=b'{"status":"yes"}', cert=pledge.files,
                      verify=str(pledge.pinned), headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 400


def test_requestauditlog_is_not_built_and_says_so(ctx):
    pledge = ctx.pledge()
    r = requests.post(pledge._url("brski", "requestauditlog"), data=b"{}", cert=pledge.files, verify=False,
                      timeout=30)
    assert r.status_code == 501 and "requestauditlog" in r.text


def test_brski_endpoints_are_404_where_brski_is_not_configured(server):
    r = requests.post(f"https://localhost:{server.port}/.well-known/brski/requestvoucher", data=b"x", verify=False,
                      headers={"Content-Type": MEDIA}, timeout=30)
    assert r.status_code == 404 and "not enabled" in r.text

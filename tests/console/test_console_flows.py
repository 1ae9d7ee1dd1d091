"""The web console end to end in headless Chromium: an officer's day-to-day work.

Each test drives the console as a person would (labels, buttons, the keyboard)
and checks the outcome where a user would: the curl client that was waiting,
the public CRL, an enrollment with a downloaded OTP.
"""

from __future__ import annotations

import csv
import io
import re
import subprocess
import time

import requests
from cryptography import x509

from tests.helpers import admin_call, b64, certs_in_body, enroll_identity, make_csr, public_url, unique
from tests.console.keyboard import tab_to

CURL_UNTIL_ISSUED = r"""
for attempt in $(seq 1 60); do
  code=$(curl -s -o "$OUT" -D "$HEADERS" -w '%{http_code}' --cacert "$CA" -u "$ENTITY:$OTP" \
         -H 'Content-Type: application/pkcs10' --data-binary @"$CSR" "$URL")
  echo "attempt $attempt: HTTP $code" >&2
  [ "$code" = 200 ] && exit 0
  [ "$code" = 202 ] || exit 1
  wait=$(grep -i '^retry-after:' "$HEADERS" | tr -dc 0-9)
  sleep "${wait:-1}"
done
exit 2
"""


def _certs_in(path) -> list[x509.Certificate]:
    return certs_in_body(path.read_bytes())


def _curl_waiting_for_approval(srv, tmp_path, entity: str, otp: str) -> tuple[subprocess.Popen, object]:
    _, der = make_csr(f"{entity}.example.com")
    (tmp_path / "csr.b64").write_bytes(b64(der))
    out = tmp_path / "issued.p7b"
    env = {"OUT": str(out), "HEADERS": str(tmp_path / "headers.txt"), "CA": srv.ca_bundle, "ENTITY": entity,
           "OTP": otp, "CSR": str(tmp_path / "csr.b64"), "URL": srv.url("simpleenroll", "held"), "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen(["bash", "-c", CURL_UNTIL_ISSUED], env=env, stderr=subprocess.PIPE, text=True)
    return proc, out


def _wait_for_pending(srv, entity: str) -> int:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        items = admin_call(srv, "GET", "/admin/requests", srv.token, params={"label": "held"}).json()["items"]
        mine = [r["id"] for r in items if r["entity"] == entity]
        if mine:
            return mine[0]
        time.sleep(0.2)
    raise AssertionError(f"no pending request from {entity}")


def test_login_sets_a_hardened_session_cookie_and_lands_on_the_overview(console):
    console.page.goto(console.base + "/console/certs")
    assert "/console/login?next=/console/certs" in console.page.url
    console.shot("login")
    console.page.get_by_label("Admin token").fill(console.srv.token)
    console.page.get_by_role("button", name="Log in").click()
    console.page.wait_for_url(console.base + "/console/certs")
    (cookie,) = console.context.cookies()
    assert cookie["name"] == "__Host-kipuka-console"
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/"
    assert 7.5 * 3600 < cookie["expires"] - time.time() <= 8 * 3600
    assert console.page.locator(".who").inner_text() == "token:console-tests"
    login = admin_call(console.srv, "GET", "/admin/audit", console.srv.token,
                       params={"event": "console.login", "outcome": "success"}).json()["items"]
    assert login and login[0]["auth"] == "token:console-tests"


def test_approve_in_the_console_delivers_the_certificate_to_the_waiting_curl_client(console, tmp_path):
    srv = console.srv
    entity = unique("held")
    curl, out = _curl_waiting_for_approval(srv, tmp_path, entity, srv.otp(entity, "--label", "held"))
    try:
        request_id = _wait_for_pending(srv, entity)
        console.login()
        assert console.page.locator("#pending-count").inner_text() != "0"
        console.page.get_by_role("link", name="Pending requests").first.click()
        console.page.wait_for_selector("body[data-ready]", state="attached")
        row = console.page.locator("tr", has_text=entity)
        assert "EC P-256" in row.inner_text() and "held" in row.inner_text()
        console.shot("requests")
        tab_to(console.page, f"Approve request {request_id}")  # keyboard only
        console.page.keyboard.press("Enter")
        console.page.locator("dialog[open]").wait_for()  # the confirmation step: Cancel has the focus
        console.page.keyboard.press("Tab")
        console.page.keyboard.press("Enter")
        console.page.wait_for_function("() => document.getElementById('status').textContent.includes('issued')")
        serial = re.search(r"issued ([0-9a-f]+)", console.status()).group(1)
        assert curl.wait(timeout=30) == 0, curl.stderr.read()
        attempts = curl.stderr.read()
        assert "HTTP 202" in attempts and attempts.rstrip().endswith("HTTP 200")
        (cert,) = _certs_in(out)
        assert format(cert.serial_number, "x") == serial
        assert cert.subject.rfc4514_string() == f"CN={entity}.example.com"
    finally:
        if curl.poll() is None:
            curl.kill()


def test_reject_several_requests_at_once_with_a_reason(console, tmp_path):
    srv = console.srv
    entities = [unique("held") for _ in range(2)]
    bodies = []
    for entity in entities:
        otp = srv.otp(entity, "--label", "held")
        _, der = make_csr(f"{entity}.example.com")
        bodies.append((entity, otp, b64(der)))
        assert srv.post("simpleenroll", b64(der), label="held", auth=(entity, otp)).status_code == 202
    console.login()
    console.open("/console/requests")
    for entity in entities:
        console.page.locator("tr", has_text=entity).get_by_role("checkbox").check()
    console.page.get_by_role("button", name="Reject selected").click()
    assert "reason" in console.status()  # no reason yet: nothing was rejected
    console.page.get_by_label("Reason for rejection").fill("unknown device serial")
    console.page.get_by_role("button", name="Reject selected").click()
    console.page.get_by_role("button", name="Reject 2").click()
    console.page.wait_for_function("() => document.getElementById('status').textContent.includes('Rejected')")
    for entity, otp, body in bodies:
        denied = srv.post("simpleenroll", body, label="held", auth=(entity, otp))
        assert denied.status_code == 403 and "unknown device serial" in denied.text


def test_search_detail_download_and_revoke_then_the_crl_lists_it(console, tmp_path):
    srv = console.srv
    _, _, cert = enroll_identity(srv, tmp_path, unique("crl"), label="iot-fleet")
    serial = format(cert.serial_number, "x")
    console.login()
    console.open("/console/certs")
    console.page.get_by_label("Entity").fill(cert.subject.rfc4514_string()[3:].removesuffix(".example.com"))
    console.page.get_by_label("EST label").select_option("iot-fleet")
    console.page.get_by_label("Status").select_option("valid")
    console.page.get_by_label("Expires within").select_option("365")
    console.page.get_by_role("button", name="Search").click()
    console.page.get_by_role("link", name=f"Show certificate {serial}").click()
    console.page.wait_for_url(re.compile(f"/console/certs/{serial}"))
    console.page.wait_for_selector("body[data-ready]", state="attached")
    detail = console.page.locator("#detail")
    text = detail.inner_text()
    assert cert.subject.rfc4514_string() in text and "EC P-256" in text and "extendedKeyUsage" in text
    with console.page.expect_download() as download:
        console.page.get_by_role("button", name="Download PEM").click()
    assert x509.load_pem_x509_certificate(download.value.path().read_bytes()) == cert
    console.page.get_by_label("Reason (RFC 5280)").select_option("keyCompromise")
    console.page.get_by_role("button", name="Revoke certificate").click()
    console.page.get_by_role("button", name="Revoke 1").click()
    console.page.wait_for_function("() => document.getElementById('status').textContent.includes('revoked')")
    console.shot("certificates")
    crl = x509.load_der_x509_crl(requests.get(public_url(srv, "/crl/iot-fleet.crl"), timeout=10).content)
    entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == x509.ReasonFlags.key_compromise


def test_otp_batch_csv_download_and_curl_enrollment(console, tmp_path):
    srv = console.srv
    prefix = unique("batch")
    entities = [f"{prefix}-{i}" for i in range(3)]
    console.login()
    console.open("/console/otp")
    console.page.get_by_label("Entity IDs, one per line (up to 1000)").fill("\n".join(entities))
    scope = console.page.get_by_label("Valid on EST label")  # the unlabeled path unless chosen (issue #16)
    assert scope.input_value() == "" and scope.locator("option").first.inner_text() == "Unlabeled path only"
    assert scope.locator("option[value=any]").inner_text() == "Any label"
    scope.select_option("iot-fleet")
    console.page.get_by_label("Valid for").fill("2h")
    console.page.get_by_role("button", name="Create").click()
    console.page.locator("#created").wait_for()
    with console.page.expect_download() as download:
        console.page.get_by_role("button", name="Download CSV").click()
    assert download.value.suggested_filename.endswith(".csv")
    rows = list(csv.DictReader(io.StringIO(download.value.path().read_text())))
    assert [r["entity"] for r in rows] == entities and all(r["label"] == "iot-fleet" for r in rows)
    console.shot("otps")

    first = rows[0]
    key_csr = tmp_path / "device.csr.b64"
    key_csr.write_bytes(b64(make_csr(f"{first['entity']}.example.com")[1]))
    out = tmp_path / "enrolled.p7b"
    code = subprocess.run(["curl", "-s", "-o", str(out), "-w", "%{http_code}", "--cacert", srv.ca_bundle,
                           "-u", f"{first['entity']}:{first['otp']}", "-H", "Content-Type: application/pkcs10",
                           "--data-binary", f"@{key_csr}", srv.url("simpleenroll", "iot-fleet")],
                          capture_output=True, text=True, timeout=30).stdout
    assert code == "200"
    (cert,) = _certs_in(out)
    assert cert.subject.rfc4514_string() == f"CN={first['entity']}.example.com"

    # The list shows the batch; revoking one there makes its OTP useless.
    console.page.get_by_label("Entity", exact=True).fill(entities[1])
    console.page.get_by_role("button", name="Filter").click()
    console.page.get_by_role("button", name=re.compile(f"Revoke one-time password .* of {entities[1]}")).click()
    console.page.get_by_role("button", name="Revoke 1").click()
    console.page.wait_for_function("() => document.getElementById('status').textContent.includes('revoked')")
    assert "revoked" in console.page.locator("#list").inner_text()
    _, der = make_csr(f"{entities[1]}.example.com")
    assert srv.post("simpleenroll", b64(der), label="iot-fleet", auth=(entities[1], rows[1]["otp"])).status_code == 401


def test_overview_shows_health_issuance_chart_pending_and_failures(console, tmp_path):
    srv = console.srv
    entity = unique("fail")
    srv.otp(entity)
    _, der = make_csr(f"{entity}.example.com")
    assert srv.post("simpleenroll", b64(der), auth=(entity, "wrong-otp")).status_code == 401
    enroll_identity(srv, tmp_path)
    stats = admin_call(srv, "GET", "/admin/stats/issuance", srv.token).json()
    issued = sum(i["issued"] for i in stats["items"])
    assert issued >= 1 and stats["items"][-1]["issued"] >= 1
    console.login()
    page = console.page
    assert page.locator("#overall").inner_text() == "ok"
    health = page.locator("#health").inner_text()
    assert all(name in health for name in ("Database", "CA default", "CA iot-fleet", "CA corp-devices"))
    title = page.locator("#chart svg title").first.text_content()
    assert f"{issued} certificates issued" in title
    assert page.locator("#chart rect.bar-issued").count() == 24
    assert page.locator("#pending-count").inner_text() == str(stats["pending"])
    assert entity in page.locator("#failures").inner_text()
    console.shot("overview")


def test_audit_page_verifies_the_chain_and_filters(console):
    console.login()
    console.open("/console/audit")
    console.page.wait_for_function("() => !document.getElementById('chain').textContent.includes('Checking')")
    assert "The chain verifies" in console.page.locator("#chain").inner_text()
    console.page.get_by_label("Event", exact=True).fill("console.login")
    console.page.get_by_label("Outcome").select_option("success")
    console.page.get_by_role("button", name="Show events").click()
    console.page.wait_for_function("""() => { const rows = [...document.querySelectorAll('#trail tbody tr')];
        return rows.length > 0 && rows.every((r) => r.textContent.includes('console.login')); }""")
    events = console.page.locator("#trail tbody tr")
    assert events.count() >= 1
    assert all("console.login" in t for t in events.all_inner_texts())
    console.shot("audit")


def test_cas_and_labels_page_shows_backends_policies_chains_and_crls(console):
    console.login()
    console.open("/console/cas")
    page = console.page
    iot = page.locator("section", has=page.get_by_role("heading", name="CA iot-fleet")).inner_text()
    assert "local" in iot and "kipuka demo iot-fleet Issuing CA" in iot and "kipuka demo Root CA" in iot
    assert f"http://localhost:{console.srv.public_port}/crl/iot-fleet.crl" in iot and "OCSP" in iot
    held = page.locator("#labels tr", has_text="/.well-known/est/held/").inner_text()
    assert "enroll: yes" in held and "default" in held
    iot_label = page.locator("#labels tr", has_text="/.well-known/est/iot-fleet/").inner_text()
    assert "90 d" in iot_label and "ec-p256, ec-p384" in iot_label
    console.shot("cas")


PAGES = ["/console/", "/console/requests", "/console/certs", "/console/otp", "/console/audit", "/console/cas"]

LABELLED = """() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea, button')]
  .filter((c) => !(c.labels && c.labels.length) && !c.getAttribute('aria-label') && !(c.tagName === 'BUTTON' && c.textContent.trim()))
  .map((c) => c.outerHTML.slice(0, 120))"""


def test_every_page_is_labelled_keyboard_reachable_and_fits_at_200_percent_zoom(console):
    console.login()
    page = console.page
    for path in PAGES:
        console.open(path)
        assert page.evaluate(LABELLED) == [], path
        assert page.locator("main h1").count() == 1 and page.locator("nav[aria-label] a[aria-current=page]").count() == 1
        page.keyboard.press("Tab")  # the first stop skips the navigation
        assert page.evaluate("() => document.activeElement.className") == "skip"
        page.keyboard.press("Enter")
        assert page.evaluate("() => document.activeElement.id") == "main"
    # 200% zoom of a 1280-pixel window leaves 640 CSS pixels: nothing may need sideways scrolling
    page.set_viewport_size({"width": 640, "height": 900})
    for path in PAGES:
        console.open(path)
        overflow = page.evaluate("() => document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, (path, overflow)
        console.shot("zoom200-" + (path.strip("/").split("/")[-1] if path != "/console/" else "overview"))

"""Screenshots of every console page at 1280x800 for docs/console.md, from a seeded demo.

Starts a throwaway `kipuka serve` (as the tests do), enrolls a small fleet over EST (some
renewed over mTLS, some revoked, some held for approval), then drives Debian's Chromium
with Playwright and writes PNGs to docs/console/ (or the folder given).

Usage: .venv/bin/python scripts/console_screenshots.py [docs/console]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from cryptography import x509  # noqa: E402

from tests.console.conftest import CHROMIUM, CHROMIUM_ARGS, CONSOLE_CONFIG, HELD_LABEL  # noqa: E402
from tests.helpers import admin_call, admin_token, b64, certs_from, make_csr, make_server, write_identity  # noqa: E402

SIZE = {"width": 1280, "height": 800}


def seed(srv, work: Path) -> dict:
    """24 sensors and 6 gateways; three sensors renewed over mTLS, two revoked, four requests held."""
    def otps(entities, label=None):
        r = admin_call(srv, "POST", "/admin/otp", srv.token,
                       json_body={"items": [{"entity": e, "label": label, "ttl": "7d"} for e in entities]})
        return [i["otp"] for i in r.json()["items"]]

    def enroll(entity, otp, label=None):
        name = f"{entity}.example.com"
        key, der = make_csr(name, sans=[x509.DNSName(name)])
        return key, certs_from(srv.post("simpleenroll", b64(der), label=label, auth=(entity, otp)))[0]

    sensors = [f"sensor-{i:03d}" for i in range(24)]
    issued = {e: enroll(e, o) for e, o in zip(sensors, otps(sensors))}
    gateways = [f"gateway-{i:02d}" for i in range(6)]
    for e, o in zip(gateways, otps(gateways, "iot-fleet")):
        enroll(e, o, "iot-fleet")
    for entity in sensors[:3]:
        key, cert = issued[entity]
        crt, k = write_identity(work, entity, key, cert)
        name = f"{entity}.example.com"
        _, csr = make_csr(name, key, sans=[x509.DNSName(name)])
        srv.post("simplereenroll", b64(csr), cert=(crt, k))
    for entity in sensors[10:12]:
        serial = format(issued[entity][1].serial_number, "x")
        admin_call(srv, "POST", f"/admin/certs/{serial}/revoke", srv.token, json_body={"reason": "keyCompromise"})
    queued = [f"camera-{i:02d}" for i in range(4)]
    for e, o in zip(queued, otps(queued, "held")):
        name = f"{e}.example.com"
        _, der = make_csr(name, sans=[x509.DNSName(name)])
        srv.post("simpleenroll", b64(der), label="held", auth=(e, o))
    otps([f"spare-{i:02d}" for i in range(5)])
    srv.post("simpleenroll", b64(make_csr("intruder.example.com")[1]), auth=("sensor-000", "wrong"))
    return {"renewed": format(issued[sensors[0]][1].serial_number, "x")}


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "console"
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="kipuka-shots-"))
    srv = make_server(work, replacements=CONSOLE_CONFIG, append=HELD_LABEL).start()
    try:
        srv.token = admin_token(srv, "officer")
        srv.ca_bundle  # noqa: B018 - fetch the chain once
        facts = seed(srv, work)
        from playwright.sync_api import sync_playwright
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            context = browser.new_context(ignore_https_errors=True, viewport=SIZE)
            page = context.new_page()
            base = f"https://localhost:{srv.admin_port}"
            page.goto(base + "/console/login")
            page.get_by_label("Admin token").fill(srv.token)
            page.get_by_role("button", name="Log in").click()
            page.wait_for_url(base + "/console/")

            def shot(path: str, name: str, then=None) -> None:  # type: ignore[no-untyped-def]
                page.goto(base + path)
                page.wait_for_selector("body[data-ready]", state="attached")
                if then:
                    then()
                page.screenshot(path=str(out / f"{name}.png"))
                print(out / f"{name}.png")

            requests = admin_call(srv, "GET", "/admin/requests", srv.token, params={"label": "held"}).json()["items"]
            shot("/console/", "overview")
            shot("/console/", "dashboard", lambda: page.locator("#attention-h").evaluate("(e) => e.scrollIntoView()"))
            shot("/console/certs?limit=15", "certificates")
            shot(f"/console/certs/{facts['renewed']}", "certificate")
            shot("/console/certs?q=sensor-00&limit=15", "revoke-confirmation", lambda: (
                page.get_by_label("Select certificate", exact=False).nth(1).check(),
                page.get_by_label("Select certificate", exact=False).nth(2).check(),
                page.get_by_label("Revocation reason (RFC 5280)").select_option("keyCompromise"),
                page.get_by_role("button", name="Revoke selected").click()))
            shot("/console/requests", "requests")
            shot(f"/console/requests/{requests[0]['id']}", "request")
            shot("/console/otp", "otps", lambda: page.locator("#list-h").evaluate("(e) => e.scrollIntoView()"))
            shot("/console/audit", "audit")
            shot("/console/cas", "cas")
            browser.close()
    finally:
        srv.stop()


if __name__ == "__main__":
    main()

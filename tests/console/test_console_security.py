"""The console's security: nothing without authentication, no forged cross-site request, real logout."""

from __future__ import annotations

import re

import pytest
import requests

from tests.helpers import admin_call, admin_token, enroll_identity, unique

PAGES = ["/console/", "/console/requests", "/console/certs", "/console/otp", "/console/audit", "/console/cas"]
API = [("GET", "/admin/health"), ("GET", "/admin/certs"), ("GET", "/admin/requests"), ("GET", "/admin/otp"),
       ("GET", "/admin/audit"), ("GET", "/admin/audit/verify"), ("GET", "/admin/ca"), ("GET", "/admin/labels"),
       ("GET", "/admin/stats/issuance"), ("GET", "/admin/openapi.json"), ("GET", "/metrics"),
       ("POST", "/admin/otp"), ("DELETE", "/admin/otp/1"), ("POST", "/admin/requests/1/approve"),
       ("POST", "/admin/requests/1/reject"), ("POST", "/admin/certs/ab/revoke")]
COOKIE = "__Host-kipuka-console"


def _admin(srv, method: str, path: str, *, cookie: str | None = None, headers: dict | None = None, json_body=None,
           data=None, cert=None, allow_redirects=True) -> requests.Response:
    """A request as a browser (or a forger) would send it: cookies and headers, no bearer token."""
    return requests.request(method, f"https://localhost:{srv.admin_port}{path}", headers=headers or {},
                            cookies={COOKIE: cookie} if cookie else None, json=json_body, data=data, cert=cert,
                            verify=srv.ca_bundle, timeout=30, allow_redirects=allow_redirects)


def _otps_of(srv, entity: str) -> list:
    return admin_call(srv, "GET", "/admin/otp", srv.token, params={"entity": entity}).json()["items"]


def test_every_page_sends_an_anonymous_browser_to_the_login_form(console):
    for path in PAGES:
        console.page.goto(console.base + path)
        assert console.page.url == f"{console.base}/console/login?next={path}", path
        assert console.page.get_by_label("Admin token").is_visible()
    assert _admin(console.srv, "GET", "/", allow_redirects=False).headers["Location"] == "/console/"
    r = _admin(console.srv, "GET", "/console/audit", allow_redirects=False)
    assert r.status_code == 303 and r.headers["Location"] == "/console/login?next=/console/audit"


@pytest.mark.parametrize("method,path", API)
def test_no_admin_api_call_works_without_authentication(srv, method, path):
    for cookie in (None, "forged-session-value", "x" * 300):
        r = _admin(srv, method, path, cookie=cookie, json_body={"entity": "nobody"} if method == "POST" else None,
                   headers={"Origin": f"https://localhost:{srv.admin_port}", "Sec-Fetch-Site": "same-origin"})
        assert r.status_code == 401, (method, path, cookie, r.status_code)
        assert r.json()["error"] == "unauthorized"


def test_a_cross_site_form_post_reaches_the_api_without_the_session(console):
    """An attacker's page auto-submits a form to the admin API: SameSite=Strict keeps the cookie home."""
    console.login()
    entity = unique("csrf-form")
    evil = f"""<!doctype html><title>cute cats</title>
      <form id="f" method="post" enctype="text/plain" action="{console.base}/admin/otp">
        <input name='{{"entity": "{entity}", "x": "' value='"}}'>
      </form><script>document.getElementById("f").submit()</script>"""
    console.page.route("https://evil.test/**", lambda route: route.fulfill(body=evil, content_type="text/html"))
    with console.page.expect_navigation(url=f"{console.base}/admin/otp"):
        console.page.goto("https://evil.test/cats")
    assert '"unauthorized"' in console.page.content()
    assert _otps_of(console.srv, entity) == []


def test_a_request_forged_with_the_session_cookie_is_refused_without_the_csrf_token(console):
    """Suppose a browser did send the cookie: the API still wants the page's CSRF token and origin."""
    srv = console.srv
    console.login()
    cookie, token = console.cookie(), console.csrf()
    own = f"https://localhost:{srv.admin_port}"
    entity = unique("csrf")
    body = {"entity": entity}
    refused = [
        {},  # no token at all (an HTML form cannot set a header)
        {"Origin": own, "X-CSRF-Token": "guessed"},
        {"Origin": "https://evil.test", "X-CSRF-Token": token},
        {"Origin": own, "Sec-Fetch-Site": "cross-site", "X-CSRF-Token": token},
        {"Origin": own, "Sec-Fetch-Site": "same-site", "X-CSRF-Token": token},  # a sibling subdomain
        {"Origin": "null", "X-CSRF-Token": token},
    ]
    for headers in refused:
        r = _admin(srv, "POST", "/admin/otp", cookie=cookie, headers=headers, json_body=body)
        assert r.status_code == 403 and r.json()["error"] == "forbidden", (headers, r.status_code, r.text)
    assert _otps_of(srv, entity) == []
    assert _admin(srv, "GET", "/admin/otp", cookie=cookie).status_code == 200  # reading needs no token
    ok = _admin(srv, "POST", "/admin/otp", cookie=cookie, json_body=body,
                headers={"Origin": own, "Sec-Fetch-Site": "same-origin", "X-CSRF-Token": token})
    assert ok.status_code == 201
    otp_id = ok.json()["items"][0]["id"]
    assert _admin(srv, "DELETE", f"/admin/otp/{otp_id}", cookie=cookie, headers={"Origin": own}).status_code == 403
    # From the console's own page, a script that leaves the token out is refused too.
    status = console.page.evaluate("""async () => (await fetch('/admin/otp', {method: 'POST',
        headers: {'Content-Type': 'application/json'}, body: JSON.stringify({entity: 'no-token'})})).status""")
    assert status == 403
    audit = admin_call(srv, "GET", "/admin/audit", srv.token, params={"event": "admin.csrf"}).json()["items"]
    assert len(audit) >= len(refused) + 2 and all(e["outcome"] == "rejected" for e in audit)


def test_logout_ends_the_session_on_the_server(console):
    console.login()
    cookie = console.cookie()
    assert _admin(console.srv, "GET", "/admin/ca", cookie=cookie).status_code == 200
    # Logging out is a form POST too: without the page's token it is refused and changes nothing.
    r = _admin(console.srv, "POST", "/console/logout", cookie=cookie, data={"csrf": "wrong"},
               headers={"Origin": console.base}, allow_redirects=False)
    assert r.status_code == 403
    assert _admin(console.srv, "GET", "/admin/ca", cookie=cookie).status_code == 200
    console.page.get_by_role("button", name="Log out").click()
    console.page.wait_for_url(console.base + "/console/login?m=bye")
    assert "You have logged out" in console.page.inner_text("body")
    assert [c for c in console.context.cookies() if c["name"] == COOKIE] == []
    assert _admin(console.srv, "GET", "/admin/ca", cookie=cookie).status_code == 401  # a copied cookie is dead too
    console.page.goto(console.base + "/console/otp")
    assert "/console/login" in console.page.url


def test_revoking_the_token_ends_its_console_sessions(console):
    token = admin_token(console.srv, "short-lived-officer")
    console.login(token)
    cookie = console.cookie()
    assert _admin(console.srv, "GET", "/admin/ca", cookie=cookie).status_code == 200
    console.srv.cli("admin", "token", "revoke", "short-lived-officer")
    assert _admin(console.srv, "GET", "/admin/ca", cookie=cookie).status_code == 401
    console.page.reload()
    assert "/console/login" in console.page.url


def test_a_wrong_token_is_refused_and_audited_and_next_never_leaves_the_console(console):
    srv = console.srv
    console.page.goto(console.base + "/console/login?next=https://evil.test/")
    console.page.get_by_label("Admin token").fill("not-a-token")
    console.page.get_by_role("button", name="Log in").click()
    console.page.wait_for_url(re.compile(r"/console/login\?m=failed&next=/console/$"))
    assert "unknown or revoked" in console.page.inner_text("body")
    assert console.context.cookies() == []
    failed = admin_call(srv, "GET", "/admin/audit", srv.token,
                        params={"event": "console.login", "outcome": "rejected"}).json()["items"]
    assert failed and failed[0]["reason"] == "unknown or revoked token"
    r = _admin(srv, "POST", "/console/login", data={"token": srv.token, "next": "https://evil.test/"},
               headers={"Origin": console.base}, allow_redirects=False)
    assert r.status_code == 303 and r.headers["Location"] == "/console/"
    # A login form that another site submits is refused: no session is made for it.
    r = _admin(srv, "POST", "/console/login", data={"token": srv.token}, headers={"Origin": "https://evil.test"},
               allow_redirects=False)
    assert r.status_code == 303 and r.headers["Location"] == "/console/login?m=refused" and COOKIE not in r.cookies


def test_an_admin_client_certificate_signs_in_without_a_token_and_csrf_still_applies(srv, browser, tmp_path):
    crt, key, _ = enroll_identity(srv, tmp_path, "console-admin")  # CN=console-admin.example.com: an admin
    base = f"https://localhost:{srv.admin_port}"
    context = browser.new_context(ignore_https_errors=True, client_certificates=[
        {"origin": base, "certPath": crt, "keyPath": key}])
    try:
        page = context.new_page()
        page.goto(base + "/console/otp")
        page.wait_for_selector("body[data-ready]", state="attached")
        assert page.url == base + "/console/otp"
        assert "client certificate" in page.locator(".account").inner_text()
        assert page.get_by_role("button", name="Log out").count() == 0
        entity = unique("by-cert")
        page.get_by_label("Entity IDs, one per line (up to 1000)").fill(entity)
        page.get_by_role("button", name="Create").click()
        page.locator("#created").wait_for()
        assert len(_otps_of(srv, entity)) == 1
        token = page.locator('meta[name="csrf-token"]').get_attribute("content")
    finally:
        context.close()
    # The browser sends the certificate to any site that asks: a foreign page cannot use it.
    for headers in ({"Origin": "https://evil.test", "X-CSRF-Token": token}, {"Origin": base},
                    {"Sec-Fetch-Site": "cross-site"}):
        r = _admin(srv, "POST", "/admin/otp", cert=(crt, key), headers=headers, json_body={"entity": unique()})
        assert r.status_code == 403, headers
    # Scripts (curl, requests) send no Origin and no Sec-Fetch-Site, and cannot be forged: they need no token.
    assert _admin(srv, "POST", "/admin/otp", cert=(crt, key), json_body={"entity": unique()}).status_code == 201

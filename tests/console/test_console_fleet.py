"""The console for a fleet (issue #20), in headless Chromium: find any device's certificates and
history, work a pending queue, revoke a batch, all from the keyboard where an officer would.

One module-scoped server with a small seeded fleet (26 devices, one renewed over mTLS) and
a page size of 10 in the URL, so that paging is proven without a large database.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from types import SimpleNamespace

import pytest
import requests
from cryptography import x509

from tests.helpers import admin_call, b64, certs_from, make_csr, public_url, unique, write_identity
from tests.console.keyboard import tab_to

DEVICES = 24


def _otps(srv, entities: list[str], label: str | None = None) -> list[str]:
    r = admin_call(srv, "POST", "/admin/otp", srv.token,
                   json_body={"items": [{"entity": e, "label": label} for e in entities]})
    assert r.status_code == 201, r.text
    return [i["otp"] for i in r.json()["items"]]


def _enroll(srv, entity: str, otp: str, label: str | None = None):
    name = f"{entity}.example.com"
    key, der = make_csr(name, sans=[x509.DNSName(name)])
    r = srv.post("simpleenroll", b64(der), label=label, auth=(entity, otp))
    assert r.status_code == 200, r.text
    return key, certs_from(r)[0]


@pytest.fixture(scope="module")
def fleet(srv, tmp_path_factory):
    """24 devices on the default label, 2 on iot-fleet, device 00 renewed over mTLS."""
    prefix = unique("fleet")
    entities = [f"{prefix}-{i:02d}" for i in range(DEVICES)]
    serials, keys = [], []
    for entity, otp in zip(entities, _otps(srv, entities)):
        key, cert = _enroll(srv, entity, otp)
        serials.append(format(cert.serial_number, "x"))
        keys.append((key, cert))
    iot = [f"{prefix}-iot-{i}" for i in range(2)]
    iot_serials = [format(_enroll(srv, entity, otp, "iot-fleet")[1].serial_number, "x")
                   for entity, otp in zip(iot, _otps(srv, iot, "iot-fleet"))]
    key, cert = keys[0]
    crt, k = write_identity(tmp_path_factory.mktemp("renew"), entities[0], key, cert)
    _, csr = make_csr(f"{entities[0]}.example.com", key, sans=[x509.DNSName(f"{entities[0]}.example.com")])
    renewed = certs_from(srv.post("simplereenroll", b64(csr), cert=(crt, k)))[0]
    renewed_serial = format(renewed.serial_number, "x")
    return SimpleNamespace(prefix=prefix, entities=entities, serials=serials, renewed=renewed_serial,
                           newest=[renewed_serial, *reversed(iot_serials), *reversed(serials)])


def _rows(console) -> list[str]:
    """The serials in the certificate list, top to bottom."""
    return console.page.locator("#results tbody tr td:nth-child(2)").all_inner_texts()


def _wait_rows(console, first: str) -> None:
    console.page.wait_for_function(
        "(s) => { const c = document.querySelector('#results tbody tr td:nth-child(2)'); return c && c.textContent === s; }",
        arg=first)


def _api(srv, path: str, **params):
    return admin_call(srv, "GET", path, srv.token, params=params).json()


# --- 1. the certificate list ----------------------------------------------------------------

def test_certificates_are_newest_first_with_issued_and_sans_and_page_both_ways_by_keyboard(console, fleet):
    newest = fleet.newest
    console.login()
    console.open(f"/console/certs?q={fleet.prefix}-&limit=10")
    headers = console.page.locator("#results thead th").all_inner_texts()
    assert any(h.startswith("Issued") for h in headers) and "SANs" in headers
    assert _rows(console) == newest[:10]
    assert f"{fleet.entities[0]}.example.com" in console.page.locator("#results tbody tr").first.inner_text()
    console.shot("fleet-certificates")
    tab_to(console.page, "Next page")
    console.page.keyboard.press("Enter")
    _wait_rows(console, newest[10])
    assert _rows(console) == newest[10:20] and "after=" in console.page.url
    console.page.keyboard.press("Enter")  # the focus stays on Next page
    _wait_rows(console, newest[20])
    assert _rows(console) == newest[20:] and console.page.get_by_role("button", name="Next page").is_disabled()
    tab_to(console.page, "Previous page")
    console.page.keyboard.press("Enter")
    _wait_rows(console, newest[10])
    assert _rows(console) == newest[10:20]
    console.page.go_back()  # the browser's Back walks the pages too
    _wait_rows(console, newest[20])


def test_sorting_by_subject_and_by_expiry_from_the_column_headers(console, fleet):
    console.login()
    console.open(f"/console/certs?q={fleet.prefix}-&limit=10")
    console.page.get_by_role("button", name="Sort by subject, descending").click()
    console.page.wait_for_function("() => location.search.includes('sort=subject')")
    _wait_rows(console, fleet.newest[1])  # CN=<prefix>-iot-1 sorts after CN=<prefix>-23
    subjects = console.page.locator("#results tbody tr td:nth-child(3)").all_inner_texts()
    assert subjects == sorted(subjects, reverse=True)
    assert console.page.locator("#results th[aria-sort=descending]").inner_text().startswith("Subject")
    console.page.get_by_role("button", name="Sort by subject, ascending").click()
    _wait_rows(console, fleet.serials[0])  # CN=...-00 twice (the renewal): the older first
    console.page.get_by_label("Sort by", exact=True).select_option("expires")
    console.page.get_by_label("Order", exact=True).select_option("asc")
    console.page.get_by_role("button", name="Search").click()
    console.page.wait_for_function("() => location.search.includes('sort=expires')")
    expiries = console.page.locator("#results tbody tr td:nth-child(9)").all_inner_texts()
    assert expiries == sorted(expiries)


def test_search_finds_a_serial_a_san_and_a_subject_in_any_case(console, fleet):
    console.login()
    console.open("/console/certs")
    find = console.page.get_by_label("Find (serial, SAN or subject, any case)")
    for text, expected in ((fleet.serials[5].upper(), fleet.serials[5]),
                           (f"{fleet.entities[6]}.EXAMPLE.COM", None),
                           (f"cn={fleet.entities[7].upper()}", fleet.serials[7])):
        find.fill(text)
        console.page.get_by_role("button", name="Search").click()
        if expected:
            _wait_rows(console, expected)
            assert _rows(console) == [expected]
        else:
            _wait_rows(console, fleet.serials[6])
    console.page.get_by_label("Search in").select_option("san")
    find.fill(f"{fleet.entities[8]}.Example.Com")
    console.page.get_by_role("button", name="Search").click()
    _wait_rows(console, fleet.serials[8])
    assert _rows(console) == [fleet.serials[8]]
    today = dt.datetime.now(dt.timezone.utc).date().isoformat()  # the fleet was issued today (UTC)
    console.page.get_by_label("Issued before (UTC date)").fill(today)
    console.page.get_by_role("button", name="Search").click()
    console.page.wait_for_function("() => document.querySelector('#results .empty')")
    console.page.get_by_label("Issued before (UTC date)").fill("")
    console.page.get_by_label("Issued on or after (UTC date)").fill(today)
    console.page.get_by_role("button", name="Search").click()
    _wait_rows(console, fleet.serials[8])


# --- 2. a certificate's page: lineage, chain, revocation; Back keeps the list position --------

def test_a_certificate_page_shows_its_lineage_and_back_returns_to_the_same_list_page(console, fleet):
    old, new = fleet.serials[0], fleet.renewed
    console.login()
    console.open(f"/console/certs?q={fleet.prefix}-&limit=10")
    for first in (fleet.newest[10], fleet.newest[20]):
        console.page.get_by_role("button", name="Next page").click()
        _wait_rows(console, first)
    list_url = console.page.url
    row = console.page.locator("#results tr", has_text=old)
    assert "superseded" in row.inner_text()
    console.page.get_by_role("link", name=f"Show certificate {old}").click()
    console.page.wait_for_url(re.compile(f"/console/certs/{old}"))
    console.page.wait_for_selector("body[data-ready]", state="attached")
    lineage = console.page.locator("#lineage").inner_text()
    assert new in lineage and "a first enrollment" in lineage
    assert "superseded" in console.page.locator("#detail-fields").inner_text()
    assert "kipuka demo Root CA" in console.page.locator("#chain").inner_text()
    assert "not revoked" in console.page.locator("#revocation").inner_text()
    console.shot("fleet-certificate")
    console.page.get_by_role("link", name="Back to the list").click()
    console.page.wait_for_url(list_url)
    _wait_rows(console, fleet.newest[20])
    console.open(f"/console/certs/{new}")
    assert old in console.page.locator("#lineage").inner_text()
    fields = console.page.locator("#detail-fields").inner_text()
    assert fleet.entities[0] in fields and "CN=" not in fields.split("Entity")[1].split("\n")[1]


def test_a_renewal_over_mtls_keeps_the_entity_and_records_what_it_replaced(srv, fleet):
    renewed = _api(srv, f"/admin/certs/{fleet.renewed}")
    assert renewed["entity"] == fleet.entities[0] and renewed["replaces_serial"] == fleet.serials[0]
    assert renewed["renewed_from"]["serial"] == fleet.serials[0] and not renewed["superseded"]
    old = _api(srv, f"/admin/certs/{fleet.serials[0]}")
    assert [c["serial"] for c in old["superseded_by"]] == [fleet.renewed] and old["superseded"]
    history = _api(srv, "/admin/certs", entity=fleet.entities[0], sort="issued", order="desc")["items"]
    assert [c["serial"] for c in history] == [fleet.renewed, fleet.serials[0]]


# --- 5. bulk revocation and CSV ----------------------------------------------------------------

def _crl_serials(srv) -> set[str]:
    crl = x509.load_der_x509_crl(requests.get(public_url(srv, "/crl/default.crl"), timeout=10).content)
    return {format(e.serial_number, "x") for e in crl}


def test_revoking_a_selection_confirms_the_count_and_cancel_revokes_nothing(console, fleet):
    chosen = [fleet.serials[18], fleet.serials[19]]  # both on the first page
    console.login()
    console.open(f"/console/certs?q={fleet.prefix}-&limit=10")
    for serial in chosen:
        console.page.get_by_label(f"Select certificate {serial}").check()
    console.page.get_by_label("Revocation reason (RFC 5280)").select_option("keyCompromise")
    console.page.get_by_role("button", name="Revoke selected").click()
    dialog = console.page.locator("dialog[open]")
    assert "Revoke 2 certificates (the selection) for keyCompromise" in dialog.inner_text()
    console.page.keyboard.press("Escape")
    console.page.wait_for_function("() => document.getElementById('status').textContent.includes('Nothing')")
    assert _api(console.srv, f"/admin/certs/{chosen[0]}")["status"] == "valid"
    console.page.get_by_role("button", name="Revoke selected").click()
    console.shot("fleet-revoke-confirm")
    console.page.get_by_role("button", name="Revoke 2").click()
    console.page.wait_for_function("() => document.getElementById('status').textContent.includes('Revoked 2')")
    assert all(_api(console.srv, f"/admin/certs/{s}")["revocation_reason"] == "keyCompromise" for s in chosen)
    assert set(chosen) <= _crl_serials(console.srv)


def test_revoking_every_match_of_a_search_states_its_count_and_works_from_the_keyboard(console, fleet):
    batch = fleet.serials[20:24]  # devices 20-23: the search "<prefix>-2"
    console.login()
    console.open("/console/certs")
    console.page.get_by_label("Find (serial, SAN or subject, any case)").fill(f"{fleet.prefix}-2")
    console.page.get_by_role("button", name="Search").click()
    _wait_rows(console, batch[-1])
    console.page.get_by_label("Revocation reason (RFC 5280)").select_option("cessationOfOperation")
    tab_to(console.page, "Revoke every match")
    console.page.keyboard.press("Enter")
    dialog = console.page.locator("dialog[open]")
    dialog.wait_for()
    assert "Revoke 4 certificates (every match of this search) for cessationOfOperation" in dialog.inner_text()
    assert console.page.evaluate("() => document.activeElement.textContent") == "Cancel"
    console.page.keyboard.press("Tab")
    assert console.page.evaluate("() => document.activeElement.textContent") == "Revoke 4"
    console.page.keyboard.press("Enter")
    console.page.wait_for_function("() => document.getElementById('status').textContent.includes('Revoked 4')")
    assert set(batch) <= _crl_serials(console.srv)
    events = _api(console.srv, "/admin/audit", event="cert.revoke", actor="token:console-tests", limit=50)["items"]
    assert set(batch) <= {e["serial"] for e in events}


def test_revoking_a_search_refuses_a_count_the_search_no_longer_matches(srv, fleet):
    search = {"q": f"{fleet.prefix}-1", "status": "valid"}  # devices 10-19, those still valid
    count = _api(srv, "/admin/certs/count", **search)["count"]
    r = admin_call(srv, "POST", "/admin/bulk/revoke-certs", srv.token,
                   json_body={"reason": "superseded", "filter": search, "count": count + 1})
    assert r.status_code == 409 and f"matches {count} certificates" in r.json()["message"]
    assert _api(srv, "/admin/certs/count", **search)["count"] == count


def test_csv_export_of_a_search_lists_every_match(console, fleet):
    console.login()
    console.open(f"/console/certs?q={fleet.prefix}-0&limit=3")  # 11 certificates over 4 pages
    with console.page.expect_download() as download:
        console.page.get_by_role("link", name="Export CSV").click()
    rows = list(csv.DictReader(io.StringIO(download.value.path().read_text())))
    assert {r["serial"] for r in rows} == {*fleet.serials[:10], fleet.renewed}
    renewed = next(r for r in rows if r["serial"] == fleet.renewed)
    assert renewed["replaces_serial"] == fleet.serials[0] and renewed["entity"] == fleet.entities[0]


# --- 3. pending requests -------------------------------------------------------------------------

def _held(srv, entity: str) -> tuple[int, bytes, str]:
    otp = _otps(srv, [entity], "held")[0]
    name = f"{entity}.example.com"
    _, der = make_csr(name, sans=[x509.DNSName(name)])
    assert srv.post("simpleenroll", b64(der), label="held", auth=(entity, otp)).status_code == 202
    mine = [r for r in _api(srv, "/admin/requests", label="held", entity=entity)["items"]]
    return mine[0]["id"], b64(der), otp


def test_a_request_page_shows_the_whole_csr_and_the_requesters_certificates_then_approves(console, fleet):
    entity = fleet.entities[5]
    request_id, _, _ = _held(console.srv, entity)
    console.login()
    console.open("/console/requests?label=held")
    console.page.get_by_role("link", name=f"Open request {request_id}").click()
    console.page.wait_for_url(re.compile(f"/console/requests/{request_id}"))
    console.page.wait_for_selector("body[data-ready]", state="attached")
    csr = console.page.locator("#csr-fields").inner_text()
    assert f"CN={entity}.example.com" in csr and f"DNS:{entity}.example.com" in csr and "EC P-256" in csr
    assert "ecdsa-with-SHA256" in csr and "valid (the requester holds the key)" in csr
    assert "Linked to the TLS session\nno" in csr or "Linked to the TLS session\tno" in csr
    assert fleet.serials[5] in console.page.locator("#others").inner_text()
    console.shot("fleet-request")
    console.page.get_by_role("button", name="Approve").click()
    assert f"Approve request #{request_id}" in console.page.locator("dialog[open]").inner_text()
    console.page.get_by_role("button", name="Approve 1").click()
    console.page.wait_for_function("() => document.getElementById('status').textContent.includes('issued')")
    serial = re.search(r"issued ([0-9a-f]+)", console.status()).group(1)
    link = console.page.locator("#req-fields").get_by_role("link", name=serial)
    assert link.get_attribute("href") == f"/console/certs/{serial}"


def test_a_selection_of_requests_is_approved_then_rejected_after_a_confirmation(console, fleet):
    held = [_held(console.srv, unique(f"{fleet.prefix}-q")) for _ in range(3)]
    console.login()
    console.open("/console/requests?label=held")
    for request_id, _, _ in held[:2]:
        console.page.get_by_label(f"Select request {request_id}").check()
    console.page.get_by_role("button", name="Approve selected").click()
    assert "Approve 2 requests" in console.page.locator("dialog[open]").inner_text()
    console.page.get_by_role("button", name="Approve 2").click()
    console.page.wait_for_function("() => document.getElementById('status').textContent.startsWith('Approved')")
    for request_id, _, _ in held[:2]:
        assert _api(console.srv, f"/admin/requests/{request_id}")["status"] == "issued"
    console.open("/console/requests?label=held&status=issued&order=desc")
    issued = _api(console.srv, f"/admin/requests/{held[0][0]}")["serial"]
    assert console.page.get_by_role("link", name=f"Certificate {issued}").get_attribute("href") == \
        f"/console/certs/{issued}"
    console.open("/console/requests?label=held")
    console.page.get_by_label(f"Select request {held[2][0]}").check()
    console.page.get_by_label("Reason for rejection").fill("not on the delivery list")
    tab_to(console.page, "Reject selected")
    console.page.keyboard.press("Enter")
    console.page.locator("dialog[open]").wait_for()
    console.page.keyboard.press("Tab")
    console.page.keyboard.press("Enter")
    console.page.wait_for_function("() => document.getElementById('status').textContent.startsWith('Rejected')")
    request_id, body, otp = held[2]
    entity = _api(console.srv, f"/admin/requests/{request_id}")["entity"]
    denied = console.srv.post("simpleenroll", body, label="held", auth=(entity, otp))
    assert denied.status_code == 403 and "not on the delivery list" in denied.text


# --- 4. the dashboard ------------------------------------------------------------------------------

def test_dashboard_figures_link_to_the_lists_behind_them(console, fleet):
    console.login()
    page = console.page
    row = page.locator("#expiring tr", has_text="iot-fleet")
    figure = row.locator("td").nth(3).inner_text()
    assert int(figure) >= 2
    ca = page.locator("#ca-status").inner_text()
    assert "kipuka demo Root CA" in ca and "ok" in ca
    assert int(page.locator("#issued-day").inner_text()) >= DEVICES
    console.shot("fleet-dashboard")
    row.get_by_role("link", name=re.compile("expiring within 90 days")).click()
    page.wait_for_url(re.compile("/console/certs\\?"))
    page.wait_for_selector("#results tbody tr")
    assert page.locator("#results tbody tr").count() == int(figure)
    assert all("iot-fleet" in t for t in page.locator("#results tbody tr").all_inner_texts())


# --- 6. the audit trail ------------------------------------------------------------------------------

def test_audit_times_are_utc_on_one_line_and_filter_by_actor(console, fleet):
    console.login()
    console.open("/console/audit")
    page = console.page
    assert page.get_by_label("From (UTC)").count() == 1 and page.get_by_label("Until (UTC)").count() == 1
    when = page.locator("#trail tbody tr td:first-child span").first
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", when.inner_text())
    assert when.evaluate("(e) => e.getClientRects().length") == 1
    page.get_by_label("Actor (who acted)").fill("mtls")
    page.get_by_role("button", name="Show events").click()
    page.wait_for_function("""() => { const rows = [...document.querySelectorAll('#trail tbody tr')];
        return rows.length > 0 && rows.every((r) => r.children[7].textContent === 'mtls'); }""")
    assert "reenroll" in page.locator("#trail").inner_text()
    page.get_by_role("button", name="Verify the chain again").click()
    page.wait_for_function("() => document.getElementById('chain').textContent.includes('The chain verifies')")


# --- 7. one-time passwords ---------------------------------------------------------------------------

def test_otps_filter_by_status_newest_first_bulk_revoke_and_show_their_certificates(console, fleet):
    fresh = [unique(f"{fleet.prefix}-otp") for _ in range(3)]
    _otps(console.srv, fresh)
    ids = [o["id"] for o in _api(console.srv, "/admin/otp", status="active", order="desc", limit=3)["items"]]
    console.login()
    console.open("/console/otp")
    page = console.page
    page.get_by_label("Status").select_option("active")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_function("() => location.search.includes('status=active') "
                           "&& document.getElementById('list').getAttribute('aria-busy') === 'false'")
    shown = page.locator("#list tbody tr td:nth-child(2)").all_inner_texts()
    assert [int(s) for s in shown[:3]] == ids and shown == sorted(shown, key=int, reverse=True)
    for otp_id in ids[:2]:
        page.get_by_label(f"Select one-time password {otp_id}").check()
    page.get_by_role("button", name="Revoke selected").click()
    assert "Revoke 2 one-time password(s)?" in page.locator("dialog[open]").inner_text()
    page.get_by_role("button", name="Revoke 2").click()
    page.wait_for_function("() => document.getElementById('status').textContent.includes('Revoked 2')")
    assert {o["id"] for o in _api(console.srv, "/admin/otp", status="revoked")["items"]} >= set(ids[:2])
    page.get_by_label("Status").select_option("spent")
    page.get_by_label("Entity", exact=True).fill(fleet.entities[3])
    page.get_by_role("button", name="Filter").click()
    link = page.get_by_role("link", name=re.compile("Certificates of one-time password"))
    link.click()
    page.wait_for_url(re.compile("/console/certs\\?otp="))
    _wait_rows(console, fleet.serials[3])
    assert _rows(console) == [fleet.serials[3]]


DETAIL_LABELLED = """() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea, button')]
  .filter((c) => !(c.labels && c.labels.length) && !c.getAttribute('aria-label') && !(c.tagName === 'BUTTON' && c.textContent.trim()))
  .map((c) => c.outerHTML.slice(0, 120))"""


def test_the_pages_of_one_certificate_and_one_request_are_labelled_and_keyboard_reachable(console, fleet):
    request_id = _api(console.srv, "/admin/requests", status="all", order="desc", limit=1)["items"][0]["id"]
    console.login()
    for path in (f"/console/certs/{fleet.serials[1]}", f"/console/requests/{request_id}"):
        console.open(path)
        assert console.page.evaluate(DETAIL_LABELLED) == [], path
        assert console.page.locator("main h1").count() == 1
        assert console.page.locator("nav[aria-label] a[aria-current=page]").count() == 1
        console.page.keyboard.press("Tab")
        assert console.page.evaluate("() => document.activeElement.className") == "skip"
        tab_to(console.page, "Back to the list" if "certs" in path else "Back to the queue")
        console.page.keyboard.press("Enter")
        console.page.wait_for_url(re.compile("/console/(certs|requests)$"))

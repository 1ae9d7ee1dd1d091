"""The console's store reads: keyset pages in both directions, search, lineage, bulk acts.

On SQLite, and on PostgreSQL when KIPUKA_TEST_DATABASE names one.
"""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from kipuka.store import AuditEvent, CertFilter, CertRecord, Store
from tests.helpers import fresh_database_url

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    url = fresh_database_url() or f"sqlite:///{tmp_path_factory.mktemp('browse') / 'k.db'}"
    s = Store(url)
    s.migrate()
    # 25 devices: serial i+1, subject CN=Dev-i, expiring after (25 - i) days (the newest expires first);
    # device i > 0 renewed device i - 1 (a line of renewals).
    for i in range(25):
        s.record_issuance(_cert(i), AuditEvent(event="enroll", outcome="success", serial=format(i + 1, "x")))
    yield s
    s.close()


def _cert(i: int) -> CertRecord:
    return CertRecord(ca_id="ca", serial=format(i + 1, "x"), subject=f"CN=Dev-{i:02d}.Example.com",
                      sans=f"dev-{i:02d}.example.com,10.0.0.{i}", not_before=NOW, not_after=NOW + dt.timedelta(days=25 - i),
                      label="fleet" if i % 2 else "", entity=f"dev-{i % 5}", auth="otp", pubkey_sha256="ab" * 32,
                      fingerprint_sha256=uuid.uuid4().hex * 2, der=b"\x30\x00", issued_at=NOW + dt.timedelta(seconds=i),
                      replaces_ca="ca" if i else None, replaces_serial=format(i, "x") if i else None)


def _serials(page) -> list[str]:
    return [r.serial for r in page.items]


def test_the_first_page_is_newest_first_and_next_then_previous_returns_to_it(store):
    first = store.certificate_page(CertFilter(), limit=10, now=NOW)
    assert _serials(first) == [format(i, "x") for i in range(25, 15, -1)] and first.prev_key is None
    second = store.certificate_page(CertFilter(), limit=10, after=first.next_key, now=NOW)
    assert _serials(second) == [format(i, "x") for i in range(15, 5, -1)]
    last = store.certificate_page(CertFilter(), limit=10, after=second.next_key, now=NOW)
    assert _serials(last) == [format(i, "x") for i in range(5, 0, -1)] and last.next_key is None
    back = store.certificate_page(CertFilter(), limit=10, before=last.prev_key, now=NOW)
    assert _serials(back) == _serials(second)
    assert _serials(store.certificate_page(CertFilter(), limit=10, before=back.prev_key, now=NOW)) == _serials(first)


def test_sorting_by_expiry_and_by_subject_pages_in_that_order(store):
    soonest = store.certificate_page(CertFilter(), sort="expires", descending=False, limit=4, now=NOW)
    assert _serials(soonest) == ["19", "18", "17", "16"]  # devices 24..21 expire first
    nxt = store.certificate_page(CertFilter(), sort="expires", descending=False, limit=4, after=soonest.next_key)
    assert _serials(nxt) == ["15", "14", "13", "12"]
    by_subject = store.certificate_page(CertFilter(), sort="subject", descending=False, limit=3, now=NOW)
    assert [r.subject for r in by_subject.items] == ["CN=Dev-00.Example.com", "CN=Dev-01.Example.com",
                                                     "CN=Dev-02.Example.com"]
    again = store.certificate_page(CertFilter(), sort="subject", descending=False, limit=3, after=by_subject.next_key)
    assert again.items[0].subject == "CN=Dev-03.Example.com"


def test_a_cursor_is_the_id_of_the_row_next_to_the_page(store):
    page = store.certificate_page(CertFilter(), sort="expires", limit=5, now=NOW)
    assert page.next_key == 5  # device 4: the fifth to expire, counting from the last
    assert store.certificate_page(CertFilter(), sort="expires", after=10 ** 12, now=NOW).items == []


def test_search_finds_a_serial_a_san_and_a_subject_in_any_case(store):
    assert _serials(store.certificate_page(CertFilter(serial="0x0A"), now=NOW)) == ["a"]
    assert _serials(store.certificate_page(CertFilter(san="DEV-07.EXAMPLE"), now=NOW)) == ["8"]
    assert _serials(store.certificate_page(CertFilter(subject_contains="dev-12.example"), now=NOW)) == ["d"]
    assert set(_serials(store.certificate_page(CertFilter(q="10.0.0.2"), now=NOW))) == {"3", "15", "16", "17",
                                                                                          "18", "19"}
    assert _serials(store.certificate_page(CertFilter(q="100%"), now=NOW)) == []  # wildcards are literal
    assert store.count_certificates_matching(CertFilter(label="fleet"), now=NOW) == 12


def test_lineage_names_the_renewed_and_the_renewing_certificate(store):
    earlier, later = store.lineage("ca", "5")
    assert earlier.serial == "4" and [r.serial for r in later] == ["6"]
    assert store.lineage("ca", "1")[0] is None and [r.serial for r in store.lineage("ca", "19")[1]] == []
    page = store.certificate_page(CertFilter(), limit=3, now=NOW)
    assert page.superseded == {("ca", "18"), ("ca", "17")}  # 19 is the newest of the line


def test_expiring_certificates_are_counted_per_label_and_window(store):
    assert store.expiring_by_label(NOW) == {"": {7: 4, 30: 13, 90: 13}, "fleet": {7: 3, 30: 12, 90: 12}}


def test_bulk_revocation_revokes_each_once_with_an_audit_event_each(store):
    done = store.revoke_certificates([("ca", "2"), ("ca", "3"), ("ca", "2")], "keyCompromise", NOW, "token:t")
    assert done == [("ca", "2"), ("ca", "3")]
    assert store.revoke_certificates([("ca", "2")], "keyCompromise", NOW, "token:t") == []
    events = store.audit_page(event="cert.revoke", actor="token:t").items
    assert sorted(e.serial for e in events) == ["2", "3"]
    assert store.count_certificates_matching(CertFilter(status="revoked"), now=NOW) == 2


def test_otp_pages_filter_by_status_newest_first(store):
    ids = [store.create_otp(f"otp-{i}", None, "k", b"\x01" * 32, NOW + dt.timedelta(hours=1 if i % 2 else -1), 1,
                            AuditEvent(event="otp.create", outcome="success")) for i in range(6)]
    store.revoke_otps([ids[5]], NOW, "token:t")
    active = store.otp_page(status="active", now=NOW)
    assert [o.id for o in active.items] == [ids[3], ids[1]]
    assert [o.id for o in store.otp_page(status="expired", now=NOW).items] == [ids[4], ids[2], ids[0]]
    assert [o.id for o in store.otp_page(status="revoked", now=NOW).items] == [ids[5]]
    first = store.otp_page(limit=4, now=NOW)
    assert [o.id for o in first.items] == ids[:1:-1][:4]
    assert [o.id for o in store.otp_page(limit=4, after=first.next_key, now=NOW).items] == [ids[1], ids[0]]

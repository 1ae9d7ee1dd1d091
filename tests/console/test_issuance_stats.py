"""The overview's per-hour counts (kipuka.store.stats) against a brute-force count of the same rows."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from kipuka.store import AuditEvent, CertRecord, Store
from tests.helpers import TEST_DATABASE, fresh_database_url

NOW = dt.datetime(2026, 3, 1, 12, 30, tzinfo=dt.timezone.utc)
SINCE, UNTIL = NOW.replace(minute=0) - dt.timedelta(hours=23), NOW.replace(minute=0) + dt.timedelta(hours=1)


def _cert(i: int, issued_at: dt.datetime) -> CertRecord:
    return CertRecord(ca_id="default", serial=format(i + 1, "x"), subject=f"CN=d{i}", sans="",
                      not_before=issued_at, not_after=issued_at + dt.timedelta(days=30), label="", entity=f"d{i}",
                      auth="otp", pubkey_sha256=f"{i:064x}", fingerprint_sha256=f"{i:064x}", der=b"\x30\x00",
                      issued_at=issued_at)


@pytest.fixture
def store(tmp_path):
    url = fresh_database_url() if TEST_DATABASE.startswith("postgres") else f"sqlite:///{tmp_path / 's.db'}"
    s = Store(url)
    s.migrate()
    yield s
    s.close()


def _hour(t: dt.datetime) -> dt.datetime:
    return t.replace(minute=0, second=0, microsecond=0)


def test_counts_per_hour_match_a_brute_force_count_and_skip_older_rows(store):
    rng = random.Random(7)
    # Three days of issuance in id order, with the small disorder two nodes writing at once make.
    times = sorted(NOW - dt.timedelta(seconds=rng.uniform(0, 3 * 86400)) for _ in range(600))
    times = [t + dt.timedelta(milliseconds=rng.uniform(-50, 50)) for t in times]
    for i, t in enumerate(times):
        store.record_issuance(_cert(i, t), AuditEvent(event="enroll", outcome="success", at=t))
    failures = [NOW - dt.timedelta(minutes=rng.uniform(0, 30 * 60)) for _ in range(40)]
    for t in failures:
        store.add_audit(AuditEvent(event="enroll", outcome=rng.choice(["rejected", "error"]), at=t))

    expected: dict[dt.datetime, int] = {}
    for t in times:
        if SINCE <= t < UNTIL:
            expected[_hour(t)] = expected.get(_hour(t), 0) + 1
    counted = store.issued_per_hour(SINCE, UNTIL)
    # Rows whose ids sit before the window's first id but whose times fall inside it (the disorder
    # at the edge, milliseconds wide) may be left out: at most a handful, never an hour's worth.
    assert set(counted) <= set(expected)
    assert all(0 <= expected[h] - counted.get(h, 0) <= 2 for h in expected), (expected, counted)
    assert sum(counted.values()) >= sum(expected.values()) - 2

    failed: dict[dt.datetime, int] = {}
    for t in failures:
        if SINCE <= t < UNTIL:
            failed[_hour(t)] = failed.get(_hour(t), 0) + 1
    assert store.failures_per_hour(SINCE, UNTIL) == failed


def test_an_empty_store_and_a_store_with_only_old_rows_count_nothing(store):
    assert store.issued_per_hour(SINCE, UNTIL) == {}
    old = NOW - dt.timedelta(days=5)
    store.record_issuance(_cert(1, old), AuditEvent(event="enroll", outcome="success", at=old))
    assert store.issued_per_hour(SINCE, UNTIL) == {}
    assert store.failures_per_hour(SINCE, UNTIL) == {}

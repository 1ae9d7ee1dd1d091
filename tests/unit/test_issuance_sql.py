"""The enrollment path's driver-level statements (store/issuance_sql.py) and group commit.

Rows written on the driver must read back through SQLAlchemy exactly as rows SQLAlchemy
wrote (and the reverse), on SQLite and, when KIPUKA_TEST_DATABASE names one, PostgreSQL;
group commit must keep each request's failure to itself.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import uuid

import pytest

from kipuka.store import AsyncStore, AuditEvent, CertRecord, Store
from kipuka.store.base import Revoked, SerialCollision

UTC = dt.timezone.utc


def _cert(serial: str, otp_id: int | None = None, pubkey: str = "ab" * 32, at: dt.datetime | None = None
          ) -> CertRecord:
    now = at or dt.datetime(2026, 12, 7, 10, 11, 12, 345678, tzinfo=UTC)
    return CertRecord(ca_id="ca", serial=serial, subject="CN=dev-1.example.com", sans="dev-1.example.com",
                      not_before=now - dt.timedelta(minutes=5), not_after=now + dt.timedelta(days=30),
                      label="", entity="dev-1", auth="otp", pubkey_sha256=pubkey,
                      fingerprint_sha256=uuid.uuid4().hex * 2, der=b"\x30\x03\x02\x01" + serial.encode(),
                      issued_at=now, otp_id=otp_id)


def _otp(store: Store, uses: int = 1, ttl: dt.timedelta = dt.timedelta(hours=1)) -> int:
    return store.create_otp("dev-1", None, "k1", b"\x01" * 32, dt.datetime.now(UTC) + ttl, uses,
                            AuditEvent(event="otp.create", outcome="success"))


def test_rows_written_on_the_driver_read_back_through_sqlalchemy(store):
    record = _cert("1a2b")
    store.record_issuance(record, AuditEvent(event="enroll", outcome="success", serial="1a2b"))
    back = store.certificate_status("ca", "1a2b")
    assert dataclasses.replace(back, der=bytes(back.der)) == record
    events = store.audit_events(event="enroll")
    assert [(e.serial, e.at.tzinfo is not None) for e in events] == [("1a2b", True)]


def test_otps_written_through_sqlalchemy_read_back_on_the_driver(store):
    otp_id = _otp(store, uses=3)
    otps, locked = store.otp_candidates("dev-1", "127.0.0.1")
    assert locked is None
    [otp] = otps
    assert (otp.id, otp.uses_left, otp.label, otp.digest) == (otp_id, 3, None, b"\x01" * 32)
    assert otp.expires_at.tzinfo == UTC and otp.expires_at > dt.datetime.now(UTC)


def test_an_otp_use_is_spent_once_and_a_retry_with_the_same_key_is_recovered(store):
    otp_id = _otp(store, uses=1)
    now = dt.datetime.now(UTC)
    window = dt.timedelta(minutes=10)
    first = _cert("aa01", otp_id, at=now)
    assert store.issue_with_otp(otp_id, first, AuditEvent(event="enroll", outcome="success"), now, window) \
        == ("issued", None)
    again = _cert("aa02", otp_id, at=now)
    assert store.issue_with_otp(otp_id, again, AuditEvent(event="enroll", outcome="success"), now, window) \
        == ("recovered", first.der)
    other_key = _cert("aa03", otp_id, pubkey="cd" * 32, at=now)
    assert store.issue_with_otp(otp_id, other_key, AuditEvent(event="enroll", outcome="success"), now, window) \
        == ("spent", None)
    assert store.certificate_status("ca", "aa02") is None and store.certificate_status("ca", "aa03") is None


def test_a_retry_with_the_same_key_and_other_names_is_not_recovered(store):
    otp_id = _otp(store, uses=1)
    now = dt.datetime.now(UTC)
    window = dt.timedelta(minutes=10)
    first = _cert("ee01", otp_id, at=now)
    assert store.issue_with_otp(otp_id, first, AuditEvent(event="enroll", outcome="success"), now, window)[0] \
        == "issued"
    renamed = dataclasses.replace(_cert("ee02", otp_id, at=now), sans="dev-1.example.com,dev-1.admin.example.com")
    assert store.issue_with_otp(otp_id, renamed, AuditEvent(event="enroll", outcome="success"), now, window) \
        == ("different", None)
    assert store.recovered_certificate(otp_id, first.pubkey_sha256, now - window, renamed.subject,
                                       renamed.sans) == (None, True)
    assert store.recovered_certificate(otp_id, first.pubkey_sha256, now - window, first.subject,
                                       first.sans) == (first.der, False)
    assert store.certificate_status("ca", "ee02") is None


def test_a_key_certified_for_other_names_gets_a_new_certificate_while_uses_are_left(store):
    otp_id = _otp(store, uses=2)
    now = dt.datetime.now(UTC)
    window = dt.timedelta(minutes=10)
    store.issue_with_otp(otp_id, _cert("ef01", otp_id, at=now), AuditEvent(event="enroll", outcome="success"),
                         now, window)
    renamed = dataclasses.replace(_cert("ef02", otp_id, at=now), sans="dev-1.example.com,dev-1.lab.example.com")
    assert store.issue_with_otp(otp_id, renamed, AuditEvent(event="enroll", outcome="success"), now, window) \
        == ("issued", None)
    assert store.certificate_status("ca", "ef02") is not None
    [otp] = store.list_otps("dev-1")
    assert otp.uses_left == 0


def test_an_otp_issuance_writes_its_audit_row_with_the_certificate(store):
    otp_id = _otp(store, uses=1)
    now = dt.datetime.now(UTC)
    store.issue_with_otp(otp_id, _cert("ab01", otp_id, at=now),
                         AuditEvent(event="enroll", outcome="success", serial="ab01", entity="dev-1"),
                         now, dt.timedelta(minutes=10))
    assert [(e.serial, e.entity) for e in store.audit_events(event="enroll")] == [("ab01", "dev-1")]


def test_an_entity_without_otps_still_reads_its_lockout(store):
    now = dt.datetime.now(UTC)
    for _ in range(3):
        locked = store.record_auth_failure("ghost", "192.0.2.9", now, 3, dt.timedelta(minutes=5),
                                           AuditEvent(event="enroll", outcome="rejected"))
    assert locked is not None
    assert store.otp_candidates("ghost", "192.0.2.9") == ([], locked)
    assert store.otp_candidates("ghost", "192.0.2.10") == ([], None)


def test_a_value_too_long_for_its_column_is_refused_not_truncated(store):
    if store.dialect == "sqlite":
        pytest.skip("SQLite does not enforce VARCHAR lengths; the PostgreSQL pass runs this")
    otp_id = _otp(store, uses=1)
    now = dt.datetime.now(UTC)
    too_long = dataclasses.replace(_cert("fa01", otp_id, at=now), entity="d" * 300)
    with pytest.raises(Exception):
        store.issue_with_otp(otp_id, too_long, AuditEvent(event="enroll", outcome="success"), now,
                             dt.timedelta(minutes=10))
    assert store.certificate_status("ca", "fa01") is None
    [otp] = store.list_otps("dev-1")
    assert otp.uses_left == 1


def test_a_retry_is_recognised_by_the_names_it_asked_for_where_the_ca_certified_others(store):
    """A remote CA added O= to the subject: the record keeps the request's names, and a retry with
    those names gets the certificate again; the names the CA gave are not what a retry asks for."""
    otp_id = _otp(store, uses=1)
    now = dt.datetime.now(UTC)
    window = dt.timedelta(minutes=10)
    first = dataclasses.replace(_cert("ac01", otp_id, at=now), subject="CN=dev-1.example.com,O=Upstream Corp",
                                requested_subject="CN=dev-1.example.com", requested_sans="dev-1.example.com")
    assert store.issue_with_otp(otp_id, first, AuditEvent(event="enroll", outcome="success"), now, window) \
        == ("issued", None)
    back = store.certificate_status("ca", "ac01")
    assert (back.requested_subject, back.requested_sans) == ("CN=dev-1.example.com", "dev-1.example.com")
    retry = dataclasses.replace(first, serial="ac02", fingerprint_sha256=uuid.uuid4().hex * 2)
    assert store.issue_with_otp(otp_id, retry, AuditEvent(event="enroll", outcome="success"), now, window) \
        == ("recovered", first.der)
    assert store.recovered_certificate(otp_id, first.pubkey_sha256, now - window, "CN=dev-1.example.com",
                                       "dev-1.example.com") == (first.der, False)
    assert store.recovered_certificate(otp_id, first.pubkey_sha256, now - window,
                                       "CN=dev-1.example.com,O=Upstream Corp", "dev-1.example.com") == (None, True)


def test_an_expired_otp_is_not_spent(store):
    otp_id = _otp(store, uses=1, ttl=dt.timedelta(seconds=1))
    later = dt.datetime.now(UTC) + dt.timedelta(seconds=5)
    assert store.issue_with_otp(otp_id, _cert("bb01", otp_id, at=later), AuditEvent(event="enroll", outcome="x"),
                                later, dt.timedelta(0))[0] == "spent"


def test_a_revoked_credential_refuses_the_write(store):
    store.record_issuance(_cert("cc01"), AuditEvent(event="enroll", outcome="success"))
    store.revoke_certificate("cc01", "keyCompromise", dt.datetime.now(UTC), AuditEvent(event="cert.revoke",
                                                                                       outcome="success"))
    with pytest.raises(Revoked):
        store.record_issuance(_cert("cc02"), AuditEvent(event="enroll", outcome="success"), ("ca", "cc01"))
    assert store.certificate_status("ca", "cc02") is None


def test_a_duplicate_serial_is_a_serial_collision(store):
    store.record_issuance(_cert("dd01"), AuditEvent(event="enroll", outcome="success"))
    with pytest.raises(SerialCollision):
        store.record_issuance(_cert("dd01"), AuditEvent(event="enroll", outcome="success"))


def test_group_commit_keeps_a_failure_to_its_own_request(store):
    """Many writes in one turn of the loop share a transaction; a duplicate serial among them
    fails only its own request, and every other certificate and audit row is written."""
    store.record_issuance(_cert("ee00"), AuditEvent(event="enroll", outcome="success"))
    astore = AsyncStore(store)

    async def burst():
        writes = [astore.record_issuance(_cert(f"ee{i:02x}"), AuditEvent(event="enroll", outcome="success",
                                                                          serial=f"ee{i:02x}"))
                  for i in range(40)]
        return await asyncio.gather(*writes, return_exceptions=True)

    try:
        results = asyncio.run(burst())
    finally:
        astore._group.close()
    assert isinstance(results[0], SerialCollision)
    assert results[1:] == [None] * 39
    serials = {e.serial for e in store.audit_events(limit=100, event="enroll")}
    assert {f"ee{i:02x}" for i in range(1, 40)} <= serials
    assert all(store.certificate_status("ca", f"ee{i:02x}") is not None for i in range(40))


def test_group_commit_answers_only_after_the_commit(store):
    """What a request awaited is in the database when its future resolves (read on another connection)."""
    astore = AsyncStore(store)
    other = Store(store.url)

    async def one():
        await astore.record_issuance(_cert("ff01"), AuditEvent(event="enroll", outcome="success"))
        return other.certificate_status("ca", "ff01")

    try:
        assert asyncio.run(one()) is not None
    finally:
        astore._group.close()
        other.close()


def test_group_commit_takes_contended_rows_in_one_order_so_batches_cannot_deadlock(store):
    """Two processes' batches that spend uses of the same OTPs lock those rows; run in arrival order
    they locked them in different orders and PostgreSQL had to break a deadlock (after 1 s). A batch
    runs the units that name a row (`lock_order`) in ascending order, the others after them, and
    each request still gets its own unit's result."""
    from kipuka.store.groupcommit import GroupCommit
    ran: list[str] = []
    group = GroupCommit(store)

    def unit(name: str):
        def run(cur):
            ran.append(name)
            return name
        return run

    async def burst():
        futures = [group.submit(unit("otp-7"), lock_order=7), group.submit(unit("audit")),
                   group.submit(unit("otp-3"), lock_order=3), group.submit(unit("otp-5"), lock_order=5)]
        return await asyncio.gather(*futures)

    try:
        results = asyncio.run(burst())
    finally:
        group.close()
    assert ran == ["otp-3", "otp-5", "otp-7", "audit"]
    assert results == ["otp-7", "audit", "otp-3", "otp-5"]


def test_the_enrollment_reads_run_on_the_event_loop_and_fall_back_to_a_thread(store):
    """An OTP check's read and a renewal's entity read answer from the event loop's own connection
    (SQLite's read-only one, PostgreSQL's async one); when that connection cannot be made, the same
    answers come from a reader thread."""
    otp_id = _otp(store, uses=2)
    store.record_issuance(_cert("0a01"), AuditEvent(event="enroll", outcome="success"))
    astore = AsyncStore(store)
    loop_reader = astore._inline or astore._loop_pg

    async def reads():
        return await astore.otp_candidates("dev-1", "127.0.0.1"), await astore.certificate_entity("ca", "0a01")

    try:
        (otps, locked), entity = asyncio.run(reads())
        assert ([o.id for o in otps], locked, entity) == ([otp_id], None, "dev-1")
        assert loop_reader._conn is not None  # answered on the loop
        loop_reader.close()
        if astore._inline is not None:
            loop_reader._path = str(store.url).rsplit("/", 1)[0] + "/missing/k.db"
        else:
            loop_reader._conninfo = "postgresql://127.0.0.1:1/nowhere"
        (otps, _), entity = asyncio.run(reads())
        assert ([o.id for o in otps], entity) == ([otp_id], "dev-1")  # from a reader thread
        assert loop_reader._conn is None
    finally:
        astore.close()

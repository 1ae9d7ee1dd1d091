"""Every SQL statement kipuka runs, behind domain methods.

Each write method is one transaction. On SQLite, writes start with BEGIN
IMMEDIATE so that two worker processes serialise on the database lock (waited
for in a store thread, never on the event loop) instead of failing on upgrade.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from sqlalchemy import Engine, and_, create_engine, event, func, select
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.pool import NullPool

from kipuka.store import migrations, schema
from kipuka.store.records import AuditEvent, CertRecord, OtpRecord


class SerialCollision(Exception):
    """The CA picked a serial it already used: re-sign with a new one."""


class StoreUnavailable(Exception):
    """The database cannot be reached or answered with an error."""


class Revoked(Exception):
    """The credential certificate named in a write has been revoked."""


def _make_engine(url: str, immediate: bool) -> Engine:
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    engine = create_engine(url, poolclass=NullPool if ":memory:" in url else None,
                           connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # let us emit BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process crashes
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


class Store:
    def __init__(self, url: str) -> None:
        self.url = url
        self._writer = _make_engine(url, immediate=True)
        self._reader = self._writer if not url.startswith("sqlite") else _make_engine(url, immediate=False)

    # --- lifecycle ------------------------------------------------------------------

    def migrate(self) -> list[int]:
        with self._tx() as conn:
            return migrations.migrate(conn)

    def schema_version(self) -> int:
        with self._read() as conn:
            return migrations.current_version(conn)

    def close(self) -> None:
        self._writer.dispose()
        if self._reader is not self._writer:
            self._reader.dispose()

    # --- OTPs -----------------------------------------------------------------------

    def create_otp(self, entity: str, label: str | None, key_id: str, digest: bytes,
                   expires_at: dt.datetime, uses: int, audit: AuditEvent) -> int:
        with self._tx() as conn:
            result = conn.execute(schema.otps.insert().values(
                entity=entity, label=label, key_id=key_id, digest=digest, created_at=audit.at,
                expires_at=expires_at, uses_total=uses, uses_left=uses, revoked_at=None))
            self._audit(conn, audit)
            return int(result.inserted_primary_key[0])

    def otps_for(self, entity: str) -> list[OtpRecord]:
        """Every unrevoked OTP of an entity, spent ones included (for lost-response recovery)."""
        t = schema.otps
        with self._read() as conn:
            rows = conn.execute(select(t).where(and_(t.c.entity == entity, t.c.revoked_at.is_(None)))
                                .order_by(t.c.id.desc()).limit(64)).mappings().all()
        return [OtpRecord(**dict(r)) for r in rows]

    def list_otps(self, entity: str | None = None) -> list[OtpRecord]:
        t = schema.otps
        query = select(t).order_by(t.c.id)
        if entity is not None:
            query = query.where(t.c.entity == entity)
        with self._read() as conn:
            return [OtpRecord(**dict(r)) for r in conn.execute(query).mappings().all()]

    def revoke_otp(self, otp_id: int, now: dt.datetime, audit: AuditEvent) -> bool:
        t = schema.otps
        with self._tx() as conn:
            n = conn.execute(t.update().where(and_(t.c.id == otp_id, t.c.revoked_at.is_(None)))
                             .values(revoked_at=now)).rowcount
            if n:
                self._audit(conn, audit)
            return bool(n)

    # --- lockouts -------------------------------------------------------------------

    def locked_until(self, entity: str, address: str, now: dt.datetime) -> dt.datetime | None:
        t = schema.otp_failures
        with self._read() as conn:
            row = conn.execute(select(t.c.locked_until).where(
                and_(t.c.entity == entity, t.c.address == address))).first()
        if row and row[0] is not None and row[0] > now:
            return row[0]
        return None

    def record_auth_failure(self, entity: str, address: str, now: dt.datetime, max_failures: int,
                            window: dt.timedelta, audit: AuditEvent) -> dt.datetime | None:
        """Count a failed OTP attempt; returns the lock expiry once the pair is locked out."""
        t = schema.otp_failures
        key = and_(t.c.entity == entity, t.c.address == address)
        with self._tx() as conn:
            row = conn.execute(select(t.c.failures, t.c.window_start).where(key)).first()
            if row is None:
                failures = 1
                conn.execute(t.insert().values(entity=entity, address=address, failures=1,
                                               window_start=now, locked_until=None))
            else:
                failures = 1 if row.window_start + window < now else row.failures + 1
                start = now if failures == 1 else row.window_start
                conn.execute(t.update().where(key).values(failures=failures, window_start=start))
            locked = now + window if failures >= max_failures else None
            if locked is not None:
                conn.execute(t.update().where(key).values(locked_until=locked, failures=0, window_start=now))
            self._audit(conn, audit)
            return locked

    # --- issuance -------------------------------------------------------------------

    def issue_with_otp(self, otp_id: int, cert: CertRecord, audit: AuditEvent, now: dt.datetime,
                       recovery_window: dt.timedelta) -> tuple[str, bytes | None]:
        """Spend one use of an OTP and record its certificate, atomically.

        Returns ("issued", None); ("recovered", der) when this OTP already gave a
        certificate for the same public key within the recovery window (a client
        that lost the response); or ("spent", None) when no use is left.
        """
        o = schema.otps
        with self._tx() as conn:
            earlier = self._recovered(conn, otp_id, cert.pubkey_sha256, now - recovery_window)
            if earlier is not None:
                self._audit(conn, dataclasses.replace(audit, event=audit.event + ".redeliver",
                                                      reason="certificate re-sent for a retried request"))
                return "recovered", earlier
            spent = conn.execute(o.update().where(and_(
                o.c.id == otp_id, o.c.uses_left > 0, o.c.revoked_at.is_(None), o.c.expires_at > now))
                .values(uses_left=o.c.uses_left - 1)).rowcount
            if spent != 1:
                return "spent", None
            self._insert_cert(conn, cert)
            self._audit(conn, audit)
            return "issued", None

    def recovered_certificate(self, otp_id: int, pubkey_sha256: str, since: dt.datetime) -> bytes | None:
        """The certificate an OTP already gave this public key since `since`, if any."""
        with self._read() as conn:
            return self._recovered(conn, otp_id, pubkey_sha256, since)

    @staticmethod
    def _recovered(conn: Any, otp_id: int, pubkey_sha256: str, since: dt.datetime) -> bytes | None:
        c = schema.certificates
        row = conn.execute(
            select(c.c.der).where(and_(c.c.otp_id == otp_id, c.c.pubkey_sha256 == pubkey_sha256,
                                       c.c.issued_at >= since))
            .order_by(c.c.id.desc()).limit(1)).first()
        return bytes(row[0]) if row is not None else None

    def record_issuance(self, cert: CertRecord, audit: AuditEvent,
                        credential: tuple[str, str] | None = None) -> None:
        """Record a certificate; with `credential` (ca_id, serial), refuse if that one is revoked.

        Checking the credential inside the write transaction means a revocation
        that lands while the certificate is being signed still wins.
        """
        with self._tx() as conn:
            if credential is not None and self._revoked(conn, *credential):
                raise Revoked(credential[1])
            self._insert_cert(conn, cert)
            self._audit(conn, audit)

    def _insert_cert(self, conn: Any, cert: CertRecord) -> None:
        try:
            conn.execute(schema.certificates.insert().values(**dataclasses.asdict(cert)))
        except IntegrityError as exc:  # the enclosing transaction rolls back with it
            raise SerialCollision(cert.serial) from exc

    # --- certificates ---------------------------------------------------------------

    def is_revoked(self, ca_id: str, serial: str) -> bool:
        with self._read() as conn:
            return self._revoked(conn, ca_id, serial)

    @staticmethod
    def _revoked(conn: Any, ca_id: str, serial: str) -> bool:
        c = schema.certificates
        row = conn.execute(select(c.c.revoked_at).where(and_(c.c.ca_id == ca_id, c.c.serial == serial))).first()
        return row is not None and row[0] is not None

    def revoke_certificate(self, serial: str, reason: str, now: dt.datetime, audit: AuditEvent,
                           ca_id: str | None = None) -> int:
        c = schema.certificates
        cond = and_(c.c.serial == serial, c.c.revoked_at.is_(None))
        if ca_id is not None:
            cond = and_(cond, c.c.ca_id == ca_id)
        with self._tx() as conn:
            n = conn.execute(c.update().where(cond).values(revoked_at=now, revocation_reason=reason)).rowcount
            if n:
                self._audit(conn, audit)
            return n

    def certificates(self, *, entity: str | None = None, label: str | None = None, limit: int = 100,
                     after_id: int = 0) -> list[CertRecord]:
        c = schema.certificates
        query = select(c).where(c.c.id > after_id).order_by(c.c.id).limit(limit)
        if entity is not None:
            query = query.where(c.c.entity == entity)
        if label is not None:
            query = query.where(c.c.label == label)
        with self._read() as conn:
            return [_cert(r) for r in conn.execute(query).mappings().all()]

    def certificate(self, serial: str) -> list[CertRecord]:
        c = schema.certificates
        with self._read() as conn:
            return [_cert(r) for r in conn.execute(select(c).where(c.c.serial == serial)).mappings().all()]

    def count_certificates(self) -> int:
        with self._read() as conn:
            return int(conn.execute(select(func.count()).select_from(schema.certificates)).scalar_one())

    # --- audit ----------------------------------------------------------------------

    def add_audit(self, event_: AuditEvent) -> None:
        with self._tx() as conn:
            self._audit(conn, event_)

    def audit_events(self, limit: int = 100) -> list[AuditEvent]:
        a = schema.audit
        with self._read() as conn:
            rows = conn.execute(select(a).order_by(a.c.id.desc()).limit(limit)).mappings().all()
        return [AuditEvent(**{k: v for k, v in r.items() if k != "id"}) for r in rows]

    @staticmethod
    def _audit(conn: Any, e: AuditEvent) -> None:
        conn.execute(schema.audit.insert().values(**dataclasses.asdict(e)))

    # --- plumbing -------------------------------------------------------------------

    def _tx(self) -> Any:
        return _guard(self._writer.begin())

    def _read(self) -> Any:
        return _guard(self._reader.begin())


class _guard:
    """A transaction context that turns driver failures into StoreUnavailable."""

    def __init__(self, ctx: Any) -> None:
        self._ctx = ctx

    def __enter__(self) -> Any:
        try:
            return self._ctx.__enter__()
        except (OperationalError, DBAPIError) as exc:
            raise StoreUnavailable(_short(exc)) from exc

    def __exit__(self, *exc_info: Any) -> Any:
        try:
            result = self._ctx.__exit__(*exc_info)
        except (OperationalError, DBAPIError) as exc:
            raise StoreUnavailable(_short(exc)) from exc
        if exc_info[0] is not None and issubclass(exc_info[0], (OperationalError, DBAPIError)) \
                and not issubclass(exc_info[0], IntegrityError):
            raise StoreUnavailable(_short(exc_info[1])) from exc_info[1]
        return result


def _short(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    return str(orig).splitlines()[0][:200]


def _cert(row: Any) -> CertRecord:
    values = dict(row)
    values.pop("id", None)
    values["der"] = bytes(values["der"])
    return CertRecord(**values)


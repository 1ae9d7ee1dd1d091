"""OTPs, lockouts and issuance: the writes on the enrollment path."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import and_, select

from kipuka.store import schema
from kipuka.store.base import Revoked, StoreBase
from kipuka.store.records import AuditEvent, CertRecord, OtpRecord


class EnrollmentStore(StoreBase):
    # --- OTPs -----------------------------------------------------------------------

    def create_otp(self, entity: str, label: str | None, key_id: str, digest: bytes,
                   expires_at: dt.datetime, uses: int, audit: AuditEvent) -> int:
        with self._tx() as conn:
            result = conn.execute(schema.otps.insert().values(
                entity=entity, label=label, key_id=key_id, digest=digest, created_at=audit.at,
                expires_at=expires_at, uses_total=uses, uses_left=uses, revoked_at=None))
            self._audit(conn, audit)
            return int(result.inserted_primary_key[0])

    def otp_candidates(self, entity: str, address: str) -> tuple[list[OtpRecord], dt.datetime | None]:
        """Every unrevoked OTP of an entity (spent ones too, for lost-response recovery), newest
        first, and the lockout of (entity, address): the one read an OTP check needs."""
        with self._read() as conn:
            return self._raw(conn, lambda cur: self.sql.otp_candidates(cur, entity, address))

    def certificate_entity(self, ca_id: str, serial: str) -> str | None:
        """The entity a certificate was issued to: what its renewal is recorded under."""
        with self._read() as conn:
            return self._raw(conn, lambda cur: self.sql.certificate_entity(cur, ca_id, serial))

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

    def record_auth_failure(self, entity: str, address: str, now: dt.datetime, max_failures: int,
                            window: dt.timedelta, audit: AuditEvent) -> dt.datetime | None:
        """Count a failed OTP attempt; returns the lock expiry once the pair is locked out."""
        t = schema.otp_failures
        key = and_(t.c.entity == entity, t.c.address == address)
        with self._tx() as conn:
            self._insert_ignore(conn, t, dict(entity=entity, address=address, failures=0, window_start=now,
                                              locked_until=None), ["entity", "address"])
            row = conn.execute(self._locked(conn, select(t.c.failures, t.c.window_start).where(key))).first()
            failures = 1 if row.window_start + window < now else row.failures + 1
            start = now if failures == 1 else row.window_start
            conn.execute(t.update().where(key).values(failures=failures, window_start=start))
            locked = now + window if failures >= max_failures else None
            if locked is not None:
                conn.execute(t.update().where(key).values(locked_until=locked, failures=0, window_start=now))
            self._audit(conn, audit)
            return locked

    # --- issuance -------------------------------------------------------------------
    # The statements live in issuance_sql (on the driver, no SQLAlchemy per call); the server
    # runs them through group commit (AsyncStore), the CLI and tests through these methods.

    def issue_with_otp(self, otp_id: int, cert: CertRecord, audit: AuditEvent, now: dt.datetime,
                       recovery_window: dt.timedelta) -> tuple[str, bytes | None]:
        """Spend one use of an OTP and record its certificate, atomically.

        Returns ("issued", None); ("recovered", der) when this OTP already gave a
        certificate for the same public key within the recovery window (a client
        that lost the response); or ("spent", None) when no use is left.
        """
        with self._tx() as conn:
            return self._issue_with_otp_in(conn, otp_id, cert, audit, now, recovery_window)

    def _issue_with_otp_in(self, conn: Any, otp_id: int, cert: CertRecord, audit: AuditEvent, now: dt.datetime,
                           recovery_window: dt.timedelta) -> tuple[str, bytes | None]:
        """issue_with_otp inside a caller's transaction (escrow adds its row to the same one)."""
        return self._raw(conn, lambda cur: self.sql.issue_with_otp(cur, otp_id, cert, audit, now, recovery_window))

    def recovered_certificate(self, otp_id: int, pubkey_sha256: str, since: dt.datetime, subject: str,
                              sans: str) -> tuple[bytes | None, bool]:
        """The certificate an OTP already gave this public key for these names since `since`, if any;
        and whether it gave this key one for other names instead (issuance_sql.recovered_der)."""
        with self._read() as conn:
            return self._raw(conn, lambda cur: self.sql.recovered_der(cur, otp_id, pubkey_sha256, since,
                                                                      subject, sans))

    def record_issuance(self, cert: CertRecord, audit: AuditEvent,
                        credential: tuple[str, str] | None = None) -> None:
        """Record a certificate; with `credential` (ca_id, serial), refuse if that one is revoked.

        Checking the credential inside the write transaction means a revocation
        that lands while the certificate is being signed still wins.
        """
        with self._tx() as conn:
            self._record_issuance_in(conn, cert, audit, credential)

    def _record_issuance_in(self, conn: Any, cert: CertRecord, audit: AuditEvent,
                            credential: tuple[str, str] | None) -> None:
        """record_issuance inside a caller's transaction."""
        if self._raw(conn, lambda cur: self.sql.record_issuance(cur, cert, audit, credential)) == "revoked":
            raise Revoked(credential[1])  # type: ignore[index]

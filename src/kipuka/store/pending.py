"""Requests held for an RA officer's approval (RFC 7030 4.2.3).

A pending OTP request reserves one use of its OTP when it is stored; the use
stays spent when the certificate is issued and is given back on rejection or
expiry. Approval records the certificate and closes the request in one
transaction, so a request is never issued twice.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.exc import IntegrityError

from kipuka.store import schema
from kipuka.store.base import Revoked, StoreBase
from kipuka.store.records import AuditEvent, CertRecord, PendingRecord


class PendingStore(StoreBase):
    def find_pending(self, requester: str, pubkey_sha256: str) -> PendingRecord | None:
        """The newest request of this requester for this public key, whatever its status."""
        p = schema.pending_requests
        with self._read() as conn:
            row = conn.execute(select(p).where(and_(p.c.requester == requester, p.c.pubkey_sha256 == pubkey_sha256))
                               .order_by(p.c.id.desc()).limit(1)).mappings().first()
        return _pending(row) if row else None

    def create_pending(self, values: dict[str, Any], audit: AuditEvent) -> int | None:
        """Store a new pending request; None when its OTP has no use left to reserve."""
        p, o = schema.pending_requests, schema.otps
        with self._tx() as conn:
            existing = conn.execute(select(p.c.id).where(and_(
                p.c.requester == values["requester"], p.c.pubkey_sha256 == values["pubkey_sha256"],
                p.c.status == "pending"))).first()
            if existing is not None:  # a concurrent copy of the same request got here first
                return int(existing[0])
            if values.get("otp_id") is not None:
                reserved = conn.execute(o.update().where(and_(
                    o.c.id == values["otp_id"], o.c.uses_left > 0, o.c.revoked_at.is_(None),
                    o.c.expires_at > values["created_at"])).values(uses_left=o.c.uses_left - 1)).rowcount
                if reserved != 1:
                    return None
            try:
                with conn.begin_nested():
                    new_id = conn.execute(p.insert().values(**values)).inserted_primary_key[0]
            except IntegrityError:  # a copy of this request on another node won (ux_pending_open)
                if values.get("otp_id") is not None:
                    conn.execute(o.update().where(o.c.id == values["otp_id"]).values(uses_left=o.c.uses_left + 1))
                row = conn.execute(select(p.c.id).where(and_(
                    p.c.requester == values["requester"], p.c.pubkey_sha256 == values["pubkey_sha256"],
                    p.c.status == "pending"))).first()
                return int(row[0]) if row else None
            self._audit(conn, audit)
            return int(new_id)

    def pending(self, request_id: int) -> PendingRecord | None:
        p = schema.pending_requests
        with self._read() as conn:
            row = conn.execute(select(p).where(p.c.id == request_id)).mappings().first()
        return _pending(row) if row else None

    def pending_requests(self, status: str | None = "pending", *, label: str | None = None,
                         after_id: int = 0, limit: int = 100) -> list[PendingRecord]:
        p = schema.pending_requests
        query = select(p).where(p.c.id > after_id).order_by(p.c.id).limit(limit)
        if status is not None:
            query = query.where(p.c.status == status)
        if label is not None:
            query = query.where(p.c.label == label)
        with self._read() as conn:
            return [_pending(r) for r in conn.execute(query).mappings().all()]

    def count_pending(self) -> int:
        p = schema.pending_requests
        with self._read() as conn:
            return int(conn.execute(select(func.count()).select_from(p).where(p.c.status == "pending")).scalar_one())

    def approve_pending(self, request_id: int, cert: CertRecord, audit: AuditEvent, decided_by: str,
                        now: dt.datetime) -> bool:
        """Issue a pending request: record the certificate and close the request, atomically."""
        p = schema.pending_requests
        with self._tx() as conn:
            row = conn.execute(select(p).where(p.c.id == request_id)).mappings().first()
            if row is None or row["status"] != "pending" or row["expires_at"] <= now:
                return False
            if row["credential_serial"] and self._revoked(conn, row["credential_ca"],
                                                                     row["credential_serial"]):
                raise Revoked(row["credential_serial"])
            closed = conn.execute(p.update().where(and_(p.c.id == request_id, p.c.status == "pending")).values(
                status="issued", serial=cert.serial, decided_at=now, decided_by=decided_by)).rowcount
            if closed != 1:
                return False
            self._insert_cert(conn, cert)
            self._audit(conn, audit)
            return True

    def set_ca_ref(self, request_id: int, ca_ref: str, audit: AuditEvent) -> bool:
        """An officer approved a request and the remote CA now holds it as `ca_ref`."""
        p = schema.pending_requests
        with self._tx() as conn:
            updated = conn.execute(p.update().where(and_(p.c.id == request_id, p.c.status == "pending")).values(
                ca_ref=ca_ref)).rowcount
            if updated == 1:
                self._audit(conn, audit)
            return updated == 1

    def reject_pending(self, request_id: int, reason: str, decided_by: str, now: dt.datetime,
                       audit: AuditEvent) -> bool:
        with self._tx() as conn:
            return self._close(conn, request_id, "rejected", reason, decided_by, now, audit)

    def expire_pending(self, now: dt.datetime) -> int:
        """Close every request past its expiry and give back the OTP uses they held."""
        p = schema.pending_requests
        with self._tx() as conn:
            due = conn.execute(select(p.c.id, p.c.label, p.c.entity, p.c.ca_id).where(
                and_(p.c.status == "pending", p.c.expires_at <= now))).all()
            for row in due:
                self._close(conn, row.id, "expired", "request expired before approval", "kipuka", now,
                            AuditEvent(event="request.expire", outcome="success", label=row.label,
                                       entity=row.entity, ca_id=row.ca_id, reason=f"request {row.id}", at=now))
            return len(due)

    def _close(self, conn: Any, request_id: int, status: str, reason: str, decided_by: str, now: dt.datetime,
               audit: AuditEvent) -> bool:
        p, o = schema.pending_requests, schema.otps
        row = conn.execute(select(p.c.otp_id).where(and_(p.c.id == request_id, p.c.status == "pending"))).first()
        if row is None:
            return False
        conn.execute(p.update().where(p.c.id == request_id).values(
            status=status, reason=reason, decided_at=now, decided_by=decided_by))
        if row.otp_id is not None:
            conn.execute(o.update().where(o.c.id == row.otp_id).values(uses_left=o.c.uses_left + 1))
        self._audit(conn, audit)
        return True


def _pending(row: Any) -> PendingRecord:
    values = dict(row)
    values["csr_der"] = bytes(values["csr_der"])
    return PendingRecord(**values)

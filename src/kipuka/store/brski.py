"""BRSKI (RFC 8995) state: pledges known by their IDevID, the LDevIDs issued to them,
and the ownership rules an officer added through the admin API.

A pledge row is created on its first voucher request, in the same transaction
as the audit event that says what the policy made of it; every later decision
(an officer's approval, a delivered voucher, telemetry) is one conditional
UPDATE with its audit event. An LDevID is linked to its pledge in the very
transaction that records the certificate.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.exc import IntegrityError

from kipuka.store import schema
from kipuka.store.base import StoreBase
from kipuka.store.records import AuditEvent, CertRecord


@dataclass(frozen=True)
class PledgeRecord:
    id: int
    idevid_sha256: str
    manufacturer: str
    serial_number: str
    idevid_subject: str
    idevid_der: bytes
    status: str  # owned (an ownership rule names it) | pending | approved | rejected
    label: str
    reason: str
    decided_by: str | None
    created_at: dt.datetime
    decided_at: dt.datetime | None
    client_addr: str
    masa_url: str
    nonce: str | None = None
    voucher_at: dt.datetime | None = None
    voucher: bytes | None = None
    voucher_status: str | None = None
    enroll_status: str | None = None


@dataclass(frozen=True)
class OwnershipRule:
    id: int
    manufacturer: str
    pattern: str
    label: str
    created_by: str
    created_at: dt.datetime


TELEMETRY = ("voucher_status", "enroll_status")


class BrskiStore(StoreBase):
    # --- pledges -----------------------------------------------------------------------

    def brski_pledge(self, idevid_sha256: str) -> PledgeRecord | None:
        p = schema.brski_pledges
        with self._read() as conn:
            row = conn.execute(select(p).where(p.c.idevid_sha256 == idevid_sha256)).mappings().first()
        return _pledge(row) if row else None

    def brski_pledge_by_id(self, pledge_id: int) -> PledgeRecord | None:
        p = schema.brski_pledges
        with self._read() as conn:
            row = conn.execute(select(p).where(p.c.id == pledge_id)).mappings().first()
        return _pledge(row) if row else None

    def brski_pledges(self, status: str | None = None, *, after_id: int = 0, limit: int = 100) -> list[PledgeRecord]:
        p = schema.brski_pledges
        query = select(p).where(p.c.id > after_id).order_by(p.c.id).limit(limit)
        if status is not None:
            query = query.where(p.c.status == status)
        with self._read() as conn:
            return [_pledge(r) for r in conn.execute(query).mappings().all()]

    def brski_register(self, values: dict[str, Any], audit: AuditEvent) -> PledgeRecord:
        """The pledge of this IDevID: created with `values` (and `audit`) on first sight, else as stored."""
        p = schema.brski_pledges
        with self._tx() as conn:
            row = conn.execute(self._locked(conn, select(p).where(
                p.c.idevid_sha256 == values["idevid_sha256"]))).mappings().first()
            if row is None:
                try:
                    with conn.begin_nested():
                        conn.execute(p.insert().values(**values))
                    self._audit(conn, audit)
                except IntegrityError:  # another node registered it first
                    pass
                row = conn.execute(select(p).where(p.c.idevid_sha256 == values["idevid_sha256"])).mappings().first()
            return _pledge(row)

    def brski_decide(self, pledge_id: int, from_status: tuple[str, ...], values: dict[str, Any],
                     audit: AuditEvent) -> bool:
        """Change a pledge's status (and label, reason, who decided) if it is still in `from_status`."""
        p = schema.brski_pledges
        with self._tx() as conn:
            n = conn.execute(p.update().where(and_(p.c.id == pledge_id, p.c.status.in_(from_status)))
                             .values(**values)).rowcount
            if n:
                self._audit(conn, audit)
            return bool(n)

    def brski_voucher_delivered(self, pledge_id: int, nonce: str | None, voucher: bytes, now: dt.datetime,
                                audit: AuditEvent) -> None:
        p = schema.brski_pledges
        with self._tx() as conn:
            conn.execute(p.update().where(p.c.id == pledge_id).values(nonce=nonce, voucher=voucher, voucher_at=now))
            self._audit(conn, audit)

    def brski_telemetry(self, pledge_id: int, kind: str, document: str, audit: AuditEvent) -> None:
        """Keep the pledge's last voucher_status or enroll_status report, and audit it."""
        if kind not in TELEMETRY:
            raise ValueError(kind)
        p = schema.brski_pledges
        with self._tx() as conn:
            conn.execute(p.update().where(p.c.id == pledge_id).values(**{kind: document}))
            self._audit(conn, audit)

    # --- LDevIDs -----------------------------------------------------------------------

    def record_ldevid(self, cert: CertRecord, audit: AuditEvent, pledge_id: int) -> None:
        """Record an LDevID issued to a pledge and its link to the IDevID, in one transaction."""
        with self._tx() as conn:
            self._record_issuance_in(conn, cert, audit, None)  # type: ignore[attr-defined]  # EnrollmentStore
            conn.execute(schema.brski_ldevids.insert().values(ca_id=cert.ca_id, serial=cert.serial,
                                                              pledge_id=pledge_id))

    def link_ldevid(self, ca_id: str, serial: str, pledge_id: int) -> None:
        """Link a certificate issued another way (held, then approved) to its pledge; idempotent."""
        with self._tx() as conn:
            self._insert_ignore(conn, schema.brski_ldevids, dict(ca_id=ca_id, serial=serial, pledge_id=pledge_id),
                                ["ca_id", "serial"])

    def ldevid_pledge(self, ca_id: str, serial: str) -> PledgeRecord | None:
        """The pledge whose IDevID obtained this certificate, if any."""
        p, link = schema.brski_pledges, schema.brski_ldevids
        with self._read() as conn:
            row = conn.execute(select(p).join(link, link.c.pledge_id == p.c.id).where(and_(
                link.c.ca_id == ca_id, link.c.serial == serial))).mappings().first()
        return _pledge(row) if row else None

    def pledge_ldevids(self, pledge_id: int) -> list[tuple[str, str]]:
        link = schema.brski_ldevids
        with self._read() as conn:
            rows = conn.execute(select(link.c.ca_id, link.c.serial).where(link.c.pledge_id == pledge_id)
                                .order_by(link.c.ca_id, link.c.serial)).all()
        return [(r[0], r[1]) for r in rows]

    # --- ownership rules -----------------------------------------------------------------

    def brski_rules(self) -> list[OwnershipRule]:
        o = schema.brski_ownership
        with self._read() as conn:
            return [OwnershipRule(**dict(r)) for r in conn.execute(select(o).order_by(o.c.id)).mappings().all()]

    def add_brski_rule(self, values: dict[str, Any], audit: AuditEvent) -> int | None:
        """A new ownership rule; None when the same manufacturer and pattern already have one."""
        o = schema.brski_ownership
        with self._tx() as conn:
            try:
                with conn.begin_nested():
                    new_id = conn.execute(o.insert().values(**values)).inserted_primary_key[0]
            except IntegrityError:
                return None
            self._audit(conn, dataclasses.replace(audit, reason=f"rule {new_id}: {audit.reason}"))
            return int(new_id)

    def delete_brski_rule(self, rule_id: int, audit: AuditEvent) -> bool:
        o = schema.brski_ownership
        with self._tx() as conn:
            n = conn.execute(o.delete().where(o.c.id == rule_id)).rowcount
            if n:
                self._audit(conn, audit)
            return bool(n)


def _pledge(row: Any) -> PledgeRecord:
    values = dict(row)
    values["idevid_der"] = bytes(values["idevid_der"])
    if values.get("voucher") is not None:
        values["voucher"] = bytes(values["voucher"])
    return PledgeRecord(**values)

"""Issued certificates: lookups, listings, revocation and CRL state."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any
from sqlalchemy import and_, func, literal_column, or_, select

from kipuka.store import schema
from kipuka.store.base import StoreBase, _cert
from kipuka.store.records import AuditEvent, CertRecord


@dataclass(frozen=True)
class CertFilter:
    subject: str | None = None
    subject_prefix: str | None = None
    entity: str | None = None
    label: str | None = None
    ca_id: str | None = None
    status: str | None = None  # valid | revoked | expired
    issued_after: dt.datetime | None = None
    issued_before: dt.datetime | None = None
    expires_after: dt.datetime | None = None  # not_after >= this (the console's expiry window)
    expires_before: dt.datetime | None = None  # not_after < this
    serial: str | None = None  # lower-case hex, as stored
    san: str | None = None  # a part of a subjectAltName, any case
    subject_contains: str | None = None  # a part of the subject, any case
    q: str | None = None  # the console's one search box: serial, SAN or subject
    otp_id: int | None = None  # the certificates an OTP produced


def _like(text: str) -> str:
    """A LIKE pattern matching `text` anywhere, in lower case (\\ escapes the wildcards)."""
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _hex_serial(text: str) -> str | None:
    raw = text.strip().lower().replace(":", "").removeprefix("0x")
    if not raw or len(raw) > 42 or any(ch not in "0123456789abcdef" for ch in raw):
        return None
    return format(int(raw, 16), "x")


def cert_conditions(f: CertFilter, now: dt.datetime) -> list[Any]:
    """The WHERE conditions of a certificate search (shared by listings, counts and bulk acts)."""
    c = schema.certificates
    out: list[Any] = []
    for column, value in ((c.c.subject, f.subject), (c.c.entity, f.entity), (c.c.label, f.label),
                          (c.c.ca_id, f.ca_id), (c.c.otp_id, f.otp_id)):
        if value is not None:
            out.append(column == value)
    if f.subject_prefix:
        # A range, not LIKE: SQLite's LIKE is case-insensitive and cannot use the index.
        out.append(and_(c.c.subject >= f.subject_prefix, c.c.subject < f.subject_prefix + "\U0010ffff"))
    if f.serial is not None:
        out.append(c.c.serial == (_hex_serial(f.serial) or "-"))
    if f.san:
        out.append(func.lower(c.c.sans).like(_like(f.san), escape="\\"))
    if f.subject_contains:
        out.append(func.lower(c.c.subject).like(_like(f.subject_contains), escape="\\"))
    if f.q and f.q.strip():
        text = f.q.strip()
        # One expression for both columns: PostgreSQL's trigram index on it (migrations.search_index)
        # finds the rows; a space keeps a subject's end from joining the SANs' start.
        anywhere = [func.lower(c.c.subject + " " + c.c.sans).like(_like(text), escape="\\")]
        serial = _hex_serial(text)
        if serial is not None:
            anywhere.append(c.c.serial == serial)
        out.append(or_(*anywhere))
    if f.issued_after is not None:
        out.append(c.c.issued_at >= f.issued_after)
    if f.issued_before is not None:
        out.append(c.c.issued_at < f.issued_before)
    if f.expires_after is not None:
        out.append(c.c.not_after >= f.expires_after)
    if f.expires_before is not None:
        out.append(c.c.not_after < f.expires_before)
    if f.status == "revoked":
        out.append(c.c.revoked_at.is_not(None))
    elif f.status == "valid":
        out.append(and_(c.c.revoked_at.is_(None), c.c.not_after > now))
    elif f.status == "expired":
        out.append(and_(c.c.revoked_at.is_(None), c.c.not_after <= now))
    return out


@dataclass(frozen=True)
class StoredCRL:
    ca_id: str
    number: int
    this_update: dt.datetime
    next_update: dt.datetime
    der: bytes


class CertificateStore(StoreBase):
    def is_revoked(self, ca_id: str, serial: str) -> bool:
        with self._read() as conn:
            return self._revoked(conn, ca_id, serial)

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
        return [r for _, r in self.search_certificates(CertFilter(entity=entity, label=label), limit=limit,
                                                        after_id=after_id)]

    def search_certificates(self, f: CertFilter, *, limit: int = 100, after_id: int = 0,
                            now: dt.datetime | None = None) -> list[tuple[int, CertRecord]]:
        """(row id, record) pairs in id order after `after_id`: keyset pagination on indexed columns."""
        c = schema.certificates
        now = now or dt.datetime.now(dt.timezone.utc)
        query = select(c).where(c.c.id > after_id, *cert_conditions(f, now)).order_by(c.c.id).limit(limit)
        narrow_prefix = bool(f.subject_prefix)
        if narrow_prefix:
            in_range = and_(c.c.subject >= f.subject_prefix, c.c.subject < f.subject_prefix + "\U0010ffff")
        with self._read() as conn:
            if narrow_prefix and self._few(conn, select(c.c.id).where(in_range)):
                # With bound parameters the planner cannot see how narrow the range is
                # and walks the primary key; for a narrow prefix, the subject index is
                # 100x faster (docs/benchmarks.md). `+id` keeps the order but not the index.
                query = query.order_by(None).order_by(literal_column("+certificates.id"))
            return [(int(r["id"]), _cert(r)) for r in conn.execute(query).mappings().all()]

    @staticmethod
    def _few(conn: Any, ids: Any, threshold: int = 2000) -> bool:
        """True when fewer than `threshold` rows match (an index-only count that stops early)."""
        counted = conn.execute(select(func.count()).select_from(ids.limit(threshold).subquery())).scalar_one()
        return counted < threshold

    def certificate(self, serial: str) -> list[CertRecord]:
        c = schema.certificates
        with self._read() as conn:
            return [_cert(r) for r in conn.execute(select(c).where(c.c.serial == serial)).mappings().all()]

    def count_certificates(self) -> int:
        with self._read() as conn:
            return int(conn.execute(select(func.count()).select_from(schema.certificates)).scalar_one())

    def certificate_status(self, ca_id: str, serial: str) -> CertRecord | None:
        """The record OCSP answers from; None when this CA never issued that serial."""
        c = schema.certificates
        with self._read() as conn:
            row = conn.execute(select(c).where(and_(c.c.ca_id == ca_id, c.c.serial == serial))).mappings().first()
        return _cert(row) if row else None

    # --- CRLs -----------------------------------------------------------------------

    def revoked_entries(self, ca_id: str, now: dt.datetime) -> list[tuple[str, dt.datetime, str]]:
        """(serial, revoked_at, reason) of every revoked, unexpired certificate of a CA."""
        c = schema.certificates
        query = select(c.c.serial, c.c.revoked_at, c.c.revocation_reason).where(and_(
            c.c.ca_id == ca_id, c.c.revoked_at.is_not(None), c.c.not_after > now))
        with self._read() as conn:
            return [(r[0], r[1], r[2] or "unspecified") for r in conn.execute(query).all()]

    def next_crl_number(self, ca_id: str, now: dt.datetime) -> int:
        """Allocate the next CRL number for a CA (monotonic across nodes: the row is the counter)."""
        s = schema.crl_state
        with self._tx() as conn:
            self._insert_ignore(conn, s, dict(ca_id=ca_id, number=0, this_update=now, next_update=now, der=b""),
                                ["ca_id"])
            return int(conn.execute(s.update().where(s.c.ca_id == ca_id).values(number=s.c.number + 1)
                                    .returning(s.c.number)).scalar_one())

    def save_crl(self, crl: StoredCRL) -> None:
        """Publish a CRL unless a newer one (higher number) was published meanwhile."""
        s = schema.crl_state
        with self._tx() as conn:
            conn.execute(s.update().where(and_(s.c.ca_id == crl.ca_id, s.c.number <= crl.number)).values(
                number=crl.number, this_update=crl.this_update, next_update=crl.next_update, der=crl.der))

    def latest_crl(self, ca_id: str) -> StoredCRL | None:
        s = schema.crl_state
        with self._read() as conn:
            row = conn.execute(select(s).where(s.c.ca_id == ca_id)).mappings().first()
        if row is None or not row["der"]:
            return None
        return StoredCRL(row["ca_id"], int(row["number"]), row["this_update"], row["next_update"], bytes(row["der"]))

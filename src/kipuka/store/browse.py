"""Keyset-paged listings for the console and the admin API, lineage, bulk acts.

A page is found by the sort key (value, id) of the row next to it, never by an
OFFSET; the cursor is that row's id: the first, the next and the previous page of a 100,000-row table cost
the same, one index range scan each (docs/benchmarks.md).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, TypeVar

from sqlalchemy import and_, bindparam, case, false, func, or_, select, tuple_

from kipuka.store import schema
from kipuka.store.base import StoreBase, _cert
from kipuka.store.certificates import CertFilter, cert_conditions
from kipuka.store.records import AuditEvent, CertRecord, OtpRecord, PendingRecord

T = TypeVar("T")
Key = tuple[Any, int]  # (sort value, row id)

CERT_SORTS = {"issued": "id", "expires": "not_after", "subject": "subject"}
OTP_STATUSES = ("active", "spent", "expired", "revoked")


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of rows; `next_key`/`prev_key` find the pages after and before it (None at an end)."""

    items: list[T]
    next_key: int | None  # the id of the last row, when more follow: pass it as `after`
    prev_key: int | None  # the id of the first row, when rows precede: pass it as `before`
    ids: list[int] = field(default_factory=list)
    superseded: set[tuple[str, str]] = field(default_factory=set)  # (ca_id, serial) a renewal replaced


def keyset(conn: Any, query: Any, column: Any, id_column: Any, *, descending: bool, after: int | None,
           before: int | None, limit: int, convert: Callable[[Any], T]) -> Page[T]:
    """Run `query` for one page ordered by (column, id): the first, the one after row `after`, or the one
    before row `before` (row ids: the cursor is the row next to the page, its sort value read here)."""
    backwards = before is not None and after is None
    row_id = before if backwards else after
    key: Key | None = None
    if row_id is not None:
        if column is id_column:
            key = (row_id, row_id)
        else:
            found = conn.execute(select(column).where(id_column == row_id)).first()
            if found is None:  # no such row: nothing is next to it
                return Page([], None, None)
            key = (found[0], row_id)
    forward_desc = descending != backwards  # the direction the rows are read in
    if key is not None:
        bound = tuple_(column, id_column)
        values = tuple_(bindparam(None, key[0], type_=column.type), bindparam(None, key[1], type_=id_column.type))
        if column is id_column:
            query = query.where(id_column < key[1] if forward_desc else id_column > key[1])
        else:
            query = query.where(bound < values if forward_desc else bound > values)
    order = (column.desc(), id_column.desc()) if forward_desc else (column.asc(), id_column.asc())
    if column is id_column:
        order = order[:1]
    rows = conn.execute(query.order_by(*order).limit(limit + 1)).mappings().all()
    more = len(rows) > limit
    rows = list(rows[:limit])
    if backwards:
        rows.reverse()
    ids = [int(r[id_column.name]) for r in rows]
    if backwards:
        next_id = ids[-1] if ids else None
        prev_id = ids[0] if ids and more else None
    else:
        next_id = ids[-1] if ids and more else None
        prev_id = ids[0] if ids and after is not None else None
    return Page([convert(r) for r in rows], next_id, prev_id, ids)


class BrowseStore(StoreBase):
    # --- certificates -----------------------------------------------------------------

    def certificate_page(self, f: CertFilter, *, sort: str = "issued", descending: bool = True,
                         after: int | None = None, before: int | None = None, limit: int = 50,
                         now: dt.datetime | None = None) -> Page[CertRecord]:
        """One page of a certificate search, with which of its rows a renewal superseded."""
        c = schema.certificates
        column = c.c[CERT_SORTS[sort]]
        query = select(c).where(*cert_conditions(f, now or dt.datetime.now(dt.timezone.utc)))
        with self._read() as conn:
            page = keyset(conn, query, column, c.c.id, descending=descending, after=after, before=before,
                          limit=limit, convert=_cert)
            keys = [(r.ca_id, r.serial) for r in page.items]
            if keys:
                serials = {s for _, s in keys}
                found = conn.execute(select(c.c.replaces_ca, c.c.replaces_serial).where(
                    c.c.replaces_serial.in_(serials))).all()
                superseded = {(r[0], r[1]) for r in found} & set(keys)
                page = Page(page.items, page.next_key, page.prev_key, page.ids, superseded)
        return page

    def count_certificates_matching(self, f: CertFilter, now: dt.datetime | None = None) -> int:
        c = schema.certificates
        query = select(func.count()).select_from(c).where(*cert_conditions(f, now or dt.datetime.now(dt.timezone.utc)))
        with self._read() as conn:
            return int(conn.execute(query).scalar_one())

    def certificate_keys(self, f: CertFilter, limit: int, now: dt.datetime | None = None) -> list[tuple[str, str]]:
        """(ca_id, serial) of up to `limit` unrevoked certificates a search matches (a bulk revocation)."""
        c = schema.certificates
        query = select(c.c.ca_id, c.c.serial).where(*cert_conditions(f, now or dt.datetime.now(dt.timezone.utc)),
                                                    c.c.revoked_at.is_(None)).order_by(c.c.id).limit(limit)
        with self._read() as conn:
            return [(r[0], r[1]) for r in conn.execute(query).all()]

    def lineage(self, ca_id: str, serial: str) -> tuple[CertRecord | None, list[CertRecord]]:
        """(the certificate this one renewed, the certificates that renewed this one)."""
        c = schema.certificates
        with self._read() as conn:
            me = conn.execute(select(c.c.replaces_ca, c.c.replaces_serial).where(and_(
                c.c.ca_id == ca_id, c.c.serial == serial))).first()
            earlier = None
            if me is not None and me[1] is not None:
                row = conn.execute(select(c).where(and_(c.c.ca_id == me[0], c.c.serial == me[1]))).mappings().first()
                earlier = _cert(row) if row else None
            later = conn.execute(select(c).where(and_(c.c.replaces_serial == serial, c.c.replaces_ca == ca_id))
                                 .order_by(c.c.id)).mappings().all()
        return earlier, [_cert(r) for r in later]

    def revoke_certificates(self, keys: list[tuple[str, str]], reason: str, now: dt.datetime,
                            actor: str) -> list[tuple[str, str]]:
        """Revoke many certificates in one transaction, one audit event each; returns those revoked now."""
        c = schema.certificates
        done: list[tuple[str, str]] = []
        with self._tx() as conn:
            for start in range(0, len(keys), 500):
                for ca_id, serial in keys[start:start + 500]:
                    n = conn.execute(c.update().where(and_(c.c.ca_id == ca_id, c.c.serial == serial,
                                                           c.c.revoked_at.is_(None)))
                                     .values(revoked_at=now, revocation_reason=reason)).rowcount
                    if n:
                        done.append((ca_id, serial))
            if done:
                conn.execute(schema.audit.insert(), [AuditEvent(
                    event="cert.revoke", outcome="success", auth=actor, serial=serial, reason=f"{reason} (bulk)",
                    ca_id=ca_id, at=now).row() for ca_id, serial in done])
        return done

    # --- pending requests, OTPs, audit -----------------------------------------------------

    def pending_page(self, status: str | None = "pending", *, label: str | None = None,
                     entity: str | None = None, descending: bool = False, after: int | None = None,
                     before: int | None = None, limit: int = 50) -> Page[PendingRecord]:
        from kipuka.store.pending import _pending
        p = schema.pending_requests
        query = select(p)
        for column, value in ((p.c.status, status), (p.c.label, label), (p.c.entity, entity)):
            if value is not None:
                query = query.where(column == value)
        with self._read() as conn:
            return keyset(conn, query, p.c.id, p.c.id, descending=descending, after=after, before=before,
                          limit=limit, convert=_pending)

    def otp_page(self, *, entity: str | None = None, status: str | None = None, descending: bool = True,
                 after: int | None = None, before: int | None = None, limit: int = 50,
                 now: dt.datetime | None = None) -> Page[OtpRecord]:
        """OTPs, newest first by default; `status` is active, spent, expired or revoked."""
        o = schema.otps
        now = now or dt.datetime.now(dt.timezone.utc)
        query = select(o)
        if entity is not None:
            query = query.where(o.c.entity == entity)
        live = o.c.revoked_at.is_(None)
        query = query.where({
            None: True, "revoked": o.c.revoked_at.is_not(None),
            "spent": and_(live, o.c.uses_left <= 0),
            "expired": and_(live, o.c.uses_left > 0, o.c.expires_at <= now),
            "active": and_(live, o.c.uses_left > 0, o.c.expires_at > now),
        }.get(status, false()))
        with self._read() as conn:
            return keyset(conn, query, o.c.id, o.c.id, descending=descending, after=after, before=before,
                          limit=limit, convert=lambda r: OtpRecord(**dict(r)))

    def revoke_otps(self, ids: list[int], now: dt.datetime, actor: str) -> list[int]:
        """Revoke many OTPs in one transaction, one audit event each; returns the ids revoked now."""
        o = schema.otps
        done = []
        with self._tx() as conn:
            for otp_id in ids:
                if conn.execute(o.update().where(and_(o.c.id == otp_id, o.c.revoked_at.is_(None)))
                                .values(revoked_at=now)).rowcount:
                    done.append(otp_id)
            if done:
                conn.execute(schema.audit.insert(), [AuditEvent(
                    event="otp.revoke", outcome="success", auth=actor, reason=f"otp {i} (bulk)", at=now).row()
                    for i in done])
        return done

    def audit_page(self, *, event: str | None = None, outcome: str | None = None, entity: str | None = None,
                   label: str | None = None, actor: str | None = None, since: dt.datetime | None = None,
                   until: dt.datetime | None = None, after: int | None = None, before: int | None = None,
                   limit: int = 50) -> Page[AuditEvent]:
        """Audit events, newest first."""
        a = schema.audit
        query = select(a)
        for column, value in ((a.c.event, event), (a.c.outcome, outcome), (a.c.entity, entity),
                              (a.c.label, label), (a.c.auth, actor)):
            if value is not None:
                query = query.where(column == value)
        if since is not None:
            query = query.where(a.c.at >= since)
        if until is not None:
            query = query.where(a.c.at < until)
        with self._read() as conn:
            return keyset(conn, query, a.c.id, a.c.id, descending=True, after=after, before=before, limit=limit,
                          convert=lambda r: AuditEvent(**dict(r)))

    # --- the dashboard ------------------------------------------------------------------

    def expiring_by_label(self, now: dt.datetime, days: tuple[int, ...] = (7, 30, 90)) -> dict[str, dict[int, int]]:
        """{label: {days: unrevoked certificates expiring within that many days}}: one range scan of
        the expiry index, counted in the database."""
        c = schema.certificates
        horizon = now + dt.timedelta(days=max(days))
        counts = [func.sum(case((c.c.not_after <= now + dt.timedelta(days=d), 1), else_=0)) for d in days]
        query = select(c.c.label, *counts).where(and_(c.c.not_after > now, c.c.not_after <= horizon,
                                                     c.c.revoked_at.is_(None))).group_by(c.c.label)
        with self._read() as conn:
            return {r[0]: {d: int(r[k + 1] or 0) for k, d in enumerate(days)} for r in conn.execute(query)}

    def outcome_counts(self, since: dt.datetime) -> dict[str, int]:
        """Audit outcomes of enrollment events since a time: {"success": n, "rejected": n, "error": n}."""
        a = schema.audit
        query = select(a.c.outcome, func.count()).where(and_(
            a.c.at >= since, or_(a.c.event.in_(("enroll", "reenroll", "serverkeygen", "fullcmc")),
                                 a.c.event.like("%.pending")))).group_by(a.c.outcome)
        with self._read() as conn:
            return {r[0]: int(r[1]) for r in conn.execute(query)}

    def otp_certificates_exist(self, otp_ids: list[int]) -> dict[int, int]:
        """{otp id: how many certificates it produced} for a page of OTPs."""
        c = schema.certificates
        if not otp_ids:
            return {}
        query = select(c.c.otp_id, func.count()).where(c.c.otp_id.in_(otp_ids)).group_by(c.c.otp_id)
        with self._read() as conn:
            return {int(r[0]): int(r[1]) for r in conn.execute(query)}


__all__ = ["BrowseStore", "CERT_SORTS", "OTP_STATUSES", "Page"]

"""Counts per hour for the console's overview: certificates issued and failed requests.

The certificates table has no index on issued_at (and its rows carry the DER),
so a plain range filter would read the whole table. Row ids grow with
issuance time, so a binary search over the primary key finds the first row of
the window in ~log2(n) point lookups and the count reads only that window.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import and_, func, literal_column, select

from kipuka.store import schema
from kipuka.store.base import StoreBase

FAILED = ("rejected", "error")


class StatsStore(StoreBase):
    def issued_per_hour(self, since: dt.datetime, until: dt.datetime) -> dict[dt.datetime, int]:
        """Certificates issued in [since, until), keyed by the start of their UTC hour."""
        c = schema.certificates
        with self._read() as conn:
            first = self._first_id_from(conn, since)
            if first is None:
                return {}
            hour = _hour(conn, c.c.issued_at)
            rows = conn.execute(select(hour, func.count()).where(and_(
                c.c.id >= first, c.c.issued_at >= since, c.c.issued_at < until)).group_by(hour)).all()
        return {_parse_hour(h): int(n) for h, n in rows}

    def failures_per_hour(self, since: dt.datetime, until: dt.datetime) -> dict[dt.datetime, int]:
        """Audit events with a rejected or error outcome in [since, until) (ix_audit_at), per UTC hour."""
        a = schema.audit
        with self._read() as conn:
            hour = _hour(conn, a.c.at)
            rows = conn.execute(select(hour, func.count()).where(and_(
                a.c.at >= since, a.c.at < until, a.c.outcome.in_(FAILED))).group_by(hour)).all()
        return {_parse_hour(h): int(n) for h, n in rows}

    @staticmethod
    def _first_id_from(conn: Any, since: dt.datetime) -> int | None:
        """The smallest certificate id issued at or after `since` (None: none was)."""
        c = schema.certificates
        low, high = conn.execute(select(func.min(c.c.id), func.max(c.c.id))).first()
        if high is None:
            return None
        end = int(high) + 1  # the answer lies in [low, end]; end means "no such row"
        low = int(low)
        while low < end:
            mid = (low + end) // 2
            row = conn.execute(select(c.c.id, c.c.issued_at).where(c.c.id >= mid).order_by(c.c.id).limit(1)).first()
            if row is not None and row[1] < since:
                low = int(row[0]) + 1
            else:
                end = mid
        return low if low <= int(high) else None


def _hour(conn: Any, column: Any) -> Any:
    """'YYYY-MM-DD HH' of a UTC timestamp column, in either dialect."""
    if conn.dialect.name == "postgresql":
        return func.to_char(column.op("AT TIME ZONE")(literal_column("'UTC'")), "YYYY-MM-DD HH24")
    return func.substr(column, 1, 13)  # SQLite keeps UTC as 'YYYY-MM-DD HH:MM:SS.ffffff'


def _parse_hour(text: str) -> dt.datetime:
    return dt.datetime.strptime(text[:13], "%Y-%m-%d %H").replace(tzinfo=dt.timezone.utc)

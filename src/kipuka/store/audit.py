"""The audit trail: append-only rows, linked into a SHA-256 hash chain afterwards.

Writers only insert (numbered by the database). A chainer, one at a time
(BEGIN IMMEDIATE on SQLite, SELECT ... FOR UPDATE of the chain head on
PostgreSQL), gives unchained rows the next chain sequence number and
hash = SHA-256(prev_hash || canonical row). Issuance never waits on the chain,
and two nodes can never fork it: there is one chain head row.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json

from typing import Any

from sqlalchemy import func, select

from kipuka.store import schema
from kipuka.store.base import StoreBase
from kipuka.store.records import AuditEvent, ChainCheck

GENESIS = "0" * 64
_CHAIN_FIELDS = ("id", "at", "event", "outcome", "reason", "label", "entity", "client_addr", "auth", "ca_id",
                 "serial")


def audit_hash(prev_hash: str, seq: int, e: AuditEvent) -> str:
    """The link of one row: canonical JSON of every field, chained to the previous hash."""
    body = json.dumps([seq, e.id, e.at.astimezone(dt.timezone.utc).isoformat(), e.event, e.outcome, e.reason,
                       e.label, e.entity, e.client_addr, e.auth, e.ca_id, e.serial],
                      separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(prev_hash.encode() + body.encode()).hexdigest()


class AuditStore(StoreBase):
    def add_audit(self, event_: AuditEvent) -> None:
        with self._tx() as conn:
            self._audit(conn, event_)

    def audit_events(self, limit: int = 100, *, before_id: int | None = None, event: str | None = None,
                     outcome: str | None = None, entity: str | None = None, label: str | None = None,
                     since: dt.datetime | None = None, until: dt.datetime | None = None) -> list[AuditEvent]:
        """Newest first; `before_id` is the cursor of the next page."""
        a = schema.audit
        query = select(a).order_by(a.c.id.desc()).limit(limit)
        for column, value in ((a.c.event, event), (a.c.outcome, outcome), (a.c.entity, entity),
                              (a.c.label, label)):
            if value is not None:
                query = query.where(column == value)
        if before_id is not None:
            query = query.where(a.c.id < before_id)
        if since is not None:
            query = query.where(a.c.at >= since)
        if until is not None:
            query = query.where(a.c.at < until)
        with self._read() as conn:
            return [AuditEvent(**dict(r)) for r in conn.execute(query).mappings().all()]

    def chain_audit(self, limit: int = 1000) -> list[AuditEvent]:
        """Link up to `limit` unchained rows into the chain; returns them, chained, in order.

        The rows are read and linked on the driver's cursor: at a thousand enrollments a second
        SQLAlchemy's per-row result processing and executemany made the chainer 5% of a worker.
        The chain head stays on SQLAlchemy (one row per batch, locked the dialect's way).
        """
        head = schema.audit_chain
        with self._tx() as conn:
            self._insert_ignore(conn, head, dict(id=1, last_seq=0, last_hash=GENESIS), ["id"])
            state = conn.execute(self._locked(conn, select(head).where(head.c.id == 1))).first()
            chained = self._raw(conn, lambda cur: self._link(cur, int(state.last_seq), state.last_hash, limit))
            if chained:
                conn.execute(head.update().where(head.c.id == 1).values(last_seq=chained[-1].chain_seq,
                                                                        last_hash=chained[-1].hash))
            return chained

    def _link(self, cur: Any, seq: int, prev: str, limit: int) -> list[AuditEvent]:
        q, read_time = self.sql.dialect.sql, self.sql.dialect.read_time
        cur.execute(q(f"SELECT {', '.join(_CHAIN_FIELDS)} FROM audit WHERE chain_seq IS NULL ORDER BY id "
                      "LIMIT :limit"), {"limit": limit})
        chained, links = [], []
        for values in cur.fetchall():
            fields = dict(zip(_CHAIN_FIELDS, values))
            fields["at"] = read_time(fields["at"])
            e = AuditEvent(**fields)
            seq += 1
            digest = audit_hash(prev, seq, e)
            links.append({"row_id": e.id, "seq": seq, "prev": prev, "digest": digest})
            chained.append(dataclasses.replace(e, chain_seq=seq, prev_hash=prev, hash=digest))
            prev = digest
        if links:  # one executemany: the write lock is held briefly
            cur.executemany(q("UPDATE audit SET chain_seq = :seq, prev_hash = :prev, hash = :digest "
                              "WHERE id = :row_id"), links)
        return chained

    def verify_audit_chain(self, batch: int = 5000) -> ChainCheck:
        """Walk the chain in order and recompute every link; report the first broken one."""
        a, head = schema.audit, schema.audit_chain
        checked, prev, expect = 0, GENESIS, 1
        with self._read() as conn:
            while True:
                rows = conn.execute(select(a).where(a.c.chain_seq >= expect).order_by(a.c.chain_seq)
                                    .limit(batch)).mappings().all()
                if not rows:
                    break
                for row in rows:
                    e = AuditEvent(**dict(row))
                    problem = self._link_problem(e, expect, prev)
                    if problem:
                        return ChainCheck(False, checked, 0, e.id, e.chain_seq, problem)
                    prev, expect, checked = e.hash or "", expect + 1, checked + 1
            state = conn.execute(select(head).where(head.c.id == 1)).first()
            unchained = conn.execute(select(func.count()).select_from(a).where(a.c.chain_seq.is_(None))).scalar_one()
        if state is not None and (state.last_seq != checked or state.last_hash != prev):
            return ChainCheck(False, checked, unchained, None, checked,
                              "chain head does not match the last row (rows deleted at the end?)")
        return ChainCheck(True, checked, int(unchained))

    @staticmethod
    def _link_problem(e: AuditEvent, expect: int, prev: str) -> str:
        if e.chain_seq != expect:
            return f"sequence {expect} is missing (row deleted?)"
        if e.prev_hash != prev:
            return "prev_hash does not match the previous row"
        if audit_hash(prev, expect, e) != e.hash:
            return "row content does not match its hash (row edited?)"
        return ""



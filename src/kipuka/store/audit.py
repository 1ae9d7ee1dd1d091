"""The audit trail: append-only rows, linked into a SHA-256 hash chain afterwards.

Writers only insert (numbered by the database). A chainer gives unchained rows
the next chain sequence number and hash = SHA-256(prev_hash || canonical row),
computed from a read and written, one chainer at a time (BEGIN IMMEDIATE on
SQLite, SELECT ... FOR UPDATE of the chain head on PostgreSQL), only if the
head is still where the read found it. Issuance never waits on the chain,
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

        Optimistic, so that the write lock is not held while rows are hashed (on SQLite the
        chainer's lock stalled every worker's group commit for the ~10 ms a thousand rows take):
        the head and the next rows are read and linked in a read transaction, and the links are
        written only if the head has not moved since (one chainer at a time still decides, under
        the lock). Rows are read and linked on the driver's cursor: through SQLAlchemy's per-row
        result processing the chainer was 5% of a worker.
        """
        head = schema.audit_chain
        for _ in range(3):  # another chainer went first: read again from its head
            with self._read() as conn:
                state = conn.execute(select(head).where(head.c.id == 1)).first()
                seq, prev = (int(state.last_seq), state.last_hash) if state is not None else (0, GENESIS)
                chained = self._raw(conn, lambda cur: self._linked(cur, seq, prev, limit))
            if not chained:
                return []
            with self._tx() as conn:
                self._insert_ignore(conn, head, dict(id=1, last_seq=0, last_hash=GENESIS), ["id"])
                now = conn.execute(self._locked(conn, select(head).where(head.c.id == 1))).first()
                if (int(now.last_seq), now.last_hash) != (seq, prev):
                    continue
                links = [{"row_id": e.id, "seq": e.chain_seq, "prev": e.prev_hash, "digest": e.hash}
                         for e in chained]
                update = self.sql.dialect.sql("UPDATE audit SET chain_seq = :seq, prev_hash = :prev, "
                                              "hash = :digest WHERE id = :row_id")
                self._raw(conn, lambda cur: cur.executemany(update, links))
                conn.execute(head.update().where(head.c.id == 1).values(last_seq=chained[-1].chain_seq,
                                                                        last_hash=chained[-1].hash))
            return chained
        return []

    def _linked(self, cur: Any, seq: int, prev: str, limit: int) -> list[AuditEvent]:
        """The next `limit` unchained rows, linked after (seq, prev): computed, not yet written."""
        q, read_time = self.sql.dialect.sql, self.sql.dialect.read_time
        cur.execute(q(f"SELECT {', '.join(_CHAIN_FIELDS)} FROM audit WHERE chain_seq IS NULL ORDER BY id "
                      "LIMIT :limit"), {"limit": limit})
        chained = []
        for values in cur.fetchall():
            fields = dict(zip(_CHAIN_FIELDS, values))
            fields["at"] = read_time(fields["at"])
            e = AuditEvent(**fields)
            seq += 1
            digest = audit_hash(prev, seq, e)
            chained.append(dataclasses.replace(e, chain_seq=seq, prev_hash=prev, hash=digest))
            prev = digest
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



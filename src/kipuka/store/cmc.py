"""Full CMC replay protection: senderNonces and transactionIds seen before (table cmc_replay)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy import and_, select
from sqlalchemy.exc import IntegrityError

from kipuka.store import schema
from kipuka.store.base import StoreBase


class CmcStore(StoreBase):
    def remember_cmc(self, entries: Sequence[tuple[str, str]], now: dt.datetime) -> str | None:
        """Record (kind, value_sha256) pairs at once; None if none was seen before.

        Otherwise nothing is recorded and the kind ("nonce" or "transaction")
        already seen is returned. The unique constraint decides between two
        nodes racing with the same value: the loser sees its insert refused.
        """
        if not entries:
            return None
        r = schema.cmc_replay
        try:
            with self._tx() as conn:
                for kind, value in entries:
                    seen = conn.execute(select(r.c.id).where(and_(r.c.kind == kind, r.c.value_sha256 == value))
                                        ).first()
                    if seen is not None:
                        return kind
                conn.execute(r.insert(), [{"kind": k, "value_sha256": v, "seen_at": now} for k, v in entries])
        except IntegrityError:
            return entries[0][0] if len(entries) == 1 else self._first_seen(entries)
        return None

    def _first_seen(self, entries: Sequence[tuple[str, str]]) -> str:
        r = schema.cmc_replay
        with self._read() as conn:
            for kind, value in entries:
                if conn.execute(select(r.c.id).where(and_(r.c.kind == kind, r.c.value_sha256 == value))).first():
                    return kind
        return entries[0][0]

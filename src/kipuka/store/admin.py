"""Admin API bearer tokens, stored as SHA-256 of 256-bit random secrets."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import and_, select

from kipuka.store import schema
from kipuka.store.base import StoreBase
from kipuka.store.records import AuditEvent


class AdminTokenStore(StoreBase):
    def create_admin_token(self, name: str, token_sha256: str, audit: AuditEvent) -> int:
        with self._tx() as conn:
            new_id = conn.execute(schema.admin_tokens.insert().values(
                name=name, token_sha256=token_sha256, created_at=audit.at, revoked_at=None)).inserted_primary_key[0]
            self._audit(conn, audit)
            return int(new_id)

    def admin_token_name(self, token_sha256: str) -> str | None:
        t = schema.admin_tokens
        with self._read() as conn:
            row = conn.execute(select(t.c.name).where(and_(t.c.token_sha256 == token_sha256,
                                                           t.c.revoked_at.is_(None)))).first()
        return row[0] if row else None

    def revoke_admin_token(self, name: str, now: dt.datetime, audit: AuditEvent) -> int:
        t = schema.admin_tokens
        with self._tx() as conn:
            n = conn.execute(t.update().where(and_(t.c.name == name, t.c.revoked_at.is_(None)))
                             .values(revoked_at=now)).rowcount
            if n:
                self._audit(conn, audit)
            return n

    # Console sessions (kipuka.admin.console) are rows of this table too: named after the
    # token that logged in, so revoking that token's name ends its sessions as well, and
    # stored as a keyed hash that the bearer path (plain SHA-256) can never match.

    def admin_session(self, digest: str) -> tuple[str, dt.datetime] | None:
        """(name, created_at) of an active row with this digest; the caller checks the age."""
        t = schema.admin_tokens
        with self._read() as conn:
            row = conn.execute(select(t.c.name, t.c.created_at).where(and_(
                t.c.token_sha256 == digest, t.c.revoked_at.is_(None)))).first()
        return (row[0], row[1]) if row else None

    def end_admin_session(self, digest: str, now: dt.datetime, audit: AuditEvent) -> int:
        t = schema.admin_tokens
        with self._tx() as conn:
            n = conn.execute(t.update().where(and_(t.c.token_sha256 == digest, t.c.revoked_at.is_(None)))
                             .values(revoked_at=now)).rowcount
            if n:
                self._audit(conn, audit)
            return n

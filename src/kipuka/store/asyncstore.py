"""Runs the synchronous Store for the event loop.

The enrollment path's writes (OTP spend, certificate, audit rows, audited
refusals) go through group commit: one writer thread per process, many
requests per transaction (kipuka.store.groupcommit). Its reads (an entity's
OTPs and lockout; a renewed certificate's entity) run on the event loop itself
(store/loop_readers.py): on SQLite a WAL read is a few microseconds and never
waits for a writer; on PostgreSQL an async connection of the worker's own.
Every other call runs on a thread: one writer, a few readers.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, TypeVar

from kipuka.store.base import Revoked, StoreUnavailable
from kipuka.store.groupcommit import GroupCommit
from kipuka.store.loop_readers import InlineReader, PostgresLoopReader
from kipuka.store.records import AuditEvent, CertRecord, OtpRecord
from kipuka.store.sql import Store

T = TypeVar("T")

_WRITES = {"create_otp", "revoke_otp", "record_auth_failure", "issue_with_otp", "record_issuance",
           "revoke_certificate", "add_audit", "migrate", "create_pending", "approve_pending", "reject_pending",
           "expire_pending", "chain_audit", "next_crl_number", "save_crl", "create_admin_token",
           "revoke_admin_token", "end_admin_session", "escrow_key", "remember_cmc", "set_ca_ref",
           "brski_register", "brski_decide", "brski_voucher_delivered", "brski_telemetry", "record_ldevid",
           "link_ldevid", "add_brski_rule", "delete_brski_rule", "revoke_certificates", "revoke_otps"}


class AsyncStore:
    """`await astore.method(...)` for every Store method, off the event loop."""

    def __init__(self, store: Store, readers: int = 2) -> None:
        self.store = store
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="store-w")
        self._readers = ThreadPoolExecutor(readers, thread_name_prefix="store-r")
        self._group = GroupCommit(store)
        self._inline = InlineReader(store.url) if store.dialect == "sqlite" else None
        self._loop_pg = PostgresLoopReader(store.url) if store.dialect == "postgresql" else None

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.store, name)
        pool = self._writer if name in _WRITES else self._readers

        async def call(*args: Any, **kwargs: Any) -> Any:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(pool, functools.partial(method, *args, **kwargs))

        call.__name__ = name
        return call

    # --- the enrollment path ------------------------------------------------------------

    async def issue_with_otp(self, otp_id: int, cert: CertRecord, audit: AuditEvent, now: dt.datetime,
                             recovery_window: dt.timedelta) -> tuple[str, bytes | None]:
        sql = self.store.sql
        return await self._group.submit(lambda cur: sql.issue_with_otp(cur, otp_id, cert, audit, now,
                                                                       recovery_window), lock_order=otp_id)

    async def record_issuance(self, cert: CertRecord, audit: AuditEvent,
                              credential: tuple[str, str] | None = None) -> None:
        sql = self.store.sql
        if await self._group.submit(lambda cur: sql.record_issuance(cur, cert, audit, credential)) == "revoked":
            raise Revoked(credential[1])  # type: ignore[index]

    async def add_audit(self, event: AuditEvent) -> None:
        sql = self.store.sql
        await self._group.submit(lambda cur: sql.audit(cur, event))

    async def otp_candidates(self, entity: str, address: str) -> tuple[list[OtpRecord], dt.datetime | None]:
        sql = self.store.sql
        if self._inline is not None:
            found = self._inline.read(lambda cur: sql.otp_candidates(cur, entity, address))
            if found is not None:
                return found
        if self._loop_pg is not None:
            async def read(cur: Any) -> tuple[list[OtpRecord], dt.datetime | None]:
                await cur.execute(sql.candidates, {"entity": entity, "address": address})
                return sql.parse_candidates(await cur.fetchall())
            found = await self._loop_pg.read(read)
            if found is not None:
                return found
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self.store.otp_candidates, entity, address)

    async def certificate_entity(self, ca_id: str, serial: str) -> str | None:
        """Read on the loop (every mTLS renewal asks it); on a reader thread when the loop cannot."""
        sql = self.store.sql
        if self._inline is not None:
            found = self._inline.read(lambda cur: (sql.certificate_entity(cur, ca_id, serial),))
            if found is not None:
                return found[0]
        if self._loop_pg is not None:
            async def read(cur: Any) -> tuple[str | None]:
                await cur.execute(sql.entity, {"ca_id": ca_id, "serial": serial})
                row = await cur.fetchone()
                return (row[0] if row is not None else None,)
            found = await self._loop_pg.read(read)
            if found is not None:
                return found[0]
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self.store.certificate_entity, ca_id, serial)

    def close(self) -> None:
        if self._loop_pg is not None:
            self._loop_pg.close()
        if self._inline is not None:
            self._inline.close()
        self._group.close()
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        self.store.close()


__all__ = ["AsyncStore", "StoreUnavailable"]

"""Periodic work every worker runs: link the audit chain (and mirror it), expire
pending requests, refresh CRLs. Each job is safe to run on several workers and
nodes at once: the database serialises them."""

from __future__ import annotations

import asyncio
import json
import logging
import logging.handlers
from pathlib import Path
from typing import Awaitable, Callable

from kipuka.config import AuditConfig
from kipuka.ra.authority import Authority
from kipuka.store.records import AuditEvent, utcnow

log = logging.getLogger("kipuka.background")
AUDIT_EVERY = 2.0
EXPIRE_EVERY = 30.0
CRL_EVERY = 60.0
CHECKPOINT_EVERY = 1.0
CHAIN_BATCH = 1000  # audit rows linked per transaction


class AuditMirror:
    """Copies chained audit rows to a JSON-lines file and/or syslog, in chain order."""

    def __init__(self, cfg: AuditConfig) -> None:
        self.path: Path | None = cfg.jsonl
        self.syslog = None
        if cfg.syslog:
            try:
                self.syslog = logging.handlers.SysLogHandler(address="/dev/log")
            except OSError as exc:
                log.error("audit syslog mirror disabled: %s", exc)

    def write(self, events: list[AuditEvent]) -> None:
        if not events:
            return
        lines = [json.dumps({"seq": e.chain_seq, "id": e.id, "at": e.at.isoformat(), "event": e.event,
                             "outcome": e.outcome, "reason": e.reason, "label": e.label, "entity": e.entity,
                             "client_addr": e.client_addr, "auth": e.auth, "ca": e.ca_id, "serial": e.serial,
                             "prev_hash": e.prev_hash, "hash": e.hash}) for e in events]
        if self.path is not None:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write("\n".join(lines) + "\n")
        if self.syslog is not None:
            for line in lines:
                self.syslog.emit(logging.LogRecord("kipuka.audit", logging.INFO, "", 0, line, (), None))


def start(authority: Callable[[], Authority], audit_cfg: Callable[[], AuditConfig]) -> list[asyncio.Task]:
    mirror = AuditMirror(audit_cfg())

    async def chain() -> None:
        while True:  # a full batch means more are waiting: catch up before sleeping (thousands of rows/s)
            events = await authority().store.chain_audit(CHAIN_BATCH)
            if events:
                await asyncio.get_running_loop().run_in_executor(None, mirror.write, events)
            if len(events) < CHAIN_BATCH:
                return

    async def expire() -> None:
        if await authority().store.expire_pending(utcnow()):
            log.info("expired pending requests")

    async def crls() -> None:
        await authority().revocation.refresh_due()

    async def checkpoint() -> None:
        await authority().store.checkpoint()

    return [asyncio.create_task(_every(AUDIT_EVERY, chain, "audit chain")),
            asyncio.create_task(_every(EXPIRE_EVERY, expire, "pending expiry")),
            asyncio.create_task(_every(CRL_EVERY, crls, "CRL refresh")),
            asyncio.create_task(_every(CHECKPOINT_EVERY, checkpoint, "WAL checkpoint"))]


async def _every(seconds: float, job: Callable[[], Awaitable[None]], name: str) -> None:
    while True:
        try:
            await job()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # keep the loop alive; the next round retries
            log.warning("%s failed: %s", name, exc)
        await asyncio.sleep(seconds)

"""Replica pools: one CA served by several interchangeable back ends.

A [ca.ID] table with `replicas = [ {...}, {...} ]` becomes a ReplicaPool: each
replica is the table's own keys overridden by its entry (for a pkcs11 CA, say,
another token_label or slot holding the same key; for a dogtag or est CA another
host), built by the same back-end factory, and all must present the same CA
certificate. The pool is itself a CertificateAuthority, so the RA never knows.

- Order: `active-passive` sends everything to the first healthy replica in list
  order (and returns to an earlier one once it is healthy again);
  `round-robin` rotates over the healthy ones. Replicas marked down come last.
- Failover: a call that fails on one replica with Unavailable (busy) or a
  retryable InternalError (HSM unreachable) is tried on the next replica; the
  client sees nothing. A failure that is not retryable is the answer.
- All replicas failing: Unavailable (503) with the pool's Retry-After.
- Health: every `health_interval` each replica is asked for health() (for pkcs11
  a real test signature) and marked up or down; health() of the pool is "ok",
  "degraded: ..." or "unhealthy: ...".

The pool only routes signing calls: no policy, no storage.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import itertools
import logging
import time
import weakref
from typing import Any, Awaitable, Callable, TypeVar

from cryptography import x509

from kipuka.ca.base import (CertificateAuthority, CmcForwarder, IssueRequest, Issued, RemoteIssuer, RemoteRevoker,
                            forwards_requests, signs_revocation)
from kipuka.ca.revocation import OcspAnswer, RevokedEntry
from kipuka.config import CAConfig, ConfigError
from kipuka.errors import InternalError, Unavailable

log = logging.getLogger("kipuka.ca.pool")
T = TypeVar("T")

STRATEGIES = ("active-passive", "round-robin")
POOL_ONLY_KEYS = ("replicas", "strategy", "health_interval")
LOCAL_REPLICA_KEYS = ("cert", "key", "chain", "ocsp_cert", "ocsp_key")


class Replica:
    def __init__(self, index: int, ca: CertificateAuthority) -> None:
        self.index = index  # 1-based, as operators count
        self.ca = ca
        self.down: str | None = None
        self.down_since = 0.0

    @property
    def name(self) -> str:
        describe = getattr(self.ca, "describe", None)
        return f"replica {self.index}" + (f" ({describe()})" if callable(describe) else "")

    def mark_down(self, reason: str, pool_id: str) -> None:
        if self.down is None:
            self.down_since = time.monotonic()
            log.error("ca.%s: %s down: %s", pool_id, self.name, reason)
        self.down = reason

    def mark_up(self, pool_id: str) -> None:
        if self.down is not None:
            log.warning("ca.%s: %s back up after %.1fs", pool_id, self.name, time.monotonic() - self.down_since)
        self.down = None


class ReplicaPool:
    def __init__(self, ca_id: str, replicas: list[CertificateAuthority], strategy: str = "active-passive",
                 health_interval: float = 5.0, retry_after: int = 5) -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}")
        self.id = ca_id
        self.replicas = [Replica(i + 1, ca) for i, ca in enumerate(replicas)]
        self.strategy = strategy
        self.health_interval = health_interval
        self.retry_after = retry_after
        self._turn = itertools.count()
        self._checkers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task] = \
            weakref.WeakKeyDictionary()
        # The pool has the optional capabilities its replicas have (kipuka.ca.base), and
        # no others: the RA checks for them with isinstance().
        first = replicas[0]
        self.signs_revocation = signs_revocation(first)
        self.forwards_requests = forwards_requests(first)
        if isinstance(first, RemoteIssuer):
            self.collect = self._collect
        if isinstance(first, RemoteRevoker):
            self.revoke = self._revoke
        if getattr(first, "archives_keys", False):
            self.archives_keys = True
            self.issue_with_archived_key = self._issue_with_archived_key
        if isinstance(first, CmcForwarder):
            self.submit_cmc = self._submit_cmc

    # --- the CertificateAuthority contract -------------------------------------------------

    def ca_certificates(self) -> list[x509.Certificate]:
        return self.replicas[0].ca.ca_certificates()

    def is_issuer_of(self, cert: x509.Certificate) -> bool:
        return self.replicas[0].ca.is_issuer_of(cert)

    async def issue(self, req: IssueRequest) -> Issued:
        return await self._call(lambda ca: ca.issue(req))

    async def sign_crl(self, entries: list[RevokedEntry], number: int, this_update: dt.datetime,
                       next_update: dt.datetime) -> bytes:
        return await self._call(lambda ca: ca.sign_crl(entries, number, this_update, next_update))

    async def sign_ocsp(self, answer: OcspAnswer, this_update: dt.datetime, next_update: dt.datetime,
                        nonce: bytes | None) -> bytes:
        return await self._call(lambda ca: ca.sign_ocsp(answer, this_update, next_update, nonce))

    async def _collect(self, ref: str, req: IssueRequest) -> Issued:
        # Replicas of one remote CA share its request queue: any of them can answer for `ref`.
        return await self._call(lambda ca: ca.collect(ref, req))  # type: ignore[attr-defined]

    async def _revoke(self, serial: int, reason: x509.ReasonFlags) -> None:
        await self._call(lambda ca: ca.revoke(serial, reason))  # type: ignore[attr-defined]

    async def _issue_with_archived_key(self, req: IssueRequest, key_type: str) -> tuple[Issued, bytes]:
        return await self._call(lambda ca: ca.issue_with_archived_key(req, key_type))  # type: ignore[attr-defined]

    async def _submit_cmc(self, pki_data_der: bytes, label: str) -> bytes:
        return await self._call(lambda ca: ca.submit_cmc(pki_data_der, label))  # type: ignore[attr-defined]

    async def health(self) -> str:
        self._ensure_checker()
        await self.check()
        return self.summary()

    def content_signer(self) -> Any:
        """The first healthy replica's content signer (an optional capability of each replica)."""
        for r in self._order():
            signer = getattr(r.ca, "content_signer", None)
            if callable(signer):
                return signer()
        raise AttributeError("no replica of this CA can sign content")

    def describe(self) -> str:
        return f"{len(self.replicas)} replicas, {self.strategy}"

    async def close(self) -> None:
        for replica in self.replicas:
            close = getattr(replica.ca, "close", None)
            if close is not None:
                await close()

    # --- routing ------------------------------------------------------------------------------

    def _order(self) -> list[Replica]:
        up = [r for r in self.replicas if r.down is None]
        if self.strategy == "round-robin" and up:
            start = next(self._turn) % len(up)
            up = up[start:] + up[:start]
        return up + [r for r in self.replicas if r.down is not None]

    async def _call(self, op: Callable[[CertificateAuthority], Awaitable[T]]) -> T:
        self._ensure_checker()
        failures: list[str] = []
        retry_after: list[int] = []
        for replica in self._order():
            try:
                result = await op(replica.ca)
            except Unavailable as exc:  # busy (sessions exhausted) or down: the next one may serve
                if exc.unreachable:  # no answer at all: last in line until its health check passes
                    replica.mark_down(exc.reason, self.id)
                failures.append(f"{replica.name}: {exc.reason}")
                retry_after.append(exc.retry_after)
                continue
            except InternalError as exc:
                if not exc.retryable:
                    raise
                replica.mark_down(exc.reason, self.id)
                failures.append(f"{replica.name}: {exc.reason}")
                continue
            if replica.down is not None:
                replica.mark_up(self.id)
            return result
        wait = min([self.retry_after, *retry_after])
        raise Unavailable(f"CA {self.id}: no replica could sign ({'; '.join(failures)})", retry_after=wait)

    # --- health ---------------------------------------------------------------------------------

    async def check(self) -> None:
        """Ask every replica for a test signature, and mark each up or down."""
        results = await asyncio.gather(*(r.ca.health() for r in self.replicas), return_exceptions=True)
        for replica, result in zip(self.replicas, results):
            if result == "ok":
                replica.mark_up(self.id)
            else:
                replica.mark_down(str(result), self.id)

    def summary(self) -> str:
        down = [r for r in self.replicas if r.down is not None]
        if not down:
            return "ok"
        what = "; ".join(f"{r.name} down: {r.down}" for r in down)
        if len(down) == len(self.replicas):
            return f"unhealthy: all {len(self.replicas)} replicas down: {what}"
        return f"degraded: {what}"

    def _ensure_checker(self) -> None:
        loop = asyncio.get_running_loop()
        task = self._checkers.get(loop)
        if task is None or task.done():
            self._checkers[loop] = loop.create_task(_check_every(weakref.ref(self), self.health_interval))


async def _check_every(pool_ref: "weakref.ref[ReplicaPool]", interval: float) -> None:
    """Runs while the pool exists (a configuration reload drops the old one)."""
    while True:
        await asyncio.sleep(interval)
        pool = pool_ref()
        if pool is None:
            return
        try:
            await pool.check()
        except Exception as exc:  # keep checking
            log.warning("ca.%s: health check failed: %s", pool.id, exc)
        del pool


# --- building a pool from a [ca.ID] table -----------------------------------------------------

def replica_configs(cfg: CAConfig) -> list[CAConfig]:
    """One CAConfig per entry of `replicas`: the table's keys overridden by the entry's."""
    entries = cfg.options.get("replicas")
    key = f"ca.{cfg.id}.replicas"
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        raise ConfigError(key, "expected a non-empty list of tables, e.g. replicas = [ {slot = 1}, {slot = 2} ]")
    shared = {k: v for k, v in cfg.options.items() if k not in POOL_ONLY_KEYS}
    out = []
    for i, entry in enumerate(entries, start=1):
        if "replicas" in entry or "type" in entry:
            raise ConfigError(f"{key}[{i}]", "a replica has the type of its CA and no replicas of its own")
        rid = f"{cfg.id}.replicas[{i}]"
        if cfg.type == "local":
            for name in entry:
                if name not in LOCAL_REPLICA_KEYS:
                    raise ConfigError(f"{key}[{i}].{name}", f"unknown key for a local replica; known: "
                                      f"{', '.join(LOCAL_REPLICA_KEYS)}")
                if not isinstance(entry[name], str) or not entry[name]:
                    raise ConfigError(f"{key}[{i}].{name}", "expected a file path")
            paths = {name: (cfg.base / entry[name]).resolve() for name in entry}
            out.append(dataclasses.replace(cfg, id=rid, options={}, **paths))
        else:
            out.append(dataclasses.replace(cfg, id=rid, options={**shared, **entry}))
    return out


def build_pool(cfg: CAConfig, factory: Callable[[CAConfig], CertificateAuthority]) -> ReplicaPool:
    from kipuka.ca.options import parse_seconds

    opts = cfg.options
    strategy = opts.get("strategy", "active-passive")
    if strategy not in STRATEGIES:
        raise ConfigError(f"ca.{cfg.id}.strategy", f"must be one of {', '.join(STRATEGIES)}")
    interval = parse_seconds(opts.get("health_interval", "5s"), f"ca.{cfg.id}.health_interval")
    retry_after = opts.get("retry_after", 5)
    if isinstance(retry_after, bool) or not isinstance(retry_after, int) or not 1 <= retry_after <= 86400:
        raise ConfigError(f"ca.{cfg.id}.retry_after", "expected a number of seconds from 1 to 86400")
    replicas = []
    for rcfg in replica_configs(cfg):
        replica = factory(rcfg)
        if replicas and replica.ca_certificates()[0] != replicas[0].ca_certificates()[0]:
            raise ConfigError(f"{'ca.' + rcfg.id}.cert", "every replica must present the same CA certificate")
        replicas.append(replica)
    return ReplicaPool(cfg.id, replicas, strategy, interval, retry_after)

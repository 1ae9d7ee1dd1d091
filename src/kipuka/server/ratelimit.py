"""A per-client rate limit for unauthenticated and failing EST requests.

Every request without credentials (no Authorization header, no client
certificate) and every request answered 4xx takes a token from its client's
bucket; a bucket holds `burst` tokens and refills at `rate` per second. A client
whose bucket is empty gets 429 Too Many Requests with Retry-After and a one-line
reason, before its request reaches the RA (so a flood of wrong OTPs costs no
database work). What is not charged: a successful request with credentials (an
enrollment, a re-enrollment). A request with a TLS client certificate is never
refused here, since the handshake already checked the certificate against
[tls] client_ca; its failures still count against the address, so a device's
own certificate cannot be used to flood with bad requests for long.

The client is request.remote, which kipuka.server.proxy has already replaced by
the PROXY protocol source when that is on; an IPv6 client counts by its /64
(kipuka.server.limits.client_key). Buckets live in each worker process: with N
workers a client may get up to N times the rate, depending on which worker its
connections land on. A client going over the limit is logged and audited once
(event "ratelimit"), and again only after its bucket has refilled completely,
so a flood does not turn into a flood of log lines or audit rows.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from dataclasses import dataclass
from typing import Awaitable, Callable

from aiohttp import web

from kipuka.config import RateLimitConfig
from kipuka.errors import KipukaError
from kipuka.ra.authority import Authority
from kipuka.ra.requester import Requester
from kipuka.server.limits import client_key

log = logging.getLogger("kipuka.ratelimit")
MAX_CLIENTS = 100_000  # buckets kept; beyond this, refilled ones go first, then the oldest


class TooManyRequests(KipukaError):
    """The client sent too many unauthenticated or failing requests; it should wait."""


@dataclass
class Bucket:
    tokens: float
    stamp: float
    limited: bool = False  # in a refusal episode (logged and audited at its start)
    refused: int = 0


class RateLimiter:
    """Token buckets per client key, and the aiohttp middleware that applies them."""

    def __init__(self, settings: Callable[[], RateLimitConfig],
                 authority: Callable[[], Authority] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._settings = settings
        self._authority = authority
        self._clock = clock
        self._buckets: dict[str, Bucket] = {}
        self._exempt_cache: tuple[tuple[str, ...], list[ipaddress.IPv4Network | ipaddress.IPv6Network]] = ((), [])

    # --- buckets ------------------------------------------------------------------------

    def _bucket(self, key: str, cfg: RateLimitConfig) -> Bucket:
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= MAX_CLIENTS:
                self._prune(cfg, now)
            bucket = self._buckets[key] = Bucket(float(cfg.burst), now)
        else:
            bucket.tokens = min(float(cfg.burst), bucket.tokens + (now - bucket.stamp) * cfg.rate)
            bucket.stamp = now
        return bucket

    def _prune(self, cfg: RateLimitConfig, now: float) -> None:
        for key in [k for k, b in self._buckets.items() if b.tokens + (now - b.stamp) * cfg.rate >= cfg.burst]:
            del self._buckets[key]
        while len(self._buckets) >= MAX_CLIENTS:  # all busy: forget the oldest
            del self._buckets[next(iter(self._buckets))]

    def wait_time(self, key: str) -> float:
        """0 when `key` may send a request now, else the seconds until it may."""
        cfg = self._settings()
        bucket = self._bucket(key, cfg)
        return 0.0 if bucket.tokens >= 1 else (1 - bucket.tokens) / cfg.rate

    def charge(self, key: str) -> None:
        """Take a token (never below zero: a refused client waits for one token, not for its debt)."""
        cfg = self._settings()
        if not cfg.enabled:
            return
        bucket = self._bucket(key, cfg)
        bucket.tokens = max(0.0, bucket.tokens - 1)

    def charge_address(self, address: str) -> None:
        """Charge a request refused before it reached the application (malformed HTTP)."""
        if not self._exempt(address, self._settings()):
            self.charge(client_key(address))

    def _exempt(self, address: str, cfg: RateLimitConfig) -> bool:
        if not cfg.exempt:
            return False
        if self._exempt_cache[0] != cfg.exempt:
            self._exempt_cache = (cfg.exempt, [ipaddress.ip_network(n, strict=False) for n in cfg.exempt])
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        return any(ip.version == net.version and ip in net for net in self._exempt_cache[1])

    # --- middleware ---------------------------------------------------------------------

    @web.middleware
    async def middleware(self, request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        cfg = self._settings()
        address = request.remote or ""
        if not cfg.enabled or self._exempt(address, cfg):
            return await handler(request)
        key = client_key(address)
        has_cert = _has_client_certificate(request)
        anonymous = not has_cert and "Authorization" not in request.headers
        wait = self.wait_time(key)
        if wait and not has_cert:
            return await self._refuse(request, key, address, wait)
        self._recovered(key, cfg, address)
        if anonymous:
            self.charge(key)  # before the work, so that concurrent requests cannot overdraw
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # aiohttp's own 404/405 for paths outside the EST routes
            if not anonymous and 400 <= exc.status < 500:
                self.charge(key)
            raise
        if not anonymous and 400 <= response.status < 500 and response.status != 429:
            self.charge(key)
        return response

    async def _refuse(self, request: web.Request, key: str, address: str, wait: float) -> web.Response:
        cfg = self._settings()
        bucket = self._bucket(key, cfg)
        retry = max(1, math.ceil(wait))
        reason = (f"too many unauthenticated or failed requests from {address}; "
                  f"retry after {retry}s (at most {cfg.rate}/s, bursts of {cfg.burst})")
        bucket.refused += 1
        if not bucket.limited:
            bucket.limited = True
            log.warning("rate limit: refusing requests from %s (over %d/s, burst %d) until it slows down",
                        address, cfg.rate, cfg.burst)
            await self._audit(request, address, TooManyRequests(reason))
        return web.Response(status=429, body=(reason + "\n").encode(),
                            headers={"Content-Type": "text/plain; charset=utf-8", "Retry-After": str(retry)})

    def _recovered(self, key: str, cfg: RateLimitConfig, address: str) -> None:
        bucket = self._buckets.get(key)
        if bucket is not None and bucket.limited and bucket.tokens >= cfg.burst - 1:
            log.info("rate limit: %s is under the limit again after %d refused requests", address, bucket.refused)
            bucket.limited, bucket.refused = False, 0

    async def _audit(self, request: web.Request, address: str, exc: TooManyRequests) -> None:
        if self._authority is None:
            return
        authority = self._authority()
        label = request.match_info.get("label", "")
        await authority.record_rejection(label if label in authority.labels else "", "ratelimit",
                                         Requester(client_addr=address), exc)


def _has_client_certificate(request: web.Request) -> bool:
    """Whether the TLS handshake accepted a client certificate (chained to [tls] client_ca); not parsed here."""
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    return bool(ssl_object is not None and ssl_object.getpeercert(binary_form=True))

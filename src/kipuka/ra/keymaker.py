"""Making server-side keys off the event loop, with an optional in-memory pool ([est] keygen_pool).

RSA generation costs ~0.1 s (2048) to ~1 s (4096) of CPU, which would stall
every other request on the loop. cryptography releases the GIL while OpenSSL
searches for primes, so a small thread pool runs it in parallel with request
handling. With `keygen_pool = N`, up to N keys per type are made ahead, in
memory only: each is handed out once and dropped, never written anywhere and
never logged. A reload builds a new KeyMaker; the old pool is simply freed.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from kipuka import metrics, pq

GeneratedKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | pq.PrivateKey

_CURVES = {"ec-p256": ec.SECP256R1, "ec-p384": ec.SECP384R1}
_RSA_BITS = {"rsa2048": 2048, "rsa3072": 3072, "rsa4096": 4096}

_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def executor() -> ThreadPoolExecutor:
    """One pool per process, shared across reloads: one thread fewer than cores (at least one).

    The spare core is the event loop's: measured on 2 cores (docs/benchmarks.md,
    serverkeygen), one keygen thread keeps simpleenroll's p99 at ~45 ms beside
    RSA-2048 serverkeygen, two threads let it rise to ~75 ms for 50% more keys/s,
    and generating on the loop stalls it for whole seconds.
    """
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max(1, (os.cpu_count() or 2) - 1), thread_name_prefix="keygen")
        return _executor


def generate(key_type: str) -> GeneratedKey:
    """A fresh key of a serverkeygen key type (ec-p256, ec-p384, rsa2048, rsa3072, rsa4096, ml-dsa-NN)."""
    started = time.perf_counter()
    if key_type in _CURVES:
        key: GeneratedKey = ec.generate_private_key(_CURVES[key_type]())
    elif key_type in _RSA_BITS:
        key = rsa.generate_private_key(public_exponent=65537, key_size=_RSA_BITS[key_type])
    elif key_type in pq.KEY_TYPES:
        key = pq.generate(key_type)  # ~0.1 ms: no need for the pool, but it is harmless
    else:
        raise ValueError(f"unknown serverkeygen key type {key_type!r}")
    metrics.KEYGEN_SECONDS.labels(key_type).observe(time.perf_counter() - started)
    return key


class KeyMaker:
    """Hands out fresh private keys; keeps up to `pool_size` ready per key type once asked for one."""

    def __init__(self, pool_size: int = 0, key_types: Iterable[str] = ()) -> None:
        self.pool_size = max(0, pool_size)
        self._types = tuple(dict.fromkeys(key_types))
        self._ready: dict[str, deque[GeneratedKey]] = {kt: deque() for kt in self._types}
        self._making: dict[str, int] = {kt: 0 for kt in self._types}
        self._lock = threading.Lock()
        self._primed = False

    async def new_key(self, key_type: str) -> GeneratedKey:
        """A key nobody else has been or will be given: from the pool, else made now on a thread."""
        if not self._primed and self.pool_size:
            self._primed = True  # the first request starts filling every type this server may need
            for kt in self._types:
                self._refill(kt)
        key = self._take(key_type)
        if key is None:
            key = await asyncio.get_running_loop().run_in_executor(executor(), generate, key_type)
        self._refill(key_type)
        return key

    def ready(self, key_type: str) -> int:
        with self._lock:
            return len(self._ready.get(key_type, ()))

    def _take(self, key_type: str) -> GeneratedKey | None:
        with self._lock:
            ready = self._ready.get(key_type)
            return ready.popleft() if ready else None

    def _refill(self, key_type: str) -> None:
        if not self.pool_size or key_type not in self._ready:
            return
        with self._lock:
            missing = self.pool_size - len(self._ready[key_type]) - self._making[key_type]
            self._making[key_type] += max(0, missing)
        for _ in range(missing):
            executor().submit(self._make_one, key_type)

    def _make_one(self, key_type: str) -> None:
        try:
            key = generate(key_type)
        finally:
            with self._lock:
                self._making[key_type] -= 1
        with self._lock:
            if len(self._ready[key_type]) < self.pool_size:
                self._ready[key_type].append(key)

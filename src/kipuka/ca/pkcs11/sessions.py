"""A CA's PKCS#11 sessions, each with a thread of its own, and the queue of callers waiting for one."""

from __future__ import annotations

import asyncio
import collections
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes


class _Slot:
    """One PKCS#11 session with its own thread."""

    def __init__(self, index: int, ca_id: str) -> None:
        self.index = index
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"pkcs11-{ca_id}-{index}")
        self.generation = -1  # the module generation `session` belongs to
        self.session: Any = None
        self.key: CertificateIssuerPrivateKeyTypes | None = None


class _SessionPool:
    """Free sessions and the callers waiting for one (used on the event loop only)."""

    def __init__(self, slots: list[_Slot]) -> None:
        self.free: collections.deque[_Slot] = collections.deque(slots)
        self.waiters: collections.deque[asyncio.Future] = collections.deque()

    async def acquire(self, timeout: float) -> _Slot | None:
        if self.free and not self.waiters:
            return self.free.popleft()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future = loop.create_future()
        self.waiters.append(fut)
        timer = loop.call_later(timeout, lambda: fut.done() or fut.set_result(None))
        try:
            return await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled() and fut.result() is not None:
                self.release(fut.result())  # handed over just as the caller went away
            raise
        finally:
            timer.cancel()
            try:
                self.waiters.remove(fut)
            except ValueError:
                pass

    def release(self, slot: _Slot) -> None:
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_result(slot)
                return
        self.free.append(slot)

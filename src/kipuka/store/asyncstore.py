"""Runs the synchronous Store on threads: one writer (writes queue up instead of
fighting over the SQLite lock inside one process) and a few readers."""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, TypeVar

from kipuka.store.sql import Store

T = TypeVar("T")

_WRITES = {"create_otp", "revoke_otp", "record_auth_failure", "issue_with_otp", "record_issuance",
           "revoke_certificate", "add_audit", "migrate", "create_pending", "approve_pending", "reject_pending",
           "expire_pending", "chain_audit", "next_crl_number", "save_crl", "create_admin_token",
           "revoke_admin_token", "end_admin_session", "escrow_key", "remember_cmc", "set_ca_ref"}


class AsyncStore:
    """`await astore.method(...)` for every Store method, off the event loop."""

    def __init__(self, store: Store, readers: int = 2) -> None:
        self.store = store
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="store-w")
        self._readers = ThreadPoolExecutor(readers, thread_name_prefix="store-r")

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.store, name)
        pool = self._writer if name in _WRITES else self._readers

        async def call(*args: Any, **kwargs: Any) -> Any:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(pool, functools.partial(method, *args, **kwargs))

        call.__name__ = name
        return call

    def close(self) -> None:
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        self.store.close()

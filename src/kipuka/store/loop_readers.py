"""Reads on the event loop itself, for the enrollment path's one or two reads per request.

A hand-off to a reader thread and back costs more than a read of a few rows (4.8% of
a worker on PostgreSQL, py-spy), and the thread's driver code then competes with the
event loop for the GIL. Both readers only ever answer or decline: a read they cannot
do at once (SQLite busy, PostgreSQL down or not connected yet) returns None and the
caller reads on a thread, where the store's own error handling applies.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from typing import Any, Awaitable, Callable, TypeVar

from kipuka.store.base import CONNECT_TIMEOUT, STATEMENT_TIMEOUT_MS, _sqlite_path, driver_error

log = logging.getLogger("kipuka.store")
T = TypeVar("T")

RETRY_AFTER_FAILURE = 5.0  # seconds on the thread path after the loop's connection failed


class InlineReader:
    """A SQLite connection that only reads, used on the event loop thread.

    It never waits: with busy_timeout 0 a read that would have to wait (a WAL
    recovery, a schema change) gives up at once and the caller reads on a
    thread instead.
    """

    def __init__(self, url: str) -> None:
        self._path = _sqlite_path(url)
        self._conn: sqlite3.Connection | None = None

    def read(self, fn: Callable[[sqlite3.Cursor], T]) -> T | None:
        if self._path is None:
            return None
        try:
            if self._conn is None:
                self._conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
                self._conn.execute("PRAGMA busy_timeout=0")
            cur = self._conn.cursor()
            try:
                return fn(cur)
            finally:
                cur.close()
        except sqlite3.OperationalError:
            return None  # busy or locked: the thread pool reads it
        except sqlite3.Error as exc:
            raise driver_error(exc) from exc

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class PostgresLoopReader:
    """An autocommit psycopg AsyncConnection owned by one worker's event loop.

    Made on first use (after the fork, on the loop that uses it); concurrent reads
    queue on it (psycopg serialises a connection's commands), each one round trip.
    """

    def __init__(self, url: str) -> None:
        import psycopg  # only PostgreSQL deployments have it

        self._psycopg = psycopg
        self._conninfo = _libpq_url(url)
        self._conn: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._resting_until = 0.0

    async def read(self, fn: Callable[[Any], Awaitable[T]]) -> T | None:
        if time.monotonic() < self._resting_until:
            return None
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a connection serves the loop it was made on only
            self._drop()
            self._loop = loop
        try:
            if self._conn is None or self._conn.closed:
                self._conn = await self._psycopg.AsyncConnection.connect(
                    self._conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT,
                    options=f"-c statement_timeout={STATEMENT_TIMEOUT_MS}")
            async with self._conn.cursor() as cur:
                return await fn(cur)
        except self._psycopg.Error as exc:
            log.warning("reads on the event loop paused for %gs: %s", RETRY_AFTER_FAILURE,
                        str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)
            self._drop()
            self._resting_until = time.monotonic() + RETRY_AFTER_FAILURE
            return None

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.closed:
            conn.pgconn.finish()  # no await: close() may run after the loop has stopped

    def close(self) -> None:
        self._drop()


def _libpq_url(url: str) -> str:
    """The store URL as libpq takes it (SQLAlchemy's driver suffix removed)."""
    for prefix in ("postgresql+psycopg://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix):]
    return url

"""Group commit: one writer thread per process commits many requests' writes at once.

A request hands its write (a unit: a function of a DB-API cursor) to the writer
and awaits it. The writer takes every unit that has queued up while it was
committing the previous batch and runs them in one transaction, so under load
one commit (and, on SQLite, one hand-over of the cross-process write lock)
serves many enrollments, and the event loop hands work to a thread once per
batch instead of once per statement. There is no waiting window: an idle
server commits a lone request at once.

Durability is unchanged: a request's future is resolved only after the
transaction holding its rows has committed.

Units report expected outcomes as values. If one raises (a duplicate serial,
a database error), the batch is rolled back and every unit of it is run again
in a transaction of its own, so that the failure reaches only its own request.

Units that lock a row other processes' batches also lock (an OTP's use count)
name it with `lock_order`, and a batch runs them in that order: two workers or
nodes committing batches that spend uses of the same OTPs then take the row
locks in the same order and never deadlock (PostgreSQL found one such deadlock
every few seconds under load, and only broke it after deadlock_timeout, 1 s).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from typing import Any, Callable, TypeVar

from kipuka.store.base import StoreBase, StoreUnavailable, driver_error

log = logging.getLogger("kipuka.store")
T = TypeVar("T")
Unit = Callable[[Any], Any]
Item = tuple[Unit, "asyncio.Future[Any]", asyncio.AbstractEventLoop, int]
UNORDERED = -1  # a unit that takes no row lock another batch may hold: runs after the ordered ones

MAX_BATCH = 128  # bounds one transaction's lock hold and its replay after a failure


class GroupCommit:
    def __init__(self, store: StoreBase) -> None:
        self._store = store
        self._queue: queue.SimpleQueue[list[Item] | None] = queue.SimpleQueue()
        self._outbox: list[Item] = []  # submitted during this turn of the event loop
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, unit: Callable[[Any], T], lock_order: int = UNORDERED) -> "asyncio.Future[T]":
        """Queue a unit for the next transaction; the future resolves once that transaction committed.

        Units submitted in one turn of the event loop reach the writer together (one wake-up).
        `lock_order`: the id of the contended row the unit updates (see the module's docstring).
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if not self._outbox:
            loop.call_soon(self._flush)
        self._outbox.append((unit, future, loop, lock_order))
        return future

    def _flush(self) -> None:
        self._start()
        items, self._outbox = self._outbox, []
        self._queue.put(items)

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=10)
            self._thread = None

    # --- the writer thread ------------------------------------------------------------

    def _start(self) -> None:
        if self._thread is None:  # lazily: a worker forked after the store was built needs its own thread
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="store-group", daemon=True)
                    self._thread.start()

    def _run(self) -> None:
        stop = False
        while not stop:
            items = self._queue.get()
            if items is None:
                return
            batch = list(items)
            while len(batch) < MAX_BATCH:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch.extend(more)
            batch.sort(key=_lock_order)  # stable: arrival order otherwise
            try:
                results = self._commit([unit for unit, _, _, _ in batch])
            except BaseException as exc:  # never leave a request waiting forever
                log.exception("group commit failed")
                results = [(False, StoreUnavailable(str(exc)))] * len(batch)
            by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
            for (_, future, loop, _), (ok, value) in zip(batch, results):
                by_loop.setdefault(loop, []).append((future, ok, value))
            for loop, settled in by_loop.items():
                try:
                    loop.call_soon_threadsafe(_settle, settled)
                except RuntimeError:  # the loop has closed: nobody is waiting any more
                    pass

    def _commit(self, units: list[Unit]) -> list[tuple[bool, Any]]:
        try:
            with self._store._tx() as conn:
                cur = conn.connection.driver_connection.cursor()
                try:
                    return [(True, unit(cur)) for unit in units]
                finally:
                    cur.close()
        except Exception as exc:
            if len(units) > 1:  # find the unit that failed: each again on its own
                return [self._commit([unit])[0] for unit in units]
            return [(False, driver_error(exc))]


def _lock_order(item: Item) -> tuple[bool, int]:
    return (item[3] == UNORDERED, item[3])


def _settle(settled: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, value in settled:
        if future.cancelled():
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)

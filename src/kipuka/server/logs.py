"""Logging: JSON lines (default) or text, and the per-request access log.

No secret ever reaches a log line: the access log records method, path,
status, timing, client address and the request id, never headers or bodies.
"""

from __future__ import annotations

import asyncio
import json
import os
import logging
import secrets
import sys
import time
from typing import Any, Awaitable, Callable

from aiohttp import web

from kipuka import metrics

_STD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
               "level": record.levelname.lower(), "logger": record.name, "pid": record.process,
               "msg": record.getMessage()}
        out.update({k: v for k, v in vars(record).items() if k not in _STD})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure_logging(fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    global _FORMAT
    _FORMAT = fmt
    root.setLevel(logging.INFO)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # No log line shows the caller's file and line, so the logging module need not walk the stack
    # for them on every record (its documented switch; the access log writes one per request).
    logging._srcfile = None  # type: ignore[attr-defined]


class AccessLog:
    """The access log's lines, written to the log stream in batches.

    One line per EST request through the logging module (a record, the JSON
    formatter, a write and a flush) cost about 7% of a worker at thousands of
    requests a second. Lines here are formatted once, as the root handler would
    (same fields, same JSON), kept in order, and written together at most
    FLUSH_AFTER seconds later, or at once when BATCH lines are waiting; the
    worker flushes on its way out. Anything more important than an access line
    (the audit trail) is never buffered here.
    """

    FLUSH_AFTER = 0.05
    BATCH = 256

    def __init__(self) -> None:
        self._lines: list[str] = []
        self._timer: asyncio.TimerHandle | None = None

    def write(self, request_id: str, method: str, path: str, status: int, ms: float, client: str) -> None:
        now = time.time()
        if _FORMAT == "json":
            line = json.dumps({"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z",
                               "level": "info", "logger": "kipuka.access", "pid": os.getpid(), "msg": "request",
                               "request_id": request_id, "method": method, "path": path, "status": status, "ms": ms,
                               "client": client})
        else:
            line = (f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(now))},{int(now % 1 * 1000):03d} INFO "
                    f"kipuka.access[{os.getpid()}]: request")
        self._lines.append(line + "\n")
        if len(self._lines) >= self.BATCH:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.FLUSH_AFTER, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._lines:
            lines, self._lines = self._lines, []
            try:
                sys.stderr.write("".join(lines))
                sys.stderr.flush()
            except (OSError, ValueError):  # the log stream is gone; requests go on
                pass


ACCESS = AccessLog()
_FORMAT = "json"


def est_middleware(enabled: Callable[[], bool]) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Request id, metrics and one access-log line per EST request."""
    counters: dict[tuple[str, str, int], Any] = {}  # prometheus children: labels() costs a lock and a lookup
    latencies: dict[str, Any] = {}

    @web.middleware
    async def middleware(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                         ) -> web.StreamResponse:
        started = time.perf_counter()
        request_id = request.headers.get("X-Request-Id", "")[:64] or secrets.token_hex(8)
        if not request_id.isprintable():
            request_id = secrets.token_hex(8)
        response = await handler(request)
        elapsed = time.perf_counter() - started
        match = request.match_info
        op = match.get("op", "other")
        label = match.get("label", "")
        response.headers["X-Request-Id"] = request_id
        key = (op, label, response.status)
        counter = counters.get(key)
        if counter is None:
            if len(counters) > 10000:  # labels come from URLs: bound the cache
                counters.clear()
            counter = counters[key] = metrics.REQUESTS.labels(op, label, str(response.status))
        counter.inc()
        latency = latencies.get(op)
        if latency is None:
            latency = latencies[op] = metrics.LATENCY.labels(op)
        latency.observe(elapsed)
        if enabled():
            ACCESS.write(request_id, request.method, request.path[:200], response.status, round(elapsed * 1000, 2),
                         request.remote or "")
        return response

    return middleware

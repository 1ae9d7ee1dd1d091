"""Logging: JSON lines (default) or text, and the per-request access log.

No secret ever reaches a log line: the access log records method, path,
status, timing, client address and the request id, never headers or bodies.
"""

from __future__ import annotations

import json
import logging
import secrets
import sys
import time
from typing import Awaitable, Callable

from aiohttp import web

from kipuka import metrics

access = logging.getLogger("kipuka.access")
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
    root.setLevel(logging.INFO)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # No log line shows the caller's file and line, so the logging module need not walk the stack
    # for them on every record (its documented switch; the access log writes one per request).
    logging._srcfile = None  # type: ignore[attr-defined]


def est_middleware(enabled: Callable[[], bool]) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Request id, metrics and one access-log line per EST request."""

    @web.middleware
    async def middleware(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                         ) -> web.StreamResponse:
        started = time.perf_counter()
        request_id = request.headers.get("X-Request-Id", "")[:64] or secrets.token_hex(8)
        if not request_id.isprintable():
            request_id = secrets.token_hex(8)
        response = await handler(request)
        elapsed = time.perf_counter() - started
        op = request.match_info.get("op", "other")
        label = request.match_info.get("label", "")
        response.headers["X-Request-Id"] = request_id
        metrics.REQUESTS.labels(op, label, str(response.status)).inc()
        metrics.LATENCY.labels(op).observe(elapsed)
        if enabled():
            access.info("request", extra={"request_id": request_id, "method": request.method,
                                          "path": request.path[:200], "status": response.status,
                                          "ms": round(elapsed * 1000, 2), "client": request.remote or ""})
        return response

    return middleware

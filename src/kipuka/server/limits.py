"""Connection-level limits of the EST listener: slow clients, oversized headers, connection hogs.

aiohttp bounds each request line and header line (max_line_size, max_field_size)
and the number of header lines, and closes an idle keep-alive connection, but it
has no deadline for a request's headers: a client that trickles one byte a
second (slowloris) keeps its connection until the keep-alive timer, and may open
as many such connections as the process has file descriptors. This module adds,
on top of aiohttp's own request handler:

- a header deadline: the request line and headers must be complete within
  `header_timeout` seconds of the connection being ready (after the TLS
  handshake) or of the first byte of a later request on a keep-alive connection;
  otherwise 408 and the connection is closed. The TLS handshake gets the same
  deadline (asyncio's default is 60 s);
- a cap on concurrent connections per client address (the PROXY protocol source
  when enabled; an IPv6 client's /64): the connection over the cap gets 503 and
  is closed. It counts connections once their TLS handshake is done; those still
  in the handshake are bounded by the handshake deadline;
- 431 with a one-line reason when the request line or a header is too long or
  there are too many headers (aiohttp answers 400 and logs a traceback for every
  malformed request, which a hostile client can use to flood the log).

The body deadline lives where the body is read (kipuka.est.app.read_bounded).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import socket
import ssl
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Callable

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.web_protocol import RequestHandler

from kipuka.config import ServerConfig

log = logging.getLogger("kipuka.limits")


@functools.lru_cache(maxsize=65536)  # parsed on every request otherwise; addresses repeat
def client_key(address: str) -> str:
    """The unit a limit counts: an IPv4 address, or the /64 of an IPv6 one.

    An IPv6 host usually holds a whole /64 and can change address at will within it;
    an IPv4-mapped IPv6 address counts as the IPv4 address. Anything that is not an
    address (a UNIX socket, an empty string) is its own key.
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout: float
    max_connections_per_client: int  # 0: no cap
    max_header_size: int
    max_headers: int

    @classmethod
    def of(cls, server: ServerConfig) -> "ConnectionLimits":
        return cls(server.header_timeout, server.max_connections_per_client, server.max_header_size,
                   server.max_headers)

    def parser_options(self) -> dict[str, int]:
        """aiohttp's own size limits; fixed when the listener starts (a change needs a restart)."""
        return {"max_line_size": self.max_header_size, "max_field_size": self.max_header_size,
                "max_headers": self.max_headers}


class ConnectionGuard:
    """One listener's limits (read on every connection, so a reload applies) and its open connections."""

    def __init__(self, limits: Callable[[], ConnectionLimits],
                 on_malformed: Callable[[str], None] | None = None) -> None:
        self.limits = limits
        self.on_malformed = on_malformed  # the rate limiter charges a request aiohttp refused
        self._open: dict[str, int] = {}

    def attach(self, server: web.Server) -> None:
        """Make this guard the one GuardedHandler finds through its manager (aiohttp's Server)."""
        server.kipuka_guard = self  # type: ignore[attr-defined]

    def admit(self, key: str) -> bool:
        cap = self.limits().max_connections_per_client
        count = self._open.get(key, 0)
        if cap and count >= cap:
            return False
        self._open[key] = count + 1
        return True

    def release(self, key: str) -> None:
        count = self._open.get(key, 0) - 1
        if count > 0:
            self._open[key] = count
        else:
            self._open.pop(key, None)


class GuardedHandler(RequestHandler):
    """aiohttp's connection handler with a header deadline, a per-client cap and 431 answers."""

    __slots__ = ("_kipuka_key", "_kipuka_timer", "_kipuka_seen")

    def __init__(self, manager: web.Server, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._kipuka_key: str | None = None
        self._kipuka_timer: asyncio.TimerHandle | None = None
        self._kipuka_seen = 0

    def _guard(self) -> ConnectionGuard | None:
        return getattr(self._manager, "kipuka_guard", None)

    def _client(self, transport: asyncio.BaseTransport | None) -> str:
        source = getattr(self, "kipuka_client", None)  # set by kipuka.server.proxy from a PROXY header
        if source is not None:
            return str(source[0])
        peer = transport.get_extra_info("peername") if transport is not None else None
        return str(peer[0]) if isinstance(peer, tuple) and peer else ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        guard = self._guard()
        if guard is None:
            return
        address = self._client(transport)
        key = client_key(address)
        if not guard.admit(key):
            cap = guard.limits().max_connections_per_client
            log.info("refusing a connection from %s: %d connections already open (max_connections_per_client)",
                     address, cap)
            self._refuse(503, f"too many connections from {address} (at most {cap} at once)", "Retry-After: 5\r\n")
            return
        self._kipuka_key = key
        self._arm(guard)

    def connection_lost(self, exc: BaseException | None) -> None:
        guard = self._guard()  # before aiohttp forgets its manager
        if guard is not None and self._kipuka_key is not None:
            guard.release(self._kipuka_key)
            self._kipuka_key = None
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._kipuka_timer is None and self._waiter is not None and data:
            guard = self._guard()  # the first byte of a request on an idle keep-alive connection
            if guard is not None:
                self._arm(guard)
        super().data_received(data)
        if self._kipuka_timer is not None and self._request_count != self._kipuka_seen:
            self._disarm()  # the headers are complete

    def _arm(self, guard: ConnectionGuard) -> None:
        self._kipuka_seen = self._request_count
        timeout = guard.limits().header_timeout
        self._kipuka_timer = self._loop.call_later(timeout, self._header_deadline, timeout)

    def _disarm(self) -> None:
        if self._kipuka_timer is not None:
            self._kipuka_timer.cancel()
            self._kipuka_timer = None

    def _header_deadline(self, timeout: float) -> None:
        self._kipuka_timer = None
        if self._request_count != self._kipuka_seen or self._force_close or self.transport is None:
            return
        log.info("closing a connection from %s: request headers not complete within %gs",
                 self._client(self.transport), timeout)
        self._refuse(408, f"request headers not received within {timeout:g}s")

    def _refuse(self, status: int, reason: str, extra_headers: str = "") -> None:
        """Answer before (or instead of) reading a request, then close the connection."""
        body = (reason + "\n").encode()
        head = (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nServer: kipuka\r\n"
                f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
                f"Connection: close\r\n{extra_headers}\r\n")
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(head.encode() + body)
        self.force_close()

    async def finish_response(self, request: Any, resp: web.StreamResponse,
                              start_time: float | None) -> tuple[web.StreamResponse, bool]:
        result = await super().finish_response(request, resp, start_time)
        if resp.status == 408:
            # A stalled body (kipuka.est.app.RequestTimeout): close once the answer is out,
            # instead of lingering up to 10 s for the rest of a body that is not coming.
            self.force_close()
        return result

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        """A request aiohttp could not parse: a one-line reason, 431 for size limits, no traceback."""
        if status != 400 or not isinstance(exc, BadHttpMessage):
            return super().handle_error(request, status, exc, message)
        if request.writer.output_size > 0:
            raise ConnectionError("response already started")
        address = self._client(self.transport)
        if isinstance(exc, LineTooLong) or "too many headers" in str(exc.message).lower():
            limits = self._guard().limits() if self._guard() is not None else None
            status = 431
            reason = "request line or header fields too large" + (
                f" (at most {limits.max_header_size} bytes per line and {limits.max_headers} header lines)"
                if limits else "")
        else:
            reason = "malformed HTTP request: " + " ".join(str(exc.message).split())[:160]
        log.info("refused a malformed request from %s: %s", address, reason)
        guard = self._guard()
        if guard is not None and guard.on_malformed is not None:
            guard.on_malformed(address)
        response = web.Response(status=status, text=reason + "\n", content_type="text/plain")
        response.headers["Server"] = "kipuka"
        response.force_close()
        return response


    def log_exception(self, *args: Any, **kw: Any) -> None:
        """A client's broken body found after the answer (aiohttp reads what the handler left unread):
        one line, not a traceback at error level."""
        exc = kw.get("exc_info")
        if isinstance(exc, (web.RequestPayloadError, ConnectionError)):
            log.info("closing a connection from %s: %s", self._client(self.transport), " ".join(str(exc).split()))
            return
        super().log_exception(*args, **kw)


def handler_factory(server: web.Server) -> Callable[[], GuardedHandler]:
    """What web.Server.__call__ does, with GuardedHandler."""
    def make() -> GuardedHandler:
        return GuardedHandler(server, loop=server._loop, **server._kwargs)  # type: ignore[attr-defined]
    return make


class GuardedSite(web.SockSite):
    """aiohttp's SockSite with GuardedHandler connections and a TLS handshake deadline."""

    __slots__ = ("_handshake_timeout",)

    def __init__(self, runner: web.AppRunner, sock: socket.socket, *, ssl_context: ssl.SSLContext | None,
                 shutdown_timeout: float, handshake_timeout: float) -> None:
        super().__init__(runner, sock, ssl_context=ssl_context, shutdown_timeout=shutdown_timeout)
        self._handshake_timeout = handshake_timeout

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        # The same deadline for the handshake and for a client's answer to our close_notify
        # (asyncio waits 30 s for it by default, holding the connection and its slot).
        wrap = getattr(self._ssl_context, "wrap", None)
        if wrap is not None:  # [tls] backend = "pyopenssl": TLS in kipuka.server.tls_openssl, over plain TCP
            self._server = await loop.create_server(wrap(handler_factory(server), self._handshake_timeout),
                                                    sock=self._sock, backlog=self._backlog)
            return
        extra = {"ssl_handshake_timeout": self._handshake_timeout, "ssl_shutdown_timeout": self._handshake_timeout
                 } if self._ssl_context is not None else {}
        self._server = await loop.create_server(handler_factory(server), sock=self._sock, ssl=self._ssl_context,
                                                backlog=self._backlog, **extra)

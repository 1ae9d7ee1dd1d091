"""PROXY protocol v2 on the EST listener, for load balancers that pass TLS through.

With TLS passthrough the balancer cannot add X-Forwarded-For, so kipuka would
see only the balancer's address: audit records and OTP lockouts (keyed by
entity and client address) need the real one. The balancer prefixes each
connection with a binary PROXY v2 header (haproxy `send-proxy-v2`, AWS NLB,
...). kipuka peeks at the socket, consumes exactly the header, and leaves the
TLS ClientHello in the kernel buffer for the normal TLS handshake.

Hand-written: the v2 header is 16 fixed bytes plus addresses; no maintained
Python library parses it for asyncio without owning the whole server.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl
from typing import Any, Callable

from aiohttp import web

from kipuka.server.limits import GuardedHandler

log = logging.getLogger("kipuka.proxy")
SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
MAX_HEADER = 16 + 536  # addresses plus TLVs a balancer may add
HEADER_TIMEOUT = 5.0


class ProxyHeaderError(Exception):
    pass


def parse_v2(data: bytes) -> tuple[int, tuple[str, int] | None]:
    """(header length, source address or None for LOCAL) from the first bytes of a connection."""
    if len(data) < 16 or data[:12] != SIGNATURE:
        raise ProxyHeaderError("connection does not start with a PROXY protocol v2 header")
    version, command = data[12] >> 4, data[12] & 0x0F
    if version != 2 or command not in (0, 1):
        raise ProxyHeaderError("unsupported PROXY protocol version or command")
    length = 16 + int.from_bytes(data[14:16], "big")
    if length > MAX_HEADER:
        raise ProxyHeaderError("PROXY header too long")
    if len(data) < length:
        return length, None  # caller reads more
    if command == 0:  # LOCAL: the balancer's own health check
        return length, None
    family = data[13]
    body = data[16:length]
    if family == 0x11 and len(body) >= 12:  # TCP over IPv4
        return length, (str(ipaddress.IPv4Address(body[0:4])), int.from_bytes(body[8:10], "big"))
    if family == 0x21 and len(body) >= 36:  # TCP over IPv6
        return length, (str(ipaddress.IPv6Address(body[0:16])), int.from_bytes(body[32:34], "big"))
    return length, None  # UNSPEC or UNIX: keep the peer address


async def _peek(loop: asyncio.AbstractEventLoop, sock: socket.socket, wanted: int) -> bytes:
    """Wait until `wanted` bytes can be peeked (or the peer stops sending)."""
    while True:
        try:
            data = sock.recv(wanted, socket.MSG_PEEK)
            if len(data) >= wanted or not data:
                return data
            # Part of the header is queued: the socket stays readable, so poll gently
            # rather than spin (the caller's timeout bounds the wait).
            await asyncio.sleep(0.01)
            continue
        except BlockingIOError:
            pass  # nothing yet: wait for the socket to become readable
        ready = loop.create_future()
        loop.add_reader(sock.fileno(), ready.set_result, None)
        try:
            await ready
        finally:
            loop.remove_reader(sock.fileno())


async def read_header(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> tuple[str, int] | None:
    head = await _peek(loop, sock, 16)
    length, _ = parse_v2(head)
    full = await _peek(loop, sock, length)
    length, source = parse_v2(full)
    if len(full) < length:
        raise ProxyHeaderError("truncated PROXY header")
    sock.recv(length)  # consume exactly the header; the TLS bytes stay queued
    return source


class ProxySite:
    """A listening socket whose connections start with PROXY v2, then TLS, then HTTP."""

    def __init__(self, runner: web.AppRunner, sock: socket.socket, ssl_context: ssl.SSLContext | None,
                 allowed: tuple[str, ...] = (), handshake_timeout: float = 60.0) -> None:
        self._handshake_timeout = handshake_timeout  # as GuardedSite: the handshake and the close_notify wait
        self._runner = runner
        self._sock = sock
        self._ssl = ssl_context
        self._allowed = [ipaddress.ip_network(n, strict=False) for n in allowed]
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._accept_loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._sock.close()

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            conn, peer = await loop.sock_accept(self._sock)
            asyncio.create_task(self._serve(loop, conn, peer))

    async def _serve(self, loop: asyncio.AbstractEventLoop, conn: socket.socket, peer: Any) -> None:
        try:
            if self._allowed and not any(ipaddress.ip_address(peer[0]) in n for n in self._allowed):
                raise ProxyHeaderError(f"{peer[0]} may not send PROXY headers")
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            source = await asyncio.wait_for(read_header(loop, conn), HEADER_TIMEOUT)
            factory = _factory(self._runner.server, source)  # type: ignore[arg-type]
            extra = {"ssl_handshake_timeout": self._handshake_timeout,
                     "ssl_shutdown_timeout": self._handshake_timeout} if self._ssl is not None else {}
            await loop.connect_accepted_socket(factory, conn, ssl=self._ssl, **extra)
        except (ProxyHeaderError, asyncio.TimeoutError, OSError, ssl.SSLError, ValueError) as exc:
            log.info("closing connection from %s: %s", peer[0] if peer else "?", exc)
            conn.close()


class ProxiedHandler(GuardedHandler):
    """The EST connection handler (with its limits), carrying the client address from the PROXY header."""

    __slots__ = ("kipuka_client",)


def _factory(server: web.Server, source: tuple[str, int] | None) -> Callable[[], Any]:
    def make() -> Any:
        # What web.Server.__call__ does, with our subclass (RequestHandler has
        # __slots__, so the address cannot be attached to a plain instance).
        handler = ProxiedHandler(server, loop=server._loop, **server._kwargs)
        handler.kipuka_client = source
        return handler
    return make


@web.middleware
async def proxied_remote(request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
    """Show handlers the client's address from the PROXY header instead of the balancer's."""
    source = getattr(request.protocol, "kipuka_client", None)
    if source is not None:
        request = request.clone(remote=source[0])
    return await handler(request)

"""Raw clients for the over-the-wire hostile tests: TLS sockets from a chosen source address.

requests cannot pick a source address, send a malformed request, trickle bytes
or stop halfway; these helpers can. Loopback is a whole /8 on Linux, so
127.0.0.2 and 127.0.0.3 are other clients as far as per-address limits go.
"""

from __future__ import annotations

import http.client
import re
import socket
import ssl
import time
from dataclasses import dataclass

from tests.helpers import Server

STATUS_LINE = re.compile(rb"^HTTP/1\.[01] (\d{3}) ")


def context(srv: Server, cert: tuple[str, str] | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=srv.ca_bundle)
    ctx.check_hostname = False  # the certificate names localhost; we dial 127.0.0.1 from other loopback addresses
    if cert is not None:
        ctx.load_cert_chain(*cert)
    return ctx


def tcp(srv: Server, source: str = "127.0.0.1", timeout: float = 10) -> socket.socket:
    return socket.create_connection(("127.0.0.1", srv.port), timeout=timeout, source_address=(source, 0))


def tls(srv: Server, source: str = "127.0.0.1", cert: tuple[str, str] | None = None,
        timeout: float = 10) -> ssl.SSLSocket:
    return context(srv, cert).wrap_socket(tcp(srv, source, timeout), server_hostname="localhost")


def read_all(sock: socket.socket, deadline: float) -> bytes:
    """Everything the server sends until it closes the connection (or the deadline passes)."""
    out = b""
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except (socket.timeout, TimeoutError):
            break
        except (ConnectionError, ssl.SSLError, OSError):
            break  # a reset or an abrupt TLS close: the server has hung up
        if not chunk:
            break
        out += chunk
    return out


def read_all_once(sock: socket.socket, deadline: float) -> bytes:
    """What the server sends next; b"" once it has closed the connection or the deadline passed."""
    sock.settimeout(max(0.05, deadline - time.monotonic()))
    try:
        return sock.recv(65536)
    except (socket.timeout, TimeoutError, ConnectionError, ssl.SSLError, OSError):
        return b""


def status_of(reply: bytes) -> int | None:
    m = STATUS_LINE.match(reply)
    return int(m.group(1)) if m else None


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


class SourcedHTTPS(http.client.HTTPSConnection):
    """http.client over TLS from a given source address to the test server."""

    def __init__(self, srv: Server, source: str, cert: tuple[str, str] | None, timeout: float) -> None:
        super().__init__("127.0.0.1", srv.port, timeout=timeout, source_address=(source, 0),
                         context=context(srv, cert))


def request(srv: Server, method: str, path: str, *, source: str = "127.0.0.1", headers: dict[str, str] | None = None,
            body: bytes | None = None, cert: tuple[str, str] | None = None, timeout: float = 10) -> Reply:
    conn = SourcedHTTPS(srv, source, cert, timeout)
    try:
        conn.request(method, path, body=body, headers={"Host": "localhost", **(headers or {})})
        resp = conn.getresponse()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


def est_path(op: str, label: str | None = None) -> str:
    return f"/.well-known/est/{label}/{op}" if label else f"/.well-known/est/{op}"

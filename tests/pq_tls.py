"""A minimal HTTPS/1.1 client on pyOpenSSL, i.e. on the OpenSSL that pyca/cryptography bundles (ML-DSA).

`requests` and curl on this machine run on the system OpenSSL 3.0, which can neither
sign a TLS 1.3 CertificateVerify with an ML-DSA key nor verify an ML-DSA server chain;
this client stands for a device whose TLS stack can (OpenSSL >= 3.5, Bouncy Castle >= 1.79).
"""

from __future__ import annotations

import select
import socket
import time
from dataclasses import dataclass

from OpenSSL import SSL


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    version: str  # the TLS version negotiated


def https_request(port: int, method: str, path: str, *, ca_file: str, body: bytes = b"",
                  headers: dict[str, str] | None = None, cert_file: str | None = None,
                  key_file: str | None = None, tls13_only: bool = True) -> Answer:
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_3_VERSION if tls13_only else SSL.TLS1_2_VERSION)
    ctx.load_verify_locations(ca_file)
    ctx.set_verify(SSL.VERIFY_PEER, lambda _c, _x, _e, _d, ok: bool(ok))
    if cert_file is not None:
        ctx.use_certificate_chain_file(cert_file)
        ctx.use_privatekey_file(key_file)
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        conn = SSL.Connection(ctx, sock)
        conn.set_tlsext_host_name(b"localhost")
        conn.set_connect_state()
        _blocking(conn.do_handshake, sock)
        head = [f"{method} {path} HTTP/1.1", f"Host: localhost:{port}", "Connection: close",
                f"Content-Length: {len(body)}"] + [f"{k}: {v}" for k, v in (headers or {}).items()]
        _blocking(lambda: conn.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body), sock)
        data = bytearray()
        while True:
            try:
                chunk = _blocking(lambda: conn.recv(65536), sock)
            except SSL.ZeroReturnError:  # close_notify
                break
            except SSL.SysCallError:  # a close without close_notify: fine once an answer came
                if not data:
                    raise
                break
            if not chunk:
                break
            data += chunk
        version = conn.get_protocol_version_name()
    finally:
        sock.close()
    raw_head, _, payload = bytes(data).partition(b"\r\n\r\n")
    lines = raw_head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    fields = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    length = int(fields.get("content-length", len(payload)))
    return Answer(status, fields, payload[:length], version)


def _blocking(call, sock: socket.socket, timeout: float = 30.0):  # type: ignore[no-untyped-def]
    """pyOpenSSL on a socket with a timeout is non-blocking: wait for the socket and retry."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except (SSL.WantReadError, SSL.WantWriteError) as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("TLS peer did not answer in time") from exc
            if isinstance(exc, SSL.WantReadError):
                select.select([sock], [], [], left)
            else:
                select.select([], [sock], [], left)

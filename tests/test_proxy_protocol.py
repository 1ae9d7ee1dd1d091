"""PROXY protocol v2 on the EST listener: audit and lockouts see the client, not the balancer."""

import base64

import pytest
import ipaddress
import socket
import ssl
import struct

from tests.helpers import b64, db_execute, make_csr, unique

SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def proxy_v2(src: str, sport: int = 40000, dst: str = "127.0.0.1", dport: int = 9443) -> bytes:
    body = ipaddress.IPv4Address(src).packed + ipaddress.IPv4Address(dst).packed + struct.pack("!HH", sport, dport)
    return SIG + bytes([0x21, 0x11]) + struct.pack("!H", len(body)) + body


def _enroll_through_balancer(srv, header: bytes, entity: str, otp: str) -> bytes:
    ctx = ssl.create_default_context(cafile=str(srv.dir / "ca" / "root.pem"))
    raw = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    raw.sendall(header)  # the balancer's header, then the client's TLS bytes
    with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        body = b64(make_csr(f"{entity}.example.com")[1])
        auth = base64.b64encode(f"{entity}:{otp}".encode()).decode()
        tls.sendall(b"POST /.well-known/est/simpleenroll HTTP/1.1\r\nHost: localhost\r\n"
                    b"Content-Type: application/pkcs10\r\nConnection: close\r\n"
                    + f"Authorization: Basic {auth}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        reply = b""
        while chunk := tls.recv(65536):
            reply += chunk
    return reply


def test_audit_records_the_address_from_the_proxy_header(fresh_server):
    srv = fresh_server(replacements={r"^workers = 1.*$": "workers = 1\nproxy_protocol = true"})
    entity = unique()
    otp = srv.otp(entity)
    ok = _enroll_through_balancer(srv, proxy_v2("203.0.113.7"), entity, otp)
    assert ok.startswith(b"HTTP/1.1 200")
    wrong = _enroll_through_balancer(srv, proxy_v2("198.51.100.9"), entity, "wrong")
    assert wrong.startswith(b"HTTP/1.1 401")
    rows = db_execute(srv, "SELECT outcome, client_addr FROM audit WHERE entity = :e AND event = 'enroll'",
                      {"e": entity})
    assert sorted(rows) == [("rejected", "198.51.100.9"), ("success", "203.0.113.7")]


def test_a_connection_without_the_header_is_closed(fresh_server):
    srv = fresh_server(replacements={r"^workers = 1.*$": "workers = 1\nproxy_protocol = true"})
    ctx = ssl.create_default_context(cafile=str(srv.dir / "ca" / "root.pem"))
    raw = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    with pytest.raises((ssl.SSLError, OSError)):
        with ctx.wrap_socket(raw, server_hostname="localhost"):
            pass  # a ClientHello is not a PROXY header: the server closes the connection
    raw.close()

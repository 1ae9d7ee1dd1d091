"""Slowloris, stalled bodies, oversized headers and connection hogs against a real `kipuka serve`.

The server runs with short limits ([server] header_timeout = body_timeout = 2s,
4 connections per client, 2048-byte header lines, 20 header lines) so each
scenario takes seconds. "Another client" is another loopback address.
"""

from __future__ import annotations

import threading
import time

import pytest

from tests.fuzz import net
from tests.helpers import Server, b64, make_csr, make_server

TIMEOUT = 2
CAP = 4


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Server:
    server = make_server(tmp_path_factory.mktemp("slow"), replacements={r"^workers = 1.*$": (
        f"workers = 1\nheader_timeout = \"{TIMEOUT}s\"\nbody_timeout = \"{TIMEOUT}s\"\n"
        f"max_connections_per_client = {CAP}\nmax_header_size = 2048\nmax_headers = 20")}).start()
    yield server
    server.stop()


def cacerts_status(srv: Server, source: str = "127.0.0.1") -> int:
    return net.request(srv, "GET", net.est_path("cacerts"), source=source, timeout=5).status


def trickle(sock, data: bytes, interval: float, deadline: float) -> tuple[float, bytes]:  # type: ignore[no-untyped-def]
    """Send `data` one byte every `interval` s; (when the server answered or hung up, what it sent)."""
    started = time.monotonic()
    for byte in data:
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            return time.monotonic() - started, b""
        reply = net.read_all(sock, time.monotonic() + interval)
        if reply or time.monotonic() > deadline:
            return time.monotonic() - started, reply
    return time.monotonic() - started, net.read_all(sock, deadline)


def test_a_client_trickling_headers_is_dropped_while_others_are_served(srv: Server):
    result: dict[str, tuple[float, bytes]] = {}
    sock = net.tls(srv)

    def slowloris() -> None:
        result["slow"] = trickle(sock, b"GET /.well-known/est/cacerts HTTP/1.1\r\nHost: localhost\r\n"
                                 b"X-Padding: " + b"a" * 40 + b"\r\n\r\n", 1.0, time.monotonic() + 15)

    thread = threading.Thread(target=slowloris)
    thread.start()
    time.sleep(0.5)
    served_at = time.monotonic()
    assert cacerts_status(srv) == 200  # same address, another connection: not held up
    assert cacerts_status(srv, "127.0.0.2") == 200
    assert time.monotonic() - served_at < 2
    thread.join(20)
    elapsed, reply = result["slow"]
    assert TIMEOUT - 0.5 <= elapsed <= TIMEOUT + 2, elapsed
    assert net.status_of(reply) == 408 and b"request headers not received within 2s" in reply
    assert net.read_all(sock, time.monotonic() + 1) == b""  # and the connection is closed
    sock.close()


def test_headers_that_arrive_in_pieces_within_the_timeout_are_served(srv: Server):
    with net.tls(srv) as sock:
        for piece in (b"GET /.well-known/est/cacerts HT", b"TP/1.1\r\nHost: local",
                      b"host\r\nConnection: close\r\n\r\n"):
            sock.sendall(piece)
            time.sleep(0.5)
        assert net.status_of(net.read_all(sock, time.monotonic() + 5)) == 200


def test_a_keep_alive_client_trickling_its_second_request_is_dropped(srv: Server):
    with net.tls(srv) as sock:
        sock.sendall(b"GET /.well-known/est/cacerts HTTP/1.1\r\nHost: localhost\r\n\r\n")
        sock.settimeout(5)
        assert net.status_of(sock.recv(65536)) == 200
        time.sleep(TIMEOUT + 0.5)  # idle between requests is the keep-alive timer's business, not this one
        elapsed, reply = trickle(sock, b"GET /.well-known/est/cacerts HTTP/1.1\r\nHost: localhost\r\n\r\n", 0.5,
                                 time.monotonic() + 15)
        assert TIMEOUT - 0.5 <= elapsed <= TIMEOUT + 2 and net.status_of(reply) == 408


def test_a_stalled_body_gets_408_and_the_connection_closes(srv: Server):
    body = b64(make_csr("device-1.example.com")[1])
    with net.tls(srv) as sock:
        started = time.monotonic()
        sock.sendall(b"POST /.well-known/est/simpleenroll HTTP/1.1\r\nHost: localhost\r\n"
                     b"Content-Type: application/pkcs10\r\n"
                     + f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:40])
        reply = net.read_all(sock, started + 10)
        assert time.monotonic() - started <= TIMEOUT + 2
    assert net.status_of(reply) == 408 and reply.rstrip().endswith(b"request body not received within 2s")


def test_a_body_trickled_in_time_is_read(srv: Server):
    """The body deadline covers the whole body, not each read: a slow but steady client within it passes."""
    body = b64(make_csr("device-1.example.com")[1])
    with net.tls(srv) as sock:
        sock.sendall(b"POST /.well-known/est/simpleenroll HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
                     b"Content-Type: application/pkcs10\r\n" + f"Content-Length: {len(body)}\r\n\r\n".encode())
        for i in range(0, len(body), len(body) // 3 + 1):
            sock.sendall(body[i:i + len(body) // 3 + 1])
            time.sleep(0.3)
        reply = net.read_all(sock, time.monotonic() + 5)
    assert net.status_of(reply) == 401  # read in full and judged: no credentials


@pytest.mark.parametrize("request_bytes", [
    b"GET /.well-known/est/cacerts HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * 3000 + b"\r\n\r\n",
    b"GET /.well-known/est/cacerts HTTP/1.1\r\nHost: localhost\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(30))
    + b"\r\n",
    b"GET /.well-known/est/" + b"a" * 3000 + b"/cacerts HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"GET /.well-known/est/cacerts HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic " + b"QUFB" * 1000 + b"\r\n\r\n",
], ids=["long-header", "many-headers", "long-request-line", "long-authorization"])
def test_oversized_headers_get_431_at_once(srv: Server, request_bytes: bytes):
    with net.tls(srv) as sock:
        started = time.monotonic()
        sock.sendall(request_bytes)
        reply = net.read_all(sock, started + 5)
        assert time.monotonic() - started < 1.5
    assert net.status_of(reply) == 431
    assert reply.split(b"\r\n\r\n", 1)[1] == \
        b"request line or header fields too large (at most 2048 bytes per line and 20 header lines)\n"
    assert cacerts_status(srv) == 200


def test_idle_connections_from_one_address_do_not_starve_another(srv: Server):
    held = [net.tls(srv) for _ in range(CAP)]
    refused = [net.tls(srv) for _ in range(3)]
    try:
        for sock in refused:  # over the cap: told why, and closed
            reply = net.read_all(sock, time.monotonic() + 3)
            assert net.status_of(reply) == 503 and b"too many connections from 127.0.0.1" in reply
        for sock in held:  # the ones under the cap are still open (nothing to read yet)
            assert net.read_all(sock, time.monotonic() + 0.2) == b""
        assert cacerts_status(srv, "127.0.0.2") == 200
        raw = [net.tcp(srv, "127.0.0.3") for _ in range(40)]  # TCP only, never starting TLS
        assert cacerts_status(srv, "127.0.0.2") == 200
        time.sleep(TIMEOUT + 0.5)  # the TLS handshake deadline closes them
        assert all(net.read_all(s, time.monotonic() + 0.5) == b"" for s in raw)
        for s in raw:
            s.close()
    finally:
        for sock in held + refused:
            sock.close()
    time.sleep(0.5)
    assert cacerts_status(srv) == 200  # the slots were given back when the connections closed

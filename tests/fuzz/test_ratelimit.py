"""The per-client rate limit for unauthenticated and failing requests, against a real `kipuka serve`.

[ratelimit] rate = 1, burst = 5: a client gets five such requests at once, then
one a second. Each test uses its own loopback address, so buckets do not mix.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import time

import pytest
from cryptography.x509.oid import NameOID

from tests.fuzz import net
from tests.helpers import Server, b64, db_execute, enroll_identity, make_csr, make_server, unique
from tests.test_proxy_protocol import proxy_v2

BURST = 5
LIMITS = f"\n[ratelimit]\nrate = 1\nburst = {BURST}\nexempt = [\"127.0.0.9/32\"]\n"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Server:
    server = make_server(tmp_path_factory.mktemp("ratelimit"), append=LIMITS).start()
    yield server
    server.stop()


def cacerts(srv: Server, source: str) -> net.Reply:
    return net.request(srv, "GET", net.est_path("cacerts"), source=source)


def enroll(srv: Server, source: str, entity: str, otp: str, cert: tuple[str, str] | None = None,
           op: str = "simpleenroll") -> net.Reply:
    headers = {"Content-Type": "application/pkcs10"}
    if otp:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{entity}:{otp}".encode()).decode()
    return net.request(srv, "POST", net.est_path(op), source=source, headers=headers, cert=cert,
                       body=b64(make_csr(f"{entity}.example.com")[1]))


def drain(srv: Server, source: str) -> None:
    statuses = [cacerts(srv, source).status for _ in range(BURST + 1)]
    assert statuses[-1] == 429, statuses


def test_anonymous_requests_over_the_burst_get_429_with_retry_after(srv: Server):
    assert [cacerts(srv, "127.0.0.2").status for _ in range(BURST)] == [200] * BURST
    refused = cacerts(srv, "127.0.0.2")
    assert refused.status == 429
    assert refused.headers["content-type"].startswith("text/plain")
    wait = int(refused.headers["retry-after"])
    assert 1 <= wait <= 2
    assert refused.body.count(b"\n") == 1 and b"too many unauthenticated or failed requests from 127.0.0.2" \
        in refused.body
    assert cacerts(srv, "127.0.0.3").status == 200  # another client is not affected
    time.sleep(wait)
    assert cacerts(srv, "127.0.0.2").status == 200  # Retry-After told the truth
    assert cacerts(srv, "127.0.0.2").status == 429  # and only one token came back


def test_failures_count_and_successful_enrollments_do_not(srv: Server):
    entity, other = unique(), unique()
    # OTPs first: the CLI takes long enough to refill a token
    otp, other_otp = srv.otp(entity, "--uses", str(BURST + 3)), srv.otp(other)
    assert [enroll(srv, "127.0.0.4", entity, otp).status for _ in range(BURST + 3)] == [200] * (BURST + 3)
    # wrong credentials (for entities that do not exist, so no OTP lockout gets involved)
    assert [enroll(srv, "127.0.0.4", unique(), "wrong").status for _ in range(BURST)] == [401] * BURST
    refused = enroll(srv, "127.0.0.4", other, other_otp)
    assert refused.status == 429 and "retry-after" in refused.headers
    assert enroll(srv, "127.0.0.5", other, other_otp).status == 200  # from elsewhere it works (the OTP was kept)


def test_mtls_requests_are_never_refused(srv: Server, tmp_path):
    crt, key, cert = enroll_identity(srv, tmp_path)
    drain(srv, "127.0.0.6")
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    renewed = net.request(srv, "POST", net.est_path("simplereenroll"), source="127.0.0.6", cert=(crt, key),
                          headers={"Content-Type": "application/pkcs10"}, body=b64(make_csr(cn)[1]))
    assert renewed.status == 200
    assert cacerts(srv, "127.0.0.6").status == 429  # the anonymous ones still are


def test_a_refusal_episode_is_logged_and_audited_once(srv: Server):
    drain(srv, "127.0.0.7")
    for _ in range(5):
        assert cacerts(srv, "127.0.0.7").status == 429
    rows = db_execute(srv, "SELECT outcome, reason FROM audit WHERE event = 'ratelimit' AND client_addr = :a",
                      {"a": "127.0.0.7"})
    assert len(rows) == 1 and rows[0][0] == "rejected" and "127.0.0.7" in rows[0][1]
    warnings = [json.loads(line) for line in srv.log.read_text().splitlines()
                if '"kipuka.ratelimit"' in line and "127.0.0.7" in line]
    assert [w["level"] for w in warnings] == ["warning"]


def test_an_exempt_network_is_not_limited(srv: Server):
    assert {cacerts(srv, "127.0.0.9").status for _ in range(3 * BURST)} == {200}


def test_malformed_http_counts_too(srv: Server):
    for _ in range(BURST):
        with net.tls(srv, "127.0.0.8") as sock:
            sock.sendall(b"GET /\x00 HTTP/9.9\r\n\r\n")
            assert net.status_of(net.read_all(sock, time.monotonic() + 5)) == 400
    assert cacerts(srv, "127.0.0.8").status == 429


# --- behind a TLS-passthrough balancer -------------------------------------------------------

@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Server:
    server = make_server(tmp_path_factory.mktemp("ratelimit-proxy"), append=LIMITS, replacements={
        r"^workers = 1.*$": "workers = 1\nproxy_protocol = true\nmax_connections_per_client = 2"}).start()
    yield server
    server.stop()


def through_balancer(srv: Server, client: str) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    raw.sendall(proxy_v2(client))
    ctx = ssl.create_default_context(cafile=str(srv.dir / "ca" / "root.pem"))
    return ctx.wrap_socket(raw, server_hostname="localhost")


def get_through_balancer(srv: Server, client: str) -> int | None:
    with through_balancer(srv, client) as tls:
        tls.sendall(b"GET /.well-known/est/cacerts HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        return net.status_of(net.read_all(tls, time.monotonic() + 5))


def test_limits_apply_to_the_address_in_the_proxy_header(proxied: Server):
    assert [get_through_balancer(proxied, "203.0.113.7") for _ in range(BURST)] == [200] * BURST
    assert get_through_balancer(proxied, "203.0.113.7") == 429
    assert get_through_balancer(proxied, "203.0.113.8") == 200  # same balancer, another client
    held = [through_balancer(proxied, "198.51.100.1") for _ in range(2)]
    try:
        with through_balancer(proxied, "198.51.100.1") as third:
            assert net.status_of(net.read_all(third, time.monotonic() + 3)) == 503
        assert get_through_balancer(proxied, "198.51.100.2") == 200
    finally:
        for sock in held:
            sock.close()

"""Concurrent enrollments racing for the same OTP.

Each scenario fires its requests from threads released together by a barrier,
each on its own TLS connection, then checks the answers against what the
server recorded (`kipuka certs list --entity ... --json`).
"""

from __future__ import annotations

import json
import threading

import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.helpers import CERTS_ONLY, Server, b64, certs_in_body, make_csr, unique


def fire(server: Server, bodies: list[bytes], auth: tuple[str, str]) -> list[requests.Response | Exception]:
    """POST every body to simpleenroll at once (one thread and one connection each)."""
    server.ca_bundle  # written on first use: not from 20 threads at once
    barrier = threading.Barrier(len(bodies))
    results: list[requests.Response | Exception | None] = [None] * len(bodies)

    def one(i: int) -> None:
        barrier.wait()
        try:
            results[i] = server.post("simpleenroll", bodies[i], auth=auth)
        except Exception as exc:  # noqa: BLE001 - reported by the assertions below
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a request did not finish within 60 s"
    return results  # type: ignore[return-value]


def recorded(server: Server, entity: str) -> list[dict]:
    out = server.cli("certs", "list", "--entity", entity, "--limit", "1000", "--json").stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def cert_of(response: requests.Response) -> x509.Certificate:
    assert response.headers["Content-Type"] == CERTS_ONLY, response.headers
    certs = certs_in_body(response.content)
    assert len(certs) == 1
    return certs[0]


def statuses(results: list) -> list:
    return [r.status_code if isinstance(r, requests.Response) else repr(r) for r in results]


def test_single_use_otp_20_different_keys_gives_exactly_one_certificate(server: Server):
    entity = unique()
    otp = server.otp(entity)
    csrs = [make_csr(f"{entity}.example.com") for _ in range(20)]
    results = fire(server, [b64(der) for _, der in csrs], (entity, otp))

    codes = statuses(results)
    assert codes.count(200) == 1 and codes.count(401) == 19, codes
    winner = next(i for i, r in enumerate(results) if r.status_code == 200)
    cert = cert_of(results[winner])
    assert cert.public_key() == csrs[winner][0].public_key()
    for r in results:
        if r.status_code == 401:
            assert r.headers.get("WWW-Authenticate") == 'Basic realm="est"', r.headers

    rows = recorded(server, entity)
    assert len(rows) == 1, rows
    assert rows[0]["serial"] == format(cert.serial_number, "x")


def test_single_use_otp_20_identical_requests_give_one_certificate(server: Server):
    entity = unique()
    otp = server.otp(entity)
    _, der = make_csr(f"{entity}.example.com")
    results = fire(server, [b64(der)] * 20, (entity, otp))

    codes = statuses(results)
    assert set(codes) <= {200, 401}, codes
    assert codes.count(200) >= 1, codes
    rows = recorded(server, entity)
    assert len(rows) == 1, rows  # exactly one certificate issued and recorded
    recorded_serial = rows[0]["serial"]
    ders = {cert_of(r).public_bytes(serialization.Encoding.DER) for r in results if r.status_code == 200}
    assert len(ders) == 1, f"{len(ders)} different certificates handed out for one OTP use"
    cert = x509.load_der_x509_certificate(ders.pop())
    assert format(cert.serial_number, "x") == recorded_serial
    # the very certificate recorded, byte for byte
    pem = server.cli("certs", "show", recorded_serial, "--pem").stdout.encode()
    assert x509.load_pem_x509_certificate(pem) == cert


def test_otp_with_three_uses_and_10_concurrent_keys_gives_three_certificates(server: Server):
    entity = unique()
    otp = server.otp(entity, "--uses", "3")
    csrs = [make_csr(f"{entity}.example.com") for _ in range(10)]
    results = fire(server, [b64(der) for _, der in csrs], (entity, otp))

    codes = statuses(results)
    assert codes.count(200) == 3 and codes.count(401) == 7, codes
    issued = {}
    for (key, _), r in zip(csrs, results):
        if r.status_code == 200:
            cert = cert_of(r)
            assert cert.public_key() == key.public_key()
            issued[format(cert.serial_number, "x")] = cert
    assert len(issued) == 3

    rows = recorded(server, entity)
    assert len(rows) == 3, rows
    assert {row["serial"] for row in rows} == set(issued)
    # the OTP shows all three uses spent
    listing = server.cli("otp", "list", "--entity", entity).stdout.strip().splitlines()
    assert len(listing) == 1 and "\t0/3\t" in listing[0] and listing[0].endswith("spent"), listing

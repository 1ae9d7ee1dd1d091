"""Replica pools: one CA key held by two SoftHSM tokens, failover without the client noticing,
503 + Retry-After with every replica down, and a replica killed during 1,000 enrollments."""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path

import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from kipuka.ca.setup import make_issuing
from tests.helpers import (admin_call, admin_token, b64, certs_from, certs_in_body, db_execute, make_csr, make_server,
                           new_key, unique)
from tests.softhsm import PIN_ENV, softhsm  # noqa: F401  (fixture)

LABEL = "pooled"


def pool_server(tmp_path: Path, hsm, strategy: str):  # noqa: F811
    """A deployment whose CA `pool` has its key on tokens r1 and r2 (imported, as a key ceremony would)."""
    for token in ("r1", "r2"):
        hsm.init_token(token)
    server = make_server(tmp_path, append=f"""
[ca.pool]
type = "pkcs11"
key_label = "pool-ca"
cert = "ca/pool.pem"
chain = "ca/root.pem"
pin_env = "{PIN_ENV}"
sessions = 4
reconnect_interval = "300ms"
strategy = "{strategy}"
health_interval = "400ms"
retry_after = 3
replicas = [ {{ token_label = "r1" }}, {{ token_label = "r2" }} ]

[labels.{LABEL}]
ca = "pool"
""")
    root = x509.load_pem_x509_certificate((server.dir / "ca" / "root.pem").read_bytes())
    root_key = serialization.load_pem_private_key((server.dir / "private" / "root.key").read_bytes(), None)
    key = new_key()
    cert = make_issuing(key, "kipuka pool Issuing CA (HSM replicas)", "kipuka demo", root, root_key)
    (server.dir / "ca" / "pool.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    for token in ("r1", "r2"):
        hsm.import_key(token, key, "pool-ca")
    del key
    return server.start(), cert


def enroll(server, label: str = LABEL) -> requests.Response:
    entity = unique()
    otp = server.otp(entity, "--label", label)
    _, der = make_csr(f"{entity}.example.com")
    return server.post("simpleenroll", b64(der), label=label, auth=(entity, otp))


def ca_health(server, token: str) -> tuple[str, dict]:
    report = admin_call(server, "GET", "/admin/health", token).json()
    return report["status"], report["components"]["ca:pool"]


def wait_for(predicate, seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


def test_failover_between_two_tokens(tmp_path, softhsm):  # noqa: F811
    server, ca_cert = pool_server(tmp_path, softhsm, "active-passive")
    try:
        token = admin_token(server)
        assert ca_health(server, token) == ("ok", {"status": "ok", "detail": ""})
        for _ in range(2):
            certs_from(enroll(server))[0].verify_directly_issued_by(ca_cert)

        softhsm.remove("r1")  # the active replica goes away: clients notice nothing
        for _ in range(5):
            r = enroll(server)
            assert r.status_code == 200, r.text
            certs_from(r)[0].verify_directly_issued_by(ca_cert)
        status, component = ca_health(server, token)
        assert status == "degraded" and component["status"] == "degraded", component
        assert "replica 1" in component["detail"] and "HSM unreachable" in component["detail"]

        softhsm.remove("r2")  # every replica down: 503 with Retry-After, never 500
        r = enroll(server)
        assert r.status_code == 503, (r.status_code, r.text)
        assert 1 <= int(r.headers["Retry-After"]) <= 3
        status, component = ca_health(server, token)
        assert component["status"] == "down" and component["detail"].startswith("unhealthy"), component
        assert enroll(server, label="iot-fleet").status_code == 200  # other CAs serve on

        softhsm.restore("r2")
        softhsm.restore("r1")
        assert wait_for(lambda: ca_health(server, token)[1]["status"] == "ok"), ca_health(server, token)
        r = enroll(server)
        assert r.status_code == 200, r.text
    finally:
        server.stop()


def test_replica_killed_during_1000_enrollments(tmp_path, softhsm):  # noqa: F811
    server, ca_cert = pool_server(tmp_path, softhsm, "round-robin")
    try:
        token = admin_token(server)
        total, threads = 1000, 12
        items = [{"entity": unique("pool"), "label": LABEL} for _ in range(total)]
        r = admin_call(server, "POST", "/admin/otp", token, json_body={"items": items})
        assert r.status_code == 201, r.text
        work: queue.Queue = queue.Queue()
        for created in r.json()["items"]:
            _, der = make_csr(f"{created['entity']}.example.com")
            work.put((created["entity"], created["otp"], b64(der)))
        server.ca_bundle  # noqa: B018
        results: list[tuple[int, str, str | None, bytes]] = []
        lock = threading.Lock()
        killed = threading.Event()

        def worker() -> None:
            session = requests.Session()  # keep-alive; verify per request (REQUESTS_CA_BUNDLE wins otherwise)
            bundle = server.ca_bundle
            while True:
                try:
                    entity, otp, body = work.get_nowait()
                except queue.Empty:
                    return
                resp = session.post(server.url("simpleenroll", LABEL), data=body, auth=(entity, otp),
                                    headers={"Content-Type": "application/pkcs10"}, timeout=60, verify=bundle)
                with lock:
                    results.append((resp.status_code, resp.text if resp.status_code != 200 else "",
                                    resp.headers.get("Retry-After"), resp.content))

        pool = [threading.Thread(target=worker) for _ in range(threads)]
        for t in pool:
            t.start()
        wait_for(lambda: len(results) >= 200, 120)
        softhsm.remove("r2")  # one replica dies mid-run
        killed.set()
        for t in pool:
            t.join(300)
        assert len(results) == total

        codes = [code for code, *_ in results]
        assert 500 not in codes, [r for r in results if r[0] == 500][:3]
        assert set(codes) <= {200, 503}, sorted(set(codes))
        for code, text, retry_after, _ in results:
            if code == 503:
                assert retry_after is not None and int(retry_after) >= 1, text
        ok = [body for code, _, _, body in results if code == 200]
        assert len(ok) >= total * 0.9, f"only {len(ok)} of {total} succeeded: {sorted(set(codes))}"
        serials = set()
        for body in ok:
            cert = x509.load_der_x509_certificate(_leaf_der(body))
            cert.verify_directly_issued_by(ca_cert)
            serials.add(cert.serial_number)
        assert len(serials) == len(ok)

        rows = db_execute(server, "SELECT serial, fingerprint_sha256 FROM certificates WHERE ca_id = 'pool'")
        assert len(rows) == len(ok), (len(rows), len(ok))
        assert len({r[0] for r in rows}) == len(rows) and len({r[1] for r in rows}) == len(rows)
        assert {int(r[0], 16) for r in rows} == serials
        status, component = ca_health(server, token)
        assert status == "degraded" and "replica 2" in component["detail"], component
    finally:
        server.stop()


def _leaf_der(body: bytes) -> bytes:
    return certs_in_body(body)[0].public_bytes(serialization.Encoding.DER)

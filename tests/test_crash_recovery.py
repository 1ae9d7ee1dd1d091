"""SIGKILL in the middle of enrollments: nothing a client received may be lost.

A fresh deployment (workers = 1, so `kipuka serve` itself is the server) takes
enrollments from 8 threads; it is killed with SIGKILL while requests are in
flight, then started again on the same directory and port. Every certificate a
client got a 200 for must be in the database, the OTP accounting must agree
with what was recorded, the SQLite file must pass its integrity check, and the
server must serve again.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time

import requests
from cryptography.hazmat.primitives import serialization

from tests.helpers import CERTS_ONLY, b64, certs_from, certs_in_body, make_csr, unique

THREADS = 8
LOAD_SECONDS = 1.5


def integrity(db) -> str:
    """SQLite's own check of the file; PostgreSQL guarantees this itself (WAL, crash recovery)."""
    if not db.exists():
        return "ok"
    con = sqlite3.connect(db)
    try:
        return con.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        con.close()


def test_sigkill_during_enrollments_loses_no_issued_certificate(fresh_server):
    srv = fresh_server()
    entity = unique("load")
    otp = srv.otp(entity, "--uses", "1000")
    ca_bundle = srv.ca_bundle
    url = srv.url("simpleenroll")

    received: dict[str, str] = {}  # serial -> sha256 of the DER the client got
    outcomes = {"ok": 0, "http_error": 0, "conn_error": 0, "truncated": 0}
    lock = threading.Lock()
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            _, der = make_csr(f"{entity}.example.com")
            try:
                r = requests.post(url, data=b64(der), auth=(entity, otp), verify=ca_bundle,
                                  headers={"Content-Type": "application/pkcs10"}, timeout=10)
            except requests.RequestException:
                with lock:
                    outcomes["conn_error"] += 1
                continue
            with lock:
                if r.status_code != 200:
                    outcomes["http_error"] += 1
                    continue
                try:
                    assert r.headers["Content-Type"] == CERTS_ONLY
                    cert = certs_in_body(r.content)[0]
                except Exception:  # noqa: BLE001 - a 200 with a broken body
                    outcomes["truncated"] += 1
                    continue
                outcomes["ok"] += 1
                received[format(cert.serial_number, "x")] = hashlib.sha256(
                    cert.public_bytes(serialization.Encoding.DER)).hexdigest()

    threads = [threading.Thread(target=load, daemon=True) for _ in range(THREADS)]
    for t in threads:
        t.start()
    time.sleep(LOAD_SECONDS)
    srv.proc.kill()  # SIGKILL, requests in flight
    srv.proc.wait(10)
    time.sleep(0.3)
    stop.set()
    for t in threads:
        t.join(20)
    assert not any(t.is_alive() for t in threads)

    assert outcomes["ok"] >= 10, outcomes  # there was real load
    assert outcomes["http_error"] == 0 and outcomes["truncated"] == 0, outcomes

    db = srv.dir / "kipuka.db"
    assert integrity(db) == "ok"  # right after the crash, before anyone else opens it

    srv.start()  # same directory, same port

    rows = [json.loads(line) for line in
            srv.cli("certs", "list", "--entity", entity, "--limit", "100000", "--json").stdout.splitlines()]
    recorded = {row["serial"]: row["sha256"] for row in rows}
    missing = sorted(set(received) - set(recorded))
    assert not missing, f"{len(missing)} of {len(received)} certificates clients received are not recorded: {missing[:5]}"
    for serial, fingerprint in received.items():
        assert recorded[serial] == fingerprint, serial
    # spot-check with `certs show`, one serial the way an operator would look it up
    some = next(iter(received))
    assert srv.cli("certs", "show", some, check=False).returncode == 0

    # every OTP use spent has its certificate and vice versa (one transaction)
    listing = srv.cli("otp", "list", "--entity", entity).stdout.strip().split("\t")
    uses_left, uses_total = map(int, listing[3].split("/"))
    assert uses_total - uses_left == len(recorded), (listing, len(recorded))

    # the server serves again: the same OTP, and a brand-new one
    _, der = make_csr(f"{entity}.example.com")
    certs_from(srv.post("simpleenroll", b64(der), auth=(entity, otp)))
    other = unique()
    _, der = make_csr(f"{other}.example.com")
    certs_from(srv.post("simpleenroll", b64(der), auth=(other, srv.otp(other))))

    assert integrity(db) == "ok"

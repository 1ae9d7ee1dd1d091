"""The console's list pages with a fleet-sized store: 100,000 certificates, 1,000 pending
requests, 10,000 OTPs and 100,000 audit events (issue #20).

Seeds a fresh deployment's database in bulk (executemany, straight into the tables; not the
issuance path), starts `kipuka serve`, and times the first page of every list the console
shows, as the console asks for it (the admin API calls behind each page, 50 rows), over
HTTPS keep-alive on loopback: median and p95 of N requests each, after a warm-up. The time
is measured at the client, so it includes TLS and HTTP on loopback (well under 1 ms).

Usage:
  .venv/bin/python benchmarks/console_pages.py                      # SQLite
  .venv/bin/python benchmarks/console_pages.py --database postgresql://127.0.0.1:5432/test
With PostgreSQL, the data goes into a database of its own (kipuka_console_bench), dropped at
the end: the named database is only used to create and drop it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from kipuka.store import AuditEvent, Store, schema  # noqa: E402
from kipuka.store.audit import GENESIS, audit_hash  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from store_scale import PY, free_port, percentile, run  # noqa: E402,F401  (the same deployment helpers)

BENCH_DB = "kipuka_console_bench"
LABELS = ("", "iot-fleet", "corp-devices")


def seed(store: Store, certs: int, pending: int, otps: int, events: int, der: bytes, csr_der: bytes) -> None:
    """Bulk rows: 80% first enrollments and 20% renewals of them (lineage), issued over the last
    year so that expiries spread over the next one; 2% revoked; the first OTPs spent on
    certificates; a hash-chained audit trail with some rejections."""
    now = dt.datetime.now(dt.timezone.utc)
    first = certs * 4 // 5
    started = time.perf_counter()
    with store._tx() as conn:
        rows = []
        for i in range(otps):
            spent, revoked, expired = i < otps // 2, i % 10 == 1, i % 10 == 2
            rows.append(dict(id=i + 1, entity=f"device-{i:06d}", label=None, key_id="k1", digest=bytes(32),
                             created_at=now - dt.timedelta(days=30) + dt.timedelta(seconds=i * 60),
                             expires_at=now + dt.timedelta(days=-1 if expired else 7), uses_total=1,
                             uses_left=0 if spent else 1, revoked_at=now if revoked and not spent else None))
        conn.execute(schema.otps.insert(), rows)
        for start in range(0, certs, 10000):
            rows = []
            for i in range(start, min(certs, start + 10000)):
                device = i if i < first else i - first
                issued = now - dt.timedelta(days=365) + dt.timedelta(seconds=i * 315)
                revoked = i % 50 == 7
                rows.append(dict(
                    ca_id="default", serial=format((1 << 150) + i * 7919, "x"),
                    subject=f"CN=device-{device:06d}.fleet.example.com", sans=f"device-{device:06d}.fleet.example.com",
                    not_before=issued, not_after=issued + dt.timedelta(days=365), label=LABELS[device % 3],
                    entity=f"device-{device:06d}", auth="mtls" if i >= first else "otp",
                    otp_id=device + 1 if i < otps // 2 else None, pubkey_sha256=format(i, "064x"),
                    fingerprint_sha256=format(i + (1 << 200), "064x"), der=der, issued_at=issued,
                    revoked_at=now if revoked else None, revocation_reason="keyCompromise" if revoked else None,
                    replaces_ca="default" if i >= first else None,
                    replaces_serial=format((1 << 150) + device * 7919, "x") if i >= first else None))
            conn.execute(schema.certificates.insert(), rows)
        rows = []
        for i in range(pending):
            rows.append(dict(op="enroll", label="iot-fleet", ca_id="iot-fleet", requester=f"otp:queued-{i:05d}",
                             entity=f"queued-{i:05d}", auth="otp", client_addr="192.0.2.7", otp_id=None,
                             credential_ca=None, credential_serial=None, pubkey_sha256=format(i, "064x"),
                             csr_der=csr_der, subject=f"CN=queued-{i:05d}.fleet.example.com",
                             sans=f"queued-{i:05d}.fleet.example.com", status="pending", reason="",
                             created_at=now - dt.timedelta(minutes=pending - i), expires_at=now + dt.timedelta(days=7)))
        conn.execute(schema.pending_requests.insert(), rows)
        prev = GENESIS
        for start in range(0, events, 10000):
            rows = []
            for i in range(start, min(events, start + 10000)):
                e = AuditEvent(event="enroll" if i % 20 else "auth", outcome="success" if i % 20 else "rejected",
                               reason="" if i % 20 else "invalid entity id or OTP", label=LABELS[i % 3],
                               entity=f"device-{i % first:06d}", client_addr="192.0.2.7",
                               auth="otp" if i % 4 else "mtls", ca_id="default",
                               serial=format((1 << 150) + i * 7919, "x") if i % 20 else "",
                               at=now - dt.timedelta(days=365) + dt.timedelta(seconds=i * 315), id=i + 1)
                digest = audit_hash(prev, i + 1, e)
                rows.append({**e.row(), "id": i + 1, "chain_seq": i + 1, "prev_hash": prev, "hash": digest})
                prev = digest
            conn.execute(schema.audit.insert(), rows)
        conn.execute(schema.audit_chain.insert().values(id=1, last_seq=events, last_hash=prev))
        if conn.dialect.name == "postgresql":  # explicit ids: move the sequences past them
            for table in ("otps", "audit"):
                conn.exec_driver_sql(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                                     f"(SELECT MAX(id) FROM {table}))")
            conn.exec_driver_sql("ANALYZE")
    print(f"seeded {certs:,} certificates ({certs - first:,} renewals), {pending:,} pending requests, "
          f"{otps:,} OTPs and {events:,} audit events in {time.perf_counter() - started:.1f} s")


def make_csr() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = "queued.fleet.example.com"
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.DER)


def pages(certs: int) -> dict[str, tuple[str, dict[str, str]]]:
    """What each console page asks for on opening (first page, 50 rows), and a few searches."""
    now = dt.datetime.now(dt.timezone.utc)
    iso = lambda t: t.isoformat().replace("+00:00", "Z")  # noqa: E731
    device = f"device-{certs // 3:06d}"
    serial = format((1 << 150) + (certs // 2) * 7919, "x")
    return {
        "certs: newest first": ("/admin/certs", {"sort": "issued", "order": "desc", "limit": "50"}),
        "certs: by expiry": ("/admin/certs", {"sort": "expires", "order": "asc", "limit": "50"}),
        "certs: by subject": ("/admin/certs", {"sort": "subject", "order": "asc", "limit": "50"}),
        "certs: label + valid": ("/admin/certs", {"label": "iot-fleet", "status": "valid", "sort": "issued",
                                                  "order": "desc", "limit": "50"}),
        "certs: expiring in 30 d": ("/admin/certs", {"status": "valid", "expires_after": iso(now),
                                                     "expires_before": iso(now + dt.timedelta(days=30)),
                                                     "sort": "expires", "order": "asc", "limit": "50"}),
        "certs: find (any case)": ("/admin/certs", {"q": device.upper(), "sort": "issued", "order": "desc",
                                                    "limit": "50"}),
        "certs: find, every row matches": ("/admin/certs", {"q": "FLEET.example", "sort": "issued",
                                                            "order": "desc", "limit": "50"}),
        "certs: second page (after=)": ("/admin/certs", {"sort": "expires", "order": "asc", "limit": "50",
                                                         "after": str(certs // 2)}),
        "certs: find a serial": ("/admin/certs", {"serial": serial,
                                                  "sort": "issued", "order": "desc", "limit": "50"}),
        "certs: entity history": ("/admin/certs", {"entity": device, "sort": "issued", "order": "desc",
                                                   "limit": "50"}),
        "certs: count of a search": ("/admin/certs/count", {"label": "iot-fleet", "status": "valid"}),
        "certificate page": (f"/admin/certs/{serial}", {}),
        "requests: pending queue": ("/admin/requests", {"status": "pending", "order": "asc", "limit": "50"}),
        "OTPs: newest first": ("/admin/otp", {"order": "desc", "limit": "50"}),
        "OTPs: active": ("/admin/otp", {"status": "active", "order": "desc", "limit": "50"}),
        "audit: newest first": ("/admin/audit", {"limit": "50"}),
        "audit: rejections": ("/admin/audit", {"outcome": "rejected", "limit": "50"}),
        "audit: actor mtls": ("/admin/audit", {"actor": "mtls", "limit": "50"}),
        "dashboard": ("/admin/dashboard", {}),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--certs", type=int, default=100_000)
    ap.add_argument("--pending", type=int, default=1_000)
    ap.add_argument("--otps", type=int, default=10_000)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--database", default="", help="a PostgreSQL URL (default: SQLite in the deployment)")
    ap.add_argument("-n", "--repeat", type=int, default=50)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kipuka-console-"))
    port, admin_port, public_port = free_port(), free_port(), free_port()
    run("init", str(work / "d"), "--admin-listen", f"127.0.0.1:{admin_port}",
        "--revocation-listen", f"127.0.0.1:{public_port}")
    config = work / "d" / "kipuka.toml"
    admin_db = None
    if args.database:
        import psycopg
        admin_db = args.database
        with psycopg.connect(admin_db, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{BENCH_DB}"')
        url = admin_db.rsplit("/", 1)[0] + "/" + BENCH_DB
        config.write_text(re.sub(r'^url = "[^"]*".*$', f'url = "{url}"', config.read_text(), flags=re.M))
    url = re.search(r'^url = "([^"]*)"', config.read_text(), flags=re.M).group(1)
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        url = "sqlite:///" + str(work / "d" / url[len("sqlite:///"):])
    store = Store(url)
    store.migrate()
    ca = x509.load_pem_x509_certificate((work / "d" / "ca" / "default.pem").read_bytes())
    seed(store, args.certs, args.pending, args.otps, args.events, ca.public_bytes(serialization.Encoding.DER),
         make_csr())
    store.close()
    server = subprocess.Popen([PY, "-m", "kipuka", "serve", "-c", str(config), "--listen", f"127.0.0.1:{port}"],
                              stdout=subprocess.DEVNULL, stderr=open(work / "serve.log", "wb"))
    try:
        token = None
        for _ in range(60):
            time.sleep(0.5)
            try:
                token = run("admin", "token", "create", "bench", "-c", str(config)).strip()
                requests.get(f"https://localhost:{admin_port}/admin/health/live",
                             verify=str(work / "d" / "ca" / "root.pem"), timeout=5)
                break
            except (subprocess.CalledProcessError, requests.ConnectionError):
                continue
        s = requests.Session()
        s.headers["Authorization"] = f"Bearer {token}"
        verify = str(work / "d" / "ca" / "root.pem")
        engine = "PostgreSQL" if args.database else "SQLite"
        print(f"\n{engine}: first page of each console list ({args.repeat} requests each, HTTPS keep-alive, "
              f"50 rows)\n")
        print(f"| {'page':30s} | {'rows':>4s} | {'median ms':>9s} | {'p95 ms':>7s} |")
        print(f"|{'-' * 32}|{'-' * 6}|{'-' * 11}|{'-' * 9}|")
        for name, (path, params) in pages(args.certs).items():
            def get() -> requests.Response:
                r = s.get(f"https://localhost:{admin_port}{path}", params=params, verify=verify, timeout=60)
                assert r.status_code == 200, (name, r.status_code, r.text[:200])
                return r
            body = get().json()
            for _ in range(2):
                get()
            times = []
            for _ in range(args.repeat):
                t = time.perf_counter()
                get()
                times.append((time.perf_counter() - t) * 1000)
            rows = len(body["items"]) if "items" in body else (body.get("count", 1) and 1)
            print(f"| {name:30s} | {rows:>4d} | {statistics.median(times):9.1f} | {percentile(times, 95):7.1f} |")
    finally:
        server.terminate()
        server.wait(30)
        if admin_db:
            import psycopg
            with psycopg.connect(admin_db, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
        if not os.environ.get("KEEP"):
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Admin API pages, CRL generation and OCSP latency with a large store.

Fills a fresh deployment's database with N issued certificates (default 1,000,000, of which a
tenth revoked, all under the default CA), starts `kipuka serve`, and prints:

- GET /admin/certs page latency (first page, a deep cursor page, filtered by entity, subject
  prefix, label and status), p50/p99 over repeated requests;
- the time to build and sign the default CA's full CRL (100,000 entries);
- OCSP POST latency p50/p99.

Usage: .venv/bin/python benchmarks/store_scale.py [--rows 1000000] [--database URL]
Rows are synthetic (unique serials, subjects, fingerprints; one real DER reused), inserted in
bulk straight into the store; the server is then measured over real HTTPS/HTTP on loopback.
"""

from __future__ import annotations

import argparse
import asyncio
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
from cryptography.x509 import ocsp
from sqlalchemy import insert

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from kipuka.store import CertFilter, Store, schema  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def run(*args: str) -> str:
    return subprocess.run([PY, "-m", "kipuka", *args], check=True, capture_output=True, text=True).stdout


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def fill(store: Store, rows: int, der: bytes) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    batch = 20000
    started = time.perf_counter()
    with store._tx() as conn:
        for start in range(0, rows, batch):
            values = []
            for i in range(start, min(rows, start + batch)):
                revoked = i % 10 == 0
                values.append(dict(
                    ca_id="default", serial=format((1 << 150) + i * 7919, "x"), subject=f"CN=dev-{i:07d}.example.com",
                    sans="", not_before=now - dt.timedelta(days=1), not_after=now + dt.timedelta(days=365),
                    label=("", "iot-fleet", "corp-devices")[i % 3], entity=f"dev-{i:07d}", auth="otp", otp_id=None,
                    pubkey_sha256=format(i, "064x"), fingerprint_sha256=format(i + (1 << 200), "064x"), der=der,
                    issued_at=now - dt.timedelta(seconds=rows - i), revoked_at=now if revoked else None,
                    revocation_reason="keyCompromise" if revoked else None))
            conn.execute(insert(schema.certificates), values)
    print(f"filled {rows:,} certificates ({rows // 10:,} revoked) in {time.perf_counter() - started:.1f} s")


async def publish_crl(config: Path) -> tuple[bytes, float]:
    from kipuka.config import load_config
    from kipuka.server.worker import build_authority
    from kipuka.store import AsyncStore

    cfg = load_config(config)
    astore = AsyncStore(Store(cfg.database.url))
    authority = build_authority(cfg, astore)
    started = time.perf_counter()
    crl = await authority.revocation.publish_crl("default")
    elapsed = time.perf_counter() - started
    astore.close()
    return crl.der, elapsed


def timed(fn, n: int) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--database", default="", help="a PostgreSQL URL (default: SQLite in the deployment)")
    ap.add_argument("--repeat", type=int, default=200)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kipuka-scale-"))
    port, admin_port, public_port = free_port(), free_port(), free_port()
    run("init", str(work / "d"), "--admin-listen", f"127.0.0.1:{admin_port}",
        "--revocation-listen", f"127.0.0.1:{public_port}")
    config = work / "d" / "kipuka.toml"
    if args.database:
        text = re.sub(r'^url = "[^"]*".*$', f'url = "{args.database}"', config.read_text(), flags=re.M)
        config.write_text(text)
    # A real enrollment gives a real certificate DER to reuse for the synthetic rows.
    server = subprocess.Popen([PY, "-m", "kipuka", "serve", "-c", str(config), "--listen", f"127.0.0.1:{port}"],
                              stdout=subprocess.DEVNULL, stderr=open(work / "serve.log", "wb"))
    try:
        time.sleep(2)
        token = run("admin", "token", "create", "bench", "-c", str(config)).strip()
        url = (re.search(r'^url = "([^"]*)"', config.read_text(), flags=re.M).group(1))
        if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
            url = "sqlite:///" + str(work / "d" / url[len("sqlite:///"):])
        store = Store(url)
        ca = x509.load_pem_x509_certificate((work / "d" / "ca" / "default.pem").read_bytes())
        der = ca.public_bytes(serialization.Encoding.DER)
        fill(store, args.rows, der)
        verify = str(work / "d" / "ca" / "root.pem")
        s = requests.Session()
        s.headers["Authorization"] = f"Bearer {token}"
        base = f"https://localhost:{admin_port}/admin/certs"

        def page(params: dict) -> None:
            r = s.get(base, params=params, verify=verify, timeout=30)
            assert r.status_code == 200, r.text

        deep = store.search_certificates(CertFilter(), limit=1, after_id=args.rows - 1000)[0][0]
        cases = {
            "first page (100)": {"limit": "100"},
            "deep cursor page": {"limit": "100", "cursor": str(deep)},
            "entity = ...": {"entity": f"dev-{args.rows // 2:07d}"},
            "subject prefix": {"subject_prefix": f"CN=dev-{args.rows // 3:07d}"[:-2], "limit": "100"},
            "label = iot-fleet": {"label": "iot-fleet", "limit": "100"},
            "status = revoked": {"status": "revoked", "limit": "100"},
        }
        print(f"\nGET /admin/certs with {args.rows:,} rows ({args.repeat} requests each, keep-alive):")
        for name, params in cases.items():
            page(params)
            t = timed(lambda: page(params), args.repeat)
            print(f"  {name:20s} p50 {statistics.median(t):6.1f} ms   p99 {percentile(t, 99):6.1f} ms")

        crl_der, elapsed = asyncio.run(publish_crl(config))
        crl = x509.load_der_x509_crl(crl_der)
        print(f"\nfull CRL of default CA: {len(crl):,} entries, {len(crl_der) / 1e6:.1f} MB, "
              f"{elapsed:.2f} s (query + build + sign + store, in-process)")

        ocsp_url = f"http://127.0.0.1:{public_port}/ocsp/default"
        issuer = x509.load_pem_x509_certificate((work / "d" / "ca" / "default.pem").read_bytes())
        # A CertID names the issuer by the hash of its subject and of its public key.
        name_hash = hashes.Hash(hashes.SHA1())
        name_hash.update(issuer.subject.public_bytes())
        key_hash = hashes.Hash(hashes.SHA1())
        key_hash.update(issuer.public_key().public_bytes(serialization.Encoding.X962,
                                                         serialization.PublicFormat.UncompressedPoint))
        req = ocsp.OCSPRequestBuilder().add_certificate_by_hash(
            name_hash.finalize(), key_hash.finalize(), (1 << 150) + 7919 * 10, hashes.SHA1(),
        ).build().public_bytes(serialization.Encoding.DER)
        p = requests.Session()
        p.post(ocsp_url, data=req, timeout=10)
        t = timed(lambda: p.post(ocsp_url, data=req, headers={"Content-Type": "application/ocsp-request"},
                                 timeout=10), args.repeat * 5)
        status = ocsp.load_der_ocsp_response(p.post(ocsp_url, data=req, timeout=10).content).certificate_status
        print(f"OCSP POST (status {status.name}): p50 {statistics.median(t):.2f} ms   p99 {percentile(t, 99):.2f} ms")
    finally:
        server.terminate()
        server.wait(30)
        if not os.environ.get("KEEP"):
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

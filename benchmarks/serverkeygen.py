#!/usr/bin/env python3
"""Benchmark POST /serverkeygen against a demo kipuka server (under 20 s in all).

    .venv/bin/python benchmarks/serverkeygen.py [--duration 1] [--rsa-duration 2.5] [--clients 8] [--pool 0]

On 127.0.0.1: `kipuka init` in a temporary folder, four labels with serverkeygen
on (EC P-256 or RSA-2048 keys, csr-key delivery, with and without escrow to an
RSA-2048 recovery certificate), `kipuka serve`, 8 devices enrolled with OTPs.
Then benchmarks/loadgen/estload (closed loop, keep-alive, mTLS with the device
certificates) measures, for each label, keys/s and latency; then simpleenroll
p99 alone and while RSA-2048 serverkeygen runs beside it on the same server
(RSA generation runs on a thread pool: if it ran on the event loop,
simpleenroll would wait behind whole key generations, ~0.1 s each).

Finally the database is checked: one certificate per 200, one escrow row per
escrowed certificate. Prints a Markdown table and a JSON line.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import json
import os
import platform
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
import urllib3
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID

HERE = Path(__file__).resolve().parent
LOADGEN_SRC = HERE / "loadgen" / "estload.c"
LOADGEN = HERE / "loadgen" / "estload"
KIPUKA = [sys.executable, "-m", "kipuka"]
EST = "/.well-known/est"
CELLS = [("keygen-ec", "EC P-256", False), ("keygen-ec-escrow", "EC P-256", True),
         ("keygen-rsa", "RSA-2048", False), ("keygen-rsa-escrow", "RSA-2048", True)]

urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)


def log(msg: str) -> None:
    print(f"[serverkeygen bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def build_loadgen() -> None:
    if LOADGEN.exists() and LOADGEN.stat().st_mtime >= LOADGEN_SRC.stat().st_mtime:
        return
    subprocess.run([os.environ.get("CC", "gcc"), "-O2", "-o", str(LOADGEN), str(LOADGEN_SRC), "-lssl", "-lcrypto",
                    "-lpthread"], check=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pem(obj) -> bytes:
    if hasattr(obj, "private_bytes"):
        return obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())
    return obj.public_bytes(serialization.Encoding.PEM)


def recovery_certificate(path: Path) -> None:
    """An RSA-2048 key recovery certificate; its key is thrown away (the server never needs it)."""
    import datetime as dt
    key = rsa.generate_private_key(65537, 2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench key recovery")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=1)).sign(key, hashes.SHA256()))
    path.write_bytes(pem(cert))


def setup(root: Path, args: argparse.Namespace) -> tuple[subprocess.Popen, int, Path]:
    d = root / "server"
    subprocess.run([*KIPUKA, "init", str(d), "--admin-listen", "", "--revocation-listen", ""], check=True,
                   capture_output=True)
    recovery_certificate(d / "recovery.pem")
    text = (d / "kipuka.toml").read_text()
    text = text.replace("workers = 1 ", f"workers = {args.workers} ", 1)
    text = text.replace("[est]\n", f"[est]\nkeygen_pool = {args.pool}\n", 1)
    for label, kind, escrow in CELLS:
        text += (f'\n[labels.{label}]\nserverkeygen = true\nserverkeygen_deliveries = ["csr-key"]\n'
                 f'serverkeygen_key_types = ["{"ec-p256" if kind.startswith("EC") else "rsa2048"}"]\n')
        if escrow:
            text += 'escrow = true\nescrow_cert = "recovery.pem"\n'
    (d / "kipuka.toml").write_text(text)
    proc, port = serve(d / "kipuka.toml", root / "serve.log")
    return proc, port, d


def serve(config: Path, log_path: Path) -> tuple[subprocess.Popen, int]:
    """`kipuka serve` on a free loopback port, once it accepts connections."""
    port = free_port()
    proc = subprocess.Popen([*KIPUKA, "serve", "-c", str(config), "--listen", f"127.0.0.1:{port}"],
                            stdout=open(log_path, "wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc, port
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"kipuka serve did not start; see {log_path}")


def enroll(port: int, d: Path, out: Path, count: int) -> Path:
    """`count` devices (one many-use OTP), each with its certificate and a CSR of its own names."""
    entity = "bench"
    otp = subprocess.run([*KIPUKA, "otp", "create", "-c", str(d / "kipuka.toml"), entity, "--uses", "1000"],
                         check=True, capture_output=True, text=True).stdout.strip()
    base = f"https://localhost:{port}{EST}"
    chain = pkcs7.load_der_pkcs7_certificates(base64.b64decode(requests.get(base + "/cacerts", verify=False).content))
    (out / "ca.pem").write_bytes(b"".join(pem(c) for c in chain))

    def one(i: int) -> str:
        key = ec.generate_private_key(ec.SECP256R1())
        cn = f"{entity}-{i:03d}.example.com"
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])).sign(key, hashes.SHA256()))
        body = base64.encodebytes(csr.public_bytes(serialization.Encoding.DER))
        r = requests.post(base + "/simpleenroll", data=body, auth=(entity, otp), verify=str(out / "ca.pem"),
                          headers={"Content-Type": "application/pkcs10"}, timeout=30)
        r.raise_for_status()
        cert = pkcs7.load_der_pkcs7_certificates(base64.b64decode(r.content))[0]
        crt, k, b = out / f"{i}.crt", out / f"{i}.key", out / f"{i}.csr.b64"
        crt.write_bytes(pem(cert))
        k.write_bytes(pem(key))
        b.write_bytes(body)  # the CSR key is the device key: csr-key delivery encrypts to it
        return f"{crt} {k} {b}"

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        lines = list(pool.map(one, range(count)))
    manifest = out / "manifest.txt"
    manifest.write_text("\n".join(lines) + "\n")
    # one request from Python first, to fail early with a readable reason
    crt, k, b = lines[0].split()
    r = requests.post(base + "/keygen-ec/serverkeygen", data=Path(b).read_bytes(), cert=(crt, k),
                      verify=str(out / "ca.pem"), headers={"Content-Type": "application/pkcs10"}, timeout=30)
    if r.status_code != 200 or not r.headers["Content-Type"].startswith("multipart/mixed"):
        raise SystemExit(f"serverkeygen check failed: {r.status_code} {r.text[:300]}")
    return manifest


def estload(port: int, manifest: Path, path: str, clients: int, duration: float, warmup: float) -> dict:
    cmd = [str(LOADGEN), "-p", str(port), "-i", str(manifest), "-u", path, "-c", str(clients),
           "-d", str(duration), "-w", str(warmup), "-T", "30"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=1.0, help="measured seconds of an EC or simpleenroll cell")
    ap.add_argument("--rsa-duration", type=float, default=2.5, help="measured seconds of an RSA cell (slow keys)")
    ap.add_argument("--warmup", type=float, default=0.5)
    ap.add_argument("--clients", type=int, default=8, help="concurrent serverkeygen clients (default 8)")
    ap.add_argument("--pool", type=int, default=0, help="[est] keygen_pool (default 0: every key made on demand)")
    ap.add_argument("--workers", type=int, default=1, help="[server] workers (default 1)")
    args = ap.parse_args()
    build_loadgen()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="kipuka-skg-bench-") as tmp:
        root = Path(tmp)
        proc, port, d = setup(root, args)
        try:
            ids = root / "ids"
            ids.mkdir()
            manifest = enroll(port, d, ids, 8)
            load1 = os.getloadavg()[0]
            results = {}
            for label, kind, escrow in CELLS:
                seconds = args.rsa_duration if kind.startswith("RSA") else args.duration
                log(f"{label}: {args.clients} clients, {seconds} s")
                results[label] = estload(port, manifest, f"{EST}/{label}/serverkeygen", args.clients,
                                         seconds, args.warmup)
            mixed = 2 * args.duration  # more samples for a p99
            log("simpleenroll alone, 2 clients")
            alone = estload(port, manifest, f"{EST}/simpleenroll", 2, mixed, args.warmup)
            log(f"simpleenroll (2 clients) beside RSA-2048 serverkeygen ({args.clients} clients)")
            with concurrent.futures.ThreadPoolExecutor(2) as pool:
                rsa_load = pool.submit(estload, port, manifest, f"{EST}/keygen-rsa/serverkeygen", args.clients,
                                       mixed + 2 * args.warmup, 0)
                time.sleep(args.warmup)
                beside = estload(port, manifest, f"{EST}/simpleenroll", 2, mixed, 0)
                rsa_beside = rsa_load.result()
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        db = sqlite3.connect(d / "kipuka.db")
        certs = dict(db.execute("SELECT label, COUNT(*) FROM certificates GROUP BY label").fetchall())
        escrowed = db.execute("SELECT COUNT(*) FROM escrowed_keys").fetchone()[0]
        escrow_certs = sum(certs.get(label, 0) for label, _, e in CELLS if e)
        ok = sum(r["total_ok"] for r in results.values()) + rsa_beside["total_ok"] + 1  # + the check request
        keygen_certs = sum(certs.get(label, 0) for label, _, _ in CELLS)
        consistent = escrowed == escrow_certs and keygen_certs == ok
    elapsed = time.monotonic() - started
    print(f"\nserverkeygen, csr-key delivery, {args.clients} clients keep-alive mTLS, workers={args.workers}, "
          f"keygen_pool={args.pool}, {os.cpu_count()} cores ({platform.processor() or platform.machine()}), "
          f"load average {load1:.2f} at start, {elapsed:.0f} s in all\n")
    print("| label | key | escrow | keys/s | p50 ms | p99 ms | errors |")
    print("|---|---|---|---:|---:|---:|---:|")
    for label, kind, escrow in CELLS:
        r = results[label]
        print(f"| {label} | {kind} | {'yes' if escrow else 'no'} | {r['rps']:.0f} | {r['p50_ms']:.1f} | "
              f"{r['p99_ms']:.1f} | {r['completed'] - r['ok']} |")
    print("\n| simpleenroll, 2 clients | req/s | p50 ms | p99 ms | max ms |")
    print("|---|---:|---:|---:|---:|")
    for name, r in (("alone", alone), (f"beside RSA-2048 serverkeygen ({rsa_beside['rps']:.0f} keys/s)", beside)):
        print(f"| {name} | {r['rps']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['max_ms']:.1f} |")
    print(f"\ndatabase: {keygen_certs} serverkeygen certificates for {ok} answers 200, {escrowed} escrow rows for "
          f"{escrow_certs} escrowed certificates: {'consistent' if consistent else 'INCONSISTENT'}")
    print("JSON " + json.dumps({"cells": results, "simpleenroll_alone": alone, "simpleenroll_beside_rsa": beside,
                                "rsa_beside": rsa_beside, "consistent": consistent, "load_average": load1,
                                "elapsed_s": elapsed}))
    return 0 if consistent else 1


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Benchmark ML-DSA-65 against P-256 enrollments on one kipuka server, keep-alive (under a minute).

    .venv/bin/python benchmarks/pq.py [--duration 3] [--warmup 1] [--clients 8] [--backends stdlib,pyopenssl]

On 127.0.0.1: `kipuka init --pq` in a temporary folder (labels pq: ML-DSA-65 root and
issuing CA; the default label: ECDSA P-256), `kipuka serve` with one worker, 8 devices
enrolled with OTPs (EC P-256 certificates from the default CA: they are the mTLS
identities, which benchmarks/loadgen/estload, on the system OpenSSL 3.0, can present).
Then estload (closed loop, keep-alive, mTLS) POSTs /simpleenroll, each device asking
for its own names again (what mTLS enrollment allows), in three cells on the same run:

    p256         a P-256 CSR to the default label: ECDSA verify, ECDSA P-256 signing
    ml-dsa-65    an ML-DSA-65 CSR to label pq: ML-DSA-65 verify, ML-DSA-65 signing
    p256-on-pq   a P-256 CSR to label pq: ECDSA verify, ML-DSA-65 signing

once per TLS back end given ([tls] backend; pyopenssl needs the pyOpenSSL package).
Prints a Markdown table and a JSON line. The machine is shared: keep runs short, and
compare cells of the same run only.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, mldsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serverkeygen import EST, KIPUKA, build_loadgen, estload, pem, serve  # noqa: E402

CELLS = [("p256", "", "ec"), ("ml-dsa-65", "pq", "ml-dsa-65"), ("p256-on-pq", "pq", "ec")]


def log(msg: str) -> None:
    print(f"[pq bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def start(root: Path, backend: str) -> tuple[subprocess.Popen, int, Path]:
    d = root / f"server-{backend}"
    subprocess.run([*KIPUKA, "init", str(d), "--pq", "--admin-listen", "", "--revocation-listen", ""], check=True,
                   capture_output=True)
    config = d / "kipuka.toml"
    text = config.read_text()
    if backend != "stdlib":
        text = text.replace('min_version = "1.2"', f'min_version = "1.2"\nbackend = "{backend}"', 1)
    # the same EC devices (certificates of the default CA) enroll on label pq too: an explicit opt-in
    text = text.replace('[labels.pq]\nca = "pq"\n', '[labels.pq]\nca = "pq"\nmtls_enroll_cas = ["default"]\n', 1)
    config.write_text(text)
    proc, port = serve(config, root / f"serve-{backend}.log")
    return proc, port, d


def identities(port: int, d: Path, out: Path, count: int) -> dict[str, Path]:
    """`count` EC devices; one manifest per cell, each line the device's certificate, key and CSR body."""
    otp = subprocess.run([*KIPUKA, "otp", "create", "-c", str(d / "kipuka.toml"), "bench", "--uses", "1000"],
                         check=True, capture_output=True, text=True).stdout.strip()
    base = f"https://localhost:{port}{EST}"
    chain = pkcs7.load_der_pkcs7_certificates(base64.b64decode(requests.get(base + "/cacerts", verify=False).content))
    (out / "ca.pem").write_bytes(b"".join(pem(c) for c in chain))

    def csr_body(key, name: x509.Name) -> bytes:
        csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(
            key, None if isinstance(key, mldsa.MLDSA65PrivateKey) else hashes.SHA256())
        return base64.encodebytes(csr.public_bytes(serialization.Encoding.DER))

    def one(i: int) -> dict[str, str]:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"bench.d{i:03d}.example.com")])
        r = requests.post(base + "/simpleenroll", data=csr_body(key, name), auth=("bench", otp),
                          verify=str(out / "ca.pem"), headers={"Content-Type": "application/pkcs10"}, timeout=30)
        r.raise_for_status()
        crt, k = out / f"{i}.crt", out / f"{i}.key"
        crt.write_bytes(pem(pkcs7.load_der_pkcs7_certificates(base64.b64decode(r.content))[0]))
        k.write_bytes(pem(key))
        lines = {}
        for cell, _, kind in CELLS:
            body = out / f"{i}-{cell}.csr.b64"
            body.write_bytes(csr_body(key if kind == "ec" else mldsa.MLDSA65PrivateKey.generate(), name))
            lines[cell] = f"{crt} {k} {body}"
        return lines

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        rows = list(pool.map(one, range(count)))
    manifests = {}
    for cell, label, _ in CELLS:
        manifests[cell] = out / f"manifest-{cell}.txt"
        manifests[cell].write_text("\n".join(r[cell] for r in rows) + "\n")
        crt, k, b = rows[0][cell].split()  # one request from Python first: fail early with a reason
        r = requests.post(f"{base}/{label + '/' if label else ''}simpleenroll", data=Path(b).read_bytes(),
                          cert=(crt, k), verify=str(out / "ca.pem"), headers={"Content-Type": "application/pkcs10"},
                          timeout=30)
        if r.status_code != 200:
            raise SystemExit(f"{cell}: check request failed: {r.status_code} {r.text[:300]}")
    return manifests


def primitives(rounds: int = 300) -> dict[str, dict[str, float]]:
    """Microseconds per signature and per verification, in this process (one core), for the table."""
    out = {}
    data = os.urandom(600)  # about a tbsCertificate
    keys = {"P-256": ec.generate_private_key(ec.SECP256R1()), "ML-DSA-44": mldsa.MLDSA44PrivateKey.generate(),
            "ML-DSA-65": mldsa.MLDSA65PrivateKey.generate(), "ML-DSA-87": mldsa.MLDSA87PrivateKey.generate()}
    for name, key in keys.items():
        sign = (lambda: key.sign(data, ec.ECDSA(hashes.SHA256()))) if name == "P-256" else (lambda: key.sign(data))
        sig = sign()
        pub = key.public_key()
        verify = (lambda: pub.verify(sig, data, ec.ECDSA(hashes.SHA256()))) if name == "P-256" \
            else (lambda: pub.verify(sig, data))
        timings = {}
        for what, call in (("sign_us", sign), ("verify_us", verify)):
            t = time.perf_counter()
            for _ in range(rounds):
                call()
            timings[what] = (time.perf_counter() - t) / rounds * 1e6
        out[name] = timings
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=3.0, help="measured seconds per cell")
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--backends", default="stdlib", help="comma-separated [tls] backends (stdlib, pyopenssl)")
    args = ap.parse_args()
    build_loadgen()
    results: dict[str, dict[str, dict]] = {}
    with tempfile.TemporaryDirectory(prefix="kipuka-pq-bench-") as tmp:
        root = Path(tmp)
        for backend in args.backends.split(","):
            proc, port, d = start(root, backend)
            try:
                ids = root / f"ids-{backend}"
                ids.mkdir()
                manifests = identities(port, d, ids, 8)
                results[backend] = {}
                for cell, label, _ in CELLS:
                    log(f"{backend} / {cell}: {args.clients} clients, {args.duration} s")
                    path = f"{EST}/{label + '/' if label else ''}simpleenroll"
                    results[backend][cell] = estload(port, manifests[cell], path, args.clients, args.duration,
                                                     args.warmup)
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    print(f"\nkipuka ML-DSA benchmark, {platform.node()}, {os.cpu_count()} cores, 1 worker, keep-alive mTLS, "
          f"{args.clients} clients, {args.duration:g} s per cell\n")
    print("| TLS back end | cell | enrollments/s | p50 ms | p99 ms | errors |")
    print("|---|---|---:|---:|---:|---:|")
    for backend, cells in results.items():
        for cell, r in cells.items():
            errors = int(r.get("errors", 0))
            print(f"| {backend} | {cell} | {r.get('rps', 0):.0f} | {r.get('p50_ms', 0):.1f} | "
                  f"{r.get('p99_ms', 0):.1f} | {errors} |")
    prims = primitives()
    print("\n| algorithm | sign µs | verify µs |\n|---|---:|---:|")
    for name, t in prims.items():
        print(f"| {name} | {t['sign_us']:.0f} | {t['verify_us']:.0f} |")
    print("RESULT " + json.dumps({"cells": results, "primitives": prims, "loadavg": os.getloadavg()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

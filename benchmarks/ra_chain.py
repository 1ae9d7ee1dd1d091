"""Enrollments/s through the RA-mode chain (client -> kipuka RA -> kipuka CA) against direct enrollment.

    .venv/bin/python benchmarks/ra_chain.py [--duration 10] [--clients 8,32] [--workers 1]

On 127.0.0.1, reusing run.py's deployment, device enrollment and C load generator:
  1. an upstream kipuka (the CA, `kipuka init`), trusting an RA certificate with
     id-kp-cmcRA through `ra_anchors`;
  2. a kipuka RA whose unlabeled path is a `type = "est"` CA pointing at the upstream
     (so run.py's device enrollment works unchanged), devices re-presenting
     upstream-issued certificates allowed by its [tls] client_ca;
  3. --devices devices enrolled at each (OTPs), then estload drives simpleenroll over
     mTLS, keep-alive: straight at the upstream ("direct"), then at the RA ("chain");
  4. server CPU per enrollment of each process, and the certificate rows of both
     stores (every chained enrollment is recorded at the RA and at the upstream).

Prints a markdown table; results also go to benchmarks/results/ra-chain-<time>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import run  # noqa: E402  (benchmarks/run.py)

CMC_RA = x509.ObjectIdentifier("1.3.6.1.5.5.7.3.28")


def _pem(certs: list[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def ra_identity(root: Path) -> tuple[Path, Path, Path]:
    """An RA operator CA and an RA certificate (id-kp-cmcRA, clientAuth) it issued: (CA, cert, key)."""
    now = dt.datetime.now(dt.timezone.utc)
    ca_key, ra_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench RA operator CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
          .not_valid_after(now + dt.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    ra = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench RA")]))
          .issuer_name(ca_name).public_key(ra_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
          .add_extension(x509.ExtendedKeyUsage([CMC_RA, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
          .sign(ca_key, hashes.SHA256()))
    paths = root / "ra-ca.pem", root / "ra.pem", root / "ra.key"
    paths[0].write_bytes(_pem([ca]))
    paths[1].write_bytes(_pem([ra]))
    paths[2].write_bytes(ra_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
    return paths


def deploy(root: Path, workers: int, connections: int) -> tuple[run.Server, run.Server]:
    ra_ca, ra_cert, ra_key = ra_identity(root)
    (root / "up").mkdir()
    (root / "ra").mkdir()
    up = run.Server(root / "up", workers)
    text = up.config.read_text().replace("csrattrs = true", f'csrattrs = true\nra_anchors = ["{ra_ca}"]', 1)
    up.config.write_text(text)
    with open(up.dir / "tls" / "client-ca.pem", "ab") as fh:
        fh.write(ra_ca.read_bytes())
    up.start()
    ra = run.Server(root / "ra", workers)
    text = ra.config.read_text().replace('default_ca = "default"', 'default_ca = "upstream"', 1)
    text += (f'\n[ca.upstream]\ntype = "est"\nurl = "https://localhost:{up.port}"\n'
             f'ca_bundle = "{up.dir / "ca" / "root.pem"}"\nra_cert = "{ra_cert}"\nra_key = "{ra_key}"\n'
             f'connections = {connections}\n')
    ra.config.write_text(text)
    with open(ra.dir / "tls" / "client-ca.pem", "ab") as fh:  # devices present upstream-issued certificates
        fh.write((up.dir / "ca" / "default.pem").read_bytes() + (up.dir / "ca" / "root.pem").read_bytes())
    ra.start()
    return up, ra


def load(server: run.Server, manifest: Path, ca_file: Path, clients: int, duration: float, warmup: float,
         watch: list[run.Server]) -> dict:
    """One estload run (keep-alive mTLS simpleenroll) and the CPU each watched server spent on it."""
    cmd = [str(run.LOADGEN), "-a", "127.0.0.1", "-p", str(server.port), "-i", str(manifest), "-m", "keepalive",
           "-c", str(clients), "-t", "1", "-d", str(duration), "-w", str(warmup)]
    pids = {id(s): s.workers() for s in watch}
    cpu0, t0 = {k: run.cpu_seconds(v) for k, v in pids.items()}, time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + warmup + 120)
    cpu1, t1 = {k: run.cpu_seconds(v) for k, v in pids.items()}, time.monotonic()
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        sys.exit(f"estload failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    result = json.loads(line[len("RESULT "):])
    total = max(1, result["total_responses"])  # warm-up included in the CPU window
    result["cpu_ms_per_req"] = {s.dir.parent.name: round(1000 * (cpu1[id(s)] - cpu0[id(s)]) / total, 2)
                                for s in watch}
    result["wall_s"] = round(t1 - t0, 1)
    return result


def cert_rows(server: run.Server) -> int:
    with sqlite3.connect(server.dir / "kipuka.db") as db:
        return db.execute("SELECT count(*) FROM certificates").fetchone()[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--warmup", type=float, default=2)
    ap.add_argument("--clients", default="8,32", help="comma-separated client counts")
    ap.add_argument("--workers", type=int, default=1, help="[server] workers of each server")
    ap.add_argument("--devices", type=int, default=32)
    ap.add_argument("--connections", type=int, default=32, help="RA -> upstream keep-alive connections per worker")
    ap.add_argument("--quiet-wait", type=float, default=0,
                    help="before each cell, wait up to this many seconds for the machine to be idle (shared boxes)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary deployment")
    args = ap.parse_args()
    run.build_loadgen()
    root = Path(tempfile.mkdtemp(prefix="kipuka-ra-chain-"))
    up = ra = None
    rows: list[dict] = []
    try:
        up, ra = deploy(root, args.workers, args.connections)
        run.log(f"upstream CA on :{up.port}, RA on :{ra.port}, {args.workers} worker(s) each; state in {root}")
        direct = run.enroll_devices(up, root / "devices-direct", args.devices, up.dir / "ca" / "root.pem")
        chained = run.enroll_devices(ra, root / "devices-chain", args.devices, ra.dir / "ca" / "root.pem")
        for clients in (int(c) for c in args.clients.split(",")):
            for case, target, manifest, ca_file in (("direct", up, direct, up.dir / "ca" / "root.pem"),
                                                    ("chain", ra, chained, ra.dir / "ca" / "root.pem")):
                if args.quiet_wait:
                    waited, busy = run.wait_quiet(args.quiet_wait)
                    run.log(f"waited {waited:.0f} s for a quiet machine ({busy:.0f}% busy)")
                run.log(f"{case}, {clients} clients, {args.duration:g} s")
                r = load(target, manifest, ca_file, clients, args.duration, args.warmup, [up, ra])
                rows.append({"case": case, "clients": clients, "req_s": round(r["rps"], 1), "p50_ms": r["p50_ms"],
                             "p99_ms": r["p99_ms"], "errors": r.get("errors", 0), "cpu_ms": r["cpu_ms_per_req"],
                             "responses": r["total_responses"], "ok_total": r["total_ok"]})
                print(f"  {rows[-1]}", flush=True)
    finally:
        for s in (ra, up):
            if s is not None:
                s.stop()
    counts = {"ra": cert_rows(ra), "upstream": cert_rows(up)} if ra and up else {}
    info = run.machine_info()
    out = HERE / "results" / f"ra-chain-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "machine": info, "rows": rows, "cert_rows": counts}, indent=2))
    print(f"\nkipuka {info['git']}, {info['nproc']} CPUs ({info['cpu']}), Python {info['python']}, "
          f"{args.workers} worker(s) per server, keep-alive mTLS, {args.duration:g} s per cell")
    print("\n| path | clients | enrollments/s | p50 ms | p99 ms | errors | CPU ms/enrollment RA | upstream |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['case']} | {r['clients']} | {r['req_s']} | {r['p50_ms']} | {r['p99_ms']} | {r['errors']} | "
              f"{r['cpu_ms'].get('ra', 0) if r['case'] == 'chain' else '–'} | {r['cpu_ms'].get('up', 0)} |")
    for c in sorted({r["clients"] for r in rows}):
        d = next(r for r in rows if r["clients"] == c and r["case"] == "direct")
        ch = next(r for r in rows if r["clients"] == c and r["case"] == "chain")
        print(f"\n{c} clients: the chain reaches {100 * ch['req_s'] / max(d['req_s'], 1e-9):.0f}% of direct")
    if counts:
        # Every 200 is one certificate; each device enrollment (and run.py's one mTLS check) is one more.
        direct_ok = sum(r["ok_total"] for r in rows if r["case"] == "direct") + args.devices + 1
        chain_ok = sum(r["ok_total"] for r in rows if r["case"] == "chain") + args.devices + 1
        ok = counts["ra"] == chain_ok and counts["upstream"] == direct_ok + chain_ok
        print(f"certificate rows: RA {counts['ra']} (expected {chain_ok}), upstream {counts['upstream']} "
              f"(expected {direct_ok} direct + {chain_ok} through the RA): {'consistent' if ok else 'MISMATCH'}")
    print(f"results: {out}")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

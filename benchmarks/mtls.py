"""The mTLS mode: devices re-enroll with the certificate kipuka gave them, driven by estload.

benchmarks/loadgen/estload.c (C, OpenSSL, epoll) keeps `clients` connections busy,
either keep-alive or with a full mutual-TLS handshake per request, and prints a
RESULT line of JSON that is the result dict every mode reports.
"""

from __future__ import annotations

import base64
import concurrent.futures
import http.client
import json
import os
import ssl
import subprocess
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID

from deploy import EST, Deployment, Node, backend_pids
from machine import HERE, Meter, combine, log

LOADGEN_SRC = HERE / "loadgen" / "estload.c"
LOADGEN = HERE / "loadgen" / "estload"


def build_loadgen() -> None:
    if LOADGEN.exists() and LOADGEN.stat().st_mtime >= LOADGEN_SRC.stat().st_mtime:
        return
    cc = os.environ.get("CC", "gcc")
    cmd = [cc, "-O2", "-Wall", "-o", str(LOADGEN), str(LOADGEN_SRC), "-lssl", "-lcrypto", "-lpthread"]
    log("compiling " + " ".join(cmd))
    try:
        subprocess.run(cmd, check=True)
    except (FileNotFoundError, subprocess.CalledProcessError):
        sys.exit("cannot compile the load generator: install gcc and libssl-dev (apt-get install gcc libssl-dev)")


# --- devices ----------------------------------------------------------------------------

def b64_body(der: bytes) -> bytes:
    text = base64.b64encode(der)
    return b"\n".join(text[i:i + 64] for i in range(0, len(text), 64)) + b"\n"


def csr_for(cn: str, key: ec.EllipticCurvePrivateKey) -> bytes:
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.DER)


def https(server: Deployment, ca_file: Path, cert: tuple[str, str] | None = None) -> http.client.HTTPSConnection:
    ctx = ssl.create_default_context(cafile=str(ca_file))
    if cert:
        ctx.load_cert_chain(*cert)
    return http.client.HTTPSConnection("localhost", server.port, context=ctx, timeout=30)


def enroll_devices(server: Deployment, out: Path, count: int, ca_file: Path, label: str | None = None) -> Path:
    """Enroll `count` devices with one OTP each (made in bulk through the admin API); write their
    identities and the manifest for estload: `CERT KEY BODY` per line, BODY a CSR with exactly the
    certificate's names, signed with the device key (a kipuka certificate may only ask for its own names)."""
    out.mkdir(parents=True, exist_ok=True)
    entities = [f"bench-{i:04d}" for i in range(count)]
    log(f"creating {count} OTPs through the admin API and enrolling {count} devices")
    otps = {o["entity"]: o["otp"] for o in server.create_otps(entities, label=label)}
    path = f"{EST}/{label}/simpleenroll" if label else f"{EST}/simpleenroll"

    def enroll(entity: str) -> str:
        key = ec.generate_private_key(ec.SECP256R1())
        cn = f"{entity}.example.com"
        conn = https(server, ca_file)
        auth = base64.b64encode(f"{entity}:{otps[entity]}".encode()).decode()
        conn.request("POST", path, body=b64_body(csr_for(cn, key)),
                     headers={"Content-Type": "application/pkcs10", "Authorization": f"Basic {auth}"})
        r = conn.getresponse()
        body = r.read()
        conn.close()
        if r.status != 200:
            raise RuntimeError(f"OTP enrollment of {entity} failed: {r.status} {body[:200]!r}")
        cert = pkcs7.load_der_pkcs7_certificates(base64.b64decode(body))[0]
        crt, k, csr = out / f"{entity}.crt", out / f"{entity}.key", out / f"{entity}.csr"
        crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        k.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
        csr.write_bytes(b64_body(csr_for(cn, key)))
        return f"{crt} {k} {csr}"

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        lines = list(pool.map(enroll, entities))
    manifest = out / "manifest.txt"
    manifest.write_text("\n".join(lines) + "\n")

    # One mTLS enrollment from Python, to fail early with a readable reason.
    crt, k, csr = lines[0].split()
    conn = https(server, ca_file, cert=(crt, k))
    conn.request("POST", path, body=Path(csr).read_bytes(), headers={"Content-Type": "application/pkcs10"})
    r = conn.getresponse()
    body = r.read()
    conn.close()
    if r.status != 200:
        sys.exit(f"mTLS simpleenroll check failed: {r.status} {body[:300]!r}")
    return manifest


# --- load -------------------------------------------------------------------------------

def estload_cmd(node: Node, manifest: Path, ca_file: Path, mode: str, clients: int, duration: float, warmup: float,
                threads: int = 1, verify: bool = False, count: int = 0, label: str | None = None) -> list[str]:
    cmd = [str(LOADGEN), "-a", "127.0.0.1", "-p", str(node.port), "-i", str(manifest), "-m", mode,
           "-c", str(clients), "-t", str(threads)]
    cmd += ["-n", str(count)] if count else ["-d", str(duration), "-w", str(warmup)]
    if verify:
        cmd += ["-C", str(ca_file)]
    if label:
        cmd += ["-u", f"{EST}/{label}/simpleenroll"]
    return cmd


def parse_estload(stdout: str) -> dict | None:
    line = next((x for x in stdout.splitlines() if x.startswith("RESULT ")), None)
    return json.loads(line[len("RESULT "):]) if line else None


def run_estload(dep: Deployment, manifest: Path, mode: str, clients: int, duration: float, warmup: float, out: Path,
                threads: int = 1, verify: bool = False, count: int = 0, label: str | None = None) -> dict:
    """estload against every node at once (clients split evenly), with the CPU of everything measured."""
    per_node = max(1, clients // len(dep.nodes))
    cmds = [estload_cmd(n, manifest, dep.ca_file, mode, per_node, duration, warmup, threads, verify, count, label)
            for n in dep.nodes]
    meter = Meter(dep.workers, lambda: backend_pids(dep.database_url))
    meter.start()
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for c in cmds]
    outputs = [p.communicate(timeout=duration + warmup + 300)[0] for p in procs]
    parsed = [parse_estload(o) for o in outputs]
    out.write_text("\n\n".join(" ".join(c) + "\n\n" + o for c, o in zip(cmds, outputs)))
    if any(p.returncode != 0 for p in procs) or None in parsed:
        sys.exit("estload failed:\n" + "\n".join(outputs)[-3000:])
    result = combine(parsed)  # type: ignore[arg-type]
    # the CPU window spans the warm-up too: per request over every response
    result.update(meter.stop(result["total_responses"]))
    for o in outputs:
        print("\n".join(x for x in o.splitlines() if not x.startswith("RESULT ")), flush=True)
    return result

"""PKCS#11 (SoftHSM2) CA against the software-key CA: issuances and enrollments per second.

    .venv/bin/python benchmarks/hsm.py [--n 2000] [--e2e 600] [--clients 8]

1. In process: CertificateAuthority.issue() of a LocalCA (software P-256 key) and of a
   PKCS11CA (P-256 key generated in a SoftHSM2 token, `sessions` = 4), N times one after
   the other and N at once (asyncio.gather), same request template.
2. End to end: a `kipuka init --hsm` deployment (one worker), `--clients` threads with
   keep-alive connections posting simpleenroll with bulk-created OTPs, to the unlabeled
   path (software CA) and to /iot-fleet (the token's CA).

Everything lives in a temporary directory with its own SoftHSM2 token directory.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

PIN = "bench-pin-1234"


def softhsm_setup(root: Path) -> None:
    tokens = root / "tokens"
    tokens.mkdir(parents=True)
    conf = root / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    os.environ["KIPUKA_HSM_PIN"] = PIN
    for label in ("bench", "kipuka"):
        subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", label, "--pin", PIN, "--so-pin", "5678"],
                       check=True, capture_output=True)


def in_process(root: Path, n: int) -> dict[str, float]:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    from kipuka.ca.base import IssueRequest
    from kipuka.ca.local import LocalCA
    from kipuka.ca.registry import build_ca
    from kipuka.ca.setup import make_issuing, make_root
    from kipuka.cli.hsm import init_hsm_ca
    from kipuka.config import CAConfig

    root_key = ec.generate_private_key(ec.SECP256R1())
    root_cert = make_root(root_key, "bench Root", "bench")
    (root / "root.pem").write_bytes(root_cert.public_bytes(serialization.Encoding.PEM))
    (root / "root.key").write_bytes(root_key.private_bytes(serialization.Encoding.PEM,
                                                           serialization.PrivateFormat.PKCS8,
                                                           serialization.NoEncryption()))
    soft_key = ec.generate_private_key(ec.SECP256R1())
    local = LocalCA("soft", soft_key, [make_issuing(soft_key, "bench soft CA", "bench", root_cert, root_key), root_cert])
    init_hsm_ca(ca_id="hsm", module=_module(), token_label="bench", slot=None, pin_env=None, pin_file=None,
                key_label="bench-ca", key_type="ec-p256", common_name="bench HSM CA", org="bench",
                issuer_cert=root / "root.pem", issuer_key=root / "root.key", cert_out=root / "hsm.pem", base=root)
    hsm = build_ca(CAConfig(id="hsm", type="pkcs11", base=root, options={
        "token_label": "bench", "key_label": "bench-ca", "cert": "hsm.pem", "chain": "root.pem",
        "pin_env": "KIPUKA_HSM_PIN", "sessions": 4, "session_timeout": "60s"}))
    leaf = ec.generate_private_key(ec.SECP256R1())
    req = IssueRequest(
        subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "device-001.example.com")]),
        public_key=leaf.public_key(),
        san=x509.SubjectAlternativeName([x509.DNSName("device-001.example.com")]),
        ekus=(ExtendedKeyUsageOID.CLIENT_AUTH,), validity=dt.timedelta(days=90),
        crl_urls=("http://localhost:9080/crl/hsm.crl",), ocsp_urls=("http://localhost:9080/ocsp",))
    out: dict[str, float] = {}

    async def run() -> None:
        for ca in (local, hsm):  # warm up
            for _ in range(50):
                await ca.issue(req)
        for name, ca in (("software", local), ("pkcs11", hsm)):
            best_seq = best_par = 0.0
            for _ in range(3):  # best of three: the machine is shared
                t = time.perf_counter()
                for _ in range(n):
                    await ca.issue(req)
                best_seq = max(best_seq, n / (time.perf_counter() - t))
                t = time.perf_counter()
                await asyncio.gather(*(ca.issue(req) for _ in range(n)))
                best_par = max(best_par, n / (time.perf_counter() - t))
            out[f"{name} sequential"] = best_seq
            out[f"{name} concurrent"] = best_par

    asyncio.run(run())
    return out


def _module() -> str:
    from kipuka.ca.pkcs11 import MODULE_CANDIDATES
    return next(m for m in MODULE_CANDIDATES if os.path.exists(m))


def end_to_end(root: Path, total: int, clients: int) -> dict[str, float]:
    import requests
    from tests.helpers import admin_call, admin_token, b64, make_csr, make_server

    server = make_server(root, init_args=("--hsm", "--hsm-token", "kipuka")).start()
    out: dict[str, float] = {}
    try:
        token = admin_token(server)
        bundle = server.ca_bundle
        for name, label in (("software", None), ("pkcs11", "iot-fleet"), ("software", None), ("pkcs11", "iot-fleet")):
            items = [{"entity": f"bench-{i}-{time.monotonic_ns()}", "label": label} for i in range(total)]
            created = admin_call(server, "POST", "/admin/otp", token, json_body={"items": items}).json()["items"]
            work: queue.Queue = queue.Queue()
            for c in created:
                work.put((c["entity"], c["otp"], b64(make_csr(f"{c['entity']}.example.com")[1])))
            codes: list[int] = []

            def client() -> None:
                s = requests.Session()
                while True:
                    try:
                        entity, otp, body = work.get_nowait()
                    except queue.Empty:
                        return
                    r = s.post(server.url("simpleenroll", label), data=body, auth=(entity, otp), verify=bundle,
                               headers={"Content-Type": "application/pkcs10"}, timeout=60)
                    codes.append(r.status_code)

            threads = [threading.Thread(target=client) for _ in range(clients)]
            t = time.perf_counter()
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            rate = total / (time.perf_counter() - t)
            assert codes.count(200) == total, sorted(set(codes))
            out[f"{name} end-to-end"] = max(out.get(f"{name} end-to-end", 0.0), rate)
    finally:
        server.stop()
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2000, help="issue() calls per measurement")
    p.add_argument("--e2e", type=int, default=600, help="enrollments per end-to-end measurement (0: skip)")
    p.add_argument("--clients", type=int, default=8)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="kipuka-hsm-bench-") as tmp:
        root = Path(tmp)
        softhsm_setup(root)
        results = in_process(root, args.n)
        if args.e2e:
            results.update(end_to_end(root, args.e2e, args.clients))
    print(f"{'measurement':<28} {'per second':>10}")
    for name, rate in results.items():
        print(f"{name:<28} {rate:>10.0f}")
    for what in ("sequential", "concurrent", "end-to-end"):
        if f"pkcs11 {what}" in results:
            print(f"pkcs11 / software, {what}: {results[f'pkcs11 {what}'] / results[f'software {what}']:.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Building one end-entity certificate: the spliced DER template against cryptography's CertificateBuilder.

    .venv/bin/python benchmarks/certificate_build.py [-n 3000] [--rounds 3]

For each CA key type, the same IssueRequest (CN, two SANs, clientAuth, CRL and OCSP URLs) is
signed -n times by ca/profile.reference_certificate (CertificateBuilder) and by
ca/profile.build_certificate (ca/spliced.py), interleaved over --rounds; the figures are µs per
certificate (median of the rounds), and the signature alone for scale.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: E402

from kipuka.ca.base import IssueRequest  # noqa: E402
from kipuka.ca.profile import build_certificate, reference_certificate  # noqa: E402
from kipuka.ca.signing import signature_of, signing_hash  # noqa: E402
from tests.helpers import new_key  # noqa: E402

NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def issuer(kind: str):
    key = new_key(kind)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"bench CA {kind}")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(NOW - dt.timedelta(days=1))
            .not_valid_after(NOW + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, signing_hash(key)))
    return cert, key


def timed(fn, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    req = IssueRequest(
        subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dev-1.example.com")]),
        public_key=ec.generate_private_key(ec.SECP256R1()).public_key(),
        san=x509.SubjectAlternativeName([x509.DNSName("dev-1.example.com"),
                                         x509.IPAddress(ipaddress.ip_address("192.0.2.7"))]),
        ekus=(ExtendedKeyUsageOID.CLIENT_AUTH,), validity=dt.timedelta(days=90),
        crl_urls=("http://pki.example.com/crl",), ocsp_urls=("http://pki.example.com/ocsp",))
    print(f"Python {sys.version.split()[0]}, {args.n} certificates per figure, median of {args.rounds} rounds (µs)")
    print("| CA key | CertificateBuilder | spliced | ratio | the signature alone |")
    print("|---|---:|---:|---:|---:|")
    for kind in ("ec-p256", "ec-p384", "rsa2048", "ml-dsa-65"):
        cert, key = issuer(kind)
        n = args.n if not kind.startswith(("rsa", "ml-dsa")) else max(args.n // 5, 100)
        serial = x509.random_serial_number()
        build_certificate(req, cert, key, serial, NOW)  # the template, once
        tbs = reference_certificate(req, cert, key, serial, NOW).tbs_certificate_bytes
        builder, splice, sign = [], [], []
        for _ in range(args.rounds):
            builder.append(timed(lambda: reference_certificate(req, cert, key, serial, NOW), n))
            splice.append(timed(lambda: build_certificate(req, cert, key, serial, NOW), n))
            sign.append(timed(lambda: signature_of(key, tbs), n))
        b, s = statistics.median(builder), statistics.median(splice)
        print(f"| {kind} | {b:,.0f} | {s:,.0f} | {s / b:.2f} | {statistics.median(sign):,.0f} |")


if __name__ == "__main__":
    main()

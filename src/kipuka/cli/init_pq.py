"""`kipuka init DIR --pq`: post-quantum demo labels (ML-DSA, FIPS 204) beside the usual ones.

Two labels, so that a reader can try both migrations:

    pq        an ML-DSA-65 root (ca/pq-root.pem) and an ML-DSA-65 issuing CA (ca/pq.pem): a
              chain with no classical signature in it. Devices may enroll ML-DSA keys (44, 65,
              87) or EC keys: EC device keys under an ML-DSA CA.
    pq-mixed  an ML-DSA-65 issuing CA (ca/pq-mixed.pem) under the deployment's own root (ECDSA
              unless --key-type says otherwise): relying parties that pin the classical root
              keep it, and what they verify below it is post-quantum.

The TLS server certificate stays ECDSA (issued by the default CA): TLS clients linked to
OpenSSL < 3.5 could not verify an ML-DSA one. docs/pq.md says which TLS stack does what.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from kipuka.ca.setup import make_issuing, make_root
from kipuka.keys import generate_private_key

PQ_KEY_TYPE = "ml-dsa-65"


@dataclass(frozen=True)
class PqCAs:
    """The certificates `--pq` made (for client-ca.pem) and the configuration text to append."""

    anchors: tuple[x509.Certificate, ...]
    config: str


def make_pq_cas(target: Path, org: str, root: x509.Certificate, root_key: CertificateIssuerPrivateKeyTypes,
                write_cert: Callable[[Path, list[x509.Certificate]], None],
                write_key: Callable[[Path, object], None]) -> PqCAs:
    """Write the PQ roots, issuing CAs and keys under `target`; `root` is the deployment's own root."""
    pq_root_key = generate_private_key(PQ_KEY_TYPE)
    pq_root = make_root(pq_root_key, f"{org} PQ Root CA (ML-DSA-65)", org)  # type: ignore[arg-type]
    write_key(target / "private" / "pq-root.key", pq_root_key)
    write_cert(target / "ca" / "pq-root.pem", [pq_root])
    pq_key = generate_private_key(PQ_KEY_TYPE)
    pq_cert = make_issuing(pq_key, f"{org} pq Issuing CA (ML-DSA-65)", org, pq_root, pq_root_key)  # type: ignore[arg-type]
    write_key(target / "private" / "pq.key", pq_key)
    write_cert(target / "ca" / "pq.pem", [pq_cert])
    mixed_key = generate_private_key(PQ_KEY_TYPE)
    mixed_cert = make_issuing(mixed_key, f"{org} pq-mixed Issuing CA (ML-DSA-65)", org, root, root_key)  # type: ignore[arg-type]
    write_key(target / "private" / "pq-mixed.key", mixed_key)
    write_cert(target / "ca" / "pq-mixed.pem", [mixed_cert])
    return PqCAs((pq_cert, pq_root, mixed_cert), PQ_CONFIG)


PQ_CONFIG = """
# --- post-quantum labels (kipuka init --pq; docs/pq.md) ---------------------------------
# ML-DSA (FIPS 204) CA keys sign certificates, CRLs and OCSP responses (RFC 9881).
[ca.pq]
type = "local"
cert = "ca/pq.pem"
chain = "ca/pq-root.pem"        # an ML-DSA-65 root
key = "private/pq.key"

[ca.pq-mixed]
type = "local"
cert = "ca/pq-mixed.pem"
chain = "ca/root.pem"           # the deployment's classical root above an ML-DSA-65 issuing CA
key = "private/pq-mixed.key"

[labels.pq]
ca = "pq"
key_types = ["ml-dsa-65", "ml-dsa-44", "ml-dsa-87", "ec-p256", "ec-p384"]
validity_days = 90
fullcmc = true                  # ML-DSA devices renew by a /fullcmc request signed with their key (docs/pq.md)

[labels.pq-mixed]
ca = "pq-mixed"
key_types = ["ml-dsa-65", "ml-dsa-44", "ml-dsa-87", "ec-p256", "ec-p384"]
validity_days = 90
fullcmc = true                  # ML-DSA devices renew by a /fullcmc request signed with their key (docs/pq.md)
"""

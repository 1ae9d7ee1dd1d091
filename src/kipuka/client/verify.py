"""Checking what the server returns: fingerprints, issuer signatures, chains.

Only signatures and names are checked (`verify_directly_issued_by`), never
dates or EKUs: a client must be able to take a certificate even when its
clock is off, and the server's profile is the server's business. What the
client must be sure of is that the certificate was signed by the CA it trusts
and carries the key it asked for.
"""

from __future__ import annotations

import hashlib
import re
from typing import Iterable, Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from kipuka.client.errors import BootstrapError, InvalidResponse

MAX_CHAIN = 10


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the certificate's DER, lower-case hex without separators."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def normalise_fingerprint(value: str) -> str:
    """Accept "AB:CD:..", "abcd..", "sha256:..", "SHA256 Fingerprint=AB:.." (openssl x509 -fingerprint)."""
    text = value.strip()
    if "=" in text:
        text = text.split("=", 1)[1]
    text = re.sub(r"^(sha-?256)\s*:?\s*", "", text, flags=re.I)
    hexed = re.sub(r"[\s:\-]", "", text).lower()
    if not re.fullmatch(r"[0-9a-f]{64}", hexed):
        raise BootstrapError(f"CA fingerprint {value.strip()[:80]!r} is not a SHA-256 in hex (64 hex digits)")
    return hexed


def is_issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
        return True
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False


def is_self_signed(cert: x509.Certificate) -> bool:
    return cert.issuer == cert.subject and is_issued_by(cert, cert)


def same_public_key(a: object, b: object) -> bool:
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return a.public_bytes(*fmt) == b.public_bytes(*fmt)  # type: ignore[attr-defined]


def find_issuer(cert: x509.Certificate, candidates: Iterable[x509.Certificate]) -> x509.Certificate | None:
    for cand in candidates:
        if cand is not cert and cand.subject == cert.issuer and is_issued_by(cert, cand):
            return cand
    return None


def build_chain(leaf: x509.Certificate, candidates: Sequence[x509.Certificate]) -> list[x509.Certificate]:
    """[leaf, issuer, ... ] as far as `candidates` go, every link's signature verified.

    Raises InvalidResponse when not even the leaf's issuer is among the candidates.
    """
    chain = [leaf]
    pool = [c for c in candidates if c != leaf]
    while len(chain) < MAX_CHAIN:
        current = chain[-1]
        if current.issuer == current.subject and is_issued_by(current, current):
            break  # reached a root
        issuer = find_issuer(current, [c for c in pool if c not in chain])
        if issuer is None:
            break
        chain.append(issuer)
    if len(chain) == 1 and not is_self_signed(leaf):
        raise InvalidResponse(
            f"certificate {leaf.subject.rfc4514_string()!r} is not signed by any known CA certificate "
            f"(issuer {leaf.issuer.rfc4514_string()!r} not found in /cacerts or the trust anchors)")
    return chain


def bootstrap_set(certs: Sequence[x509.Certificate], expected: str) -> list[x509.Certificate]:
    """The certificates from an unauthenticated /cacerts that the fingerprint vouches for.

    The certificate whose SHA-256 matches must be a CA certificate; the accepted
    set is every returned certificate joined to it by verified signatures (its
    issuers up to the root, and certificates it or they issued, e.g. RFC 7030
    root rollover certificates). Anything else in the answer is dropped.
    """
    want = normalise_fingerprint(expected)
    matched = [c for c in certs if fingerprint(c) == want]
    if not matched:
        seen = ", ".join(f"{c.subject.rfc4514_string()} = {fingerprint(c)}" for c in certs)
        raise BootstrapError(f"no certificate in /cacerts has SHA-256 fingerprint {want}; "
                             f"the server sent: {seen or 'nothing'}")
    anchor = matched[0]
    try:
        bc = anchor.extensions.get_extension_for_class(x509.BasicConstraints).value
        is_ca = bc.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise BootstrapError(f"the certificate with fingerprint {want} ({anchor.subject.rfc4514_string()}) "
                             f"is not a CA certificate")
    accepted = [anchor]
    changed = True
    while changed:
        changed = False
        for cert in certs:
            if cert in accepted:
                continue
            if any(is_issued_by(cert, a) or is_issued_by(a, cert) for a in accepted):
                accepted.append(cert)
                changed = True
    return accepted

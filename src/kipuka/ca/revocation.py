"""Signing CRLs and OCSP responses with a software-held CA (or delegated responder) key.

Only signing lives here: which certificates are revoked, and when a CRL is
due, is decided by kipuka.ra.revocation.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509 import ocsp

from kipuka.ca.signing import signing_hash

RFC5280_REASON_NAMES = {
    "unspecified": x509.ReasonFlags.unspecified, "keyCompromise": x509.ReasonFlags.key_compromise,
    "cACompromise": x509.ReasonFlags.ca_compromise, "affiliationChanged": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded, "cessationOfOperation": x509.ReasonFlags.cessation_of_operation,
    "certificateHold": x509.ReasonFlags.certificate_hold, "privilegeWithdrawn": x509.ReasonFlags.privilege_withdrawn,
    "aACompromise": x509.ReasonFlags.aa_compromise, "removeFromCRL": x509.ReasonFlags.remove_from_crl,
}


@dataclass(frozen=True)
class RevokedEntry:
    serial: int
    revoked_at: dt.datetime
    reason: str  # an RFC 5280 name, e.g. "keyCompromise"


@dataclass(frozen=True)
class OcspAnswer:
    """What the RA found for one OCSP CertID."""

    issuer_name_hash: bytes
    issuer_key_hash: bytes
    hash_algorithm: hashes.HashAlgorithm
    serial: int
    status: str  # good | revoked | unknown
    revoked_at: dt.datetime | None = None
    reason: str | None = None


def build_crl(issuer: x509.Certificate, key: CertificateIssuerPrivateKeyTypes, entries: list[RevokedEntry],
              number: int, this_update: dt.datetime, next_update: dt.datetime) -> bytes:
    revoked = []
    for e in entries:
        builder = (x509.RevokedCertificateBuilder().serial_number(e.serial).revocation_date(e.revoked_at))
        reason = RFC5280_REASON_NAMES.get(e.reason, x509.ReasonFlags.unspecified)
        if reason is not x509.ReasonFlags.unspecified:
            builder = builder.add_extension(x509.CRLReason(reason), critical=False)
        revoked.append(builder.build())
    # All entries go to the constructor at once: add_revoked_certificate one by
    # one is quadratic in cryptography (100,000 entries: 25 s against < 1 s).
    crl = x509.CertificateRevocationListBuilder(
        issuer_name=issuer.subject, last_update=this_update, next_update=next_update,
        revoked_certificates=revoked,
    ).add_extension(x509.CRLNumber(number), critical=False).add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key()), critical=False,  # type: ignore[arg-type]
    ).sign(key, signing_hash(key))
    return crl.public_bytes(serialization.Encoding.DER)


def build_ocsp_response(answer: OcspAnswer, responder: x509.Certificate, key: CertificateIssuerPrivateKeyTypes,
                        issuer: x509.Certificate, this_update: dt.datetime, next_update: dt.datetime,
                        nonce: bytes | None) -> bytes:
    status = {"good": ocsp.OCSPCertStatus.GOOD, "revoked": ocsp.OCSPCertStatus.REVOKED,
              "unknown": ocsp.OCSPCertStatus.UNKNOWN}[answer.status]
    reason = RFC5280_REASON_NAMES.get(answer.reason or "", None) if answer.status == "revoked" else None
    if reason is x509.ReasonFlags.unspecified:
        reason = None
    builder = ocsp.OCSPResponseBuilder().add_response_by_hash(
        answer.issuer_name_hash, answer.issuer_key_hash, answer.serial, answer.hash_algorithm, status,
        this_update, next_update, answer.revoked_at if answer.status == "revoked" else None, reason,
    ).responder_id(ocsp.OCSPResponderEncoding.HASH, responder)
    if responder != issuer:
        builder = builder.certificates([responder])
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.sign(key, signing_hash(key)).public_bytes(serialization.Encoding.DER)


def unsuccessful_ocsp(status: ocsp.OCSPResponseStatus) -> bytes:
    return ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(serialization.Encoding.DER)

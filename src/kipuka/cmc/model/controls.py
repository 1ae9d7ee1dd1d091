"""The CMC controls a request carries (RFC 5272 §6, RFC 6402 §2), as immutable decoded values.

A `Control` keeps its values as the DER the sender wrote; the other types here
are what `ControlReader` decodes them into.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509

from kipuka.cmc import der, oids
from kipuka.cmc.cms import name_from_der

HASHLIB: dict[str, str] = {
    oids.ID_SHA1: "sha1", oids.ID_SHA224: "sha224", oids.ID_SHA256: "sha256",
    oids.ID_SHA384: "sha384", oids.ID_SHA512: "sha512",
}
HMACS: dict[str, str] = {
    oids.ID_HMAC_SHA1: "sha1", oids.ID_HMAC_SHA1_IPSEC: "sha1", oids.ID_HMAC_SHA224: "sha224",
    oids.ID_HMAC_SHA256: "sha256", oids.ID_HMAC_SHA384: "sha384", oids.ID_HMAC_SHA512: "sha512",
}
HMAC_OID: dict[str, str] = {
    "sha1": oids.ID_HMAC_SHA1, "sha224": oids.ID_HMAC_SHA224, "sha256": oids.ID_HMAC_SHA256,
    "sha384": oids.ID_HMAC_SHA384, "sha512": oids.ID_HMAC_SHA512,
}
HASH_OID: dict[str, str] = {v: k for k, v in HASHLIB.items()}


@dataclass(frozen=True)
class Control:
    """TaggedAttribute (RFC 5272 §3.2.1.2): one control, values as received (DER each)."""

    body_part_id: int
    attr_type: str
    values: tuple[bytes, ...]

    @property
    def name(self) -> str | None:
        return oids.CMC_CONTROL_NAMES.get(self.attr_type)

    @property
    def recognised(self) -> bool:
        return self.attr_type in oids.CMC_CONTROL_NAMES

    def encode(self) -> bytes:
        return der.seq(der.integer(self.body_part_id), der.oid(self.attr_type), der.set_of(self.values))


@dataclass(frozen=True)
class IdentityProofV2:
    """IdentifyProofV2 (RFC 5272 §6.2.1): proofAlgID (hash), macAlgId, witness."""

    body_part_id: int
    proof_algorithm: str
    mac_algorithm: str
    witness: bytes


@dataclass(frozen=True)
class RevokeRequest:
    """RevokeRequest (RFC 5272 §6.11)."""

    body_part_id: int
    issuer_der: bytes
    serial_number: int
    reason: int                          # CRLReason value (RFC 5280 §5.3.1)
    invalidity_date: dt.datetime | None = None
    passphrase: bytes | None = None
    comment: str | None = None

    @property
    def issuer(self) -> x509.Name | None:
        return name_from_der(self.issuer_der)

    @property
    def reason_flag(self) -> x509.ReasonFlags | None:
        return CRL_REASONS.get(self.reason)


CRL_REASONS: dict[int, x509.ReasonFlags] = {
    0: x509.ReasonFlags.unspecified, 1: x509.ReasonFlags.key_compromise, 2: x509.ReasonFlags.ca_compromise,
    3: x509.ReasonFlags.affiliation_changed, 4: x509.ReasonFlags.superseded,
    5: x509.ReasonFlags.cessation_of_operation, 6: x509.ReasonFlags.certificate_hold,
    8: x509.ReasonFlags.remove_from_crl, 9: x509.ReasonFlags.privilege_withdrawn,
    10: x509.ReasonFlags.aa_compromise,
}
CRL_REASON_CODES: dict[x509.ReasonFlags, int] = {v: k for k, v in CRL_REASONS.items()}


@dataclass(frozen=True)
class CertId:
    """CMCCertId ::= IssuerAndSerialNumber (confirmCertAcceptance, RFC 5272 §6.14)."""

    body_part_id: int
    issuer_der: bytes
    serial_number: int

    @property
    def issuer(self) -> x509.Name | None:
        return name_from_der(self.issuer_der)


@dataclass(frozen=True)
class ChangeSubjectName:
    """ChangeSubjectName (RFC 6402 §2.8): the subject / subjectAltName the client asks to change to."""

    body_part_id: int
    subject_der: bytes | None
    subject_alt_der: bytes | None      # GeneralNames DER

    @property
    def subject(self) -> x509.Name | None:
        return name_from_der(self.subject_der) if self.subject_der is not None else None

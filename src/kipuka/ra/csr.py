"""Checking a CSR against a label's policy and turning it into a certificate template.

Only the subject, the subject alternative names and the public key are taken
from the CSR. Every other extension it asks for (basicConstraints CA:TRUE,
key usages, unknown critical extensions) is ignored: the profile comes from
the policy alone.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, SignatureAlgorithmOID

from kipuka.ca.base import IssueRequest
from kipuka.config import Policy, rdn_type_oid
from kipuka.errors import BadRequest
from kipuka.keydelivery._der import split_tlv
from kipuka.keys import key_type_of
from kipuka.ra import name_match, name_policy, subject_policy

# SHA-1 and MD5 signatures prove nothing today; DSA is not offered by any EST client we know.
ALLOWED_SIGNATURES = frozenset({
    SignatureAlgorithmOID.RSA_WITH_SHA256, SignatureAlgorithmOID.RSA_WITH_SHA384,
    SignatureAlgorithmOID.RSA_WITH_SHA512, SignatureAlgorithmOID.RSASSA_PSS,
    SignatureAlgorithmOID.ECDSA_WITH_SHA256, SignatureAlgorithmOID.ECDSA_WITH_SHA384,
    SignatureAlgorithmOID.ECDSA_WITH_SHA512, SignatureAlgorithmOID.ED25519,
    # ML-DSA, pure (RFC 9881): the CSR's proof of possession with a post-quantum key
    SignatureAlgorithmOID.ML_DSA_44, SignatureAlgorithmOID.ML_DSA_65, SignatureAlgorithmOID.ML_DSA_87,
})
EKU_OIDS = {
    "clientAuth": ExtendedKeyUsageOID.CLIENT_AUTH, "serverAuth": ExtendedKeyUsageOID.SERVER_AUTH,
    "codeSigning": ExtendedKeyUsageOID.CODE_SIGNING, "emailProtection": ExtendedKeyUsageOID.EMAIL_PROTECTION,
    "timeStamping": ExtendedKeyUsageOID.TIME_STAMPING, "OCSPSigning": ExtendedKeyUsageOID.OCSP_SIGNING,
}
MAX_RSA_BITS = 8192  # bigger keys only cost the server CPU to verify
_DNS_RE = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.)*"
                     r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.?$")
_SAN_KIND = {x509.DNSName: "dns", x509.IPAddress: "ip", x509.RFC822Name: "email",
             x509.UniformResourceIdentifier: "uri"}


def parse_csr(der: bytes) -> x509.CertificateSigningRequest:
    try:
        csr = x509.load_der_x509_csr(der)
        csr.subject  # force full parsing of the fields we rely on
        csr.extensions
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise BadRequest(f"body is not a valid PKCS#10 CSR: {_first_line(exc)}") from None
    return csr


def csr_public_key(csr: x509.CertificateSigningRequest) -> CertificatePublicKeyTypes:
    """The CSR's public key, or 400 when it is not one cryptography can load."""
    try:
        return csr.public_key()
    except (ValueError, UnsupportedAlgorithm):
        raise BadRequest("CSR public key is not supported (unnamed or unknown curve, or unknown algorithm)") from None


def check_proof_of_possession(csr: x509.CertificateSigningRequest, policy: Policy) -> None:
    """Signature algorithm, signature and key: the checks every operation shares (but /serverkeygen,
    whose CSR key and signature are ignored, RFC 7030 §4.4.1, unless kipuka encrypts to that key)."""
    if csr.signature_algorithm_oid not in ALLOWED_SIGNATURES:
        name = getattr(csr.signature_algorithm_oid, "_name", csr.signature_algorithm_oid.dotted_string)
        raise BadRequest(f"CSR signature algorithm {name} is not accepted (use SHA-256 or stronger)")
    key = csr_public_key(csr)
    check_key(key, policy)
    try:
        valid = csr.is_signature_valid
    except (ValueError, UnsupportedAlgorithm):
        valid = False
    if not valid:
        raise BadRequest("CSR signature does not verify (no proof of possession)")


def check_key(key: object, policy: Policy) -> None:
    kind = key_type_of(key)  # type: ignore[arg-type]
    if kind not in policy.key_types:
        raise BadRequest(f"key type {kind} is not allowed here (allowed: {', '.join(policy.key_types)})")
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < policy.rsa_min_bits:
            raise BadRequest(f"RSA key of {key.key_size} bits is too small (minimum {policy.rsa_min_bits})")
        if key.key_size > MAX_RSA_BITS:
            raise BadRequest(f"RSA key of {key.key_size} bits is too large (maximum {MAX_RSA_BITS})")
        e = key.public_numbers().e
        if e < 65537 or e % 2 == 0:
            raise BadRequest("RSA public exponent must be odd and at least 65537")


def requested_san(csr: x509.CertificateSigningRequest) -> x509.SubjectAlternativeName | None:
    try:
        return csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    except ValueError as exc:
        raise BadRequest(f"CSR extension request is malformed: {_first_line(exc)}") from None


def check_names(subject: x509.Name, san: x509.SubjectAlternativeName | None, policy: Policy) -> None:
    """Shape rules of the policy: content (ra/name_policy.py), CN presence, SAN types, DNS syntax,
    domains (400), then the subject attribute allow-list (ra/subject_policy.py, 403)."""
    name_policy.check_content(subject, san, policy)
    cns = subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if policy.require_common_name and not cns:
        raise BadRequest("CSR subject has no common name (CN)")
    if len(cns) > 1:
        raise BadRequest("CSR subject has more than one common name")
    if len(subject) == 0 and san is None:
        raise BadRequest("CSR has neither a subject nor subject alternative names")
    if policy.require_san and not san:
        raise BadRequest("CSR has no subjectAltName extension (this label requires one)")
    check_subject_rdns(subject, policy)
    for general_name in san or []:
        kind = _SAN_KIND.get(type(general_name))
        if kind is None or kind not in policy.san_types:
            raise BadRequest(f"subject alternative name {_describe(general_name)} is not allowed here")
        if kind == "dns":
            dns = general_name.value
            if not _DNS_RE.match(dns):
                raise BadRequest(f"{name_policy.show(dns)} is not a valid DNS name (wildcards are not issued)")
    name_policy.check_domains(subject, san, policy)
    subject_policy.check_subject(subject, policy)


def subject_requirements(policy: Policy) -> list[tuple[x509.ObjectIdentifier, str | None]]:
    """The subject RDNs a label requires, in order: (type, fixed value or None for "requester fills in").

    `subject_rdns` as written, then CN (to be filled in) when `require_common_name` and
    `subject_rdns` does not name CN. /csrattrs advertises exactly this (RFC 9908 template).
    """
    out: list[tuple[x509.ObjectIdentifier, str | None]] = []
    for entry in policy.subject_rdns:
        name, sep, value = entry.partition("=")
        dotted = rdn_type_oid(name.strip())
        assert dotted is not None  # checked when the configuration was loaded
        out.append((x509.ObjectIdentifier(dotted), value if sep else None))
    if policy.require_common_name and all(oid != NameOID.COMMON_NAME for oid, _ in out):
        out.append((NameOID.COMMON_NAME, None))
    return out


def check_subject_rdns(subject: x509.Name, policy: Policy) -> None:
    """The subject carries every required RDN type, and a type with fixed values only those values."""
    wanted: dict[x509.ObjectIdentifier, tuple[list[str], int]] = {}
    for oid, value in subject_requirements(policy):
        fixed, free = wanted.get(oid, ([], 0))
        wanted[oid] = (fixed + [value], free) if value is not None else (fixed, free + 1)
    for oid, (fixed, free) in wanted.items():
        present = [str(a.value) for a in subject.get_attributes_for_oid(oid)]
        label = _rdn_label(oid)
        for value in fixed:
            if value not in present:
                raise BadRequest(f"CSR subject {label} must be {value!r} on this label")
            present.remove(value)
        if not free and present:
            raise BadRequest(f"CSR subject {label} {present[0]!r} is not allowed (this label fixes {label} to "
                             f"{', '.join(repr(v) for v in fixed)})")
        if len(present) < free:
            raise BadRequest(f"CSR subject has no {label} (this label requires one)")


def same_names(cert: x509.Certificate, subject: x509.Name, san: x509.SubjectAlternativeName | None) -> bool:
    """RFC 7030 4.2.2: Subject and SubjectAltName equal the certificate's, compared as RFC 5280 §7
    compares names (ra/name_match.py: DNS names and caseIgnoreMatch attributes such as CN without
    regard to case; SAN order ignored)."""
    if not name_match.same_name(cert.subject, subject):
        return False
    try:
        current = list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        current = []
    return name_match.same_general_names(current, list(san or []))


def template(csr: x509.CertificateSigningRequest, san: x509.SubjectAlternativeName | None,
             policy: Policy) -> IssueRequest:
    return template_for(csr.subject, csr.public_key(), san, policy)  # type: ignore[arg-type]


def template_for(subject: x509.Name, public_key: CertificatePublicKeyTypes,
                 san: x509.SubjectAlternativeName | None, policy: Policy) -> IssueRequest:
    """The template of any request (PKCS#10 or CRMF): its names and key, the rest from the policy."""
    return IssueRequest(
        subject=subject,
        public_key=public_key,
        san=san,
        ekus=tuple(EKU_OIDS.get(e) or x509.ObjectIdentifier(e) for e in policy.ekus),
        validity=dt.timedelta(seconds=policy.validity) if policy.validity else dt.timedelta(days=policy.validity_days),
    )


def public_key_sha256(csr_or_cert: x509.CertificateSigningRequest | x509.Certificate) -> str:
    """SHA-256 of the SubjectPublicKeyInfo: how the store names a key (retries, recovery)."""
    if isinstance(csr_or_cert, x509.CertificateSigningRequest):
        return hashlib.sha256(csr_spki(csr_or_cert)).hexdigest()
    spki = csr_or_cert.public_key().public_bytes(serialization.Encoding.DER,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


def csr_spki(csr: x509.CertificateSigningRequest) -> bytes:
    """The SubjectPublicKeyInfo exactly as the CSR carries it.

    Sliced from certificationRequestInfo (version, subject, subjectPKInfo, ...) by
    hand: cryptography offers the key only as an object, and loading it and encoding
    it again cost more than the rest of naming it. cryptography has parsed these bytes
    already, so they are well-formed DER; the same key re-encoded would give the same
    bytes (DER is canonical).
    """
    info = csr.tbs_certrequest_bytes
    _, pos, _ = split_tlv(info)  # the CertificationRequestInfo SEQUENCE
    _, _, pos = split_tlv(info, pos)  # version
    _, _, pos = split_tlv(info, pos)  # subject
    _, _, end = split_tlv(info, pos)  # subjectPKInfo
    return info[pos:end]


def _describe(general_name: x509.GeneralName) -> str:
    kind = _SAN_KIND.get(type(general_name), type(general_name).__name__)
    return f"{kind}:{getattr(general_name, 'value', '')}"


def _rdn_label(oid: x509.ObjectIdentifier) -> str:
    name = getattr(oid, "_name", None)
    short = {NameOID.COMMON_NAME: "CN", NameOID.ORGANIZATION_NAME: "O", NameOID.ORGANIZATIONAL_UNIT_NAME: "OU",
             NameOID.COUNTRY_NAME: "C", NameOID.LOCALITY_NAME: "L", NameOID.STATE_OR_PROVINCE_NAME: "ST"}
    return short.get(oid) or (name if name and name != "Unknown OID" else oid.dotted_string)


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or ["parse error"])[0][:160]

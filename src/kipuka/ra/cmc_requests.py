"""Certification requests of a Full PKI Request (tcr, crm) as certificate candidates, checked against policy.

Only the subject, the subjectAltName and the public key are taken from a
request, as for simpleenroll (`kipuka.ra.csr`): every other extension or
template field (validity, issuer, serial, key usages) is ignored and the
profile comes from the label's policy. Every refusal is a `CmcError` naming the
request's bodyPartID, with the failInfo a client can act on.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace
from typing import Callable

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from kipuka.cmc import CertificationRequest, CMCFailInfo, CmcError, CrmfRequest
from kipuka.cmc import der as cder
from kipuka.cmc import oids
from kipuka.config import Policy
from kipuka.errors import BadRequest
from kipuka.ra import csr as csrcheck
from kipuka.ra.linking import check_linking

ID_CE_SUBJECT_ALT_NAME = "2.5.29.17"
PEND_TOKEN_PREFIX = b"kipuka-pending/"
_PEND_TOKEN_RE = re.compile(rb"^kipuka-pending/([1-9][0-9]{0,17})$")


@dataclass(frozen=True)
class Candidate:
    """What a request asks to be certified, already checked against the label's policy."""

    body_part_id: int
    kind: str                                # "tcr" | "crm"
    der: bytes                               # the PKCS#10 or the CertReqMsg, kept for approval
    subject: x509.Name
    san: x509.SubjectAlternativeName | None
    public_key: CertificatePublicKeyTypes
    pubkey_sha256: str


def candidate(request: CertificationRequest | CrmfRequest, policy: Policy, *, ra_vouches: bool = False,
              signed_with_this_key: bool = False,
              binding_of: Callable[[], tuple[str, bytes] | None] = lambda: None) -> Candidate:
    """Check one request's proof of possession, key and names; raise CmcError for its body part.

    `signed_with_this_key`: the PKIData is signed with this request's key, which
    proves possession for a CRMF request without a POP signature of its own.
    `ra_vouches`: an RA agent signed the PKIData, so a CRMF `raVerified` POP stands
    and linking to the TLS session is not asked (RFC 7030 §3.7).
    `binding_of`: the TLS session's channel binding, which a linked PKCS#10 carries in
    challengePassword (RFC 7030 §3.5); a mismatch is popFailed.
    """
    if isinstance(request, CertificationRequest):
        try:
            check_linking(request.csr, binding_of, policy, exempt=ra_vouches)
        except BadRequest as exc:
            raise CmcError(CMCFailInfo.popFailed, [request.body_part_id], exc.reason) from None
        return _tcr(request, policy)
    if policy.require_linking and not ra_vouches:
        raise CmcError(CMCFailInfo.popFailed, [request.body_part_id], "this label requires requests linked to "
                       "the TLS session (RFC 7030 §3.5): send a PKCS#10 with challengePassword, CRMF cannot carry it")
    return _crm(request, policy, ra_vouches, signed_with_this_key)


def stored_candidate(request_der: bytes, policy: Policy) -> Candidate:
    """The candidate of a request held for approval (its POP was checked when it was submitted)."""
    try:
        csr = x509.load_der_x509_csr(request_der)
    except ValueError:
        csr = None
    if csr is not None:
        return _tcr(_stored_tcr(request_der, csr), policy)
    from kipuka.cmc.request import _crm as read_crm  # the codec's CertReqMsg reader

    try:
        crm, pop = read_crm(request_der)
    except CmcError as exc:
        raise BadRequest(f"the held CRMF request cannot be read: {exc.reason}") from None
    return _crm(replace(crm, pop=pop()), policy, True, True)


def _stored_tcr(der: bytes, csr: x509.CertificateSigningRequest) -> CertificationRequest:
    from kipuka.cmc.model import Pop

    ok = False
    try:
        ok = csr.is_signature_valid
    except (ValueError, UnsupportedAlgorithm):
        pass
    return CertificationRequest(0, der, csr, b"", None, Pop("signature", ok, csr.signature_algorithm_oid.dotted_string,
                                                            None if ok else "the PKCS#10 signature does not verify"))


def _tcr(r: CertificationRequest, policy: Policy) -> Candidate:
    ids = [r.body_part_id]
    csr = r.csr
    if csr.signature_algorithm_oid not in csrcheck.ALLOWED_SIGNATURES:
        name = getattr(csr.signature_algorithm_oid, "_name", csr.signature_algorithm_oid.dotted_string)
        raise CmcError(CMCFailInfo.badAlg, ids, f"PKCS#10 signature algorithm {name} is not accepted "
                                                f"(use SHA-256 or stronger)")
    r.pop.require(r.body_part_id)
    try:
        csrcheck.check_proof_of_possession(csr, policy)
        san = csrcheck.requested_san(csr)
        csrcheck.check_names(csr.subject, san, policy)
    except CmcError:
        raise
    except BadRequest as exc:
        raise CmcError(CMCFailInfo.badRequest, ids, exc.reason) from None
    return Candidate(r.body_part_id, "tcr", r.der, csr.subject, san, csr.public_key(),  # type: ignore[arg-type]
                     csrcheck.public_key_sha256(csr))


def _crm(r: CrmfRequest, policy: Policy, ra_vouches: bool, signed_with_this_key: bool) -> Candidate:
    ids = [r.body_part_id]
    pop = r.pop
    proven = pop.verified or (pop.method != "signature" and (
        signed_with_this_key or (ra_vouches and pop.method == "raVerified")))
    if not proven:
        pop.require(r.body_part_id)   # popFailed for a bad signature, popRequired otherwise
        raise CmcError(CMCFailInfo.popRequired, ids, "no verifiable proof of possession")
    if r.public_key_der is None:
        raise CmcError(CMCFailInfo.badRequest, ids, "the CRMF certificate template names no public key")
    try:
        key = serialization.load_der_public_key(r.public_key_der)
    except (ValueError, UnsupportedAlgorithm, TypeError):
        raise CmcError(CMCFailInfo.badRequest, ids, "the CRMF public key is unreadable or not supported "
                                                    "(unnamed or unknown curve, or unknown algorithm)") from None
    if r.subject_der is None:
        subject = x509.Name([])
    else:
        parsed = r.subject
        if parsed is None:
            raise CmcError(CMCFailInfo.badRequest, ids, "the CRMF template subject is unreadable")
        subject = parsed
    ext = r.extension(ID_CE_SUBJECT_ALT_NAME)
    san = _san(ext.value, ids) if ext is not None else None
    try:
        csrcheck.check_key(key, policy)
        csrcheck.check_names(subject, san, policy)
    except BadRequest as exc:
        raise CmcError(CMCFailInfo.badRequest, ids, exc.reason) from None
    spki = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return Candidate(r.body_part_id, "crm", r.der, subject, san, key,  # type: ignore[arg-type]
                     hashlib.sha256(spki).hexdigest())


# A fixed P-256 public key: only the extensionRequest of the throwaway CSR below is read.
_SPKI = bytes.fromhex("3059301306072a8648ce3d020106082a8648ce3d030107034200"
                      "04" + "6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296"
                      "4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5")


def _san(value: bytes, ids: list[int]) -> x509.SubjectAlternativeName:
    """A subjectAltName extension value (GeneralNames DER), read by cryptography's own parser.

    cryptography has no loader for a bare extension, so the value is placed in
    the extensionRequest of a throwaway, unsigned CSR structure and read back
    (no signature is ever checked on it).
    """
    ext = cder.seq(cder.oid(ID_CE_SUBJECT_ALT_NAME), cder.octets(value))
    attr = cder.seq(cder.oid(oids.ID_EXTENSION_REQ), cder.set_of([cder.seq(ext)]))
    cri = cder.seq(cder.integer(0), cder.seq(), _SPKI, cder.tlv(0xA0, attr))
    csr = cder.seq(cri, cder.algorithm(oids.ECDSA_SHA256), cder.bit_string(b"\x30\x06\x02\x01\x01\x02\x01\x01"))
    try:
        return x509.load_der_x509_csr(csr).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except Exception:  # noqa: BLE001 - any parse failure is a malformed extension
        raise CmcError(CMCFailInfo.badRequest, ids, "the CRMF subjectAltName extension is malformed") from None


def pend_token(request_id: int) -> bytes:
    """The pendToken of a held request (RFC 5272 §6.1.1 PendInfo): its pending request id."""
    return PEND_TOKEN_PREFIX + str(int(request_id)).encode()


def pending_id(token: bytes) -> int | None:
    m = _PEND_TOKEN_RE.match(token)
    return int(m.group(1)) if m else None

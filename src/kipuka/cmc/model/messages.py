"""The CMC messages themselves: PKIData and PKIResponse (RFC 5272 §3.2, §3.3), bare and as verified SignedData."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from cryptography import x509

from kipuka.cmc import der, oids
from kipuka.cmc.cms import PublicKey, VerifiedSigner
from kipuka.cmc.errors import CMCFailInfo, CmcError
from kipuka.cmc.model.controls import HASHLIB, HMACS, Control
from kipuka.cmc.model.reader import ControlReader
from kipuka.cmc.model.tagged_requests import CertificationRequest, CrmfRequest, TaggedRequest


@dataclass(frozen=True)
class TaggedContent:
    """TaggedContentInfo (RFC 5272 §3.2.1.4).

    When the ContentInfo is a SignedData over a PKIData (a nested request, as an
    RA batches them), `nested` is its verified parse, or `error` says why it
    could not be accepted: a bad nested request fails its body part only.
    """

    body_part_id: int
    content_type: str
    content_info: bytes
    nested: SignedPKIData | None = None
    error: CmcError | None = None


@dataclass(frozen=True)
class OtherMsg:
    body_part_id: int
    msg_type: str
    value: bytes


@dataclass(frozen=True)
class PKIData(ControlReader):
    """PKIData (RFC 5272 §3.2.1): the content of a Full PKI Request."""

    controls: tuple[Control, ...]
    requests: tuple[TaggedRequest, ...]
    cms_sequence: tuple[TaggedContent, ...]
    other_msgs: tuple[OtherMsg, ...]
    der: bytes
    req_sequence_der: bytes               # reqSequence exactly as received (identity proof input)

    def request(self, body_part_id: int) -> TaggedRequest | None:
        return next((r for r in self.requests if r.body_part_id == body_part_id), None)

    def content(self, body_part_id: int) -> TaggedContent | None:
        return next((c for c in self.cms_sequence if c.body_part_id == body_part_id), None)

    def batch_contents(self) -> list[TaggedContent]:
        """The cmsSequence entries batchRequests names, in its order (badRequest if one is missing)."""
        out = []
        for bpid in self.batch_requests():
            item = self.content(bpid)
            if item is None:
                raise der.bad(f"batchRequests names body part {bpid}, which is not in cmsSequence", [bpid])
            out.append(item)
        return out

    def has_identity_proof(self) -> bool:
        return bool(self.controls_of(oids.ID_CMC_IDENTITY_PROOF_V2) or self.controls_of(oids.ID_CMC_IDENTITY_PROOF))

    def verify_identity_proof(self, shared_secret: bytes | str) -> None:
        """Check identityProofV2 (or, failing that, the version 1 identityProof).

        RFC 5272 §6.2.1: key = proofAlgID-hash(shared-secret), or of the
        shared-secret followed by the Identification control's UTF-8 value when
        that control is present (§6.2.3); witness = macAlgId-MAC(key,
        reqSequence as encoded in the request, tag and length included). Version 1
        (§6.2.2) is the same with SHA-1 and HMAC-SHA1. Raises
        CmcError(badIdentity) when no proof is present or it does not match,
        CmcError(badAlg) for an algorithm not offered.
        """
        secret = shared_secret.encode("utf-8") if isinstance(shared_secret, str) else bytes(shared_secret)
        ident = self.identification()
        material = secret + (ident.encode("utf-8") if ident is not None else b"")
        v2 = self.identity_proof_v2()
        if v2 is not None:
            hash_name = HASHLIB.get(v2.proof_algorithm)
            mac_name = HMACS.get(v2.mac_algorithm)
            if hash_name is None or mac_name is None:
                raise CmcError(CMCFailInfo.badAlg, [v2.body_part_id], "identityProofV2 algorithm not supported")
            witness, bpid = v2.witness, v2.body_part_id
        else:
            v1 = self.identity_proof()
            if v1 is None:
                raise CmcError(CMCFailInfo.badIdentity, [], "the request carries no identity proof")
            hash_name = mac_name = "sha1"
            witness, bpid = v1, self.controls_of(oids.ID_CMC_IDENTITY_PROOF)[0].body_part_id
        key = hashlib.new(hash_name, material).digest()
        expected = hmac.new(key, self.req_sequence_der, mac_name).digest()
        if not hmac.compare_digest(expected, witness):
            raise CmcError(CMCFailInfo.badIdentity, [bpid], "the identity proof does not match")

    def request_key(self, ski: bytes) -> tuple[PublicKey, int] | None:
        """(public key, bodyPartID) of the request declaring Subject Key Identifier `ski` (RFC 5272 §3.2)."""
        from kipuka.cmc.cms import load_public_key
        for r in self.requests:
            if isinstance(r, (CertificationRequest, CrmfRequest)) and r.subject_key_identifier == ski \
                    and r.public_key_der is not None:
                try:
                    return load_public_key(r.public_key_der, [r.body_part_id]), r.body_part_id
                except CmcError:
                    return None
        return None


@dataclass(frozen=True)
class SignedPKIData:
    """A Full PKI Request (RFC 5272 §3.2) whose signatures verified.

    `signers` are the SignerInfos, each with the certificate it was found by or,
    for a request signed with the key of one of its own certification requests,
    `request_body_part_id`. The codec checks signatures only: whether the signer
    certificates chain to a trusted anchor, carry id-kp-cmcRA, are valid now or
    revoked is the caller's policy (`certificates` holds the whole set).
    """

    pki_data: PKIData
    signers: tuple[VerifiedSigner, ...]
    certificates: tuple[x509.Certificate, ...]
    crls: tuple[bytes, ...]
    der: bytes
    depth: int = 1

    @property
    def self_signed(self) -> bool:
        return any(s.request_body_part_id is not None for s in self.signers)

    @property
    def controls(self) -> tuple[Control, ...]:
        return self.pki_data.controls

    @property
    def requests(self) -> tuple[TaggedRequest, ...]:
        return self.pki_data.requests

    @property
    def cms_sequence(self) -> tuple[TaggedContent, ...]:
        return self.pki_data.cms_sequence

    @property
    def other_msgs(self) -> tuple[OtherMsg, ...]:
        return self.pki_data.other_msgs


@dataclass(frozen=True)
class PKIResponse(ControlReader):
    """PKIResponse (RFC 5272 §3.3.2)."""

    controls: tuple[Control, ...]
    cms_sequence: tuple[TaggedContent, ...]
    other_msgs: tuple[OtherMsg, ...]
    der: bytes


@dataclass(frozen=True)
class SignedPKIResponse:
    """A Full PKI Response whose signatures verified; `certificates` is the SignedData set."""

    response: PKIResponse
    signers: tuple[VerifiedSigner, ...]
    certificates: tuple[x509.Certificate, ...]
    der: bytes

    @property
    def controls(self) -> tuple[Control, ...]:
        return self.response.controls


def has_cmc_ra_eku(cert: x509.Certificate) -> bool:
    """True if `cert` has extendedKeyUsage id-kp-cmcRA (RFC 6402 §2.10)."""
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except (x509.ExtensionNotFound, ValueError):
        return False
    return any(u.dotted_string == oids.ID_KP_CMC_RA for u in eku)

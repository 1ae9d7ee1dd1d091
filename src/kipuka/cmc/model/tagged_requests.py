"""The certification requests of a PKIData's reqSequence (RFC 5272 §3.2.1.3), with their proof of possession."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from cryptography import x509

from kipuka.cmc.cms import name_from_der
from kipuka.cmc.errors import CMCFailInfo, CmcError


@dataclass(frozen=True)
class Pop:
    """Proof of possession of a request's private key, as far as the codec can tell.

    method: "signature" (PKCS#10 self-signature or CRMF POPOSigningKey),
    "noSignature" (PKCS#10 signed with id-alg-noSignature), "raVerified",
    "keyEncipherment", "keyAgreement" (CRMF; need an encryptedPOP exchange), or
    "none". `verified` is True only for a signature checked here.
    """

    method: str
    verified: bool
    algorithm: str | None = None
    reason: str | None = None

    def require(self, body_part_id: int) -> None:
        """Raise CmcError(popFailed) for a failed signature, CmcError(popRequired) for none checked."""
        if self.verified:
            return
        if self.method == "signature":
            raise CmcError(CMCFailInfo.popFailed, [body_part_id], self.reason or "the POP signature does not verify")
        raise CmcError(CMCFailInfo.popRequired, [body_part_id], f"no verifiable proof of possession ({self.method})")


@dataclass(frozen=True)
class TemplateExtension:
    oid: str
    critical: bool
    value: bytes          # extnValue contents (the DER of the extension value)


@dataclass(frozen=True)
class CertificationRequest:
    """tcr: TaggedCertificationRequest (RFC 5272 §3.2.1.3.1), a PKCS#10 request."""

    body_part_id: int
    der: bytes
    csr: x509.CertificateSigningRequest
    public_key_der: bytes                 # SubjectPublicKeyInfo DER
    subject_key_identifier: bytes | None  # from the extensionRequest, if any
    pop: Pop
    kind: str = field(default="tcr", init=False)


@dataclass(frozen=True)
class CrmfRequest:
    """crm: CertReqMsg (RFC 5272 §3.2.1.3.2, RFC 4211); bodyPartID is the certReqId."""

    body_part_id: int
    cert_req_id: int
    der: bytes                            # the CertReqMsg as a SEQUENCE
    template_der: bytes                   # the CertTemplate as a SEQUENCE
    subject_der: bytes | None
    public_key_der: bytes | None          # from the template, else from poposkInput
    extensions: tuple[TemplateExtension, ...]
    subject_key_identifier: bytes | None
    pop: Pop
    controls: tuple[tuple[str, bytes], ...]   # CRMF Controls (regToken, oldCertID, ...): (type, value DER)
    reg_info: tuple[tuple[str, bytes], ...]
    kind: str = field(default="crm", init=False)

    @property
    def subject(self) -> x509.Name | None:
        return name_from_der(self.subject_der) if self.subject_der is not None else None

    def extension(self, oid: str) -> TemplateExtension | None:
        return next((e for e in self.extensions if e.oid == oid), None)


@dataclass(frozen=True)
class OtherRequest:
    """orm: a request of another format (RFC 5272 §3.2.1.3.3), kept raw."""

    body_part_id: int
    message_type: str
    value: bytes
    kind: str = field(default="orm", init=False)


TaggedRequest = Union[CertificationRequest, CrmfRequest, OtherRequest]

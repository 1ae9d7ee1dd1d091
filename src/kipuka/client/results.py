"""What `EstClient`'s operations return: issued certificates (with chain and key) and CMC responses."""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import serialization


@dataclass
class Issued:
    """An issued certificate and its verified issuer chain (issuing CA first, up to the root if known)."""

    certificate: x509.Certificate
    chain: list[x509.Certificate]
    response_certificates: list[x509.Certificate] = field(default_factory=list)

    def pem(self, with_chain: bool = False) -> bytes:
        certs = [self.certificate, *(self.chain if with_chain else [])]
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


@dataclass
class ServerKeygenResult(Issued):
    private_key: object = None             # a cryptography private key
    key_media_type: str = ""               # "application/pkcs8" or "application/pkcs7-mime; smime-type=server-generated-key"
    encrypted: bool = False                # the key came CMS-encrypted (and was decrypted)
    signed: bool = False                   # the key package's SignedData signature was verified
    key_signer: x509.Certificate | None = None

    def key_pem(self) -> bytes:
        return self.private_key.private_bytes(serialization.Encoding.PEM,  # type: ignore[attr-defined]
                                              serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


@dataclass
class CmcResponse:
    """A Full PKI Response. RFC 7030 4.3.2 answers CMC errors with one too: `status` is the HTTP status."""

    der: bytes                                   # the CMS of the PKIResponse, as received
    certificates: list[x509.Certificate]         # certificates carried in its SignedData, if any
    status: int = 200

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def parse(self):  # type: ignore[no-untyped-def]
        """The verified response (`kipuka.cmc.SignedPKIResponse`): statusInfoV2 per body part, nonces ...

        Only the signature is checked here; whether its signer is the CA you trust
        is yours to decide (`.signers[0].certificate`).
        """
        from kipuka.cmc import parse_pki_response

        return parse_pki_response(self.der)

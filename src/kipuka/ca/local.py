"""A CA whose key is a software key file on this host (the embedded default)."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from kipuka.ca.base import IssueRequest, Issued, directly_issued
from kipuka.ca.profile import build_certificate
from kipuka.ca.signing import signature_of
from kipuka.ca.revocation import OcspAnswer, RevokedEntry, build_crl, build_ocsp_response
from kipuka.config import CAConfig
from kipuka.pem import load_certificates, load_private_key


class LocalCA:
    def __init__(self, ca_id: str, key: CertificateIssuerPrivateKeyTypes, chain: list[x509.Certificate],
                 ocsp_responder: tuple[x509.Certificate, CertificateIssuerPrivateKeyTypes] | None = None) -> None:
        self.id = ca_id
        self._key = key
        self._chain = chain
        self._cert = chain[0]
        self._ocsp = ocsp_responder or (self._cert, key)

    @classmethod
    def from_config(cls, cfg: CAConfig) -> "LocalCA":
        chain = load_certificates(cfg.cert)[:1]
        if cfg.chain is not None:
            chain += [c for c in load_certificates(cfg.chain) if c != chain[0]]
        key = load_private_key(cfg.key)
        if key.public_key() != chain[0].public_key():  # type: ignore[union-attr]
            raise ValueError(f"ca.{cfg.id}: key does not match certificate {cfg.cert}")
        responder = None
        if cfg.ocsp_cert is not None and cfg.ocsp_key is not None:
            responder = (load_certificates(cfg.ocsp_cert)[0], load_private_key(cfg.ocsp_key))
            if responder[1].public_key() != responder[0].public_key():  # type: ignore[union-attr]
                raise ValueError(f"ca.{cfg.id}: ocsp_key does not match ocsp_cert")
        return cls(cfg.id, key, chain, responder)  # type: ignore[arg-type]

    def ca_certificates(self) -> list[x509.Certificate]:
        return list(self._chain)

    def content_signer(self) -> tuple[CertificateIssuerPrivateKeyTypes, x509.Certificate]:
        """The key and certificate that sign CMS content this CA vouches for (serverkeygen key packages).

        An optional capability: the RA checks for it when a label turns serverkeygen on.
        """
        return self._key, self._cert

    def is_issuer_of(self, cert: x509.Certificate) -> bool:
        return directly_issued(cert, self._cert)

    async def issue(self, req: IssueRequest) -> Issued:
        # Signing one certificate costs ~0.1 ms (EC) to ~2 ms (RSA-3072): cheaper
        # inline than the hand-off to a thread would be.
        now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        cert = build_certificate(req, self._cert, self._key, x509.random_serial_number(), now)
        return Issued(cert)

    async def sign_crl(self, entries: list[RevokedEntry], number: int, this_update: dt.datetime,
                       next_update: dt.datetime) -> bytes:
        return build_crl(self._cert, self._key, entries, number, this_update, next_update)

    async def sign_ocsp(self, answer: OcspAnswer, this_update: dt.datetime, next_update: dt.datetime,
                        nonce: bytes | None) -> bytes:
        responder, key = self._ocsp
        return build_ocsp_response(answer, responder, key, self._cert, this_update, next_update, nonce)

    async def health(self) -> str:
        try:
            probe = b"kipuka health probe"
            signature_of(self._key, probe)
        except Exception as exc:  # any failure to sign is the answer
            return f"cannot sign: {exc}"
        return "ok"

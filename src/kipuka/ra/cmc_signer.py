"""Who signs Full PKI Responses: `[est] cmc_signer_cert/key` when configured, else the label's CA.

The CA signs through its optional `content_signer()` capability (the key and
certificate that sign CMS content the CA vouches for, as serverkeygen's key
packages use): a key object whose `sign()` may be an HSM call, so the key never
leaves the back end's control. A back end without it needs `cmc_signer_*` for
every label that turns fullcmc on, which is checked when the configuration is
loaded.
"""

from __future__ import annotations

from collections.abc import Iterable

from cryptography import x509

from kipuka.ca.base import CertificateAuthority
from kipuka.cmc import CmsSigner
from kipuka.cmc import cms, oids
from kipuka.config import ESTConfig
from kipuka.pem import load_certificates, load_private_key


def configured_signer(est: ESTConfig) -> CmsSigner | None:
    if est.cmc_signer_cert is None or est.cmc_signer_key is None:
        return None
    certs = load_certificates(est.cmc_signer_cert)
    try:
        return CmsSigner(load_private_key(est.cmc_signer_key), certs[0], chain=tuple(certs[1:]))  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"est.cmc_signer_key: {exc}") from None


def ca_signer(ca: CertificateAuthority) -> CmsSigner:
    content_signer = getattr(ca, "content_signer", None)
    if not callable(content_signer):
        raise ValueError(f"ca.{ca.id}: this CA back end cannot sign CMC responses; set [est] cmc_signer_cert "
                         f"and cmc_signer_key to turn fullcmc on for its labels")
    key, cert = content_signer()
    return CmsSigner(key, cert, chain=tuple(ca.ca_certificates()[1:]))


def sign_response(signer: CmsSigner, pki_response: bytes, certificates: Iterable[x509.Certificate]) -> bytes:
    """ContentInfo(SignedData(PKIResponse)), the certificates beside the signer's own chain (RFC 5272 §3.3.2)."""
    return cms.signed_data(oids.ID_CCT_PKI_RESPONSE, pki_response, [signer], certificates=certificates)

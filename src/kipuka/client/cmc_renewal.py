"""Renewal by a Full PKI Request that the certificate's holder signs (RFC 5272 §3.2, RFC 7030 §4.3).

Why this exists: `/simplereenroll` authenticates the device by its TLS client
certificate, and Python's `ssl` on an OpenSSL older than 3.5 (Debian 12 ships
3.0) can neither present an ML-DSA key nor load a certificate an ML-DSA CA
signed. kipuka accepts a re-enrollment on `/fullcmc` whose PKIData is signed
with the current certificate's key (docs/pq.md, "fullcmc = true" on the
label): the signature is checked in kipuka, not in the TLS stack, so any TLS
client can renew an ML-DSA certificate this way.
"""

from __future__ import annotations

from cryptography import x509

from kipuka import pq
from kipuka.client.client import EstClient
from kipuka.client.csr import CsrInput, CsrSource
from kipuka.client.errors import InvalidResponse, PendingTimeout, error_for_status
from kipuka.client.results import Issued


def needs_cmc_renewal(key: object) -> bool:
    """True for a key the client's TLS stack cannot present (ML-DSA on the system OpenSSL)."""
    return pq.is_mldsa(key)


def reenroll_by_fullcmc(est: EstClient, csr: CsrInput, holder_cert: x509.Certificate, holder_key: object) -> Issued:
    """POST /fullcmc with the CSR inside a PKIData signed by the current certificate's key.

    The answer's statusInfoV2 decides: success gives the certificate that carries the
    CSR's key (its chain verified as for /simplereenroll); pending raises PendingTimeout
    (re-sent as it is, the server matches it); failed raises as an HTTP error would,
    with the server's statusString as the reason.
    """
    from kipuka import cmc  # pyasn1-based: loaded only by the clients that renew this way

    source = CsrSource.of(csr)
    builder = cmc.PKIDataBuilder()
    builder.transaction_id()
    builder.sender_nonce()
    builder.add_tcr(source.der())
    response = est.fullcmc(builder.sign(cmc.CmsSigner(holder_key, holder_cert)))  # type: ignore[arg-type]
    try:
        parsed = response.parse()
    except cmc.CmcError as exc:
        raise InvalidResponse(f"fullcmc: the response is not a valid signed CMC response: {exc}") from exc
    infos = parsed.response.status_info_v2()
    failed = [i for i in infos if i.status == cmc.CMCStatus.failed]
    if failed or not response.ok:
        reason = "; ".join(i.status_string or f"failed ({i.fail_info})" for i in failed) or "refused"
        raise error_for_status(response.status if not response.ok else 400, f"fullcmc: {reason}")
    if any(i.status == cmc.CMCStatus.pending for i in infos):
        raise PendingTimeout("fullcmc: the renewal is held for approval; rerun to ask again")
    leaf = next((c for c in parsed.certificates if c.public_key() == source.public_key), None)
    if leaf is None:
        raise InvalidResponse("fullcmc: no returned certificate carries the CSR's public key")
    chain = est._verify_issued(leaf, list(parsed.certificates))  # same checks as every other enrollment
    return Issued(leaf, chain, list(parsed.certificates))

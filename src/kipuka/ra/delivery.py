"""Choosing how a server-generated key travels back: by label policy and what the CSR asks.

| the CSR carries                                    | delivery     | encrypted to                    |
|----------------------------------------------------|--------------|---------------------------------|
| AsymmetricDecryptKeyIdentifier = SKI of the TLS    | asymmetric   | the client certificate's key    |
|   client certificate                               |              |                                 |
| AsymmetricDecryptKeyIdentifier = key id of the     | csr-key      | the CSR's own (throwaway) key   |
|   CSR's own key                                    |              |                                 |
| DecryptKeyIdentifier = a key in [est] kek_file     | symmetric    | that pre-shared AES key         |
| neither                                            | the first of "csr-key" / "pkcs8" in the label's  |
|                                                    | serverkeygen_deliveries: "pkcs8" by default      |
|                                                    | (RFC 7030 4.4.2); "csr-key" is kipuka's opt-in   |

A delivery the label does not list, an identifier the server does not know,
or both identifiers at once, is a 400 with the reason: the server never falls
back to a weaker delivery than the one asked for.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from kipuka.config import Policy
from kipuka.errors import BadRequest
from kipuka.keydelivery import RSAES_OAEP_SHA256, KekRecipient, PublicKeyRecipient, key_identifier
from kipuka.ra.kek import KekTable
from kipuka.ra.keygen_request import KeygenAsk

CSR_KEY, ASYMMETRIC, SYMMETRIC, PKCS8 = "csr-key", "asymmetric", "symmetric", "pkcs8"
UNASKED = (CSR_KEY, PKCS8)  # what a CSR without a decrypt-key attribute can get


@dataclass(frozen=True)
class Delivery:
    """How the key goes out: `kind`, and for the encrypted kinds the recipient and algorithms."""

    kind: str
    recipient: PublicKeyRecipient | KekRecipient | None = None
    key_transport: str = RSAES_OAEP_SHA256
    content_key_bytes: int | None = 32  # None: as long as the KEK (symmetric)

    @property
    def encrypted(self) -> bool:
        return self.kind != PKCS8


def choose(policy: Policy, ask: KeygenAsk, csr: x509.CertificateSigningRequest,
           client_cert: x509.Certificate | None, keks: KekTable, label: str, entity: str) -> Delivery:
    """The delivery for this request, or BadRequest saying why none is possible."""
    allowed = policy.serverkeygen_deliveries
    if ask.asymmetric_key_id is not None and ask.decrypt_key_id is not None:
        raise BadRequest("the CSR carries both AsymmetricDecryptKeyIdentifier and DecryptKeyIdentifier; "
                         "ask for one delivery")
    if ask.decrypt_key_id is not None:
        _allow(SYMMETRIC, allowed)
        kek = keks.find(ask.decrypt_key_id, label, entity)
        if kek is None:
            raise BadRequest(f"DecryptKeyIdentifier {ask.decrypt_key_id.hex()} names no pre-shared key "
                             "known to this server for this requester")
        return Delivery(SYMMETRIC, KekRecipient(kek.key, kek.kek_id), content_key_bytes=None)
    csr_key = csr.public_key()
    if ask.asymmetric_key_id is not None:
        kid = ask.asymmetric_key_id
        if _is_key_encryption_key(csr_key) and kid == key_identifier(csr_key):
            _allow(CSR_KEY, allowed)
            return _to_key(CSR_KEY, csr_key, kid, ask)
        if client_cert is not None and kid in _identifiers(client_cert):
            _allow(ASYMMETRIC, allowed)
            return _to_key(ASYMMETRIC, client_cert.public_key(), kid, ask)
        raise BadRequest(f"AsymmetricDecryptKeyIdentifier {kid.hex()} names no key known to this server "
                         "(known: the TLS client certificate's subject key identifier, or the CSR's own key)")
    kind = next((d for d in allowed if d in UNASKED), None)
    if kind is None:
        raise BadRequest("this label delivers server-generated keys only to a key the CSR names: add "
                         "AsymmetricDecryptKeyIdentifier or DecryptKeyIdentifier "
                         f"(allowed deliveries: {', '.join(allowed) or 'none'})")
    if kind == PKCS8:
        return Delivery(PKCS8)
    return _to_key(CSR_KEY, csr_key, key_identifier(csr_key) if _is_key_encryption_key(csr_key) else b"", ask)


def _allow(kind: str, allowed: tuple[str, ...]) -> None:
    if kind not in allowed:
        raise BadRequest(f"key delivery {kind!r} is not allowed on this label "
                         f"(allowed: {', '.join(allowed) or 'none'})")


def _is_key_encryption_key(key: object) -> bool:
    return isinstance(key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey))


def _to_key(kind: str, key: object, kid: bytes, ask: KeygenAsk) -> Delivery:
    if not _is_key_encryption_key(key) or not kid:
        what = "the CSR's key" if kind == CSR_KEY else "the client certificate's key"
        raise BadRequest(f"cannot encrypt to {what}: only RSA and EC keys can receive a key")
    return Delivery(kind, PublicKeyRecipient(key, kid), ask.key_transport(),  # type: ignore[arg-type]
                    ask.content_key_bytes())


def _identifiers(cert: x509.Certificate) -> set[bytes]:
    """How a client may name its certificate: the SKI extension, or the RFC 5280 method-1 key id."""
    ids = set()
    try:
        ids.add(cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest)
    except x509.ExtensionNotFound:
        pass
    if _is_key_encryption_key(cert.public_key()):
        ids.add(key_identifier(cert.public_key()))
    return ids

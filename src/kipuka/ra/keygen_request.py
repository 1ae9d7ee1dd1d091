"""What a /serverkeygen CSR asks for besides its names: a key to encrypt to, and algorithms.

RFC 7030 4.4.1: DecryptKeyIdentifier (id-aa-decryptKeyID) names a pre-shared
symmetric key; AsymmetricDecryptKeyIdentifier (id-aa-asymmDecryptKeyID) names
an asymmetric key, with SMIMECapabilities (RFC 8551 2.5.2) listing what the
client can decrypt. cryptography exposes only string-valued CSR attributes, so
the attribute set is read here with pyasn1 (PKCS #10, RFC 2986).
"""

from __future__ import annotations

from dataclasses import dataclass

from pyasn1.codec.der import decoder as der_decoder
from pyasn1.error import PyAsn1Error
from pyasn1.type import univ
from pyasn1_modules import rfc2986, rfc5751

from kipuka.errors import BadRequest
from kipuka.keydelivery import RSA_PKCS1_V15, RSAES_OAEP_SHA256
from kipuka.keydelivery import oids

DECRYPT_KEY_ID = "1.2.840.113549.1.9.16.2.37"             # RFC 7030 4.4.1.1
ASYMMETRIC_DECRYPT_KEY_ID = "1.2.840.113549.1.9.16.2.54"  # RFC 7030 4.4.1.2
SMIME_CAPABILITIES = "1.2.840.113549.1.9.15"              # RFC 8551 2.5.2
MAX_KEY_ID = 64


@dataclass(frozen=True)
class KeygenAsk:
    """The delivery-related attributes of a CSR; None where the CSR does not carry one."""

    decrypt_key_id: bytes | None = None
    asymmetric_key_id: bytes | None = None
    capabilities: tuple[str, ...] | None = None  # capability OIDs, in the client's order of preference

    def key_transport(self) -> str:
        """RSAES-OAEP unless the client lists only rsaEncryption (PKCS#1 v1.5) among key transports."""
        caps = self.capabilities or ()
        if oids.RSA_ENCRYPTION in caps and oids.ID_RSAES_OAEP not in caps:
            return RSA_PKCS1_V15
        return RSAES_OAEP_SHA256

    def content_key_bytes(self) -> int:
        """AES-256-CBC unless the client lists only shorter AES-CBC keys."""
        listed = [oids.AES_CBC_LEN[c] for c in self.capabilities or () if c in oids.AES_CBC_LEN]
        return max(listed) if listed else 32


def read_ask(csr_der: bytes) -> KeygenAsk:
    """The delivery attributes of a (already verified) DER CSR; a malformed one is a 400."""
    try:
        request, _ = der_decoder.decode(csr_der, asn1Spec=rfc2986.CertificationRequest())
    except PyAsn1Error:
        raise BadRequest("CSR attributes cannot be read (not DER)") from None
    found: dict[str, bytes] = {}
    for attribute in request["certificationRequestInfo"]["attributes"]:
        oid = str(attribute["type"])
        if oid not in (DECRYPT_KEY_ID, ASYMMETRIC_DECRYPT_KEY_ID, SMIME_CAPABILITIES):
            continue
        if oid in found:
            raise BadRequest(f"CSR repeats the attribute {oid}")
        values = attribute["values"]
        if len(values) != 1:
            raise BadRequest(f"CSR attribute {oid} must have exactly one value")
        found[oid] = bytes(values[0])
    return KeygenAsk(
        decrypt_key_id=_key_id(found.get(DECRYPT_KEY_ID), "DecryptKeyIdentifier"),
        asymmetric_key_id=_key_id(found.get(ASYMMETRIC_DECRYPT_KEY_ID), "AsymmetricDecryptKeyIdentifier"),
        capabilities=_capabilities(found.get(SMIME_CAPABILITIES)),
    )


def _key_id(der: bytes | None, name: str) -> bytes | None:
    if der is None:
        return None
    try:
        value, rest = der_decoder.decode(der, asn1Spec=univ.OctetString())
    except PyAsn1Error:
        raise BadRequest(f"CSR attribute {name} is not an OCTET STRING") from None
    if rest or not 0 < len(value) <= MAX_KEY_ID:
        raise BadRequest(f"CSR attribute {name} must be 1 to {MAX_KEY_ID} bytes")
    return bytes(value)


def _capabilities(der: bytes | None) -> tuple[str, ...] | None:
    if der is None:
        return None
    try:
        caps, rest = der_decoder.decode(der, asn1Spec=rfc5751.SMIMECapabilities())
    except PyAsn1Error:
        raise BadRequest("CSR attribute SMIMECapabilities is malformed") from None
    if rest:
        raise BadRequest("CSR attribute SMIMECapabilities is malformed")
    return tuple(str(cap["capabilityID"]) for cap in caps)

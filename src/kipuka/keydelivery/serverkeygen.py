"""RFC 7030 4.4.2: EnvelopedData(SignedData(AsymmetricKeyPackage)) for a server-generated key.

The key is signed by whoever generated it (so the client can tell who made its
key) and then encrypted to what the client asked for: a certificate, a bare
public key named by a key identifier (AsymmetricDecryptKeyIdentifier, or the
CSR's own key), or a pre-shared AES key (DecryptKeyIdentifier).

The EnvelopedData's encryptedContentInfo says id-signedData and its content is
the SignedData itself, not a ContentInfo around it: that is how CMS nests
(RFC 5652 5.2 and 6.1; RFC 9483 4.1.6 spells out the same layering for CMP).
The reader here also accepts a ContentInfo inside, which some senders produce.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from kipuka.keydelivery import oids
from kipuka.keydelivery._der import KeyDeliveryError
from kipuka.keydelivery.cms import read_content_info
from kipuka.keydelivery.enveloped import (
    RSAES_OAEP_SHA256,
    RecipientId,
    decrypt_enveloped,
    enveloped_for_certificate,
    enveloped_for_kek,
    enveloped_for_public_key,
)
from kipuka.keydelivery.keypackage import asymmetric_key_package, load_private_key, one_asymmetric_key, \
    read_asymmetric_key_package
from kipuka.keydelivery.signed import SignerKey, signed_data, verify_signed_data_content

SERVER_GENERATED_KEY = "application/pkcs7-mime; smime-type=server-generated-key"
PKCS8 = "application/pkcs8"


@dataclass(frozen=True)
class KekRecipient:
    """A pre-shared AES key-encryption key and the identifier the client knows it by."""

    kek: bytes = field(repr=False)
    kek_id: bytes

    def __post_init__(self) -> None:
        if len(self.kek) not in oids.AES_WRAP_BY_LEN:
            raise ValueError("a key-encryption key is 16, 24 or 32 bytes")
        if not (0 < len(self.kek_id) <= 64):
            raise ValueError("a key-encryption key identifier is 1..64 bytes")


@dataclass(frozen=True)
class PublicKeyRecipient:
    """An RSA or EC public key without a certificate, named in the RecipientInfo by `key_id`."""

    public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey
    key_id: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.public_key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey)):
            raise TypeError("the recipient key must be RSA or EC")
        if not (0 < len(self.key_id) <= 64):
            raise ValueError("a key identifier is 1..64 bytes")


Recipient = x509.Certificate | PublicKeyRecipient | KekRecipient | tuple[bytes, bytes]


@dataclass(frozen=True)
class OpenedKey:
    """A server-generated key taken out of its CMS layers, and who signed it."""

    private_key: PrivateKeyTypes
    one_asymmetric_key: bytes
    signer: x509.Certificate
    certificates: tuple[x509.Certificate, ...]


def server_generated_key_cms(
    private_key: PrivateKeyTypes,
    signer_key: SignerKey,
    signer_cert: x509.Certificate,
    recipient: Recipient,
    *,
    extra_certs: Iterable[x509.Certificate] = (),
    key_transport: str = RSAES_OAEP_SHA256,
    content_key_bytes: int | None = None,
) -> bytes:
    """DER ContentInfo(EnvelopedData(SignedData(AsymmetricKeyPackage))): the encrypted key part.

    `recipient` is a certificate, a PublicKeyRecipient, a KekRecipient or a
    (kek, kek_id) pair. The content key is AES-256 for public-key recipients
    and as long as the KEK for KEK recipients unless `content_key_bytes` says.
    """
    package = asymmetric_key_package([one_asymmetric_key(private_key)])
    signed = signed_data(package, oids.ID_CT_KP_AKEY_PACKAGE, signer_key, signer_cert, extra_certs)
    _, inner = read_content_info(signed)
    if isinstance(recipient, tuple):
        recipient = KekRecipient(*recipient)
    if isinstance(recipient, KekRecipient):
        return enveloped_for_kek(inner, oids.ID_SIGNED_DATA, recipient.kek, recipient.kek_id,
                                 content_key_bytes=content_key_bytes)
    if isinstance(recipient, PublicKeyRecipient):
        return enveloped_for_public_key(inner, oids.ID_SIGNED_DATA, recipient.public_key,
                                        RecipientId(key_id=recipient.key_id), key_transport=key_transport,
                                        content_key_bytes=content_key_bytes or 32)
    if isinstance(recipient, x509.Certificate):
        return enveloped_for_certificate(inner, oids.ID_SIGNED_DATA, recipient, key_transport=key_transport,
                                         content_key_bytes=content_key_bytes or 32)
    raise TypeError(f"unsupported recipient {type(recipient).__name__}")


def open_server_generated_key(
    der: bytes,
    *,
    private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | None = None,
    kek: bytes | None = None,
    kek_id: bytes | None = None,
    signer: x509.Certificate | None = None,
) -> OpenedKey:
    """Decrypt, verify and load a key made by server_generated_key_cms (or a peer's equivalent).

    The signature is checked against the certificate the SignedData names (or
    `signer`); whether that signer is trusted is the caller's decision.
    """
    ctype, content = decrypt_enveloped(der, private_key=private_key, kek=kek, kek_id=kek_id)
    if ctype != oids.ID_SIGNED_DATA:
        raise KeyDeliveryError(f"the EnvelopedData holds {ctype}, not id-signedData")
    if content[:1] == b"\x30":
        try:  # a ContentInfo around the SignedData (some senders): unwrap it
            inner_type, inner = read_content_info(content)
        except KeyDeliveryError:
            inner_type, inner = "", content
        if inner_type == oids.ID_SIGNED_DATA:
            content = inner
    verified = verify_signed_data_content(content, signer=signer)
    if verified.content_type != oids.ID_CT_KP_AKEY_PACKAGE:
        raise KeyDeliveryError(f"the SignedData holds {verified.content_type}, not id-ct-KP-aKeyPackage")
    keys = read_asymmetric_key_package(verified.content)
    if len(keys) != 1:
        raise KeyDeliveryError(f"expected one key in the package, found {len(keys)}")
    return OpenedKey(load_private_key(keys[0]), keys[0], verified.signer, verified.certificates)

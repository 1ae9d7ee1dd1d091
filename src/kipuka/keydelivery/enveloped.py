"""CMS EnvelopedData (RFC 5652 section 6) to an RSA key, an EC key or a pre-shared AES key.

cryptography's PKCS7EnvelopeBuilder encrypts to RSA certificates only and
always as id-data, while /serverkeygen must also reach EC keys (key agreement),
symmetric keys (RFC 7030's DecryptKeyIdentifier) and keys with no certificate
at all (RFC 7030's AsymmetricDecryptKeyIdentifier, or the CSR's own key), and
must label the content id-signedData. So the structure is built here:

- content: AES-CBC with a fresh key and IV (RFC 3565);
- RSA: KeyTransRecipientInfo, RSAES-OAEP with SHA-256 and MGF1-SHA-256
  (RFC 4055 / RFC 8017) or rsaEncryption, PKCS#1 v1.5 (RFC 3370);
- EC: KeyAgreeRecipientInfo, ephemeral-static ECDH, X9.63 KDF, AES key wrap
  (RFC 5753 section 3.1, dhSinglePass-stdDH-sha*kdf-scheme);
- symmetric: KEKRecipientInfo with AES key wrap (RFC 3394, RFC 3565 2.3.2).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, padding as sympadding, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.x963kdf import X963KDF
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap
from pyasn1.type import univ
from pyasn1_modules import rfc4055, rfc5652, rfc5753

from kipuka.keydelivery import oids
from kipuka.keydelivery._der import (
    DER_NULL,
    KeyDeliveryError,
    algorithm_identifier,
    decode,
    encode,
    oid,
)
from kipuka.keydelivery.cms import content_info, issuer_and_serial, read_content_info

# Key transport choices for RSA recipients.
RSAES_OAEP_SHA256 = "rsaes-oaep-sha256"
RSA_PKCS1_V15 = "rsa-pkcs1v15"
KEY_TRANSPORTS = (RSAES_OAEP_SHA256, RSA_PKCS1_V15)

_KDF_OID = {"sha256": oids.DH_SINGLE_PASS_STD_DH_SHA256KDF, "sha384": oids.DH_SINGLE_PASS_STD_DH_SHA384KDF,
            "sha512": oids.DH_SINGLE_PASS_STD_DH_SHA512KDF}
# Decryption also accepts what other senders commonly use: sha1/sha224 KDFs (RFC 5753 7.1.4).
_KDF_HASH = {oids.DH_SINGLE_PASS_STD_DH_SHA256KDF: hashes.SHA256, oids.DH_SINGLE_PASS_STD_DH_SHA384KDF: hashes.SHA384,
             oids.DH_SINGLE_PASS_STD_DH_SHA512KDF: hashes.SHA512, "1.3.133.16.840.63.0.2": hashes.SHA1,
             "1.3.132.1.11.0": hashes.SHA224}
_OAEP_HASH = {"1.3.14.3.2.26": hashes.SHA1, oids.ID_SHA256: hashes.SHA256, oids.ID_SHA384: hashes.SHA384,
              oids.ID_SHA512: hashes.SHA512, "2.16.840.1.101.3.4.2.4": hashes.SHA224}
# Nothing this package delivers is near this; a larger ciphertext is not a key package.
MAX_ENCRYPTED_CONTENT = 128 * 1024


@dataclass(frozen=True)
class RecipientId:
    """How the recipient is named: issuerAndSerialNumber (from a certificate) or a key identifier.

    RFC 7030 4.4.2 sets rid to the AsymmetricDecryptKeyIdentifier the client
    sent, i.e. a subjectKeyIdentifier, so both forms are needed.
    """

    issuer_and_serial: rfc5652.IssuerAndSerialNumber | None = None
    key_id: bytes | None = None

    def __post_init__(self) -> None:
        if (self.issuer_and_serial is None) == (self.key_id is None):
            raise ValueError("a recipient is named by exactly one of issuer_and_serial or key_id")
        if self.key_id is not None and not (0 < len(self.key_id) <= 64):
            raise ValueError("a key identifier is 1..64 bytes")


def _check_content(content: bytes) -> bytes:
    if not isinstance(content, (bytes, bytearray)):
        raise TypeError("content must be bytes")
    if not content:
        raise ValueError("content is empty")
    if len(content) > MAX_ENCRYPTED_CONTENT:
        raise ValueError(f"content is larger than {MAX_ENCRYPTED_CONTENT} bytes")
    return bytes(content)


def _encrypt_content(content: bytes, content_type_oid: str, cek: bytes) -> rfc5652.EncryptedContentInfo:
    """AES-CBC with PKCS#7 padding and a random IV (RFC 3565 4.1, RFC 5652 6.3)."""
    iv = os.urandom(16)
    padder = sympadding.PKCS7(128).padder()
    padded = padder.update(content) + padder.finalize()
    enc = Cipher(algorithms.AES(cek), modes.CBC(iv)).encryptor()
    ciphertext = enc.update(padded) + enc.finalize()
    eci = rfc5652.EncryptedContentInfo()
    eci["contentType"] = oid(content_type_oid)
    eci["contentEncryptionAlgorithm"] = algorithm_identifier(
        oids.AES_CBC_BY_LEN[len(cek)], encode(univ.OctetString(iv)))
    eci["encryptedContent"] = ciphertext
    return eci


def _enveloped(eci: rfc5652.EncryptedContentInfo, ri: rfc5652.RecipientInfo, version: int) -> bytes:
    env = rfc5652.EnvelopedData()
    env["version"] = version
    env["recipientInfos"].append(ri)
    env["encryptedContentInfo"] = eci
    return content_info(oids.ID_ENVELOPED_DATA, encode(env))


def _cek(length: int) -> bytes:
    if length not in oids.AES_CBC_BY_LEN:
        raise ValueError("the content-encryption key is 16, 24 or 32 bytes (AES-128/192/256)")
    return os.urandom(length)


def _ktri(public_key: rsa.RSAPublicKey, rid: RecipientId, cek: bytes, key_transport: str) -> rfc5652.RecipientInfo:
    if key_transport == RSAES_OAEP_SHA256:
        encrypted = public_key.encrypt(cek, padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None))
        # RSAES-OAEP-params {sha256, mgf1SHA256}, as RFC 4055's module defines them
        alg = algorithm_identifier(oids.ID_RSAES_OAEP, encode(rfc4055.rSAES_OAEP_SHA256_Params))
    elif key_transport == RSA_PKCS1_V15:
        encrypted = public_key.encrypt(cek, padding.PKCS1v15())
        alg = algorithm_identifier(oids.RSA_ENCRYPTION, DER_NULL)  # RFC 3370 4.2.1: NULL parameters
    else:
        raise ValueError(f"key_transport must be one of {KEY_TRANSPORTS}")
    ri = rfc5652.RecipientInfo()
    ktri = ri["ktri"]
    # Version 0 with issuerAndSerialNumber, 2 with subjectKeyIdentifier (RFC 5652 6.2.1).
    if rid.issuer_and_serial is not None:
        ktri["version"] = 0
        ktri["rid"]["issuerAndSerialNumber"] = rid.issuer_and_serial
    else:
        ktri["version"] = 2
        ktri["rid"]["subjectKeyIdentifier"] = rid.key_id
    ktri["keyEncryptionAlgorithm"] = alg
    ktri["encryptedKey"] = encrypted
    return ri


def _shared_info(wrap_oid: str, ukm: bytes | None, key_bytes: int) -> bytes:
    """DER ECC-CMS-SharedInfo, the X9.63 KDF's SharedInfo (RFC 5753 7.2)."""
    info = rfc5753.ECC_CMS_SharedInfo()
    info["keyInfo"]["algorithm"] = oid(wrap_oid)  # AES wrap: parameters absent (RFC 3565 2.3.2)
    if ukm is not None:
        info["entityUInfo"] = ukm
    info["suppPubInfo"] = (key_bytes * 8).to_bytes(4, "big")
    return encode(info)


def _kari(public_key: ec.EllipticCurvePublicKey, rid: RecipientId, cek: bytes,
          kdf_hash: hashes.HashAlgorithm) -> rfc5652.RecipientInfo:
    if kdf_hash.name not in _KDF_OID:
        raise ValueError("kdf_hash is SHA-256, SHA-384 or SHA-512")
    ephemeral = ec.generate_private_key(public_key.curve)
    shared = ephemeral.exchange(ec.ECDH(), public_key)
    wrap_oid = oids.AES_WRAP_BY_LEN[len(cek)]  # a wrapping key as strong as the key it wraps
    kek = X963KDF(kdf_hash, len(cek), _shared_info(wrap_oid, None, len(cek))).derive(shared)
    ri = rfc5652.RecipientInfo()
    kari = ri["kari"]
    kari["version"] = 3  # RFC 5652 6.2.2
    okey = kari["originator"]["originatorKey"]
    # id-ecPublicKey with absent parameters: the curve is the recipient's (RFC 5753 3.1.1, as OpenSSL sends).
    okey["algorithm"]["algorithm"] = oid(oids.ID_EC_PUBLIC_KEY)
    okey["publicKey"] = univ.BitString.fromOctetString(ephemeral.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint))
    kari["keyEncryptionAlgorithm"] = algorithm_identifier(
        _KDF_OID[kdf_hash.name], encode(algorithm_identifier(wrap_oid)))
    rek = rfc5652.RecipientEncryptedKey()
    if rid.issuer_and_serial is not None:
        rek["rid"]["issuerAndSerialNumber"] = rid.issuer_and_serial
    else:
        rek["rid"]["rKeyId"]["subjectKeyIdentifier"] = rid.key_id
    rek["encryptedKey"] = aes_key_wrap(kek, cek)
    kari["recipientEncryptedKeys"].append(rek)
    return ri


def enveloped_for_public_key(
    content: bytes,
    content_type_oid: str,
    public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey,
    recipient: RecipientId,
    *,
    key_transport: str = RSAES_OAEP_SHA256,
    content_key_bytes: int = 32,
    kdf_hash: hashes.HashAlgorithm | None = None,
) -> bytes:
    """DER ContentInfo(EnvelopedData) of `content` to an RSA or EC public key.

    RSA keys get a KeyTransRecipientInfo (`key_transport`), EC keys a
    KeyAgreeRecipientInfo with a fresh ephemeral key (`kdf_hash`, default SHA-256).
    """
    content = _check_content(content)
    cek = _cek(content_key_bytes)
    if isinstance(public_key, rsa.RSAPublicKey):
        ri = _ktri(public_key, recipient, cek, key_transport)
        version = 0 if recipient.issuer_and_serial is not None else 2  # RFC 5652 6.1
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        ri = _kari(public_key, recipient, cek, kdf_hash or hashes.SHA256())
        version = 2
    else:
        raise TypeError(f"recipient key type {type(public_key).__name__} is not supported (RSA or EC)")
    return _enveloped(_encrypt_content(content, content_type_oid, cek), ri, version)


def enveloped_for_certificate(
    content: bytes,
    content_type_oid: str,
    recipient_cert: x509.Certificate,
    *,
    key_transport: str = RSAES_OAEP_SHA256,
    content_key_bytes: int = 32,
    kdf_hash: hashes.HashAlgorithm | None = None,
) -> bytes:
    """DER ContentInfo(EnvelopedData) to a certificate's key, naming it by issuerAndSerialNumber."""
    return enveloped_for_public_key(
        content, content_type_oid, recipient_cert.public_key(),  # type: ignore[arg-type]
        RecipientId(issuer_and_serial=issuer_and_serial(recipient_cert)),
        key_transport=key_transport, content_key_bytes=content_key_bytes, kdf_hash=kdf_hash)


def enveloped_for_kek(
    content: bytes,
    content_type_oid: str,
    kek: bytes,
    kek_id: bytes,
    *,
    content_key_bytes: int | None = None,
) -> bytes:
    """DER ContentInfo(EnvelopedData) with a KEKRecipientInfo: a pre-shared AES key.

    The wrap algorithm follows the KEK's length (id-aes128/192/256-wrap); the
    content key defaults to the same length.
    """
    content = _check_content(content)
    if len(kek) not in oids.AES_WRAP_BY_LEN:
        raise ValueError("a key-encryption key is 16, 24 or 32 bytes (AES key wrap)")
    if not (0 < len(kek_id) <= 64):
        raise ValueError("a key-encryption key identifier is 1..64 bytes")
    cek = _cek(content_key_bytes or len(kek))
    ri = rfc5652.RecipientInfo()
    kekri = ri["kekri"]
    kekri["version"] = 4  # RFC 5652 6.2.3
    kekri["kekid"]["keyIdentifier"] = bytes(kek_id)
    kekri["keyEncryptionAlgorithm"] = algorithm_identifier(oids.AES_WRAP_BY_LEN[len(kek)])
    kekri["encryptedKey"] = aes_key_wrap(bytes(kek), cek)
    return _enveloped(_encrypt_content(content, content_type_oid, cek), ri, 2)


# --- decryption ------------------------------------------------------------------------------

def _unwrap_ktri(ktri, key: rsa.RSAPrivateKey) -> bytes:
    alg = str(ktri["keyEncryptionAlgorithm"]["algorithm"])
    encrypted = bytes(ktri["encryptedKey"])
    if alg == oids.RSA_ENCRYPTION:
        return key.decrypt(encrypted, padding.PKCS1v15())
    if alg != oids.ID_RSAES_OAEP:
        raise KeyDeliveryError(f"key transport algorithm {alg} is not supported")
    hash_cls: type[hashes.HashAlgorithm] = hashes.SHA1  # RSAES-OAEP-params defaults (RFC 4055 3.1)
    mgf_cls: type[hashes.HashAlgorithm] = hashes.SHA1
    params = ktri["keyEncryptionAlgorithm"]["parameters"]
    if params.isValue and bytes(params) not in (b"", DER_NULL):
        p = decode(bytes(params), rfc4055.RSAES_OAEP_params(), "RSAES-OAEP-params")
        if p["hashFunc"].isValue:
            hash_cls = _OAEP_HASH.get(str(p["hashFunc"]["algorithm"]))  # type: ignore[assignment]
        if p["maskGenFunc"].isValue:
            if str(p["maskGenFunc"]["algorithm"]) != oids.ID_MGF1:
                raise KeyDeliveryError("only MGF1 is supported for RSAES-OAEP")
            mgf = decode(bytes(p["maskGenFunc"]["parameters"]), rfc5652.DigestAlgorithmIdentifier(), "MGF1 hash")
            mgf_cls = _OAEP_HASH.get(str(mgf["algorithm"]))  # type: ignore[assignment]
        if p["pSourceFunc"].isValue:
            raise KeyDeliveryError("RSAES-OAEP with a label is not supported")
        if hash_cls is None or mgf_cls is None:
            raise KeyDeliveryError("RSAES-OAEP hash is not supported")
    return key.decrypt(encrypted, padding.OAEP(padding.MGF1(mgf_cls()), hash_cls(), None))


def _unwrap_kari(kari, key: ec.EllipticCurvePrivateKey) -> bytes | None:
    originator = kari["originator"]
    if originator.getName() != "originatorKey":
        raise KeyDeliveryError("key agreement with a static originator is not supported")
    point = originator["originatorKey"]["publicKey"].asOctets()
    peer = ec.EllipticCurvePublicKey.from_encoded_point(key.curve, point)
    shared = key.exchange(ec.ECDH(), peer)
    alg = str(kari["keyEncryptionAlgorithm"]["algorithm"])
    if alg not in _KDF_HASH:
        raise KeyDeliveryError(f"key agreement algorithm {alg} is not supported")
    wrap = decode(bytes(kari["keyEncryptionAlgorithm"]["parameters"]), rfc5753.KeyWrapAlgorithm(), "KeyWrapAlgorithm")
    wrap_oid = str(wrap["algorithm"])
    if wrap_oid not in oids.AES_WRAP_LEN:
        raise KeyDeliveryError(f"key wrap algorithm {wrap_oid} is not supported")
    length = oids.AES_WRAP_LEN[wrap_oid]
    ukm = bytes(kari["ukm"]) if kari["ukm"].isValue else None
    kek = X963KDF(_KDF_HASH[alg](), length, _shared_info(wrap_oid, ukm, length)).derive(shared)
    for rek in kari["recipientEncryptedKeys"]:
        try:
            return aes_key_unwrap(kek, bytes(rek["encryptedKey"]))
        except InvalidUnwrap:
            continue
    return None


def _unwrap_kekri(kekri, kek: bytes, kek_id: bytes | None) -> bytes | None:
    if kek_id is not None and bytes(kekri["kekid"]["keyIdentifier"]) != kek_id:
        return None
    alg = str(kekri["keyEncryptionAlgorithm"]["algorithm"])
    if oids.AES_WRAP_LEN.get(alg) != len(kek):
        raise KeyDeliveryError(f"key-encryption algorithm {alg} does not fit a {len(kek)}-byte key")
    return aes_key_unwrap(kek, bytes(kekri["encryptedKey"]))


def decrypt_enveloped(
    der: bytes,
    *,
    private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | None = None,
    kek: bytes | None = None,
    kek_id: bytes | None = None,
) -> tuple[str, bytes]:
    """(content type, content) of a DER ContentInfo(EnvelopedData).

    Tries each RecipientInfo that fits the key given; for a bare SignedData
    content (id-signedData), pass the content to verify_signed_data_content.
    """
    ctype, env_der = read_content_info(der)
    if ctype != oids.ID_ENVELOPED_DATA:
        raise KeyDeliveryError(f"expected an EnvelopedData, got content type {ctype}")
    env = decode(env_der, rfc5652.EnvelopedData(), "EnvelopedData")
    if private_key is None and kek is None:
        raise ValueError("give a private key or a key-encryption key")
    cek = None
    for ri in env["recipientInfos"]:
        kind = ri.getName()
        try:
            if kind == "ktri" and isinstance(private_key, rsa.RSAPrivateKey):
                cek = _unwrap_ktri(ri["ktri"], private_key)
            elif kind == "kari" and isinstance(private_key, ec.EllipticCurvePrivateKey):
                cek = _unwrap_kari(ri["kari"], private_key)
            elif kind == "kekri" and kek is not None:
                cek = _unwrap_kekri(ri["kekri"], bytes(kek), kek_id)
        except (ValueError, InvalidUnwrap) as exc:
            if isinstance(exc, KeyDeliveryError):
                raise
            cek = None
        if cek is not None:
            break
    if cek is None:
        raise KeyDeliveryError("no RecipientInfo could be decrypted with the key given")
    eci = env["encryptedContentInfo"]
    alg = str(eci["contentEncryptionAlgorithm"]["algorithm"])
    if oids.AES_CBC_LEN.get(alg) != len(cek):
        raise KeyDeliveryError(f"content encryption {alg} is not AES-CBC with a {len(cek)}-byte key")
    iv = bytes(decode(bytes(eci["contentEncryptionAlgorithm"]["parameters"]), univ.OctetString(), "AES-CBC IV"))
    if len(iv) != 16:
        raise KeyDeliveryError("AES-CBC IV is not 16 bytes")
    if not eci["encryptedContent"].isValue:
        raise KeyDeliveryError("EnvelopedData without encrypted content (detached) is not supported")
    ciphertext = bytes(eci["encryptedContent"])
    if not ciphertext or len(ciphertext) % 16 or len(ciphertext) > MAX_ENCRYPTED_CONTENT + 16:
        raise KeyDeliveryError("encrypted content has a bad length")
    dec = Cipher(algorithms.AES(cek), modes.CBC(iv)).decryptor()
    padded = dec.update(ciphertext) + dec.finalize()
    unpadder = sympadding.PKCS7(128).unpadder()
    try:
        content = unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        raise KeyDeliveryError("decrypted content has bad padding") from None
    return str(eci["contentType"]), content

"""Opening a server-generated key (RFC 7030 4.4.2): CMS EnvelopedData, then SignedData.

cryptography's own CMS decryption (`pkcs7_decrypt_der`) wants the recipient
certificate and handles RSA only, but a /serverkeygen client often has no
certificate for the key it decrypts with (the throwaway CSR key, or a key
named by AsymmetricDecryptKeyIdentifier) and EC recipients are common. So the
structures are read with pyasn1 and the primitives come from cryptography:

- KeyTransRecipientInfo: RSA PKCS#1 v1.5 or RSAES-OAEP (SHA-1/256/384/512);
- KeyAgreeRecipientInfo: ephemeral-static ECDH (dhSinglePass-stdDH-sha*kdf,
  RFC 5753) with AES key wrap;
- KEKRecipientInfo: a pre-shared AES key-encryption key (DecryptKeyIdentifier);
- content: AES-128/192/256-CBC.

The decrypted content is a SignedData over an AsymmetricKeyPackage (RFC 5958)
per RFC 7030; its signature is verified (signed attributes, messageDigest;
RSA PKCS#1 v1.5, ECDSA, Ed25519) against the signer certificate it carries.
A bare PrivateKeyInfo / OneAsymmetricKey as content is accepted too (what
some servers and `openssl cms -encrypt` of a PKCS#8 file produce); the result
says whether a signature was checked.

This reader deliberately does not reuse kipuka.keydelivery, the server's CMS
code: the client is the test suite's independent check of what the server
sends, and a mistake shared by encoder and decoder would pass unseen. It is
also more lenient, as a client must be with other servers (no signed
attributes, bare PKCS#8 content, several recipients tried in turn).
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, padding as sympadding, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.x963kdf import X963KDF
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap
from pyasn1.codec.ber import decoder as ber_decoder
from pyasn1.codec.der import encoder as der_encoder
from pyasn1.error import PyAsn1Error
from pyasn1.type import univ
from pyasn1.type.base import NoValue
from pyasn1_modules import rfc4055, rfc5280, rfc5652, rfc5958

from kipuka import pq
from kipuka.client.errors import DecryptionError, InvalidResponse

ID_DATA = "1.2.840.113549.1.7.1"
ID_SIGNED_DATA = "1.2.840.113549.1.7.2"
ID_ENVELOPED_DATA = "1.2.840.113549.1.7.3"
ID_CT_KP_AKEY_PACKAGE = "2.16.840.1.101.2.1.2.78.5"
ID_MESSAGE_DIGEST = "1.2.840.113549.1.9.4"
RSA_ENCRYPTION = "1.2.840.113549.1.1.1"
RSAES_OAEP = "1.2.840.113549.1.1.7"
AES_CBC = {"2.16.840.1.101.3.4.1.2": 16, "2.16.840.1.101.3.4.1.22": 24, "2.16.840.1.101.3.4.1.42": 32}
AES_WRAP = {"2.16.840.1.101.3.4.1.5": 16, "2.16.840.1.101.3.4.1.25": 24, "2.16.840.1.101.3.4.1.45": 32}
ECDH_KDF = {"1.3.133.16.840.63.0.2": hashes.SHA1, "1.3.132.1.11.0": hashes.SHA224,
            "1.3.132.1.11.1": hashes.SHA256, "1.3.132.1.11.2": hashes.SHA384, "1.3.132.1.11.3": hashes.SHA512}
DIGESTS = {"1.3.14.3.2.26": hashes.SHA1, "2.16.840.1.101.3.4.2.1": hashes.SHA256,
           "2.16.840.1.101.3.4.2.2": hashes.SHA384, "2.16.840.1.101.3.4.2.3": hashes.SHA512,
           "2.16.840.1.101.3.4.2.4": hashes.SHA224}
SIG_HASH = {"1.2.840.113549.1.1.11": hashes.SHA256, "1.2.840.113549.1.1.12": hashes.SHA384,
            "1.2.840.113549.1.1.13": hashes.SHA512, "1.2.840.10045.4.3.2": hashes.SHA256,
            "1.2.840.10045.4.3.3": hashes.SHA384, "1.2.840.10045.4.3.4": hashes.SHA512,
            "1.2.840.113549.1.1.5": hashes.SHA1, "1.2.840.10045.4.1": hashes.SHA1}
ID_ED25519 = "1.3.101.112"
ID_EC_PUBLIC_KEY = "1.2.840.10045.2.1"


@dataclass
class OpenedKey:
    private_key: object                      # a cryptography private key
    der: bytes                               # PKCS#8 DER of it
    signed: bool                             # a SignedData signature was verified
    signer: x509.Certificate | None = None   # who signed the key package


def open_server_generated_key(der: bytes, *, private_key: object | None = None,
                              kek: bytes | None = None, kek_id: bytes | None = None) -> OpenedKey:
    """Decrypt an `application/pkcs7-mime; smime-type=server-generated-key` part."""
    content_type, content = _content_info(der)
    if content_type == ID_SIGNED_DATA:  # signed but not encrypted (TLS-only protection)
        return _key_from(_signed_content(content))
    if content_type != ID_ENVELOPED_DATA:
        raise InvalidResponse(f"server-generated key: unexpected CMS content type {content_type}")
    inner = decrypt_enveloped(content, private_key=private_key, kek=kek, kek_id=kek_id)
    try:
        inner_type, inner_content = _content_info(inner)
    except InvalidResponse:
        inner_type, inner_content = "", b""
    if inner_type == ID_SIGNED_DATA:
        return _key_from(_signed_content(inner_content))
    if _is_signed_data(inner):  # the SignedData itself, as CMS nests content (RFC 5652 6.1; kipuka sends this)
        return _key_from(_signed_content(inner))
    return _key_from((inner, None))


def _is_signed_data(der: bytes) -> bool:
    try:
        _decode(der, rfc5652.SignedData(), "SignedData")
    except InvalidResponse:
        return False
    return True


def decrypt_enveloped(content: bytes, *, private_key: object | None = None, kek: bytes | None = None,
                      kek_id: bytes | None = None) -> bytes:
    env = _decode(content, rfc5652.EnvelopedData(), "EnvelopedData")
    if private_key is None and kek is None:
        raise DecryptionError("the server-generated key is encrypted; no decryption key was given")
    ceks: list[bytes] = []
    tried: list[str] = []
    for ri in env["recipientInfos"]:
        kind = ri.getName()
        tried.append(kind)
        try:
            if kind == "ktri" and isinstance(private_key, rsa.RSAPrivateKey):
                cek = _ktri(ri["ktri"], private_key)
            elif kind == "kari" and isinstance(private_key, ec.EllipticCurvePrivateKey):
                cek = _kari(ri["kari"], private_key)
            elif kind == "kekri" and kek is not None:
                cek = _kekri(ri["kekri"], kek, kek_id)
            else:
                cek = None
        except (ValueError, InvalidUnwrap, UnsupportedAlgorithm):
            cek = None
        if cek is not None:
            ceks.append(cek)
    eci = env["encryptedContentInfo"]
    alg = str(eci["contentEncryptionAlgorithm"]["algorithm"])
    if alg not in AES_CBC:
        raise DecryptionError(f"content encryption algorithm {alg} is not supported (AES-CBC only)")
    iv = bytes(_decode(bytes(eci["contentEncryptionAlgorithm"]["parameters"]), univ.OctetString(), "IV"))
    if not eci["encryptedContent"].isValue:
        raise DecryptionError("EnvelopedData carries no encrypted content (detached content is not supported)")
    ciphertext = bytes(eci["encryptedContent"])
    # RSA PKCS#1 v1.5 decryption with a wrong key yields a random key rather than an error
    # (implicit rejection), so a content key only counts once the content decrypts with it.
    for cek in ceks:
        if len(cek) != AES_CBC[alg]:
            continue
        decryptor = Cipher(algorithms.AES(cek), modes.CBC(iv)).decryptor()
        padded = decryptor.update(ciphertext) + decryptor.finalize()
        unpadder = sympadding.PKCS7(128).unpadder()
        try:
            return unpadder.update(padded) + unpadder.finalize()
        except ValueError:
            continue
    have = type(private_key).__name__ if private_key is not None else "the symmetric key"
    raise DecryptionError(f"none of the recipients ({', '.join(tried) or 'none'}) can be decrypted with {have}")


def _ktri(ktri, key: rsa.RSAPrivateKey) -> bytes:
    alg = str(ktri["keyEncryptionAlgorithm"]["algorithm"])
    encrypted = bytes(ktri["encryptedKey"])
    if alg == RSA_ENCRYPTION:
        return key.decrypt(encrypted, padding.PKCS1v15())
    if alg == RSAES_OAEP:
        hash_cls: type[hashes.HashAlgorithm] = hashes.SHA1
        mgf_hash: type[hashes.HashAlgorithm] = hashes.SHA1
        params = ktri["keyEncryptionAlgorithm"]["parameters"]
        if params.isValue and bytes(params) not in (b"", b"\x05\x00"):
            oaep = _decode(bytes(params), rfc4055.RSAES_OAEP_params(), "RSAES-OAEP-params")
            if oaep["hashFunc"].isValue:
                hash_cls = DIGESTS.get(str(oaep["hashFunc"]["algorithm"]), hashes.SHA1)
            if oaep["maskGenFunc"].isValue and oaep["maskGenFunc"]["parameters"].isValue:
                mgf_alg = _decode(bytes(oaep["maskGenFunc"]["parameters"]), rfc5280.AlgorithmIdentifier(), "MGF hash")
                mgf_hash = DIGESTS.get(str(mgf_alg["algorithm"]), hashes.SHA1)
        return key.decrypt(encrypted, padding.OAEP(padding.MGF1(mgf_hash()), hash_cls(), None))
    raise ValueError(f"key transport algorithm {alg} is not supported")


def _kari(kari, key: ec.EllipticCurvePrivateKey) -> bytes | None:
    originator = kari["originator"]
    if originator.getName() != "originatorKey":
        raise ValueError("key agreement with a static originator certificate is not supported")
    point = originator["originatorKey"]["publicKey"].asOctets()
    peer = ec.EllipticCurvePublicKey.from_encoded_point(key.curve, point)
    shared = key.exchange(ec.ECDH(), peer)
    alg = str(kari["keyEncryptionAlgorithm"]["algorithm"])
    if alg not in ECDH_KDF:
        raise ValueError(f"key agreement algorithm {alg} is not supported")
    wrap = _decode(bytes(kari["keyEncryptionAlgorithm"]["parameters"]), rfc5280.AlgorithmIdentifier(), "KeyWrapAlgorithm")
    wrap_oid = str(wrap["algorithm"])
    if wrap_oid not in AES_WRAP:
        raise ValueError(f"key wrap algorithm {wrap_oid} is not supported")
    length = AES_WRAP[wrap_oid]
    ukm = bytes(kari["ukm"]) if kari["ukm"].isValue else None
    shared_info = _ecc_cms_shared_info(wrap_oid, ukm, length * 8)
    kek = X963KDF(ECDH_KDF[alg](), length, shared_info).derive(shared)
    for rek in kari["recipientEncryptedKeys"]:
        try:
            return aes_key_unwrap(kek, bytes(rek["encryptedKey"]))
        except InvalidUnwrap:
            continue
    return None


def _ecc_cms_shared_info(wrap_oid: str, ukm: bytes | None, bits: int) -> bytes:
    """ECC-CMS-SharedInfo (RFC 5753 7.2), DER by hand: the structure is tiny."""
    key_info = der_encoder.encode(univ.Sequence().setComponentByPosition(0, univ.ObjectIdentifier(wrap_oid)))
    body = key_info
    if ukm is not None:
        body += _tlv(0xA0, _tlv(0x04, ukm))
    body += _tlv(0xA2, _tlv(0x04, bits.to_bytes(4, "big")))
    return _tlv(0x30, body)


def _tlv(tag: int, value: bytes) -> bytes:
    n = len(value)
    if n < 0x80:
        length = bytes([n])
    else:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(raw)]) + raw
    return bytes([tag]) + length + value


def _kekri(kekri, kek: bytes, kek_id: bytes | None) -> bytes | None:
    if kek_id is not None and bytes(kekri["kekid"]["keyIdentifier"]) != kek_id:
        return None
    alg = str(kekri["keyEncryptionAlgorithm"]["algorithm"])
    if alg not in AES_WRAP:
        raise ValueError(f"key-encryption algorithm {alg} is not supported")
    return aes_key_unwrap(kek, bytes(kekri["encryptedKey"]))


# --- SignedData --------------------------------------------------------------------------

def _signed_content(content: bytes) -> tuple[bytes, x509.Certificate]:
    sd = _decode(content, rfc5652.SignedData(), "SignedData")
    encap = sd["encapContentInfo"]
    if not encap["eContent"].isValue:
        raise InvalidResponse("server-generated key: SignedData without content")
    econtent = bytes(encap["eContent"])
    certs = []
    if sd["certificates"].isValue:
        for choice in sd["certificates"]:
            if choice.getName() == "certificate":
                certs.append(x509.load_der_x509_certificate(der_encoder.encode(choice["certificate"])))
    if len(sd["signerInfos"]) == 0:
        raise InvalidResponse("server-generated key: SignedData has no signer")
    si = sd["signerInfos"][0]
    signer = _find_signer(si["sid"], certs)
    if signer is None:
        raise InvalidResponse("server-generated key: the signer's certificate is not in the SignedData")
    _verify_signer_info(si, econtent, signer)
    return econtent, signer


def _find_signer(sid, certs: list[x509.Certificate]) -> x509.Certificate | None:
    if sid.getName() == "issuerAndSerialNumber":
        serial = int(sid["issuerAndSerialNumber"]["serialNumber"])
        issuer_der = der_encoder.encode(sid["issuerAndSerialNumber"]["issuer"])
        for cert in certs:
            if cert.serial_number == serial and cert.issuer.public_bytes() == issuer_der:
                return cert
        return None
    ski = bytes(sid["subjectKeyIdentifier"])
    for cert in certs:
        try:
            if cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest == ski:
                return cert
        except x509.ExtensionNotFound:
            continue
    return None


def _verify_signer_info(si, econtent: bytes, signer: x509.Certificate) -> None:
    digest_oid = str(si["digestAlgorithm"]["algorithm"])
    sig_oid = str(si["signatureAlgorithm"]["algorithm"])
    hash_cls = DIGESTS.get(digest_oid)
    if hash_cls is None:
        raise InvalidResponse(f"server-generated key: digest algorithm {digest_oid} is not supported")
    if si["signedAttrs"].isValue:
        digest = None
        for attr in si["signedAttrs"]:
            if str(attr["attrType"]) == ID_MESSAGE_DIGEST:
                digest = bytes(_decode(bytes(attr["attrValues"][0]), univ.OctetString(), "messageDigest"))
        h = hashes.Hash(hash_cls())
        h.update(econtent)
        if digest is None or digest != h.finalize():
            raise InvalidResponse("server-generated key: messageDigest does not match the key package")
        signed = bytearray(der_encoder.encode(si["signedAttrs"]))
        signed[0] = 0x31  # signed over the DER of SET OF, not the [0] IMPLICIT tag
        data = bytes(signed)
    else:
        data = econtent
    signature = bytes(si["signature"])
    pub = signer.public_key()
    try:
        if isinstance(pub, rsa.RSAPublicKey):
            pub.verify(signature, data, padding.PKCS1v15(), SIG_HASH.get(sig_oid, hash_cls)())
        elif isinstance(pub, ec.EllipticCurvePublicKey):
            pub.verify(signature, data, ec.ECDSA(SIG_HASH.get(sig_oid, hash_cls)()))
        elif isinstance(pub, ed25519.Ed25519PublicKey) or pq.is_mldsa(pub):
            if pq.is_mldsa(pub) and sig_oid != pq.algorithm_oid(pub):
                raise InvalidResponse("server-generated key: signature algorithm does not fit the ML-DSA signer")
            pub.verify(signature, data)  # type: ignore[union-attr]
        else:
            raise InvalidResponse(f"server-generated key: signer key type {type(pub).__name__} is not supported")
    except InvalidSignature:
        raise InvalidResponse("server-generated key: the SignedData signature does not verify") from None


# --- the key itself ----------------------------------------------------------------------

def _key_from(item: tuple[bytes, x509.Certificate | None]) -> OpenedKey:
    content, signer = item
    candidates = [content]
    try:  # AsymmetricKeyPackage ::= SEQUENCE OF OneAsymmetricKey
        package, rest = ber_decoder.decode(content, asn1Spec=rfc5958.AsymmetricKeyPackage())
        if not rest and len(package) >= 1:
            candidates.insert(0, der_encoder.encode(package[0]))
    except PyAsn1Error:
        pass
    for der in candidates:
        try:
            key = serialization.load_der_private_key(der, None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            continue
        pkcs8 = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
        return OpenedKey(key, pkcs8, signer is not None, signer)
    raise InvalidResponse("server-generated key: decrypted content is not a private key")


def _content_info(der: bytes) -> tuple[str, bytes]:
    ci = _decode(der, rfc5652.ContentInfo(), "CMS ContentInfo")
    return str(ci["contentType"]), bytes(ci["content"])


def _decode(der: bytes, spec, what: str):
    try:
        value, rest = ber_decoder.decode(der, asn1Spec=spec)
    except PyAsn1Error as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]  # pyasn1's EndOfStreamError has no text
        raise InvalidResponse(f"{what} does not parse: {first[:160]}") from None
    if rest.strip(b"\x00"):
        raise InvalidResponse(f"{what}: trailing bytes")
    if isinstance(value, NoValue):  # an end-of-contents marker (00 00) decodes to no value at all
        raise InvalidResponse(f"{what} does not parse: no value")
    return value


def key_id(public_key: object) -> bytes:
    """A conventional key identifier: SHA-1 of the subjectPublicKey bits (RFC 5280 4.2.1.2 (1))."""
    ski = x509.SubjectKeyIdentifier.from_public_key(public_key)  # type: ignore[arg-type]
    return ski.digest


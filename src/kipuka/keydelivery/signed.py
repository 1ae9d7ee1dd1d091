"""CMS SignedData (RFC 5652 section 5) over an arbitrary content type.

cryptography's PKCS7SignatureBuilder always signs id-data, but RFC 7030 4.4.2
needs eContentType id-ct-KP-aKeyPackage, so the structure is built with
pyasn1-modules and signed with cryptography's primitives. The signer is
named by issuerAndSerialNumber (SignerInfo v1) and the signed attributes are
content-type, message-digest and signing-time, the set RFC 5652 11.1-11.3 and
every verifier (OpenSSL, Bouncy Castle) handle. An ML-DSA signer (a post-quantum
CA) follows RFC 9882: signatureAlgorithm id-ml-dsa-NN without parameters, SHA-512
as the digest algorithm, pure ML-DSA over the DER signed attributes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from pyasn1.type import univ, useful
from pyasn1_modules import rfc5652

from kipuka import pq
from kipuka.keydelivery import oids
from kipuka.keydelivery._der import (
    DER_NULL,
    KeyDeliveryError,
    algorithm_identifier,
    children,
    decode,
    encode,
    oid,
)
from kipuka.keydelivery.cms import (
    certificate_choice,
    content_info,
    issuer_and_serial,
    read_content_info,
    subject_key_identifier,
)

SignerKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | pq.PrivateKey

_DIGEST_OID = {"sha256": oids.ID_SHA256, "sha384": oids.ID_SHA384, "sha512": oids.ID_SHA512}
_DIGEST_BY_OID = {oids.ID_SHA256: hashes.SHA256, oids.ID_SHA384: hashes.SHA384, oids.ID_SHA512: hashes.SHA512}
_RSA_SIG = {"sha256": oids.SHA256_WITH_RSA, "sha384": oids.SHA384_WITH_RSA, "sha512": oids.SHA512_WITH_RSA}
_ECDSA_SIG = {"sha256": oids.ECDSA_WITH_SHA256, "sha384": oids.ECDSA_WITH_SHA384, "sha512": oids.ECDSA_WITH_SHA512}
_SIG_HASH = {oids.SHA256_WITH_RSA: hashes.SHA256, oids.SHA384_WITH_RSA: hashes.SHA384,
             oids.SHA512_WITH_RSA: hashes.SHA512, oids.ECDSA_WITH_SHA256: hashes.SHA256,
             oids.ECDSA_WITH_SHA384: hashes.SHA384, oids.ECDSA_WITH_SHA512: hashes.SHA512}
# A certificate set larger than this is not a signer chain.
MAX_CERTIFICATES = 16


@dataclass(frozen=True)
class VerifiedContent:
    """What a verified SignedData carries, and who signed it."""

    content_type: str
    content: bytes
    signer: x509.Certificate
    certificates: tuple[x509.Certificate, ...]


def _hash_for(key: SignerKey, hash_algorithm: hashes.HashAlgorithm | None) -> hashes.HashAlgorithm:
    """The digest: the caller's, else one matching the key's strength (SHA-384 for P-384, ...)."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        if hash_algorithm is not None and not isinstance(hash_algorithm, hashes.SHA512):
            raise ValueError("Ed25519 SignedData uses SHA-512 as its digest algorithm (RFC 8419)")
        return hashes.SHA512()
    if pq.is_mldsa(key) and hash_algorithm is None:
        return pq.cms_digest()  # RFC 9882 §3.3: SHA-512
    if hash_algorithm is not None:
        if hash_algorithm.name not in _DIGEST_OID:
            raise ValueError(f"digest {hash_algorithm.name} is not offered (SHA-256/384/512 only)")
        return hash_algorithm
    if isinstance(key, ec.EllipticCurvePrivateKey):
        size = key.curve.key_size
        return hashes.SHA256() if size <= 256 else hashes.SHA384() if size <= 384 else hashes.SHA512()
    return hashes.SHA256()


def _signature_algorithm(key: SignerKey, digest: hashes.HashAlgorithm) -> tuple[str, bytes | None]:
    """(signatureAlgorithm OID, DER parameters or None for absent) per RFC 5754 / RFC 8419."""
    if isinstance(key, rsa.RSAPrivateKey):
        return _RSA_SIG[digest.name], DER_NULL  # RFC 4055: NULL parameters for PKCS#1 v1.5 signatures
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return _ECDSA_SIG[digest.name], None    # RFC 5758: parameters absent
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return oids.ID_ED25519, None
    if pq.is_mldsa(key):
        return pq.algorithm_oid(key), None     # RFC 9882 §3.3: parameters absent
    raise TypeError(f"signer key type {type(key).__name__} is not supported (RSA, EC, Ed25519 or ML-DSA)")


def _sign(key: SignerKey, data: bytes, digest: hashes.HashAlgorithm) -> bytes:
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), digest)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(digest))
    return key.sign(data)


def _attribute(type_oid: str, value: object) -> rfc5652.Attribute:
    attr = rfc5652.Attribute()
    attr["attrType"] = oid(type_oid)
    attr["attrValues"].append(univ.Any(encode(value)))
    return attr


def _signing_time(when: dt.datetime) -> rfc5652.Time:
    """UTCTime for 1950-2049, GeneralizedTime otherwise (RFC 5652 11.3)."""
    when = when.astimezone(dt.timezone.utc) if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)
    value = rfc5652.Time()
    if 1950 <= when.year <= 2049:
        value["utcTime"] = useful.UTCTime(when.strftime("%y%m%d%H%M%SZ"))
    else:
        value["generalTime"] = useful.GeneralizedTime(when.strftime("%Y%m%d%H%M%SZ"))
    return value


def _same_key(private_key: SignerKey, cert: x509.Certificate) -> bool:
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private_key.public_key().public_bytes(*fmt) == cert.public_key().public_bytes(*fmt)


def signed_data(
    content: bytes,
    content_type_oid: str,
    signer_key: SignerKey,
    signer_cert: x509.Certificate,
    extra_certs: Iterable[x509.Certificate] = (),
    *,
    hash_algorithm: hashes.HashAlgorithm | None = None,
    signing_time: dt.datetime | None = None,
) -> bytes:
    """DER ContentInfo(SignedData) with `content` encapsulated under `content_type_oid`.

    The signer certificate and `extra_certs` (its chain, for the recipient to
    build a path) go into `certificates`. Refuses a key that does not match the
    certificate, since the result would never verify.
    """
    if not isinstance(content, (bytes, bytearray)):
        raise TypeError("content must be bytes")
    if not _same_key(signer_key, signer_cert):
        raise ValueError("signer_key is not the key of signer_cert")
    digest = _hash_for(signer_key, hash_algorithm)
    digest_oid = _DIGEST_OID[digest.name]
    sig_oid, sig_params = _signature_algorithm(signer_key, digest)

    h = hashes.Hash(digest)
    h.update(bytes(content))
    signer_info = rfc5652.SignerInfo()
    signer_info["version"] = 1  # issuerAndSerialNumber (RFC 5652 5.3)
    signer_info["sid"]["issuerAndSerialNumber"] = issuer_and_serial(signer_cert)
    signer_info["digestAlgorithm"] = algorithm_identifier(digest_oid)
    attrs = signer_info["signedAttrs"]
    attrs.append(_attribute(oids.ID_CONTENT_TYPE, oid(content_type_oid)))
    attrs.append(_attribute(oids.ID_SIGNING_TIME, _signing_time(signing_time or dt.datetime.now(dt.timezone.utc))))
    attrs.append(_attribute(oids.ID_MESSAGE_DIGEST, univ.OctetString(h.finalize())))
    # The signature covers the DER of the attributes as a SET OF (tag 0x31), not
    # the [0] IMPLICIT tag they carry inside SignerInfo (RFC 5652 5.4).
    tagged = encode(attrs)
    to_sign = b"\x31" + tagged[1:]
    signer_info["signatureAlgorithm"] = algorithm_identifier(sig_oid, sig_params)
    signer_info["signature"] = _sign(signer_key, to_sign, digest)

    sd = rfc5652.SignedData()
    # Version 3 when eContentType is not id-data (RFC 5652 5.1), else 1.
    sd["version"] = 1 if content_type_oid == oids.ID_DATA else 3
    sd["digestAlgorithms"].append(algorithm_identifier(digest_oid))
    sd["encapContentInfo"]["eContentType"] = oid(content_type_oid)
    sd["encapContentInfo"]["eContent"] = bytes(content)
    seen: set[bytes] = set()
    for cert in (signer_cert, *extra_certs):
        fp = cert.fingerprint(hashes.SHA256())
        if fp not in seen:
            seen.add(fp)
            sd["certificates"].append(certificate_choice(cert))
    sd["signerInfos"].append(signer_info)
    return content_info(oids.ID_SIGNED_DATA, encode(sd))


# --- reading ---------------------------------------------------------------------------------

def _raw_signed_attrs(signed_data_der: bytes) -> list[bytes | None] | None:
    """The [0] signedAttrs TLV of each SignerInfo as received, or None for a non-DER SignedData.

    RFC 5652 5.4 signs the DER of the attributes; using the received bytes as
    well tolerates a sender that got the SET OF order wrong.
    """
    try:
        signer_infos = children(signed_data_der)[-1]
        return [next((c for c in children(si) if c[0] == 0xA0), None) for si in children(signer_infos)]
    except KeyDeliveryError:
        return None  # indefinite lengths (BER): fall back to the DER re-encoding alone


def _find_signer(sid: rfc5652.SignerIdentifier, certs: list[x509.Certificate]) -> x509.Certificate | None:
    if sid.getName() == "issuerAndSerialNumber":
        want = encode(sid["issuerAndSerialNumber"])
        for cert in certs:
            try:
                if encode(issuer_and_serial(cert)) == want:
                    return cert
            except KeyDeliveryError:
                continue
        return None
    ski = bytes(sid["subjectKeyIdentifier"])
    return next((c for c in certs if subject_key_identifier(c) == ski), None)


def _verify(pub: object, signature: bytes, data: bytes, sig_oid: str, digest: hashes.HashAlgorithm) -> None:
    try:
        if isinstance(pub, rsa.RSAPublicKey):
            if sig_oid not in (*_RSA_SIG.values(), oids.RSA_ENCRYPTION):
                raise KeyDeliveryError(f"signature algorithm {sig_oid} does not fit an RSA key")
            pub.verify(signature, data, padding.PKCS1v15(), _SIG_HASH.get(sig_oid, type(digest))())
        elif isinstance(pub, ec.EllipticCurvePublicKey):
            if sig_oid not in _ECDSA_SIG.values():
                raise KeyDeliveryError(f"signature algorithm {sig_oid} does not fit an EC key")
            pub.verify(signature, data, ec.ECDSA(_SIG_HASH[sig_oid]()))
        elif isinstance(pub, ed25519.Ed25519PublicKey):
            if sig_oid != oids.ID_ED25519:
                raise KeyDeliveryError(f"signature algorithm {sig_oid} does not fit an Ed25519 key")
            pub.verify(signature, data)
        elif pq.is_mldsa(pub):
            if sig_oid != pq.algorithm_oid(pub):
                raise KeyDeliveryError(f"signature algorithm {sig_oid} does not fit an {pq.key_type(pub)} key")
            pub.verify(signature, data)  # type: ignore[union-attr]
        else:
            raise KeyDeliveryError(f"signer key type {type(pub).__name__} is not supported")
    except InvalidSignature:
        raise KeyDeliveryError("the SignedData signature does not verify") from None


def verify_signed_data(der: bytes, *, signer: x509.Certificate | None = None) -> VerifiedContent:
    """Check the one SignerInfo of a DER ContentInfo(SignedData); return the content.

    Verifies the signature, the message-digest attribute and that the
    content-type attribute equals eContentType. It does not build or validate a
    certificate path: the caller decides whether the returned signer is trusted
    (or passes `signer`, which must then be the one named by the SignerInfo).
    """
    ctype, sd_der = read_content_info(der)
    if ctype != oids.ID_SIGNED_DATA:
        raise KeyDeliveryError(f"expected a SignedData, got content type {ctype}")
    return verify_signed_data_content(sd_der, signer=signer)


def verify_signed_data_content(sd_der: bytes, *, signer: x509.Certificate | None = None) -> VerifiedContent:
    """Like verify_signed_data, for a bare SignedData (what an EnvelopedData of id-signedData holds)."""
    sd = decode(sd_der, rfc5652.SignedData(), "SignedData")
    encap = sd["encapContentInfo"]
    if not encap["eContent"].isValue:
        raise KeyDeliveryError("SignedData has no encapsulated content (detached signatures are not accepted)")
    econtent = bytes(encap["eContent"])
    etype = str(encap["eContentType"])
    certs: list[x509.Certificate] = []
    if sd["certificates"].isValue:
        if len(sd["certificates"]) > MAX_CERTIFICATES:
            raise KeyDeliveryError(f"SignedData carries more than {MAX_CERTIFICATES} certificates")
        for choice in sd["certificates"]:
            if choice.getName() == "certificate":
                certs.append(x509.load_der_x509_certificate(encode(choice["certificate"])))
    if len(sd["signerInfos"]) != 1:
        raise KeyDeliveryError(f"expected exactly one SignerInfo, found {len(sd['signerInfos'])}")
    si = sd["signerInfos"][0]
    candidates = [signer] if signer is not None else certs
    cert = _find_signer(si["sid"], candidates)
    if cert is None:
        raise KeyDeliveryError("the certificate named by the SignerInfo is not available")
    digest_oid = str(si["digestAlgorithm"]["algorithm"])
    if digest_oid not in _DIGEST_BY_OID:
        raise KeyDeliveryError(f"digest algorithm {digest_oid} is not supported")
    digest = _DIGEST_BY_OID[digest_oid]()
    if not si["signedAttrs"].isValue:
        raise KeyDeliveryError("SignerInfo has no signed attributes (required for a content type other than id-data)")
    found: dict[str, list[bytes]] = {}
    for attr in si["signedAttrs"]:
        found.setdefault(str(attr["attrType"]), []).extend(bytes(v) for v in attr["attrValues"])
    ct_values = found.get(oids.ID_CONTENT_TYPE, [])
    md_values = found.get(oids.ID_MESSAGE_DIGEST, [])
    if len(ct_values) != 1 or len(md_values) != 1:
        raise KeyDeliveryError("signed attributes need exactly one content-type and one message-digest")
    if str(decode(ct_values[0], univ.ObjectIdentifier(), "content-type attribute")) != etype:
        raise KeyDeliveryError("the content-type attribute does not match eContentType")
    h = hashes.Hash(digest)
    h.update(econtent)
    if bytes(decode(md_values[0], univ.OctetString(), "message-digest attribute")) != h.finalize():
        raise KeyDeliveryError("the message-digest attribute does not match the content")
    der_attrs = b"\x31" + encode(si["signedAttrs"])[1:]
    raw = _raw_signed_attrs(sd_der)
    received = b"\x31" + raw[0][1:] if raw and raw[0] else der_attrs
    sig_oid, signature = str(si["signatureAlgorithm"]["algorithm"]), bytes(si["signature"])
    try:
        _verify(cert.public_key(), signature, received, sig_oid, digest)
    except KeyDeliveryError:
        if received == der_attrs:
            raise
        _verify(cert.public_key(), signature, der_attrs, sig_oid, digest)
    return VerifiedContent(etype, econtent, cert, tuple(certs))

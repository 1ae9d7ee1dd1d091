"""The signature algorithms and key types CMC accepts and produces, over cryptography's primitives.

Accepted: RSA PKCS#1 v1.5 (rsaEncryption or sha*WithRSAEncryption), RSASSA-PSS
(MGF1, trailerField 1), ECDSA with SHA-224/256/384/512, Ed25519 and
ML-DSA-44/65/87 (RFC 9882: pure, no parameters; kipuka signs with SHA-512 as
the digest); digests SHA-224/256/384/512. SHA-1 anywhere is badAlg (so is
Ed448, whose RFC 8419 digest SHAKE256 is not offered).
"""

from __future__ import annotations

from collections.abc import Iterable

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from pyasn1_modules import rfc4055, rfc5280

from kipuka import pq
from kipuka.cmc import der, oids
from kipuka.cmc.errors import CMCFailInfo, CmcError

PublicKey = (rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
             | pq.PublicKey)
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | pq.PrivateKey
PUBLIC_KEY_CLASSES = (rsa.RSAPublicKey, ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey, ed448.Ed448PublicKey,
                      *pq.PUBLIC_KEY_CLASSES)
PRIVATE_KEY_CLASSES = (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey,
                       *pq.PRIVATE_KEY_CLASSES)

DIGESTS: dict[str, type[hashes.HashAlgorithm]] = {
    oids.ID_SHA224: hashes.SHA224, oids.ID_SHA256: hashes.SHA256,
    oids.ID_SHA384: hashes.SHA384, oids.ID_SHA512: hashes.SHA512,
}
DIGEST_OID: dict[str, str] = {h.name: o for o, h in DIGESTS.items()}
RSA_PKCS1: dict[str, type[hashes.HashAlgorithm]] = {
    oids.SHA224_WITH_RSA: hashes.SHA224, oids.SHA256_WITH_RSA: hashes.SHA256,
    oids.SHA384_WITH_RSA: hashes.SHA384, oids.SHA512_WITH_RSA: hashes.SHA512,
}
ECDSA: dict[str, type[hashes.HashAlgorithm]] = {
    oids.ECDSA_SHA224: hashes.SHA224, oids.ECDSA_SHA256: hashes.SHA256,
    oids.ECDSA_SHA384: hashes.SHA384, oids.ECDSA_SHA512: hashes.SHA512,
}
WEAK = {oids.ID_SHA1, oids.SHA1_WITH_RSA, oids.ECDSA_SHA1}


def bad_alg(message: str, ids: Iterable[int] = ()) -> CmcError:
    return CmcError(CMCFailInfo.badAlg, ids, message)


def digest_class(alg_oid: str, ids: Iterable[int] = ()) -> type[hashes.HashAlgorithm]:
    if alg_oid in WEAK:
        raise bad_alg("SHA-1 is not accepted", ids)
    try:
        return DIGESTS[alg_oid]
    except KeyError:
        raise bad_alg(f"unsupported digest algorithm {alg_oid}", ids) from None


def _pss(params: bytes | None, ids: Iterable[int]) -> tuple[padding.PSS, hashes.HashAlgorithm]:
    if params is None:
        raise bad_alg("RSASSA-PSS without parameters (SHA-1 default) is not accepted", ids)
    p = der.decode(params, rfc4055.RSASSA_PSS_params(), "RSASSA-PSS parameters", ids)
    if not p["hashAlgorithm"].isValue:
        raise bad_alg("RSASSA-PSS with the SHA-1 default hash is not accepted", ids)
    hash_cls = digest_class(str(p["hashAlgorithm"]["algorithm"]), ids)
    mgf_hash = hashes.SHA1
    if p["maskGenAlgorithm"].isValue:
        mga = p["maskGenAlgorithm"]
        if str(mga["algorithm"]) != oids.MGF1 or not mga["parameters"].isValue:
            raise bad_alg("RSASSA-PSS mask generation function is not MGF1", ids)
        inner = der.decode(mga["parameters"].asOctets(), rfc5280.AlgorithmIdentifier(), "MGF1 hash", ids)
        mgf_hash = digest_class(str(inner["algorithm"]), ids)
    if mgf_hash is hashes.SHA1:
        raise bad_alg("RSASSA-PSS with MGF1-SHA-1 is not accepted", ids)
    if int(p["trailerField"]) != 1:
        raise bad_alg("RSASSA-PSS trailerField must be 1", ids)
    salt = int(p["saltLength"])
    if not 0 <= salt <= 1024:
        raise bad_alg("RSASSA-PSS salt length out of range", ids)
    return padding.PSS(mgf=padding.MGF1(mgf_hash()), salt_length=salt), hash_cls()


def verify_signature(key: PublicKey, sig_alg: str, sig_params: bytes | None, signature: bytes, data: bytes,
                     *, default_hash: type[hashes.HashAlgorithm] | None = None,
                     ids: Iterable[int] = ()) -> bool:
    """Check `signature` over `data`. Unsupported algorithm or key mismatch -> CmcError(badAlg).

    `default_hash` is the hash for algorithm identifiers that name only the key
    type (rsaEncryption, id-ecPublicKey), as CMS signers such as OpenSSL use them
    with the SignerInfo's digestAlgorithm (RFC 5652 §5.4, RFC 3370 §3.2).
    """
    ids = tuple(ids)
    if sig_alg in WEAK:
        raise bad_alg("SHA-1 signatures are not accepted", ids)
    try:
        if sig_alg in RSA_PKCS1 or sig_alg == oids.RSA_ENCRYPTION:
            if not isinstance(key, rsa.RSAPublicKey):
                raise bad_alg("RSA signature algorithm with a non-RSA key", ids)
            h = RSA_PKCS1.get(sig_alg) or default_hash
            if h is None:
                raise bad_alg("rsaEncryption signature with no digest algorithm", ids)
            key.verify(signature, data, padding.PKCS1v15(), h())
        elif sig_alg == oids.RSASSA_PSS:
            if not isinstance(key, rsa.RSAPublicKey):
                raise bad_alg("RSASSA-PSS with a non-RSA key", ids)
            pad, h = _pss(sig_params, ids)
            key.verify(signature, data, pad, h)
        elif sig_alg in ECDSA or sig_alg == oids.EC_PUBLIC_KEY:
            if not isinstance(key, ec.EllipticCurvePublicKey):
                raise bad_alg("ECDSA signature algorithm with a non-EC key", ids)
            h = ECDSA.get(sig_alg) or default_hash
            if h is None:
                raise bad_alg("id-ecPublicKey signature with no digest algorithm", ids)
            key.verify(signature, data, ec.ECDSA(h()))
        elif sig_alg == oids.ED25519:
            if not isinstance(key, ed25519.Ed25519PublicKey):
                raise bad_alg("Ed25519 signature with a non-Ed25519 key", ids)
            key.verify(signature, data)
        elif sig_alg == oids.ED448:
            if not isinstance(key, ed448.Ed448PublicKey):
                raise bad_alg("Ed448 signature with a non-Ed448 key", ids)
            key.verify(signature, data)
        elif sig_alg in pq.TYPE_BY_OID:
            if pq.key_type(key) != pq.TYPE_BY_OID[sig_alg]:
                raise bad_alg(f"{pq.TYPE_BY_OID[sig_alg]} signature with another kind of key", ids)
            if sig_params is not None:
                raise bad_alg("ML-DSA signature algorithm with parameters (RFC 9882: absent)", ids)
            key.verify(signature, data)  # type: ignore[union-attr]
        else:
            raise bad_alg(f"unsupported signature algorithm {sig_alg}", ids)
    except InvalidSignature:
        return False
    except (UnsupportedAlgorithm, ValueError, TypeError):
        return False
    return True


def load_public_key(spki_der: bytes, ids: Iterable[int] = ()) -> PublicKey:
    try:
        key = serialization.load_der_public_key(spki_der)
    except (ValueError, UnsupportedAlgorithm, TypeError) as exc:
        raise CmcError(CMCFailInfo.badRequest, ids, "unreadable or unsupported public key") from exc
    if not isinstance(key, PUBLIC_KEY_CLASSES):
        raise CmcError(CMCFailInfo.badAlg, ids, "unsupported public key type")
    return key


def spki_der(key: PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def same_key(a: PublicKey, b: PublicKey) -> bool:
    return spki_der(a) == spki_der(b)


def signature_algorithm_der(key: PrivateKey, h: hashes.HashAlgorithm, rsa_pss: bool = False) -> bytes:
    """The AlgorithmIdentifier `sign_bytes` produces signatures for."""
    if isinstance(key, rsa.RSAPrivateKey):
        if rsa_pss:
            return der.algorithm(oids.RSASSA_PSS, pss_params(h))
        return der.algorithm({v.name: k for k, v in RSA_PKCS1.items()}[h.name], der.null())
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return der.algorithm({v.name: k for k, v in ECDSA.items()}[h.name])
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return der.algorithm(oids.ED25519)
    if pq.is_mldsa(key):
        return der.algorithm(pq.algorithm_oid(key))  # RFC 9882 §3.3: parameters absent
    raise TypeError("unsupported signing key")


def sign_bytes(key: PrivateKey, h: hashes.HashAlgorithm, rsa_pss: bool, data: bytes) -> bytes:
    if isinstance(key, rsa.RSAPrivateKey):
        pad = (padding.PSS(mgf=padding.MGF1(type(h)()), salt_length=h.digest_size) if rsa_pss
               else padding.PKCS1v15())
        return key.sign(data, pad, type(h)())
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(type(h)()))
    if isinstance(key, ed25519.Ed25519PrivateKey) or pq.is_mldsa(key):
        return key.sign(data)  # type: ignore[union-attr]
    raise TypeError("unsupported signing key")


def default_hash(key: PrivateKey) -> hashes.HashAlgorithm:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if key.curve.key_size >= 500:
            return hashes.SHA512()
        if key.curve.key_size >= 384:
            return hashes.SHA384()
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return hashes.SHA512()   # RFC 8419 §3: SHA-512 with Ed25519
    if pq.is_mldsa(key):
        return pq.cms_digest()   # RFC 9882 §3.3: SHA-512 with ML-DSA
    return hashes.SHA256()


def pss_params(h: hashes.HashAlgorithm) -> bytes:
    """RSASSA-PSS-params (RFC 4055 §3.1) with MGF1 over the same hash and salt = hash length."""
    hash_alg = der.algorithm(DIGEST_OID[h.name])
    mgf = der.algorithm(oids.MGF1, hash_alg)
    return der.seq(der.explicit(0, hash_alg), der.explicit(1, mgf), der.explicit(2, der.integer(h.digest_size)))

"""ML-DSA (FIPS 204): the one place that knows its key types, identifiers and sizes.

Everything here follows the IETF LAMPS profiles: RFC 9881 (ML-DSA in X.509:
id-ml-dsa-44/65/87 name both the public key and the signature algorithm, the
AlgorithmIdentifier has NO parameters, the pure variant with an empty context
signs the DER to-be-signed bytes) and RFC 9882 (ML-DSA in CMS: the same
identifiers as signatureAlgorithm, SHA-512 as the SignerInfo's digest algorithm,
the signature computed over the DER signed attributes). pyca/cryptography (its
own bundled OpenSSL) does the arithmetic: `key.sign(data)` is pure ML-DSA with an
empty context, and every X.509 builder takes `sign(key, None)`.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import mldsa

# NIST CSOR sigAlgs arc 2.16.840.1.101.3.4.3; RFC 9881 §2 / RFC 9882 §2.
ID_ML_DSA_44 = "2.16.840.1.101.3.4.3.17"
ID_ML_DSA_65 = "2.16.840.1.101.3.4.3.18"
ID_ML_DSA_87 = "2.16.840.1.101.3.4.3.19"

_PRIVATE = {"ml-dsa-44": mldsa.MLDSA44PrivateKey, "ml-dsa-65": mldsa.MLDSA65PrivateKey,
            "ml-dsa-87": mldsa.MLDSA87PrivateKey}
_PUBLIC = {"ml-dsa-44": mldsa.MLDSA44PublicKey, "ml-dsa-65": mldsa.MLDSA65PublicKey,
           "ml-dsa-87": mldsa.MLDSA87PublicKey}
OID_BY_TYPE = {"ml-dsa-44": ID_ML_DSA_44, "ml-dsa-65": ID_ML_DSA_65, "ml-dsa-87": ID_ML_DSA_87}
TYPE_BY_OID = {v: k for k, v in OID_BY_TYPE.items()}
KEY_TYPES = tuple(OID_BY_TYPE)  # the policy / CLI names, weakest first

PrivateKey = mldsa.MLDSA44PrivateKey | mldsa.MLDSA65PrivateKey | mldsa.MLDSA87PrivateKey
PublicKey = mldsa.MLDSA44PublicKey | mldsa.MLDSA65PublicKey | mldsa.MLDSA87PublicKey
PRIVATE_KEY_CLASSES = tuple(_PRIVATE.values())
PUBLIC_KEY_CLASSES = tuple(_PUBLIC.values())

# FIPS 204 Table 2 (bytes): public key, signature. A certificate or CSR is about
# public key + signature + 0.5 kB; an ML-DSA-87 certificate signed by ML-DSA-87 is ~7.7 kB.
SIZES = {"ml-dsa-44": (1312, 2420), "ml-dsa-65": (1952, 3309), "ml-dsa-87": (2592, 4627)}


def is_mldsa(key: object) -> bool:
    """True for an ML-DSA public or private key of any parameter set."""
    return isinstance(key, PRIVATE_KEY_CLASSES + PUBLIC_KEY_CLASSES)


def key_type(key: object) -> str | None:
    """"ml-dsa-44" / "ml-dsa-65" / "ml-dsa-87" for an ML-DSA key (public or private), else None."""
    for name in KEY_TYPES:
        if isinstance(key, (_PRIVATE[name], _PUBLIC[name])):
            return name
    return None


def algorithm_oid(key: object) -> str:
    """id-ml-dsa-NN of a key: its SubjectPublicKeyInfo algorithm and its signature algorithm alike."""
    name = key_type(key)
    if name is None:
        raise TypeError(f"{type(key).__name__} is not an ML-DSA key")
    return OID_BY_TYPE[name]


def generate(name: str) -> PrivateKey:
    """A fresh ML-DSA key of a policy key type (ml-dsa-44, ml-dsa-65, ml-dsa-87)."""
    try:
        return _PRIVATE[name].generate()
    except KeyError:
        raise ValueError(f"unknown ML-DSA key type {name!r}; known: {', '.join(KEY_TYPES)}") from None


def cms_digest() -> hashes.HashAlgorithm:
    """The SignerInfo digest algorithm for an ML-DSA signer: SHA-512, which RFC 9882 §3.3 makes
    mandatory to support (its 256-bit collision strength covers every parameter set)."""
    return hashes.SHA512()


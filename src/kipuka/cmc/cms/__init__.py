"""CMS SignedData (RFC 5652) reading, verification and signing for CMC, split by direction.

cryptography cannot verify a SignedData nor sign one whose eContentType is not
id-data, so the structures are read and written here (pyasn1 / a small DER
writer) and only the primitives come from cryptography:

  * `algorithms`: the key types, digest and signature algorithms, both ways;
  * `identifiers`: SignerIdentifier and the Names and SKIs it is matched by;
  * `reading`: decoding a SignedData and verifying its SignerInfos;
  * `signing`: `CmsSigner` and `signed_data`.

Callers import every name from kipuka.cmc.cms.

Failure classes: undecodable or structurally wrong -> badRequest; unsupported
algorithm -> badAlg; signer not identifiable -> badCertId; anything about the
signed attributes, digest or signature -> badMessageCheck.
"""

from kipuka.cmc.cms.algorithms import (DIGEST_OID, DIGESTS, ECDSA, PRIVATE_KEY_CLASSES, PUBLIC_KEY_CLASSES, RSA_PKCS1,
                                       WEAK, PrivateKey, PublicKey, bad_alg, default_hash, digest_class,
                                       load_public_key, pss_params, same_key, sign_bytes, signature_algorithm_der,
                                       spki_der, verify_signature)
from kipuka.cmc.cms.identifiers import SignerId, cert_ski, name_der, name_from_der
from kipuka.cmc.cms.reading import (KeyLookup, RawSignedData, RawSignerInfo, VerifiedSigner, open_content_info,
                                    read_signed_data, verify_signer)
from kipuka.cmc.cms.signing import CmsSigner, signed_data

__all__ = [
    "CmsSigner", "DIGESTS", "DIGEST_OID", "ECDSA", "KeyLookup", "PRIVATE_KEY_CLASSES", "PUBLIC_KEY_CLASSES",
    "PrivateKey", "PublicKey", "RSA_PKCS1", "RawSignedData", "RawSignerInfo", "SignerId", "VerifiedSigner", "WEAK",
    "bad_alg", "cert_ski", "default_hash", "digest_class", "load_public_key", "name_der", "name_from_der",
    "open_content_info", "pss_params", "read_signed_data", "same_key", "sign_bytes", "signature_algorithm_der",
    "signed_data", "spki_der", "verify_signature", "verify_signer",
]

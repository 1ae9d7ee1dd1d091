"""Object identifiers used to deliver server-generated keys, each with the RFC that assigns it.

Kept as dotted strings (not pyasn1 objects) so they compare cleanly with
`str(oid)` from a decoded structure and read the same as in the RFC text.
"""

from __future__ import annotations

# CMS content types (RFC 5652 section 4-6, 14)
ID_DATA = "1.2.840.113549.1.7.1"
ID_SIGNED_DATA = "1.2.840.113549.1.7.2"
ID_ENVELOPED_DATA = "1.2.840.113549.1.7.3"
# id-ct-KP-aKeyPackage: AsymmetricKeyPackage (RFC 5958 section 3); the eContentType
# RFC 7030 4.4.2 puts inside the SignedData of a server-generated key.
ID_CT_KP_AKEY_PACKAGE = "2.16.840.1.101.2.1.2.78.5"

# Signed attributes (RFC 5652 section 11)
ID_CONTENT_TYPE = "1.2.840.113549.1.9.3"
ID_MESSAGE_DIGEST = "1.2.840.113549.1.9.4"
ID_SIGNING_TIME = "1.2.840.113549.1.9.5"

# Digests (RFC 5754 section 2)
ID_SHA256 = "2.16.840.1.101.3.4.2.1"
ID_SHA384 = "2.16.840.1.101.3.4.2.2"
ID_SHA512 = "2.16.840.1.101.3.4.2.3"

# Signatures (RFC 5754 section 3; RFC 8419 for Ed25519)
SHA256_WITH_RSA = "1.2.840.113549.1.1.11"
SHA384_WITH_RSA = "1.2.840.113549.1.1.12"
SHA512_WITH_RSA = "1.2.840.113549.1.1.13"
ECDSA_WITH_SHA256 = "1.2.840.10045.4.3.2"
ECDSA_WITH_SHA384 = "1.2.840.10045.4.3.3"
ECDSA_WITH_SHA512 = "1.2.840.10045.4.3.4"
ID_ED25519 = "1.3.101.112"

# Public key algorithms (RFC 5480, RFC 8017)
ID_EC_PUBLIC_KEY = "1.2.840.10045.2.1"
RSA_ENCRYPTION = "1.2.840.113549.1.1.1"  # also the PKCS#1 v1.5 key transport (RFC 3370 4.2.1)

# RSAES-OAEP key transport (RFC 3560 / RFC 4055 section 3)
ID_RSAES_OAEP = "1.2.840.113549.1.1.7"
ID_MGF1 = "1.2.840.113549.1.1.8"

# Content encryption: AES-CBC (RFC 3565 section 4.1)
ID_AES128_CBC = "2.16.840.1.101.3.4.1.2"
ID_AES192_CBC = "2.16.840.1.101.3.4.1.22"
ID_AES256_CBC = "2.16.840.1.101.3.4.1.42"

# Key wrap: AES key wrap, RFC 3394 (RFC 3565 section 2.3.2 for the CMS identifiers)
ID_AES128_WRAP = "2.16.840.1.101.3.4.1.5"
ID_AES192_WRAP = "2.16.840.1.101.3.4.1.25"
ID_AES256_WRAP = "2.16.840.1.101.3.4.1.45"

# Ephemeral-static ECDH with the X9.63 KDF (RFC 5753 section 7.1.4)
DH_SINGLE_PASS_STD_DH_SHA256KDF = "1.3.132.1.11.1"
DH_SINGLE_PASS_STD_DH_SHA384KDF = "1.3.132.1.11.2"
DH_SINGLE_PASS_STD_DH_SHA512KDF = "1.3.132.1.11.3"

# Lookups by key length in bytes
AES_CBC_BY_LEN = {16: ID_AES128_CBC, 24: ID_AES192_CBC, 32: ID_AES256_CBC}
AES_WRAP_BY_LEN = {16: ID_AES128_WRAP, 24: ID_AES192_WRAP, 32: ID_AES256_WRAP}
AES_CBC_LEN = {v: k for k, v in AES_CBC_BY_LEN.items()}
AES_WRAP_LEN = {v: k for k, v in AES_WRAP_BY_LEN.items()}

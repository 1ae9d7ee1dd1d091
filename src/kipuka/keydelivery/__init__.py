"""Encodings that deliver a server-generated private key (RFC 7030 4.4, /serverkeygen).

Pure functions, no I/O: the EST front end picks the form by policy and calls these.

- `one_asymmetric_key`: the unencrypted `application/pkcs8` part (PKCS#8, never PKCS#1).
- `signed_data`: CMS SignedData over any content type (here id-ct-KP-aKeyPackage).
- `enveloped_for_certificate` / `enveloped_for_public_key` / `enveloped_for_kek`:
  CMS EnvelopedData to an RSA key (key transport), an EC key (ECDH key
  agreement) or a pre-shared AES key (KEK).
- `server_generated_key_cms`: EnvelopedData(SignedData(AsymmetricKeyPackage)),
  the `application/pkcs7-mime; smime-type=server-generated-key` part.
- `multipart_mixed` / `parse_multipart_mixed`: the two-part response body.
- Readers (`decrypt_enveloped`, `verify_signed_data`, `open_server_generated_key`)
  for tests and clients; every reader bounds its input.
"""

from kipuka.keydelivery._der import MAX_CMS_BYTES, KeyDeliveryError
from kipuka.keydelivery.cms import content_info, key_identifier, read_content_info
from kipuka.keydelivery.enveloped import (
    KEY_TRANSPORTS,
    RSA_PKCS1_V15,
    RSAES_OAEP_SHA256,
    RecipientId,
    decrypt_enveloped,
    enveloped_for_certificate,
    enveloped_for_kek,
    enveloped_for_public_key,
)
from kipuka.keydelivery.keypackage import (
    asymmetric_key_package,
    load_private_key,
    one_asymmetric_key,
    read_asymmetric_key_package,
)
from kipuka.keydelivery.multipart import (
    MULTIPART_MIXED,
    MultipartError,
    multipart_mixed,
    parse_media_type,
    parse_multipart_mixed,
)
from kipuka.keydelivery.oids import ID_CT_KP_AKEY_PACKAGE, ID_DATA, ID_ENVELOPED_DATA, ID_SIGNED_DATA
from kipuka.keydelivery.serverkeygen import (
    PKCS8,
    SERVER_GENERATED_KEY,
    KekRecipient,
    OpenedKey,
    PublicKeyRecipient,
    Recipient,
    open_server_generated_key,
    server_generated_key_cms,
)
from kipuka.keydelivery.signed import (
    VerifiedContent,
    signed_data,
    verify_signed_data,
    verify_signed_data_content,
)

__all__ = [
    "ID_CT_KP_AKEY_PACKAGE", "ID_DATA", "ID_ENVELOPED_DATA", "ID_SIGNED_DATA", "KEY_TRANSPORTS",
    "MAX_CMS_BYTES", "MULTIPART_MIXED", "PKCS8", "RSAES_OAEP_SHA256", "RSA_PKCS1_V15",
    "SERVER_GENERATED_KEY", "KekRecipient", "KeyDeliveryError", "MultipartError", "OpenedKey",
    "PublicKeyRecipient", "Recipient", "RecipientId", "VerifiedContent", "asymmetric_key_package",
    "content_info", "decrypt_enveloped", "enveloped_for_certificate", "enveloped_for_kek",
    "enveloped_for_public_key", "key_identifier", "load_private_key", "multipart_mixed",
    "one_asymmetric_key", "open_server_generated_key", "parse_media_type", "parse_multipart_mixed",
    "read_asymmetric_key_package", "read_content_info", "server_generated_key_cms", "signed_data",
    "verify_signed_data", "verify_signed_data_content",
]

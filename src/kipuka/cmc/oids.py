"""Object identifiers used by the CMC codec, as dotted strings.

Checked against the ASN.1 modules of RFC 5272 (appendix A), RFC 6402 (§2 and
its module) and RFC 5652/5911. Note that pyasn1-modules 0.4's rfc6402 gives
id-kp-cmcArchive as id-kp 28: RFC 6402 assigns 29 (28 is id-kp-cmcRA).
"""

from __future__ import annotations

# --- CMS (RFC 5652 §4, §5, §11) ---
ID_DATA = "1.2.840.113549.1.7.1"
ID_SIGNED_DATA = "1.2.840.113549.1.7.2"
ID_ENVELOPED_DATA = "1.2.840.113549.1.7.3"
ID_CT_AUTH_DATA = "1.2.840.113549.1.9.16.1.2"
ID_CONTENT_TYPE = "1.2.840.113549.1.9.3"        # RFC 5652 §11.1
ID_MESSAGE_DIGEST = "1.2.840.113549.1.9.4"      # RFC 5652 §11.2
ID_SIGNING_TIME = "1.2.840.113549.1.9.5"        # RFC 5652 §11.3

# --- CMC content types (RFC 5272 §3.2, §3.3): id-cct = id-pkix 12 ---
ID_PKIX = "1.3.6.1.5.5.7"
ID_CCT = ID_PKIX + ".12"
ID_CCT_PKI_DATA = ID_CCT + ".2"
ID_CCT_PKI_RESPONSE = ID_CCT + ".3"

# --- CMC controls: id-cmc = id-pkix 7 (RFC 5272 §6, RFC 6402 §2) ---
ID_CMC = ID_PKIX + ".7"
ID_CMC_STATUS_INFO = ID_CMC + ".1"              # RFC 5272 §6.1.2 (obsolete, V1)
ID_CMC_IDENTIFICATION = ID_CMC + ".2"           # RFC 5272 §6.2.3, UTF8String
ID_CMC_IDENTITY_PROOF = ID_CMC + ".3"           # RFC 5272 §6.2.2, OCTET STRING
ID_CMC_DATA_RETURN = ID_CMC + ".4"              # RFC 5272 §6.4, OCTET STRING
ID_CMC_TRANSACTION_ID = ID_CMC + ".5"           # RFC 5272 §6.6, INTEGER
ID_CMC_SENDER_NONCE = ID_CMC + ".6"             # RFC 5272 §6.6, OCTET STRING
ID_CMC_RECIPIENT_NONCE = ID_CMC + ".7"          # RFC 5272 §6.6, OCTET STRING
ID_CMC_ADD_EXTENSIONS = ID_CMC + ".8"           # RFC 5272 §6.5.2
ID_CMC_ENCRYPTED_POP = ID_CMC + ".9"            # RFC 5272 §6.7
ID_CMC_DECRYPTED_POP = ID_CMC + ".10"           # RFC 5272 §6.7
ID_CMC_LRA_POP_WITNESS = ID_CMC + ".11"         # RFC 5272 §6.8
ID_CMC_GET_CERT = ID_CMC + ".15"                # RFC 5272 §6.9
ID_CMC_GET_CRL = ID_CMC + ".16"                 # RFC 5272 §6.10
ID_CMC_REVOKE_REQUEST = ID_CMC + ".17"          # RFC 5272 §6.11
ID_CMC_REG_INFO = ID_CMC + ".18"                # RFC 5272 §6.12, OCTET STRING
ID_CMC_RESPONSE_INFO = ID_CMC + ".19"           # RFC 5272 §6.12, OCTET STRING
ID_CMC_QUERY_PENDING = ID_CMC + ".21"           # RFC 5272 §6.13, OCTET STRING
ID_CMC_POP_LINK_RANDOM = ID_CMC + ".22"         # RFC 5272 §6.3.1
ID_CMC_POP_LINK_WITNESS = ID_CMC + ".23"        # RFC 5272 §6.3.1
ID_CMC_CONFIRM_CERT_ACCEPTANCE = ID_CMC + ".24"  # RFC 5272 §6.14, CMCCertId
ID_CMC_STATUS_INFO_V2 = ID_CMC + ".25"          # RFC 5272 §6.1.1
ID_CMC_TRUSTED_ANCHORS = ID_CMC + ".26"         # RFC 5272 §6.15
ID_CMC_AUTH_DATA = ID_CMC + ".27"               # RFC 5272 §6.16
ID_CMC_BATCH_REQUESTS = ID_CMC + ".28"          # RFC 5272 §6.17, BodyPartList
ID_CMC_BATCH_RESPONSES = ID_CMC + ".29"         # RFC 5272 §6.17, BodyPartList
ID_CMC_PUBLISH_CERT = ID_CMC + ".30"            # RFC 5272 §6.18
ID_CMC_MOD_CERT_TEMPLATE = ID_CMC + ".31"       # RFC 5272 §6.5.1
ID_CMC_CONTROL_PROCESSED = ID_CMC + ".32"       # RFC 5272 §6.19
ID_CMC_POP_LINK_WITNESS_V2 = ID_CMC + ".33"     # RFC 5272 §6.3.1
ID_CMC_IDENTITY_PROOF_V2 = ID_CMC + ".34"       # RFC 5272 §6.2.1
ID_CMC_RA_IDENTITY_WITNESS = ID_CMC + ".35"     # RFC 5272 §6.20 as added by RFC 6402 (BodyPartPath)
ID_CMC_CHANGE_SUBJECT_NAME = ID_CMC + ".36"     # RFC 6402 §2.8 (ChangeSubjectName)
ID_CMC_RESPONSE_BODY = ID_CMC + ".37"           # RFC 5272 §6.21 as added by RFC 6402 (BodyPartPath)

CMC_CONTROL_NAMES: dict[str, str] = {
    ID_CMC_STATUS_INFO: "statusInfo",
    ID_CMC_IDENTIFICATION: "identification",
    ID_CMC_IDENTITY_PROOF: "identityProof",
    ID_CMC_DATA_RETURN: "dataReturn",
    ID_CMC_TRANSACTION_ID: "transactionId",
    ID_CMC_SENDER_NONCE: "senderNonce",
    ID_CMC_RECIPIENT_NONCE: "recipientNonce",
    ID_CMC_ADD_EXTENSIONS: "addExtensions",
    ID_CMC_ENCRYPTED_POP: "encryptedPOP",
    ID_CMC_DECRYPTED_POP: "decryptedPOP",
    ID_CMC_LRA_POP_WITNESS: "lraPOPWitness",
    ID_CMC_GET_CERT: "getCert",
    ID_CMC_GET_CRL: "getCRL",
    ID_CMC_REVOKE_REQUEST: "revokeRequest",
    ID_CMC_REG_INFO: "regInfo",
    ID_CMC_RESPONSE_INFO: "responseInfo",
    ID_CMC_QUERY_PENDING: "queryPending",
    ID_CMC_POP_LINK_RANDOM: "popLinkRandom",
    ID_CMC_POP_LINK_WITNESS: "popLinkWitness",
    ID_CMC_CONFIRM_CERT_ACCEPTANCE: "confirmCertAcceptance",
    ID_CMC_STATUS_INFO_V2: "statusInfoV2",
    ID_CMC_TRUSTED_ANCHORS: "trustedAnchors",
    ID_CMC_AUTH_DATA: "authData",
    ID_CMC_BATCH_REQUESTS: "batchRequests",
    ID_CMC_BATCH_RESPONSES: "batchResponses",
    ID_CMC_PUBLISH_CERT: "publishCert",
    ID_CMC_MOD_CERT_TEMPLATE: "modCertTemplate",
    ID_CMC_CONTROL_PROCESSED: "controlProcessed",
    ID_CMC_POP_LINK_WITNESS_V2: "popLinkWitnessV2",
    ID_CMC_IDENTITY_PROOF_V2: "identityProofV2",
    ID_CMC_RA_IDENTITY_WITNESS: "raIdentityWitness",
    ID_CMC_CHANGE_SUBJECT_NAME: "changeSubjectName",
    ID_CMC_RESPONSE_BODY: "responseBody",
}

# --- Extended key usages (RFC 6402 §2.10) ---
ID_KP = ID_PKIX + ".3"
ID_KP_CMC_CA = ID_KP + ".27"
ID_KP_CMC_RA = ID_KP + ".28"
ID_KP_CMC_ARCHIVE = ID_KP + ".29"

# --- algorithms ---
ID_ALG_NO_SIGNATURE = ID_PKIX + ".6.2"          # RFC 5272 appendix A (NoSignatureValue)
ID_SHA1 = "1.3.14.3.2.26"
ID_SHA224 = "2.16.840.1.101.3.4.2.4"
ID_SHA256 = "2.16.840.1.101.3.4.2.1"
ID_SHA384 = "2.16.840.1.101.3.4.2.2"
ID_SHA512 = "2.16.840.1.101.3.4.2.3"
ID_HMAC_SHA1 = "1.2.840.113549.2.7"             # RFC 8018 hmacWithSHA1
ID_HMAC_SHA1_IPSEC = "1.3.6.1.5.5.8.1.2"        # RFC 2104 / 3370 hMAC-SHA1
ID_HMAC_SHA224 = "1.2.840.113549.2.8"
ID_HMAC_SHA256 = "1.2.840.113549.2.9"
ID_HMAC_SHA384 = "1.2.840.113549.2.10"
ID_HMAC_SHA512 = "1.2.840.113549.2.11"
RSA_ENCRYPTION = "1.2.840.113549.1.1.1"
MGF1 = "1.2.840.113549.1.1.8"
RSASSA_PSS = "1.2.840.113549.1.1.10"
SHA1_WITH_RSA = "1.2.840.113549.1.1.5"
SHA224_WITH_RSA = "1.2.840.113549.1.1.14"
SHA256_WITH_RSA = "1.2.840.113549.1.1.11"
SHA384_WITH_RSA = "1.2.840.113549.1.1.12"
SHA512_WITH_RSA = "1.2.840.113549.1.1.13"
EC_PUBLIC_KEY = "1.2.840.10045.2.1"
ECDSA_SHA1 = "1.2.840.10045.4.1"
ECDSA_SHA224 = "1.2.840.10045.4.3.1"
ECDSA_SHA256 = "1.2.840.10045.4.3.2"
ECDSA_SHA384 = "1.2.840.10045.4.3.3"
ECDSA_SHA512 = "1.2.840.10045.4.3.4"
ED25519 = "1.3.101.112"
ED448 = "1.3.101.113"

# --- X.509 ---
ID_CE_SUBJECT_KEY_IDENTIFIER = "2.5.29.14"
ID_EXTENSION_REQ = "1.2.840.113549.1.9.14"      # PKCS#9 extensionRequest

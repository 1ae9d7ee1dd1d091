"""Full CMC (RFC 5272 / 5273 / 5274 as updated by RFC 6402): a pure codec.

Parsing and verifying Full PKI Requests, reading their controls and requests,
and building Full PKI Responses (and, for clients and tests, requests). No
HTTP, storage or policy here: the caller decides what to trust and what to
issue, and answers with the failInfo a `CmcError` carries.

Entry points:
    parse_cmc_request(der) -> SignedPKIData          verify + parse a request
    parse_pki_response(der) -> SignedPKIResponse     verify + parse a response
    build_pki_response(controls, cms_sequence, certificates, signer_key, signer_cert, chain) -> bytes
    status_info_v2(...), echo_controls(...), build_failure_response(...)
    PKIDataBuilder / build_pki_data / sign_pki_data / build_crmf_request   (client side)
"""

from kipuka.cmc.client import (PKIDataBuilder, build_crmf_request, build_pki_data, crm, identity_proof_witness, orm,
                               sign_pki_data, tcr)
from kipuka.cmc.cms import CmsSigner, SignerId, VerifiedSigner
from kipuka.cmc.errors import CMCFailInfo, CmcError, CmcLimitError, CMCStatus
from kipuka.cmc.model import (CertId, CertificationRequest, ChangeSubjectName, Control, CrmfRequest, IdentityProofV2,
                              OtherMsg, OtherRequest, PKIData, PKIResponse, Pop, RevokeRequest, SignedPKIData,
                              SignedPKIResponse, StatusInfoV2, TaggedContent, TemplateExtension, has_cmc_ra_eku)
from kipuka.cmc.request import (DEFAULT_MAX_DEPTH, DEFAULT_MAX_ELEMENTS, DEFAULT_MAX_MESSAGES, DEFAULT_MAX_SIZE,
                                parse_cmc_request, parse_pki_response)
from kipuka.cmc.response import (BodyPartIds, batch_responses_control, build_failure_response, build_pki_response,
                                 data_return_control, echo_controls, encode_pki_response, recipient_nonce_control,
                                 sender_nonce_control, status_info_v2, transaction_id_control)

__all__ = [
    "BodyPartIds", "CMCFailInfo", "CMCStatus", "CertId", "CertificationRequest", "ChangeSubjectName", "CmcError",
    "CmcLimitError", "CmsSigner", "Control", "CrmfRequest", "DEFAULT_MAX_DEPTH", "DEFAULT_MAX_ELEMENTS",
    "DEFAULT_MAX_MESSAGES", "DEFAULT_MAX_SIZE", "IdentityProofV2", "OtherMsg", "OtherRequest", "PKIData",
    "PKIDataBuilder", "PKIResponse", "Pop", "RevokeRequest", "SignedPKIData", "SignedPKIResponse", "SignerId",
    "StatusInfoV2", "TaggedContent", "TemplateExtension", "VerifiedSigner", "batch_responses_control",
    "build_crmf_request", "build_failure_response", "build_pki_data", "build_pki_response", "crm",
    "data_return_control", "echo_controls", "encode_pki_response", "has_cmc_ra_eku", "identity_proof_witness", "orm",
    "parse_cmc_request", "parse_pki_response", "recipient_nonce_control", "sender_nonce_control", "sign_pki_data",
    "status_info_v2", "tcr", "transaction_id_control",
]

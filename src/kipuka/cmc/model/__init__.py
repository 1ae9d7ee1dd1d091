"""The parsed form of CMC messages, and readers for the common controls, split by kind.

Every type here is an immutable result. Control values stay as the DER the
sender wrote (`Control.values`).

  * `controls`: `Control` and the control values a request carries;
  * `status`: `StatusInfoV2`, the control a response answers with;
  * `reader`: `ControlReader`, which decodes and checks the controls;
  * `tagged_requests`: the reqSequence entries (PKCS#10, CRMF, other) and their POP;
  * `messages`: PKIData, PKIResponse and their verified SignedData forms.

Callers import every name from kipuka.cmc.model.
"""

from kipuka.cmc.model.controls import (CRL_REASON_CODES, CRL_REASONS, HASH_OID, HASHLIB, HMAC_OID, HMACS, CertId,
                                       ChangeSubjectName, Control, IdentityProofV2, RevokeRequest)
from kipuka.cmc.model.messages import (OtherMsg, PKIData, PKIResponse, SignedPKIData, SignedPKIResponse, TaggedContent,
                                       has_cmc_ra_eku)
from kipuka.cmc.model.reader import ControlReader
from kipuka.cmc.model.status import BodyPartRef, StatusInfoV2
from kipuka.cmc.model.tagged_requests import (CertificationRequest, CrmfRequest, OtherRequest, Pop, TaggedRequest,
                                              TemplateExtension)

__all__ = [
    "BodyPartRef", "CRL_REASONS", "CRL_REASON_CODES", "CertId", "CertificationRequest", "ChangeSubjectName",
    "Control", "ControlReader", "CrmfRequest", "HASHLIB", "HASH_OID", "HMACS", "HMAC_OID", "IdentityProofV2",
    "OtherMsg", "OtherRequest", "PKIData", "PKIResponse", "Pop", "RevokeRequest", "SignedPKIData",
    "SignedPKIResponse", "StatusInfoV2", "TaggedContent", "TaggedRequest", "TemplateExtension", "has_cmc_ra_eku",
]

"""What serving a Full PKI Request passes around: who signed, each body part's outcome, the answer."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from cryptography import x509

from kipuka.cmc import CMCFailInfo, CmcError, CMCStatus
from kipuka.errors import BadRequest, KipukaError
from kipuka.store import OtpRecord

OP = "fullcmc"


@dataclass(frozen=True)
class CmcAnswer:
    """A signed Full PKI Response; `failure` is the kind of refusal (None: the request was served)."""

    der: bytes
    failure: type[Exception] | None = None
    retry_after: int | None = None


class Refusal(CmcError):
    """A CmcError with the kind of refusal it is (a kipuka error class), and the CMCStatus to answer."""

    def __init__(self, fail_info: CMCFailInfo | None, body_part_ids, reason: str,  # type: ignore[no-untyped-def]
                 kind: type[KipukaError] = BadRequest, status: CMCStatus = CMCStatus.failed) -> None:
        super().__init__(fail_info if fail_info is not None else CMCFailInfo.badRequest, body_part_ids, reason)
        self.kind = kind
        self.status = status
        self.report_fail_info = fail_info


@dataclass(frozen=True)
class Principal:
    """Who signed a PKIData, as far as authorization goes."""

    kind: str                  # "ra" | "holder" | "otp" | "mtls"
    auth: str                  # recorded with certificates and audit rows: "cmc-ra", "cmc-cert", ...
    entity: str
    requester: str             # pending_requests.requester
    signer_key: bytes          # SPKI of the message signer: the scope of replay detection
    cert: x509.Certificate | None = None
    otp: OtpRecord | None = None
    credential: tuple[str, str] | None = None   # (ca_id, serial) that must stay unrevoked until issuance
    request_bpid: int | None = None             # self-signed: the request whose key signed


@dataclass
class Part:
    """The outcome for one body part: a statusInfoV2 of the response."""

    ref: int
    status: CMCStatus
    reason: str = ""
    fail_info: CMCFailInfo | None = None
    kind: type[Exception] | None = None
    pend_token: bytes | None = None
    pend_time: dt.datetime | None = None
    certificate: x509.Certificate | None = None


@dataclass
class Outcome:
    parts: list[Part] = field(default_factory=list)
    nested: list[bytes] = field(default_factory=list)          # signed PKIResponses answering a batch
    certificates: list[x509.Certificate] = field(default_factory=list)

"""Revoking at the upstream through its /fullcmc (`revoke = "fullcmc"`).

EST has no revocation operation, but a Full CMC server takes a revokeRequest
control (RFC 5272 §6.11) signed by an RA agent. A kipuka upstream lets an RA
(id-kp-cmcRA from the label's `ra_anchors`, on a label with `fullcmc = true`)
revoke any certificate issued through that label. The RA signs the PKIData
with its own certificate and key (`ra_cert`, `ra_key`), and reads the
statusInfoV2 of the upstream's signed answer. kipuka calls this before it
records a revocation, so it never shows revoked what the CA still calls good.
"""

from __future__ import annotations

import base64
from typing import Awaitable, Callable

from cryptography import x509

from kipuka import cmc
from kipuka.client import wire
from kipuka.client.errors import EstError
from kipuka.errors import Forbidden, InternalError, KipukaError

Exchange = Callable[[str, str, "bytes | None", dict[str, str]], Awaitable[tuple[int, dict[str, str], bytes]]]
CMC_REQUEST = "application/pkcs7-mime; smime-type=CMC-request"


class NotThroughThisLabel(Exception):
    """The upstream label did not issue that serial (badCertId): another label may have."""


async def revoke_via_fullcmc(exchange: Exchange, url: str, signer: cmc.CmsSigner, issuer: x509.Name,
                             serial: int, reason: x509.ReasonFlags) -> str:
    """Send one signed revokeRequest; the upstream's status text on success."""
    b = cmc.PKIDataBuilder()
    b.transaction_id()
    b.sender_nonce()
    bpid = b.revoke_request(issuer, serial, reason)
    body = base64.encodebytes(b.sign(signer))
    status, headers, answer = await exchange("POST", url, body, {"Content-Type": CMC_REQUEST, "Accept": "*/*",
                                                                "Content-Transfer-Encoding": "base64"})
    info = _status_of(answer, bpid)
    if info is None:
        reason_text = wire.error_reason(answer, headers.get("content-type"), f"HTTP {status}")
        if status == 200:
            raise InternalError(f"{url} answered without a status for the revocation: {reason_text}")
        raise InternalError(f"{url} answered {status} to the revocation: {reason_text} (is fullcmc on for "
                            f"that label, with this RA among its ra_anchors?)")
    text = info.status_string or info.status.name
    if info.status == cmc.CMCStatus.success:
        return text
    if info.fail_info == cmc.CMCFailInfo.badCertId:
        raise NotThroughThisLabel(text)
    raise Forbidden(f"the upstream CA did not revoke serial {serial:x}: {text}")


def _status_of(answer: bytes, bpid: int) -> cmc.StatusInfoV2 | None:
    """The statusInfoV2 about our body part (or the whole request) in a signed Full PKI Response."""
    try:
        parsed = cmc.parse_pki_response(wire.decode_body(answer, "CMC response"))
    except (KipukaError, EstError, ValueError):  # not a CMC answer (a plain-text 404, an HTML page)
        return None
    infos = parsed.response.status_info_v2()
    return next((i for i in infos if bpid in i.body_list), None) or next((i for i in infos if 0 in i.body_list),
                                                                         None)

"""POST /fullcmc: decode the CMC request body, hand it to the RA, encode the CMC response.

RFC 7030 §4.3: the request is `application/pkcs7-mime; smime-type=CMC-request`
(base64 per RFC 8951; raw DER and PEM `CMS`/`PKCS7` armour are accepted too),
the answer `application/pkcs7-mime; smime-type=CMC-response`, base64 wrapped at
64 columns. Once the label has fullcmc on, every answer is a CMC response,
errors included (§4.3.2): 200 when the request was served (statuses per body
part inside, pending included), else 4xx/5xx chosen like the other operations'
with the CMC failure response as the body. While fullcmc is off the answer is
a plain-text 404, as for an operation that does not exist.
"""

from __future__ import annotations

import re

from aiohttp import web

from kipuka.errors import BadRequest, KipukaError, Unavailable
from kipuka.est import codec
from kipuka.ra.authority import Authority
from kipuka.ra.fullcmc import CmcAnswer
from kipuka.ra.requester import Requester

CMC_REQUEST = "application/pkcs7-mime"
CMC_RESPONSE = "application/pkcs7-mime; smime-type=CMC-response"
_MEDIA_TYPES = {"application/pkcs7-mime", "application/x-pkcs7-mime"}
_BASE64_TEXT = re.compile(rb"[A-Za-z0-9+/=\r\n\t ]*")
_PEM = re.compile(rb"-----BEGIN (CMS|PKCS7)-----(.*?)-----END \1-----", re.S)


async def handle(request: web.Request, authority: Authority, label: str, max_body: int) -> web.Response:
    from kipuka.est.app import PayloadTooLarge, read_bounded
    from kipuka.est.identity import client_certificate, requester_of

    cmc = authority.cmc
    cmc.check_enabled(label)  # Disabled: a plain-text 404
    try:
        who = requester_of(request)
    except KipukaError as exc:  # malformed Authorization header
        who = Requester(client_addr=request.remote or "", client_cert=client_certificate(request))
        return answer(await cmc.refuse(label, who, exc))
    problem = _media_type_problem(request.headers.get("Content-Type"))
    if problem is not None:
        return answer(await cmc.refuse(label, who, BadRequest(problem)))
    try:
        body = await read_bounded(request, max_body)
        der = decode(body)
    except (PayloadTooLarge, BadRequest) as exc:
        return answer(await cmc.refuse(label, who, exc))
    return answer(await cmc.fullcmc(label, der, who))


def _media_type_problem(ctype: str | None) -> str | None:
    if ctype is None:
        return f"missing Content-Type; expected {CMC_REQUEST}; smime-type=CMC-request"
    base, _, params = ctype.partition(";")
    if base.strip().lower() not in _MEDIA_TYPES:
        return f"Content-Type {base.strip()[:64]!r} is not {CMC_REQUEST}; smime-type=CMC-request"
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "smime-type" and value.strip().strip('"').lower() != "cmc-request":
            return f"smime-type {value.strip()[:32]!r} is not CMC-request"
    return None


def decode(body: bytes) -> bytes:
    """DER of a CMC request body: base64 (RFC 8951), PEM CMS/PKCS7 armour, or raw DER."""
    if body[:1] == b"\x30" and not _BASE64_TEXT.fullmatch(body):
        return body
    stripped = body.strip()
    if stripped.startswith(b"-----BEGIN"):
        m = _PEM.search(stripped)
        if not m:
            raise BadRequest("PEM body is not a CMC request (expected BEGIN CMS or BEGIN PKCS7)")
        stripped = m.group(2)
    return codec.decode_body(stripped, "CMC request")


def answer(result: CmcAnswer) -> web.Response:
    from kipuka.est.app import CHALLENGE, STATUS, PayloadTooLarge

    if result.failure is None:
        status = 200
    elif issubclass(result.failure, PayloadTooLarge):
        status = 413
    else:
        status = next((code for cls, code in STATUS.items() if issubclass(result.failure, cls)), 500)
    headers = {"Content-Type": CMC_RESPONSE, "Content-Transfer-Encoding": "base64"}
    if status == 401:
        headers["WWW-Authenticate"] = CHALLENGE
    if result.failure is not None and issubclass(result.failure, Unavailable) and result.retry_after:
        headers["Retry-After"] = str(result.retry_after)
    return web.Response(status=status, body=codec.encode_body(result.der), headers=headers)

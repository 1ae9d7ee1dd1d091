"""HTTP routes of the registrar on the EST listener: /.well-known/brski/<op> (RFC 8995 §5).

Decodes, identifies the caller by its TLS client certificate, asks the registrar
(kipuka.brski.registrar) and encodes the answer; no policy and no SQL here.
Errors are one line of text/plain, as on the EST endpoints.
"""

from __future__ import annotations

import logging
from typing import Awaitable, Callable

from aiohttp import web

from kipuka.brski import telemetry
from kipuka.brski.masa import MasaBadAnswer
from kipuka.brski.registrar import Registrar, VoucherHeld
from kipuka.brski.signing import MAX_CMS, MEDIA_TYPE
from kipuka.errors import KipukaError, NotFound, NotImplementedYet, Unavailable
from kipuka.est.app import STATUS, plain_text, read_bounded
from kipuka.est.identity import client_certificate
from kipuka.ra.authority import Authority
from kipuka.ra.requester import Requester

log = logging.getLogger("kipuka.brski")

PREFIX = "/.well-known/brski"
JSON = "application/json"


class UnsupportedMediaType(KipukaError):
    """415: RFC 8995 §5.3."""


class NotAcceptable(KipukaError):
    """406: the pledge does not accept application/voucher-cms+json."""


Handler = Callable[[web.Request, Registrar, Requester], Awaitable[web.Response]]


class BrskiFrontEnd:
    def __init__(self, authority: Callable[[], Authority], max_body: Callable[[], int]) -> None:
        self._authority = authority
        self._max_body = max_body
        self._operations: dict[str, tuple[str, Handler, str]] = {
            "requestvoucher": ("POST", self.requestvoucher, "brski.voucher"),
            "voucher_status": ("POST", self.voucher_status, "brski.voucher_status"),
            "enrollstatus": ("POST", self.enrollstatus, "brski.enrollstatus"),
            "requestauditlog": ("POST", self.requestauditlog, "brski.auditlog"),
        }

    def routes(self) -> list[web.RouteDef]:
        return [web.route("*", PREFIX + "/{op}", self.dispatch)]

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        registrar = self._authority().brski
        op = request.match_info["op"]
        who = Requester(client_addr=request.remote or "", client_cert=client_certificate(request))
        try:
            if registrar is None:
                raise NotFound("BRSKI is not enabled on this server ([brski] in the configuration)")
            if op not in self._operations:
                raise NotFound(f"unknown BRSKI operation {op!r}")
            method, handler, event = self._operations[op]
            if request.method != method:
                return plain_text(405, f"{op} takes {method}", {"Allow": method})
            try:
                return await handler(request, registrar, who)
            except KipukaError as exc:
                await registrar.record_rejection(event, who, exc)
                raise
        except KipukaError as exc:
            return _error(exc)
        except Exception:  # never leak a traceback to the client
            log.exception("unhandled error in %s %s", request.method, request.path)
            return plain_text(500, "internal server error")

    async def requestvoucher(self, request: web.Request, registrar: Registrar, who: Requester) -> web.Response:
        _content_type(request, MEDIA_TYPE)
        accept = request.headers.get("Accept", "")
        if accept and not any(r.split(";", 1)[0].strip().lower() in (MEDIA_TYPE, "*/*", "application/*")
                              for r in accept.split(",")):
            raise NotAcceptable(f"this registrar answers with {MEDIA_TYPE} only")
        body = await read_bounded(request, min(self._max_body(), MAX_CMS))
        result = await registrar.request_voucher(body, who)
        if isinstance(result, VoucherHeld):
            # RFC 8995 §5.3 (as RFC 7030 §4.2.3): the pledge repeats its request after Retry-After.
            return web.Response(status=202, headers={"Retry-After": str(result.retry_after)})
        return web.Response(body=result, headers={"Content-Type": MEDIA_TYPE})

    async def voucher_status(self, request: web.Request, registrar: Registrar, who: Requester) -> web.Response:
        return await self._report(request, registrar, who, "voucher_status")

    async def enrollstatus(self, request: web.Request, registrar: Registrar, who: Requester) -> web.Response:
        return await self._report(request, registrar, who, "enroll_status")

    async def requestauditlog(self, request: web.Request, registrar: Registrar, who: Requester) -> web.Response:
        raise NotImplementedYet("requestauditlog is a MASA endpoint (RFC 8995 §5.8); this registrar does not "
                                "serve or relay it")

    async def _report(self, request: web.Request, registrar: Registrar, who: Requester, kind: str) -> web.Response:
        _content_type(request, JSON)
        body = await read_bounded(request, min(self._max_body(), telemetry.MAX_REPORT))
        await telemetry.record_report(registrar, kind, body, who)
        return web.Response(status=200)


def _content_type(request: web.Request, expected: str) -> None:
    ctype = request.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
    if ctype != expected:
        raise UnsupportedMediaType(f"Content-Type {ctype[:64]!r} is not {expected}")


def _error(exc: KipukaError) -> web.Response:
    if isinstance(exc, UnsupportedMediaType):
        return plain_text(415, exc.reason)
    if isinstance(exc, NotAcceptable):
        return plain_text(406, exc.reason)
    if isinstance(exc, MasaBadAnswer):
        return plain_text(502, exc.reason)
    status = next((code for cls, code in STATUS.items() if isinstance(exc, cls)), 500)
    if status == 413 or type(exc).__name__ == "PayloadTooLarge":
        return plain_text(413, exc.reason)
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, Unavailable) else None
    return plain_text(status, exc.reason, headers)

"""HTTP routes of the EST listener: /.well-known/est/[label/]operation.

This layer decodes the request, extracts who is calling, asks the RA, and
encodes the answer. It never decides policy and never touches the database.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from cryptography import x509

from kipuka.errors import (BadRequest, Conflict, Disabled, Forbidden, InternalError, KipukaError, NotFound,
                           NotImplementedYet, Unauthenticated, Unavailable)
from kipuka.est import codec, fullcmc, serverkeygen
from kipuka.est.csrattrs import csrattrs_for
from kipuka.est.identity import client_certificate, requester_of
from kipuka.ra.authority import Authority, Enrolled, Held
from kipuka.ra.requester import Requester

log = logging.getLogger("kipuka.est")

PREFIX = "/.well-known/est"
CHALLENGE = 'Basic realm="est"'
STATUS = {BadRequest: 400, Unauthenticated: 401, Forbidden: 403, NotFound: 404, Disabled: 404, Conflict: 409,
          InternalError: 500, NotImplementedYet: 501, Unavailable: 503}
BASE64_HEADERS = {"Content-Transfer-Encoding": "base64"}


# Operations only a TLS client certificate can authenticate: their 401 has no Basic challenge.
CERTIFICATE_ONLY = frozenset({"simplereenroll"})
AUDITED = {"simpleenroll": "enroll", "simplereenroll": "reenroll", "serverkeygen": "serverkeygen",
           "fullcmc": "fullcmc"}


class PayloadTooLarge(KipukaError):
    pass


class RequestTimeout(KipukaError):
    """The request body did not arrive within [server] body_timeout (a slow or stalled client)."""


# The worker stores a getter of [server] body_timeout here (it follows a reload).
BODY_TIMEOUT: web.AppKey[Callable[[], float]] = web.AppKey("kipuka_body_timeout")


class EstFrontEnd:
    """The EST operations, bound to whatever Authority is current (it changes on reload)."""

    def __init__(self, authority: Callable[[], Authority], max_body: Callable[[], int]) -> None:
        self._authority = authority
        self._max_body = max_body
        self._cache: dict[tuple[int, str, str], bytes | None] = {}
        self._operations: dict[str, tuple[str, Callable[[web.Request, Authority, str], Awaitable[web.Response]]]] = {
            "cacerts": ("GET", self.cacerts),
            "csrattrs": ("GET", self.csrattrs),
            "simpleenroll": ("POST", self.simpleenroll),
            "simplereenroll": ("POST", self.simplereenroll),
            "serverkeygen": ("POST", self.serverkeygen),
            "fullcmc": ("POST", self.fullcmc),
        }

    def routes(self) -> list[web.RouteDef]:
        return [web.route("*", PREFIX + "/{op}", self.dispatch),
                web.route("*", PREFIX + "/{label}/{op}", self.dispatch)]

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        authority = self._authority()
        label = request.match_info.get("label", "")
        op = request.match_info["op"]
        try:
            if label:
                authority.runtime(label)
            if op not in self._operations:
                raise NotFound(f"unknown EST operation {op!r}")
            method, handler = self._operations[op]
            if request.method != method and not (method == "GET" and request.method == "HEAD"):
                allow = "GET, HEAD" if method == "GET" else method
                return plain_text(405, f"{op} takes {allow}", {"Allow": allow})
            # HEAD (RFC 9110 9.3.2) runs the GET handler: the same status and headers
            # (Content-Type, Content-Length, Content-Transfer-Encoding); aiohttp sends no body.
            return await handler(request, authority, label)
        except KipukaError as exc:
            if request.method == "POST" and op in AUDITED:
                await authority.record_rejection(label, AUDITED[op], _requester_or_anonymous(request), exc)
            if isinstance(exc, Unauthenticated) and op in CERTIFICATE_ONLY:
                # Only the current certificate, as the TLS client certificate, authenticates a
                # re-enrollment (RFC 7030 4.2.2): a Basic challenge would invite credentials that
                # can never succeed, so the 401 carries the reason and no challenge.
                return plain_text(401, exc.reason)
            if isinstance(exc, Unauthenticated) and _no_credentials(request):
                # The pure challenge: Bouncy Castle's and libest's clients send credentials only
                # after a 401, and Bouncy Castle fails on a challenge that has a body.
                return web.Response(status=401, headers={"WWW-Authenticate": CHALLENGE})
            return _error(exc)
        except Exception:  # never leak a traceback to the client
            log.exception("unhandled error in %s %s", request.method, request.path)
            return plain_text(500, "internal server error")

    # --- operations -------------------------------------------------------------------

    async def cacerts(self, request: web.Request, authority: Authority, label: str) -> web.Response:
        body = self._cached(authority, label, "cacerts",
                            lambda: codec.encode_body(
                                codec.certs_only(authority.runtime(label).ca.ca_certificates())))
        assert body is not None
        return web.Response(body=body, headers={"Content-Type": codec.CERTS_ONLY, **BASE64_HEADERS})

    async def csrattrs(self, request: web.Request, authority: Authority, label: str) -> web.Response:
        def build() -> bytes | None:
            der = csrattrs_for(authority.runtime(label).label.policy)
            return codec.encode_body(der) if der is not None else None
        body = self._cached(authority, label, "csrattrs", build)
        if body is None:
            return web.Response(status=204)
        return web.Response(body=body, headers={"Content-Type": codec.CSRATTRS, **BASE64_HEADERS})

    async def simpleenroll(self, request: web.Request, authority: Authority, label: str) -> web.Response:
        der = await self._csr_body(request)
        return _outcome(await authority.enroll(label, der, requester_of(request)))

    async def simplereenroll(self, request: web.Request, authority: Authority, label: str) -> web.Response:
        der = await self._csr_body(request)
        return _outcome(await authority.reenroll(label, der, requester_of(request)))

    async def serverkeygen(self, request: web.Request, authority: Authority, label: str) -> web.Response:
        return await serverkeygen.handle(request, authority, label, await self._csr_body(request))

    async def fullcmc(self, request: web.Request, authority: Authority, label: str) -> web.Response:
        return await fullcmc.handle(request, authority, label, self._max_body())

    # --- helpers ----------------------------------------------------------------------

    async def _csr_body(self, request: web.Request) -> bytes:
        ctype = request.headers.get("Content-Type")
        if ctype is None:
            raise BadRequest(f"missing Content-Type; expected {codec.PKCS10}")
        if ctype.split(";", 1)[0].strip().lower() != codec.PKCS10:
            raise BadRequest(f"Content-Type {ctype.split(';', 1)[0].strip()[:64]!r} is not {codec.PKCS10}")
        return codec.decode_body(await read_bounded(request, self._max_body()))

    def _cached(self, authority: Authority, label: str, what: str,
                build: Callable[[], bytes | None]) -> bytes | None:
        key = (id(authority), label, what)
        if key not in self._cache:
            if len(self._cache) > 1024:  # old authorities after many reloads
                self._cache.clear()
            self._cache[key] = build()
        return self._cache[key]


async def read_bounded(request: web.Request, limit: int) -> bytes:
    """The request body, refusing more than `limit` bytes whether sized or chunked,
    or one that takes longer than [server] body_timeout to arrive."""
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"request body exceeds {limit} bytes")
    content = request.content
    if content.is_eof() and content.exception() is None:  # the whole body came with the headers: no waiting
        body = content.read_nowait()
        if len(body) > limit:
            raise PayloadTooLarge(f"request body exceeds {limit} bytes")
        return body
    timeout = request.config_dict.get(BODY_TIMEOUT, lambda: None)()
    data = bytearray()
    try:
        async with asyncio.timeout(timeout):
            while True:
                chunk = await request.content.readany()
                if not chunk:
                    break
                data += chunk
                if len(data) > limit:
                    raise PayloadTooLarge(f"request body exceeds {limit} bytes")
    except TimeoutError:
        raise RequestTimeout(f"request body not received within {timeout:g}s") from None
    except (HttpProcessingError, web.RequestPayloadError) as exc:  # bad chunks or Content-Encoding, a cut body
        detail = " ".join(str(exc).split()).split("message: ", 1)[-1]
        raise BadRequest(f"malformed request body: {detail[:120]}") from None
    except OSError:  # the connection reset, or a TLS record that does not decrypt (ssl.SSLError)
        raise BadRequest("connection failed while reading the request body") from None
    return bytes(data)


def _no_credentials(request: web.Request) -> bool:
    return "Authorization" not in request.headers and client_certificate(request) is None


def _requester_or_anonymous(request: web.Request) -> Requester:
    try:
        return requester_of(request)
    except KipukaError:  # malformed credentials: record who we can
        return Requester(client_addr=request.remote or "", client_cert=client_certificate(request))


def _outcome(result: Enrolled | Held) -> web.Response:
    if isinstance(result, Held):
        # RFC 7030 4.2.3: the client repeats the same request after Retry-After.
        return web.Response(status=202, headers={"Retry-After": str(result.retry_after)})
    return _certificate(result.certificate)


def _certificate(cert: x509.Certificate) -> web.Response:
    body = codec.encode_body(codec.certs_only([cert]))
    return web.Response(body=body, headers={"Content-Type": codec.CERTS_ONLY, **BASE64_HEADERS})


def _error(exc: KipukaError) -> web.Response:
    if isinstance(exc, PayloadTooLarge):
        return plain_text(413, exc.reason)
    if isinstance(exc, RequestTimeout):
        response = plain_text(408, exc.reason)
        response.force_close()  # the rest of a stalled body is not worth waiting for
        return response
    status = next((code for cls, code in STATUS.items() if isinstance(exc, cls)), 500)
    headers: dict[str, str] = {}
    if status == 401:
        headers["WWW-Authenticate"] = CHALLENGE
    if isinstance(exc, Unavailable):
        headers["Retry-After"] = str(exc.retry_after)
    return plain_text(status, exc.reason, headers)


def plain_text(status: int, reason: str, headers: dict[str, str] | None = None) -> web.Response:
    """An EST error answer: one line of text/plain (the registrar's /.well-known/brski answers share it)."""
    line = reason.replace("\r", " ").replace("\n", " ")
    return web.Response(status=status, body=(line + "\n").encode(),
                        headers={"Content-Type": "text/plain; charset=utf-8", **(headers or {})})

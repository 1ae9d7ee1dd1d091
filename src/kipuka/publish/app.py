"""Routes of the revocation listener: GET /crl/{ca}.crl, GET/POST /ocsp/{ca} (RFC 6960).

Plain HTTP on purpose: CRLs and OCSP responses are signed, and relying parties
fetch them without TLS (RFC 5280 and RFC 6960 both expect http URLs).
"""

from __future__ import annotations

import base64
import binascii
import logging
import urllib.parse
from typing import Callable

from aiohttp import web
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.x509 import ocsp

from kipuka.ca.revocation import unsuccessful_ocsp
from kipuka.errors import KipukaError, NotFound
from kipuka.ra.authority import Authority
from kipuka.ra.revocation import OcspQuery
from kipuka.streams import read_at_most

log = logging.getLogger("kipuka.publish")
MAX_OCSP_REQUEST = 16384  # a request signed with ML-DSA-87 that carries its certificate is ~11 kB
OCSP_RESPONSE = "application/ocsp-response"


class PublishFrontEnd:
    def __init__(self, authority: Callable[[], Authority]) -> None:
        self._authority = authority

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/crl/{ca}.crl", self.crl),
                web.post("/ocsp/{ca}", self.ocsp_post),
                web.get("/ocsp/{ca}/{request:.+}", self.ocsp_get)]

    async def crl(self, request: web.Request) -> web.Response:
        try:
            crl = await self._authority().revocation.crl(request.match_info["ca"])
        except NotFound as exc:
            return web.Response(status=404, text=exc.reason + "\n")
        except KipukaError as exc:
            return web.Response(status=500, text=exc.reason + "\n")
        return web.Response(body=crl.der, headers={
            "Content-Type": "application/pkix-crl",
            "Last-Modified": crl.this_update.strftime("%a, %d %b %Y %H:%M:%S GMT"),
            "Expires": crl.next_update.strftime("%a, %d %b %Y %H:%M:%S GMT")})

    async def ocsp_post(self, request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > MAX_OCSP_REQUEST:
            return _ocsp_error(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
        body = await read_at_most(request.content, MAX_OCSP_REQUEST)
        if len(body) > MAX_OCSP_REQUEST:
            return _ocsp_error(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
        return await self._answer(request.match_info["ca"], body)

    async def ocsp_get(self, request: web.Request) -> web.Response:
        encoded = urllib.parse.unquote(request.match_info["request"])
        if len(encoded) > MAX_OCSP_REQUEST * 2:
            return _ocsp_error(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
        try:
            der = base64.b64decode(encoded, validate=False)
        except (binascii.Error, ValueError):
            return _ocsp_error(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
        return await self._answer(request.match_info["ca"], der)

    async def _answer(self, ca_id: str, der: bytes) -> web.Response:
        try:
            req = ocsp.load_der_ocsp_request(der)
            try:
                nonce = req.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
            except x509.ExtensionNotFound:
                nonce = None
            query = OcspQuery(req.issuer_name_hash, req.issuer_key_hash, req.hash_algorithm, req.serial_number,
                              nonce)
        except (ValueError, UnsupportedAlgorithm):
            return _ocsp_error(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
        try:
            response = await self._authority().revocation.ocsp(ca_id, query)
        except NotFound:
            return _ocsp_error(ocsp.OCSPResponseStatus.UNAUTHORIZED)
        except KipukaError:
            log.exception("OCSP answer failed")
            return _ocsp_error(ocsp.OCSPResponseStatus.INTERNAL_ERROR)
        return web.Response(body=response, headers={"Content-Type": OCSP_RESPONSE})


def _ocsp_error(status: ocsp.OCSPResponseStatus) -> web.Response:
    return web.Response(body=unsuccessful_ocsp(status), headers={"Content-Type": OCSP_RESPONSE})

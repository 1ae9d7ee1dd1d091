"""POST /serverkeygen: decode the CSR, ask the RA for a key and certificate, encode multipart/mixed."""

from __future__ import annotations

from aiohttp import web

from kipuka.ra.authority import Authority


async def handle(request: web.Request, authority: Authority, label: str, csr_der: bytes) -> web.Response:
    from kipuka.est.identity import requester_of

    return await authority.keygen.serverkeygen(label, csr_der, requester_of(request))

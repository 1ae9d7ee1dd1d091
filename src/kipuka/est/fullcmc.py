"""POST /fullcmc: decode the CMC request body, hand it to the RA, encode the CMC response."""

from __future__ import annotations

from aiohttp import web

from kipuka.ra.authority import Authority


async def handle(request: web.Request, authority: Authority, label: str, body: bytes) -> web.Response:
    from kipuka.est.identity import requester_of

    return await authority.cmc.fullcmc(label, body, requester_of(request))

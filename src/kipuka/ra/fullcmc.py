"""Full CMC (RFC 5272/6402 over RFC 7030 4.3): authorization and processing of PKIData."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kipuka.errors import NotImplementedYet
from kipuka.ra.requester import Requester

if TYPE_CHECKING:
    from kipuka.ra.authority import Authority


class FullCmc:
    def __init__(self, authority: "Authority") -> None:
        self.authority = authority

    async def fullcmc(self, label: str, request_der: bytes, who: Requester):  # type: ignore[no-untyped-def]
        raise NotImplementedYet("fullcmc is not implemented in this version of kipuka")

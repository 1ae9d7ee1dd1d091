"""Server-side key generation (RFC 7030 4.4): policy, key making, delivery and escrow."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kipuka.errors import NotImplementedYet
from kipuka.ra.requester import Requester

if TYPE_CHECKING:
    from kipuka.ra.authority import Authority


class ServerKeygen:
    def __init__(self, authority: "Authority") -> None:
        self.authority = authority

    async def serverkeygen(self, label: str, csr_der: bytes, who: Requester):  # type: ignore[no-untyped-def]
        raise NotImplementedYet("serverkeygen is not implemented in this version of kipuka")

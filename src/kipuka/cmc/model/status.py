"""CMCStatusInfoV2 (RFC 5272 §6.1.1): the status control a response answers each body part with."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Union

from kipuka.cmc import der, oids
from kipuka.cmc.errors import CMCFailInfo, CMCStatus
from kipuka.cmc.model.controls import Control


BodyPartRef = Union[int, tuple[int, ...]]  # bodyPartID, or bodyPartPath (RFC 5272 §3.2.2)


@dataclass(frozen=True)
class StatusInfoV2:
    """CMCStatusInfoV2 (RFC 5272 §6.1.1); otherInfo is one of fail_info, pend_*, extended_fail_info."""

    status: CMCStatus
    body_list: tuple[BodyPartRef, ...]
    status_string: str | None = None
    fail_info: CMCFailInfo | int | None = None
    pend_token: bytes | None = None
    pend_time: dt.datetime | None = None
    extended_fail_info: tuple[str, bytes] | None = None   # (failInfoOID, failInfoValue DER)

    def encode(self) -> bytes:
        if not self.body_list:
            raise ValueError("bodyList needs at least one body part reference")
        refs = []
        for ref in self.body_list:
            if isinstance(ref, int):
                refs.append(der.integer(_bpid(ref)))
            else:
                if not ref:
                    raise ValueError("an empty bodyPartPath")
                refs.append(der.seq(*(der.integer(_bpid(x)) for x in ref)))
        parts = [der.integer(int(self.status)), der.seq(*refs)]
        if self.status_string is not None:
            parts.append(der.utf8(self.status_string))
        others = [x is not None for x in (self.fail_info, self.pend_token, self.extended_fail_info)]
        if sum(others) > 1:
            raise ValueError("otherInfo is one of failInfo, pendInfo, extendedFailInfo")
        if self.fail_info is not None:
            parts.append(der.integer(int(self.fail_info)))
        elif self.pend_token is not None:
            if self.pend_time is None:
                raise ValueError("pendInfo needs pendTime")
            parts.append(der.seq(der.octets(self.pend_token), der.generalized_time(self.pend_time)))
        elif self.extended_fail_info is not None:
            parts.append(der.seq(der.oid(self.extended_fail_info[0]), self.extended_fail_info[1]))
        return der.seq(*parts)

    def to_control(self, body_part_id: int) -> Control:
        return Control(body_part_id, oids.ID_CMC_STATUS_INFO_V2, (self.encode(),))


def _bpid(n: int) -> int:
    if not 0 <= int(n) <= 4294967295:
        raise ValueError("a BodyPartID is 0..4294967295")
    return int(n)

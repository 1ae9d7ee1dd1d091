"""CMC status and failure codes, and the one error type this package raises.

`CMCStatus` and `CMCFailInfo` are the INTEGER enumerations of RFC 5272 §6.1.1
and §6.1.4 (module of RFC 5272 appendix A, CMCStatus `partial(7)` added by
RFC 6402). A `CmcError` carries the failInfo the server should answer with in a
statusInfoV2 control (`cMCStatus failed`), the body parts it concerns, and a
one-line reason for the client.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import IntEnum

from kipuka.errors import BadRequest


class CMCStatus(IntEnum):
    """CMCStatus ::= INTEGER (RFC 5272 §6.1.1; partial(7) from RFC 6402)."""

    success = 0
    failed = 2
    pending = 3
    noSupport = 4
    confirmRequired = 5
    popRequired = 6
    partial = 7


class CMCFailInfo(IntEnum):
    """CMCFailInfo ::= INTEGER (RFC 5272 §6.1.4)."""

    badAlg = 0            # unrecognized or unsupported algorithm
    badMessageCheck = 1   # integrity check failed
    badRequest = 2        # transaction not permitted or supported
    badTime = 3           # message time not sufficiently close to the system time
    badCertId = 4         # no certificate could be identified matching the criteria
    unsupportedExt = 5    # a requested X.509 extension is not supported
    mustArchiveKeys = 6   # private key material must be supplied
    badIdentity = 7       # identification control failed to verify
    popRequired = 8       # server requires a POP proof before issuing
    popFailed = 9         # POP processing failed
    noKeyReuse = 10       # server policy does not allow key reuse
    internalCAError = 11  # internal CA error
    tryLater = 12         # server resources unavailable, try later
    authDataFail = 13     # failed to get an authorization from the authorization data


class CmcError(BadRequest):
    """A CMC message that cannot be accepted.

    `fail_info` is what to answer with (statusInfoV2 failed + failInfo),
    `body_part_ids` the body parts concerned (empty: the whole PKIData, which
    RFC 5272 designates with bodyPartID 0), `reason` one line for the client
    (statusString). It subclasses `BadRequest` so a caller that does not build a
    CMC failure response still answers 400.
    """

    def __init__(self, fail_info: CMCFailInfo, body_part_ids: Iterable[int] = (), reason: str = "") -> None:
        self.fail_info = CMCFailInfo(fail_info)
        self.body_part_ids = tuple(int(b) for b in body_part_ids)
        super().__init__(reason or self.fail_info.name)

    def __repr__(self) -> str:
        return f"CmcError({self.fail_info.name}, {list(self.body_part_ids)}, {self.reason!r})"


class CmcLimitError(CmcError):
    """A size, nesting or element-count bound was exceeded: badRequest, always for the whole message."""

    def __init__(self, reason: str) -> None:
        super().__init__(CMCFailInfo.badRequest, (), reason)

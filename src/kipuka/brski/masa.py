"""The registrar's HTTPS client to a MASA (RFC 8995 §5.4-§5.6).

The registrar authenticates with its registrar certificate as TLS client
certificate and checks the MASA's server certificate against the manufacturer's
`masa_ca` (or the system's trust store). Answers are sorted into what the
pledge should hear: the MASA cannot be reached or is busy (503 with
Retry-After: the pledge may simply try again), the MASA refused (403), or the
MASA answered something that is not a voucher (502).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path

import aiohttp

from kipuka.brski.signing import MAX_CMS, MEDIA_TYPE
from kipuka.errors import Forbidden, KipukaError, Unavailable

log = logging.getLogger("kipuka.brski")


class MasaUnavailable(Unavailable):
    """The MASA did not answer, or answered that it is busy: the pledge may retry."""


class MasaRefused(Forbidden):
    """The MASA declined to issue a voucher for this device."""


class MasaBadAnswer(KipukaError):
    """The MASA answered with something that is not a voucher (502 Bad Gateway)."""


class MasaClient:
    def __init__(self, cert: Path, key: Path, timeout: int, retry_after: int) -> None:
        self._cert, self._key = cert, key
        self._timeout = timeout
        self._retry_after = retry_after
        self._contexts: dict[Path | None, ssl.SSLContext] = {}

    def context(self, masa_ca: Path | None) -> ssl.SSLContext:
        """TLS to one manufacturer's MASA: its trust anchors, our registrar certificate."""
        if masa_ca not in self._contexts:
            ctx = ssl.create_default_context(cafile=str(masa_ca) if masa_ca else None)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(str(self._cert), str(self._key))
            self._contexts[masa_ca] = ctx
        return self._contexts[masa_ca]

    async def request_voucher(self, url: str, body: bytes, masa_ca: Path | None) -> bytes:
        """POST the registrar voucher request; the MASA's voucher-cms+json, unchanged."""
        headers = {"Content-Type": MEDIA_TYPE, "Accept": MEDIA_TYPE}
        timeout = aiohttp.ClientTimeout(total=self._timeout)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session:
                async with session.post(url, data=body, headers=headers, ssl=self.context(masa_ca),
                                        allow_redirects=False) as response:
                    data = await _bounded(response)
                    status, ctype = response.status, response.headers.get("Content-Type", "")
        except (asyncio.TimeoutError, TimeoutError):
            raise MasaUnavailable(f"the MASA at {url} did not answer within {self._timeout}s; try again later",
                                  self._retry_after) from None
        except aiohttp.ClientSSLError as exc:
            log.warning("TLS to the MASA at %s failed: %s", url, exc)
            raise MasaUnavailable(f"TLS to the MASA at {url} failed ({_first_line(str(exc))}); "
                                  "try again later", self._retry_after) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise MasaUnavailable(f"the MASA at {url} is unreachable ({_first_line(str(exc)) or type(exc).__name__});"
                                  " try again later", self._retry_after) from None
        if status == 200:
            if ctype.split(";", 1)[0].strip().lower() != MEDIA_TYPE:
                raise MasaBadAnswer(f"the MASA at {url} answered {ctype[:60]!r}, not {MEDIA_TYPE}")
            return data
        detail = _first_line(data.decode("utf-8", "replace"))
        if status in (429, 502, 503, 504):
            raise MasaUnavailable(f"the MASA at {url} is busy (HTTP {status}); try again later", self._retry_after)
        if 400 <= status < 500:
            raise MasaRefused(f"the MASA at {url} refused the voucher request (HTTP {status}"
                              + (f": {detail}" if detail else "") + ")")
        raise MasaBadAnswer(f"the MASA at {url} failed (HTTP {status}" + (f": {detail}" if detail else "") + ")")


async def _bounded(response: aiohttp.ClientResponse) -> bytes:
    data = bytearray()
    async for chunk in response.content.iter_chunked(16384):
        data += chunk
        if len(data) > MAX_CMS:
            raise MasaBadAnswer(f"the MASA's answer is larger than {MAX_CMS} bytes")
    return bytes(data)


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return "".join(ch for ch in line if ch.isprintable())[:160]

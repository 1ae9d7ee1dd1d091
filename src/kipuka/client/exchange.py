"""The HTTP side of an EST operation: its URL, credentials, 401 challenges, 202 polling, redirects, errors.

`EstHttp` is the base of `EstClient` (kipuka.client.client): it reads the client's
address, credentials and waiting policy from the attributes declared below.
"""

from __future__ import annotations

import base64
import urllib.parse
from typing import Callable

from cryptography import x509

from kipuka.client import wire
from kipuka.client.errors import EstError, HttpError, InvalidResponse, PendingTimeout, error_for_status
from kipuka.client.transport import Response, Transport

WELL_KNOWN = "/.well-known/est"
DEFAULT_PENDING_WAIT = 30   # seconds, when a 202 carries no usable Retry-After
MAX_REDIRECTS = 3


class EstHttp:
    """Requests and answers of one EST server and label (mixed into `EstClient`, which sets the attributes)."""

    host: str
    port: int
    prefix: str
    label: str | None
    auth: tuple[str, str] | None
    auth_mode: str
    max_wait: float
    on_progress: Callable[[str], None]
    _sleep: Callable[[float], None]
    _clock: Callable[[], float]

    def url(self, op: str, label: str | None = None) -> str:
        port = "" if self.port == 443 else f":{self.port}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}{port}{self._path(op, label)}"

    def _path(self, op: str, label: str | None = None) -> str:
        label = self.label if label is None else label
        if label:
            return f"{self.prefix}/{urllib.parse.quote(label, safe='')}/{op}"
        return f"{self.prefix}/{op}"

    def _exchange(self, transport: Transport, method: str, op: str, *, body=None, content_type: str | None = None,
                  allow_auth: bool = True, preemptive: bool = True,
                  keep: Callable[[Response], bool] | None = None) -> Response:
        """One operation, following 401 challenges, 202 polling and same-origin redirects.

        An error answer is raised as an HttpError unless `keep(response)` says the
        caller reads it itself.
        """
        path = self._path(op)
        send_auth = allow_auth and preemptive and self.auth is not None and self.auth_mode == "preemptive"
        challenged = False
        redirects = 0
        deadline = self._clock() + self.max_wait
        polls = 0
        while True:
            headers: dict[str, str] = {}
            if content_type:
                headers["Content-Type"] = content_type
                headers["Content-Transfer-Encoding"] = "base64"
            if send_auth and self.auth is not None:
                headers["Authorization"] = _basic(*self.auth)
            resp = transport.request(method, path, headers, body)
            if resp.status == 401 and allow_auth and self.auth is not None and not send_auth and not challenged:
                challenge = resp.header("www-authenticate") or ""
                scheme = challenge.split(None, 1)[0].lower() if challenge.strip() else ""
                if scheme not in ("", "basic") and "basic" not in challenge.lower():
                    raise self._error(resp, op, extra=f" (the server asks for {scheme} authentication; "
                                                      f"this client answers Basic only)")
                self.on_progress(f"{op}: 401 challenge, sending credentials")
                send_auth = challenged = True
                continue
            if resp.status == 202:
                polls += 1
                wait = wire.retry_after(resp.header("retry-after"))
                wait = DEFAULT_PENDING_WAIT if wait is None else max(1, wait)
                if self._clock() + wait > deadline:
                    raise PendingTimeout(f"{op}: request still pending after {polls} attempt(s); the server asks "
                                         f"to retry in {wait} s, beyond the {self.max_wait:g} s wait allowed",
                                         retry_after=wait)
                self.on_progress(f"{op}: 202 pending, retrying in {wait} s")
                self._sleep(wait)
                continue
            if resp.status in (301, 302, 303, 307, 308) and redirects < MAX_REDIRECTS:
                target = self._same_origin(resp.header("location"))
                if target is not None:
                    redirects += 1
                    path = target
                    continue
            if resp.status >= 300 and not (keep is not None and resp.status >= 400 and keep(resp)):
                raise self._error(resp, op)
            return resp

    def _same_origin(self, location: str | None) -> str | None:
        if not location:
            return None
        parts = urllib.parse.urlsplit(location)
        if parts.scheme and (parts.scheme != "https" or parts.hostname != self.host or (parts.port or 443) != self.port):
            return None
        return parts.path + (f"?{parts.query}" if parts.query else "")

    def _error(self, resp: Response, op: str, extra: str = "") -> HttpError:
        reason = wire.error_reason(resp.body, resp.header("content-type"), resp.reason or f"HTTP {resp.status}")
        if 300 <= resp.status < 400:
            reason = f"redirect to {resp.header('location') or '?'} not followed (other origin or too many)"
            err = HttpError(resp.status, f"{op}: {reason}", url=self.url(op), headers=resp.headers)
            return err
        return error_for_status(resp.status, reason + extra, url=self.url(op), headers=resp.headers,
                                retry_after=wire.retry_after(resp.header("retry-after")))

    def _check_media(self, resp: Response, what: str, ok: Callable[[wire.MediaType], bool]) -> None:
        mt = wire.parse_media_type(resp.header("content-type"))
        if not ok(mt):
            raise InvalidResponse(f"{what}: unexpected Content-Type {resp.header('content-type')!r}")

    def _certs_of(self, resp: Response, what: str) -> list[x509.Certificate]:
        self._check_media(resp, what, lambda mt: mt.type == "" or wire.is_certs_media(mt)
                          or mt.type in ("application/octet-stream", "application/pkix-cert",
                                         "application/x-pem-file"))
        return wire.certificates(resp.body, what, resp.header("content-transfer-encoding"))


def wire_body(der: bytes) -> bytes:
    """base64 wrapped at 64 columns with LF, as every EST server accepts."""
    text = base64.b64encode(der)
    return b"".join(text[i:i + 64] + b"\n" for i in range(0, len(text), 64))


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode("utf-8")).decode("ascii")


def _split_url(base_url: str) -> tuple[str, int, str, str | None]:
    """host, port, path prefix ending in /.well-known/est, label found in the URL (or None)."""
    if "://" not in base_url:
        base_url = "https://" + base_url
    parts = urllib.parse.urlsplit(base_url)
    if parts.scheme.lower() != "https":
        raise EstError(f"EST needs https, not {parts.scheme}:// ({base_url})")
    if not parts.hostname:
        raise EstError(f"no host in URL {base_url!r}")
    try:
        port = parts.port or 443
    except ValueError:
        raise EstError(f"invalid port in URL {base_url!r}") from None
    path = parts.path.rstrip("/")
    label = None
    if WELL_KNOWN in path:
        head, _, tail = path.partition(WELL_KNOWN)
        prefix = head + WELL_KNOWN
        tail = tail.strip("/")
        if tail:
            if "/" in tail:
                raise EstError(f"URL {base_url!r}: expected at most one label after {WELL_KNOWN}")
            label = urllib.parse.unquote(tail)
    else:
        prefix = path + WELL_KNOWN
    return parts.hostname, port, prefix, label

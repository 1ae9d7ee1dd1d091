"""Typed errors of the EST client.

Every failure is an `EstError` whose `reason` is one line meant for a person
(the command line prints it as is). HTTP answers map to one class per status
class, carrying the server's own reason text; failures before or after the
HTTP exchange (TLS, a response that does not check out, a refused bootstrap)
have their own classes, so callers can tell "the server said no" from "the
server could not be reached" from "the server said yes with garbage".

    EstError
    ├── TransportError            cannot reach the server (DNS, refused, timeout, reset)
    │   └── TlsError              handshake failed (untrusted certificate, version, client cert)
    ├── HttpError                 the server answered with an error status
    │   ├── ClientError           4xx not listed below (405, 413, 415, 423 ...)
    │   │   ├── BadRequest        400
    │   │   ├── Unauthorized      401 (challenge in .challenge)
    │   │   ├── Forbidden         403
    │   │   └── NotFound          404 (unknown label or operation)
    │   └── ServerError           5xx, with .retry_after when the server sent one
    │       ├── NotImplementedByServer  501
    │       └── ServiceUnavailable      503
    ├── PendingTimeout            202 + Retry-After for longer than the bounded wait
    ├── InvalidResponse           2xx whose content does not check out
    ├── BootstrapError            trust bootstrap refused or fingerprint mismatch
    ├── ChannelBindingError       tls-unique requested but not obtainable
    └── DecryptionError           server-generated key that cannot be decrypted
"""

from __future__ import annotations


class EstError(Exception):
    """Base class: `reason` is the one-line text for the user."""

    def __init__(self, reason: str) -> None:
        reason = " ".join(str(reason).split())
        super().__init__(reason)
        self.reason = reason


class TransportError(EstError):
    """The server could not be reached or the connection broke."""


class TlsError(TransportError):
    """The TLS handshake failed."""


class HttpError(EstError):
    """The server answered with an error status; `reason` is the server's text."""

    status: int = 0

    def __init__(self, status: int, reason: str, *, url: str = "", headers: dict[str, str] | None = None,
                 retry_after: int | None = None) -> None:
        super().__init__(reason or f"HTTP {status}")
        self.status = status
        self.url = url
        self.headers = dict(headers or {})
        self.retry_after = retry_after

    def __str__(self) -> str:
        return f"{self.status}: {self.reason}"


class ClientError(HttpError):
    """A 4xx answer without a more specific class."""


class BadRequest(ClientError):
    """400: malformed CSR or body, or a CSR the policy refuses."""


class Unauthorized(ClientError):
    """401: missing, wrong, expired or consumed credential."""

    @property
    def challenge(self) -> str | None:
        return self.headers.get("www-authenticate")


class Forbidden(ClientError):
    """403: authenticated but not allowed (e.g. reenroll with other names)."""


class NotFound(ClientError):
    """404: unknown EST label or operation."""


class ServerError(HttpError):
    """5xx; `retry_after` (seconds) is set when the server sent Retry-After."""


class NotImplementedByServer(ServerError):
    """501: the server does not provide this operation."""


class ServiceUnavailable(ServerError):
    """503: the CA behind the label is temporarily unavailable."""


class PendingTimeout(EstError):
    """The server kept answering 202 beyond the client's bounded wait."""

    def __init__(self, reason: str, retry_after: int | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class InvalidResponse(EstError):
    """A success answer whose content is malformed or does not match the request."""


class BootstrapError(EstError):
    """Trust could not be bootstrapped (no fingerprint given, or it does not match)."""


class ChannelBindingError(EstError):
    """tls-unique channel binding was requested but cannot be provided."""


class DecryptionError(EstError):
    """A server-generated private key could not be decrypted with the keys at hand."""


_BY_STATUS: dict[int, type[HttpError]] = {
    400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound,
    501: NotImplementedByServer, 503: ServiceUnavailable,
}


def error_for_status(status: int, reason: str, *, url: str = "", headers: dict[str, str] | None = None,
                     retry_after: int | None = None) -> HttpError:
    cls = _BY_STATUS.get(status)
    if cls is None:
        cls = ServerError if status >= 500 else ClientError
    return cls(status, reason, url=url, headers=headers, retry_after=retry_after)

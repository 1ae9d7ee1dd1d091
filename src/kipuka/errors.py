"""Outcomes that stop a request, shared by every layer.

Each error names what went wrong in the caller's terms, never in HTTP terms: the
EST front end maps the class to a status code, the CLI to an exit message. The
message is one line meant for the client, so it never carries a secret.
"""

from __future__ import annotations


class KipukaError(Exception):
    """Base class; `reason` is the one-line text shown to the client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason.replace("\n", " ").strip()


class BadRequest(KipukaError):
    """The request is malformed or asks for something the policy forbids."""


class Unauthenticated(KipukaError):
    """No credential, or one that is wrong, expired, consumed or revoked."""


class Forbidden(KipukaError):
    """The caller is known but may not do this."""


class NotFound(KipukaError):
    """An unknown EST label or operation."""


class Disabled(KipukaError):
    """An operation switched off by configuration."""


class NotImplementedYet(KipukaError):
    """An operation this build does not provide yet."""


class Unavailable(KipukaError):
    """A back end is temporarily unable to serve; try again after `retry_after` s.

    `unreachable` says the back end did not answer at all (rather than being busy):
    a replica pool then sets that replica aside until its health check passes.
    """

    def __init__(self, reason: str, retry_after: int = 30, *, unreachable: bool = False) -> None:
        super().__init__(reason)
        self.retry_after = retry_after
        self.unreachable = unreachable


class InternalError(KipukaError):
    """A server-side failure: database, HSM or signing.

    `retryable` marks a failure of one back end (an HSM that went away) that another
    replica of the same CA may not share: a replica pool then tries the next one.
    """

    def __init__(self, reason: str, retryable: bool = False) -> None:
        super().__init__(reason)
        self.retryable = retryable


class Conflict(KipukaError):
    """The object is not in a state that allows this (a request already decided)."""

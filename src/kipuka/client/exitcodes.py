"""Exit codes of `kipuka-est`, one per kind of outcome, so scripts and monitors can act on them.

The same table serves every command (enroll, renew, agent --once, ...):
a monitor tells "renewed" from "nothing to do" from "the server is down"
from "the server's certificate is not trusted" without reading stderr.
The certmonger helper has its own table, fixed by certmonger
(`kipuka.client.agent.certmonger`).
"""

from __future__ import annotations

from kipuka.client.errors import (BootstrapError, DecryptionError, EstError, HttpError, InvalidResponse,
                                  PendingTimeout, ServerError, TlsError, TransportError)

OK = 0              # done: enrolled, renewed, fetched
ERROR = 1           # anything else: unreadable files, bad configuration, a key that is not the certificate's
USAGE = 2           # wrong command line (argparse)
UNREACHABLE = 3     # server unreachable: DNS, connection refused, timeout, connection reset
REFUSED = 4         # the server said no (4xx): wrong OTP, policy, unknown label
SERVER_ERROR = 5    # the server failed (5xx), e.g. its CA is unavailable
BAD_ANSWER = 6      # an answer that does not check out (malformed, wrong key, undecryptable key)
PENDING = 7         # still pending (202) after --max-wait; the request is kept and a rerun resumes it
BOOTSTRAP = 8       # trust bootstrap refused: no fingerprint, or it matches no CA certificate
TLS_TRUST = 9       # TLS failed: the server's certificate is not trusted, or the handshake failed
NOT_DUE = 10        # renew / agent --once: nothing needed renewing
BROKEN_PIPE = 141   # stdout closed early (`| head`), as a shell reports SIGPIPE

TABLE = (
    (OK, "done (enrolled, renewed, fetched)"),
    (ERROR, "other error (files, configuration, key/certificate mismatch)"),
    (USAGE, "usage error"),
    (UNREACHABLE, "server unreachable (DNS, refused, timeout, reset)"),
    (REFUSED, "refused by the server (4xx)"),
    (SERVER_ERROR, "server error (5xx)"),
    (BAD_ANSWER, "unusable answer (invalid response, undecryptable key)"),
    (PENDING, "still pending (202) after --max-wait: state kept, rerun to resume"),
    (BOOTSTRAP, "trust bootstrap refused or fingerprint mismatch"),
    (TLS_TRUST, "TLS failed: server certificate not trusted, or handshake failure"),
    (NOT_DUE, "renew / agent --once: not due, nothing done"),
)


def for_error(exc: EstError) -> int:
    """The exit code of a failure."""
    if isinstance(exc, TlsError):
        return TLS_TRUST
    if isinstance(exc, TransportError):
        return UNREACHABLE
    if isinstance(exc, ServerError):
        return SERVER_ERROR
    if isinstance(exc, HttpError):
        return REFUSED
    if isinstance(exc, (InvalidResponse, DecryptionError)):
        return BAD_ANSWER
    if isinstance(exc, PendingTimeout):
        return PENDING
    if isinstance(exc, BootstrapError):
        return BOOTSTRAP
    return ERROR


def help_text() -> str:
    return "exit codes:\n" + "\n".join(f"  {code:<4}{meaning}" for code, meaning in TABLE)

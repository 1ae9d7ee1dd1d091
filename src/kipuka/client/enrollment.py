"""Enrolling so that nothing is lost: a request that outlives the process, and what /csrattrs implies.

Shared by the command line (`enroll`, `reenroll`, `renew`) and the agent.
`request()` keeps the request in a PendingFile from before it is first
sent until the certificate is in place (see `kipuka.client.pending`): a
request held for approval, a server that went away, a killed process: the
next run resumes with the same key, so the server sees the same request
(it matches retries by requester and public key) and a single-use OTP that
the held request reserved is not spent twice.
"""

from __future__ import annotations

import datetime as dt
from typing import Callable

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from kipuka import pq
from kipuka.client import cmc_renewal
from kipuka.client.client import EstClient
from kipuka.client.csr import CsrSpec
from kipuka.client.describe import utcnow
from kipuka.client.errors import EstError, HttpError, InvalidResponse, PendingTimeout
from kipuka.client.pending import PendingFile, PendingRequest
from kipuka.client.results import Issued
from kipuka.client.wire import CsrAttributes

Progress = Callable[[str], None]
SIMPLEENROLL = "simpleenroll"
SIMPLEREENROLL = "simplereenroll"
FULLCMC_REENROLL = "fullcmc-reenroll"    # a renewal signed by the holder's key, for keys TLS cannot present
RENEWALS = (SIMPLEREENROLL, FULLCMC_REENROLL)


def renewal_operation(key: object) -> str:
    """How a certificate with this key renews: over mTLS, or (ML-DSA) by a holder-signed /fullcmc."""
    return FULLCMC_REENROLL if cmc_renewal.needs_cmc_renewal(key) else SIMPLEREENROLL


def renewal_client_cert(key: object, cert_path: str, key_path: str) -> tuple[str, str] | None:
    """The TLS client identity a renewal presents: none when the holder signs the request instead."""
    return None if cmc_renewal.needs_cmc_renewal(key) else (cert_path, key_path)


def server_id(est: EstClient) -> str:
    """The server and label a request belongs to (a request is never resumed elsewhere)."""
    return est.url("").rstrip("/")


def request(est: EstClient, operation: str, make_spec: Callable[[], CsrSpec], journal: PendingFile | None, *,
            progress: Progress, new_request: bool = False, holder: tuple[object, object] | None = None
            ) -> tuple[Issued, PendingRequest]:
    """Send (or resume) one enrollment; the PendingRequest is returned for the install's journal.

    `holder` (certificate, key) signs a FULLCMC_REENROLL. Raises as EstClient does. On PendingTimeout the request is kept with the
    time the server asked to be asked again; on a refusal that ends it (400,
    403, or any 4xx before the server ever held it) it is removed.
    """
    pending = journal.load() if journal is not None else None
    if pending is not None and new_request:
        progress(f"discarding the pending request kept in {journal.path}")  # type: ignore[union-attr]
        journal.remove()  # type: ignore[union-attr]
        pending = None
    if pending is not None:
        if pending.operation != operation or pending.server != server_id(est):
            raise EstError(f"{journal.path} holds a pending {pending.operation} for {pending.server}, not this "  # type: ignore[union-attr]
                           f"{operation} for {server_id(est)}; rerun that request, or give --new-request to drop it")
        progress(f"resuming the {operation} request made {pending.created:%Y-%m-%d %H:%M}Z "
                 f"(key kept in {journal.path})")  # type: ignore[union-attr]
    else:
        pending = PendingRequest.new(operation, server_id(est), make_spec())
        if journal is not None:
            journal.save(pending)  # before the first byte is sent: a kill cannot lose the key
    try:
        if operation == FULLCMC_REENROLL:
            if holder is None:
                raise EstError("a holder-signed renewal needs the certificate being renewed and its key")
            issued = cmc_renewal.reenroll_by_fullcmc(est, pending.spec(), *holder)  # type: ignore[arg-type]
        else:
            issued = getattr(est, operation)(pending.spec())
    except PendingTimeout as exc:
        pending.accepted = True
        wait = exc.retry_after or 60
        pending.next_attempt = utcnow() + dt.timedelta(seconds=wait)
        if journal is not None:
            journal.save(pending)
            exc.reason += f"; the request and its key are kept in {journal.path}: rerun to resume it"
        raise
    except HttpError as exc:
        final = exc.status in (400, 403) or (400 <= exc.status < 500 and not pending.accepted)
        if journal is not None and final:
            journal.remove()
        raise
    return issued, pending


# --- what /csrattrs implies --------------------------------------------------------------------

def server_attributes(est: EstClient, progress: Progress) -> CsrAttributes | None:
    """/csrattrs, or None when the server does not offer it (its enrollment answer will tell).

    A server that cannot be reached, or not trusted, fails here already.
    """
    try:
        return est.csrattrs()
    except (HttpError, InvalidResponse) as exc:
        progress(f"csrattrs unavailable ({exc.reason})")
        return None


def follow_channel_binding(est: EstClient, attrs: CsrAttributes | None, progress: Progress) -> None:
    """RFC 7030 3.5: challengePassword in /csrattrs asks for the CSR to be linked to the TLS session."""
    if attrs is not None and attrs.wants_challenge_password and not est.channel_binding:
        progress("the server's csrattrs ask for channel binding: linking the CSR to the TLS session")
        est.channel_binding = True


def key_type(requested: str | None, attrs: CsrAttributes | None, progress: Progress,
             default: str = "ec-p256") -> str:
    if requested:
        return requested
    if attrs is None:
        return default
    chosen = attrs.key_type(default)
    if chosen != default:
        progress(f"server's csrattrs ask for {chosen}")
    return chosen


def same_key_type(key: object) -> str:
    """The key type of an existing key, for a new key of the same kind."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return {256: "ec-p256", 384: "ec-p384", 521: "ec-p521"}.get(key.curve.key_size, "ec-p256")
    if isinstance(key, rsa.RSAPrivateKey):
        return f"rsa{max(2048, key.key_size)}"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "ed25519"
    return pq.key_type(key) or "ec-p256"

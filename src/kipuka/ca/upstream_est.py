"""A CA that is another EST server: kipuka as a registration authority (RA mode).

`type = "est"` forwards each enrollment the RA has authorized to an upstream
EST server (another kipuka, libest, EJBCA, ...): the requester's own PKCS#10
is POSTed to the upstream's /simpleenroll (RFC 7030 4.2.1, base64 per RFC
8951), the RA authenticating itself with its TLS client certificate (carrying
id-kp-cmcRA, RFC 7030 3.7) and/or HTTP Basic credentials. The upstream's CA
decides the certificate's contents; kipuka's label policy decides only which
requests are forwarded.

What the requester sees for each upstream answer (docs/upstream-est.md):

    200 certs-only        the certificate for the CSR's key, checked to be signed by the
                          upstream's issuing CA
    202 + Retry-After     IssuancePending: the RA answers 202 with the upstream's Retry-After
                          and, on the retry, repeats the same POST (RFC 7030 4.2.3) via collect()
    400                   IssuanceRejected 400, with the upstream's reason
    403                   IssuanceRejected 403, with the upstream's reason (an officer's
                          rejection, a policy refusal, or this RA not being allowed there)
    401, 404, other 4xx   InternalError (500): the RA's credentials or its `label` are wrong,
                          nothing the requester can fix
    429, 503              Unavailable (503) with the upstream's Retry-After
    other 5xx             InternalError(retryable): the upstream's own 500 for a lone upstream;
                          a replica pool marks the replica down and tries the next one
    no answer (refused,   Unavailable (503 + `retry_after`); a replica pool tries the next
    reset, timeout, TLS)  replica, and answers 503 + Retry-After when none answers; for the
                          next QUIET_AFTER_FAILURE seconds requests fail at once

The upstream signs CRLs and OCSP itself (`signs_revocation = False`); with
`revoke = "fullcmc"` revocations are sent to it as a Full CMC revokeRequest
signed by the RA (kipuka.ca.upstream_est_revoke).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import logging
import os
import time
import weakref
from typing import Any, AsyncIterator

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from kipuka import cmc
from kipuka.ca.base import IssuancePending, IssuanceRejected, IssueRequest, Issued, directly_issued
from kipuka.ca.revocation import OcspAnswer, RevokedEntry
from kipuka.ca.upstream_est_chain import (MAX_BODY, USER_AGENT, CacertsError, fetch_cacerts, order_chain,
                                          parse_cacerts)
from kipuka.ca.upstream_est_revoke import NotThroughThisLabel, revoke_via_fullcmc
from kipuka.ca.upstream_est_settings import UpstreamSettings, settings_from_config, tls_context
from kipuka.client import wire
from kipuka.client.errors import InvalidResponse
from kipuka.config import CAConfig, ConfigError
from kipuka.errors import Forbidden, InternalError, NotImplementedYet, Unavailable
from kipuka.pem import load_certificates, load_private_key
from kipuka.streams import read_at_most

log = logging.getLogger("kipuka.ca.upstream_est")

REFRESH_INTERVAL = 30.0  # at most one /cacerts refetch per this many seconds (CA rollover)
QUIET_AFTER_FAILURE = 2.0  # an upstream that did not answer is not asked again for this long (health probes are)
_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


class UpstreamEstCA:
    """One upstream EST server (one replica of a pool), and the CA chain it publishes."""

    forwards_requests = True
    signs_revocation = False

    def __init__(self, settings: UpstreamSettings, chain: list[x509.Certificate], down: str | None = None) -> None:
        self.id = settings.ca_id
        self.settings = settings
        self._chain = chain
        self._issuers = [chain[0]]  # every issuing CA seen, newest first: earlier certificates stay ours
        self._down_at_start = down  # the upstream was unreachable when built: health() says so until it answers
        self._ssl = tls_context(settings)
        self._auth = aiohttp.BasicAuth(settings.username, settings.password) if settings.username else None
        self._sessions: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, tuple[aiohttp.ClientSession, AsyncIterator[None]]] = weakref.WeakKeyDictionary()
        self._last_refresh = 0.0
        self._silent_until, self._silence = 0.0, ""  # after a request got no answer: fail fast for a while
        if settings.ra_cert is not None and settings.ra_key is not None:
            # The RA generates serverkeygen keys itself, so its own certificate signs their key packages.
            self._ra_identity = (load_private_key(settings.ra_key), load_certificates(settings.ra_cert)[0])
            self.content_signer = lambda: self._ra_identity
            if settings.revoke == "fullcmc":  # the optional RemoteRevoker capability (kipuka.ca.base)
                self.revoke = self._revoke
        weakref.finalize(self, _close_sessions, self._sessions)

    @classmethod
    def from_config(cls, cfg: CAConfig) -> "UpstreamEstCA":
        s = settings_from_config(cfg)
        pre = f"ca.{cfg.id}"
        pinned: list[x509.Certificate] | None = None
        if s.chain is not None:
            try:
                pinned = load_certificates(s.chain)
            except ValueError as exc:
                raise ConfigError(f"{pre}.chain", str(exc)) from None
        ctx = tls_context(s, pre)
        try:
            chain = _startup_chain(s, ctx, pinned)
        except CacertsError as exc:
            _diagnose_client_certificate(s, exc)
            if pinned is None:
                raise ConfigError(f"{pre}.url", f"cannot get the CA certificates of the upstream: {exc}. Start it "
                                  f"first, or set `chain` to a PEM copy of its CA chain so that kipuka can start "
                                  f"while it is down") from None
            log.error("%s: the upstream is unreachable (%s); starting with the CA chain of %s", pre, exc, s.chain)
            return cls(s, order_chain(pinned, pinned[0]), down=f"unreachable at start-up: {exc}")
        return cls(s, chain)

    # --- the CertificateAuthority contract -----------------------------------------------

    def ca_certificates(self) -> list[x509.Certificate]:
        return list(self._chain)

    def is_issuer_of(self, cert: x509.Certificate) -> bool:
        return any(directly_issued(cert, issuer) for issuer in self._issuers)

    async def issue(self, req: IssueRequest) -> Issued:
        return await self._enroll(req)

    async def collect(self, ref: str, req: IssueRequest) -> Issued:
        """RFC 7030 4.2.3: a held request is asked about by sending it again; `ref` only names it."""
        return await self._enroll(req)

    async def sign_crl(self, entries: list[RevokedEntry], number: int, this_update: Any, next_update: Any) -> bytes:
        raise NotImplementedYet(f"CA {self.id} is the upstream {self.settings.describe()}: "
                                f"its CRLs come from that CA")

    async def sign_ocsp(self, answer: OcspAnswer, this_update: Any, next_update: Any, nonce: bytes | None) -> bytes:
        raise NotImplementedYet(f"CA {self.id} is the upstream {self.settings.describe()}: "
                                f"its OCSP responses come from that CA")

    async def health(self) -> str:
        """"ok" when the upstream answers GET /cacerts with our issuing CA in it (a real EST exchange)."""
        try:
            certs = await self._get_cacerts(self.settings.label, probe=True)
        except (InternalError, Unavailable) as exc:
            return exc.reason
        except CacertsError as exc:
            return str(exc)
        if self._chain[0] not in certs:
            return (f"upstream {self.settings.origin}: /cacerts no longer lists the issuing CA "
                    f"{self._chain[0].subject.rfc4514_string()} (a CA change: reload kipuka)")
        if self._down_at_start is not None:
            log.warning("ca.%s: the upstream %s answers now", self.id, self.settings.origin)
            self._down_at_start = None
        return "ok"

    def describe(self) -> str:
        return self.settings.describe()

    async def _revoke(self, serial: int, reason: x509.ReasonFlags) -> None:
        """A revokeRequest signed by the RA, to the /fullcmc of each upstream label until one issued it."""
        key, cert = self._ra_identity
        chain = tuple(load_certificates(self.settings.ra_cert)[1:])  # type: ignore[arg-type]
        signer = cmc.CmsSigner(key, cert, chain=chain)  # type: ignore[arg-type]
        refusals = []
        for label in self.settings.upstream_labels():
            url = self.settings.url("fullcmc", label)
            try:
                text = await revoke_via_fullcmc(self._exchange, url, signer, self._chain[0].subject, serial, reason)
            except NotThroughThisLabel as exc:
                refusals.append(f"{url}: {exc}")
                continue
            log.info("ca.%s: serial %x revoked at %s (%s)", self.id, serial, url, text)
            return
        raise Forbidden(f"the upstream CA did not revoke serial {serial:x}: {'; '.join(refusals)}")

    # --- enrollment ----------------------------------------------------------------------

    async def _enroll(self, req: IssueRequest) -> Issued:
        s = self.settings
        if req.csr_der is None:
            raise IssuanceRejected("an upstream EST CA takes PKCS#10 requests only (not CRMF)", status=400)
        label = s.upstream_label(req.label)
        url = s.url("simpleenroll", label)
        headers = {"Content-Type": wire.PKCS10, "Content-Transfer-Encoding": "base64", "Accept": "*/*"}
        status, resp_headers, body = await self._exchange("POST", url, _base64(req.csr_der), headers)
        if status == 200:
            return Issued(await self._issued(req, resp_headers, body))
        reason = wire.error_reason(body, resp_headers.get("content-type"), f"HTTP {status}")
        retry_after = wire.retry_after(resp_headers.get("retry-after")) or s.retry_after
        where = f"upstream {s.origin}"
        if status == 202:
            raise IssuancePending(_ref(label, req), retry_after=retry_after,
                                  reason=f"held by the upstream CA at {s.origin}")
        if status in (400, 403):
            raise IssuanceRejected(reason, status=status)  # the RA says "the CA refused the request: ..."
        if status == 401:
            raise InternalError(f"{where} did not accept this RA's credentials (401: {reason}); check ra_cert, "
                                f"username and the upstream's trust in them")
        if status == 404:
            raise InternalError(f"{where} has no EST label {label or '(unlabeled)'} (404: {reason}); check label")
        if status in (429, 503):
            raise Unavailable(f"{where} is busy or unavailable ({status}: {reason})", retry_after=retry_after)
        if status >= 500 and status != 501:
            raise InternalError(f"{where} failed ({status}: {reason})", retryable=True)
        raise InternalError(f"{where} answered {status} to simpleenroll: {reason}")

    async def _issued(self, req: IssueRequest, headers: dict[str, str], body: bytes) -> x509.Certificate:
        """The certificate of a 200 answer: the one for the request's key, signed by the upstream's CA."""
        where = f"upstream {self.settings.origin}"
        try:
            certs = wire.certificates(body, f"the simpleenroll answer of {where}",
                                      headers.get("content-transfer-encoding"))
        except InvalidResponse as exc:
            # It may have issued a certificate: another replica must not issue a second one.
            raise InternalError(exc.reason) from None
        want = req.public_key.public_bytes(*_SPKI)
        cert = next((c for c in certs if c.public_key().public_bytes(*_SPKI) == want), None)
        if cert is None:
            raise InternalError(f"{where} answered with no certificate for the requested public key")
        if not self.is_issuer_of(cert) and not (await self._refresh(req.label) and self.is_issuer_of(cert)):
            log.error("ca.%s: %s issued serial %x by %s, which is not the CA of its /cacerts", self.id, where,
                      cert.serial_number, cert.issuer.rfc4514_string())
            raise InternalError(f"{where} issued a certificate that its /cacerts CA did not sign "
                                f"(issuer {cert.issuer.rfc4514_string()})")
        return cert

    async def _refresh(self, kipuka_label: str) -> bool:
        """Fetch /cacerts again (the upstream may have a new issuing CA); True if the chain changed."""
        now = time.monotonic()
        if now - self._last_refresh < REFRESH_INTERVAL:
            return False
        self._last_refresh = now
        try:
            chain = order_chain(await self._get_cacerts(self.settings.upstream_label(kipuka_label)))
        except (CacertsError, InternalError, Unavailable) as exc:
            log.warning("ca.%s: cannot fetch /cacerts again: %s", self.id, getattr(exc, "reason", exc))
            return False
        if chain[0] == self._chain[0]:
            return False
        log.warning("ca.%s: the upstream's issuing CA is now %s (was %s)", self.id,
                    chain[0].subject.rfc4514_string(), self._chain[0].subject.rfc4514_string())
        self._chain, self._issuers = chain, [chain[0], *self._issuers]
        return True

    async def _get_cacerts(self, label: str | None, probe: bool = False) -> list[x509.Certificate]:
        url = self.settings.url("cacerts", label)
        status, headers, body = await self._exchange("GET", url, None, {"Accept": "*/*"}, probe=probe)
        return parse_cacerts(status, headers.get("content-type"), body, url)

    # --- HTTP ----------------------------------------------------------------------------

    async def _exchange(self, method: str, url: str, body: bytes | None, headers: dict[str, str],
                        probe: bool = False) -> tuple[int, dict[str, str], bytes]:
        """One request to the upstream (response header names in lower case).

        No answer at all (refused, reset, timeout, TLS) is Unavailable: a lone upstream
        that is down is a CA "temporarily unavailable" (503 + Retry-After), and a replica
        pool tries the next replica on it. A kept-alive connection the upstream closed while
        idle fails the same way: that is retried once, on a new connection.

        After a request got no answer, requests fail at once for QUIET_AFTER_FAILURE
        seconds (a hung upstream would otherwise hold each of them for `timeout`, and a
        pool would wait that long before trying the next replica); health probes still go.
        """
        s = self.settings
        if not probe and time.monotonic() < self._silent_until:
            raise Unavailable(f"upstream EST server {s.origin} is unreachable: {self._silence}",
                              retry_after=s.retry_after, unreachable=True)
        for attempt in (1, 2):
            try:
                async with (await self._session()).request(method, url, data=body, headers=headers,
                                                   auth=self._auth if method == "POST" else None) as resp:
                    if (resp.content_length or 0) > MAX_BODY:
                        raise InternalError(f"upstream {s.origin}: answer larger than {MAX_BODY} bytes")
                    data = await read_at_most(resp.content, MAX_BODY)
                    if len(data) > MAX_BODY:
                        raise InternalError(f"upstream {s.origin}: answer larger than {MAX_BODY} bytes")
                    self._silent_until = 0.0
                    return resp.status, {k.lower(): v for k, v in resp.headers.items()}, data
            except asyncio.TimeoutError:
                why = f"no answer within {s.timeout:g}s"
            except aiohttp.ClientConnectorCertificateError as exc:
                why = f"its TLS certificate is not trusted ({exc.certificate_error}); check ca_bundle"
            except aiohttp.ClientConnectorError as exc:
                err = exc.os_error
                why = f"cannot connect: {os.strerror(err.errno) if err.errno else err}"
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                why = f"{type(exc).__name__} {exc}".strip()
                if attempt == 1:
                    continue
            except aiohttp.ClientError as exc:
                why = f"{type(exc).__name__} {exc}".strip()
            break
        if not probe:  # a failed probe is health()'s answer (a pool logs when it marks a replica down)
            log.warning("ca.%s: upstream %s: %s", self.id, s.origin, why)
        self._silent_until, self._silence = time.monotonic() + QUIET_AFTER_FAILURE, why
        raise Unavailable(f"upstream EST server {s.origin} is unreachable: {why}", retry_after=s.retry_after,
                          unreachable=True)

    async def _session(self) -> aiohttp.ClientSession:
        """Keep-alive connections to the upstream, one pool per event loop (per worker).

        The session is closed with its loop: an async generator suspended in it is
        closed by the loop's shutdown_asyncgens(), which asyncio.run() calls before
        closing the loop (a command such as `kipuka certs revoke` ends that way)."""
        loop = asyncio.get_running_loop()
        held = self._sessions.get(loop)
        if held is None or held[0].closed:
            s = self.settings
            connector = aiohttp.TCPConnector(ssl=self._ssl, limit=s.connections, keepalive_timeout=30)
            session = aiohttp.ClientSession(
                connector=connector, headers={"User-Agent": USER_AGENT},
                timeout=aiohttp.ClientTimeout(total=s.timeout, sock_connect=min(s.timeout, 5.0)))
            closer = _close_with_loop(session)
            await closer.__anext__()
            held = self._sessions[loop] = (session, closer)
        return held[0]

    async def aclose(self) -> None:
        for session, _ in list(self._sessions.values()):
            await session.close()


def _startup_chain(s: UpstreamSettings, ctx: Any, pinned: list[x509.Certificate] | None) -> list[x509.Certificate]:
    """The upstream's chain from /cacerts of every upstream label this CA uses; all must agree,
    and agree with the pinned `chain` file if there is one. CacertsError: the upstream is unreachable."""
    chain: list[x509.Certificate] | None = None
    for label in s.upstream_labels():
        certs = fetch_cacerts(s, ctx, label)
        if pinned is not None and pinned[0] not in certs:
            raise ConfigError(f"ca.{s.ca_id}.chain", f"the upstream's /cacerts ({s.url('cacerts', label)}) does not "
                              f"hold the issuing CA of this file, {pinned[0].subject.rfc4514_string()}")
        got = order_chain(certs, pinned[0] if pinned else None)
        if chain is not None and got[0] != chain[0]:
            raise ConfigError(f"ca.{s.ca_id}.label_map", f"upstream label {label or '(unlabeled)'} has issuing CA "
                              f"{got[0].subject.rfc4514_string()}, not {chain[0].subject.rfc4514_string()}: "
                              f"one [ca] table is one CA; use a table per upstream CA")
        chain = chain or got
    assert chain is not None
    return chain


def _diagnose_client_certificate(s: UpstreamSettings, exc: CacertsError) -> None:
    """An upstream that drops the connection may be refusing the RA's certificate (TLS 1.3
    refuses it after the handshake, which looks like a reset): ask again without it."""
    if not exc.dropped or s.ra_cert is None:
        return
    try:
        fetch_cacerts(s, tls_context(dataclasses.replace(s, ra_cert=None, ra_key=None)), s.label)
    except CacertsError:
        return  # down either way
    raise ConfigError(f"ca.{s.ca_id}.ra_cert", f"{s.origin} refuses this RA certificate at the TLS handshake "
                      f"({exc}); the upstream must trust its issuer for TLS client certificates "
                      f"(kipuka: [tls] client_ca)")


def _base64(der: bytes) -> bytes:
    """RFC 8951 base64, wrapped at 64 columns with LF (what OpenSSL-based servers read best)."""
    text = base64.b64encode(der)
    return b"".join(text[i:i + 64] + b"\n" for i in range(0, len(text), 64))


def _ref(label: str | None, req: IssueRequest) -> str:
    """An opaque name for a request the upstream holds: its label and the requested key."""
    digest = hashlib.sha256(req.public_key.public_bytes(*_SPKI)).hexdigest()[:16]
    return f"est:{label or '-'}:{digest}"


async def _close_with_loop(session: aiohttp.ClientSession) -> AsyncIterator[None]:
    try:
        yield
    finally:
        await session.close()


def _close_sessions(sessions: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any]") -> None:
    """When a reload drops this CA: close its connections on their loops."""
    for loop, (session, _) in list(sessions.items()):
        if session.closed or loop.is_closed():
            continue
        try:
            loop.call_soon_threadsafe(lambda s=session: asyncio.ensure_future(s.close()))
        except RuntimeError:
            pass


def from_config(cfg: CAConfig) -> UpstreamEstCA:
    return UpstreamEstCA.from_config(cfg)

"""A CA back end that forwards requests to a Dogtag PKI CA over its REST API.

kipuka stays the RA: its label policy decides whether a request goes on; the
Dogtag profile the label maps to decides what the certificate holds. The
requester's own PKCS#10 is submitted (`forwards_requests`), as the RA agent
(a TLS client certificate Dogtag knows as an agent).

- Pending. A profile that Dogtag holds for approval (or `approve = false`)
  leaves the request pending: kipuka polls it for `approval_timeout`, then
  answers 202 + Retry-After with Dogtag's request id as the pending reference;
  the requester's retry looks the id up again (`collect`). With `approve =
  true` (the default) kipuka approves as agent what Dogtag holds, since its own
  policy already accepted the request.
- Failures. Dogtag unreachable, a timeout or a 5xx is a retryable
  InternalError, so a replica pool (ca/pool.py) tries the next URL; a 4xx
  about the request is IssuanceRejected (400), an agent's rejection or
  cancellation IssuanceRejected (403).
- Revocation goes to Dogtag first (RemoteRevoker); CRLs and OCSP are Dogtag's
  own (`signs_revocation = False`).
- Server-side keygen with archival (`kra_url` set): Dogtag's server-side
  keygen enrollment (a caServerKeygen_* profile), where the CA has the KRA
  generate and archive the key and returns it in a PKCS#12 under a one-time
  password kipuka chooses; kipuka unwraps it to PKCS#8 for its own delivery.

The REST calls and their documented bodies are in ca/dogtag_client.py.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import secrets
import ssl
import string
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from kipuka.ca.base import IssuancePending, IssuanceRejected, IssueRequest, Issued, directly_issued
from kipuka.ca.dogtag_client import DogtagClient, DogtagError, DogtagUnreachable, RequestInfo, serial_id
from kipuka.ca.options import CaOptions
from kipuka.ca.revocation import OcspAnswer, RevokedEntry
from kipuka.config import CAConfig, ConfigError
from kipuka.errors import BadRequest, InternalError, NotFound, NotImplementedYet
from kipuka.pem import load_certificates

log = logging.getLogger("kipuka.ca.dogtag")
T = TypeVar("T")

OPTION_KEYS = frozenset({
    "url", "agent_cert", "agent_key", "agent_key_password_env", "agent_key_password_file", "ca_bundle",
    "profile", "profiles", "approve", "approval_timeout", "timeout", "retry_after", "chain", "kra_url",
    "keygen_profile", "cmc_profile", "requestor"})
POOL_KEYS = frozenset({"replicas", "strategy", "health_interval"})  # read by ca/pool.py

# RFC 5280 reasons as Dogtag names them (RevocationReason; base/common/python/pki/cert.py CertRevokeRequest)
REASONS = {
    x509.ReasonFlags.unspecified: "Unspecified",
    x509.ReasonFlags.key_compromise: "Key_Compromise",
    x509.ReasonFlags.ca_compromise: "CA_Compromise",
    x509.ReasonFlags.affiliation_changed: "Affiliation_Changed",
    x509.ReasonFlags.superseded: "Superseded",
    x509.ReasonFlags.cessation_of_operation: "Cessation_of_Operation",
    x509.ReasonFlags.certificate_hold: "Certificate_Hold",
    x509.ReasonFlags.remove_from_crl: "Remove_from_CRL",
    x509.ReasonFlags.privilege_withdrawn: "Privilege_Withdrawn",
    x509.ReasonFlags.aa_compromise: "AA_Compromise",
}
PENDING_STATES = ("pending", "begin", "approved", "svc_pending")
_URL_RE = re.compile(r"^https://[^\s/?#]+/?$")


@dataclass(frozen=True)
class DogtagSettings:
    ca_id: str
    url: str
    agent_cert: Path
    agent_key: Path
    agent_key_password: str | None
    ca_bundle: Path | None
    profile: str
    profiles: dict[str, str]
    approve: bool
    approval_timeout: float
    timeout: float
    retry_after: int
    chain: Path | None
    kra_url: str | None
    keygen_profile: str
    cmc_profile: str
    requestor: str

    def profile_for(self, label: str) -> str:
        return self.profiles.get(label, self.profile)


def settings_from_config(cfg: CAConfig) -> DogtagSettings:
    """Validate a [ca.ID] table of type dogtag; errors name the offending key."""
    o = CaOptions(cfg, "dogtag", OPTION_KEYS | POOL_KEYS, inline_secrets={"agent_key_password": "password"})

    def https_url(name: str, required: bool) -> str | None:
        value = o.string(name)
        if value is None:
            if required:
                raise ConfigError(o.key(name), "required key is missing (e.g. https://ca.example.com:8443)")
            return None
        if not _URL_RE.match(value):
            raise ConfigError(o.key(name), f"expected an https:// URL of a Dogtag server such as "
                                           f"https://ca.example.com:8443, got {value!r}")
        return value.rstrip("/")

    url = https_url("url", True)
    profiles = o.opts.get("profiles", {})
    if not isinstance(profiles, dict) or not all(isinstance(k, str) and isinstance(v, str) and v
                                                 for k, v in profiles.items()):
        raise ConfigError(o.key("profiles"), 'expected a table of label = "Dogtag profile id", '
                                             'e.g. profiles = { corp = "caServerCert" }')
    return DogtagSettings(
        ca_id=cfg.id, url=url,  # type: ignore[arg-type]
        agent_cert=o.path("agent_cert", required=True, must_exist=True),  # type: ignore[arg-type]
        agent_key=o.path("agent_key", required=True, must_exist=True),  # type: ignore[arg-type]
        agent_key_password=o.secret("agent_key_password_env", "agent_key_password_file", "agent key password",
                                    required=False),
        ca_bundle=o.path("ca_bundle", must_exist=True),
        profile=o.string("profile", "caServerCert"), profiles=dict(profiles),  # type: ignore[arg-type]
        approve=o.boolean("approve", True),
        approval_timeout=o.seconds("approval_timeout", "2s", allow_zero=True),
        timeout=o.seconds("timeout", "10s"),
        retry_after=o.integer("retry_after", 10, 1, 86400), chain=o.path("chain", must_exist=True),
        kra_url=https_url("kra_url", False),
        keygen_profile=o.string("keygen_profile", "caServerKeygen_UserCert"),  # type: ignore[arg-type]
        cmc_profile=o.string("cmc_profile", "caFullCMCUserCert"),  # type: ignore[arg-type]
        requestor=o.string("requestor", "kipuka EST RA"),  # type: ignore[arg-type]
    )


def client_context(s: DogtagSettings) -> ssl.SSLContext:
    """TLS to Dogtag: its certificate checked against ca_bundle (or the system store), the agent cert presented."""
    pre = f"ca.{s.ca_id}"
    try:
        ctx = ssl.create_default_context(cafile=str(s.ca_bundle) if s.ca_bundle else None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{pre}.ca_bundle", f"cannot load: {exc}") from None
    try:
        ctx.load_cert_chain(str(s.agent_cert), str(s.agent_key), password=s.agent_key_password)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{pre}.agent_key", f"cannot load the agent certificate and key "
                                              f"(wrong password, or key and certificate do not match?): {exc}") from None
    return ctx


def order_chain(first: x509.Certificate, certs: list[x509.Certificate]) -> list[x509.Certificate]:
    """`first`, then its issuer, and so on, as far as `certs` reach."""
    chain = [first]
    pool = [c for c in certs if c != first]
    while pool:
        issuer = next((c for c in pool if directly_issued(chain[-1], c)), None)
        if issuer is None or chain[-1].issuer == chain[-1].subject:
            break
        chain.append(issuer)
        pool.remove(issuer)
    return chain


def fetch_chain(s: DogtagSettings, ctx: ssl.SSLContext) -> list[x509.Certificate]:
    """The CA chain from Dogtag (GET .../authorities/host-authority/cert and .../chain), at build time."""
    def get(path: str) -> bytes:
        req = urllib.request.Request(s.url + path, headers={"Accept": "application/x-pem-file"})
        with urllib.request.urlopen(req, context=ctx, timeout=s.timeout) as resp:  # noqa: S310 (https only)
            return resp.read()

    try:
        host = x509.load_pem_x509_certificates(get("/ca/rest/authorities/host-authority/cert"))[0]
        chain = x509.load_pem_x509_certificates(get("/ca/rest/authorities/host-authority/chain"))
    except (OSError, urllib.error.URLError, ValueError, IndexError) as exc:
        raise ConfigError(f"ca.{s.ca_id}.url", f"cannot fetch the CA chain from Dogtag at {s.url}: {exc}; "
                                               f"set chain = \"file.pem\" to start without it") from None
    return order_chain(host, chain)


def keygen_parameters(key_type: str) -> tuple[str, str]:
    """Dogtag's keyType and keySize for a kipuka key type ("ec-p256", "rsa2048" or "rsa-2048", ...)."""
    m = re.fullmatch(r"ec-p(256|384|521)", key_type)
    if m:
        return "EC", f"nistp{m.group(1)}"
    m = re.fullmatch(r"rsa-?(\d{4})", key_type)
    if m and m.group(1) in ("2048", "3072", "4096"):
        return "RSA", m.group(1)
    raise BadRequest(f"key type {key_type!r} cannot be generated by Dogtag's KRA")


def one_time_password() -> str:
    """A PKCS#12 password that passes Dogtag's p12ExportPasswordConstraint defaults (mixed classes, no repeats)."""
    rng = secrets.SystemRandom()
    chars = (rng.sample(string.ascii_uppercase, 8) + rng.sample(string.ascii_lowercase, 8)
             + rng.sample(string.digits, 6) + rng.sample("!#%+-=_~", 4))
    rng.shuffle(chars)
    return "".join(chars)


class DogtagCA:
    forwards_requests = True
    signs_revocation = False

    def __init__(self, settings: DogtagSettings, chain: list[x509.Certificate], client: DogtagClient) -> None:
        self.id = settings.ca_id
        self.settings = settings
        self._chain = chain
        self._cert = chain[0]
        self.client = client
        self.archives_keys = settings.kra_url is not None

    @classmethod
    def from_config(cls, cfg: CAConfig) -> "DogtagCA":
        s = settings_from_config(cfg)
        ctx = client_context(s)
        if s.chain is not None:
            try:
                certs = load_certificates(s.chain)
            except ValueError as exc:
                raise ConfigError(f"ca.{cfg.id}.chain", str(exc)) from None
            chain = order_chain(certs[0], certs)
        else:
            chain = fetch_chain(s, ctx)
        return cls(s, chain, DogtagClient(s.url, ctx, s.timeout, s.kra_url))

    # --- the CertificateAuthority contract -------------------------------------------------

    def ca_certificates(self) -> list[x509.Certificate]:
        return list(self._chain)

    def is_issuer_of(self, cert: x509.Certificate) -> bool:
        return directly_issued(cert, self._cert)

    def describe(self) -> str:
        return f"Dogtag {self.settings.url}"

    async def issue(self, req: IssueRequest) -> Issued:
        if req.csr_der is None:
            raise InternalError(f"CA {self.id}: a Dogtag CA forwards the requester's CSR, and there is none")
        csr = x509.load_der_x509_csr(req.csr_der)
        profile = self.settings.profile_for(req.label)
        pem = csr.public_bytes(serialization.Encoding.PEM).decode("ascii")
        info = await self._guard(self.client.submit(profile, pem, self.settings.requestor), submitting=True)
        log.info("ca.%s: Dogtag request %s on %s is %s", self.id, info.request_id, profile, info.status)
        if info.status in PENDING_STATES and self.settings.approve:
            info = await self._approve(info)
        deadline = time.monotonic() + self.settings.approval_timeout
        delay = 0.1
        while info.status in PENDING_STATES and time.monotonic() < deadline:
            await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 1.0)
            info = await self._lookup(info.request_id)
        return await self._settle(info, csr.public_key())

    async def collect(self, ref: str, req: IssueRequest) -> Issued:
        public_key = x509.load_der_x509_csr(req.csr_der).public_key() if req.csr_der else None
        return await self._settle(await self._lookup(ref), public_key)

    async def revoke(self, serial: int, reason: x509.ReasonFlags) -> None:
        try:
            info = await self._guard(self.client.revoke(serial, REASONS[reason], f"revoked through kipuka ({self.id})"))
        except DogtagError as exc:
            if exc.status == 404:
                raise NotFound(f"Dogtag has no certificate {serial_id(serial)}") from None
            if exc.status in (401, 403):
                raise InternalError(f"Dogtag refused kipuka's agent certificate: {exc.message}") from None
            raise BadRequest(f"Dogtag refused to revoke {serial_id(serial)}: {exc.message}") from None
        if info is not None and (info.operation_result == "error" or info.status in ("rejected", "canceled")):
            raise InternalError(f"Dogtag did not revoke {serial_id(serial)}: {info.error or info.status}")
        log.info("ca.%s: revoked %s at Dogtag (%s)", self.id, serial_id(serial), REASONS[reason])

    async def sign_crl(self, entries: list[RevokedEntry], number: int, this_update: dt.datetime,
                       next_update: dt.datetime) -> bytes:
        raise NotImplementedYet(f"CA {self.id} is a Dogtag CA: Dogtag publishes its own CRL "
                                f"({self.settings.url}/ca/ee/ca/getCRL)")

    async def sign_ocsp(self, answer: OcspAnswer, this_update: dt.datetime, next_update: dt.datetime,
                        nonce: bytes | None) -> bytes:
        raise NotImplementedYet(f"CA {self.id} is a Dogtag CA: ask Dogtag's own OCSP responder "
                                f"({self.settings.url}/ca/ocsp)")

    async def health(self) -> str:
        """A real round trip: Dogtag's getStatus says running and it presents this CA's certificate."""
        try:
            status = await self.client.status()
            if status.get("Status") != "running":
                return f"Dogtag at {self.settings.url} is {status.get('Status') or 'not running'}"
            host = x509.load_pem_x509_certificates((await self.client.host_certificate_pem()).encode())[0]
            if host != self._cert:
                return f"Dogtag at {self.settings.url} presents a different CA certificate ({host.subject.rfc4514_string()})"
            if self.settings.kra_url:
                kra = await self.client.status(self.settings.kra_url, "kra")
                if kra.get("Status") != "running":
                    return f"Dogtag KRA at {self.settings.kra_url} is {kra.get('Status') or 'not running'}"
        except (DogtagUnreachable, DogtagError, ValueError, IndexError) as exc:
            return f"Dogtag at {self.settings.url}: {exc}"
        return "ok"

    async def close(self) -> None:
        await self.client.close()

    # --- server-side keygen through the KRA ----------------------------------------------------

    async def issue_with_archived_key(self, req: IssueRequest, key_type: str) -> tuple[Issued, bytes]:
        if not self.archives_keys:
            raise InternalError(f"CA {self.id}: no kra_url, so Dogtag's KRA does not generate keys here")
        dogtag_type, size = keygen_parameters(key_type)
        password = one_time_password()
        names = req.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        fields = {"requestor_name": self.settings.requestor}
        if names:
            fields["sn_cn"] = str(names[0].value)
        try:
            ctype, body = await self._guard(self.client.server_keygen(
                self.settings.keygen_profile, password, dogtag_type, size, fields))
        except DogtagError as exc:
            raise IssuanceRejected(f"Dogtag refused server-side keygen: {exc.message}", 400) from None
        if ctype not in ("application/x-pkcs12", "application/pkcs12"):
            raise self._keygen_failure(body)
        try:
            key, cert, _ = pkcs12.load_key_and_certificates(body, password.encode())
        except ValueError as exc:
            raise InternalError(f"Dogtag's server-side keygen answer is not a PKCS#12 kipuka can open: {exc}") from None
        if key is None or cert is None:
            raise InternalError("Dogtag's server-side keygen PKCS#12 lacks the key or the certificate")
        self._check(cert, key.public_key())
        pkcs8 = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
        log.info("ca.%s: Dogtag KRA generated and archived the key of %s", self.id, serial_id(cert.serial_number))
        return Issued(cert), pkcs8

    def _keygen_failure(self, body: bytes) -> Exception:
        """Dogtag answered the keygen form with a page instead of a PKCS#12: pending, or an error."""
        text = body[:20000].decode("utf-8", "replace")
        reason = re.search(r'errorReason\s*=\s*"([^"]*)"', text)
        request = re.search(r'requestId\s*=\s*"([^"]*)"', text)
        if reason and reason.group(1):
            return IssuanceRejected(f"Dogtag refused server-side keygen: {reason.group(1)}", 403)
        if request:
            return InternalError(f"Dogtag holds server-side keygen request {request.group(1)} for an agent; "
                                 f"keygen_profile {self.settings.keygen_profile} must approve automatically")
        return InternalError("Dogtag's answer to server-side keygen held no PKCS#12")

    # --- Full CMC --------------------------------------------------------------------------------

    async def submit_cmc(self, pki_data_der: bytes, label: str) -> bytes:
        try:
            return await self._guard(self.client.submit_cmc(self.settings.cmc_profile, pki_data_der))
        except DogtagError as exc:
            if exc.status in (401, 403, 404):  # kipuka's agent or cmc_profile: a configuration problem
                raise InternalError(f"Dogtag refused the CMC request on {self.settings.cmc_profile}: "
                                    f"{exc.message}") from None
            raise BadRequest(f"Dogtag refused the CMC request: {exc.message}") from None

    # --- helpers ---------------------------------------------------------------------------------

    async def _guard(self, call: Awaitable[T], *, submitting: bool = False) -> T:
        """Dogtag errors in kipuka's terms; DogtagError (4xx) passes through unless submitting."""
        try:
            return await call
        except DogtagUnreachable as exc:
            raise InternalError(f"Dogtag unreachable: {exc}", retryable=True) from None
        except DogtagError as exc:
            if not submitting:
                raise
            if exc.status in (401, 403):
                raise InternalError(f"Dogtag refused kipuka's agent certificate: {exc.message}") from None
            if exc.status == 404:
                raise InternalError(f"Dogtag does not know the profile: {exc.message}") from None
            raise IssuanceRejected(f"Dogtag rejected the request: {exc.message}", 400) from None

    async def _lookup(self, request_id: str) -> RequestInfo:
        info = await self._guard(self.client.request(request_id))
        if info is None:
            raise IssuanceRejected(f"Dogtag has no request {request_id}", 403)
        return info

    async def _approve(self, info: RequestInfo) -> RequestInfo:
        try:
            await self._guard(self.client.approve(info.request_id))
        except DogtagError as exc:  # not an agent for this profile, or a conflict: leave it to Dogtag's agents
            log.warning("ca.%s: could not approve Dogtag request %s: %s", self.id, info.request_id, exc)
            return info
        return await self._lookup(info.request_id)

    async def _settle(self, info: RequestInfo, public_key: Any) -> Issued:
        if info.status in PENDING_STATES:
            raise IssuancePending(info.request_id, self.settings.retry_after,
                                  f"pending at Dogtag as request {info.request_id}")
        if info.status in ("rejected", "canceled"):
            raise IssuanceRejected(f"Dogtag {info.status} request {info.request_id}"
                                   + (f": {info.error}" if info.error else ""), 403)
        if info.status != "complete" or not info.cert_id:
            raise InternalError(f"Dogtag request {info.request_id} is {info.status or 'in an unknown state'}"
                                + (f": {info.error}" if info.error else ""))
        pem, _ = await self._guard(self.client.certificate_pem(info.cert_id))
        try:
            cert = x509.load_pem_x509_certificate(pem.encode())
        except ValueError:
            raise InternalError(f"Dogtag returned certificate {info.cert_id} in a form kipuka cannot read") from None
        self._check(cert, public_key)
        return Issued(cert)

    def _check(self, cert: x509.Certificate, public_key: Any) -> None:
        """Never hand out a certificate this CA did not sign, or one for another key."""
        if not self.is_issuer_of(cert):
            raise InternalError(f"Dogtag returned certificate {serial_id(cert.serial_number)} "
                                f"not signed by CA {self.id}")
        if public_key is not None and cert.public_key() != public_key:
            raise InternalError(f"Dogtag returned certificate {serial_id(cert.serial_number)} for another key")

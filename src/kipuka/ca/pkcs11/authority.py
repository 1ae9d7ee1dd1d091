"""`PKCS11CA`, the CA back end: signs through pooled token sessions, reports and recovers from a lost token."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading
import time
from typing import Any, Callable, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, utils
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from kipuka.ca.base import IssueRequest, Issued, directly_issued
from kipuka.ca.pkcs11.module import Module, _pkcs11
from kipuka.ca.pkcs11.sessions import _SessionPool, _Slot
from kipuka.ca.pkcs11.settings import Pkcs11Settings, settings_from_config
from kipuka.ca.pkcs11.token_keys import _DIGEST_INFO, mechanism_for, refuse_ml_dsa, token_key
from kipuka.ca.profile import build_certificate
from kipuka.ca.revocation import OcspAnswer, RevokedEntry, build_crl, build_ocsp_response
from kipuka.ca.signing import signature_of
from kipuka.config import CAConfig
from kipuka.errors import InternalError, Unavailable
from kipuka.pem import load_certificates, load_private_key

log = logging.getLogger("kipuka.ca.pkcs11")
T = TypeVar("T")


class PKCS11CA:
    def __init__(self, settings: Pkcs11Settings, chain: list[x509.Certificate],
                 ocsp_responder: tuple[x509.Certificate, CertificateIssuerPrivateKeyTypes] | None = None) -> None:
        self.id = settings.ca_id
        self.settings = settings
        self._chain = chain
        self._cert = chain[0]
        self._public = self._cert.public_key()
        self._mechanism = mechanism_for(self._public)
        self._ocsp = ocsp_responder
        self._module = Module.get(settings.module)
        self._slots = [_Slot(i, self.id) for i in range(settings.sessions)]
        self._pool = _SessionPool(list(self._slots))
        self._state_lock = threading.Lock()  # one reconnect at a time
        self._token: Any = None
        self._generation = -1  # module generation the token (and key) were found in
        self._down: str | None = "not connected yet"
        self._failed_generation = -1
        self._next_attempt = 0.0
        self._attempts = 0  # failed reconnect attempts in a row
        self._direct_key: Any = None  # the key object in the login session, for probes and content_signer
        self._direct_generation = -1

    @classmethod
    def from_config(cls, cfg: CAConfig) -> "PKCS11CA":
        settings = settings_from_config(cfg)
        chain = load_certificates(settings.cert)[:1]
        if settings.chain is not None:
            chain += [c for c in load_certificates(settings.chain) if c != chain[0]]
        responder = None
        if settings.ocsp_cert is not None and settings.ocsp_key is not None:
            responder = (load_certificates(settings.ocsp_cert)[0], load_private_key(settings.ocsp_key))
            if responder[1].public_key() != responder[0].public_key():  # type: ignore[union-attr]
                raise ValueError(f"ca.{cfg.id}: ocsp_key does not match ocsp_cert")
        refuse_ml_dsa(settings, chain[0].public_key())
        ca = cls(settings, chain, responder)  # type: ignore[arg-type]
        try:
            ca._reconnect(force=True)
        except _KeyMismatch as exc:
            raise ValueError(f"ca.{cfg.id}: {exc}") from None
        except InternalError as exc:
            # Start anyway: requests get 500 and health() says why until the token is back.
            log.error("ca.%s: %s; will retry every %ss", cfg.id, exc.reason, settings.reconnect_interval)
        return ca

    # --- the CertificateAuthority contract -----------------------------------------------

    def ca_certificates(self) -> list[x509.Certificate]:
        return list(self._chain)

    def is_issuer_of(self, cert: x509.Certificate) -> bool:
        return directly_issued(cert, self._cert)

    async def issue(self, req: IssueRequest) -> Issued:
        now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        serial = x509.random_serial_number()
        cert = await self._run(lambda key: build_certificate(req, self._cert, key, serial, now))
        return Issued(cert)

    async def sign_crl(self, entries: list[RevokedEntry], number: int, this_update: dt.datetime,
                       next_update: dt.datetime) -> bytes:
        return await self._run(lambda key: build_crl(self._cert, key, entries, number, this_update, next_update))

    async def sign_ocsp(self, answer: OcspAnswer, this_update: dt.datetime, next_update: dt.datetime,
                        nonce: bytes | None) -> bytes:
        if self._ocsp is not None:  # a delegated responder with a software key
            responder, key = self._ocsp
            return build_ocsp_response(answer, responder, key, self._cert, this_update, next_update, nonce)
        return await self._run(lambda key: build_ocsp_response(answer, self._cert, key, self._cert, this_update,
                                                               next_update, nonce))

    async def health(self) -> str:
        """A real test signature through the token (outside the session pool), verified."""
        return await asyncio.get_running_loop().run_in_executor(None, self._probe)

    def content_signer(self) -> tuple[CertificateIssuerPrivateKeyTypes, x509.Certificate]:
        """The token key for CMS content this CA vouches for; its sign() blocks briefly (one C_Sign)."""
        return token_key(self._public, self._direct_sign), self._cert

    def describe(self) -> str:
        return f"{self.settings.token_name()} {self.settings.key_name()} in {self.settings.module}"

    # --- signing through the pool ----------------------------------------------------------

    async def _run(self, job: Callable[[CertificateIssuerPrivateKeyTypes], T]) -> T:
        s = self.settings
        slot = await self._pool.acquire(s.session_timeout)
        if slot is None:
            raise Unavailable(f"CA {self.id}: all {s.sessions} HSM sessions busy for {s.session_timeout:g}s",
                              retry_after=s.retry_after)
        try:
            return await asyncio.get_running_loop().run_in_executor(slot.executor, self._in_slot, slot, job)
        finally:
            self._pool.release(slot)

    def _in_slot(self, slot: _Slot, job: Callable[[CertificateIssuerPrivateKeyTypes], T]) -> T:
        """In the slot's thread: sign, reconnecting once if the token went away."""
        if self.settings.sign_delay:
            time.sleep(self.settings.sign_delay)
        return self._retrying(lambda: job(self._slot_key(slot)))

    def _retrying(self, attempt: Callable[[], T], prepare: Callable[[], None] | None = None) -> T:
        """`attempt`, again at once after a stale session (the module was re-initialised under it),
        and after a reconnect when the token failed; a second token failure ends it (503)."""
        p11 = _pkcs11()
        failures = 0
        for _ in range(5):
            if prepare is not None:
                prepare()
            if self._down is not None:
                self._reconnect(force=failures > 0)
            try:
                return attempt()
            except _Stale:
                continue
            except p11.PKCS11Error as exc:
                self._mark_down(exc)
                failures += 1
                if failures == 2:
                    break
        raise self._unreachable()

    def _slot_key(self, slot: _Slot) -> CertificateIssuerPrivateKeyTypes:
        m = self._module
        if slot.generation != m.generation or slot.key is None:
            if self._generation != m.generation:
                self._rejoin()
            with m.exclusive():
                if self._generation != m.generation:
                    raise _Stale()
                session = self._token.open()
                p11_key = self._find_key(session)
                slot.session, slot.generation = session, m.generation

            def c_sign(data: bytes, _key: Any = p11_key, _gen: int = m.generation) -> bytes:
                with m.signing():
                    if m.generation != _gen:
                        raise _Stale()
                    return _key.sign(data, mechanism=self._mechanism)

            slot.key = token_key(self._public, c_sign)
        return slot.key

    def _find_key(self, session: Any) -> Any:
        p11 = _pkcs11()
        attrs: dict[Any, Any] = {p11.Attribute.CLASS: p11.ObjectClass.PRIVATE_KEY}
        if self.settings.key_label is not None:
            attrs[p11.Attribute.LABEL] = self.settings.key_label
        if self.settings.key_id is not None:
            attrs[p11.Attribute.ID] = self.settings.key_id
        found = list(session.get_objects(attrs))
        if not found:
            raise p11.NoSuchKey(f"no private {self.settings.key_name()} on the {self.settings.token_name()}")
        if len(found) > 1:
            raise _KeyMismatch(f"{len(found)} private keys match {self.settings.key_name()}: add key_id")
        return found[0]

    # --- state: down, reconnect, probe ----------------------------------------------------

    def _rejoin(self) -> None:
        """Another CA of this process re-initialised the module: find token and key again."""
        with self._state_lock:
            if self._generation == self._module.generation or self._down is not None:
                rejoin = False
            else:
                self._down = "module re-initialised"
                self._failed_generation = self._generation  # stale: no second re-initialisation
                rejoin = True
        if rejoin or self._down is not None:
            self._reconnect(force=rejoin)

    def _mark_down(self, exc: BaseException) -> None:
        with self._state_lock:
            if self._down is None:
                reason = f"{type(exc).__name__} {exc}".strip()
                self._down = reason
                self._failed_generation = self._generation
                self._next_attempt = 0.0  # the first reconnect is immediate
                log.error("ca.%s: HSM unreachable (%s): %s", self.id, self.describe(), reason)

    def _unreachable(self) -> InternalError:
        return InternalError(f"HSM unreachable: CA {self.id}: {self._down}", retryable=True)

    def _reconnect(self, force: bool = False) -> None:
        """Find the token and key again (re-initialising the module if needed) and prove them."""
        p11 = _pkcs11()
        with self._state_lock:
            if self._down is None:
                return
            now = time.monotonic()
            if not force and now < self._next_attempt:
                raise self._unreachable()
            # Each failed attempt re-initialises the module, which costs every other CA of this
            # process that uses it a new session: back off, up to 10 x reconnect_interval.
            self._attempts += 1
            self._next_attempt = now + self.settings.reconnect_interval * min(2 ** (self._attempts - 1), 10)
            m = self._module
            try:
                with m.exclusive():
                    if self._failed_generation >= 0 and self._failed_generation == m.generation:
                        m.reinitialize(self._failed_generation)
                    token = m.find_token(self.settings)
                    session = m.login(token, self.settings.pin)
                    try:
                        key = self._find_key(session)
                        raw = key.sign(b"\x00" * 32 if self._mechanism == p11.Mechanism.ECDSA
                                       else _DIGEST_INFO["sha256"] + b"\x00" * 32, mechanism=self._mechanism)
                    except p11.UserNotLoggedIn:
                        m.forget_login(token)
                        raise
                    self._check_signature(raw)
                    self._token, self._generation = token, m.generation
                    self._direct_key, self._direct_generation = key, m.generation
            except _KeyMismatch:
                raise
            except (p11.PKCS11Error, OSError) as exc:
                self._failed_generation = m.generation  # the next attempt re-initialises the module
                reason = f"{type(exc).__name__} {exc}".strip()
                self._down = reason
                raise self._unreachable() from None
            if self._failed_generation >= 0 and self._down != "module re-initialised":
                log.warning("ca.%s: HSM reconnected (%s)", self.id, self.describe())
            self._down = None
            self._failed_generation = -1
            self._attempts = 0

    def _check_signature(self, raw: bytes) -> None:
        """The token key must be the certificate's key (verified on a zero digest)."""
        try:
            if isinstance(self._public, ec.EllipticCurvePublicKey):
                half = len(raw) // 2
                der = utils.encode_dss_signature(int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big"))
                self._public.verify(der, b"\x00" * 32, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
            else:
                self._public.verify(raw, b"\x00" * 32, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))  # type: ignore[union-attr]
        except InvalidSignature:
            raise _KeyMismatch(f"the {self.settings.key_name()} on the {self.settings.token_name()} does not match "
                               f"certificate {self.settings.cert}") from None

    def _direct_sign(self, data: bytes) -> bytes:
        """C_Sign in the login session (health probes, content_signer): no pool slot needed."""
        def rejoin() -> None:
            if self._generation != self._module.generation:
                self._rejoin()

        def sign() -> bytes:
            m = self._module
            with m.signing():
                if self._direct_generation != m.generation or self._direct_key is None:
                    raise _Stale()
                return self._direct_key.sign(data, mechanism=self._mechanism)

        return self._retrying(sign, rejoin)

    def _probe(self) -> str:
        try:
            signature_of(token_key(self._public, self._direct_sign), b"kipuka health probe")
        except InternalError as exc:
            return exc.reason
        except _KeyMismatch as exc:
            return f"HSM key mismatch: {exc}"
        except Exception as exc:  # any failure to sign is the answer
            return f"cannot sign: {exc}"
        return "ok"


class _Stale(Exception):
    """A session or key object from before the module was re-initialised (not a token failure)."""


class _KeyMismatch(Exception):
    """The token answered, but its key is not the certificate's: a configuration error."""


def from_config(cfg: CAConfig) -> PKCS11CA:
    return PKCS11CA.from_config(cfg)

"""One certificate, one pass: finish what a crash left, decide whether it is due, renew or enroll.

The decision, in order:
1. an install that a crash interrupted is finished (`kipuka.client.install.recover`);
2. a request kept in flight (202, or a run that was killed) is resumed once
   the time the server asked for has come: same key, same request;
3. a certificate that is in place, matches its key and is not expired is
   re-enrolled over mTLS with itself when its renewal time comes;
4. otherwise the entry enrolls: with its bootstrap OTP, or its bootstrap
   certificate, each used for one certificate only (afterwards the agent
   renews with the certificate it got). A spent credential is never sent
   again; a new OTP written to the same file is.
Failures wait `retry_initial`, doubling up to `retry_max`, and are retried for
ever: an agent outlives a server outage.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from dataclasses import dataclass
from typing import Callable

from cryptography import x509

from kipuka.client import enrollment, exitcodes
from kipuka.client.agent import hook
from kipuka.client.agent.config import CertificateConfig
from kipuka.client.agent.schedule import backoff, renewal_time
from kipuka.client.agent.state import CertState, StateDir
from kipuka.client.client import EstClient
from kipuka.client.csr import CsrSpec, PrivateKey, generate_key, load_private_key
from kipuka.client.describe import human, iso
from kipuka.client.errors import EstError, PendingTimeout, TlsError
from kipuka.client.files import certs_pem, read_bytes, read_certificate, write_atomic
from kipuka.client.install import Destination, install, recover
from kipuka.client.pending import PendingRequest
from kipuka.client.results import Issued
from kipuka.client.verify import fingerprint, same_public_key

Log = Callable[[str], None]
ENROLLED, RENEWED, NOT_DUE, PENDING, WAITING, FAILED = "enrolled", "renewed", "not_due", "pending", "waiting", "failed"


@dataclass
class Result:
    name: str
    action: str                               # one of the constants above
    exit_code: int
    message: str
    certificate: x509.Certificate | None      # what is in place now
    next_time: dt.datetime | None             # when this entry wants looking at again
    renew_at: dt.datetime | None = None


@dataclass
class _Credentials:
    auth: tuple[str, str] | None = None
    client_cert: tuple[str, str] | None = None
    spends: tuple[str, str] | None = None     # ("otp_spent" | "bootstrap_cert_spent", digest) once issued


class Runner:
    def __init__(self, cfg: CertificateConfig, states: StateDir, log: Log,
                 clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc)) -> None:
        self.cfg = cfg
        self.states = states
        self.log = lambda msg: log(f"[{cfg.name}] {msg}")
        self.clock = clock
        self.journal = states.journal(cfg.name)
        self.dest = Destination(cfg.cert, cfg.key, cfg.chain, cfg.fullchain, cfg.cert_mode, cfg.key_mode,
                                cfg.owner_ids)

    # --- the pass ---------------------------------------------------------------------------

    def run(self, force: bool = False) -> Result:
        state = self.states.load(self.cfg.name)
        now = self.clock()
        try:
            finished = recover(self.dest, self.journal)
        except EstError as exc:
            return self._failed(state, now, exc)
        if finished is not None:
            self.log("finished installing a certificate that an interrupted run had obtained")
            return self._succeeded(state, now, RENEWED, finished, None)
        current = self._current()
        try:
            pending = self.journal.load()
        except EstError as exc:
            return self._failed(state, now, exc)
        renew_at = None
        if current is not None and current[0].not_valid_after_utc > now:
            renew_at = renewal_time(current[0], self.cfg.renew_before, self.cfg.jitter, self.cfg.name)
        if not force:
            wait = state.next_attempt_time()
            if wait is not None and wait > now and (pending is not None or state.last_result == FAILED):
                code = exitcodes.PENDING if pending is not None else (state.last_exit_code or exitcodes.ERROR)
                why = "the server asked to be asked again" if pending is not None else "backing off after a failure"
                return Result(self.cfg.name, WAITING, code, f"{why}; next attempt {iso(wait)}",
                              current[0] if current else None, wait, renew_at)
            if pending is None and renew_at is not None and now < renew_at:
                return Result(self.cfg.name, NOT_DUE, exitcodes.NOT_DUE,
                              f"not due: renews at {iso(renew_at)} (expires {iso(current[0].not_valid_after_utc)})",  # type: ignore[index]
                              current[0], renew_at, renew_at)  # type: ignore[index]
        state.last_attempt = iso(now)
        try:
            issued, request, creds = self._obtain(current if renew_at is not None else None, pending, state)
        except PendingTimeout as exc:
            wait = max(1, exc.retry_after or 60)
            state.last_result, state.last_error, state.last_exit_code = PENDING, None, exitcodes.PENDING
            state.next_attempt = iso(now + dt.timedelta(seconds=wait))
            self.states.save(self.cfg.name, state)
            self.log(f"request held by the server (202): asking again in {human(wait)}")
            return Result(self.cfg.name, PENDING, exitcodes.PENDING, f"pending; next attempt {state.next_attempt}",
                          current[0] if current else None, now + dt.timedelta(seconds=wait), renew_at)
        except TlsError as exc:
            self._forget_bootstrapped_trust()
            return self._failed(state, now, exc)
        except EstError as exc:
            return self._failed(state, now, exc)
        action = RENEWED if request.operation in enrollment.RENEWALS else ENROLLED
        try:
            install(self.dest, issued.certificate, issued.chain, request.key, self.journal, request)
        except EstError as exc:
            return self._failed(state, now, exc)
        if creds.spends is not None:
            setattr(state, creds.spends[0], creds.spends[1])
        return self._succeeded(state, now, action, issued.certificate, issued)

    # --- outcomes ---------------------------------------------------------------------------

    def _succeeded(self, state: CertState, now: dt.datetime, action: str, cert: x509.Certificate,
                   issued: Issued | None) -> Result:
        state.last_result, state.last_error, state.last_exit_code = action, None, exitcodes.OK
        state.last_success = state.last_attempt = iso(now)
        state.failures, state.next_attempt = 0, None
        self.states.save(self.cfg.name, state)
        renew_at = renewal_time(cert, self.cfg.renew_before, self.cfg.jitter, self.cfg.name)
        self.log(f"{action} serial {cert.serial_number:x}, valid until {iso(cert.not_valid_after_utc)}; "
                 f"next renewal {iso(renew_at)}")
        code = hook.run(self.cfg, cert, action, self.log)
        if code is not None:
            state.hook_exit_code, state.hook_last_run = code, iso(self.clock())
            self.states.save(self.cfg.name, state)
        return Result(self.cfg.name, action, exitcodes.OK, f"{action}; valid until {iso(cert.not_valid_after_utc)}",
                      cert, renew_at, renew_at)

    def _failed(self, state: CertState, now: dt.datetime, exc: EstError) -> Result:
        state.failures += 1
        delay = backoff(state.failures, self.cfg.retry_initial, self.cfg.retry_max)
        state.last_attempt = iso(now)
        state.last_result, state.last_error, state.last_exit_code = FAILED, exc.reason, exitcodes.for_error(exc)
        state.next_attempt = iso(now + dt.timedelta(seconds=delay))
        self.states.save(self.cfg.name, state)
        self.log(f"failed ({state.failures} in a row): {exc.reason}; retrying in {human(delay)}")
        current = self._current()
        return Result(self.cfg.name, FAILED, state.last_exit_code, exc.reason, current[0] if current else None,
                      now + dt.timedelta(seconds=delay))

    # --- obtaining a certificate ------------------------------------------------------------

    def _obtain(self, current: tuple[x509.Certificate, PrivateKey] | None, pending: PendingRequest | None,
                state: CertState) -> tuple[Issued, PendingRequest, _Credentials]:
        cfg = self.cfg
        self.dest.check()  # a path that cannot be written fails now, before a credential is spent
        if pending is not None and pending.operation in enrollment.RENEWALS and current is None:
            self.log("dropping a kept re-enrollment: the certificate it renews is gone or expired")
            self.journal.remove()
            pending = None
        renewing = pending.operation in enrollment.RENEWALS if pending is not None else current is not None
        holder = current if renewing and current is not None else None
        operation = enrollment.renewal_operation(holder[1]) if holder is not None else enrollment.SIMPLEENROLL
        creds = _Credentials(client_cert=enrollment.renewal_client_cert(holder[1], cfg.cert, cfg.key)) \
            if holder is not None else self._bootstrap_credentials(state)
        trust = None if cfg.trust == "system" else cfg.trust
        saved_trust = self.states.trust_file(cfg.name)
        if trust is None and cfg.trust != "system" and os.path.exists(saved_trust):
            trust = saved_trust
        est = EstClient(cfg.server, cfg.label, trust=trust, fingerprint=cfg.fingerprint,
                        client_cert=creds.client_cert, auth=creds.auth,
                        auth_mode="challenge" if cfg.auth_after_challenge else "preemptive",
                        channel_binding=cfg.channel_binding, timeout=cfg.timeout, max_wait=0,
                        on_progress=self.log)
        with est:
            attrs = enrollment.server_attributes(est, self.log)
            if est.bootstrapped and est.trust_anchors:
                write_atomic(saved_trust, certs_pem(est.trust_anchors), 0o644)
            enrollment.follow_channel_binding(est, attrs, self.log)
            if renewing:
                assert current is not None or pending is not None
                cert, key = current if current is not None else (None, None)

                def make_spec() -> CsrSpec:
                    new = generate_key(cfg.key_type or enrollment.same_key_type(key)) if cfg.rotate_key else key
                    return CsrSpec.like_certificate(new, cert)  # type: ignore[arg-type]
            else:
                def make_spec() -> CsrSpec:
                    key = generate_key(enrollment.key_type(cfg.key_type, attrs, self.log))
                    return CsrSpec.for_names(key, cfg.common_name or cfg.user, cfg.sans)
            issued, request = enrollment.request(est, operation, make_spec, self.journal, progress=self.log,
                                                 holder=holder)
        return issued, request, creds

    def _bootstrap_credentials(self, state: CertState) -> _Credentials:
        cfg = self.cfg
        if cfg.otp_file:
            otp = read_bytes(cfg.otp_file, "OTP file").decode("utf-8", "replace").strip() \
                if os.path.exists(cfg.otp_file) else ""
            digest = hashlib.sha256(otp.encode()).hexdigest()
            if otp and digest != state.otp_spent:
                return _Credentials(auth=(cfg.user, otp), spends=("otp_spent", digest))  # type: ignore[arg-type]
        if cfg.bootstrap_cert and cfg.bootstrap_key:
            digest = fingerprint(read_certificate(cfg.bootstrap_cert))
            if digest != state.bootstrap_cert_spent:
                return _Credentials(client_cert=(cfg.bootstrap_cert, cfg.bootstrap_key),
                                    spends=("bootstrap_cert_spent", digest))
        raise EstError("no certificate in place to renew with, and no unused bootstrap credential: "
                       + ("the OTP in " + cfg.otp_file + " was spent on an earlier certificate; write a new one "
                          "there" if cfg.otp_file else "configure user and otp_file, or bootstrap_cert"))

    def _forget_bootstrapped_trust(self) -> None:
        """The server's TLS certificate no longer chains to the CA certificates a bootstrap accepted
        (a CA rollover): bootstrap again from the fingerprint on the next attempt."""
        saved = self.states.trust_file(self.cfg.name)
        if self.cfg.trust is None and self.cfg.fingerprint and os.path.exists(saved):
            os.unlink(saved)
            self.log("the server is not trusted with the CA certificates bootstrapped earlier: the next attempt "
                     "bootstraps again, from the fingerprint")

    def _current(self) -> tuple[x509.Certificate, PrivateKey] | None:
        """The certificate and key in place, when both exist and belong together."""
        cfg = self.cfg
        if not (os.path.exists(cfg.cert) and os.path.exists(cfg.key)):
            return None
        try:
            cert = read_certificate(cfg.cert)
            key = load_private_key(read_bytes(cfg.key, "key"))
        except EstError as exc:
            self.log(f"ignoring the files in place: {exc.reason}")
            return None
        if not same_public_key(cert.public_key(), key.public_key()):
            self.log(f"ignoring the files in place: {cfg.key} is not the key of {cfg.cert}")
            return None
        return cert, key

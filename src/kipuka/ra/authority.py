"""The registration authority: authorizes a requester, validates the CSR against
the label's policy, and hands the cleared request to issuance or approval.

Everything a request needs (labels, CAs, trust anchors, the OTP keyring) is
held in one `Authority` built from the configuration; a reload builds a new one
and swaps it in, so a request in flight finishes with the state it started on.
Signing and recording live in `ra.issuance`, held requests in `ra.approval`, the
audit of refusals in `ra.trail`; serverkeygen and Full CMC use the same three.
"""

from __future__ import annotations

import datetime as dt
from typing import Awaitable, Callable

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from kipuka import metrics
from kipuka.ca.base import CertificateAuthority, IssueRequest, RemoteIssuer, directly_issued
from kipuka.config import Config
from kipuka.errors import Forbidden, NotFound, Unauthenticated
from kipuka.pem import load_certificates
from kipuka.ra import csr as csrcheck
from kipuka.ra import name_policy, subject_policy
from kipuka.ra.approval import Approvals
from kipuka.ra.change_subject import change_subject_name
from kipuka.ra.fullcmc import FullCmc
from kipuka.ra.issuance import OTP_USED_OTHER_NAMES, Issuance, renewed, sans_text
from kipuka.brski.registrar import Registrar
from kipuka.ra.linking import check_linking
from kipuka.ra.otp import OtpKeyring, otp_scope_allows
from kipuka.ra.requester import Requester
from kipuka.ra.revocation import Revocation
from kipuka.ra.runtime import (CMC_RA, Authorized, Enrolled, Held, LabelRuntime, has_eku, hex_serial,
                               requester_key)
from kipuka.ra.serverkeygen import ServerKeygen
from kipuka.ra.trail import Trail, stored
from kipuka.store import AsyncStore, AuditEvent, CertRecord, OtpRecord
from kipuka.store.records import PendingRecord, utcnow

__all__ = ["Authority", "Authorized", "Enrolled", "Held", "LabelRuntime"]


class Authority:
    def __init__(self, config: Config, cas: dict[str, CertificateAuthority], store: AsyncStore,
                 keyring: OtpKeyring) -> None:
        self.config = config
        self.cas = cas
        self.store = store
        self.keyring = keyring
        self.revocation = Revocation(cas, store, config.revocation)
        self._issuer_cache: dict[bytes, CertificateAuthority | None] = {}
        self.trail = Trail(store)
        self.approvals = Approvals(config, store, self.trail, self.runtime, self._pending_template)
        self.issuance = Issuance(config, store, self.revocation, self.trail, self.approvals)
        self.keygen = ServerKeygen(self)
        self.cmc = FullCmc(self)
        self.brski = Registrar(self, config.brski) if config.brski is not None else None  # RFC 8995
        self.labels = {
            name: LabelRuntime(
                label, cas[label.ca],
                tuple(c for p in label.policy.bootstrap_anchors for c in load_certificates(p)),
                tuple(c for p in label.policy.ra_anchors for c in load_certificates(p)),
                isinstance(cas[label.ca], RemoteIssuer),  # once here: a Protocol isinstance is slow per request
            )
            for name, label in config.labels.items()
        }

    def runtime(self, label: str) -> LabelRuntime:
        try:
            return self.labels[label]
        except KeyError:
            raise NotFound(f"unknown EST label {label!r}") from None

    # --- enrollment -----------------------------------------------------------------

    async def enroll(self, label: str, csr_der: bytes, who: Requester) -> Enrolled | Held:
        if self.brski is not None and who.basic is None and self.brski.is_idevid(who.client_cert):
            return await self.brski.enroll(label, csr_der, who)  # a BRSKI pledge's IDevID (RFC 8995 §5.9)
        rt = self.runtime(label)
        a = await self.authorize(rt, "enroll", csr_der, who)
        if rt.label.policy.require_approval:
            return await self.approvals.hold(rt, a.op, who, a.entity, a.auth, csr_der, a.csr, a.pubkey,
                                             otp_id=a.otp.id if a.otp else None, credential=a.credential)
        if rt.holds_requests:  # a retry of a request the CA holds: where does it stand?
            resumed = await self.approvals.resume(rt, a.op, who, a.entity, requester_key(who, a.entity, a.auth),
                                                  a.pubkey)
            if resumed is not None:
                return resumed
        if a.otp is not None:
            redelivered = await self.check_otp_usable(a, who, redeliver=True)
            if redelivered is not None:
                return redelivered
        return await self.issuance.issue(rt, a.op, who, a.entity, a.auth, a.csr, a.san, otp=a.otp,
                                         pubkey=a.pubkey, credential=a.credential,
                                         replaces=renewed(a.op, a.auth, *(a.credential or (None, None))))

    async def authorize(self, rt: LabelRuntime, op: str, csr_der: bytes, who: Requester, *,
                        proof_of_possession: bool = True) -> Authorized:
        """The checks every enrollment shares (simpleenroll, serverkeygen): the credential, then the CSR.

        OTP: lockout, the OTP itself, the CSR against the label policy and the entity's names.
        mTLS: the certificate's dates, the CSR, and that the certificate may enroll here.
        Whether an OTP still has a use left is checked by `check_otp_usable`. Without
        `proof_of_possession` (serverkeygen, RFC 7030 §4.4.1) the CSR's signature and the
        policy's key rules are not checked; its key must only be one that loads.
        """
        if who.basic is not None:
            return await self._authorize_otp(rt, op, csr_der, who, proof_of_possession)
        if who.client_cert is None:
            await self.trail.reject(rt, op, who, "", Unauthenticated(
                "authentication required: HTTP Basic with an OTP, or a client certificate"))
        cert = who.client_cert
        entity = cert.subject.rfc4514_string()
        await self.check_dates(rt, op, who, entity, cert)
        csr, san = await self._valid_csr(rt, op, who, entity, csr_der, proof_of_possession)
        credential = await self.mtls_credential(rt, op, who, entity, cert, csr.subject, san)
        if credential is not None:
            entity = await self.renewal_entity(credential, entity)
        return Authorized(rt, op, entity, "mtls", csr, san, csrcheck.public_key_sha256(csr), credential=credential)

    async def renewal_entity(self, credential: tuple[str, str], fallback: str) -> str:
        """A renewal keeps the entity of the certificate it renews, so a device's history stays one
        (its OTP entity, not the `CN=...` of its subject); `fallback` if that one is not on record."""
        return await stored(self.store.certificate_entity(*credential)) or fallback

    async def mtls_credential(self, rt: LabelRuntime, op: str, who: Requester, entity: str, cert: x509.Certificate,
                              subject: x509.Name, san: x509.SubjectAlternativeName | None) -> tuple[str, str] | None:
        """May this client certificate enroll for these names here? The credential to keep unrevoked, if any."""
        if self.brski is not None and self.brski.is_idevid(cert):  # only simpleenroll, through self.brski
            await self.trail.reject(rt, op, who, entity, Forbidden(
                f"an IDevID may only use simpleenroll, once its device has a voucher (RFC 8995 §5.9), not {op}"))
        issuer = self.kipuka_issuer(cert)
        if issuer is not None:
            if issuer.id != rt.ca.id and issuer.id not in rt.label.policy.mtls_enroll_cas:
                # a device of another label (or of the unlabeled path) would get this label's EKUs and validity
                await self.trail.reject(rt, op, who, entity, Forbidden(
                    f"client certificate was issued by CA {issuer.id!r}, not by this label's CA {rt.ca.id!r}, "
                    "and this label does not accept its holders (mtls_enroll_cas)"))
            if not csrcheck.same_names(cert, subject_policy.certified_subject(subject, rt.label.policy), san):
                await self.trail.reject(rt, op, who, entity, Forbidden(
                    "a certificate issued by this server may only request its own names again"))
            return (issuer.id, hex_serial(cert.serial_number))
        if self.issued_by_any(cert, rt.bootstrap_anchors) or (
                has_eku(cert, CMC_RA) and self.issued_by_any(cert, rt.ra_anchors)):
            return None
        await self.trail.reject(rt, op, who, entity, Forbidden(
            "client certificate is not authorized to enroll on this label"))
        raise AssertionError("unreachable")

    async def reenroll(self, label: str, csr_der: bytes, who: Requester) -> Enrolled | Held:
        rt = self.runtime(label)
        op = "reenroll"
        cert = who.client_cert
        if cert is None:
            await self.trail.reject(rt, op, who, who.basic.entity if who.basic else "", Unauthenticated(
                "re-enrollment needs the current certificate, presented as the TLS client certificate; "
                "HTTP authentication cannot replace it"))
        entity = cert.subject.rfc4514_string()
        await self.check_dates(rt, op, who, entity, cert)
        if not rt.ca.is_issuer_of(cert):
            await self.trail.reject(rt, op, who, entity, Forbidden(
                "client certificate was not issued by this label's CA"))
        csr, san = await self._valid_csr(rt, op, who, entity, csr_der)
        if not csrcheck.same_names(cert, subject_policy.certified_subject(csr.subject, rt.label.policy), san):
            if not rt.label.policy.allow_subject_change:
                await self.trail.reject(rt, op, who, entity, Forbidden(
                    "CSR subject or subjectAltName differs from the current certificate"))
            change = await self.trail.guard(rt, op, who, entity, lambda: change_subject_name(csr_der))
            if change is None or not change.names_certificate(cert):
                await self.trail.reject(rt, op, who, entity, Forbidden(
                    "a name change needs a ChangeSubjectName attribute naming the current certificate"))
        credential = (rt.ca.id, hex_serial(cert.serial_number))
        entity = await self.renewal_entity(credential, entity)
        if rt.holds_requests:
            resumed = await self.approvals.resume(rt, op, who, entity, requester_key(who, entity, "mtls"),
                                         csrcheck.public_key_sha256(csr))
            if resumed is not None:
                return resumed
        if rt.label.policy.reenroll_requires_approval:
            return await self.approvals.hold(rt, op, who, entity, "mtls", csr_der, csr, csrcheck.public_key_sha256(csr),
                                    credential=credential)
        return await self.issuance.issue(rt, op, who, entity, "mtls", csr, san, credential=credential,
                                         replaces=credential)

    async def enroll_authorized(self, rt: LabelRuntime, who: Requester, entity: str, auth: str, csr_der: bytes, *,
                                names: Callable[[x509.CertificateSigningRequest, x509.SubjectAlternativeName | None],
                                                None],
                                record_with: Callable[[CertRecord, AuditEvent], Awaitable[None]]
                                ) -> Enrolled | Held:
        """simpleenroll for a client certificate another module vouched for (a BRSKI pledge's IDevID).

        The certificate's dates, the CSR against the label policy, `names` (raises
        Forbidden for names this requester may not have), approval if the label
        asks for it; `record_with` records the certificate and its audit event in
        one transaction of the caller's choosing.
        """
        op = "enroll"
        await self.check_dates(rt, op, who, entity, who.client_cert)  # type: ignore[arg-type]
        csr, san = await self._valid_csr(rt, op, who, entity, csr_der)
        await self.trail.guard(rt, op, who, entity, lambda: names(csr, san))
        if rt.label.policy.require_approval:
            return await self.approvals.hold(rt, op, who, entity, auth, csr_der, csr, csrcheck.public_key_sha256(csr))
        return await self.issuance.issue(rt, op, who, entity, auth, csr, san, record_with=record_with)

    # --- OTP ------------------------------------------------------------------------

    async def _authorize_otp(self, rt: LabelRuntime, op: str, csr_der: bytes, who: Requester,
                             proof_of_possession: bool) -> Authorized:
        entity = who.basic.entity  # type: ignore[union-attr]
        otp = await self.authenticate_otp(rt, op, who)
        csr, san = await self._valid_csr(rt, op, who, entity, csr_der, proof_of_possession)
        await self.trail.guard(rt, op, who, entity,
                          lambda: name_policy.check_names_for_entity(csr.subject, san, entity,
                                                                  rt.label.policy.otp_name_rule))
        return Authorized(rt, op, entity, "otp", csr, san, csrcheck.public_key_sha256(csr), otp=otp)

    async def authenticate_otp(self, rt: LabelRuntime, op: str, who: Requester) -> OtpRecord:
        """The HTTP Basic entity:OTP, checked against the store after the lockout (audited 401 if wrong)."""
        basic = who.basic
        assert basic is not None
        entity = basic.entity
        now = utcnow()
        candidates, locked = await stored(self.store.otp_candidates(entity, who.client_addr))
        if locked is not None and locked > now:
            await self.trail.reject(rt, op, who, entity, Unauthenticated(
                f"too many failed attempts; locked until {locked:%Y-%m-%dT%H:%M:%SZ}"))
        otp = self._match_otp(candidates, rt, basic.entity, basic.secret)
        if otp is None:
            await self._otp_failure(rt, op, who, entity, now)
        assert otp is not None
        return otp

    async def check_otp_usable(self, a: Authorized, who: Requester, *, redeliver: bool,
                               subject: x509.Name | None = None) -> Enrolled | None:
        """A spent or expired OTP ends the request (401) before anything is signed.

        With `redeliver`, a retry whose first response was lost gets its certificate
        again instead (same OTP, CSR key and names, within [otp] recovery_window); the same
        key asking for other names is a new request, refused once the OTP is spent.
        `subject` stands for the names of a request that is no PKCS#10 (CRMF).
        """
        otp, now = a.otp, utcnow()
        assert otp is not None
        if otp.uses_left > 0 and otp.expires_at > now:
            return None
        other_names = False
        if redeliver:
            window = dt.timedelta(seconds=self.config.otp.recovery_window)
            certified = subject_policy.certified_subject(subject or a.csr.subject, a.rt.label.policy)
            der, other_names = await stored(self.store.recovered_certificate(
                otp.id, a.pubkey, now - window, certified.rfc4514_string(), sans_text(a.san)))
            if der is not None:
                await self.trail.success(a.rt, a.op + ".redeliver", who, a.entity,
                                         "certificate re-sent for a retried request")
                return Enrolled(x509.load_der_x509_certificate(der), redelivered=True)
        await self.trail.reject(a.rt, a.op, who, a.entity, Unauthenticated(
            OTP_USED_OTHER_NAMES if other_names else "OTP already used" if otp.uses_left <= 0 else "OTP expired"))
        raise AssertionError("unreachable")

    def _match_otp(self, candidates: list[OtpRecord], rt: LabelRuntime, entity: str,
                   secret: str) -> OtpRecord | None:
        found = None
        for otp in candidates:  # every candidate is hashed and compared: no early exit
            if self.keyring.matches(otp.key_id, entity, secret, otp.digest):
                if otp_scope_allows(otp.label, rt.label.name):
                    found = found or otp
        return found

    async def _otp_failure(self, rt: LabelRuntime, op: str, who: Requester, entity: str, now: dt.datetime) -> None:
        reason = "invalid entity id or OTP"
        otp_cfg = self.config.otp
        locked = await stored(self.store.record_auth_failure(
            entity, who.client_addr, now, otp_cfg.max_failures, dt.timedelta(seconds=otp_cfg.lockout),
            self.trail.event(rt, op, "rejected", who, entity, reason, auth="otp")))
        metrics.OTP_FAILURES.inc()
        if locked is not None:
            metrics.OTP_LOCKOUTS.inc()
            reason += f"; too many failed attempts, locked until {locked:%Y-%m-%dT%H:%M:%SZ}"
        exc = Unauthenticated(reason)
        exc.audited = True  # type: ignore[attr-defined]  # record_auth_failure wrote the event
        raise exc

    async def _valid_csr(self, rt: LabelRuntime, op: str, who: Requester, entity: str, der: bytes,
                         proof_of_possession: bool = True
                         ) -> tuple[x509.CertificateSigningRequest, x509.SubjectAlternativeName | None]:
        """Parse, proof of possession, key and name shape: everything that makes a CSR a 400."""
        def check() -> tuple[x509.CertificateSigningRequest, x509.SubjectAlternativeName | None]:
            csr = csrcheck.parse_csr(der)
            if proof_of_possession:
                csrcheck.check_proof_of_possession(csr, rt.label.policy)
            else:
                csrcheck.csr_public_key(csr)
            check_linking(csr, lambda: who.channel_binding, rt.label.policy, exempt=lambda: self._is_ra(rt, who))
            san = csrcheck.requested_san(csr)
            csrcheck.check_names(csr.subject, san, rt.label.policy)
            return csr, san
        return await self.trail.guard(rt, op, who, entity, check)

    async def check_dates(self, rt: LabelRuntime, op: str, who: Requester, entity: str,
                           cert: x509.Certificate) -> None:
        now = utcnow()
        if cert.not_valid_after_utc < now:
            await self.trail.reject(rt, op, who, entity, Unauthenticated("client certificate has expired"))
        if cert.not_valid_before_utc > now:
            await self.trail.reject(rt, op, who, entity, Unauthenticated("client certificate is not yet valid"))

    def _is_ra(self, rt: LabelRuntime, who: Requester) -> bool:
        """An RA client (RFC 7030 §3.7): id-kp-cmcRA, issued by one of the label's RA anchors."""
        cert = who.client_cert
        return cert is not None and has_eku(cert, CMC_RA) and self.issued_by_any(cert, rt.ra_anchors)

    def kipuka_issuer(self, cert: x509.Certificate) -> CertificateAuthority | None:
        """Which of our CAs signed `cert`; cached per certificate (a signature check each time
        costs more than the rest of an mTLS request's authorization)."""
        key = cert.signature
        if key in self._issuer_cache:
            return self._issuer_cache[key]
        found = next((ca for ca in self.cas.values() if ca.is_issuer_of(cert)), None)
        if len(self._issuer_cache) >= 8192:
            self._issuer_cache.clear()
        self._issuer_cache[key] = found
        return found

    @staticmethod
    def issued_by_any(cert: x509.Certificate, anchors: tuple[x509.Certificate, ...]) -> bool:
        return any(directly_issued(cert, anchor) for anchor in anchors)


    # --- held requests and templates ---------------------------------------------------

    async def approve(self, request_id: int, officer: str) -> CertRecord | str:
        return await self.approvals.approve(request_id, officer)

    async def reject(self, request_id: int, reason: str, officer: str) -> None:
        await self.approvals.reject(request_id, reason, officer)

    def template_for(self, rt: LabelRuntime, subject: x509.Name, public_key: CertificatePublicKeyTypes,
                     san: x509.SubjectAlternativeName | None) -> IssueRequest:
        return self.issuance.template_for(rt, subject, public_key, san)

    def _pending_template(self, rt: LabelRuntime, pending: PendingRecord) -> IssueRequest:
        """The request a held record stands for, checked again against the label's current policy."""
        if pending.op == "fullcmc":  # a PKCS#10 or a CRMF CertReqMsg
            return self.cmc.approved_template(rt, pending.csr_der)
        csr = csrcheck.parse_csr(pending.csr_der)
        csrcheck.check_proof_of_possession(csr, rt.label.policy)
        san = csrcheck.requested_san(csr)
        csrcheck.check_names(csr.subject, san, rt.label.policy)
        return self.issuance.template(rt, csr, san, pending.csr_der)

    async def record_rejection(self, label: str, op: str, who: Requester, exc: Exception) -> None:
        """Audit a request the front end refused before it reached the RA (bad body, unknown label)."""
        if getattr(exc, "audited", False):
            return
        rt = self.labels.get(label)
        entity = who.basic.entity if who.basic else (
            who.client_cert.subject.rfc4514_string() if who.client_cert else "")
        await self.trail.rejection(label, rt.ca.id if rt else "", op, who, entity, getattr(exc, "reason", str(exc)))

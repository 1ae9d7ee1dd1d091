"""The BRSKI registrar's policy (RFC 8995 §5.3-§5.6): who the pledge is, whether this
deployment owns it, and the voucher exchange with its MASA. No HTTP here.

A pledge is known by its IDevID, which the TLS handshake accepted because it
chains to a configured manufacturer CA. Ownership is decided per device:

  * an ownership rule (configuration or admin API) names its manufacturer and a
    pattern of its serial number: the device is "owned" and may get a voucher;
  * otherwise, with [brski] unknown_devices = "hold", it is held ("pending", 202
    with Retry-After) until an officer approves or rejects it; with "reject" it
    is refused (403).

An officer's decision sticks to the device; a rule's is looked at again on each
request (a rule removed stops the next voucher). Every outcome is audited.
"""

from __future__ import annotations

import base64
import fnmatch
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography import x509

from kipuka.brski import idevid, signing
from kipuka.brski.masa import MasaBadAnswer, MasaClient
from kipuka.brski.settings import BrskiConfig, Manufacturer, check_files
from kipuka.brski.voucher import Voucher, VoucherError, VoucherRequest, certificate_der
from kipuka.ca.base import directly_issued
from kipuka.errors import BadRequest, Conflict, Forbidden, KipukaError, NotFound, Unauthenticated
from kipuka.keydelivery.signed import SignerKey
from kipuka.pem import load_certificates, load_private_key
from kipuka.ra.requester import Requester
from kipuka.ra.trail import stored
from kipuka.store import AuditEvent
from kipuka.store.brski import OwnershipRule, PledgeRecord
from kipuka.store.records import utcnow

if TYPE_CHECKING:
    from kipuka.ra.authority import Authority, Enrolled, Held

log = logging.getLogger("kipuka.brski")

OWNED, PENDING, APPROVED, REJECTED = "owned", "pending", "approved", "rejected"
MAY_HAVE_VOUCHER = (OWNED, APPROVED)


@dataclass(frozen=True)
class VoucherHeld:
    """The device waits for an officer: answer 202 and come back after `retry_after` s."""

    pledge_id: int
    retry_after: int


@dataclass(frozen=True)
class Pledge:
    """A caller whose client certificate is an IDevID of a configured manufacturer."""

    cert: x509.Certificate
    manufacturer: Manufacturer
    serial_number: str

    @property
    def entity(self) -> str:
        """How the audit trail and certificate records name the device."""
        return f"idevid:{self.manufacturer.name}/{self.serial_number}"


class Registrar:
    """Built with the Authority (and rebuilt on reload) from [brski]."""

    def __init__(self, authority: "Authority", settings: BrskiConfig) -> None:
        self.authority = authority
        self.store = authority.store
        self.settings = settings
        check_files(settings)
        self.manufacturers = {name: (m, tuple(c for p in m.ca for c in load_certificates(p)))
                              for name, m in settings.manufacturers.items()}
        self.voucher_cas = {name: tuple(load_certificates(m.voucher_ca)) if m.voucher_ca else ()
                            for name, m in settings.manufacturers.items()}
        certs = load_certificates(settings.registrar_cert)
        self.registrar_cert = certs[0]
        self.registrar_chain = tuple(certs[1:]) + (
            tuple(load_certificates(settings.registrar_chain)) if settings.registrar_chain else ())
        key = load_private_key(settings.registrar_key)
        self.registrar_key: SignerKey = key  # type: ignore[assignment]
        # The proximity-registrar-cert a pledge must name: the EST listener's own TLS certificate.
        self.tls_cert_der = certificate_der(load_certificates(authority.config.tls.cert)[0])
        self.masa = MasaClient(settings.registrar_cert, settings.registrar_key, settings.masa_timeout,
                               settings.retry_after)
        self._maker_cache: dict[bytes, Manufacturer | None] = {}
        from kipuka.brski.enrollment import PledgeEnrollment  # it calls back into this registrar
        self.enrollment = PledgeEnrollment(self)

    # --- who is calling ------------------------------------------------------------------

    def manufacturer_of(self, cert: x509.Certificate | None) -> Manufacturer | None:
        """The manufacturer whose CA issued `cert`, if any (cached per certificate)."""
        if cert is None:
            return None
        key = cert.signature
        if key not in self._maker_cache:
            if len(self._maker_cache) >= 8192:
                self._maker_cache.clear()
            self._maker_cache[key] = next((m for m, cas in self.manufacturers.values()
                                           if any(directly_issued(cert, ca) for ca in cas)), None)
        return self._maker_cache[key]

    def is_idevid(self, cert: x509.Certificate | None) -> bool:
        return self.manufacturer_of(cert) is not None

    async def pledge(self, who: Requester, event: str) -> Pledge:
        """The calling pledge, or an audited refusal: no IDevID, an unknown manufacturer, no serial number."""
        cert = who.client_cert
        if cert is None:
            await self.refuse(event, who, "", Unauthenticated(
                "BRSKI needs the pledge's IDevID as TLS client certificate (RFC 8995 §5.1)"))
        maker = self.manufacturer_of(cert)
        if maker is None:
            await self.refuse(event, who, cert.subject.rfc4514_string()[:255], Forbidden(
                "the client certificate is not an IDevID of a manufacturer this registrar trusts"))
        now = utcnow()
        if cert.not_valid_after_utc < now or cert.not_valid_before_utc > now:
            await self.refuse(event, who, cert.subject.rfc4514_string()[:255], Unauthenticated(
                "the IDevID is outside its validity period"))
        serial = idevid.serial_number(cert)
        if serial is None or len(serial) > 128:
            await self.refuse(event, who, cert.subject.rfc4514_string()[:255], Forbidden(
                "the IDevID has no (or more than one) serialNumber subject attribute (RFC 8995 §2.3.1)"))
        return Pledge(cert, maker, serial)  # type: ignore[arg-type]

    # --- the voucher (RFC 8995 §5.2-§5.6) ---------------------------------------------------

    async def request_voucher(self, body: bytes, who: Requester) -> bytes | VoucherHeld:
        """Check the pledge's voucher request, decide ownership, and get the MASA's voucher."""
        event = "brski.voucher"
        p = await self.pledge(who, event)
        request = await self._guard(event, who, p.entity, lambda: self._pledge_request(body, p))
        url = await self._guard(event, who, p.entity, lambda: self._masa_url(p))
        pledge = await self._ownership(p, who, url)
        if isinstance(pledge, VoucherHeld):
            return pledge
        registrar_request = self._registrar_request(p, request, body)
        try:
            voucher = await self.masa.request_voucher(url, registrar_request, p.manufacturer.masa_ca)
            self._check_voucher(p, request, voucher)  # a MASA failure: audited below as an error
        except KipukaError as exc:
            if not getattr(exc, "audited", False):
                await self._audit(event, "error", who, p.entity, exc.reason, label=pledge.label)
                exc.audited = True  # type: ignore[attr-defined]
            raise
        nonce = base64.b64encode(request.nonce).decode() if request.nonce else None
        await stored(self.store.brski_voucher_delivered(
            pledge.id, nonce, voucher, utcnow(), self.audit_event(event, "success", who, p.entity,
                                                              f"voucher from the MASA at {url} handed to the pledge",
                                                              label=pledge.label)))
        return voucher

    def _pledge_request(self, body: bytes, p: Pledge) -> VoucherRequest:
        """RFC 8995 §5.2/§5.3: signed by the IDevID of this TLS session, asking for proximity to us."""
        signed = signing.verify(body, signer=p.cert, what="voucher request")
        request = VoucherRequest.from_json(signed.json)
        if request.assertion != "proximity":
            raise VoucherError('the voucher request must assert "proximity" (RFC 8995 §5.2)')
        if request.nonce is None:
            raise VoucherError("the voucher request has no nonce; this registrar asks MASAs for nonced vouchers only")
        if request.serial_number is not None and request.serial_number != p.serial_number:
            raise VoucherError("the voucher request's serial-number differs from the IDevID's serialNumber")
        if request.proximity_registrar_cert is None:
            raise VoucherError("the voucher request has no proximity-registrar-cert (RFC 8995 §5.2)")
        if request.proximity_registrar_cert != self.tls_cert_der:
            raise VoucherError("proximity-registrar-cert is not this registrar's TLS certificate")
        return request

    def _masa_url(self, p: Pledge) -> str:
        try:
            raw = p.manufacturer.masa_url or idevid.masa_url(p.cert)
            if not raw:
                raise Forbidden(f"the IDevID names no MASA (RFC 8995 §2.3.2) and manufacturer "
                                f"{p.manufacturer.name!r} has no masa_url")
            return idevid.requestvoucher_url(raw)
        except idevid.IdevidError as exc:
            raise Forbidden(str(exc)) from None

    def _registrar_request(self, p: Pledge, request: VoucherRequest, pledge_cms: bytes) -> bytes:
        """RFC 8995 §5.5: the pledge's request inside, the nonce carried over, signed by the registrar."""
        vr = VoucherRequest(created_on=utcnow(), nonce=request.nonce, serial_number=p.serial_number,
                            assertion="proximity", idevid_issuer=idevid.idevid_issuer(p.cert),
                            prior_signed_voucher_request=pledge_cms)
        return signing.sign(vr.to_json(), self.registrar_key, self.registrar_cert, self.registrar_chain)

    def _check_voucher(self, p: Pledge, request: VoucherRequest, cms: bytes) -> None:
        """Not a voucher for this request: 502, so the pledge is not handed something it must reject.

        The signature is checked when the voucher carries its signer (and against
        `voucher_ca` when configured); the pledge checks it in any case.
        """
        trusted = self.voucher_cas[p.manufacturer.name]
        try:
            if trusted:
                signed = next((s for s in (_try_verify(cms, ca) for ca in trusted) if s is not None), None) \
                    or signing.verify(cms, what="voucher")
                if not any(signed.signer == ca or directly_issued(signed.signer, ca) for ca in trusted):
                    raise MasaBadAnswer("the voucher is not signed by the manufacturer's voucher_ca")
                content = signed.json
            else:
                try:
                    content = signing.verify(cms, what="voucher").json
                except VoucherError as exc:
                    if "not available" not in exc.reason:
                        raise
                    content = signing.unverified_json(cms)
            voucher = Voucher.from_json(content)
        except VoucherError as exc:
            raise MasaBadAnswer(f"the MASA's answer is not a valid voucher: {exc.reason}") from None
        if voucher.serial_number != p.serial_number:
            raise MasaBadAnswer("the MASA's voucher names another serial-number")
        if voucher.nonce != request.nonce:
            raise MasaBadAnswer("the MASA's voucher does not carry the pledge's nonce")

    # --- ownership ----------------------------------------------------------------------

    async def _ownership(self, p: Pledge, who: Requester, url: str) -> PledgeRecord | VoucherHeld:
        event = "brski.voucher"
        rule = self.owning_rule(p.manufacturer, p.serial_number,
                                await stored(self.store.brski_rules()))
        default_label = p.manufacturer.label or self.settings.label
        record = await stored(self.store.brski_pledge(idevid.fingerprint(p.cert)))
        if record is None:
            if rule is None and (p.manufacturer.unknown_devices or self.settings.unknown_devices) == "reject":
                await self.refuse(event, who, p.entity, Forbidden(
                    "this device is not owned by this domain (no ownership rule names its serial number)"))
            status = OWNED if rule else PENDING
            why = f"owned by {rule[0]}" if rule else "held for an officer: no ownership rule names it"
            values = dict(idevid_sha256=idevid.fingerprint(p.cert), manufacturer=p.manufacturer.name,
                          serial_number=p.serial_number, idevid_subject=p.cert.subject.rfc4514_string(),
                          idevid_der=certificate_der(p.cert), status=status,
                          label=rule[1] if rule else default_label, reason=why,
                          decided_by=f"policy:{rule[0]}" if rule else None, created_at=utcnow(),
                          decided_at=utcnow() if rule else None, client_addr=who.client_addr[:64], masa_url=url)
            record = await stored(self.store.brski_register(
                values, self.audit_event("brski.pledge", "success", who, p.entity, why, label=values["label"])))
        if record.status == REJECTED:
            await self.refuse(event, who, p.entity, Forbidden(
                f"this device was rejected by {record.decided_by or 'an officer'}: {record.reason}"))
        if record.status in (PENDING, OWNED) and rule is not None and (record.status, record.label) != (OWNED, rule[1]):
            values = dict(status=OWNED, label=rule[1], reason=f"owned by {rule[0]}", decided_by=f"policy:{rule[0]}",
                          decided_at=utcnow())
            await stored(self.store.brski_decide(record.id, (record.status,), values, self.audit_event(
                "brski.pledge", "success", who, p.entity, f"owned by {rule[0]}", label=rule[1])))
            record = await stored(self.store.brski_pledge_by_id(record.id))
        elif record.status == OWNED and rule is None:
            await self.refuse(event, who, p.entity, Forbidden(
                "this device is no longer owned by this domain (its ownership rule was removed)"))
        if record.status == PENDING:
            await self._audit(event, "success", who, p.entity, f"pledge {record.id} held for an officer's approval",
                              label=record.label)
            return VoucherHeld(record.id, self.settings.retry_after)
        return record

    def owning_rule(self, maker: Manufacturer, serial: str,
                    stored: list[OwnershipRule]) -> tuple[str, str] | None:
        """(which rule, label) of the first rule that owns this serial number; configuration first."""
        label = maker.label or self.settings.label
        for pattern in maker.owned_serials:
            if fnmatch.fnmatchcase(serial, pattern):
                return f"config {maker.name}:{pattern}", label
        for rule in stored:
            if rule.manufacturer == maker.name and fnmatch.fnmatchcase(serial, rule.pattern):
                return f"rule {rule.id} ({rule.pattern})", rule.label
        return None

    # --- an officer's decisions (admin API) ---------------------------------------------

    async def approve(self, pledge_id: int, officer: str, label: str | None = None) -> PledgeRecord:
        record = await self._pledge_record(pledge_id)
        label = record.label if label is None else label
        if label not in self.authority.labels:
            raise BadRequest(f"no EST label {label!r}")
        values = dict(status=APPROVED, label=label, reason="approved", decided_by=officer, decided_at=utcnow())
        audit = AuditEvent(event="brski.approve", outcome="success", reason=f"pledge {pledge_id} may get a voucher",
                           label=label, entity=f"idevid:{record.manufacturer}/{record.serial_number}", auth=officer)
        if not await stored(self.store.brski_decide(pledge_id, (PENDING,), values, audit)):
            raise Conflict(f"pledge {pledge_id} is {record.status}, not pending")
        return await self._pledge_record(pledge_id)

    async def reject(self, pledge_id: int, officer: str, reason: str) -> PledgeRecord:
        record = await self._pledge_record(pledge_id)
        reason = reason.strip()[:500] or "no reason given"
        values = dict(status=REJECTED, reason=reason, decided_by=officer, decided_at=utcnow())
        audit = AuditEvent(event="brski.reject", outcome="success", reason=f"pledge {pledge_id}: {reason}",
                           label=record.label, entity=f"idevid:{record.manufacturer}/{record.serial_number}",
                           auth=officer)
        if not await stored(self.store.brski_decide(pledge_id, (PENDING, APPROVED, OWNED), values,
                                                                audit)):
            raise Conflict(f"pledge {pledge_id} is already rejected")
        return await self._pledge_record(pledge_id)

    async def add_rule(self, manufacturer: str, pattern: str, label: str | None, officer: str) -> int:
        """An ownership rule from the admin API: this manufacturer's serial numbers matching `pattern` are ours."""
        maker = self.settings.manufacturers.get(manufacturer)
        if maker is None:
            raise BadRequest(f"no manufacturer {manufacturer!r} in [brski.manufacturers]")
        if not pattern or len(pattern) > 128 or not pattern.isprintable():
            raise BadRequest("pattern must be 1 to 128 printable characters (fnmatch: * ? [...])")
        label = (maker.label or self.settings.label) if label is None else label
        if label not in self.authority.labels:
            raise BadRequest(f"no EST label {label!r}")
        audit = AuditEvent(event="brski.rule.add", outcome="success", label=label, auth=officer,
                           reason=f"{manufacturer} serial numbers matching {pattern!r} are owned")
        rule_id = await stored(self.store.add_brski_rule(dict(manufacturer=manufacturer, pattern=pattern, label=label,
                                                          created_by=officer, created_at=utcnow()), audit))
        if rule_id is None:
            raise Conflict(f"manufacturer {manufacturer!r} already has a rule for {pattern!r}")
        return rule_id

    async def delete_rule(self, rule_id: int, officer: str) -> None:
        audit = AuditEvent(event="brski.rule.delete", outcome="success", auth=officer, reason=f"rule {rule_id}")
        if not await stored(self.store.delete_brski_rule(rule_id, audit)):
            raise NotFound(f"no ownership rule {rule_id}")

    def configured_rules(self) -> list[tuple[str, str, str]]:
        """(manufacturer, pattern, label) of the rules in the configuration file (not editable here)."""
        return [(m.name, pattern, m.label or self.settings.label)
                for m in self.settings.manufacturers.values() for pattern in m.owned_serials]

    async def _pledge_record(self, pledge_id: int) -> PledgeRecord:
        record = await stored(self.store.brski_pledge_by_id(pledge_id))
        if record is None:
            raise NotFound(f"no pledge {pledge_id}")
        return record

    # --- RFC 8995 §5.9: enrollment with the IDevID ----------------------------------------

    async def enroll(self, label: str, csr_der: bytes, who: Requester) -> "Enrolled | Held":
        return await self.enrollment.enroll(label, csr_der, who)

    # --- audit --------------------------------------------------------------------------

    async def refuse(self, event: str, who: Requester, entity: str, exc: KipukaError, label: str = "") -> None:
        """Audit a refusal, then raise it (marked audited, so the front end does not audit it twice)."""
        await self._audit(event, "rejected", who, entity, exc.reason, label=label)
        exc.audited = True  # type: ignore[attr-defined]
        raise exc

    async def record_rejection(self, event: str, who: Requester, exc: KipukaError) -> None:
        """Audit a refusal the front end made before the registrar saw the request."""
        if getattr(exc, "audited", False):
            return
        maker = self.manufacturer_of(who.client_cert)
        serial = idevid.serial_number(who.client_cert) if who.client_cert is not None else None
        entity = f"idevid:{maker.name}/{serial}" if maker and serial else (
            who.client_cert.subject.rfc4514_string()[:255] if who.client_cert is not None else "")
        await self._audit(event, "rejected", who, entity, exc.reason)

    async def _guard(self, event: str, who: Requester, entity: str, fn):  # type: ignore[no-untyped-def]
        try:
            return fn()
        except (BadRequest, Forbidden) as exc:
            await self.refuse(event, who, entity, exc)

    async def _audit(self, event: str, outcome: str, who: Requester, entity: str, reason: str,
                     label: str = "") -> None:
        try:
            await self.store.add_audit(self.audit_event(event, outcome, who, entity, reason, label=label))
        except Exception:  # the outcome stands; the store error is reported by the request that needs it
            log.exception("could not audit %s", event)

    @staticmethod
    def audit_event(event: str, outcome: str, who: Requester, entity: str, reason: str, label: str = "") -> AuditEvent:
        return AuditEvent(event=event, outcome=outcome, reason=reason[:1000], label=label, entity=entity,
                          client_addr=who.client_addr, auth="idevid" if who.client_cert is not None else "none")


def _try_verify(cms: bytes, signer: x509.Certificate) -> signing.SignedVoucher | None:
    try:
        return signing.verify(cms, signer=signer, what="voucher")
    except VoucherError:
        return None


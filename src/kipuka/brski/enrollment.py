"""RFC 8995 §5.9: an owned pledge enrolls over EST with its IDevID as client certificate.

This is the only door an IDevID has into the EST endpoints (the RA refuses it
everywhere else, Authority.mtls_credential). It opens when:

  * the device is owned (a rule) or approved (an officer), not rejected;
  * the registrar handed it a voucher less than [brski] enroll_window ago;
  * the request names the device's label, or none: a stock pledge knows no EST
    labels, so the unlabeled path is served on the label its ownership names;
  * the CSR's names fit the device's serial number ([brski] name_rule, the same
    rules as an OTP's entity id) and the label's policy.

The LDevID is recorded with its link to the pledge in one transaction.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from cryptography import x509

from kipuka.brski import idevid
from kipuka.errors import Forbidden
from kipuka.ra import name_policy
from kipuka.ra.requester import Requester
from kipuka.ra.trail import stored
from kipuka.store import AuditEvent, CertRecord
from kipuka.store.records import utcnow

if TYPE_CHECKING:
    from kipuka.brski.registrar import Registrar
    from kipuka.ra.authority import Enrolled, Held

EVENT = "enroll"


class PledgeEnrollment:
    def __init__(self, registrar: "Registrar") -> None:
        self.registrar = registrar

    async def enroll(self, label: str, csr_der: bytes, who: Requester) -> "Enrolled | Held":
        from kipuka.brski.registrar import MAY_HAVE_VOUCHER

        reg = self.registrar
        p = await reg.pledge(who, EVENT)
        pledge = await stored(reg.store.brski_pledge(idevid.fingerprint(p.cert)))
        if pledge is None or pledge.voucher_at is None:
            await reg.refuse(EVENT, who, p.entity, Forbidden(
                "this IDevID's device has no voucher from this registrar: request one first "
                "(/.well-known/brski/requestvoucher)"), label=label)
        assert pledge is not None and pledge.voucher_at is not None
        if pledge.status not in MAY_HAVE_VOUCHER:
            await reg.refuse(EVENT, who, p.entity, Forbidden(f"this device is {pledge.status}, not owned"),
                             label=label)
        window = dt.timedelta(seconds=reg.settings.enroll_window)
        if pledge.voucher_at + window < utcnow():
            await reg.refuse(EVENT, who, p.entity, Forbidden(
                "this device's voucher is older than [brski] enroll_window: request a new one"), label=label)
        if label not in ("", pledge.label):
            await reg.refuse(EVENT, who, p.entity, Forbidden(
                f"an IDevID enrolls only on the label its owner chose ({pledge.label or 'the unlabeled path'})"),
                label=label)
        rule, serial = reg.settings.name_rule, pledge.serial_number

        def names(csr: x509.CertificateSigningRequest, san: x509.SubjectAlternativeName | None) -> None:
            name_policy.check_names_for_entity(csr.subject, san, serial, rule)

        async def record(cert: CertRecord, audit: AuditEvent) -> None:
            await reg.store.record_ldevid(cert, audit, pledge.id)

        authority = reg.authority
        result = await authority.enroll_authorized(authority.runtime(pledge.label), who, p.entity, "idevid", csr_der,
                                                   names=names, record_with=record)
        if getattr(result, "redelivered", False):  # held for approval on the label, then approved
            cert = result.certificate  # type: ignore[union-attr]
            ca = authority.runtime(pledge.label).ca
            await stored(reg.store.link_ldevid(ca.id, format(cert.serial_number, "x"), pledge.id))
        return result

"""The console's dashboard: what needs an officer's attention across the fleet, in one call.

Certificates expiring within 7, 30 and 90 days per label, each CA certificate and its
expiry, each CRL's next update, whether each OCSP responder answers, and issuance and
failure counts over the last hour and day. Plain functions over the Authority; the
console links every figure to the filtered list behind it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509 import ocsp

from kipuka.admin.shapes import iso
from kipuka.ca.base import signs_revocation
from kipuka.ra.authority import Authority
from kipuka.ra.revocation import OcspQuery, issuer_hashes
from kipuka.store.records import utcnow

WINDOWS = (7, 30, 90)


async def dashboard(authority: Authority) -> dict[str, Any]:
    now = utcnow()
    store = authority.store
    expiring = await store.expiring_by_label(now, WINDOWS)
    cas = []
    for ca_id, ca in authority.cas.items():
        chain = ca.ca_certificates()
        publishes = signs_revocation(ca)
        crl = await store.latest_crl(ca_id) if publishes else None
        cas.append({
            "id": ca_id, "health": await ca.health(),
            "certificates": [{"subject": c.subject.rfc4514_string(), "not_after": iso(c.not_valid_after_utc),
                              "days_left": (c.not_valid_after_utc - now).days} for c in chain],
            "crl": None if crl is None else {"number": crl.number, "next_update": iso(crl.next_update),
                                             "fresh": crl.next_update > now},
            "ocsp": await _ocsp_health(authority, ca_id, chain[0]) if publishes else None,
        })
    hour = now - dt.timedelta(hours=1)
    day = now - dt.timedelta(hours=24)
    issued_day = sum((await store.issued_per_hour(day, now + dt.timedelta(hours=1))).values())
    issued_hour = sum((await store.issued_per_hour(hour, now + dt.timedelta(hours=1))).values())
    outcomes_day = await store.outcome_counts(day)
    outcomes_hour = await store.outcome_counts(hour)
    return {
        "at": iso(now),
        "expiring": [{"label": label, **{f"days_{d}": counts[d] for d in WINDOWS}}
                     for label, counts in sorted(expiring.items())],
        "cas": cas,
        "rates": {"issued_hour": issued_hour, "issued_day": issued_day,
                  "failed_hour": outcomes_hour.get("rejected", 0) + outcomes_hour.get("error", 0),
                  "failed_day": outcomes_day.get("rejected", 0) + outcomes_day.get("error", 0)},
        "pending": await store.count_pending(),
    }


async def _ocsp_health(authority: Authority, ca_id: str, issuer: x509.Certificate) -> dict[str, Any]:
    """Ask the responder about serial 1 of this CA, as a relying party would: a signed answer is health."""
    names, key = issuer_hashes(issuer, hashes.SHA1())
    try:
        der = await authority.revocation.ocsp(ca_id, OcspQuery(names, key, hashes.SHA1(), 1, None))
        answer = ocsp.load_der_ocsp_response(der)
        ok = answer.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
        return {"status": "ok" if ok else "down", "detail": "" if ok else answer.response_status.name}
    except Exception as exc:  # any failure is the finding
        return {"status": "down", "detail": str(exc)[:200]}

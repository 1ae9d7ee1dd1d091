"""Status telemetry from the pledge (RFC 8995 §5.7 voucher_status, §5.9.4 enrollstatus).

A small JSON document: {"version": 1, "status": true|false, "reason": "...",
"reason-context": {...}}. Each report is kept on the pledge's record (the last
of each kind) and written to the audit chain; outcome "success" for status
true, "error" for a failure the pledge reports.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from kipuka.brski import idevid
from kipuka.errors import BadRequest, Forbidden
from kipuka.ra.requester import Requester
from kipuka.ra.trail import stored
from kipuka.store.brski import PledgeRecord

if TYPE_CHECKING:
    from kipuka.brski.registrar import Registrar

MAX_REPORT = 16 * 1024
EVENTS = {"voucher_status": "brski.voucher_status", "enroll_status": "brski.enrollstatus"}


def parse_report(body: bytes) -> dict[str, Any]:
    """The report, checked against the CDDL of RFC 8995 §5.7 (version 1 also as the string "1")."""
    if len(body) > MAX_REPORT:
        raise BadRequest(f"the status report is larger than {MAX_REPORT} bytes")
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BadRequest("the status report is not JSON") from None
    if not isinstance(doc, dict):
        raise BadRequest("the status report must be a JSON object")
    if doc.get("version") not in (1, "1") or isinstance(doc.get("version"), bool):
        raise BadRequest('the status report needs "version": 1 (RFC 8995 §5.7)')
    if not isinstance(doc.get("status"), bool):
        raise BadRequest('the status report needs "status": true or false')
    if "reason" in doc and not isinstance(doc["reason"], str):
        raise BadRequest('"reason" must be a string')
    if "reason-context" in doc and not isinstance(doc["reason-context"], dict):
        raise BadRequest('"reason-context" must be an object')
    return doc


async def record_report(registrar: "Registrar", kind: str, body: bytes, who: Requester) -> None:
    event = EVENTS[kind]
    pledge = await _reporting_pledge(registrar, who)
    if pledge is None:
        await registrar.refuse(event, who, "", Forbidden(
            "the client certificate is neither the IDevID of a pledge that asked for a voucher nor its LDevID"))
    assert pledge is not None
    entity = f"idevid:{pledge.manufacturer}/{pledge.serial_number}"
    try:
        doc = parse_report(body)
    except BadRequest as exc:
        await registrar.refuse(event, who, entity, exc, label=pledge.label)
    reason = " ".join(str(doc.get("reason", "")).split())[:300]
    outcome = "success" if doc["status"] else "error"
    text = f"the pledge reports {'success' if doc['status'] else 'failure'}" + (f": {reason}" if reason else "")
    document = json.dumps(doc, separators=(",", ":"))[:MAX_REPORT]
    await stored(registrar.store.brski_telemetry(pledge.id, kind, document, registrar.audit_event(
        event, outcome, who, entity, text, label=pledge.label)))


async def _reporting_pledge(registrar: "Registrar", who: Requester) -> PledgeRecord | None:
    """The pledge by its IDevID, or by the LDevID kipuka issued it (a pledge may report over either)."""
    cert = who.client_cert
    if cert is None:
        return None
    if registrar.is_idevid(cert):
        return await stored(registrar.store.brski_pledge(idevid.fingerprint(cert)))
    fingerprint = idevid.fingerprint(cert)
    for record in await stored(registrar.store.certificate(format(cert.serial_number, "x"))):
        if record.fingerprint_sha256 == fingerprint:
            return await stored(registrar.store.ldevid_pledge(record.ca_id, record.serial))
    return None

"""The admin API's JSON, shared by its handler modules (api, fleet, brski, dashboard, overview):
the error every handler raises, reading a request's JSON body and path numbers, and the shapes
of OTPs, requests, certificates and audit events that openapi.py documents."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from kipuka.admin.certinfo import csr_key
from kipuka.ra.otp import otp_status, scope_json
from kipuka.store import CertRecord, PendingRecord
from kipuka.store.records import AuditEvent, OtpRecord, utcnow
from kipuka.streams import read_at_most

MAX_JSON = 1 << 20


class ApiError(Exception):
    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error, self.message = status, error, message


async def json_body(request: web.Request, optional: bool = False) -> Any:
    raw = await read_at_most(request.content, MAX_JSON)
    if len(raw) > MAX_JSON:
        raise ApiError(413, "too_large", "request body is too large")
    if not raw.strip():
        if optional:
            return {}
        raise ApiError(400, "bad_request", "a JSON body is required")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "bad_request", "request body is not valid JSON") from None


def integral(value: Any) -> Any:
    """JSON Schema counts 23.0 as an integer; so does the API."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def path_int(request: web.Request, name: str) -> int:
    raw = request.match_info[name]
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise ApiError(400, "bad_request", f"{name} must be a positive integer")
    return int(raw)


# --- JSON shapes (documented in openapi.py) ------------------------------------------------

def iso(value: dt.datetime | None) -> str | None:
    return value.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z") if value else None


def page_response(items: list[dict[str, Any]], next_id: int | None) -> web.Response:
    return web.json_response({"items": items, "next_cursor": str(next_id) if next_id is not None else None})


def otp_json(o: OtpRecord) -> dict[str, Any]:
    return {"id": o.id, "entity": o.entity, "label": scope_json(o.label), "uses_total": o.uses_total, "uses_left": o.uses_left,
            "created_at": iso(o.created_at), "expires_at": iso(o.expires_at), "status": otp_status(o, utcnow())}


def request_json(r: PendingRecord | None) -> dict[str, Any]:
    assert r is not None
    return {"id": r.id, "op": r.op, "label": r.label, "ca": r.ca_id, "entity": r.entity, "auth": r.auth,
            "client_addr": r.client_addr, "subject": r.subject, "sans": r.sans, "status": r.status,
            "reason": r.reason, "created_at": iso(r.created_at), "expires_at": iso(r.expires_at),
            "decided_at": iso(r.decided_at), "decided_by": r.decided_by, "serial": r.serial, "ca_ref": r.ca_ref,
            "requester": r.requester, "key": csr_key(r.csr_der)}


def cert_json(r: CertRecord, pem: bool = False) -> dict[str, Any]:
    now = utcnow()
    status = "revoked" if r.revoked_at else ("expired" if r.not_after <= now else "valid")
    out = {"serial": r.serial, "ca": r.ca_id, "label": r.label, "subject": r.subject, "sans": r.sans,
           "entity": r.entity, "auth": r.auth, "not_before": iso(r.not_before), "not_after": iso(r.not_after),
           "issued_at": iso(r.issued_at), "status": status, "revoked_at": iso(r.revoked_at),
           "revocation_reason": r.revocation_reason, "sha256": r.fingerprint_sha256,
           "replaces_serial": r.replaces_serial}
    if pem:
        out["pem"] = x509.load_der_x509_certificate(r.der).public_bytes(serialization.Encoding.PEM).decode()
    return out


def audit_json(e: AuditEvent) -> dict[str, Any]:
    return {"id": e.id, "at": iso(e.at), "event": e.event, "outcome": e.outcome, "reason": e.reason,
            "label": e.label, "entity": e.entity, "client_addr": e.client_addr, "auth": e.auth, "ca": e.ca_id,
            "serial": e.serial, "chain_seq": e.chain_seq, "hash": e.hash}

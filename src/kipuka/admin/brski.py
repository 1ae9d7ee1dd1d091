"""The admin API's BRSKI part (RFC 8995 registrar): pledges held for an officer, ownership
rules, and the IDevID behind an LDevID. Every change goes through kipuka.brski.registrar,
which audits it. Mounted by AdminApi; documented in openapi.py."""

from __future__ import annotations

import base64
from typing import Any, Callable

from aiohttp import web

from kipuka.admin.api import Query
from kipuka.admin.shapes import ApiError, iso, json_body, page_response, path_int
from kipuka.brski.registrar import Registrar
from kipuka.ra.authority import Authority
from kipuka.store import CertRecord
from kipuka.store.brski import OwnershipRule, PledgeRecord

STATUSES = ("owned", "pending", "approved", "rejected", "all")


class BrskiAdmin:
    def __init__(self, authority: Callable[[], Authority]) -> None:
        self._authority = authority

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/admin/brski/pledges", self.list_pledges),
            web.get("/admin/brski/pledges/{id}", self.get_pledge),
            web.post("/admin/brski/pledges/{id}/approve", self.approve),
            web.post("/admin/brski/pledges/{id}/reject", self.reject),
            web.get("/admin/brski/ownership", self.list_rules),
            web.post("/admin/brski/ownership", self.add_rule),
            web.delete("/admin/brski/ownership/{id}", self.delete_rule),
        ]

    def _registrar(self) -> Registrar:
        registrar = self._authority().brski
        if registrar is None:
            raise ApiError(404, "not_found", "BRSKI is not enabled on this server ([brski] in the configuration)")
        return registrar

    async def list_pledges(self, request: web.Request) -> web.Response:
        registrar = self._registrar()
        q = Query(request, {"status", "cursor", "limit"})
        status = q.choice("status", STATUSES, "all")
        limit, cursor = q.limit(), q.cursor()
        rows = [] if q.impossible else await registrar.store.brski_pledges(
            None if status == "all" else status, after_id=cursor, limit=limit)
        return page_response([pledge_json(r) for r in rows], rows[-1].id if len(rows) == limit else None)

    async def get_pledge(self, request: web.Request) -> web.Response:
        registrar = self._registrar()
        record = await registrar.store.brski_pledge_by_id(path_int(request, "id"))
        if record is None:
            raise ApiError(404, "not_found", f"no pledge {request.match_info['id']}")
        body = pledge_json(record)
        body["ldevids"] = [{"ca": ca, "serial": serial} for ca, serial in
                           await registrar.store.pledge_ldevids(record.id)]
        body["voucher"] = base64.b64encode(record.voucher).decode() if record.voucher else None
        return web.json_response(body)

    async def approve(self, request: web.Request) -> web.Response:
        registrar = self._registrar()
        pledge_id = path_int(request, "id")
        body = await json_body(request, optional=True)
        label = body.get("label") if isinstance(body, dict) else None
        if not isinstance(body, dict) or set(body) - {"label"} or (label is not None and not isinstance(label, str)):
            raise ApiError(400, "bad_request", 'the body must be empty or {"label": "<EST label>"}')
        return web.json_response(pledge_json(await registrar.approve(pledge_id, request["admin"], label)))

    async def reject(self, request: web.Request) -> web.Response:
        registrar = self._registrar()
        pledge_id = path_int(request, "id")
        body = await json_body(request)
        reason = body.get("reason") if isinstance(body, dict) else None
        if not isinstance(body, dict) or set(body) - {"reason"} or not isinstance(reason, str) or not reason:
            raise ApiError(400, "bad_request", 'the body must be {"reason": "<non-empty text>"}')
        return web.json_response(pledge_json(await registrar.reject(pledge_id, request["admin"], reason)))

    async def list_rules(self, request: web.Request) -> web.Response:
        registrar = self._registrar()
        configured = [{"id": None, "manufacturer": m, "pattern": p, "label": label, "source": "config",
                       "created_by": None, "created_at": None} for m, p, label in registrar.configured_rules()]
        stored = [rule_json(r) for r in await registrar.store.brski_rules()]
        return web.json_response({"items": configured + stored})

    async def add_rule(self, request: web.Request) -> web.Response:
        registrar = self._registrar()
        body = await json_body(request)
        if not isinstance(body, dict) or set(body) - {"manufacturer", "pattern", "label"} or not all(
                isinstance(body.get(k), str) for k in ("manufacturer", "pattern")) or (
                "label" in body and not isinstance(body["label"], str)):
            raise ApiError(400, "bad_request",
                           'the body must be {"manufacturer": "...", "pattern": "...", "label": "..." (optional)}')
        rule_id = await registrar.add_rule(body["manufacturer"], body["pattern"], body.get("label"),
                                           request["admin"])
        rule = next(r for r in await registrar.store.brski_rules() if r.id == rule_id)
        return web.json_response(rule_json(rule), status=201)

    async def delete_rule(self, request: web.Request) -> web.Response:
        await self._registrar().delete_rule(path_int(request, "id"), request["admin"])
        return web.Response(status=204)


async def idevid_of(authority: Authority, record: CertRecord) -> dict[str, Any] | None:
    """The pledge (IDevID) an LDevID was issued to, for the certificate record; None for other certificates."""
    if record.auth != "idevid":
        return None
    pledge = await authority.store.ldevid_pledge(record.ca_id, record.serial)
    return pledge_json(pledge) if pledge is not None else None


def pledge_json(r: PledgeRecord) -> dict[str, Any]:
    return {"id": r.id, "manufacturer": r.manufacturer, "serial_number": r.serial_number,
            "idevid_subject": r.idevid_subject, "idevid_sha256": r.idevid_sha256, "status": r.status,
            "label": r.label, "reason": r.reason, "decided_by": r.decided_by, "created_at": iso(r.created_at),
            "decided_at": iso(r.decided_at), "client_addr": r.client_addr, "masa_url": r.masa_url,
            "voucher_at": iso(r.voucher_at), "voucher_status": r.voucher_status, "enroll_status": r.enroll_status}


def rule_json(r: OwnershipRule) -> dict[str, Any]:
    return {"id": r.id, "manufacturer": r.manufacturer, "pattern": r.pattern, "label": r.label, "source": "api",
            "created_by": r.created_by, "created_at": iso(r.created_at)}

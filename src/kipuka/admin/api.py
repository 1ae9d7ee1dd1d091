"""The admin API: JSON over HTTPS on its own listener (default 127.0.0.1:9444).

Every error is `{"error": "<code>", "message": "<one line>"}`. Reads go to the
store's query methods; every change goes through the RA, which audits it.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from typing import Any, Awaitable, Callable

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from kipuka import metrics
from kipuka.admin import overview
from kipuka.admin.auth import AdminForbidden, AdminUnauthorized, authenticate
from kipuka.admin.certinfo import decoded, decoded_csr
from kipuka.admin.console.routes import Console
from kipuka.admin.openapi import document
from kipuka.admin.shapes import (MAX_JSON, ApiError, audit_json, cert_json, integral, iso, json_body,
                                 otp_json, page_response, path_int, request_json)
from kipuka.config import Config, parse_duration
from kipuka.errors import BadRequest, Conflict, Forbidden, KipukaError, NotFound, Unavailable
from kipuka.ra.authority import Authority
from kipuka.ra.otp import ENTITY_RE, issue_otp, otp_scope, scope_json
from kipuka.ra.revocation import REASONS
from kipuka.store import CertRecord
from kipuka.store.browse import Page
from kipuka.store.records import AuditEvent, utcnow

log = logging.getLogger("kipuka.admin")
MAX_BULK = 1000
SERIAL_RE = re.compile(r"^(0x)?[0-9A-Fa-f]{1,40}$")
TTL_RE = re.compile(r"^([1-9][0-9]{0,2}[smhd]|[1-9][0-9]{0,7}s?)$")
MAX_FILTER = 200
MAX_TTL = 3650 * 86400
PUBLIC = {"/admin/health/live"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class AdminApi:
    def __init__(self, authority: Callable[[], Authority], config: Callable[[], Config]) -> None:
        self._authority = authority
        self._config = config

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_JSON, middlewares=[self._errors, self._auth])
        from kipuka.admin.fleet import FleetAdmin  # it builds on this module's helpers
        self._fleet = FleetAdmin(self._authority)
        app.add_routes(self._fleet.routes())  # before /admin/certs/{serial}: counts, CSV, bulk acts
        app.add_routes([
            web.get("/admin/openapi.json", self.openapi),
            web.get("/admin/health", self.health),
            web.get("/admin/health/live", self.live),
            web.get("/admin/health/ready", self.ready),
            web.post("/admin/otp", self.create_otp),
            web.get("/admin/otp", self.list_otp),
            web.delete("/admin/otp/{id}", self.revoke_otp),
            web.get("/admin/requests", self.list_requests),
            web.get("/admin/requests/{id}", self.get_request),
            web.post("/admin/requests/{id}/approve", self.approve),
            web.post("/admin/requests/{id}/reject", self.reject),
            web.get("/admin/certs", self.list_certs),
            web.get("/admin/certs/{serial}", self.get_cert),
            web.post("/admin/certs/{serial}/revoke", self.revoke_cert),
            web.get("/admin/ca", self.list_ca),
            web.get("/admin/ca/{id}", self.get_ca),
            web.get("/admin/audit", self.list_audit),
            web.get("/admin/audit/verify", self.verify_audit),
            web.get("/metrics", self.metrics),
            web.get("/admin/stats/issuance", self.issuance_stats),
            web.get("/admin/labels", self.list_labels),
        ])
        from kipuka.admin.brski import BrskiAdmin  # it builds on this module's helpers
        app.add_routes(BrskiAdmin(self._authority).routes())  # BRSKI pledges and ownership (RFC 8995)
        Console(self._authority, self._config).add_to(app)  # the web console, same listener
        return app

    # --- middleware -----------------------------------------------------------------

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            return _json_error(exc.status, exc.error, exc.message)
        except AdminUnauthorized as exc:
            return _json_error(401, "unauthorized", str(exc), {"WWW-Authenticate": 'Bearer realm="kipuka-admin"'})
        except AdminForbidden as exc:  # a browser's request that another site may have forged
            try:
                await self._authority().store.add_audit(AuditEvent(
                    event="admin.csrf", outcome="rejected", reason=f"{request.method} {request.path[:100]}: {exc}",
                    client_addr=request.remote or ""))
            except Exception:  # the refusal stands even when the database is down
                log.exception("could not audit a refused cross-site request")
            return _json_error(403, "forbidden", str(exc))
        except web.HTTPException as exc:  # routing: 404, 405, 413 ...
            if exc.status < 400:
                raise
            code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(exc.status, "bad_request")
            headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
            return _json_error(exc.status, code, exc.reason or "error", headers)
        except KipukaError as exc:
            status, code = _status_of(exc)
            return _json_error(status, code, exc.reason)
        except Exception:
            log.exception("unhandled error in %s %s", request.method, request.path)
            return _json_error(500, "internal_error", "internal server error")

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path not in PUBLIC and not Console.owns(request.path):
            request["admin"] = await authenticate(request, self._authority(), self._config().admin)
        return await handler(request)

    # --- documents and health ---------------------------------------------------------

    async def openapi(self, request: web.Request) -> web.Response:
        return web.json_response(document())

    async def live(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response(await self._health())

    async def ready(self, request: web.Request) -> web.Response:
        report = await self._health()
        return web.json_response(report, status=200 if report["status"] != "unhealthy" else 503)

    async def _health(self) -> dict[str, Any]:
        authority = self._authority()
        components: dict[str, dict[str, str]] = {}
        try:
            await authority.store.schema_version()
            components["database"] = {"status": "ok", "detail": ""}
        except Exception as exc:  # any failure is the finding
            components["database"] = {"status": "down", "detail": str(exc)[:200]}
        for ca_id, ca in authority.cas.items():
            result = await ca.health()
            # A replica pool (kipuka.ca.pool) that still signs with some replicas says "degraded: ...".
            ca_status = "ok" if result == "ok" else "degraded" if result.startswith("degraded") else "down"
            components[f"ca:{ca_id}"] = {"status": ca_status, "detail": "" if result == "ok" else result}
        down = [k for k, v in components.items() if v["status"] == "down"]
        degraded = [k for k, v in components.items() if v["status"] == "degraded"]
        status = "ok" if not down and not degraded else (
            "unhealthy" if "database" in down or len(down) == len(components) else "degraded")
        return {"status": status, "components": components}

    # --- OTPs -------------------------------------------------------------------------

    async def create_otp(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        if isinstance(body, dict) and "items" in body and set(body) != {"items"}:
            raise ApiError(400, "bad_request", "a bulk request has only the field items")
        items = body.get("items") if isinstance(body, dict) and "items" in body else [body]
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_BULK:
            raise ApiError(400, "bad_request", f"items must be a list of 1 to {MAX_BULK} OTP requests")
        specs = [self._otp_spec(item, i) for i, item in enumerate(items)]
        authority, config = self._authority(), self._config()
        known = {name for name in config.labels if name}
        created = []
        for entity, label, ttl, uses in specs:
            otp_id, secret = await _in_thread(issue_otp, authority.store.store, authority.keyring, entity, label,
                                              ttl, uses, known, request["admin"])
            created.append({"id": otp_id, "entity": entity, "label": scope_json(label), "otp": secret, "uses": uses,
                            "expires_at": iso(utcnow() + dt.timedelta(seconds=ttl))})
        return web.json_response({"items": created}, status=201)

    def _otp_spec(self, item: Any, index: int) -> tuple[str, str | None, int, int]:
        where = f"items[{index}]"
        if not isinstance(item, dict):
            raise ApiError(400, "bad_request", f"{where} must be an object")
        unknown = set(item) - {"entity", "label", "ttl", "uses"}
        if unknown:
            raise ApiError(400, "bad_request", f"{where}: unknown field {sorted(unknown)[0]!r}")
        entity, label = item.get("entity"), item.get("label")
        if not isinstance(entity, str) or not ENTITY_RE.match(entity):
            raise ApiError(400, "bad_request", f"{where}.entity must be 1-255 characters, no ':' or control characters")
        if label is not None and not isinstance(label, str) and not (
                isinstance(label, list) and all(isinstance(x, str) for x in label)):
            raise ApiError(400, "bad_request", f"{where}.label must be a label name, a list of them, \"any\" or null")
        known = {name for name in self._config().labels if name}
        try:  # null or "": the unlabeled path only; "any": every label (an explicit choice)
            label = otp_scope(label, known)
        except BadRequest as exc:
            raise ApiError(404 if "unknown EST label" in exc.reason else 400,
                           "not_found" if "unknown EST label" in exc.reason else "bad_request",
                           f"{where}.label: {exc.reason}") from None
        uses = integral(item.get("uses", 1))
        if isinstance(uses, bool) or not isinstance(uses, int) or not 1 <= uses <= 1000:
            raise ApiError(400, "bad_request", f"{where}.uses must be an integer from 1 to 1000")
        ttl_raw = integral(item.get("ttl", self._config().otp.default_ttl))
        valid = (isinstance(ttl_raw, int) and not isinstance(ttl_raw, bool) and 1 <= ttl_raw <= MAX_TTL) or (
            isinstance(ttl_raw, str) and TTL_RE.match(ttl_raw))
        if not valid:
            raise ApiError(400, "bad_request", f"{where}.ttl must be seconds (at most 10 years) or a duration "
                                               "such as 30m, 24h, 7d")
        return entity, label, parse_duration(ttl_raw, f"{where}.ttl"), uses

    async def list_otp(self, request: web.Request) -> web.Response:
        q = Query(request, {"entity", "cursor", "limit", "status", "order", "after", "before"})
        entity = q.text("entity")
        if {"status", "order", "after", "before"} & set(request.query):
            return await self._fleet.otp_page(q, entity)
        cursor, limit = q.cursor(), q.limit()
        rows = [] if q.impossible else [o for o in await self._authority().store.list_otps(entity)
                                        if o.id > cursor][:limit]  # cursor, limit: parsed above
        return page_response([otp_json(o) for o in rows], rows[-1].id if len(rows) == limit else None)

    async def revoke_otp(self, request: web.Request) -> web.Response:
        otp_id = path_int(request, "id")
        now = utcnow()
        done = await self._authority().store.revoke_otp(otp_id, now, AuditEvent(
            event="otp.revoke", outcome="success", auth=request["admin"], reason=f"otp {otp_id}", at=now))
        if not done:
            raise ApiError(404, "not_found", f"no active OTP {otp_id}")
        return web.Response(status=204)

    # --- pending requests -------------------------------------------------------------

    async def list_requests(self, request: web.Request) -> web.Response:
        q = Query(request, {"status", "label", "cursor", "limit", "entity", "order", "after", "before"})
        status = q.choice("status", ("pending", "issued", "rejected", "expired", "all"), "pending")
        label, cursor, limit = q.text("label"), q.cursor(), q.limit()
        if {"entity", "order", "after", "before"} & set(request.query):
            return await self._fleet.request_page(q, None if status == "all" else status, label)
        rows = [] if q.impossible else await self._authority().store.pending_requests(
            None if status == "all" else status, label=label, after_id=cursor, limit=limit)
        return page_response([request_json(r) for r in rows], rows[-1].id if len(rows) == limit else None)

    async def get_request(self, request: web.Request) -> web.Response:
        pending = await self._authority().store.pending(path_int(request, "id"))
        if pending is None:
            raise ApiError(404, "not_found", f"no request {request.match_info['id']}")
        body = request_json(pending)
        body["csr"] = decoded_csr(pending.csr_der)  # the whole CSR, for the officer who decides
        return web.json_response(body)

    async def approve(self, request: web.Request) -> web.Response:
        request_id = path_int(request, "id")
        await json_body(request, optional=True)
        authority = self._authority()
        record = await authority.approve(request_id, request["admin"])
        pending = await authority.store.pending(request_id)
        if isinstance(record, str):  # a remote CA holds it in turn: the requester's retry collects it
            return web.json_response({"request": request_json(pending), "certificate": None, "ca_ref": record},
                                     status=202)
        return web.json_response({"request": request_json(pending), "certificate": cert_json(record)})

    async def reject(self, request: web.Request) -> web.Response:
        request_id = path_int(request, "id")
        body = await json_body(request)
        reason = body.get("reason") if isinstance(body, dict) else None
        if not isinstance(body, dict) or set(body) - {"reason"} or not isinstance(reason, str) or not reason:
            raise ApiError(400, "bad_request", 'the body must be {"reason": "<non-empty text>"}')
        authority = self._authority()
        await authority.reject(request_id, reason, request["admin"])
        return web.json_response(request_json(await authority.store.pending(request_id)))

    # --- certificates -----------------------------------------------------------------

    async def list_certs(self, request: web.Request) -> web.Response:
        from kipuka.admin.fleet import CERT_PARAMS, PAGE_PARAMS, cert_filter
        q = Query(request, CERT_PARAMS | PAGE_PARAMS | {"cursor"})
        if {"sort", "order", "after", "before"} & set(request.query):
            return await self._fleet.cert_page(q)
        f = cert_filter(q)
        limit, cursor = q.limit(), q.cursor()
        rows = [] if q.impossible else await self._authority().store.search_certificates(
            f, limit=limit, after_id=cursor)
        return page_response([cert_json(r) for _, r in rows], rows[-1][0] if len(rows) == limit else None)

    async def get_cert(self, request: web.Request) -> web.Response:
        record = await self._one_cert(request)
        body = cert_json(record, pem=True)
        body["decoded"] = decoded(x509.load_der_x509_certificate(record.der))
        from kipuka.admin.brski import idevid_of
        body["idevid"] = await idevid_of(self._authority(), record)  # the BRSKI pledge of an LDevID, or null
        body.update(await self._fleet.cert_context(record))  # lineage, chain, CRL
        return web.json_response(body)

    async def revoke_cert(self, request: web.Request) -> web.Response:
        record = await self._one_cert(request)
        body = await json_body(request, optional=True)
        reason = body.get("reason", "unspecified") if isinstance(body, dict) and not set(body) - {"reason"} else None
        if not isinstance(reason, str) or reason not in REASONS or reason == "removeFromCRL":
            raise ApiError(400, "bad_request", "reason must be an RFC 5280 reason such as keyCompromise")
        if record.revoked_at is not None:
            raise ApiError(409, "conflict", f"certificate {record.serial} is already revoked")
        authority = self._authority()
        await authority.revocation.revoke(record.serial, reason, request["admin"], record.ca_id)
        updated = await authority.store.certificate_status(record.ca_id, record.serial)
        return web.json_response(cert_json(updated or record))

    async def _one_cert(self, request: web.Request) -> CertRecord:
        raw = request.match_info["serial"]
        if not SERIAL_RE.match(raw):
            raise ApiError(400, "bad_request", "serial must be hexadecimal")
        serial = format(int(raw.lower().replace(":", "").removeprefix("0x"), 16), "x")
        rows = await self._authority().store.certificate(serial)
        if not rows:
            raise ApiError(404, "not_found", f"no certificate with serial {serial}")
        return rows[0]

    # --- CAs and audit ----------------------------------------------------------------

    async def list_ca(self, request: web.Request) -> web.Response:
        authority = self._authority()
        return web.json_response({"items": [await self._ca_json(authority, ca_id) for ca_id in authority.cas]})

    async def get_ca(self, request: web.Request) -> web.Response:
        authority = self._authority()
        ca_id = request.match_info["id"]
        if ca_id not in authority.cas:
            raise ApiError(404, "not_found", f"no CA {ca_id!r}")
        return web.json_response(await self._ca_json(authority, ca_id))

    async def _ca_json(self, authority: Authority, ca_id: str) -> dict[str, Any]:
        ca = authority.cas[ca_id]
        chain = ca.ca_certificates()
        labels = [name or "(default)" for name, rt in authority.labels.items() if rt.ca.id == ca_id]
        crl_urls, ocsp_urls = authority.revocation.urls(ca_id)
        return {"id": ca_id, "type": self._config().cas[ca_id].type, "labels": labels,
                "subject": chain[0].subject.rfc4514_string(), "not_after": iso(chain[0].not_valid_after_utc),
                "chain": [c.public_bytes(serialization.Encoding.PEM).decode() for c in chain],
                "health": await ca.health(), "crl_urls": list(crl_urls), "ocsp_urls": list(ocsp_urls),
                **await overview.ca_details(authority, self._config(), ca_id)}

    async def list_labels(self, request: web.Request) -> web.Response:
        return web.json_response({"items": overview.labels(self._authority(), self._config())})

    async def issuance_stats(self, request: web.Request) -> web.Response:
        q = Query(request, {"hours"})
        return web.json_response(await overview.issuance(self._authority(), q.int_param("hours", 24, 1, 168)))

    async def list_audit(self, request: web.Request) -> web.Response:
        from kipuka.admin.fleet import keys, page_json
        q = Query(request, {"event", "outcome", "entity", "label", "since", "until", "cursor", "limit", "actor",
                            "after", "before"})
        limit = q.limit()
        after, before = keys(q)  # the older `cursor` is `after`: events before that id
        filters = dict(event=q.text("event"), outcome=q.text("outcome"), entity=q.text("entity"),
                       label=q.text("label"), actor=q.text("actor"), since=q.time("since"), until=q.time("until"))
        page = Page([], None, None) if q.impossible else await self._authority().store.audit_page(
            **filters, after=after, before=before, limit=limit)
        return page_json([audit_json(e) for e in page.items], page, page.next_key)

    async def verify_audit(self, request: web.Request) -> web.Response:
        store = self._authority().store
        await store.chain_audit()
        check = await store.verify_audit_chain()
        return web.json_response({"ok": check.ok, "checked": check.checked, "unchained": check.unchained,
                                  "broken_id": check.broken_id, "broken_seq": check.broken_seq,
                                  "problem": check.problem})

    async def metrics(self, request: web.Request) -> web.Response:
        metrics.PENDING.set(await self._authority().store.count_pending())
        return web.Response(body=metrics.render(), headers={"Content-Type": "text/plain; version=0.0.4"})


# --- request parsing ---------------------------------------------------------------------

class Query:
    """Validated query parameters; unknown or repeated parameters are a 400."""

    def __init__(self, request: web.Request, allowed: set[str]) -> None:
        self._q = request.query
        self.names = set(self._q)
        for key in self._q:
            if key not in allowed:
                raise ApiError(400, "bad_request", f"unknown query parameter {key[:40]!r}")
            if len(self._q.getall(key)) > 1:
                raise ApiError(400, "bad_request", f"query parameter {key!r} given more than once")

    def text(self, name: str) -> str | None:
        value = self._q.get(name)
        if value is not None and len(value) > MAX_FILTER:
            raise ApiError(400, "bad_request", f"{name} is longer than {MAX_FILTER} characters")
        if value is not None and "\x00" in value:
            self.impossible = True  # no stored value holds a NUL: the filter matches nothing
        return value

    impossible = False

    def choice(self, name: str, options: tuple[str, ...], default: str | None) -> str | None:
        value = self._q.get(name, default)
        if value is not None and value not in options:
            raise ApiError(400, "bad_request", f"{name} must be one of {', '.join(options)}")
        return value

    def limit(self) -> int:
        return self._int("limit", 100, 1, 1000)

    def int_param(self, name: str, default: int, low: int, high: int) -> int:
        return self._int(name, default, low, high)

    def cursor(self) -> int:
        return self._int("cursor", 0, 0, 10 ** 18 - 1)

    def _int(self, name: str, default: int, low: int, high: int) -> int:
        raw = self._q.get(name)
        if raw is None:
            return default
        if not raw.isascii() or not raw.isdigit() or len(raw) > 18 or not low <= int(raw) <= high:
            raise ApiError(400, "bad_request", f"{name} must be an integer from {low} to {high}")
        return int(raw)

    def time(self, name: str) -> dt.datetime | None:
        raw = self._q.get(name)
        if raw is None:
            return None
        try:
            value = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            raise ApiError(400, "bad_request", f"{name} must be an ISO 8601 date-time") from None
        return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


async def _in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    import asyncio
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


def _status_of(exc: KipukaError) -> tuple[int, str]:
    for cls, status, code in ((BadRequest, 400, "bad_request"), (NotFound, 404, "not_found"),
                              (Conflict, 409, "conflict"), (Forbidden, 409, "conflict"),
                              (Unavailable, 503, "unavailable")):
        if isinstance(exc, cls):
            return status, code
    return 500, "internal_error"


def _json_error(status: int, error: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": error, "message": message.replace("\n", " ")}, status=status,
                             headers=headers)

"""The admin API for a fleet: keyset-paged lists, counts, CSV export, bulk acts, the dashboard.

What an RA officer needs at 100,000 certificates (docs/console.md): pages found by
the key of their neighbour (no offsets), a count and a CSV of any search, and
revocation of a whole selection or search in one audited call. Mounted by AdminApi;
documented in openapi.py. Reads go to store methods; revocation goes through the RA.
"""

from __future__ import annotations

import csv
import io
from typing import Any, Callable

from aiohttp import web

from kipuka.admin.api import Query
from kipuka.admin.shapes import ApiError, cert_json, integral, iso, json_body, otp_json, request_json
from kipuka.admin.overview import cert_summary
from kipuka.ra.authority import Authority
from kipuka.ra.revocation import REASONS
from kipuka.store import CertFilter, CertRecord
from kipuka.store.browse import CERT_SORTS, Page
from kipuka.store.records import utcnow

CERT_PARAMS = {"subject", "subject_prefix", "subject_contains", "serial", "san", "q", "otp", "entity", "label", "ca",
               "status", "issued_after", "issued_before", "expires_after", "expires_before"}
PAGE_PARAMS = {"sort", "order", "after", "before", "limit"}
MAX_BULK_REVOKE = 10000
EXPORT_BATCH = 1000
CSV_COLUMNS = ("serial", "ca", "label", "subject", "sans", "entity", "auth", "status", "issued_at", "not_before",
               "not_after", "revoked_at", "revocation_reason", "replaces_serial", "sha256")


def cert_filter(q: Query) -> CertFilter:
    otp = q.int_param("otp", 0, 0, 10 ** 17)
    return CertFilter(subject=q.text("subject"), subject_prefix=q.text("subject_prefix"),
                      subject_contains=q.text("subject_contains"), serial=q.text("serial"), san=q.text("san"),
                      q=q.text("q"), otp_id=otp or None, entity=q.text("entity"), label=q.text("label"),
                      ca_id=q.text("ca"), status=q.choice("status", ("valid", "revoked", "expired"), None),
                      issued_after=q.time("issued_after"), issued_before=q.time("issued_before"),
                      expires_after=q.time("expires_after"), expires_before=q.time("expires_before"))


def keys(q: Query) -> tuple[int | None, int | None]:
    """(after, before): the row ids next to the wanted page. With both, `after` wins; the older
    `cursor` parameter (a row id too) stands for `after`."""
    after = q.int_param("after", 0, 0, 10 ** 17) if "after" in q.names else None
    before = q.int_param("before", 0, 0, 10 ** 17) if "before" in q.names else None
    cursor = q.cursor() if "cursor" in q.names else None  # every parameter is checked, used or not
    if after is None and cursor:
        after = cursor
    return after, before if after is None else None


def page_json(items: list[dict[str, Any]], page: Page[Any], legacy_next: int | None = None) -> web.Response:
    return web.json_response({"items": items, "next_cursor": str(legacy_next) if legacy_next is not None else None,
                              "next": _text(page.next_key), "prev": _text(page.prev_key)})


def _text(row_id: int | None) -> str | None:
    return str(row_id) if row_id is not None else None


def cert_sort(q: Query) -> tuple[str, bool]:
    sort = q.choice("sort", tuple(CERT_SORTS), "issued") or "issued"
    return sort, q.choice("order", ("asc", "desc"), "asc") == "desc"


class FleetAdmin:
    def __init__(self, authority: Callable[[], Authority]) -> None:
        self._authority = authority

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/admin/certs/count", self.count_certs),
            web.get("/admin/certs/export", self.export_certs),
            web.post("/admin/bulk/revoke-certs", self.revoke_certs),
            web.post("/admin/bulk/revoke-otps", self.revoke_otps),
            web.get("/admin/dashboard", self.dashboard),
        ]

    async def cert_page(self, q: Query) -> web.Response:
        """GET /admin/certs with sort, order, after or before: one keyset page."""
        f = cert_filter(q)
        sort, descending = cert_sort(q)
        after, before = keys(q)
        if q.impossible:
            return page_json([], Page([], None, None))
        page = await self._authority().store.certificate_page(f, sort=sort, descending=descending, after=after,
                                                              before=before, limit=q.limit())
        items = []
        for record in page.items:
            body = cert_json(record)
            body["superseded"] = (record.ca_id, record.serial) in page.superseded
            items.append(body)
        return page_json(items, page)

    async def cert_context(self, record: CertRecord) -> dict[str, Any]:
        """A certificate's lineage, its CA's chain and current CRL (GET /admin/certs/{serial})."""
        authority = self._authority()
        earlier, later = await authority.store.lineage(record.ca_id, record.serial)
        ca = authority.cas.get(record.ca_id)
        crl = await authority.store.latest_crl(record.ca_id) if ca is not None else None
        return {"renewed_from": cert_json(earlier) if earlier is not None else None,
                "superseded_by": [cert_json(r) for r in later], "superseded": bool(later),
                "chain": [] if ca is None else [cert_summary(c) for c in ca.ca_certificates()],
                "crl": None if crl is None else {"number": crl.number, "this_update": iso(crl.this_update),
                                                 "next_update": iso(crl.next_update)}}

    async def otp_page(self, q: Query, entity: str | None) -> web.Response:
        """GET /admin/otp with status, order, after or before: newest first by default."""
        status = q.choice("status", ("active", "spent", "expired", "revoked"), None)
        descending = q.choice("order", ("asc", "desc"), "desc") == "desc"
        after, before = keys(q)
        store = self._authority().store
        page = Page([], None, None) if q.impossible else await store.otp_page(
            entity=entity, status=status, descending=descending, after=after, before=before, limit=q.limit())
        produced = await store.otp_certificates_exist([o.id for o in page.items])
        return page_json([{**otp_json(o), "certificates": produced.get(o.id, 0)} for o in page.items], page)

    async def request_page(self, q: Query, status: str | None, label: str | None) -> web.Response:
        """GET /admin/requests with entity, order, after or before: the queue, oldest first by default."""
        after, before = keys(q)
        descending = q.choice("order", ("asc", "desc"), "asc") == "desc"
        entity = q.text("entity")
        page = Page([], None, None) if q.impossible else await self._authority().store.pending_page(
            status, label=label, entity=entity, descending=descending, after=after, before=before, limit=q.limit())
        return page_json([request_json(r) for r in page.items], page)

    async def count_certs(self, request: web.Request) -> web.Response:
        q = Query(request, CERT_PARAMS)
        f = cert_filter(q)
        count = 0 if q.impossible else await self._authority().store.count_certificates_matching(f)
        return web.json_response({"count": count})

    async def export_certs(self, request: web.Request) -> web.StreamResponse:
        """Every certificate a search matches, as CSV (RFC 4180), read a thousand at a time."""
        q = Query(request, CERT_PARAMS | {"sort", "order"})
        f = cert_filter(q)
        sort, descending = cert_sort(q)
        response = web.StreamResponse(headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="certificates-{utcnow():%Y%m%dT%H%M%SZ}.csv"'})
        await response.prepare(request)
        await response.write(_csv_rows([CSV_COLUMNS]))
        after = None
        store = self._authority().store
        while not q.impossible:
            page = await store.certificate_page(f, sort=sort, descending=descending, after=after,
                                                limit=EXPORT_BATCH)
            await response.write(_csv_rows([[_csv_value(cert_json(r), name, r) for name in CSV_COLUMNS]
                                             for r in page.items]))
            if page.next_key is None:
                break
            after = page.next_key
        await response.write_eof()
        return response

    async def revoke_certs(self, request: web.Request) -> web.Response:
        """Revoke a selection ({"serials": [...]}) or a search ({"filter": {...}, "count": n})."""
        body = await json_body(request)
        if not isinstance(body, dict) or set(body) - {"serials", "filter", "count", "reason"}:
            raise ApiError(400, "bad_request", 'the body is {"reason", "serials"} or {"reason", "filter", "count"}')
        reason = body.get("reason")
        if not isinstance(reason, str) or reason not in REASONS or reason == "removeFromCRL":
            raise ApiError(400, "bad_request", "reason must be an RFC 5280 reason such as keyCompromise")
        store = self._authority().store
        if ("serials" in body) == ("filter" in body):
            raise ApiError(400, "bad_request", "give serials or a filter, not both")
        if "serials" in body:
            serials = body["serials"]
            if not isinstance(serials, list) or not 1 <= len(serials) <= MAX_BULK_REVOKE or \
                    not all(isinstance(s, str) and _hex(s) for s in serials):
                raise ApiError(400, "bad_request", f"serials must be 1 to {MAX_BULK_REVOKE} hexadecimal serials")
            targets = []
            for serial in dict.fromkeys(_hex(s) for s in serials):
                found = await store.certificate(serial)
                if not found:
                    raise ApiError(404, "not_found", f"no certificate with serial {serial}")
                targets += [(r.ca_id, r.serial) for r in found if r.revoked_at is None]
        else:
            spec, count = body["filter"], integral(body.get("count"))
            if not isinstance(spec, dict) or not all(isinstance(v, str) for v in spec.values()):
                raise ApiError(400, "bad_request", "filter must be an object of certificate search parameters")
            if isinstance(count, bool) or not isinstance(count, int):
                raise ApiError(400, "bad_request", "count (the number of certificates confirmed) is required")
            q = Query(_FakeRequest(spec), CERT_PARAMS)
            f = cert_filter(q)
            matching = 0 if q.impossible else await store.count_certificates_matching(f)
            if matching != count:
                raise ApiError(409, "conflict", f"the search now matches {matching} certificates, not {count}: "
                                                "check it again")
            if count > MAX_BULK_REVOKE:
                raise ApiError(400, "bad_request", f"at most {MAX_BULK_REVOKE} certificates in one revocation")
            targets = [] if q.impossible else await store.certificate_keys(f, MAX_BULK_REVOKE)
        done = await self._authority().revocation.revoke_many(targets, reason, request["admin"])
        return web.json_response({"revoked": len(done), "serials": [s for _, s in done]})

    async def revoke_otps(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        ids = body.get("ids") if isinstance(body, dict) and set(body) == {"ids"} else None
        ids = [integral(i) for i in ids] if isinstance(ids, list) else None
        if not isinstance(ids, list) or not 1 <= len(ids) <= MAX_BULK_REVOKE or \
                not all(isinstance(i, int) and not isinstance(i, bool) and 0 < i <= 10 ** 17 for i in ids):
            raise ApiError(400, "bad_request", f'the body must be {{"ids": [1 to {MAX_BULK_REVOKE} OTP ids]}}')
        done = await self._authority().store.revoke_otps(list(dict.fromkeys(ids)), utcnow(), request["admin"])
        return web.json_response({"revoked": len(done), "ids": done})

    async def dashboard(self, request: web.Request) -> web.Response:
        Query(request, set())
        from kipuka.admin.dashboard import dashboard
        return web.json_response(await dashboard(self._authority()))


class _FakeRequest:
    """A filter object read as if it were a query string (one validation for both)."""

    def __init__(self, spec: dict[str, str]) -> None:
        from multidict import MultiDict
        self.query = MultiDict(spec)


def _hex(serial: str) -> str | None:
    raw = serial.strip().lower().replace(":", "").removeprefix("0x")
    if not raw or len(raw) > 42 or any(c not in "0123456789abcdef" for c in raw):
        return None
    return format(int(raw, 16), "x")


def _csv_value(body: dict[str, Any], name: str, record: Any) -> str:
    if name == "replaces_serial":
        return record.replaces_serial or ""
    value = body.get(name)
    return "" if value is None else str(value)


def _csv_rows(rows: list[Any]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerows(rows)
    return out.getvalue().encode()


__all__ = ["FleetAdmin", "cert_filter", "keys", "page_json"]

"""The console's routes on the admin listener: pages, login, logout and static assets.

Pages are static files wrapped in one shell (static/shell.html); the server
only fills in the page's title, the navigation, who is signed in and the CSRF
token. Everything a page shows it fetches from the JSON admin API.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import logging
import re
from pathlib import Path
from typing import Callable
from urllib.parse import quote

from aiohttp import web

from kipuka.admin.auth import MAX_TOKEN, AdminUnauthorized, BrowserIdentity, browser_identity, check_csrf
from kipuka.admin.console.session import (
    SESSION_TTL, clear_cookie, cross_site_reason, new_secret, session_cookie, session_digest,
)
from kipuka.config import Config
from kipuka.ra.authority import Authority
from kipuka.ra.revocation import REASONS
from kipuka.store.records import AuditEvent, utcnow

log = logging.getLogger("kipuka.admin.console")
STATIC = Path(__file__).parent / "static"
ASSET_TYPES = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}
MAX_FORM = 4096

# path under /console/ -> (script and fragment name, title)
PAGES: dict[str, tuple[str, str]] = {
    "": ("overview", "Overview"),
    "requests": ("requests", "Pending requests"),
    "certs": ("certs", "Certificates"),
    "otp": ("otp", "One-time passwords"),
    "audit": ("audit", "Audit trail"),
    "cas": ("cas", "CAs and labels"),
}
# pages of one record: /console/certs/<serial>, /console/requests/<id> -> (script, title, the nav entry)
DETAILS: dict[str, tuple[str, str, str]] = {
    "certs": ("cert", "Certificate", "certs"),
    "requests": ("request", "Request", "requests"),
}
# Markup several pages share, filled into their fragments once at start-up: the revocation reasons
# the RA accepts (removeFromCRL only undoes a hold in a delta CRL: not an officer's choice) and the
# page sizes the lists offer (the admin API takes up to 1,000 a page).
PARTIALS = {
    "revocation_reasons": "\n".join(f'<option value="{r}">{r}</option>' for r in REASONS if r != "removeFromCRL"),
    "page_sizes": "\n".join(f'<option value="{n}">{n}</option>' for n in (50, 100, 200, 500)),
}
NEXT_RE = re.compile(r"^/console/(" + "|".join(p for p in PAGES if p) + r"|certs/[0-9a-fA-F]{1,42}|requests/[0-9]{1,18})?"
                     r"(\?[A-Za-z0-9=&%._~-]{0,600})?$")
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",  # "no-referrer" would make forms send Origin: null
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


class Console:
    def __init__(self, authority: Callable[[], Authority], config: Callable[[], Config]) -> None:
        self._authority = authority
        self._config = config
        self._shell = (STATIC / "shell.html").read_text()
        self._login = (STATIC / "login.html").read_text()
        self._fragments = {name: _fill((STATIC / "pages" / f"{name}.html").read_text(), PARTIALS)
                           for name in [n for n, _ in PAGES.values()] + [d[0] for d in DETAILS.values()]}
        self._assets = {p.name: (p.read_bytes(), ASSET_TYPES[p.suffix]) for p in STATIC.iterdir()
                        if p.suffix in ASSET_TYPES}

    @staticmethod
    def owns(path: str) -> bool:
        """Paths the console answers itself (the admin API's authentication skips them)."""
        return path == "/" or path == "/console" or path.startswith("/console/")

    def add_to(self, app: web.Application) -> None:
        app.add_routes([
            web.get("/", self.home),
            web.get("/console", self.home),
            web.get("/console/login", self.login_page),
            web.post("/console/login", self.login),
            web.post("/console/logout", self.logout),
            web.get("/console/static/{name}", self.asset),
            *(web.get(f"/console/{path}", self.page) for path in PAGES),
            web.get(r"/console/certs/{key:[0-9a-fA-F]{1,42}}", self.detail),
            web.get(r"/console/requests/{key:[0-9]{1,18}}", self.detail),
        ])
        app.on_response_prepare.append(_security_headers)

    # --- pages -----------------------------------------------------------------------

    async def home(self, request: web.Request) -> web.Response:
        return _redirect("/console/")

    async def _signed_in(self, request: web.Request) -> BrowserIdentity | None:
        """The officer behind this browser session, or None (the page then sends them to log in)."""
        try:
            return await browser_identity(request, self._authority(), self._config().admin)
        except AdminUnauthorized:
            return None

    async def page(self, request: web.Request) -> web.Response:
        who = await self._signed_in(request)
        if who is None:
            return _redirect("/console/login?next=" + quote(request.path_qs, safe="/"))
        name, title = PAGES[request.path.removeprefix("/console/")]
        return _html(self._render(name, title, who))

    async def detail(self, request: web.Request) -> web.Response:
        """A page of one certificate or request; its script reads the key from the URL."""
        who = await self._signed_in(request)
        if who is None:
            return _redirect("/console/login?next=" + quote(request.path_qs, safe="/"))
        name, title, nav = DETAILS[request.path.split("/")[2]]
        return _html(self._render(name, title, who, nav))

    def _render(self, name: str, title: str, who: BrowserIdentity, nav_page: str | None = None) -> str:
        current = ' aria-current="page"'
        nav_page = nav_page or name
        nav = "\n".join(f'<li><a href="/console/{path}"{current if page == nav_page else ""}>{html.escape(t)}</a></li>'
                        for path, (page, t) in PAGES.items())
        if who.via == "session":
            account = ('<form method="post" action="/console/logout" class="logout">'
                       f'<input type="hidden" name="csrf" value="{html.escape(who.csrf)}">'
                       '<button type="submit">Log out</button></form>')
        else:
            account = '<span class="via">client certificate</span>'
        values = {"title": html.escape(title), "page": name, "nav": nav, "main": self._fragments[name],
                  "admin": html.escape(who.admin), "csrf": html.escape(who.csrf), "account": account}
        return _fill(self._shell, values)

    async def asset(self, request: web.Request) -> web.Response:
        found = self._assets.get(request.match_info["name"])
        if found is None:
            raise web.HTTPNotFound(reason="no such console asset")
        body, content_type = found
        return web.Response(body=body, content_type=content_type, headers={"Cache-Control": "no-cache"})

    # --- login and logout ------------------------------------------------------------------

    async def login_page(self, request: web.Request) -> web.Response:
        next_path = _next(request.query.get("next", ""))
        message = {"failed": "That token is unknown or revoked.", "bye": "You have logged out.",
                   "refused": "The login form must be sent from this console's own page.",
                   }.get(request.query.get("m", ""), "")
        return _html(_fill(self._login, {"next": html.escape(next_path), "message": html.escape(message),
                                         "message_class": "message" if message else "message empty"}))

    async def login(self, request: web.Request) -> web.Response:
        """Exchange an admin bearer token for a session cookie."""
        authority = self._authority()
        if cross_site_reason(request) is not None:
            await authority.store.add_audit(_event(request, "rejected", "login form sent from another site"))
            return _redirect("/console/login?m=refused")
        form = await _form(request)
        next_path = _next(form.get("next", ""))
        token = form.get("token", "").strip()
        name = None
        if 0 < len(token) <= MAX_TOKEN:
            name = await authority.store.admin_token_name(hashlib.sha256(token.encode()).hexdigest())
        if name is None:
            await authority.store.add_audit(_event(request, "rejected", "unknown or revoked token"))
            return _redirect("/console/login?m=failed&next=" + quote(next_path, safe="/"))
        secret = new_secret()
        now = utcnow()
        await authority.store.create_admin_token(name, session_digest(authority.keyring, secret), _event(
            request, "success", f"session until {(now + SESSION_TTL).isoformat(timespec='seconds')}",
            f"token:{name}", now))
        response = _redirect(next_path)
        session_cookie(response, secret)
        return response

    async def logout(self, request: web.Request) -> web.Response:
        authority = self._authority()
        try:
            who = await browser_identity(request, authority, self._config().admin)
        except AdminUnauthorized:
            who = None
        if who is not None and who.via == "session":
            form = await _form(request)
            check_csrf(request, who.csrf, form.get("csrf"))  # AdminForbidden: the API's 403 answer
            now = utcnow()
            await authority.store.end_admin_session(session_digest(authority.keyring, who.secret), now, AuditEvent(
                event="console.logout", outcome="success", auth=who.admin, client_addr=request.remote or "",
                reason="session ended", at=now))
        response = _redirect("/console/login?m=bye")
        clear_cookie(response)
        return response


def _event(request: web.Request, outcome: str, reason: str, auth: str = "token",
           at: dt.datetime | None = None) -> AuditEvent:
    return AuditEvent(event="console.login", outcome=outcome, reason=reason, auth=auth,
                      client_addr=request.remote or "", at=at or utcnow())


async def _form(request: web.Request) -> dict[str, str]:
    if request.content_length is not None and request.content_length > MAX_FORM:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_FORM, actual_size=request.content_length)
    data = await request.post()
    return {k: v for k, v in data.items() if isinstance(v, str)}


def _next(value: str) -> str:
    """Where to go after login: one of the console's own pages, nothing else (no open redirect)."""
    return value if NEXT_RE.match(value) else "/console/"


def _fill(template: str, values: dict[str, str]) -> str:
    return re.sub(r"\{\{(\w+)\}\}", lambda m: values[m.group(1)], template)


def _redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})


def _html(text: str) -> web.Response:
    return web.Response(text=text, content_type="text/html", charset="utf-8", headers={"Cache-Control": "no-store"})


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    if Console.owns(request.path):
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)

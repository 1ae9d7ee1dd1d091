"""Who may use the admin API: a bearer token (stored as SHA-256), a console session, or an admin
client certificate.

A client certificate must chain to [admin] client_ca (checked by the TLS
handshake), be within its dates, not be revoked when kipuka issued it, and
carry one of the [admin] subjects ("*": any, for a CA that issues only admin
certificates; an empty list with client_ca set is a configuration error).

Browsers send a session cookie and a client certificate by themselves, even on
a request another site makes them send; so a state-changing request authenticated
by either must come from the console's own origin and carry its CSRF token
(kipuka.admin.console.session). A bearer token is never sent by itself.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping

from aiohttp import web
from cryptography import x509

from kipuka.admin.console.session import (
    COOKIE, CSRF_HEADER, SAFE_METHODS, SESSION_TTL, certificate_csrf, cross_site_reason, from_browser, same_token,
    session_csrf, session_digest,
)
from kipuka.config import AdminConfig
from kipuka.est.identity import client_certificate
from kipuka.ra.authority import Authority
from kipuka.store.records import utcnow

if TYPE_CHECKING:
    from kipuka.ca.base import CertificateAuthority
    from kipuka.config import Config

MAX_TOKEN = 256


class AdminUnauthorized(Exception):
    pass


class AdminForbidden(Exception):
    """An authenticated request that may have been forged by another site (403)."""


@dataclass(frozen=True)
class BrowserIdentity:
    admin: str  # for the audit trail, as authenticate() returns it
    csrf: str  # the token state-changing requests must carry
    via: str  # "session" | "certificate"
    secret: str = ""  # the session secret (the cookie's value), for logout


async def authenticate(request: web.Request, authority: Authority, cfg: AdminConfig) -> str:
    """The acting admin's name, for the audit trail; raises AdminUnauthorized."""
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or len(token) > MAX_TOKEN:
            raise AdminUnauthorized("use Authorization: Bearer <token>")
        name = await authority.store.admin_token_name(hashlib.sha256(token.encode()).hexdigest())
        if name is None:
            raise AdminUnauthorized("unknown or revoked token")
        return f"token:{name}"
    who = await browser_identity(request, authority, cfg)
    if who is None:
        raise AdminUnauthorized("authentication required: a bearer token, a console session or an admin "
                                "client certificate")
    if request.method not in SAFE_METHODS and (who.via == "session" or from_browser(request)):
        check_csrf(request, who.csrf, request.headers.get(CSRF_HEADER))
    return who.admin


async def browser_identity(request: web.Request, authority: Authority, cfg: AdminConfig) -> BrowserIdentity | None:
    """The admin behind a console session cookie or a client certificate; None when neither."""
    secret = request.cookies.get(COOKIE, "")
    if 0 < len(secret) <= MAX_TOKEN:
        row = await authority.store.admin_session(session_digest(authority.keyring, secret))
        if row is not None and utcnow() < row[1] + SESSION_TTL:
            return BrowserIdentity(f"token:{row[0]}", session_csrf(authority.keyring, secret), "session", secret)
    cert = client_certificate(request)
    if cert is None or cfg.client_ca is None:
        if secret:
            raise AdminUnauthorized("the console session has expired or ended: log in again")
        return None
    admin = await _certificate_admin(cert, authority, cfg)
    return BrowserIdentity(admin, certificate_csrf(authority.keyring, cert), "certificate")


def check_csrf(request: web.Request, expected: str, given: str | None) -> None:
    """Refuse a state-changing request from another site, or without the CSRF token."""
    reason = cross_site_reason(request)
    if reason is not None:
        raise AdminForbidden(reason)
    if not same_token(given, expected):
        raise AdminForbidden(f"missing or wrong CSRF token ({CSRF_HEADER})")


async def _certificate_admin(cert: x509.Certificate, authority: Authority, cfg: AdminConfig) -> str:
    now = utcnow()
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise AdminUnauthorized("admin certificate is expired or not yet valid")
    subject = cert.subject.rfc4514_string()
    if not cfg.subjects or ("*" not in cfg.subjects and subject not in cfg.subjects):  # kipuka.config refuses empty
        raise AdminUnauthorized(f"certificate subject {subject} is not an admin")
    for ca in authority.cas.values():
        if ca.is_issuer_of(cert) and await authority.store.is_revoked(ca.id, format(cert.serial_number, "x")):
            raise AdminUnauthorized("admin certificate has been revoked")
    return f"cert:{subject}"


def check_admin_anchors(config: "Config", cas: "Mapping[str, CertificateAuthority]") -> None:
    """`[admin] subjects = ["*"]` trusts every certificate of `client_ca`: refuse it when that bundle
    holds a certificate of one of kipuka's own CA chains (an issuing CA or its root), whose
    certificates every enrolled device holds. Checked at start-up, reload and `kipuka config check`."""
    from kipuka.config import ANY_SUBJECT, ConfigError
    from kipuka.pem import load_certificates

    admin = config.admin
    if admin.client_ca is None or ANY_SUBJECT not in admin.subjects:
        return
    anchors = set(load_certificates(admin.client_ca))
    for ca in cas.values():
        for cert in ca.ca_certificates():
            if cert in anchors:
                raise ConfigError("admin.subjects", f'["*"] trusts every certificate of {admin.client_ca}, '
                                  f"which holds {cert.subject.rfc4514_string()} of CA {ca.id!r}: every device "
                                  "it enrolls would be an admin. Use a CA that issues admin certificates only, "
                                  "or list the admin subjects")


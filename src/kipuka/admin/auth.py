"""Who may use the admin API: a bearer token (stored as SHA-256) or an admin client certificate.

A client certificate must chain to [admin] client_ca (checked by the TLS
handshake), be within its dates, not be revoked when kipuka issued it, and,
when [admin] subjects is set, carry one of those subjects.
"""

from __future__ import annotations

import hashlib

from aiohttp import web
from cryptography import x509

from kipuka.config import AdminConfig
from kipuka.est.identity import client_certificate
from kipuka.ra.authority import Authority
from kipuka.store.records import utcnow

MAX_TOKEN = 256


class AdminUnauthorized(Exception):
    pass


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
    cert = client_certificate(request)
    if cert is None or cfg.client_ca is None:
        raise AdminUnauthorized("authentication required: a bearer token or an admin client certificate")
    return await _certificate_admin(cert, authority, cfg)


async def _certificate_admin(cert: x509.Certificate, authority: Authority, cfg: AdminConfig) -> str:
    now = utcnow()
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise AdminUnauthorized("admin certificate is expired or not yet valid")
    subject = cert.subject.rfc4514_string()
    if cfg.subjects and subject not in cfg.subjects:
        raise AdminUnauthorized(f"certificate subject {subject} is not an admin")
    for ca in authority.cas.values():
        if ca.is_issuer_of(cert) and await authority.store.is_revoked(ca.id, format(cert.serial_number, "x")):
            raise AdminUnauthorized("admin certificate has been revoked")
    return f"cert:{subject}"

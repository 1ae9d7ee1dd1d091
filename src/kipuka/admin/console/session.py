"""Console sessions and CSRF tokens, for browsers on the admin listener.

A login exchanges an admin bearer token for a random session secret kept only
in the browser, in a `__Host-` cookie (HttpOnly, Secure, SameSite=Strict). The
server keeps an HMAC of it (kipuka.store.admin: a row of admin_tokens named
after the token that logged in), so a database dump holds no usable session,
logout and token revocation end it at once, and it expires after SESSION_TTL.

The HMAC key is derived from the OTP hashing key that every node already
shares, so any worker on any node can check any session. Rotating that key
(`kipuka otp rotate-key`) logs every console user out.

A CSRF token is an HMAC of the session secret (or, for a browser that signs in
with an admin client certificate, of that certificate's fingerprint): nothing
to store, and it cannot be computed without the server key.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import secrets

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from kipuka.ra.otp import OtpKeyring

COOKIE = "__Host-kipuka-console"
CSRF_HEADER = "X-CSRF-Token"
SESSION_TTL = dt.timedelta(hours=8)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_KEY_PURPOSE = "kipuka-console-key-v1"  # an OTP is never empty, so no OTP digest equals this key


def _key(keyring: OtpKeyring) -> bytes:
    key = keyring.digest(keyring.current, _KEY_PURPOSE, "")
    assert key is not None  # the current key always exists
    return key


def _mac(keyring: OtpKeyring, purpose: str, value: str) -> bytes:
    return hmac.new(_key(keyring), purpose.encode() + b"\x00" + value.encode(), hashlib.sha256).digest()


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def session_digest(keyring: OtpKeyring, secret: str) -> str:
    """What the store keeps for a session: 64 hex characters, like a token's SHA-256."""
    return _mac(keyring, "session", secret).hex()


def session_csrf(keyring: OtpKeyring, secret: str) -> str:
    return base64.urlsafe_b64encode(_mac(keyring, "csrf-session", secret)).decode().rstrip("=")


def certificate_csrf(keyring: OtpKeyring, cert: x509.Certificate) -> str:
    fingerprint = cert.fingerprint(hashes.SHA256()).hex()
    return base64.urlsafe_b64encode(_mac(keyring, "csrf-certificate", fingerprint)).decode().rstrip("=")


def same_token(given: str | None, expected: str) -> bool:
    """Constant-time comparison of a submitted CSRF token."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def cross_site_reason(request: web.Request) -> str | None:
    """Why a state-changing request does not come from the console's own pages, or None.

    Browsers mark every request with Sec-Fetch-Site and a POST with Origin; a
    request with neither is not a browser's (curl, a script) and cannot be forged
    cross-site, so only the presence of a foreign value refuses it.
    """
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site != "same-origin":
        return f"cross-site request refused (Sec-Fetch-Site: {site[:20]})"
    origin = request.headers.get("Origin")
    if origin is not None and origin != f"https://{request.host}":
        return "cross-site request refused (foreign Origin)"
    return None


def from_browser(request: web.Request) -> bool:
    return "Origin" in request.headers or "Sec-Fetch-Site" in request.headers


def session_cookie(response: web.StreamResponse, secret: str) -> None:
    response.set_cookie(COOKIE, secret, max_age=int(SESSION_TTL.total_seconds()), path="/", secure=True,
                        httponly=True, samesite="Strict")


def clear_cookie(response: web.StreamResponse) -> None:
    response.set_cookie(COOKIE, "", max_age=0, expires="Thu, 01 Jan 1970 00:00:00 GMT", path="/", secure=True,
                        httponly=True, samesite="Strict")

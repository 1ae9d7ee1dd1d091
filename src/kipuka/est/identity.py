"""Who is calling: HTTP Basic credentials and the TLS client certificate.

The TLS handshake has already checked that a client certificate chains to
[tls] client_ca (expiry is deliberately not checked there, so that the RA can
answer 401 with a reason instead of a bare TLS alert).
"""

from __future__ import annotations

import base64
import binascii

from aiohttp import web
from cryptography import x509

from kipuka.errors import Unauthenticated
from kipuka.tlsbinding import binding_for
from kipuka.ra.requester import BasicCredentials, Requester

MAX_AUTHORIZATION = 1024
MAX_ENTITY = 255
MAX_SECRET = 256


def requester_of(request: web.Request) -> Requester:
    return Requester(
        client_addr=request.remote or "",
        basic=basic_credentials(request.headers.get("Authorization")),
        client_cert=client_certificate(request),
        binding_source=lambda: binding_for(_ssl_object(request)),
    )


def _ssl_object(request: web.Request):  # type: ignore[no-untyped-def]
    transport = request.transport
    return transport.get_extra_info("ssl_object") if transport is not None else None


def basic_credentials(header: str | None) -> BasicCredentials | None:
    if header is None:
        return None
    if len(header) > MAX_AUTHORIZATION:
        raise Unauthenticated("Authorization header is too long")
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        raise Unauthenticated(f"unsupported authorization scheme {scheme[:20]!r}; use Basic")
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise Unauthenticated("malformed Basic credentials") from None
    entity, sep, secret = decoded.partition(":")
    if not sep or not entity or not secret or len(entity) > MAX_ENTITY or len(secret) > MAX_SECRET:
        raise Unauthenticated("malformed Basic credentials; expected entity-id:otp")
    return BasicCredentials(entity, secret)


def client_certificate(request: web.Request) -> x509.Certificate | None:
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return None
    return x509.load_der_x509_certificate(der)

"""Who is asking: the credentials the front end extracted from the request."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509


@dataclass(frozen=True)
class BasicCredentials:
    entity: str
    secret: str


@dataclass(frozen=True)
class Requester:
    client_addr: str
    basic: BasicCredentials | None = None
    client_cert: x509.Certificate | None = None
    channel_binding: tuple[str, bytes] | None = None  # ("tls-unique" | "tls-exporter", value)

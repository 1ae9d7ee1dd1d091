"""Who is asking: the credentials the front end extracted from the request."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable

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
    # Asked for only when a CSR is checked for linking: exporting keying material from
    # the TLS session costs more than the rest of identifying the caller.
    binding_source: Callable[[], tuple[str, bytes] | None] | None = field(default=None, repr=False, compare=False)

    @cached_property
    def channel_binding(self) -> tuple[str, bytes] | None:
        """("tls-unique" | "tls-exporter", value) of the request's TLS session, if it has one."""
        return self.binding_source() if self.binding_source is not None else None

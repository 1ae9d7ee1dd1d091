"""Back ends by type name, so a new kind of CA is one entry here and one module."""

from __future__ import annotations

from typing import Callable

from kipuka.ca.base import CertificateAuthority
from kipuka.ca.local import LocalCA
from kipuka.config import CAConfig

BACKENDS: dict[str, Callable[[CAConfig], CertificateAuthority]] = {
    "local": LocalCA.from_config,
}


def build_ca(cfg: CAConfig) -> CertificateAuthority:
    try:
        factory = BACKENDS[cfg.type]
    except KeyError:
        raise ValueError(f"ca.{cfg.id}.type: CA type {cfg.type!r} is not available in this build") from None
    return factory(cfg)

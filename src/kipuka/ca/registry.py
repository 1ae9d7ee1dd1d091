"""Back ends by type name, so a new kind of CA is one entry here and one module."""

from __future__ import annotations

from typing import Callable

from kipuka.ca.base import CertificateAuthority
from kipuka.ca.local import LocalCA
from kipuka.config import CAConfig


def _pkcs11(cfg: CAConfig) -> CertificateAuthority:
    from kipuka.ca.pkcs11 import PKCS11CA  # python-pkcs11 is an optional extra (kipuka[hsm])

    return PKCS11CA.from_config(cfg)


def _est(cfg: CAConfig) -> CertificateAuthority:
    from kipuka.ca.upstream_est import UpstreamEstCA  # kipuka as an RA in front of another EST server

    return UpstreamEstCA.from_config(cfg)


def _dogtag(cfg: CAConfig) -> CertificateAuthority:
    from kipuka.ca.dogtag import DogtagCA  # a Dogtag PKI CA reached over its REST API

    return DogtagCA.from_config(cfg)


BACKENDS: dict[str, Callable[[CAConfig], CertificateAuthority]] = {
    "local": LocalCA.from_config,
    "pkcs11": _pkcs11,
    "dogtag": _dogtag,
    "est": _est,
}


def build_ca(cfg: CAConfig) -> CertificateAuthority:
    try:
        factory = BACKENDS[cfg.type]
    except KeyError:
        raise ValueError(f"ca.{cfg.id}.type: CA type {cfg.type!r} is not available in this build") from None
    if "replicas" in cfg.options:  # any type: a pool of interchangeable replicas (kipuka.ca.pool)
        from kipuka.ca.pool import build_pool

        return build_pool(cfg, factory)
    return factory(cfg)

"""The [brski] configuration section: the registrar's identity, the manufacturers it trusts,
and which of their devices this deployment owns (docs/configuration.md#brski)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kipuka.config import NAME_RULES, ConfigError, parse_duration, section

UNKNOWN_DEVICES = ("reject", "hold")
MAX_RETRY_AFTER = 60  # RFC 8995 §5.3: a pledge caps Retry-After at 60 seconds


@dataclass(frozen=True)
class Manufacturer:
    """One manufacturer whose IDevIDs the registrar accepts, and its MASA."""

    name: str
    ca: tuple[Path, ...]                 # CA certificates that issue its IDevIDs
    masa_url: str = ""                   # overrides the IDevID's id-pe-masa-url
    masa_ca: Path | None = None          # trust anchors for the MASA's TLS certificate; default: the system's
    voucher_ca: Path | None = None       # when set, a voucher's signer must be one of these or issued by one
    owned_serials: tuple[str, ...] = ()  # serial-number patterns (fnmatch: * ? [..]) this deployment owns
    label: str = ""                      # the EST label owned devices enroll on; "" = [brski] label
    unknown_devices: str = ""            # "" = [brski] unknown_devices


@dataclass(frozen=True)
class BrskiConfig:
    registrar_cert: Path                 # signs registrar voucher requests; TLS client certificate to MASAs
    registrar_key: Path
    registrar_chain: Path | None = None  # the rest of its chain up to the domain CA, sent to the MASA
    label: str = ""
    unknown_devices: str = "reject"      # a device no ownership rule names: refuse (403) or hold (202)
    name_rule: str = "prefix"            # LDevID names against the device's serial number: exact|prefix|any
    masa_timeout: int = 30
    retry_after: int = 30
    enroll_window: int = 86400           # how long after its voucher an IDevID may enroll
    manufacturers: dict[str, Manufacturer] = field(default_factory=dict)

    def client_cas(self) -> tuple[Path, ...]:
        """The manufacturer CAs the EST listener must accept at the TLS handshake."""
        return tuple(p for m in self.manufacturers.values() for p in m.ca)


def parse_brski(table: Any, base: Path, labels: set[str]) -> BrskiConfig:
    if not isinstance(table, dict):
        raise ConfigError("brski", "expected a table")
    rest = dict(table)
    durations = {name: parse_duration(rest.pop(name), f"brski.{name}")
                 for name in ("masa_timeout", "retry_after", "enroll_window") if name in rest}
    makers = rest.pop("manufacturers", {})
    settings: BrskiConfig = section(BrskiConfig, {k: v for k, v in rest.items()}, "brski", base)
    if settings.unknown_devices not in UNKNOWN_DEVICES:
        raise ConfigError("brski.unknown_devices", 'must be "reject" or "hold"')
    if settings.name_rule not in NAME_RULES:
        raise ConfigError("brski.name_rule", "must be exact, prefix or any")
    if durations.get("retry_after", settings.retry_after) > MAX_RETRY_AFTER:
        raise ConfigError("brski.retry_after", "at most 60s: RFC 8995 §5.3 pledges wait no longer")
    if settings.label not in labels:
        raise ConfigError("brski.label", f"no EST label {settings.label!r}")
    if not isinstance(makers, dict) or not makers:
        raise ConfigError("brski.manufacturers", "name at least one manufacturer: [brski.manufacturers.NAME]")
    manufacturers = {}
    for name, raw in makers.items():
        key = f"brski.manufacturers.{name}"
        if not isinstance(raw, dict):
            raise ConfigError(key, "expected a table")
        if "ca" in raw and isinstance(raw["ca"], str):
            raw = {**raw, "ca": [raw["ca"]]}
        maker: Manufacturer = section(Manufacturer, {"name": name, **raw}, key, base)
        if not maker.ca:
            raise ConfigError(f"{key}.ca", "the CA certificates that issue this manufacturer's IDevIDs are required")
        if maker.unknown_devices not in ("", *UNKNOWN_DEVICES):
            raise ConfigError(f"{key}.unknown_devices", 'must be "reject" or "hold"')
        if maker.label and maker.label not in labels:
            raise ConfigError(f"{key}.label", f"no EST label {maker.label!r}")
        if maker.masa_url and not maker.masa_url.startswith("https://") and "://" in maker.masa_url:
            raise ConfigError(f"{key}.masa_url", "a MASA is reached over https")
        manufacturers[name] = maker
    values = {**durations, "manufacturers": manufacturers}
    return BrskiConfig(**{**settings.__dict__, **values})


def check_files(settings: BrskiConfig) -> None:
    """Load every file [brski] names, so a bad one is a configuration error naming its key, not a 500 later."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    from kipuka.pem import load_certificates, load_private_key

    def certs(key: str, path: Path) -> list:
        try:
            return load_certificates(path)
        except (OSError, ValueError) as exc:
            raise ConfigError(key, str(exc)) from None

    cert = certs("brski.registrar_cert", settings.registrar_cert)[0]
    try:
        key = load_private_key(settings.registrar_key)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError("brski.registrar_key", str(exc)) from None
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey)):
        raise ConfigError("brski.registrar_key", "an RSA, EC or Ed25519 key is needed to sign voucher requests")
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if key.public_key().public_bytes(*spki) != cert.public_key().public_bytes(*spki):
        raise ConfigError("brski.registrar_key", "is not the key of registrar_cert")
    if settings.registrar_chain is not None:
        certs("brski.registrar_chain", settings.registrar_chain)
    for maker in settings.manufacturers.values():
        for path in maker.ca:
            certs(f"brski.manufacturers.{maker.name}.ca", path)
        for name in ("masa_ca", "voucher_ca"):
            if getattr(maker, name) is not None:
                certs(f"brski.manufacturers.{maker.name}.{name}", getattr(maker, name))

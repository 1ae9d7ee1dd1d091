"""The agent's configuration file (TOML): where state goes, and one table per certificate.

    state_dir = "/var/lib/kipuka-est"
    prometheus_textfile = "/var/lib/prometheus/node-exporter/kipuka-est.prom"

    [defaults]                     # any certificate key; each [certificates.NAME] overrides
    server = "https://est.example.com:9443"
    fingerprint = "5e0a...9c"

    [certificates.mqtt]
    label = "iot-fleet"
    cert = "/etc/mosquitto/certs/device.crt"
    key = "/etc/mosquitto/certs/device.key"
    common_name = "device-001.example.com"
    user = "device-001"
    otp_file = "/etc/kipuka-est/device-001.otp"
    post_renew = ["systemctl", "reload", "mosquitto"]

Every key, with its default, is in docs/client.md. Relative paths are taken
from the file's directory. Errors name the key (`certificates.mqtt.renew_before`).
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import tomllib
from dataclasses import dataclass, fields
from typing import Any

from kipuka.client.agent.schedule import Threshold
from kipuka.client.csr import KEY_TYPES
from kipuka.client.errors import EstError
from kipuka.client.files import parse_duration

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class ConfigError(EstError):
    """A configuration file the agent cannot use; the reason names the key."""


@dataclass(frozen=True)
class CertificateConfig:
    name: str
    server: str
    cert: str
    key: str
    label: str | None = None
    trust: str | None = None              # PEM file of trust anchors, or "system"
    fingerprint: str | None = None        # bootstrap (RFC 7030 4.1.1) and pin
    chain: str | None = None
    fullchain: bool = False
    cert_mode: int = 0o644
    key_mode: int = 0o600
    owner: str | None = None
    group: str | None = None
    common_name: str | None = None
    sans: tuple[str, ...] = ()
    key_type: str | None = None           # None: as /csrattrs asks, else ec-p256; renewals keep the type
    renew_before: Threshold = Threshold(fraction=1 / 3)
    jitter: Threshold = Threshold(fraction=0.05)
    retry_initial: float = 60.0
    retry_max: float = 3600.0
    rotate_key: bool = True
    post_renew: tuple[str, ...] | str | None = None
    hook_timeout: float = 300.0
    user: str | None = None               # the bootstrap OTP's entity
    otp_file: str | None = None           # the bootstrap OTP: used once
    bootstrap_cert: str | None = None     # or a bootstrap certificate (an IDevID): used once
    bootstrap_key: str | None = None
    channel_binding: bool | str = False   # true, or "tls-unique"; on by itself when /csrattrs asks
    auth_after_challenge: bool = False
    timeout: float = 30.0

    @property
    def owner_ids(self) -> tuple[int, int] | None:
        if self.owner is None and self.group is None:
            return None
        return (_uid(self.owner) if self.owner is not None else -1,
                _gid(self.group) if self.group is not None else -1)


@dataclass(frozen=True)
class AgentConfig:
    path: str
    state_dir: str
    certificates: tuple[CertificateConfig, ...]
    status_file: str | None = None
    prometheus_textfile: str | None = None
    check_interval: float = 3600.0

    def certificate(self, name: str) -> CertificateConfig:
        for c in self.certificates:
            if c.name == name:
                return c
        raise ConfigError(f"{self.path}: no [certificates.{name}]")


_TOP = {"state_dir", "status_file", "prometheus_textfile", "check_interval", "defaults", "certificates"}
_CERT_KEYS = {f.name for f in fields(CertificateConfig)} - {"name"}
_PATHS = {"cert", "key", "chain", "trust", "otp_file", "bootstrap_cert", "bootstrap_key"}
_DURATIONS = {"retry_initial", "retry_max", "hook_timeout", "timeout"}
_BOOLS = {"fullchain", "rotate_key", "auth_after_challenge"}
_STRINGS = {"server", "label", "fingerprint", "owner", "group", "common_name", "key_type", "user"}


def load(path: str | os.PathLike) -> AgentConfig:
    path = os.path.abspath(os.fspath(path))
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read the agent configuration {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return parse(data, path)


def parse(data: dict[str, Any], path: str) -> AgentConfig:
    base = os.path.dirname(path)
    for key in data:
        if key not in _TOP:
            raise ConfigError(f"{path}: {key}: unknown key (known: {', '.join(sorted(_TOP))})")
    state_dir = _path(data.get("state_dir", "/var/lib/kipuka-est"), base, "state_dir", path)
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise ConfigError(f"{path}: defaults: expected a table")
    table = data.get("certificates", {})
    if not isinstance(table, dict) or not table:
        raise ConfigError(f"{path}: no certificate: add a [certificates.NAME] table")
    certs = []
    for name, entry in table.items():
        if not isinstance(entry, dict):
            raise ConfigError(f"{path}: certificates.{name}: expected a table")
        if not NAME.match(name):
            raise ConfigError(f"{path}: certificates.{name}: a name is letters, digits, '.', '_' and '-'")
        certs.append(_certificate(name, {**defaults, **entry}, base, path))
    seen: dict[str, str] = {}
    for c in certs:
        for p in (c.cert, c.key):
            if p in seen:
                raise ConfigError(f"{path}: certificates.{c.name}: {p} is also used by certificates.{seen[p]}")
            seen[p] = c.name
    try:
        interval = parse_duration(str(data.get("check_interval", "1h")))
    except ValueError as exc:
        raise ConfigError(f"{path}: check_interval: {exc}") from None
    return AgentConfig(path=path, state_dir=state_dir, certificates=tuple(certs),
                       status_file=_path(data["status_file"], base, "status_file", path)
                       if "status_file" in data else os.path.join(state_dir, "status.json"),
                       prometheus_textfile=_path(data["prometheus_textfile"], base, "prometheus_textfile", path)
                       if "prometheus_textfile" in data else None,
                       check_interval=max(1.0, interval))


def _certificate(name: str, entry: dict[str, Any], base: str, path: str) -> CertificateConfig:
    values: dict[str, Any] = {"name": name}
    where = f"{path}: certificates.{name}"
    for key, raw in entry.items():
        if key not in _CERT_KEYS:
            raise ConfigError(f"{where}.{key}: unknown key")
        values[key] = _value(key, raw, base, f"{where}.{key}")
    for required in ("server", "cert", "key"):
        if required not in values:
            raise ConfigError(f"{where}: {required} is required")
    if "trust" not in values and "fingerprint" not in values:
        raise ConfigError(f"{where}: give trust (a CA file, or \"system\") or fingerprint (the CA's SHA-256, "
                          f"to bootstrap trust from /cacerts)")
    if values.get("otp_file") and not values.get("user"):
        raise ConfigError(f"{where}: otp_file needs user (the OTP's entity id)")
    if bool(values.get("bootstrap_cert")) != bool(values.get("bootstrap_key")):
        raise ConfigError(f"{where}: bootstrap_cert and bootstrap_key go together")
    if not values.get("common_name") and not values.get("sans") and not values.get("user"):
        raise ConfigError(f"{where}: give common_name and/or sans (the names to enroll)")
    cfg = CertificateConfig(**values)
    if cfg.retry_max < cfg.retry_initial:
        raise ConfigError(f"{where}.retry_max: shorter than retry_initial")
    cfg.owner_ids  # unknown users and groups are configuration errors, found now
    return cfg


def _value(key: str, raw: Any, base: str, where: str) -> Any:
    if key in _PATHS:
        if key == "trust" and raw == "system":
            return raw
        return _path(raw, base, where, "")
    if key in _DURATIONS:
        try:
            return parse_duration(str(raw))
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    if key in ("renew_before", "jitter"):
        try:
            return Threshold.parse(raw, what=where)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    if key in _BOOLS:
        if not isinstance(raw, bool):
            raise ConfigError(f"{where}: expected true or false")
        return raw
    if key in ("cert_mode", "key_mode"):
        return _mode(raw, where)
    if key == "sans":
        if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
            raise ConfigError(f"{where}: expected a list of names (\"dns:host\", \"ip:10.0.0.1\")")
        return tuple(raw)
    if key == "post_renew":
        if isinstance(raw, str) and raw.strip():
            return raw
        if isinstance(raw, list) and raw and all(isinstance(x, str) for x in raw):
            return tuple(raw)
        raise ConfigError(f"{where}: a command: a list of arguments, or a string run by /bin/sh")
    if key == "channel_binding":
        if raw in (True, False, "tls-unique", "tls-exporter"):
            return raw
        raise ConfigError(f"{where}: true, false or \"tls-unique\"")
    if key == "key_type":
        if raw not in KEY_TYPES:
            raise ConfigError(f"{where}: one of {', '.join(KEY_TYPES)}")
        return raw
    if key in _STRINGS:
        if not isinstance(raw, str) or not raw:
            raise ConfigError(f"{where}: expected a string")
        return raw
    raise ConfigError(f"{where}: unknown key")  # a key of CertificateConfig without a parser: a bug here


def _path(raw: Any, base: str, where: str, path: str) -> str:
    if not isinstance(raw, str) or not raw:
        raise ConfigError(f"{path + ': ' if path else ''}{where}: expected a file path")
    return os.path.normpath(os.path.join(base, os.path.expanduser(raw)))


def _mode(raw: Any, where: str) -> int:
    if isinstance(raw, int) and not isinstance(raw, bool):
        mode = raw
    elif isinstance(raw, str) and re.fullmatch(r"0?[0-7]{3}", raw):
        mode = int(raw, 8)
    else:
        raise ConfigError(f"{where}: an octal mode such as \"0640\"")
    if not 0 <= mode <= 0o777:
        raise ConfigError(f"{where}: an octal mode such as \"0640\"")
    return mode


def _uid(name: str) -> int:
    if name.isdigit():
        return int(name)
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        raise ConfigError(f"owner: no user {name!r} on this system") from None


def _gid(name: str) -> int:
    if name.isdigit():
        return int(name)
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise ConfigError(f"group: no group {name!r} on this system") from None

"""Settings of an upstream-EST CA (`type = "est"`): the [ca.ID] table, validated.

Every problem is a ConfigError naming the offending key, found when the back
end is built (start-up, reload, `kipuka config check`), never during a request.
Secrets never sit in the file: the Basic password comes from an environment
variable or a file, and the RA's TLS key from a PEM file.
"""

from __future__ import annotations

import datetime as dt
import logging
import ssl
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from kipuka.ca.options import CaOptions
from kipuka.config import ID_KP_CMC_RA, LABEL_RE, CAConfig, ConfigError

log = logging.getLogger("kipuka.ca.upstream_est")

OPTION_KEYS = frozenset({"url", "label", "label_map", "ca_bundle", "ra_cert", "ra_key", "username", "password_env",
                         "password_file", "timeout", "retry_after", "chain", "connections", "revoke"})
EST_PATH = "/.well-known/est"


@dataclass(frozen=True)
class UpstreamSettings:
    ca_id: str
    host: str
    port: int
    label: str | None = None                 # the upstream label of every request ...
    label_map: dict[str, str | None] = field(default_factory=dict)  # ... unless the kipuka label is mapped here
    ca_bundle: Path | None = None            # anchors for the upstream's TLS certificate; None: system CAs
    ra_cert: Path | None = None
    ra_key: Path | None = None
    username: str | None = None
    password: str = field(default="", repr=False)
    timeout: float = 10.0
    retry_after: int = 10                    # when a 202 or 503 carries no Retry-After, or no answer comes
    chain: Path | None = None                # operator's copy of the upstream CA chain (a pin, and the fallback)
    connections: int = 32                    # keep-alive connections to the upstream per worker
    revoke: str | None = None                # "fullcmc": revocations go to the upstream's /fullcmc

    @property
    def origin(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"

    def upstream_label(self, kipuka_label: str) -> str | None:
        return self.label_map.get(kipuka_label, self.label) if self.label_map else self.label

    def upstream_labels(self) -> list[str | None]:
        """Every upstream label this CA may send to (each must present the same CA)."""
        seen: list[str | None] = [self.label]
        for value in self.label_map.values():
            if value not in seen:
                seen.append(value)
        return seen

    def path(self, op: str, label: str | None) -> str:
        return f"{EST_PATH}/{label}/{op}" if label else f"{EST_PATH}/{op}"

    def url(self, op: str, label: str | None) -> str:
        return self.origin + self.path(op, label)

    def describe(self) -> str:
        return f"EST server {self.origin}" + (f" label {self.label}" if self.label else "")


def settings_from_config(cfg: CAConfig) -> UpstreamSettings:
    """Validate the [ca.ID] table of an est CA; errors name the offending key."""
    o = CaOptions(cfg, "est", OPTION_KEYS, inline_secrets={"password": "password"})
    pre = o.prefix
    host, port = _origin(o.string("url"), o.key("url"))
    label = _label(o.opts.get("label"), o.key("label"))
    label_map_raw = o.opts.get("label_map", {})
    if not isinstance(label_map_raw, dict):
        raise ConfigError(o.key("label_map"), 'expected a table, e.g. label_map = { "iot-fleet" = "fleet" }')
    label_map = {str(k): _label(v, f"{pre}.label_map.{k}", allow_empty=True) for k, v in label_map_raw.items()}

    ra_cert, ra_key = o.path("ra_cert", must_exist=True), o.path("ra_key", must_exist=True)
    if (ra_cert is None) != (ra_key is None):
        raise ConfigError(o.key("ra_cert") if ra_cert is None else o.key("ra_key"), "ra_cert and ra_key go together")
    if ra_cert is not None:
        _check_ra_identity(ra_cert, ra_key, pre)  # type: ignore[arg-type]

    username = o.string("username")
    if username is not None and ":" in username:
        raise ConfigError(o.key("username"), "HTTP Basic user names cannot contain ':'")
    password = o.secret("password_env", "password_file", "password", required=username is not None)
    if username is None and password is not None:
        raise ConfigError(o.key("username"), "password_env and password_file need a username")
    if ra_cert is None and username is None:
        raise ConfigError(o.key("ra_cert"), "the RA must authenticate to the upstream: give ra_cert and ra_key "
                          "(a TLS client certificate, id-kp-cmcRA for a kipuka upstream) and/or username with "
                          "password_env or password_file")

    revoke = o.string("revoke")
    if revoke not in (None, "fullcmc"):
        raise ConfigError(o.key("revoke"), 'the only way to revoke at an EST upstream is "fullcmc"')
    if revoke is not None and ra_cert is None:
        raise ConfigError(o.key("revoke"), "revocation through /fullcmc is signed with ra_cert and ra_key: set them")
    settings = UpstreamSettings(
        ca_id=cfg.id, host=host, port=port, label=label, label_map=label_map,
        ca_bundle=o.path("ca_bundle", must_exist=True), ra_cert=ra_cert, ra_key=ra_key, username=username,
        password=password or "", timeout=o.seconds("timeout", "10s"),
        retry_after=o.integer("retry_after", 10, 1, 86400), chain=o.path("chain", must_exist=True),
        connections=o.integer("connections", 32, 1, 1024), revoke=revoke)
    tls_context(settings, pre)  # the anchors and the RA's certificate load now, or the error names them
    return settings


def _origin(url: str | None, key: str) -> tuple[str, int]:
    if url is None:
        raise ConfigError(key, 'required key is missing (the upstream EST server, e.g. "https://ca.example.com:9443")')
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "https":
        raise ConfigError(key, "EST runs over TLS: expected an https:// URL")
    if not parts.hostname:
        raise ConfigError(key, "the URL names no host")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ConfigError(key, "expected https://HOST[:PORT] with no query, fragment or credentials "
                          "(credentials go in username and password_env or password_file)")
    if parts.path.rstrip("/") not in ("", EST_PATH):
        raise ConfigError(key, "expected https://HOST[:PORT]; put the upstream's EST label in `label`")
    try:
        port = parts.port or 443
    except ValueError:
        raise ConfigError(key, "the port is not a number from 1 to 65535") from None
    return parts.hostname, port


def _label(value: Any, key: str, allow_empty: bool = False) -> str | None:
    if value is None or (allow_empty and value == ""):
        return None
    if not isinstance(value, str) or not LABEL_RE.match(value):
        raise ConfigError(key, "expected an EST label: letters, digits, '.', '_' and '-' (at most 64)"
                          + ('; "" for the unlabeled path' if allow_empty else ""))
    return value


def _check_ra_identity(cert_path: Path, key_path: Path, pre: str) -> None:
    """The RA's certificate and key must load and match; a missing id-kp-cmcRA is worth a warning."""
    try:
        certs = x509.load_pem_x509_certificates(cert_path.read_bytes())
    except ValueError as exc:
        raise ConfigError(f"{pre}.ra_cert", f"not a PEM certificate: {exc}") from None
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except TypeError:
        raise ConfigError(f"{pre}.ra_key", "the key is encrypted: store it unencrypted with mode 0600") from None
    except ValueError as exc:
        raise ConfigError(f"{pre}.ra_key", f"not a PEM private key: {exc}") from None
    if key.public_key() != certs[0].public_key():  # type: ignore[union-attr]
        raise ConfigError(f"{pre}.ra_key", f"the key does not match certificate {cert_path}")
    now = dt.datetime.now(dt.timezone.utc)
    if certs[0].not_valid_after_utc < now:
        raise ConfigError(f"{pre}.ra_cert", f"the RA certificate expired on {certs[0].not_valid_after_utc:%Y-%m-%d}")
    try:
        ekus = certs[0].extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        has_ra = any(u.dotted_string == ID_KP_CMC_RA for u in ekus)
    except x509.ExtensionNotFound:
        has_ra = False
    if not has_ra:
        log.warning("%s.ra_cert: %s carries no id-kp-cmcRA (1.3.6.1.5.5.7.3.28); a kipuka upstream accepts "
                    "an RA only with it (RFC 7030 3.7)", pre, cert_path)


def tls_context(s: UpstreamSettings, pre: str | None = None) -> ssl.SSLContext:
    """The client TLS context for the upstream: its anchors, and the RA's certificate as client certificate."""
    pre = pre or f"ca.{s.ca_id}"
    if s.ca_bundle is None:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)  # the system's CAs
    else:
        try:  # only these anchors, not the system's as well
            ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(s.ca_bundle))
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(f"{pre}.ca_bundle", f"cannot load the trust anchors: {exc}") from None
        # The anchor may be an intermediate (the upstream's issuing CA alone, RFC 7030 3.6.1).
        ctx.verify_flags |= getattr(ssl, "VERIFY_X509_PARTIAL_CHAIN", 0x80000)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if s.ra_cert is not None and s.ra_key is not None:
        try:
            ctx.load_cert_chain(str(s.ra_cert), str(s.ra_key))
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(f"{pre}.ra_cert", f"cannot load the RA certificate and key: {exc}") from None
    return ctx

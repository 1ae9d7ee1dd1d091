"""The kipuka configuration file (TOML): schema, defaults and validation.

Every key has a default (see docs/configuration.md); a bad key is reported with
its dotted name and the line it sits on, so `kipuka config check` can point at it.
Paths are resolved relative to the directory that holds the configuration file.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

# The parsing helpers and the label policy live in their own modules; callers keep importing
# them from kipuka.config.
from kipuka.config.parse import ConfigError, locate_key, parse_duration, section  # noqa: F401
from kipuka.config.policy import (DELIVERIES, EKU_NAMES, ID_KP_CMC_RA, KEY_TYPES, NAME_RULES,  # noqa: F401
                                  RDN_TYPES, SAN_TYPES, SERVERKEYGEN_KEY_TYPES, Label, Policy, parse_policy,
                                  rdn_type_oid)

OPERATIONS = frozenset({"cacerts", "simpleenroll", "simplereenroll", "serverkeygen", "fullcmc", "csrattrs"})
CA_TYPES = ("local", "pkcs11", "dogtag", "est")  # each built by kipuka.ca.registry
POOL_KEYS = frozenset({"replicas", "strategy", "health_interval", "retry_after"})  # any CA type (kipuka.ca.pool)
LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
ANY_LABEL = "any"  # an OTP valid on every label (`kipuka otp create --label any`): no label may be named so


@dataclass(frozen=True)
class CAConfig:
    """One signing back end. `local` uses cert/key/chain; other types read their own
    keys from `options` (the raw TOML table) and validate them when they are built."""

    id: str
    type: str
    cert: Path | None = None
    key: Path | None = None
    chain: Path | None = None
    ocsp_cert: Path | None = None
    ocsp_key: Path | None = None
    options: dict[str, Any] = field(default_factory=dict)
    base: Path = Path(".")  # the config file's directory, for paths inside options


@dataclass(frozen=True)
class ServerConfig:
    listen: str = "0.0.0.0:9443"
    workers: int = 1
    max_body: int = 65536
    shutdown_timeout: int = 30
    log_format: str = "json"
    access_log: bool = True
    proxy_protocol: bool = False  # EST connections start with a PROXY v2 header (TLS-passthrough balancer)
    proxy_from: tuple[str, ...] = ()  # networks allowed to send it; empty: any
    # Hostile clients (kipuka.server.limits): slow headers or bodies, oversized headers, connection hogs
    header_timeout: int = 10  # a request's headers (and the TLS handshake) must arrive within this
    body_timeout: int = 30  # a request's body must arrive within this once its headers have
    max_header_size: int = 8190  # bytes of the request line and of each header line; more gets 431
    max_headers: int = 100  # header lines per request; more gets 431
    max_connections_per_client: int = 100  # concurrent connections per client address; 0: no cap


@dataclass(frozen=True)
class RateLimitConfig:
    """Per-client token bucket for unauthenticated and failing EST requests (kipuka.server.ratelimit)."""

    enabled: bool = True
    rate: int = 20  # tokens added per second
    burst: int = 200  # bucket size: how many such requests a quiet client may send at once
    exempt: tuple[str, ...] = ()  # networks never limited (monitoring, a trusted balancer's health checks)


@dataclass(frozen=True)
class TLSConfig:
    cert: Path
    key: Path
    client_ca: Path | None = None
    min_version: str = "1.2"
    # "stdlib": Python's ssl (the system OpenSSL); "pyopenssl": pyOpenSSL on the OpenSSL that
    # pyca/cryptography bundles, which verifies ML-DSA client chains and signatures (docs/pq.md)
    backend: str = "stdlib"


@dataclass(frozen=True)
class DatabaseConfig:
    url: str
    migrate_on_start: bool = True


@dataclass(frozen=True)
class OTPConfig:
    key_file: Path
    default_ttl: int = 86400
    max_failures: int = 5
    lockout: int = 900
    recovery_window: int = 300


@dataclass(frozen=True)
class ESTConfig:
    default_ca: str = "default"
    serverkeygen: bool = False
    fullcmc: bool = False
    retry_after: int = 60
    pending_ttl: int = 7 * 86400
    kek_file: Path | None = None  # pre-shared symmetric keys for serverkeygen (DecryptKeyIdentifier)
    keygen_pool: int = 0  # pre-generated server keys kept per key type (never persisted)
    cmc_signer_cert: Path | None = None  # signs Full PKI Responses; default: the label's CA
    cmc_signer_key: Path | None = None


@dataclass(frozen=True)
class AdminConfig:
    listen: str = "127.0.0.1:9444"
    cert: Path | None = None
    key: Path | None = None
    client_ca: Path | None = None
    subjects: tuple[str, ...] = ()


@dataclass(frozen=True)
class RevocationConfig:
    listen: str = "0.0.0.0:9080"
    base_url: str = ""
    crl_validity: int = 86400
    crl_refresh: int = 3600


@dataclass(frozen=True)
class AuditConfig:
    jsonl: Path | None = None
    syslog: bool = False


@dataclass(frozen=True)
class Config:
    path: Path
    server: ServerConfig
    tls: TLSConfig
    database: DatabaseConfig
    otp: OTPConfig
    est: ESTConfig
    cas: dict[str, CAConfig]
    labels: dict[str, Label] = field(default_factory=dict)
    admin: AdminConfig = AdminConfig()
    revocation: RevocationConfig = RevocationConfig()
    audit: AuditConfig = AuditConfig()
    ratelimit: RateLimitConfig = RateLimitConfig()
    brski: Any = None  # kipuka.brski.settings.BrskiConfig when [brski] is present (BRSKI registrar, RFC 8995)

    def label(self, name: str) -> Label | None:
        return self.labels.get(name)


@dataclass(frozen=True)
class ListenOverrides:
    """`kipuka serve --listen / --admin-listen / --revocation-listen`: addresses that replace
    [server] listen, [admin] listen and [revocation] listen (None keeps the file's; "" turns the
    admin or revocation listener off, as in the file). Applied again after every reload."""

    listen: str | None = None
    admin: str | None = None
    revocation: str | None = None

    def check(self) -> None:
        for key, value, may_be_off in (("--listen", self.listen, False), ("--admin-listen", self.admin, True),
                                       ("--revocation-listen", self.revocation, True)):
            if value is None or (may_be_off and value == ""):
                continue
            if not re.match(r"^.+:\d+$", value):
                raise ConfigError(key, "expected HOST:PORT" + (' (or "" to disable)' if may_be_off else ""))

    def apply(self, config: "Config") -> "Config":
        self.check()
        return replace(
            config,
            server=config.server if self.listen is None else replace(config.server, listen=self.listen),
            admin=config.admin if self.admin is None else replace(config.admin, listen=self.admin),
            revocation=(config.revocation if self.revocation is None
                        else replace(config.revocation, listen=self.revocation)))


# --- loading -----------------------------------------------------------------

def load_config(path: str | Path) -> Config:
    path = Path(path).resolve()
    text = path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+)", str(exc))
        raise ConfigError("<file>", f"not valid TOML: {exc}", int(m.group(1)) if m else None) from None
    try:
        return _build(path, data)
    except ConfigError as exc:
        if exc.line is None:
            exc = ConfigError(exc.key, exc.message, locate_key(text, exc.key))
        raise exc from None


def _check_tls_backend(tls: TLSConfig, server: ServerConfig) -> None:
    if tls.backend not in ("stdlib", "pyopenssl"):
        raise ConfigError("tls.backend", 'must be "stdlib" or "pyopenssl"')
    if tls.backend == "pyopenssl":
        try:
            import OpenSSL  # noqa: F401
        except ImportError:
            raise ConfigError("tls.backend", "pyopenssl needs the pyOpenSSL package "
                              "(pip install 'kipuka[pq]')") from None
        if server.proxy_protocol:
            raise ConfigError("tls.backend", "pyopenssl does not serve behind the PROXY protocol "
                              "(server.proxy_protocol); use the stdlib backend there")


def _build(path: Path, data: dict[str, Any]) -> Config:
    base = path.parent
    known_top = {"server", "tls", "database", "otp", "est", "ca", "policy", "labels", "admin", "revocation", "audit",
                 "ratelimit", "brski"}
    for key in data:
        if key not in known_top:
            raise ConfigError(key, "unknown section")
    server = section(ServerConfig, data.get("server", {}), "server", base)
    if not re.match(r"^.+:\d+$", server.listen):
        raise ConfigError("server.listen", "expected HOST:PORT")
    if server.workers < 0:
        raise ConfigError("server.workers", "must be 0 (one per core) or more")
    if server.max_body < 1024:
        raise ConfigError("server.max_body", "must be at least 1024 bytes")
    _check_networks(server.proxy_from, "server.proxy_from")
    if server.log_format not in ("json", "text"):
        raise ConfigError("server.log_format", 'must be "json" or "text"')
    _check_limits(server)
    ratelimit = section(RateLimitConfig, data.get("ratelimit", {}), "ratelimit", base)
    _check_ratelimit(ratelimit)
    tls = section(TLSConfig, _required(data, "tls"), "tls", base)
    if tls.min_version not in ("1.2", "1.3"):
        raise ConfigError("tls.min_version", 'must be "1.2" or "1.3"')
    _check_tls_backend(tls, server)
    database = section(DatabaseConfig, data.get("database", {"url": "sqlite:///kipuka.db"}), "database", base)
    database = replace(database, url=_resolve_db_url(_substitute_env(database.url, "database.url"), base))
    otp = section(OTPConfig, _required(data, "otp"), "otp", base)
    est = section(ESTConfig, data.get("est", {}), "est", base)
    admin = section(AdminConfig, data.get("admin", {}), "admin", base)
    revocation = section(RevocationConfig, data.get("revocation", {}), "revocation", base)
    audit = section(AuditConfig, data.get("audit", {}), "audit", base)
    for key, listen in (("admin.listen", admin.listen), ("revocation.listen", revocation.listen)):
        if listen and not re.match(r"^.+:\d+$", listen):
            raise ConfigError(key, 'expected HOST:PORT (or "" to disable)')
    if revocation.base_url and not re.match(r"^https?://[^\s/]+", revocation.base_url):
        raise ConfigError("revocation.base_url", "expected an http:// URL")
    cas: dict[str, CAConfig] = {}
    for ca_id, table in _required(data, "ca").items():
        if not isinstance(table, dict):
            raise ConfigError(f"ca.{ca_id}", "expected a table")
        ca_type = table.get("type")
        if ca_type not in CA_TYPES:
            raise ConfigError(f"ca.{ca_id}.type", f"unknown CA type {ca_type!r}; known: {', '.join(CA_TYPES)}")
        if ca_type == "local":
            # Replica-pool keys (kipuka.ca.pool) are checked when the pool is built.
            pool = {k: v for k, v in table.items() if k in POOL_KEYS}
            ca = section(CAConfig, {"id": ca_id, **{k: v for k, v in table.items() if k not in POOL_KEYS}},
                          f"ca.{ca_id}", base)
            if ca.cert is None or ca.key is None:
                raise ConfigError(f"ca.{ca_id}.cert" if ca.cert is None else f"ca.{ca_id}.key",
                                  "required key is missing")
            ca = replace(ca, base=base, options=pool)
        else:
            ca = CAConfig(id=ca_id, type=ca_type, options={k: v for k, v in table.items() if k != "type"}, base=base)
        if (ca.ocsp_cert is None) != (ca.ocsp_key is None):
            raise ConfigError(f"ca.{ca_id}.ocsp_cert", "ocsp_cert and ocsp_key go together")
        cas[ca_id] = ca
    if (est.cmc_signer_cert is None) != (est.cmc_signer_key is None):
        raise ConfigError("est.cmc_signer_cert", "cmc_signer_cert and cmc_signer_key go together")
    if est.default_ca not in cas:
        raise ConfigError("est.default_ca", f"no [ca.{est.default_ca}] table")

    default_policy = parse_policy(data.get("policy", {}), "policy", base, Policy())
    labels = {"": Label("", est.default_ca, default_policy)}
    for name, table in data.get("labels", {}).items():
        key = f"labels.{name}"
        if not isinstance(table, dict):
            raise ConfigError(key, "expected a table")
        if name in OPERATIONS:
            raise ConfigError(key, f"a label may not be named like the EST operation {name!r}")
        if not LABEL_RE.match(name):
            raise ConfigError(key, "label names are letters, digits, '.', '_' and '-' (at most 64)")
        if name == ANY_LABEL:
            raise ConfigError(key, f"{ANY_LABEL!r} is reserved: an OTP made with --label any is valid on every label")
        ca_id = table.get("ca", est.default_ca)
        if ca_id not in cas:
            raise ConfigError(f"{key}.ca", f"no [ca.{ca_id}] table")
        rest = {k: v for k, v in table.items() if k != "ca"}
        labels[name] = Label(name, ca_id, parse_policy(rest, key, base, default_policy))
    for name, label in labels.items():
        for other in label.policy.mtls_enroll_cas:
            if other not in cas:
                raise ConfigError(f"labels.{name}.mtls_enroll_cas" if name else "policy.mtls_enroll_cas",
                                  f"no [ca.{other}] table")
    _check_admin(admin)
    brski = None
    if "brski" in data:
        from kipuka.brski.settings import parse_brski  # it builds on this module's helpers
        brski = parse_brski(data["brski"], base, set(labels))
    return Config(path, server, tls, database, otp, est, cas, labels, admin, revocation, audit, ratelimit=ratelimit,
                  brski=brski)


ANY_SUBJECT = "*"  # [admin] subjects = ["*"]: any certificate of client_ca (a CA that issues only admins)


def _check_admin(admin: AdminConfig) -> None:
    """An admin client certificate must name an explicit subject: with `client_ca` set, an empty
    `subjects` would let every certificate chaining to it administer the server."""
    if admin.client_ca is not None and not admin.subjects:
        raise ConfigError("admin.subjects", "client_ca is set but subjects is empty, which would let every "
                          "certificate chaining to client_ca (an enrolled device's too) administer the server: list "
                          'the admin subjects (e.g. ["CN=ops.example.com"]), or ["*"] when client_ca is a CA that '
                          "issues admin certificates and nothing else")
    if ANY_SUBJECT in admin.subjects and len(admin.subjects) > 1:
        raise ConfigError("admin.subjects", '"*" stands alone (any certificate of client_ca)')
    if ANY_SUBJECT in admin.subjects and admin.client_ca is None:
        raise ConfigError("admin.subjects", '"*" needs client_ca (a CA that issues admin certificates only)')


def _check_limits(server: ServerConfig) -> None:
    if not 1 <= server.header_timeout <= 300:
        raise ConfigError("server.header_timeout", "must be between 1s and 300s")
    if not 1 <= server.body_timeout <= 3600:
        raise ConfigError("server.body_timeout", "must be between 1s and 3600s")
    if not 1024 <= server.max_header_size <= 65536:
        raise ConfigError("server.max_header_size", "must be between 1024 and 65536 bytes")
    if not 16 <= server.max_headers <= 1000:
        raise ConfigError("server.max_headers", "must be between 16 and 1000")
    if server.max_connections_per_client < 0:
        raise ConfigError("server.max_connections_per_client", "must be 0 (no cap) or more")


def _check_ratelimit(ratelimit: RateLimitConfig) -> None:
    if ratelimit.rate < 1:
        raise ConfigError("ratelimit.rate", "must be at least 1 request per second")
    if ratelimit.burst < 1:
        raise ConfigError("ratelimit.burst", "must be at least 1")
    _check_networks(ratelimit.exempt, "ratelimit.exempt")


def _check_networks(networks: tuple[str, ...], key: str) -> None:
    for net in networks:
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            raise ConfigError(key, f"{net!r} is not a network such as 10.0.0.0/8") from None


def _required(data: dict[str, Any], name: str) -> dict[str, Any]:
    if name not in data or not isinstance(data[name], dict):
        raise ConfigError(name, "required section is missing")
    return data[name]


_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _substitute_env(value: str, key: str) -> str:
    """${NAME} from the environment, so credentials stay out of the file."""
    def repl(m: re.Match[str]) -> str:
        if m.group(1) not in os.environ:
            raise ConfigError(key, f"environment variable {m.group(1)} is not set")
        return os.environ[m.group(1)]
    return _ENV_RE.sub(repl, value)


def _resolve_db_url(url: str, base: Path) -> str:
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        rel = url[len("sqlite:///"):]
        if rel and rel != ":memory:":
            return "sqlite:///" + str((base / rel).resolve())
    return url

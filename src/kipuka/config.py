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
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

OPERATIONS = frozenset({"cacerts", "simpleenroll", "simplereenroll", "serverkeygen", "fullcmc", "csrattrs"})
KEY_TYPES = frozenset({"ec-p256", "ec-p384", "ec-p521", "rsa", "ed25519", "ml-dsa-44", "ml-dsa-65", "ml-dsa-87"})
EKU_NAMES = frozenset({"clientAuth", "serverAuth", "codeSigning", "emailProtection", "timeStamping", "OCSPSigning"})
SAN_TYPES = frozenset({"dns", "ip", "email", "uri"})
NAME_RULES = frozenset({"exact", "prefix", "any"})
CA_TYPES = ("local", "pkcs11", "dogtag", "est")  # each built by kipuka.ca.registry
POOL_KEYS = frozenset({"replicas", "strategy", "health_interval", "retry_after"})  # any CA type (kipuka.ca.pool)
SERVERKEYGEN_KEY_TYPES = ("ec-p256", "ec-p384", "rsa2048", "rsa3072", "rsa4096", "ml-dsa-44", "ml-dsa-65",
                          "ml-dsa-87")
DELIVERIES = ("csr-key", "asymmetric", "symmetric", "pkcs8")
ID_KP_CMC_RA = "1.3.6.1.5.5.7.3.28"  # RFC 6402: an RA agent may act for others in Full CMC
LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
ANY_LABEL = "any"  # an OTP valid on every label (`kipuka otp create --label any`): no label may be named so


class ConfigError(Exception):
    """A configuration problem, with the offending key and (when known) its line."""

    def __init__(self, key: str, message: str, line: int | None = None) -> None:
        self.key, self.message, self.line = key, message, line
        where = f" (line {line})" if line else ""
        super().__init__(f"{key}{where}: {message}")


_DURATION_RE = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: str | int, key: str = "duration") -> int:
    """Seconds from "90s", "15m", "24h", "30d" or a bare number of seconds."""
    if isinstance(value, bool):
        raise ConfigError(key, "expected a duration such as 15m, 24h or 30d")
    if isinstance(value, int):
        seconds = value
    else:
        m = _DURATION_RE.match(str(value))
        if not m:
            raise ConfigError(key, f"expected a duration such as 15m, 24h or 30d, got {value!r}")
        seconds = int(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    if seconds <= 0:
        raise ConfigError(key, "duration must be positive")
    return seconds


@dataclass(frozen=True)
class Policy:
    """What one EST label lets a requester obtain. Defaults apply to every key."""

    key_types: tuple[str, ...] = ("ec-p256", "ec-p384", "rsa")
    rsa_min_bits: int = 2048
    validity_days: int = 365
    validity: int = 0  # seconds ("10m", "12h"); when set, replaces validity_days (short-lived certificates)
    ekus: tuple[str, ...] = ("clientAuth",)
    otp_name_rule: str = "prefix"  # the entity id, then a boundary: "." (CN, DNS, URI host), "@" (email) or the end
    # Domains every name must lie under (DNS SANs, email domains, URI hosts, a dotted CN); () allows none,
    # ("*",) any. `kipuka init` writes the demo's domain.
    dns_suffixes: tuple[str, ...] = ()
    max_sans: int = 10  # subject alternative names per certificate
    # Subject attribute types a requester may fill in (those subject_rdns names are allowed too); any
    # other is refused (403) or, with subject_unlisted = "drop", left out of the certificate
    subject_attributes: tuple[str, ...] = ("CN",)
    subject_unlisted: str = "refuse"
    subject_fixed: tuple[str, ...] = ()  # "O=Example Corp": attributes the CA puts in every certificate itself
    # Other [ca.ID]s whose certificate holders may /simpleenroll here over mTLS (the label's own CA always may)
    mtls_enroll_cas: tuple[str, ...] = ()
    san_types: tuple[str, ...] = ("dns", "ip", "email", "uri")
    require_common_name: bool = True
    allow_subject_change: bool = False
    bootstrap_anchors: tuple[Path, ...] = ()
    ra_anchors: tuple[Path, ...] = ()
    csrattrs: bool = True
    require_approval: bool = False
    reenroll_requires_approval: bool = False
    require_linking: bool = False  # CSRs must carry the TLS channel binding in challengePassword
    # RFC 9908: the subject RDNs a CSR must carry ("OU" or, value fixed, "O=Example Corp"),
    # whether it must carry a subjectAltName, and whether /csrattrs advertises them as a template
    subject_rdns: tuple[str, ...] = ()
    require_san: bool = False
    csr_template: bool = False
    # /serverkeygen (RFC 7030 4.4); on when this or [est] serverkeygen is true
    serverkeygen: bool = False
    serverkeygen_key_types: tuple[str, ...] = ("ec-p256",)  # the first is the default
    # RFC 7030 4.4.2: application/pkcs8 unless the CSR names a key; "csr-key" is kipuka's opt-in
    serverkeygen_deliveries: tuple[str, ...] = ("pkcs8", "asymmetric", "symmetric")
    escrow: bool = False
    escrow_cert: Path | None = None
    # /fullcmc (RFC 5272); on when this or [est] fullcmc is true
    fullcmc: bool = False


@dataclass(frozen=True)
class Label:
    name: str  # "" for the unlabeled path
    ca: str
    policy: Policy


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
    server = _section(ServerConfig, data.get("server", {}), "server", base)
    if not re.match(r"^.+:\d+$", server.listen):
        raise ConfigError("server.listen", "expected HOST:PORT")
    if server.workers < 0:
        raise ConfigError("server.workers", "must be 0 (one per core) or more")
    if server.max_body < 1024:
        raise ConfigError("server.max_body", "must be at least 1024 bytes")
    for net in server.proxy_from:
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            raise ConfigError("server.proxy_from", f"{net!r} is not a network such as 10.0.0.0/8") from None
    if server.log_format not in ("json", "text"):
        raise ConfigError("server.log_format", 'must be "json" or "text"')
    _check_limits(server)
    ratelimit = _section(RateLimitConfig, data.get("ratelimit", {}), "ratelimit", base)
    _check_ratelimit(ratelimit)
    tls = _section(TLSConfig, _required(data, "tls"), "tls", base)
    if tls.min_version not in ("1.2", "1.3"):
        raise ConfigError("tls.min_version", 'must be "1.2" or "1.3"')
    _check_tls_backend(tls, server)
    database = _section(DatabaseConfig, data.get("database", {"url": "sqlite:///kipuka.db"}), "database", base)
    database = replace(database, url=_resolve_db_url(_substitute_env(database.url, "database.url"), base))
    otp = _section(OTPConfig, _required(data, "otp"), "otp", base)
    est = _section(ESTConfig, data.get("est", {}), "est", base)
    admin = _section(AdminConfig, data.get("admin", {}), "admin", base)
    revocation = _section(RevocationConfig, data.get("revocation", {}), "revocation", base)
    audit = _section(AuditConfig, data.get("audit", {}), "audit", base)
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
            ca = _section(CAConfig, {"id": ca_id, **{k: v for k, v in table.items() if k not in POOL_KEYS}},
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

    default_policy = _policy(data.get("policy", {}), "policy", base, Policy())
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
        labels[name] = Label(name, ca_id, _policy(rest, key, base, default_policy))
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
    for net in ratelimit.exempt:
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            raise ConfigError("ratelimit.exempt", f"{net!r} is not a network such as 10.0.0.0/8") from None


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


def _policy(table: dict[str, Any], key: str, base: Path, parent: Policy) -> Policy:
    policy = _section(Policy, table, key, base, defaults=parent)
    for kt in policy.key_types:
        if kt not in KEY_TYPES:
            raise ConfigError(f"{key}.key_types", f"unknown key type {kt!r}; known: {', '.join(sorted(KEY_TYPES))}")
    for eku in policy.ekus:
        if eku not in EKU_NAMES and not re.match(r"^\d+(\.\d+)+$", eku):
            raise ConfigError(f"{key}.ekus", f"unknown extended key usage {eku!r}")
        if eku == ID_KP_CMC_RA:
            raise ConfigError(f"{key}.ekus", "id-kp-cmcRA (1.3.6.1.5.5.7.3.28) marks RA agents, whose "
                              "certificates come from ra_anchors: it is never put into a certificate kipuka issues")
    for st in policy.san_types:
        if st not in SAN_TYPES:
            raise ConfigError(f"{key}.san_types", f"unknown SAN type {st!r}")
    for kt in policy.serverkeygen_key_types:
        if kt not in SERVERKEYGEN_KEY_TYPES:
            raise ConfigError(f"{key}.serverkeygen_key_types", f"unknown key type {kt!r}; known: "
                              f"{', '.join(SERVERKEYGEN_KEY_TYPES)}")
    for d in policy.serverkeygen_deliveries:
        if d not in DELIVERIES:
            raise ConfigError(f"{key}.serverkeygen_deliveries", f"unknown delivery {d!r}; known: {', '.join(DELIVERIES)}")
    if policy.escrow and policy.escrow_cert is None:
        raise ConfigError(f"{key}.escrow_cert", "escrow = true needs an escrow (key recovery) certificate")
    for suffix in policy.dns_suffixes:
        if suffix != "*" and not re.match(r"^\.?[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?$", suffix):
            raise ConfigError(f"{key}.dns_suffixes", f"{suffix!r} is not a domain such as example.com "
                              '(or "*" for any domain)')
    if "*" in policy.dns_suffixes and len(policy.dns_suffixes) > 1:
        raise ConfigError(f"{key}.dns_suffixes", '"*" (any domain) stands alone')
    if not 0 <= policy.max_sans <= 1000:
        raise ConfigError(f"{key}.max_sans", "must be between 0 and 1000")
    for name in policy.subject_attributes:
        if rdn_type_oid(name) is None:
            raise ConfigError(f"{key}.subject_attributes", f"unknown subject attribute type {name!r}; use one of "
                              f"{', '.join(RDN_TYPES)} or a dotted OID")
    _check_subject_rdns(policy.subject_fixed, f"{key}.subject_fixed")
    for entry in policy.subject_fixed:
        if "=" not in entry:
            raise ConfigError(f"{key}.subject_fixed", f"{entry!r} has no value: write TYPE=VALUE (the CA sets it)")
    if policy.subject_unlisted not in ("refuse", "drop"):
        raise ConfigError(f"{key}.subject_unlisted", 'must be "refuse" or "drop"')
    if policy.otp_name_rule not in NAME_RULES:
        raise ConfigError(f"{key}.otp_name_rule", "must be exact, prefix or any")
    _check_subject_rdns(policy.subject_rdns, f"{key}.subject_rdns")
    if policy.csr_template and policy.require_linking:
        raise ConfigError(f"{key}.csr_template", "a label with require_linking cannot advertise an RFC 9908 "
                          "template: the template cannot ask for challengePassword, and RFC 9908 §4 tells clients "
                          "that read it to ignore the rest of /csrattrs (set csr_template = false here)")
    if policy.rsa_min_bits < 2048:
        raise ConfigError(f"{key}.rsa_min_bits", "must be at least 2048")
    if not 1 <= policy.validity_days <= 3650:
        raise ConfigError(f"{key}.validity_days", "must be between 1 and 3650")
    if policy.validity and not 60 <= policy.validity <= 3650 * 86400:
        raise ConfigError(f"{key}.validity", "must be between 1m and 3650d")
    return policy


# Subject attribute types `subject_rdns` may name (RFC 4519 / RFC 5280 short names) and their OIDs;
# any other type is given as a dotted OID.
RDN_TYPES = {
    "CN": "2.5.4.3", "SN": "2.5.4.4", "serialNumber": "2.5.4.5", "C": "2.5.4.6", "L": "2.5.4.7",
    "ST": "2.5.4.8", "STREET": "2.5.4.9", "O": "2.5.4.10", "OU": "2.5.4.11", "title": "2.5.4.12",
    "GN": "2.5.4.42", "dnQualifier": "2.5.4.46", "pseudonym": "2.5.4.65",
    "DC": "0.9.2342.19200300.100.1.25", "UID": "0.9.2342.19200300.100.1.1",
    "emailAddress": "1.2.840.113549.1.9.1",
}
_PRINTABLE_RDNS = {"2.5.4.6", "2.5.4.5", "2.5.4.46"}  # PrintableString (RFC 5280 appendix A)
_IA5_RDNS = {"0.9.2342.19200300.100.1.25", "1.2.840.113549.1.9.1"}
_PRINTABLE_RE = re.compile(r"^[A-Za-z0-9 '()+,\-./:=?]+$")


def rdn_type_oid(name: str) -> str | None:
    """The dotted OID of a `subject_rdns` type name (case-insensitive short name or dotted OID)."""
    if re.match(r"^\d+(\.\d+)+$", name):
        return name
    for short, dotted in RDN_TYPES.items():
        if short.lower() == name.lower():
            return dotted
    return None


def _check_subject_rdns(entries: tuple[str, ...], key: str) -> None:
    for entry in entries:
        name, sep, value = entry.partition("=")
        dotted = rdn_type_oid(name.strip())
        if dotted is None:
            raise ConfigError(key, f"unknown subject attribute type {name.strip()!r} in {entry!r}; use one of "
                              f"{', '.join(RDN_TYPES)} or a dotted OID")
        if sep and not value:
            raise ConfigError(key, f"{entry!r} has an empty value (write just {name.strip()!r} to let the "
                              "requester fill it in)")
        if sep and dotted == "2.5.4.6" and len(value) != 2:
            raise ConfigError(key, f"a country (C) is two letters, not {value!r}")
        if sep and dotted in _PRINTABLE_RDNS and not _PRINTABLE_RE.match(value):
            raise ConfigError(key, f"{entry!r}: this type is a PrintableString "
                              "(letters, digits, space and '()+,-./:=?)")
        if sep and dotted in _IA5_RDNS and not value.isascii():
            raise ConfigError(key, f"{entry!r}: this type is ASCII only")


_DURATION_FIELDS = {"default_ttl", "lockout", "recovery_window", "shutdown_timeout", "retry_after", "pending_ttl",
                    "crl_validity", "crl_refresh", "header_timeout", "body_timeout", "validity"}


def _section(cls: type, table: dict[str, Any], key: str, base: Path, defaults: Any = None) -> Any:
    """Build a dataclass from a TOML table, checking names and types."""
    if not isinstance(table, dict):
        raise ConfigError(key, "expected a table")
    spec = {f.name: f for f in fields(cls)}
    values: dict[str, Any] = {}
    for name, raw in table.items():
        if name not in spec:
            raise ConfigError(f"{key}.{name}", "unknown key")
        values[name] = _coerce(spec[name].type, raw, f"{key}.{name}" if name != "id" else key, base, name)
    for name, f in spec.items():
        if name not in values and f.default is MISSING and f.default_factory is MISSING and defaults is None:
            raise ConfigError(f"{key}.{name}", "required key is missing")
    if defaults is not None:
        return replace(defaults, **values)
    return cls(**values)


def _coerce(type_name: Any, raw: Any, key: str, base: Path, name: str) -> Any:
    t = str(type_name)
    if name in _DURATION_FIELDS:
        return parse_duration(raw, key)
    if t == "bool":
        if not isinstance(raw, bool):
            raise ConfigError(key, "expected true or false")
        return raw
    if t == "int":
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise ConfigError(key, "expected an integer")
        return raw
    if t == "str":
        if not isinstance(raw, str):
            raise ConfigError(key, "expected a string")
        return raw
    if t in ("Path", "Path | None"):
        if not isinstance(raw, str) or not raw:
            raise ConfigError(key, "expected a file path")
        return (base / raw).resolve()
    if t == "tuple[str, ...]":
        if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
            raise ConfigError(key, "expected a list of strings")
        return tuple(raw)
    if t == "tuple[Path, ...]":
        if not isinstance(raw, list) or not all(isinstance(x, str) and x for x in raw):
            raise ConfigError(key, "expected a list of file paths")
        return tuple((base / x).resolve() for x in raw)
    raise ConfigError(key, f"unsupported type {t}")  # a bug in this module, not in the file


def locate_key(text: str, dotted: str) -> int | None:
    """Best-effort line number of a dotted key (tomllib keeps no positions).

    Finds the deepest table header that prefixes the key, then the key's own
    line inside that table.
    """
    parts = dotted.split(".")
    lines = text.splitlines()
    header_line, depth = None, 0
    for i, line in enumerate(lines):
        m = re.match(r"^\s*\[\s*([^\]]+?)\s*\]", line)
        if not m:
            continue
        name = [p.strip().strip('"') for p in m.group(1).split(".")]
        if parts[: len(name)] == name and len(name) > depth:
            header_line, depth = i, len(name)
    rest = parts[depth:]
    if not rest:
        return header_line + 1 if header_line is not None else None
    start = header_line + 1 if header_line is not None else 0
    for i in range(start, len(lines)):
        if re.match(r"^\s*\[", lines[i]):
            break
        if re.match(rf'^\s*"?{re.escape(rest[0])}"?\s*=', lines[i]):
            return i + 1
    return header_line + 1 if header_line is not None else None

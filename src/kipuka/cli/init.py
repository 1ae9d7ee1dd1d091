"""`kipuka init DIR`: a complete demo deployment made on the spot.

Layout (private keys apart from what is served, in a 0700 folder, files 0600):

    DIR/kipuka.toml            the configuration, commented
    DIR/ca/root.pem            the root CA shared by every label
    DIR/ca/<id>.pem            one issuing CA per CA id (default, iot-fleet, corp-devices)
    DIR/tls/server.pem         TLS server certificate + its issuing CA (localhost, 127.0.0.1, ::1)
    DIR/tls/client-ca.pem      trust anchors for client certificates: the issuing CAs and the root
    DIR/private/*.key          CA and TLS private keys; otp-hmac.keys, the OTP hashing keys
                               (root.key: only until it is taken offline, or elsewhere with --root-key-out)
    DIR/dogtag/, DIR/upstream/ with --dogtag-url / --upstream-url: the files given, copied
                               (their keys and passwords into DIR/private); see cli/init_backends.py
    DIR/ca/pq*.pem             with --pq: ML-DSA-65 CAs for the pq and pq-mixed labels (cli/init_pq.py)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from kipuka.ca.setup import make_issuing, make_root, make_tls_server
from kipuka.cli.init_backends import Backends
from kipuka.cli.init_pq import make_pq_cas
from kipuka.keys import generate_private_key
from kipuka.pem import certificates_pem
from kipuka.ra.otp import OtpKeyring

CA_IDS = ("default", "iot-fleet", "corp-devices")
KEY_TYPES = {"ec-p256": "ec-p256", "ec-p384": "ec-p384", "rsa2048": "rsa2048", "rsa3072": "rsa3072"}


def init_deployment(target: Path, key_type: str = "ec-p256", org: str = "kipuka demo",
                    hostnames: tuple[str, ...] = ("localhost", "127.0.0.1", "::1"),
                    listen: str = "0.0.0.0:9443", admin_listen: str = "127.0.0.1:9444",
                    revocation_listen: str = "0.0.0.0:9080", backends: Backends | None = None,
                    pq: bool = False, domains: tuple[str, ...] = ("example.com",),
                    root_key_out: Path | None = None) -> Path:
    """Write the deployment; `backends` adds Dogtag/upstream-EST CAs (else they appear as commented examples),
    `pq` the ML-DSA labels pq and pq-mixed (kipuka.cli.init_pq). The root CA key goes to
    `root_key_out` (removable media, say) instead of DIR/private/root.key: the server never reads it."""
    backends = backends or Backends()
    if key_type not in KEY_TYPES:
        raise ValueError(f"unknown key type {key_type!r}; choose from {', '.join(KEY_TYPES)}")
    target = target.resolve()
    config_path = target / "kipuka.toml"
    if config_path.exists():
        raise FileExistsError(f"{config_path} already exists; choose an empty directory")
    root_key_path = root_key_path_for(target, root_key_out)
    if root_key_out is not None:
        if root_key_path.exists():
            raise FileExistsError(f"--root-key-out {root_key_path} already exists")
        if not root_key_path.parent.is_dir():
            raise FileNotFoundError(f"--root-key-out: no directory {root_key_path.parent}")
    for sub in ("ca", "tls"):
        (target / sub).mkdir(parents=True, exist_ok=True)
    private = target / "private"
    private.mkdir(mode=0o700, exist_ok=True)
    os.chmod(private, 0o700)

    root_key = generate_private_key(key_type)
    root = make_root(root_key, f"{org} Root CA", org)  # type: ignore[arg-type]
    _write_key(root_key_path, root_key)
    _write(target / "ca" / "root.pem", certificates_pem([root]))
    issuing = {}
    for ca_id in CA_IDS:
        key = generate_private_key(key_type)
        cert = make_issuing(key, f"{org} {ca_id} Issuing CA", org, root, root_key)  # type: ignore[arg-type]
        _write_key(private / f"{ca_id}.key", key)
        _write(target / "ca" / f"{ca_id}.pem", certificates_pem([cert]))
        issuing[ca_id] = (cert, key)

    # The TLS certificate chains to the default CA's root, so the chain a client
    # fetches from /cacerts is exactly what it needs for --cacert.
    tls_key = generate_private_key("ec-p256")
    default_cert, default_key = issuing["default"]
    tls_cert = make_tls_server(tls_key, list(hostnames), default_cert, default_key)  # type: ignore[arg-type]
    _write_key(private / "tls-server.key", tls_key)
    _write(target / "tls" / "server.pem", certificates_pem([tls_cert, default_cert]))
    pq_cas = make_pq_cas(target, org, root, root_key, lambda p, certs: _write(p, certificates_pem(certs)),
                         _write_key) if pq else None
    _write(target / "tls" / "client-ca.pem", certificates_pem([c for c, _ in issuing.values()] + [root]
                                                             + backends.client_anchors()
                                                             + list(pq_cas.anchors if pq_cas else ())))
    OtpKeyring.add_key(private / "otp-hmac.keys")
    public_port = revocation_listen.rpartition(":")[2] if revocation_listen else "9080"
    text = CONFIG_TEMPLATE.format(
        listen=listen, admin_listen=admin_listen, revocation_listen=revocation_listen,
        base_url=f"http://{hostnames[0]}:{public_port}", dns_suffixes=json.dumps(list(domains)))
    _write(config_path, (text + (pq_cas.config if pq_cas else "") + backends.install(target)).encode())
    return config_path


def root_key_path_for(target: Path, root_key_out: Path | None) -> Path:
    return root_key_out.resolve() if root_key_out is not None else target.resolve() / "private" / "root.key"


def root_key_advice(root_key: Path, elsewhere: bool = False) -> str:
    """What `kipuka init` tells the operator about the root key: where it is, and that it belongs offline."""
    head = (f"kipuka: the root CA key is {root_key}. The server never uses it: it signed the issuing CAs "
            "and is needed again only to make or renew one. ")
    if elsewhere:
        return head + "Keep it offline (the media disconnected, or in a vault)."
    return head + ("Take it offline: copy it to encrypted removable media (or a vault), then remove it here "
                   f"(shred -u {root_key}); `kipuka init --root-key-out PATH` writes it there in the first place.")


def _write(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def _write_key(path: Path, key: object) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,  # type: ignore[attr-defined]
                            serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)


CONFIG_TEMPLATE = """\
# kipuka configuration, made by `kipuka init`. Every key is listed with its
# default in docs/configuration.md; relative paths are relative to this file.

[server]
listen = "{listen}"      # EST listener (HTTPS)
workers = 1                     # worker processes sharing the port; 0 = one per core
max_body = 65536                # request bodies above this many bytes get 413
shutdown_timeout = "30s"        # how long SIGTERM waits for in-flight requests

[tls]
cert = "tls/server.pem"         # server certificate followed by its chain
key = "private/tls-server.key"
client_ca = "tls/client-ca.pem" # trust anchors for mTLS client certificates
min_version = "1.2"             # "1.2" or "1.3"

[database]
url = "sqlite:///kipuka.db"     # SQLite file next to this configuration
migrate_on_start = true

[otp]
key_file = "private/otp-hmac.keys"  # HMAC keys for OTP hashes; `kipuka otp rotate-key` adds one
default_ttl = "24h"
max_failures = 5                # failed attempts per (entity, client address) before a lockout
lockout = "15m"                 # lockout length, also the window failures are counted in
recovery_window = "5m"          # a client that lost its response may retry this long

[est]
default_ca = "default"          # CA of the unlabeled path /.well-known/est/<op>
retry_after = "60s"             # Retry-After of a 202 while a request waits for approval
pending_ttl = "7d"              # a request not approved by then expires (its OTP use is given back)
# serverkeygen = true            # /serverkeygen on every label (or per label); off by default
# kek_file = "private/keks.txt" # pre-shared AES keys for serverkeygen's symmetric delivery (mode 0600)
# keygen_pool = 4               # server-generated keys made ahead per key type, in memory only

[admin]
listen = "{admin_listen}"  # admin API (HTTPS, JSON); "" disables it
# Admin client certificates: use a CA of their own that issues nothing else, never
# tls/client-ca.pem (every enrolled device's certificate chains to that), and list
# the admin subjects; client_ca with an empty subjects is refused.
# client_ca = "tls/admin-ca.pem"
subjects = []                   # e.g. ["CN=admin.example.com"]; tokens: `kipuka admin token create NAME`

[revocation]
listen = "{revocation_listen}"    # CRLs and OCSP over plain HTTP for relying parties; "" disables it
base_url = "{base_url}"  # put in certificates as CRL distribution point and OCSP URL
crl_validity = "24h"            # nextUpdate of each CRL
crl_refresh = "1h"              # CRLs are re-signed this often, and at once after a revocation

[audit]
# jsonl = "audit.jsonl"         # mirror the chained audit trail to a JSON-lines file
syslog = false                  # and/or to the local syslog

# One table per CA. The private keys sit in private/ (mode 0700), apart from
# everything the server publishes.
[ca.default]
type = "local"
cert = "ca/default.pem"
chain = "ca/root.pem"           # the rest of the chain, up to and including the root
key = "private/default.key"

[ca.iot-fleet]
type = "local"
cert = "ca/iot-fleet.pem"
chain = "ca/root.pem"
key = "private/iot-fleet.key"

[ca.corp-devices]
type = "local"
cert = "ca/corp-devices.pem"
chain = "ca/root.pem"
key = "private/corp-devices.key"

# Policy of the unlabeled path, and the defaults every label inherits.
[policy]
key_types = ["ec-p256", "ec-p384", "rsa"]
rsa_min_bits = 2048
validity_days = 365
ekus = ["clientAuth"]
otp_name_rule = "prefix"        # OTP entity "device-001" may request CN=device-001.example.com (not device-0010...)
dns_suffixes = {dns_suffixes}  # every name's domain (DNS, email, URI host, dotted CN); ["*"] = any
max_sans = 10                   # subject alternative names per certificate
san_types = ["dns", "ip", "email", "uri"]
require_common_name = true
subject_attributes = ["CN"]     # subject attribute types a CSR may carry (plus those subject_rdns names)
subject_unlisted = "refuse"     # any other type: "refuse" (403) or "drop" it from the certificate
# subject_fixed = ["O=kipuka demo"]  # attributes the CA puts in itself (a CSR may only repeat them)
allow_subject_change = false    # reenroll with new names needs ChangeSubjectName when true
csrattrs = true                 # advertise key types and SAN in /csrattrs
require_approval = false        # hold simpleenroll for an RA officer (202 + Retry-After)
reenroll_requires_approval = false

# A label's mTLS /simpleenroll takes certificates of its own CA only; mtls_enroll_cas = ["default"]
# would let holders of the unlabeled path's certificates enroll here too.
[labels.iot-fleet]
ca = "iot-fleet"
key_types = ["ec-p256", "ec-p384"]
validity_days = 90

[labels.corp-devices]
ca = "corp-devices"
ekus = ["clientAuth", "serverAuth"]
validity_days = 365
"""

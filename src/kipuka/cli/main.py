"""The `kipuka` command line.

Results go to stdout (an OTP alone on its line, so scripts can capture it);
everything else, progress and errors included, goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from kipuka.config import ConfigError, ListenOverrides, load_config, parse_duration
from kipuka.errors import KipukaError

DEFAULT_CONFIG = os.environ.get("KIPUKA_CONFIG", "kipuka.toml")
REASONS = ("unspecified", "keyCompromise", "cACompromise", "affiliationChanged", "superseded",
           "cessationOfOperation", "certificateHold", "privilegeWithdrawn", "aACompromise")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"kipuka: configuration error: {exc}", file=sys.stderr)
        return 2
    except (KipukaError, ValueError, FileExistsError, FileNotFoundError) as exc:
        print(f"kipuka: {getattr(exc, 'reason', exc)}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kipuka", description="EST (RFC 7030) enrollment server")
    sub = p.add_subparsers(metavar="COMMAND")

    def cmd(name: str, func, help_: str, parent=sub) -> argparse.ArgumentParser:  # type: ignore[no-untyped-def]
        sp = parent.add_parser(name, help=help_, description=help_)
        sp.set_defaults(func=func)
        return sp

    def with_config(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sp.add_argument("-c", "--config", default=DEFAULT_CONFIG, type=Path,
                        help="configuration file (default: $KIPUKA_CONFIG or ./kipuka.toml)")
        return sp

    sp = cmd("init", _init, "create a demo deployment (CAs, TLS certificate, configuration) in DIR")
    sp.add_argument("dir", type=Path)
    sp.add_argument("--key-type", default="ec-p256", choices=["ec-p256", "ec-p384", "rsa2048", "rsa3072"])
    sp.add_argument("--hostname", action="append", help="TLS server name (repeatable; default localhost, 127.0.0.1, ::1)")
    sp.add_argument("--listen", default="0.0.0.0:9443")
    sp.add_argument("--admin-listen", default="127.0.0.1:9444")
    sp.add_argument("--revocation-listen", default="0.0.0.0:9080")
    sp.add_argument("--domain", action="append",
                    help="domain the names of enrolled devices must lie under (repeatable; default example.com): "
                         "[policy] dns_suffixes")
    sp.add_argument("--root-key-out", type=Path, default=None,
                    help="write the root CA key to this file (e.g. on removable media) instead of DIR/private/root.key; "
                         "the server never needs it")
    sp.add_argument("--pq", action="store_true",
                    help="add the post-quantum labels pq (ML-DSA-65 root and issuing CA) and pq-mixed "
                         "(ML-DSA-65 issuing CA under the root); docs/pq.md")
    sp.add_argument("--hsm", action="store_true",
                    help="the iot-fleet CA gets its key generated in a PKCS#11 token (docs/hsm.md)")
    from kipuka.cli.hsm import add_token_arguments
    add_token_arguments(sp, "hsm-")
    from kipuka.cli.init_backends import add_arguments as add_backend_arguments
    add_backend_arguments(sp)

    sp = with_config(cmd("serve", _serve, "serve EST"))
    sp.add_argument("--listen", help="HOST:PORT (default: [server] listen, 0.0.0.0:9443)")
    sp.add_argument("--admin-listen", help='HOST:PORT of the admin API, "" to turn it off '
                    "(default: [admin] listen, 127.0.0.1:9444)")
    sp.add_argument("--revocation-listen", help='HOST:PORT of the CRL/OCSP listener, "" to turn it off '
                    "(default: [revocation] listen, 0.0.0.0:9080; certificates keep naming [revocation] base_url)")

    otp = cmd("otp", None, "one-time passwords").add_subparsers(metavar="ACTION")
    sp = with_config(cmd("create", _otp_create, "create an OTP and print it once", otp))
    sp.add_argument("entity")
    sp.add_argument("--ttl", default=None, help="lifetime, e.g. 30m, 24h, 7d (default: [otp] default_ttl)")
    sp.add_argument("--uses", type=int, default=1)
    sp.add_argument("--label", default=None, help="the EST labels it is valid on: a name or a comma-separated "
                    'list, or "any" for every label (default: the unlabeled path only)')
    sp = with_config(cmd("list", _otp_list, "list OTPs (never their secrets)", otp))
    sp.add_argument("--entity")
    sp = with_config(cmd("revoke", _otp_revoke, "revoke an OTP by id", otp))
    sp.add_argument("id", type=int)
    with_config(cmd("rotate-key", _otp_rotate, "add a new OTP hashing key; old OTPs stay valid", otp))

    certs = cmd("certs", None, "issued certificates").add_subparsers(metavar="ACTION")
    sp = with_config(cmd("list", _certs_list, "list issued certificates", certs))
    sp.add_argument("--entity")
    sp.add_argument("--label")
    sp.add_argument("--limit", type=int, default=100)
    sp.add_argument("--json", action="store_true")
    sp = with_config(cmd("show", _certs_show, "show one certificate by hex serial", certs))
    sp.add_argument("serial")
    sp.add_argument("--pem", action="store_true", help="print the certificate as PEM")
    sp = with_config(cmd("revoke", _certs_revoke, "revoke a certificate by hex serial", certs))
    sp.add_argument("serial")
    sp.add_argument("--reason", default="unspecified", choices=REASONS)

    conf = cmd("config", None, "configuration").add_subparsers(metavar="ACTION")
    with_config(cmd("check", _config_check, "validate the configuration file", conf))

    db = cmd("db", None, "database").add_subparsers(metavar="ACTION")
    with_config(cmd("migrate", _db_migrate, "apply pending schema migrations", db))
    with_config(cmd("status", _db_status, "show the schema version", db))

    audit = cmd("audit", None, "audit trail").add_subparsers(metavar="ACTION")
    sp = with_config(cmd("list", _audit_list, "show recent audit events", audit))
    sp.add_argument("--limit", type=int, default=50)
    with_config(cmd("verify", _audit_verify, "link pending rows, then verify the audit hash chain", audit))

    requests_ = cmd("requests", None, "requests held for approval").add_subparsers(metavar="ACTION")
    sp = with_config(cmd("list", _requests_list, "list requests", requests_))
    sp.add_argument("--status", default="pending", choices=["pending", "issued", "rejected", "expired", "all"])
    sp = with_config(cmd("approve", _requests_approve, "approve and issue a request", requests_))
    sp.add_argument("id", type=int)
    sp = with_config(cmd("reject", _requests_reject, "reject a request with a reason", requests_))
    sp.add_argument("id", type=int)
    sp.add_argument("--reason", required=True)

    admin = cmd("admin", None, "admin API access").add_subparsers(metavar="ACTION")
    token = cmd("token", None, "bearer tokens", admin).add_subparsers(metavar="ACTION")
    sp = with_config(cmd("create", _token_create, "create a token and print it once", token))
    sp.add_argument("name")
    sp = with_config(cmd("revoke", _token_revoke, "revoke the tokens of a name", token))
    sp.add_argument("name")

    sp = cmd("migrate-store", _migrate_store, "copy every record from one database to another (lab to production)")
    sp.add_argument("--from", dest="source", required=True, help="e.g. sqlite:////srv/kipuka/kipuka.db")
    sp.add_argument("--to", dest="target", required=True, help="e.g. postgresql://kipuka@db/kipuka")
    sp.add_argument("--force", action="store_true", help="copy even if the target already holds records")

    from kipuka.cli.keys import add_parser as add_keys_parser
    add_keys_parser(sub, with_config)
    from kipuka.cli.hsm import add_parser as add_hsm_parser
    add_hsm_parser(sub)

    crl = cmd("crl", None, "certificate revocation lists").add_subparsers(metavar="ACTION")
    sp = with_config(cmd("publish", _crl_publish, "sign a fresh CRL for a CA and write it (DER) to stdout", crl))
    sp.add_argument("ca")
    return p


# --- commands ---------------------------------------------------------------------

def _init(args: argparse.Namespace) -> int:
    from kipuka.cli.init import init_deployment, root_key_advice, root_key_path_for
    from kipuka.cli.init_backends import backends_from_args

    hostnames = tuple(args.hostname) if args.hostname else ("localhost", "127.0.0.1", "::1")
    backends = backends_from_args(args)  # checked before anything is written
    path = init_deployment(args.dir, args.key_type, hostnames=hostnames, listen=args.listen,
                           admin_listen=args.admin_listen, revocation_listen=args.revocation_listen,
                           backends=backends, pq=args.pq,
                           domains=tuple(args.domain) if args.domain else ("example.com",),
                           root_key_out=args.root_key_out)
    if args.hsm:
        from kipuka.cli.hsm import hsm_demo_ca
        hsm_demo_ca(path, args)
    print(f"kipuka: demo deployment created; configuration at {path}", file=sys.stderr)
    print(root_key_advice(root_key_path_for(path.parent, args.root_key_out), args.root_key_out is not None),
          file=sys.stderr)
    print(str(path))
    return 0


def _serve(args: argparse.Namespace) -> int:
    from kipuka.server.supervisor import serve

    return serve(args.config, ListenOverrides(args.listen, args.admin_listen, args.revocation_listen))


def _store(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from kipuka.store import Store

    config = load_config(args.config)
    store = Store(config.database.url)
    if config.database.migrate_on_start:
        store.migrate()
    return config, store


def _otp_create(args: argparse.Namespace) -> int:
    from kipuka.ra.otp import OtpKeyring, describe_scope, issue_otp, otp_scope

    config, store = _store(args)
    ttl = parse_duration(args.ttl, "--ttl") if args.ttl else config.otp.default_ttl
    known = {name for name in config.labels if name}
    scope = otp_scope(args.label, known)
    otp_id, secret = issue_otp(store, OtpKeyring.load(config.otp.key_file), args.entity, scope, ttl,
                               args.uses, known)
    print(f"kipuka: OTP {otp_id} for {args.entity} (uses {args.uses}, ttl {ttl}s, labels {describe_scope(scope)}); "
          "shown once, store it now", file=sys.stderr)
    print(secret)
    return 0


def _otp_list(args: argparse.Namespace) -> int:
    from kipuka.ra.otp import describe_scope, otp_status
    from kipuka.store.records import utcnow

    _, store = _store(args)
    now = utcnow()
    for o in store.list_otps(args.entity):
        state = otp_status(o, now)  # the admin API's words: active, spent, expired, revoked
        print(f"{o.id}\t{o.entity}\t{describe_scope(o.label)}\t{o.uses_left}/{o.uses_total}\t"
              f"{o.expires_at:%Y-%m-%dT%H:%M:%SZ}\t{state}")
    return 0


def _otp_revoke(args: argparse.Namespace) -> int:
    from kipuka.store.records import AuditEvent, utcnow

    _, store = _store(args)
    now = utcnow()
    if not store.revoke_otp(args.id, now, AuditEvent(event="otp.revoke", outcome="success", auth="cli",
                                                     reason=f"otp {args.id}", at=now)):
        print(f"kipuka: no active OTP with id {args.id}", file=sys.stderr)
        return 1
    return 0


def _otp_rotate(args: argparse.Namespace) -> int:
    from kipuka.ra.otp import OtpKeyring

    config = load_config(args.config)
    key_id = OtpKeyring.add_key(config.otp.key_file)
    print(f"kipuka: new OTP hashing key {key_id}; send SIGHUP to running servers", file=sys.stderr)
    return 0


def _certs_list(args: argparse.Namespace) -> int:
    _, store = _store(args)
    rows = store.certificates(entity=args.entity, label=args.label, limit=args.limit)
    for r in rows:
        status = "revoked" if r.revoked_at else "valid"
        if args.json:
            print(json.dumps({"serial": r.serial, "ca": r.ca_id, "label": r.label, "subject": r.subject,
                              "sans": r.sans, "entity": r.entity, "auth": r.auth, "status": status,
                              "not_after": r.not_after.isoformat(), "sha256": r.fingerprint_sha256}))
        else:
            print(f"{r.serial}\t{r.ca_id}\t{r.label or '-'}\t{r.subject}\t{r.not_after:%Y-%m-%d}\t{status}")
    return 0


def _certs_show(args: argparse.Namespace) -> int:
    _, store = _store(args)
    rows = store.certificate(_serial(args.serial))
    if not rows:
        print(f"kipuka: no certificate with serial {args.serial}", file=sys.stderr)
        return 1
    for r in rows:
        if args.pem:
            cert = x509.load_der_x509_certificate(r.der)
            sys.stdout.write(cert.public_bytes(serialization.Encoding.PEM).decode())
            continue
        for key, value in (("serial", r.serial), ("ca", r.ca_id), ("label", r.label or "(default)"),
                           ("subject", r.subject), ("sans", r.sans or "-"), ("entity", r.entity),
                           ("auth", r.auth), ("not_before", r.not_before.isoformat()),
                           ("not_after", r.not_after.isoformat()), ("issued_at", r.issued_at.isoformat()),
                           ("sha256", r.fingerprint_sha256),
                           ("status", f"revoked {r.revoked_at:%Y-%m-%dT%H:%M:%SZ} ({r.revocation_reason})"
                            if r.revoked_at else "valid")):
            print(f"{key}: {value}")
    return 0


def _certs_revoke(args: argparse.Namespace) -> int:
    serial = _serial(args.serial)

    async def revoke(authority) -> int:  # type: ignore[no-untyped-def]
        return await authority.revocation.revoke(serial, args.reason, _actor())

    if not _with_authority(args, revoke):
        print(f"kipuka: no unrevoked certificate with serial {args.serial}", file=sys.stderr)
        return 1
    print(f"kipuka: revoked {serial} ({args.reason}); CRL republished", file=sys.stderr)
    return 0


def _with_authority(args: argparse.Namespace, job):  # type: ignore[no-untyped-def]
    """Run `job(authority)` with the configured CAs and store, as the server would."""
    import asyncio

    from kipuka.server.worker import build_authority
    from kipuka.store import AsyncStore

    config, store = _store(args)
    astore = AsyncStore(store)

    async def run():  # type: ignore[no-untyped-def]
        return await job(build_authority(config, astore))

    try:
        return asyncio.run(run())
    finally:
        astore.close()


def _actor() -> str:
    import getpass
    return f"cli:{getpass.getuser()}"


def _requests_list(args: argparse.Namespace) -> int:
    _, store = _store(args)
    for r in store.pending_requests(None if args.status == "all" else args.status, limit=1000):
        print(f"{r.id}\t{r.status}\t{r.label or '-'}\t{r.entity}\t{r.subject}\t{r.sans or '-'}\t"
              f"{r.created_at:%Y-%m-%dT%H:%M:%SZ}\t{r.reason or '-'}")
    return 0


def _requests_approve(args: argparse.Namespace) -> int:
    async def approve(authority):  # type: ignore[no-untyped-def]
        return await authority.approve(args.id, _actor())

    record = _with_authority(args, approve)
    if isinstance(record, str):
        print(f"kipuka: request {args.id} approved; the CA holds it as {record}", file=sys.stderr)
    else:
        print(f"kipuka: request {args.id} approved; issued {record.serial}", file=sys.stderr)
    return 0


def _requests_reject(args: argparse.Namespace) -> int:
    async def reject(authority):  # type: ignore[no-untyped-def]
        await authority.reject(args.id, args.reason, _actor())

    _with_authority(args, reject)
    print(f"kipuka: request {args.id} rejected", file=sys.stderr)
    return 0


def _token_create(args: argparse.Namespace) -> int:
    import hashlib
    import secrets

    from kipuka.store.records import AuditEvent

    _, store = _store(args)
    token = secrets.token_urlsafe(32)
    store.create_admin_token(args.name, hashlib.sha256(token.encode()).hexdigest(), AuditEvent(
        event="admin.token.create", outcome="success", auth=_actor(), reason=args.name))
    print(f"kipuka: admin token {args.name!r} created; shown once", file=sys.stderr)
    print(token)
    return 0


def _token_revoke(args: argparse.Namespace) -> int:
    from kipuka.store.records import AuditEvent, utcnow

    _, store = _store(args)
    n = store.revoke_admin_token(args.name, utcnow(), AuditEvent(
        event="admin.token.revoke", outcome="success", auth=_actor(), reason=args.name))
    print(f"kipuka: revoked {n} token(s) named {args.name!r}", file=sys.stderr)
    return 0 if n else 1


def _crl_publish(args: argparse.Namespace) -> int:
    async def publish(authority):  # type: ignore[no-untyped-def]
        return await authority.revocation.publish_crl(args.ca)

    crl = _with_authority(args, publish)
    sys.stdout.buffer.write(crl.der)
    print(f"kipuka: CRL {crl.number} for {args.ca}", file=sys.stderr)
    return 0


def _config_check(args: argparse.Namespace) -> int:
    from kipuka.admin.auth import check_admin_anchors
    from kipuka.ca.registry import build_ca
    from kipuka.pem import load_certificates
    from kipuka.ra.otp import OtpKeyring
    from kipuka.server.tls import server_context

    config = load_config(args.config)
    cas = {}
    for ca in config.cas.values():
        try:
            cas[ca.id] = build_ca(ca)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"ca.{ca.id}", str(exc)) from None
    try:
        check_admin_anchors(config, cas)
    except (OSError, ValueError) as exc:
        raise ConfigError("admin.client_ca", str(exc)) from None
    try:
        server_context(config.tls)
    except (OSError, ValueError) as exc:
        raise ConfigError("tls", f"cannot load certificate, key or client_ca: {exc}") from None
    try:
        OtpKeyring.load(config.otp.key_file)
    except (OSError, ValueError) as exc:
        raise ConfigError("otp.key_file", str(exc)) from None
    for name, label in config.labels.items():
        for path in label.policy.bootstrap_anchors + label.policy.ra_anchors:
            try:
                load_certificates(path)
            except (OSError, ValueError) as exc:
                raise ConfigError(f"labels.{name}" if name else "policy", str(exc)) from None
    _check_serverkeygen(config)
    if config.brski is not None:
        from kipuka.brski.settings import check_files
        check_files(config.brski)
    print(f"kipuka: {args.config}: OK ({len(config.cas)} CAs, {len(config.labels) - 1} labels)", file=sys.stderr)
    return 0


def _check_serverkeygen(config) -> None:  # type: ignore[no-untyped-def]
    """The files /serverkeygen reads at start: the KEK file and the escrow certificates."""
    from kipuka.ra.escrow import EscrowTarget
    from kipuka.ra.kek import KekTable
    from kipuka.ra.serverkeygen import enabled

    on = [label for label in config.labels.values() if enabled(config, label)]
    if on and config.est.kek_file is not None:
        try:
            KekTable.load(config.est.kek_file)
        except ValueError as exc:
            raise ConfigError("est.kek_file", str(exc)) from None
    for label in on:
        if label.policy.escrow and label.policy.escrow_cert is not None:
            try:
                EscrowTarget.load(label.policy.escrow_cert)
            except (OSError, ValueError) as exc:
                raise ConfigError(f"labels.{label.name}.escrow_cert" if label.name else "policy.escrow_cert",
                                  str(exc)) from None


def _db_migrate(args: argparse.Namespace) -> int:
    from kipuka.store import Store

    config = load_config(args.config)
    applied = Store(config.database.url).migrate()
    print(f"kipuka: applied migrations {applied}" if applied else "kipuka: database is up to date", file=sys.stderr)
    return 0


def _db_status(args: argparse.Namespace) -> int:
    from kipuka.store import Store
    from kipuka.store.migrations import LATEST

    config = load_config(args.config)
    version = Store(config.database.url).schema_version()
    print(f"schema version {version} (latest {LATEST})")
    return 0 if version == LATEST else 1


def _audit_list(args: argparse.Namespace) -> int:
    _, store = _store(args)
    for e in store.audit_events(args.limit):
        print(f"{e.at:%Y-%m-%dT%H:%M:%SZ}\t{e.event}\t{e.outcome}\t{e.label or '-'}\t{e.entity or '-'}\t"
              f"{e.client_addr or '-'}\t{e.serial or '-'}\t{e.reason}")
    return 0


def _migrate_store(args: argparse.Namespace) -> int:
    from kipuka.store.transfer import copy_store

    copied = copy_store(args.source, args.target, force=args.force)
    for table, count in copied.items():
        print(f"kipuka: {table}: {count} rows", file=sys.stderr)
    print(f"kipuka: copied {sum(copied.values())} rows; point [database] url at the target", file=sys.stderr)
    return 0


def _audit_verify(args: argparse.Namespace) -> int:
    _, store = _store(args)
    while store.chain_audit():
        pass
    check = store.verify_audit_chain()
    if check.ok:
        print(f"kipuka: audit chain OK ({check.checked} records)", file=sys.stderr)
        return 0
    print(f"kipuka: audit chain BROKEN at record id {check.broken_id} (sequence {check.broken_seq}): "
          f"{check.problem}", file=sys.stderr)
    return 1


def _serial(text: str) -> str:
    text = text.strip().lower().replace(":", "")
    if text.startswith("0x"):
        text = text[2:]
    try:
        return format(int(text, 16), "x")
    except ValueError:
        raise ValueError(f"{text!r} is not a hexadecimal serial number") from None

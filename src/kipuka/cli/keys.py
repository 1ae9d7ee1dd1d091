"""`kipuka keys recover SERIAL --escrow-key FILE`: open an escrowed server-generated key, offline.

The escrow private key never goes near the server: an operator runs this where
that key is, against the database. The recovered key is checked against the
certificate's public key, printed as PKCS#8 PEM (or written 0600 with --out),
and every attempt, successful or not, is audited as "key.recover".
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization

PASSPHRASE_ENV = "KIPUKA_ESCROW_PASSPHRASE"


def add_parser(sub: argparse._SubParsersAction, with_config) -> None:  # type: ignore[type-arg, no-untyped-def]
    keys = sub.add_parser("keys", help="server-generated keys", description="server-generated keys")
    actions = keys.add_subparsers(metavar="ACTION")
    sp = actions.add_parser("recover", help="recover an escrowed key with the escrow private key",
                            description="recover an escrowed key with the escrow private key")
    sp.set_defaults(func=recover_command)
    sp.add_argument("serial", help="certificate serial (hex)")
    sp.add_argument("--escrow-key", required=True, type=Path,
                    help=f"escrow (key recovery) private key, PEM or DER; if encrypted, the passphrase "
                         f"comes from ${PASSPHRASE_ENV} or a prompt")
    sp.add_argument("--ca", help="CA id, when several CAs used the serial")
    sp.add_argument("--out", type=Path, help="write the key here (mode 0600) instead of stdout")
    with_config(sp)


def recover_command(args: argparse.Namespace) -> int:
    from cryptography import x509

    from kipuka.cli.main import _actor, _serial
    from kipuka.config import load_config
    from kipuka.ra.escrow import RecoveryError, recover
    from kipuka.store import AuditEvent, Store

    config = load_config(args.config)
    store = Store(config.database.url)
    if config.database.migrate_on_start:
        store.migrate()
    serial = _serial(args.serial)
    actor = _actor()

    def audit(outcome: str, reason: str, ca_id: str = "") -> None:
        store.add_audit(AuditEvent(event="key.recover", outcome=outcome, reason=reason, auth=actor,
                                   ca_id=ca_id, serial=serial))

    archives = store.escrowed_keys(serial, args.ca)
    if not archives:
        audit("rejected", "no escrowed key for this serial")
        print(f"kipuka: no escrowed key for serial {serial}", file=sys.stderr)
        return 1
    if len(archives) > 1:
        print(f"kipuka: serial {serial} is escrowed under several CAs ({', '.join(a.ca_id for a in archives)}); "
              "choose one with --ca", file=sys.stderr)
        return 1
    archive = archives[0]
    record = store.certificate_status(archive.ca_id, serial)
    cert = x509.load_der_x509_certificate(record.der) if record is not None else None
    try:
        key = recover(archive.ciphertext, _load_key(args.escrow_key), cert)
    except (RecoveryError, ValueError, TypeError) as exc:
        audit("rejected", str(exc), archive.ca_id)
        print(f"kipuka: {exc}", file=sys.stderr)
        return 1
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    audit("success", f"recovered to {'file ' + str(args.out) if args.out else 'stdout'} "
                     f"(archive for escrow certificate sha256:{archive.escrow_cert_sha256[:16]})", archive.ca_id)
    if args.out:
        fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
        os.chmod(args.out, 0o600)
    else:
        sys.stdout.buffer.write(pem)
    subject = cert.subject.rfc4514_string() if cert is not None else "unknown certificate"
    print(f"kipuka: recovered the key of {archive.ca_id}/{serial} ({subject})", file=sys.stderr)
    return 0


def _load_key(path: Path):  # type: ignore[no-untyped-def]
    data = path.read_bytes()
    loader = serialization.load_pem_private_key if b"-----BEGIN" in data else serialization.load_der_private_key
    try:
        return loader(data, None)
    except TypeError:  # encrypted: ask for the passphrase
        passphrase = os.environ.get(PASSPHRASE_ENV) or getpass.getpass(f"passphrase for {path}: ")
        return loader(data, passphrase.encode())

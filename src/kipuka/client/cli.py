"""`kipuka-est`: the EST client on the command line.

    kipuka-est cacerts  -s https://est.example.com:9443 --fingerprint SHA256 --out ca.pem
    kipuka-est csrattrs -s URL --trust ca.pem [--label iot-fleet]
    kipuka-est enroll   -s URL --trust ca.pem -u device-001 --otp-file otp.txt \\
                        --cn device-001.example.com --out-cert dev.crt --out-key dev.key
    kipuka-est reenroll -s URL --trust ca.pem --cert dev.crt --key dev.key --out-cert new.crt [--rekey --out-key new.key]
    kipuka-est serverkeygen -s URL --trust ca.pem -u ID --otp OTP --cn NAME --out-cert c.crt --out-key c.key
    kipuka-est renew    -s URL --trust ca.pem --cert dev.crt --key dev.key --if-expiring-within 30d [--rekey]

`renew` is meant for cron / systemd timers: it does nothing (exit 0) while the
certificate has more than the window left, and otherwise re-enrolls over mTLS
with the current certificate and replaces the files in place. Files are
written atomically (temporary file + rename), keys with mode 0600.

Progress and errors are one line each on stderr; `--json` prints one JSON
object on stdout (also for errors: {"ok": false, "error": ..., "status": ...}).
The server URL, OTP entity and OTP may come from KIPUKA_EST_SERVER,
KIPUKA_EST_USER and KIPUKA_EST_OTP (an OTP on the command line is visible in
the process list; prefer --otp-file or the environment).

Exit codes: 0 done (or renewal not due), 1 other error, 2 usage,
3 connection or TLS failure, 4 refused by the server (4xx), 5 server error (5xx),
6 unusable answer (invalid response, undecryptable key), 7 still pending after
--max-wait, 8 trust bootstrap refused or fingerprint mismatch.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from typing import Sequence

from cryptography import x509

from kipuka.client.client import CSR_KEY, PKCS8, EstClient, Issued
from kipuka.client.csr import KEY_TYPES, CsrSpec, generate_key, load_csr, load_private_key
from kipuka.client.errors import (BootstrapError, DecryptionError, EstError, HttpError, InvalidResponse,
                                  PendingTimeout, ServerError, TransportError)
from kipuka.client.files import parse_duration, read_bytes, read_certificate, write_certs, write_key
from kipuka.client.template import CsrTemplate, parse_rdn
from kipuka.client.wire import CsrAttributes
from kipuka.client.verify import fingerprint

PROG = "kipuka-est"


class Output:
    def __init__(self, json_mode: bool, quiet: bool) -> None:
        self.json_mode = json_mode
        self.quiet = quiet

    def progress(self, message: str) -> None:
        if not self.quiet:
            print(f"{PROG}: {' '.join(message.split())}", file=sys.stderr, flush=True)

    def result(self, doc: dict, text: str | None = None) -> None:
        if self.json_mode:
            print(json.dumps({"ok": True, **doc}, indent=None, sort_keys=True), flush=True)
        elif text is not None:
            sys.stdout.write(text if text.endswith("\n") else text + "\n")
            sys.stdout.flush()


# --- argument parsing ----------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("server and trust")
    g.add_argument("-s", "--server", default=os.environ.get("KIPUKA_EST_SERVER"),
                   help="EST server, https://host[:port][/.well-known/est[/label]] (env KIPUKA_EST_SERVER)")
    g.add_argument("-l", "--label", help="EST label (CA) to use, e.g. iot-fleet")
    g.add_argument("--trust", "--cacert", dest="trust", metavar="PEM",
                   help="trust anchors (CA certificates) for the server's TLS certificate")
    g.add_argument("--fingerprint", metavar="SHA256",
                   help="SHA-256 of the root or issuing CA certificate: bootstraps trust from /cacerts "
                        "when --trust is not given (RFC 7030 4.1.1), else pins it")
    a = common.add_argument_group("authentication")
    a.add_argument("--cert", metavar="PEM", help="client certificate for TLS (mTLS); for reenroll/renew, "
                                                 "the certificate being renewed")
    a.add_argument("--key", metavar="PEM", help="private key of --cert")
    a.add_argument("-u", "--user", default=os.environ.get("KIPUKA_EST_USER"),
                   help="entity id for HTTP Basic (env KIPUKA_EST_USER)")
    a.add_argument("--otp", default=None, help="one-time password (env KIPUKA_EST_OTP; see --otp-file)")
    a.add_argument("--otp-file", metavar="FILE", help="read the one-time password from FILE")
    a.add_argument("--auth-after-challenge", action="store_true",
                   help="send credentials only after a 401 challenge (libest / Bouncy Castle behaviour)")
    a.add_argument("--channel-binding", action="store_true",
                   help="put the TLS 1.2 tls-unique into the CSR's challengePassword (RFC 7030 3.5)")
    o = common.add_argument_group("behaviour and output")
    o.add_argument("--timeout", default="30s", help="network timeout (default 30s)")
    o.add_argument("--max-wait", default="5m", help="longest wait for a pending (202) request (default 5m)")
    o.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    o.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")

    names = argparse.ArgumentParser(add_help=False)
    n = names.add_argument_group("CSR contents (when the CSR is made here)")
    n.add_argument("--cn", help="subject common name (default: the --user entity id)")
    n.add_argument("--san", action="append", default=[], metavar="NAME",
                   help="subjectAltName: dns:NAME, ip:ADDR, email:ADDR, uri:URI (repeatable)")
    n.add_argument("--rdn", action="append", default=[], metavar="TYPE=VALUE",
                   help="another subject attribute, e.g. OU=Sensors (repeatable); fills what an RFC 9908 "
                        "template in /csrattrs leaves open")
    n.add_argument("--key-type", choices=KEY_TYPES, default=None,
                   help="key to generate (default ec-p256, or what /csrattrs asks for)")
    n.add_argument("--csr", metavar="FILE", help="send this CSR (PEM, DER or base64) instead of making one")

    parser = argparse.ArgumentParser(prog=PROG, description="EST (RFC 7030) client of kipuka")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("cacerts", parents=[common], help="fetch the CA certificates (bootstrap trust)")
    p.add_argument("--out", metavar="PEM", help="write the certificates here (default: PEM on stdout)")

    sub.add_parser("csrattrs", parents=[common], help="show the CSR attributes the server asks for")

    p = sub.add_parser("enroll", parents=[common, names], help="simpleenroll with an OTP or a client certificate")
    p.add_argument("--out-cert", required=True, metavar="PEM", help="where to write the certificate")
    p.add_argument("--out-key", metavar="PEM", help="where to write the generated key (0600)")
    p.add_argument("--use-key", metavar="PEM", help="make the CSR with this existing key instead of a new one")
    p.add_argument("--chain", metavar="PEM", help="also write the issuer chain here")

    p = sub.add_parser("reenroll", parents=[common, names], help="simplereenroll with --cert/--key (mTLS)")
    p.add_argument("--out-cert", required=True, metavar="PEM")
    p.add_argument("--out-key", metavar="PEM", help="where to write the new key (with --rekey)")
    p.add_argument("--rekey", action="store_true", help="new key pair instead of reusing --key")
    p.add_argument("--chain", metavar="PEM")

    p = sub.add_parser("serverkeygen", parents=[common, names], help="certificate with a server-generated key")
    p.add_argument("--out-cert", required=True, metavar="PEM")
    p.add_argument("--out-key", required=True, metavar="PEM", help="where to write the returned key (0600)")
    p.add_argument("--delivery", choices=(PKCS8, CSR_KEY), default=CSR_KEY,
                   help="csr-key (default, kipuka's default too): key encrypted to the CSR's throwaway key; "
                        "pkcs8: key protected by TLS only (labels that allow it, and other EST servers)")
    p.add_argument("--chain", metavar="PEM")

    p = sub.add_parser("renew", parents=[common, names], help="re-enroll --cert when it expires soon (for timers)")
    p.add_argument("--if-expiring-within", default="30d", metavar="DURATION",
                   help="renew only when fewer than this remain (default 30d; bare number = days)")
    p.add_argument("--force", action="store_true", help="renew whatever the remaining validity")
    p.add_argument("--rekey", action="store_true", help="make a new key (written over --key) as well")
    p.add_argument("--chain", metavar="PEM")
    return parser


# --- commands ------------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    out = Output(args.json, args.quiet)
    try:
        return COMMANDS[args.command](args, out)
    except EstError as exc:
        return _fail(out, exc)
    except KeyboardInterrupt:
        out.progress("interrupted")
        return 130


def _fail(out: Output, exc: EstError) -> int:
    status = getattr(exc, "status", None)
    line = f"{PROG}: error: {status}: {exc.reason}" if isinstance(exc, HttpError) else f"{PROG}: error: {exc.reason}"
    retry = getattr(exc, "retry_after", None)
    if retry:
        line += f" (retry after {retry} s)"
    print(line, file=sys.stderr, flush=True)
    if out.json_mode:
        doc = {"ok": False, "error": type(exc).__name__, "reason": exc.reason}
        if status:
            doc["status"] = status
        if retry:
            doc["retry_after"] = retry
        print(json.dumps(doc, sort_keys=True), flush=True)
    return _exit_code(exc)


def _exit_code(exc: EstError) -> int:
    if isinstance(exc, TransportError):
        return 3
    if isinstance(exc, ServerError):
        return 5
    if isinstance(exc, HttpError):
        return 4
    if isinstance(exc, (InvalidResponse, DecryptionError)):
        return 6
    if isinstance(exc, PendingTimeout):
        return 7
    if isinstance(exc, BootstrapError):
        return 8
    return 1


def _client(args: argparse.Namespace, out: Output, *, with_cert: bool = True, with_otp: bool = True) -> EstClient:
    if not args.server:
        raise EstError("no server given: use --server URL or KIPUKA_EST_SERVER")
    otp = None
    if with_otp:
        if args.otp_file:
            otp = read_bytes(args.otp_file, "OTP file").decode("utf-8", "replace").strip()
        else:
            otp = args.otp if args.otp is not None else os.environ.get("KIPUKA_EST_OTP")
    auth = None
    if otp:
        if not args.user:
            raise EstError("an OTP needs the entity id: use --user (or KIPUKA_EST_USER)")
        auth = (args.user, otp)
    client_cert = None
    if with_cert and (args.cert or args.key):
        if not (args.cert and args.key):
            raise EstError("--cert and --key go together")
        client_cert = (args.cert, args.key)
    try:
        timeout = parse_duration(args.timeout)
        max_wait = parse_duration(args.max_wait)
    except ValueError as exc:
        raise EstError(str(exc)) from None
    return EstClient(args.server, args.label, trust=args.trust, fingerprint=args.fingerprint,
                     client_cert=client_cert, auth=auth,
                     auth_mode="challenge" if args.auth_after_challenge else "preemptive",
                     channel_binding=args.channel_binding, timeout=timeout, max_wait=max_wait,
                     on_progress=out.progress)


def cmd_cacerts(args: argparse.Namespace, out: Output) -> int:
    with _client(args, out, with_otp=False) as est:
        certs = est.cacerts()
    if args.out:
        write_certs(args.out, certs)
        out.progress(f"wrote {len(certs)} CA certificate(s) to {args.out}")
    pem = b"".join(_pem(c) for c in certs).decode()
    doc = {"certificates": [_describe(c) for c in certs], "out": args.out}
    if not args.out:
        doc["pem"] = pem
    out.result(doc, None if args.out else pem)
    return 0


def cmd_csrattrs(args: argparse.Namespace, out: Output) -> int:
    with _client(args, out) as est:
        attrs = est.csrattrs()
    lines = [f"oid {o}" for o in attrs.oids]
    lines += [f"attribute {k} = {', '.join(v if isinstance(v, str) else v.hex() for v in vs)}"
              for k, vs in attrs.attributes.items()]
    if attrs.template is not None:
        lines += attrs.template.describe()
    if not attrs.der:
        lines = ["(no CSR attributes requested)"]
    out.result({"csrattrs": attrs.to_json(), "key_type": attrs.key_type()}, "\n".join(lines))
    return 0


def cmd_enroll(args: argparse.Namespace, out: Output) -> int:
    with _client(args, out) as est:
        key = None
        if args.csr:
            csr_input: object = load_csr(read_bytes(args.csr, "CSR"))
        else:
            if not args.use_key and not args.out_key:
                raise EstError("enroll makes a new key: give --out-key (or --use-key / --csr)")
            attrs = _server_attrs(est, out)
            if args.use_key:
                key = load_private_key(read_bytes(args.use_key, "key"))
            else:
                key = generate_key(_key_type(args, attrs, out))
            csr_input = _spec(args, key, attrs.template if attrs is not None else None)
        issued = est.simpleenroll(csr_input)  # type: ignore[arg-type]
    if key is not None and args.out_key:
        write_key(args.out_key, key)
    _write_issued(args, issued)
    out.progress(f"enrolled {issued.certificate.subject.rfc4514_string()}, valid until "
                 f"{issued.certificate.not_valid_after_utc:%Y-%m-%d %H:%M}Z; wrote {args.out_cert}")
    out.result(_issued_doc(issued, args.out_cert, args.out_key if key is not None else None))
    return 0


def cmd_reenroll(args: argparse.Namespace, out: Output) -> int:
    current, key = _current_identity(args)
    with _client(args, out) as est:
        new_key = generate_key(args.key_type or _same_type(key)) if args.rekey else key
        if args.rekey and not args.out_key:
            raise EstError("--rekey needs --out-key for the new key")
        csr_input = load_csr(read_bytes(args.csr, "CSR")) if args.csr else CsrSpec.like_certificate(new_key, current)
        issued = est.simplereenroll(csr_input)
    if args.rekey:
        write_key(args.out_key, new_key)
    _write_issued(args, issued)
    out.progress(f"re-enrolled {issued.certificate.subject.rfc4514_string()}, valid until "
                 f"{issued.certificate.not_valid_after_utc:%Y-%m-%d %H:%M}Z; wrote {args.out_cert}")
    out.result(_issued_doc(issued, args.out_cert, args.out_key if args.rekey else None))
    return 0


def cmd_serverkeygen(args: argparse.Namespace, out: Output) -> int:
    with _client(args, out) as est:
        if args.csr:
            if args.delivery == CSR_KEY:
                raise EstError("--delivery csr-key needs the CSR made here (drop --csr)")
            csr_input: object = load_csr(read_bytes(args.csr, "CSR"))
        else:
            csr_input = _spec(args, generate_key(args.key_type or "ec-p256"))
        result = est.serverkeygen(csr_input, delivery=args.delivery)  # type: ignore[arg-type]
    write_key(args.out_key, result.private_key)
    _write_issued(args, result)
    out.progress(f"server generated a key for {result.certificate.subject.rfc4514_string()}; "
                 f"wrote {args.out_cert} and {args.out_key}")
    doc = _issued_doc(result, args.out_cert, args.out_key)
    doc.update(key_media_type=result.key_media_type, key_encrypted=result.encrypted, key_signed=result.signed)
    out.result(doc)
    return 0


def cmd_renew(args: argparse.Namespace, out: Output) -> int:
    try:
        window = parse_duration(args.if_expiring_within, bare_unit="d")
    except ValueError as exc:
        raise EstError(str(exc)) from None
    current, key = _current_identity(args)
    now = dt.datetime.now(dt.timezone.utc)
    remaining = (current.not_valid_after_utc - now).total_seconds()
    if remaining > window and not args.force:
        out.progress(f"not due: {args.cert} expires {current.not_valid_after_utc:%Y-%m-%d %H:%M}Z, "
                     f"in {_human(remaining)}, more than {_human(window)}")
        out.result({"renewed": False, "certificate": args.cert, "not_after": _iso(current.not_valid_after_utc),
                    "remaining_seconds": int(remaining), "window_seconds": int(window)})
        return 0
    out.progress(f"renewing {args.cert}: " + (f"expires in {_human(remaining)}" if remaining > 0 else "expired")
                 + f" (window {_human(window)})")
    with _client(args, out, with_otp=False) as est:
        new_key = generate_key(args.key_type or _same_type(key)) if args.rekey else key
        issued = est.simplereenroll(CsrSpec.like_certificate(new_key, current))
    if args.rekey:
        write_key(args.key, new_key)
    # Keep the file's layout: one that held the chain (a "fullchain") keeps holding it.
    with_chain = read_bytes(args.cert, "certificate").count(b"-----BEGIN CERTIFICATE-----") > 1
    intermediates = [c for c in issued.chain if c.subject != c.issuer]
    write_certs(args.cert, [issued.certificate, *(intermediates if with_chain else [])])
    if args.chain:
        write_certs(args.chain, issued.chain)
    out.progress(f"renewed {issued.certificate.subject.rfc4514_string()}, valid until "
                 f"{issued.certificate.not_valid_after_utc:%Y-%m-%d %H:%M}Z; replaced {args.cert}"
                 + (f" and {args.key}" if args.rekey else ""))
    doc = _issued_doc(issued, args.cert, args.key if args.rekey else None)
    doc.update(renewed=True, previous_serial=format(current.serial_number, "x"))
    out.result(doc)
    return 0


COMMANDS = {"cacerts": cmd_cacerts, "csrattrs": cmd_csrattrs, "enroll": cmd_enroll, "reenroll": cmd_reenroll,
            "serverkeygen": cmd_serverkeygen, "renew": cmd_renew}


# --- helpers -------------------------------------------------------------------------------

def _current_identity(args: argparse.Namespace):
    if not (args.cert and args.key):
        raise EstError(f"{args.command} needs the current certificate and key: --cert and --key")
    cert = read_certificate(args.cert)
    key = load_private_key(read_bytes(args.key, "key"))
    from kipuka.client.verify import same_public_key
    if not same_public_key(cert.public_key(), key.public_key()):
        raise EstError(f"{args.key} is not the key of {args.cert}")
    return cert, key


def _server_attrs(est: EstClient, out: Output) -> CsrAttributes | None:
    """/csrattrs, or None when the server does not offer it (its enrollment answer will tell)."""
    try:
        return est.csrattrs()
    except EstError as exc:
        out.progress(f"csrattrs unavailable ({exc.reason})")
        return None


def _key_type(args: argparse.Namespace, attrs: CsrAttributes | None, out: Output) -> str:
    if args.key_type:
        return args.key_type
    if attrs is None:
        return "ec-p256"
    chosen = attrs.key_type("ec-p256")
    if chosen != "ec-p256":
        out.progress(f"server's csrattrs ask for {chosen}")
    return chosen


def _same_type(key: object) -> str:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return {256: "ec-p256", 384: "ec-p384", 521: "ec-p521"}.get(key.curve.key_size, "ec-p256")
    if isinstance(key, rsa.RSAPrivateKey):
        return f"rsa{max(2048, key.key_size)}"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "ed25519"
    from kipuka import pq
    return pq.key_type(key) or "ec-p256"


def _spec(args: argparse.Namespace, key: object, template: CsrTemplate | None = None) -> CsrSpec:
    cn = args.cn or args.user
    rdns = [parse_rdn(r) for r in args.rdn]
    if template is not None:  # RFC 9908: the server's subject, its open RDNs filled from --cn / --rdn
        fill = [x509.NameAttribute(x509.NameOID.COMMON_NAME, cn)] if cn else []
        if template.wants_san and not args.san:
            raise EstError("the server's CSR template asks for a subjectAltName: give --san")
        spec = CsrSpec.for_names(key, None, args.san)  # type: ignore[arg-type]
        spec.subject = template.subject(fill + rdns)
        return spec
    if not cn and not args.san:
        raise EstError("nothing to name in the CSR: give --cn (or --user) and/or --san")
    spec = CsrSpec.for_names(key, cn, args.san)  # type: ignore[arg-type]
    if rdns:
        spec.subject = x509.Name(rdns + list(spec.subject))
    return spec


def _write_issued(args: argparse.Namespace, issued: Issued) -> None:
    write_certs(args.out_cert, [issued.certificate])
    if getattr(args, "chain", None):
        write_certs(args.chain, issued.chain)


def _issued_doc(issued: Issued, cert_path: str, key_path: str | None) -> dict:
    c = issued.certificate
    return {"certificate": cert_path, "key": key_path, "subject": c.subject.rfc4514_string(),
            "issuer": c.issuer.rfc4514_string(), "serial": format(c.serial_number, "x"),
            "not_before": _iso(c.not_valid_before_utc), "not_after": _iso(c.not_valid_after_utc),
            "sha256": fingerprint(c), "chain": [x.subject.rfc4514_string() for x in issued.chain]}


def _describe(c: x509.Certificate) -> dict:
    return {"subject": c.subject.rfc4514_string(), "issuer": c.issuer.rfc4514_string(),
            "sha256": fingerprint(c), "not_after": _iso(c.not_valid_after_utc)}


def _pem(c: x509.Certificate) -> bytes:
    from cryptography.hazmat.primitives import serialization
    return c.public_bytes(serialization.Encoding.PEM)


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _human(seconds: float) -> str:
    s = abs(int(seconds))
    if s >= 86400:
        return f"{s / 86400:.1f} d"
    if s >= 3600:
        return f"{s / 3600:.1f} h"
    return f"{s} s"


if __name__ == "__main__":
    sys.exit(main())

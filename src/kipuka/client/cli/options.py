"""The options of `kipuka-est`, in groups that each command picks, and what every command shares.

Each command declares only the groups it uses, so `kipuka-est COMMAND --help`
lists that command's options and nothing else.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import textwrap

from kipuka.client import exitcodes
from kipuka.client.client import EstClient
from kipuka.client.csr import KEY_TYPES
from kipuka.client.errors import EstError
from kipuka.client.files import parse_duration, read_bytes

PROG = "kipuka-est"

ENV_SERVER = "  KIPUKA_EST_SERVER  the server URL, when --server is not given"
ENV_OTP = """  KIPUKA_EST_USER    the OTP's entity id, when --user is not given
  KIPUKA_EST_OTP     the one-time password, when neither --otp nor --otp-file is given
                     (an OTP on the command line shows in the process list)"""


def epilog(examples: str = "", environment: str | None = None, otp: bool = True, codes: bool = True) -> str:
    """The end of a --help: examples, environment variables (the server's, the OTP's, or those given), exit codes."""
    parts = []
    if examples:
        parts.append("examples:\n" + examples.strip("\n"))
    if environment is None:
        environment = ENV_SERVER + ("\n" + ENV_OTP if otp else "")
    if environment:
        parts.append("environment:\n" + environment)
    if codes:
        parts.append(exitcodes.help_text())
    return "\n\n".join(parts)


def paragraph(text: str) -> str:
    """A description for RawDescriptionHelpFormatter (which keeps the examples' layout): wrapped here."""
    return textwrap.fill(" ".join(text.split()), width=min(100, shutil.get_terminal_size().columns - 2))


class Output:
    """Progress on stderr (one line each), the result on stdout (text, or one JSON object with --json)."""

    def __init__(self, json_mode: bool, quiet: bool) -> None:
        self.json_mode = json_mode
        self.quiet = quiet

    def progress(self, message: str) -> None:
        if not self.quiet:
            print(f"{PROG}: {' '.join(message.split())}", file=sys.stderr, flush=True)

    def result(self, doc: dict, text: str | None = None, ok: bool = True) -> None:
        if self.json_mode:
            print(json.dumps({"ok": ok, **doc}, sort_keys=True), flush=True)
        elif text is not None:
            sys.stdout.write(text if text.endswith("\n") else text + "\n")
            sys.stdout.flush()


# --- option groups -------------------------------------------------------------------------

def add_server(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("server and trust")
    g.add_argument("-s", "--server", default=os.environ.get("KIPUKA_EST_SERVER"), metavar="URL",
                   help="EST server, https://host[:port][/.well-known/est[/label]] (env KIPUKA_EST_SERVER)")
    g.add_argument("-l", "--label", help="EST label (CA) to use, e.g. iot-fleet")
    g.add_argument("--trust", "--cacert", dest="trust", metavar="PEM",
                   help="trust anchors (CA certificates) for the server's TLS certificate")
    g.add_argument("--fingerprint", metavar="SHA256",
                   help="SHA-256 of the root or issuing CA certificate: bootstraps trust from /cacerts "
                        "when --trust is not given (RFC 7030 4.1.1), else pins it")


def add_client_cert(p: argparse.ArgumentParser, cert_help: str, required: bool = False) -> None:
    g = p.add_argument_group("TLS client certificate" + ("" if required else " (instead of an OTP)"))
    g.add_argument("--cert", metavar="PEM", required=required, help=cert_help)
    g.add_argument("--key", metavar="PEM", required=required, help="private key of --cert")


def add_otp(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("one-time password (HTTP Basic)")
    g.add_argument("-u", "--user", default=os.environ.get("KIPUKA_EST_USER"), metavar="ENTITY",
                   help="entity id of the OTP (env KIPUKA_EST_USER)")
    g.add_argument("--otp", default=None, help="one-time password (env KIPUKA_EST_OTP; prefer --otp-file)")
    g.add_argument("--otp-file", metavar="FILE", help="read the one-time password from FILE")
    g.add_argument("--auth-after-challenge", action="store_true",
                   help="send credentials only after a 401 challenge (libest / Bouncy Castle behaviour)")


def add_enrollment(p: argparse.ArgumentParser, pending: bool = True) -> None:
    g = p.add_argument_group("enrollment")
    g.add_argument("--channel-binding", nargs="?", const="auto", default=None,
                   choices=("auto", "tls-unique", "tls-exporter"),
                   help="link the CSR to the TLS session (RFC 7030 3.5): tls-exporter on TLS 1.3, tls-unique on "
                        "TLS 1.2 (auto, the default when given); =tls-unique forces TLS 1.2 for servers that "
                        "know RFC 7030's tls-unique only. On by itself when /csrattrs asks for it")
    g.add_argument("--max-wait", default="5m", metavar="DURATION",
                   help="longest wait for a request held pending (202) (default 5m); then exit 7, "
                        "and a rerun resumes the same request")
    if pending:
        g.add_argument("--new-request", action="store_true",
                       help="discard a pending request kept from an earlier run and start a new one")


def add_names(p: argparse.ArgumentParser, csr: bool = True, names: bool = True) -> None:
    n = p.add_argument_group("CSR contents (when the CSR is made here)")
    if names:
        n.add_argument("--cn", help="subject common name (default: the --user entity id)")
        n.add_argument("--san", action="append", default=[], metavar="NAME",
                       help="subjectAltName: dns:NAME, ip:ADDR, email:ADDR, uri:URI (repeatable)")
        n.add_argument("--rdn", action="append", default=[], metavar="TYPE=VALUE",
                       help="another subject attribute, e.g. OU=Sensors (repeatable); fills what an RFC 9908 "
                            "template in /csrattrs leaves open")
    n.add_argument("--key-type", choices=KEY_TYPES, default=None,
                   help="key to generate (default ec-p256, or what /csrattrs asks for; renewals keep the type)")
    if csr:
        n.add_argument("--csr", metavar="FILE", help="send this CSR (PEM, DER or base64) instead of making one")


def add_files(p: argparse.ArgumentParser, cert_help: str, key_help: str, key_required: bool = False,
              title: str = "files") -> argparse._ArgumentGroup:
    """--out-cert, --out-key, --chain; the group is returned for the command's own file options."""
    g = p.add_argument_group(title)
    g.add_argument("--out-cert", required=True, metavar="PEM", help=cert_help)
    g.add_argument("--out-key", required=key_required, metavar="PEM", help=key_help)
    g.add_argument("--chain", metavar="PEM", help="also write the issuer chain here")
    return g


def add_output(p: argparse.ArgumentParser) -> None:
    o = p.add_argument_group("output")
    o.add_argument("--timeout", default="30s", metavar="DURATION", help="network timeout (default 30s)")
    o.add_argument("--json", action="store_true", help="print one JSON object on stdout (errors too)")
    o.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")


# --- the client of a command ---------------------------------------------------------------

def make_client(args: argparse.Namespace, out: Output, *, with_cert: bool = True) -> EstClient:
    if not args.server:
        raise EstError("no server given: use --server URL or KIPUKA_EST_SERVER")
    auth = None
    otp = read_otp(args)
    if otp:
        if not args.user:
            raise EstError("an OTP needs the entity id: use --user (or KIPUKA_EST_USER)")
        auth = (args.user, otp)
    client_cert = None
    cert, key = getattr(args, "cert", None), getattr(args, "key", None)
    if with_cert and (cert or key):
        if not (cert and key):
            raise EstError("--cert and --key go together")
        client_cert = (cert, key)
    timeout = duration(args.timeout)
    max_wait = duration(getattr(args, "max_wait", "5m"))
    binding = getattr(args, "channel_binding", None)
    return EstClient(args.server, args.label, trust=args.trust, fingerprint=args.fingerprint,
                     client_cert=client_cert, auth=auth,
                     auth_mode="challenge" if getattr(args, "auth_after_challenge", False) else "preemptive",
                     channel_binding=False if binding is None else (True if binding == "auto" else binding),
                     timeout=timeout, max_wait=max_wait, on_progress=out.progress)


def read_otp(args: argparse.Namespace) -> str | None:
    if not hasattr(args, "otp"):
        return None
    if args.otp_file:
        return read_bytes(args.otp_file, "OTP file").decode("utf-8", "replace").strip()
    return args.otp if args.otp is not None else os.environ.get("KIPUKA_EST_OTP")


def duration(text: str, bare_unit: str = "s") -> float:
    try:
        return parse_duration(text, bare_unit=bare_unit)
    except ValueError as exc:
        raise EstError(str(exc)) from None

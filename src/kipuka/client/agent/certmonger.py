"""`kipuka-est certmonger-submit`: certmonger's external CA helper for an EST server.

certmonger keeps the key and the CSR and decides when to renew; it runs its
CA's helper with the operation in CERTMONGER_OPERATION and the request in
other variables (certmonger's doc/submit.txt), reads the answer on stdout and
the outcome from the exit status:

    SUBMIT, POLL   CERTMONGER_CSR (PEM), CERTMONGER_CERTIFICATE (the one being
                   renewed, if any), CERTMONGER_CA_PROFILE (used as the EST
                   label), CERTMONGER_CA_COOKIE (POLL: what SUBMIT printed)
                   0 issued: the certificate on stdout
                   1 wait: a cookie on stdout
                   2 rejected: the reason on stdout
                   3 could not reach the CA: the reason on stdout (retried later)
                   4 not configured: the reason on stdout (needs a person)
                   5 wait this long: seconds, newline, cookie
    IDENTIFY       a name for the CA
    FETCH-ROOTS    the root certificates from /cacerts, each after a nickname line
    GET-NEW-REQUEST-REQUIREMENTS / GET-RENEW-REQUEST-REQUIREMENTS
                   the CERTMONGER_* variables a request must fill
    anything else  6 (not supported)

EST has no request id to poll with: a request held pending (202) is polled
by sending the same CSR again with the same credentials, and the server
matches it by requester and public key (RFC 7030 4.2.3). So the cookie only
names the operation. A first certificate is enrolled with the OTP
(--user/--otp-file); a renewal (the files given with --cert/--key hold a valid
certificate with the CSR's subject) is re-enrolled over mTLS with that
certificate, so the OTP is used once. The CSR is certmonger's, signed before
the TLS session exists: labels that require channel binding cannot be served.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys

from cryptography import x509

from kipuka import __version__
from kipuka.client.cli.options import Output, add_otp, add_server, make_client, paragraph
from kipuka.client.csr import load_csr, load_private_key
from kipuka.client.describe import pem
from kipuka.client.errors import (BootstrapError, EstError, HttpError, InvalidResponse, NotFound, PendingTimeout,
                                  ServerError, TlsError, TransportError)
from kipuka.client.files import read_bytes, read_certificate
from kipuka.client.verify import is_self_signed, same_public_key

ISSUED, WAIT, REJECTED, UNREACHABLE, UNCONFIGURED, WAIT_WITH_DELAY, UNSUPPORTED = 0, 1, 2, 3, 4, 5, 6

USAGE = """
certmonger runs this helper; set it up once per CA (and key pair files):
  getcert add-ca -c kipuka -e '/usr/bin/kipuka-est certmonger-submit -s https://est.example.com:9443
      --fingerprint 5e0a...9c -l corp-devices -u web-01 --otp-file /etc/kipuka-est/web-01.otp
      --cert /etc/pki/tls/certs/web.crt --key /etc/pki/tls/private/web.key'
  getcert request -c kipuka -f /etc/pki/tls/certs/web.crt -k /etc/pki/tls/private/web.key \\
      -N CN=web-01.example.com -D web-01.example.com -C 'systemctl reload nginx'
Test it by hand as certmonger would:
  CERTMONGER_OPERATION=SUBMIT CERTMONGER_CSR="$(cat req.pem)" kipuka-est certmonger-submit ...

exit codes (certmonger's): 0 issued, 1 wait, 2 rejected, 3 CA unreachable, 4 not configured,
  5 wait (delay on stdout), 6 operation not supported"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("certmonger-submit", help="certmonger's external CA helper (getcert add-ca -e ...)",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description=paragraph("Speaks certmonger's external helper interface (CERTMONGER_OPERATION "
                                   "SUBMIT, POLL, IDENTIFY, FETCH-ROOTS ...), so that `getcert request -c "
                                   "kipuka` enrolls and renews through an EST server."),
                       epilog=USAGE)
    add_server(p)
    add_otp(p)
    g = p.add_argument_group("the certificate certmonger renews")
    g.add_argument("--cert", metavar="PEM", help="the file certmonger writes the certificate to (getcert -f): "
                                                 "once it holds a valid certificate, renewals use it for mTLS")
    g.add_argument("--key", metavar="PEM", help="its key file (getcert -k)")
    g.add_argument("--timeout", default="30s", metavar="DURATION", help="network timeout (default 30s)")
    p.set_defaults(func=cmd_certmonger, json=False, quiet=True)


def cmd_certmonger(args: argparse.Namespace, out: Output) -> int:
    operation = os.environ.get("CERTMONGER_OPERATION", "").strip().upper()
    handler = {"SUBMIT": _submit, "POLL": _submit, "IDENTIFY": _identify, "FETCH-ROOTS": _fetch_roots,
               "GET-NEW-REQUEST-REQUIREMENTS": lambda a: _requirements("CERTMONGER_REQ_SUBJECT"),
               "GET-RENEW-REQUEST-REQUIREMENTS": lambda a: _requirements()}.get(operation)
    if handler is None:
        return UNSUPPORTED
    try:
        return handler(args)
    except EstError as exc:
        return _answer(_code_for(exc), exc.reason)


def _submit(args: argparse.Namespace) -> int:
    csr_text = os.environ.get("CERTMONGER_CSR", "")
    if not csr_text.strip():
        return _answer(UNCONFIGURED, "no CERTMONGER_CSR in the environment (run by certmonger?)")
    csr = load_csr(csr_text.encode())
    if not args.label and os.environ.get("CERTMONGER_CA_PROFILE"):
        args.label = os.environ["CERTMONGER_CA_PROFILE"]  # getcert -T PROFILE picks the EST label
    renewing = _renewal_identity(args, csr)
    args.max_wait = "0s"
    if not renewing:
        args.cert = args.key = None
    est = make_client(args, Output(False, True), with_cert=renewing)
    if renewing:
        est.auth = None  # the certificate authenticates a renewal: the OTP is for the first one only
    elif est.auth is None:
        return _answer(UNCONFIGURED, "nothing to enroll with: give --user and --otp-file for the first "
                                     "certificate (renewals use --cert/--key)")
    try:
        with est:
            issued = est.simplereenroll(csr) if renewing else est.simpleenroll(csr)
    except PendingTimeout as exc:
        return _answer(WAIT_WITH_DELAY, f"{exc.retry_after or 60}\n{_cookie(renewing)}")
    except ServerError as exc:
        if exc.retry_after:  # 503 + Retry-After: the CA is busy, certmonger should come back then
            return _answer(WAIT_WITH_DELAY, f"{exc.retry_after}\n{_cookie(renewing)}")
        raise
    sys.stdout.write(pem(issued.certificate).decode())
    return ISSUED


def _renewal_identity(args: argparse.Namespace, csr: x509.CertificateSigningRequest) -> bool:
    """Renew over mTLS when --cert/--key hold a valid pair for the CSR's subject."""
    if not (args.cert and args.key and os.path.exists(args.cert) and os.path.exists(args.key)):
        return False
    try:
        cert = read_certificate(args.cert)
        key = load_private_key(read_bytes(args.key, "key"))
    except EstError:
        return False
    now = dt.datetime.now(dt.timezone.utc)
    return (same_public_key(cert.public_key(), key.public_key()) and cert.not_valid_after_utc > now
            and cert.subject == csr.subject)


def _cookie(renewing: bool) -> str:
    return "simplereenroll" if renewing else "simpleenroll"


def _identify(args: argparse.Namespace) -> int:
    sys.stdout.write(f"kipuka-est {__version__} (EST, RFC 7030)\n")
    return ISSUED


def _fetch_roots(args: argparse.Namespace) -> int:
    with make_client(args, Output(False, True), with_cert=False) as est:
        certs = est.cacerts()
    roots = [c for c in certs if is_self_signed(c)]
    for cert in roots:
        sys.stdout.write(_nickname(cert) + "\n" + pem(cert).decode())
    return ISSUED


def _nickname(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(names[0].value) if names else cert.subject.rfc4514_string()


def _requirements(*names: str) -> int:
    sys.stdout.write("".join(f"{n}\n" for n in names))
    return ISSUED


def _code_for(exc: EstError) -> int:
    if isinstance(exc, (TlsError, BootstrapError, NotFound)):
        return UNCONFIGURED  # untrusted server, wrong fingerprint, unknown label: a person must act
    if isinstance(exc, (TransportError, ServerError, InvalidResponse)):
        return UNREACHABLE   # certmonger retries these later
    if isinstance(exc, HttpError):
        return REJECTED
    return UNCONFIGURED


def _answer(code: int, text: str) -> int:
    sys.stdout.write(text.rstrip("\n") + "\n")
    return code

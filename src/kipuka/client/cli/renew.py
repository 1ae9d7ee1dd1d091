"""`kipuka-est renew`: re-enroll a certificate in place when it is due (for cron and systemd timers)."""

from __future__ import annotations

import argparse
import datetime as dt

from kipuka.client import describe, enrollment, exitcodes
from kipuka.client.agent.schedule import Threshold
from kipuka.client.cli.commands import FORMATTER, current_identity, issued_doc
from kipuka.client.cli.options import (Output, add_client_cert, add_enrollment, add_names, add_output, add_server,
                                       epilog, make_client, paragraph)
from kipuka.client.csr import CsrSpec, generate_key
from kipuka.client.errors import EstError
from kipuka.client.files import read_bytes
from kipuka.client.install import Destination, install, recover
from kipuka.client.pending import PendingFile, suffix_path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("renew", help="re-enroll --cert in place when it is due (for timers)",
                       formatter_class=FORMATTER,
                       description=paragraph("Re-enroll the certificate over mTLS with itself when fewer than "
                                   "--if-expiring-within remain, and replace the files in place: exit 0 when "
                                   "renewed, 10 when not due, so `renew ... && systemctl reload app` reloads "
                                   "only after a renewal. With --rekey the new key and certificate are written "
                                   "as a pair through a journal (KEY.pending): an interrupted renewal is "
                                   "finished by the next run, and never leaves a key that does not match "
                                   "its certificate."),
                       epilog=epilog("""
  kipuka-est renew -s URL --trust ca.pem --cert device.crt --key device.key \\
      --if-expiring-within 30% --rekey && systemctl reload mosquitto
  kipuka-est renew -s URL --trust ca.pem --cert device.crt --key device.key --if-expiring-within 7d""",
                                     otp=False))
    add_server(p)
    add_client_cert(p, "the certificate to renew (replaced in place); a file holding the chain too keeps it",
                    required=True)
    add_names(p, csr=False, names=False)
    add_enrollment(p)
    g = p.add_argument_group("when")
    g.add_argument("--if-expiring-within", default="30d", metavar="THRESHOLD",
                   help="renew when less than this remains: a duration (30d, 12h; bare number = days) or a "
                        "share of the certificate's lifetime (33%%) (default 30d)")
    g.add_argument("--force", action="store_true", help="renew whatever the remaining validity")
    g.add_argument("--rekey", action="store_true", help="make a new key (written over --key) as well")
    g.add_argument("--chain", metavar="PEM", help="also write the issuer chain here")
    add_output(p)
    p.set_defaults(func=cmd_renew)


def cmd_renew(args: argparse.Namespace, out: Output) -> int:
    try:
        threshold = Threshold.parse(args.if_expiring_within, bare_unit="d", what="--if-expiring-within")
    except ValueError as exc:
        raise EstError(str(exc)) from None
    journal = PendingFile(suffix_path(args.key))
    # Keep the file's layout: one that held the chain (a "fullchain") keeps holding it.
    fullchain = read_bytes(args.cert, "certificate").count(b"-----BEGIN CERTIFICATE-----") > 1
    finished = recover(Destination(args.cert, args.key, args.chain, fullchain=fullchain), journal)
    if finished is not None:
        out.progress(f"finished the renewal that an earlier run left half done: {args.cert} now holds serial "
                     f"{finished.serial_number:x}, valid until {finished.not_valid_after_utc:%Y-%m-%d %H:%M}Z")
    kept = journal.load()  # a request an earlier run left in flight: due, whatever the dates say
    if kept is not None and args.new_request:
        out.progress(f"discarding the pending request kept in {journal.path}")
        journal.remove()
        kept = None
    rekey = args.rekey or kept is not None  # a kept --rekey request holds the new key: resumed as it was
    dest = Destination(args.cert, args.key if rekey else None, args.chain, fullchain=fullchain)
    current, key = current_identity(args)
    now = dt.datetime.now(dt.timezone.utc)
    remaining = (current.not_valid_after_utc - now).total_seconds()
    window = threshold.of(current)
    if finished is not None or (remaining > window and not args.force and kept is None):
        if finished is None:
            out.progress(f"not due: {args.cert} expires {current.not_valid_after_utc:%Y-%m-%d %H:%M}Z, "
                         f"in {describe.human(remaining)}, more than {describe.human(window)}")
        out.result({"renewed": finished is not None, "certificate": args.cert,
                    "not_after": describe.iso(current.not_valid_after_utc),
                    "remaining_seconds": int(remaining), "window_seconds": int(window)})
        return exitcodes.OK if finished is not None else exitcodes.NOT_DUE
    out.progress(f"renewing {args.cert}: "
                 + (f"expires in {describe.human(remaining)}" if remaining > 0 else "expired")
                 + f" (window {describe.human(window)})")
    dest.check(*(((journal.path, "pending request"),) if rekey else ()))
    operation = enrollment.renewal_operation(key)
    if operation == enrollment.FULLCMC_REENROLL:
        out.progress("an ML-DSA certificate: renewing by a /fullcmc request signed with its key (this TLS stack "
                     "cannot present it as a client certificate)")
    with make_client(args, out, with_cert=operation == enrollment.SIMPLEREENROLL) as est:
        attrs = enrollment.server_attributes(est, out.progress)
        enrollment.follow_channel_binding(est, attrs, out.progress)
        new_key = (lambda: generate_key(args.key_type or enrollment.same_key_type(key))) if rekey else (lambda: key)
        issued, request = enrollment.request(est, operation, lambda: CsrSpec.like_certificate(new_key(), current),
                                             journal if rekey else None, progress=out.progress,
                                             holder=(current, key))
    install(dest, issued.certificate, issued.chain, request.key if rekey else None, journal if rekey else None,
            request)
    out.progress(f"renewed {issued.certificate.subject.rfc4514_string()}, valid until "
                 f"{issued.certificate.not_valid_after_utc:%Y-%m-%d %H:%M}Z; replaced {args.cert}"
                 + (f" and {args.key}" if rekey else ""))
    doc = issued_doc(issued, args.cert, args.key if rekey else None)
    doc.update(renewed=True, previous_serial=format(current.serial_number, "x"))
    out.result(doc)
    return exitcodes.OK

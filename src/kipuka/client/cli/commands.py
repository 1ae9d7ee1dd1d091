"""The one-shot commands: cacerts, csrattrs, enroll, reenroll, serverkeygen (renew: cli/renew.py)."""

from __future__ import annotations

import argparse

from cryptography import x509

from kipuka.client import describe, enrollment
from kipuka.client.cli.options import (Output, add_client_cert, add_enrollment, add_files, add_names, add_otp,
                                       add_output, add_server, epilog, make_client, paragraph)
from kipuka.client.csr import CsrSpec, generate_key, load_csr, load_private_key
from kipuka.client.errors import EstError
from kipuka.client.files import read_bytes, read_certificate, write_certs
from kipuka.client.install import Destination, install
from kipuka.client.pending import PendingFile, suffix_path
from kipuka.client.results import Issued
from kipuka.client.serverkeygen import CSR_KEY, PKCS8
from kipuka.client.template import CsrTemplate, parse_rdn
from kipuka.client.verify import same_public_key

FORMATTER = argparse.RawDescriptionHelpFormatter


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cacerts", help="fetch the CA certificates (bootstrap trust)", formatter_class=FORMATTER,
                       description=paragraph("GET /cacerts: the CA certificates of the label, verified against --trust, "
                                   "or bootstrapped with --fingerprint (RFC 7030 4.1.1)."),
                       epilog=epilog("""
  kipuka-est cacerts -s https://est.example.com:9443 \\
      --fingerprint 5E:0A:...:9C --out ca.pem        # first contact: check the CA out of band
  kipuka-est cacerts -s https://est.example.com:9443 --trust ca.pem -l iot-fleet""", otp=False))
    add_server(p)
    p.add_argument("--out", metavar="PEM", help="write the certificates here (default: PEM on stdout)")
    add_output(p)
    p.set_defaults(func=cmd_cacerts)

    p = sub.add_parser("csrattrs", help="show what the server asks CSRs to contain", formatter_class=FORMATTER,
                       description=paragraph("GET /csrattrs: key types, curves and sizes, signature algorithms, extensions "
                                   "and channel binding the server asks for, by name."),
                       epilog=epilog("  kipuka-est csrattrs -s https://est.example.com:9443 --trust ca.pem -l iot-fleet"))
    add_server(p)
    add_client_cert(p, "client certificate, for servers that want one on /csrattrs")
    add_otp(p)
    add_output(p)
    p.set_defaults(func=cmd_csrattrs)

    p = sub.add_parser("enroll", help="simpleenroll with an OTP or a client certificate", formatter_class=FORMATTER,
                       description=paragraph("POST /simpleenroll: a new key and a CSR made here (or --use-key / --csr), "
                                   "authenticated with an OTP or a client certificate. The key is kept in "
                                   "OUT_KEY.pending (mode 0600) until the certificate is in place, so a request "
                                   "held for approval, or interrupted, is resumed by running the same command "
                                   "again: same key, same request, no second use of the OTP."),
                       epilog=epilog("""
  kipuka-est enroll -s https://est.example.com:9443 --fingerprint 5E:0A:...:9C \\
      -u device-001 --otp-file otp.txt --cn device-001.example.com \\
      --out-cert device.crt --out-key device.key
  kipuka-est enroll -s URL --trust ca.pem --cert idevid.crt --key idevid.key \\
      --cn device-001.example.com --out-cert device.crt --out-key device.key"""))
    add_server(p)
    add_client_cert(p, "client certificate for TLS, e.g. a manufacturer's IDevID")
    add_otp(p)
    add_names(p)
    add_enrollment(p)
    g = add_files(p, "where to write the certificate", "where to write the generated key (0600)")
    g.add_argument("--use-key", metavar="PEM", help="make the CSR with this existing key instead of a new one")
    add_output(p)
    p.set_defaults(func=cmd_enroll)

    p = sub.add_parser("reenroll", help="simplereenroll with the current certificate (mTLS)",
                       formatter_class=FORMATTER,
                       description=paragraph("POST /simplereenroll over mTLS with --cert/--key; the CSR repeats the "
                                   "certificate's subject and subjectAltName. The result goes to new files "
                                   "(renew replaces the current ones in place)."),
                       epilog=epilog("""
  kipuka-est reenroll -s URL --trust ca.pem --cert device.crt --key device.key --out-cert new.crt
  kipuka-est reenroll -s URL --trust ca.pem --cert device.crt --key device.key --rekey \\
      --out-cert new.crt --out-key new.key""", otp=False))
    add_server(p)
    add_client_cert(p, "the certificate being renewed", required=True)
    add_names(p, names=False)
    add_enrollment(p)
    g = add_files(p, "where to write the new certificate", "where to write the new key (with --rekey)")
    g.add_argument("--rekey", action="store_true", help="new key pair instead of reusing --key")
    add_output(p)
    p.set_defaults(func=cmd_reenroll)

    p = sub.add_parser("serverkeygen", help="certificate with a server-generated key", formatter_class=FORMATTER,
                       description=paragraph("POST /serverkeygen: the server makes the key pair and returns it with the "
                                   "certificate (RFC 7030 4.4)."),
                       epilog=epilog("""
  kipuka-est serverkeygen -s URL --trust ca.pem -l keygen -u device-001 --otp-file otp.txt \\
      --cn device-001.example.com --out-cert device.crt --out-key device.key"""))
    add_server(p)
    add_client_cert(p, "client certificate for TLS")
    add_otp(p)
    add_names(p)
    add_enrollment(p, pending=False)
    g = add_files(p, "where to write the certificate", "where to write the returned key (0600)", key_required=True,
                  title="files and delivery")
    g.add_argument("--delivery", choices=(PKCS8, CSR_KEY), default=PKCS8,
                   help="pkcs8 (default, RFC 7030's): key protected by TLS only; csr-key: key encrypted "
                        "to the CSR's throwaway key (kipuka's extension, on labels that allow it). A label "
                        "that encrypts anyway is answered with the CSR's key")
    add_output(p)
    p.set_defaults(func=cmd_serverkeygen)


# --- commands ------------------------------------------------------------------------------

def cmd_cacerts(args: argparse.Namespace, out: Output) -> int:
    if args.out:
        Destination(args.out).check()
    with make_client(args, out, with_cert=False) as est:
        certs = est.cacerts()
    if args.out:
        write_certs(args.out, certs)
        out.progress(f"wrote {len(certs)} CA certificate(s) to {args.out}")
    pem = b"".join(describe.pem(c) for c in certs).decode()
    doc = {"certificates": [describe.certificate_doc(c) for c in certs], "out": args.out}
    if not args.out:
        doc["pem"] = pem
    out.result(doc, None if args.out else pem)
    return 0


def cmd_csrattrs(args: argparse.Namespace, out: Output) -> int:
    with make_client(args, out) as est:
        attrs = est.csrattrs()
    out.result({"csrattrs": attrs.to_json(), "key_type": attrs.key_type(),
                "key_types": describe.key_type_names(attrs), "channel_binding": attrs.wants_challenge_password},
               "\n".join(describe.csrattrs_lines(attrs)))
    return 0


def cmd_enroll(args: argparse.Namespace, out: Output) -> int:
    if not args.csr and not args.use_key and not args.out_key:
        raise EstError("enroll makes a new key: give --out-key (or --use-key / --csr)")
    journal = PendingFile(suffix_path(args.out_key)) if args.out_key and not (args.csr or args.use_key) else None
    dest = Destination(args.out_cert, args.out_key, args.chain)
    dest.check(*(((journal.path, "pending request"),) if journal else ()))
    with make_client(args, out) as est:
        if args.csr:
            issued = est.simpleenroll(load_csr(read_bytes(args.csr, "CSR")))
            key = None
            request = None
        else:
            attrs = enrollment.server_attributes(est, out.progress)
            enrollment.follow_channel_binding(est, attrs, out.progress)

            def make_spec() -> CsrSpec:
                key = (load_private_key(read_bytes(args.use_key, "key")) if args.use_key
                       else generate_key(enrollment.key_type(args.key_type, attrs, out.progress)))
                return spec_of(args, key, attrs.template if attrs is not None else None)
            issued, request = enrollment.request(est, "simpleenroll", make_spec, journal, progress=out.progress,
                                                 new_request=args.new_request)
            key = request.key
    install(dest, issued.certificate, issued.chain, key, journal, request)
    out.progress(f"enrolled {issued.certificate.subject.rfc4514_string()}, valid until "
                 f"{issued.certificate.not_valid_after_utc:%Y-%m-%d %H:%M}Z; wrote {args.out_cert}")
    out.result(issued_doc(issued, args.out_cert, args.out_key if key is not None else None))
    return 0


def cmd_reenroll(args: argparse.Namespace, out: Output) -> int:
    if args.rekey and not args.out_key:
        raise EstError("--rekey needs --out-key for the new key")
    current, key = current_identity(args)
    journal = PendingFile(suffix_path(args.out_key)) if args.rekey and not args.csr else None
    dest = Destination(args.out_cert, args.out_key if args.rekey else None, args.chain)
    dest.check(*(((journal.path, "pending request"),) if journal else ()))
    request = None
    with make_client(args, out) as est:
        if args.csr:
            issued = est.simplereenroll(load_csr(read_bytes(args.csr, "CSR")))
        else:
            attrs = enrollment.server_attributes(est, out.progress)
            enrollment.follow_channel_binding(est, attrs, out.progress)
            new_key = (lambda: generate_key(args.key_type or enrollment.same_key_type(key))) if args.rekey else (lambda: key)
            issued, request = enrollment.request(est, "simplereenroll",
                                                 lambda: CsrSpec.like_certificate(new_key(), current), journal,
                                                 progress=out.progress, new_request=args.new_request)
    install(dest, issued.certificate, issued.chain, request.key if (args.rekey and request) else None, journal, request)
    out.progress(f"re-enrolled {issued.certificate.subject.rfc4514_string()}, valid until "
                 f"{issued.certificate.not_valid_after_utc:%Y-%m-%d %H:%M}Z; wrote {args.out_cert}")
    out.result(issued_doc(issued, args.out_cert, args.out_key if args.rekey else None))
    return 0


def cmd_serverkeygen(args: argparse.Namespace, out: Output) -> int:
    Destination(args.out_cert, args.out_key, args.chain).check()
    with make_client(args, out) as est:
        if args.csr:
            if args.delivery == CSR_KEY:
                raise EstError("--delivery csr-key needs the CSR made here (drop --csr)")
            csr_input: object = load_csr(read_bytes(args.csr, "CSR"))
        else:
            csr_input = spec_of(args, generate_key(args.key_type or "ec-p256"))
        result = est.serverkeygen(csr_input, delivery=args.delivery)  # type: ignore[arg-type]
    if result.encrypted and args.delivery == PKCS8:
        out.progress("the label's policy encrypted the key to the CSR's key anyway; opened it with that key")
    install(Destination(args.out_cert, args.out_key, args.chain), result.certificate, result.chain,
            result.private_key)  # type: ignore[arg-type]
    out.progress(f"server generated a key for {result.certificate.subject.rfc4514_string()}; "
                 f"wrote {args.out_cert} and {args.out_key}")
    doc = issued_doc(result, args.out_cert, args.out_key)
    doc.update(key_media_type=result.key_media_type, key_encrypted=result.encrypted, key_signed=result.signed)
    out.result(doc)
    return 0


# --- helpers -------------------------------------------------------------------------------

def current_identity(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """The certificate being renewed and its key, checked to belong together before anything is sent."""
    cert = read_certificate(args.cert)
    key = load_private_key(read_bytes(args.key, "key"))
    if not same_public_key(cert.public_key(), key.public_key()):
        raise EstError(f"{args.key} is not the key of {args.cert}")
    return cert, key


def spec_of(args: argparse.Namespace, key: object, template: CsrTemplate | None = None) -> CsrSpec:
    cn = args.cn or getattr(args, "user", None)
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


def issued_doc(issued: Issued, cert_path: str, key_path: str | None) -> dict:
    return {"certificate": cert_path, "key": key_path, **describe.certificate_doc(issued.certificate),
            "chain": [x.subject.rfc4514_string() for x in issued.chain]}


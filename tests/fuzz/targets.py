"""Parser contracts as one-argument targets: bytes in; return, or raise the parser's own error.

Shared by the Hypothesis properties (tests/fuzz/test_parsers.py) and the
coverage-guided by-hand mode (tests/fuzz/atheris_fuzz.py). A target swallows
exactly the errors its callers turn into a 4xx (or, in the client, into an
EstError); anything else escapes and is a finding.
"""

from __future__ import annotations

from typing import Callable

from cryptography import x509

from kipuka.client import wire
from kipuka.client.cms import open_server_generated_key
from kipuka.client.errors import EstError, InvalidResponse
from kipuka.config import Policy
from kipuka.errors import BadRequest, Forbidden, Unauthenticated
from kipuka.est import codec
from kipuka.est import fullcmc as est_fullcmc
from kipuka.est.identity import basic_credentials
from kipuka.keydelivery.multipart import MultipartError, parse_media_type, parse_multipart_mixed
from kipuka.ra import csr as csrcheck
from kipuka.ra import name_policy, subject_policy
from kipuka.ra.change_subject import change_subject_name
from kipuka.ra.keygen_request import read_ask
from kipuka.ra.linking import check_linking
from kipuka.server.proxy import ProxyHeaderError, parse_v2


def _expected(fn, *args) -> object:  # type: ignore[no-untyped-def]
    try:
        return fn(*args)
    except (BadRequest, Forbidden):
        return None


def check_csr(der_csr: bytes, pol: Policy, binding: tuple[str, bytes] | None) -> None:
    """Every check the RA makes of a CSR, each on its own so that one refusal does not hide the next."""
    csr: x509.CertificateSigningRequest | None = _expected(csrcheck.parse_csr, der_csr)  # type: ignore[assignment]
    if csr is None:
        return
    try:
        csrcheck.check_proof_of_possession(csr, pol)
        pop = True
    except BadRequest:
        pop = False
    _expected(check_linking, csr, lambda: binding, pol, False)
    san = _expected(csrcheck.requested_san, csr)
    _expected(csrcheck.check_names, csr.subject, san, pol)
    _expected(name_policy.check_names_for_entity, csr.subject, san, "device-1", pol.otp_name_rule)
    _expected(subject_policy.certified_subject, csr.subject, pol)
    _expected(change_subject_name, der_csr)
    _expected(read_ask, der_csr)
    if pop:  # a CSR that passed proof of possession has a usable key and names for the certificate
        csrcheck.public_key_sha256(csr)
        csrcheck.template(csr, san, pol)  # type: ignore[arg-type]


def _split(data: bytes) -> tuple[str, bytes]:
    """A header value and a body from one input: up to the first LF, then the rest."""
    head, _, body = data.partition(b"\n")
    return head.decode("latin-1"), body


def body_decoders(data: bytes) -> None:
    for decode in (codec.decode_body, est_fullcmc.decode):
        try:
            decode(data)
        except BadRequest:
            pass


def csr(data: bytes) -> None:
    check_csr(data, Policy(), None)


def csrattrs_client(data: bytes) -> None:
    try:
        attrs = wire.csr_attributes(data)
    except InvalidResponse:
        return
    attrs.key_types(), attrs.key_type(), attrs.signature_hash(), attrs.extension_requests, attrs.to_json()


def multipart(data: bytes) -> None:
    ctype, body = _split(data)
    for strict in (True, False):
        try:
            parse_multipart_mixed(ctype, body, strict=strict)
        except MultipartError:
            pass
    try:
        for part in wire.multipart(body, wire.parse_media_type(ctype)):
            part.media, part.transfer_encoding
    except InvalidResponse:
        pass


def media_type(data: bytes) -> None:
    value = data.decode("latin-1")
    try:
        parse_media_type(value)
    except MultipartError:
        pass
    wire.parse_media_type(value)
    est_fullcmc._media_type_problem(value)


def authorization(data: bytes) -> None:
    try:
        basic_credentials(data.decode("latin-1"))
    except Unauthenticated:
        pass


def proxy_header(data: bytes) -> None:
    try:
        parse_v2(data)
    except ProxyHeaderError:
        pass


def client_bodies(data: bytes) -> None:
    cte, body = _split(data)
    for read in (wire.decode_body, wire.certificates):
        try:
            read(body, "fuzz", cte or None)
        except InvalidResponse:
            pass
    wire.retry_after(cte)
    wire.error_reason(body, cte, "fallback")


def server_generated_key(data: bytes) -> None:
    try:
        open_server_generated_key(data)
    except EstError:
        pass


TARGETS: dict[str, Callable[[bytes], None]] = {
    "body": body_decoders, "csr": csr, "csrattrs": csrattrs_client, "multipart": multipart,
    "media-type": media_type, "authorization": authorization, "proxy": proxy_header,
    "client-body": client_bodies, "server-key": server_generated_key,
}

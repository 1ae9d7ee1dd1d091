"""The client against other servers' wire conventions, replayed byte for byte (see fakes.py)."""

from __future__ import annotations

import base64
import email.utils
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import AttributeOID

from kipuka.client import (BadRequest, ChannelBindingError, CsrSpec, EstClient, InvalidResponse, PendingTimeout,
                           ServerError, ServiceUnavailable, TlsError, Unauthorized, generate_key)
from kipuka.client.serverkeygen import CSR_KEY, PKCS8
from tests.client.fakes import b64_lines, certs_only, csr_of, http_response

CERTS_ONLY = "application/pkcs7-mime; smime-type=certs-only"
LIBEST_401 = b"The server was unable to authorize the request.\n"


def client(srv, replay_ca, **kwargs) -> EstClient:
    kwargs.setdefault("trust", str(replay_ca.anchors))
    return EstClient(srv.base, kwargs.pop("label", None), **kwargs)


def spec(name: str = "device.example.com", kind: str = "ec-p256") -> CsrSpec:
    return CsrSpec.for_names(generate_key(kind), name)


# --- libest conventions -------------------------------------------------------------------------

def libest_cacerts(ca):
    body = b64_lines(certs_only(ca.chain), 64, b"\n")
    return lambda req: http_response(200, "OK", [("Content-Type", "application/pkcs7-mime"),
                                                 ("Content-Transfer-Encoding", "base64")], body)


def libest_enroll(ca, *, require_auth: bool = True):
    def handler(req):
        if require_auth and "authorization" not in req.headers:
            return http_response(401, "Unauthorized", [("WWW-Authenticate", 'Basic realm="estrealm"'),
                                                       ("Content-Type", "text/plain")], LIBEST_401)
        cert = ca.issue(csr_of(req))
        return http_response(200, "OK", [("Content-Type", CERTS_ONLY), ("Content-Transfer-Encoding", "base64")],
                             b64_lines(certs_only([cert]), 64, b"\n"))
    return handler


def test_libest_cacerts_without_smime_type(replay, replay_ca):
    srv = replay()
    srv.route("cacerts", libest_cacerts(replay_ca))
    certs = client(srv, replay_ca).cacerts()
    assert {c.subject for c in certs} == {replay_ca.issuing.subject, replay_ca.root.subject}


def test_libest_challenge_then_credentials_on_the_same_connection(replay, replay_ca):
    srv = replay()
    srv.route("cacerts", libest_cacerts(replay_ca))
    srv.route("simpleenroll", libest_enroll(replay_ca))
    c = client(srv, replay_ca, auth=("dev", "s3cret"), auth_mode="challenge")
    issued = c.simpleenroll(spec())
    first, second = srv.requests[0], srv.requests[1]
    assert "authorization" not in first.headers
    assert second.headers["authorization"] == "Basic " + base64.b64encode(b"dev:s3cret").decode()
    assert first.connection == second.connection  # answered on the kept-alive connection
    assert first.body == second.body
    assert issued.chain[0].subject == replay_ca.issuing.subject


def test_preemptive_credentials_are_sent_with_the_first_post_only_to_post(replay, replay_ca):
    srv = replay()
    srv.route("cacerts", libest_cacerts(replay_ca))
    srv.route("simpleenroll", libest_enroll(replay_ca))
    c = client(srv, replay_ca, auth=("dev", "pw"))
    c.simpleenroll(spec())
    posts = [r for r in srv.requests if r.method == "POST"]
    assert len(posts) == 1 and posts[0].headers["authorization"].startswith("Basic ")
    # the chain check fetched /cacerts, without credentials
    gets = [r for r in srv.requests if r.method == "GET"]
    assert gets and all("authorization" not in r.headers for r in gets)


def test_the_request_is_what_every_est_server_accepts(replay, replay_ca):
    srv = replay()
    srv.route("cacerts", libest_cacerts(replay_ca))
    srv.route("simpleenroll", libest_enroll(replay_ca, require_auth=False))
    client(srv, replay_ca, auth=("dev", "pw")).simpleenroll(spec())
    req = srv.requests[0]
    assert req.headers["content-type"] == "application/pkcs10"
    assert req.headers["content-transfer-encoding"] == "base64"
    assert "transfer-encoding" not in req.headers and int(req.headers["content-length"]) == len(req.body)
    lines = req.body.split(b"\n")
    assert lines[-1] == b"" and all(len(ln) <= 64 for ln in lines) and b"\r" not in req.body
    x509.load_der_x509_csr(csr_of(req))


def test_challenge_mode_without_credentials_raises_unauthorized_with_libest_reason(replay, replay_ca):
    srv = replay()
    srv.route("simpleenroll", libest_enroll(replay_ca))
    with pytest.raises(Unauthorized) as err:
        client(srv, replay_ca, auth_mode="challenge").simpleenroll(spec())
    assert err.value.reason == "The server was unable to authorize the request."
    assert err.value.challenge == 'Basic realm="estrealm"'


def test_a_digest_only_challenge_is_reported_not_answered(replay, replay_ca):
    srv = replay()
    srv.route("simpleenroll", lambda req: http_response(
        401, "Unauthorized", [("WWW-Authenticate", 'Digest realm="estrealm", nonce="abc", qop="auth"')], b""))
    with pytest.raises(Unauthorized, match="asks for digest authentication"):
        client(srv, replay_ca, auth=("a", "b"), auth_mode="challenge").simpleenroll(spec())
    assert len(srv.requests) == 1


def test_libest_csrattrs_challenge_password_pop(replay, replay_ca):
    srv = replay()
    srv.route("csrattrs", lambda req: http_response(
        200, "OK", [("Content-Type", "application/csrattrs"), ("Content-Transfer-Encoding", "base64")],
        b"MAsGCSqGSIb3DQEJBw==\n"))
    attrs = client(srv, replay_ca).csrattrs()
    assert attrs.wants_challenge_password and attrs.oids == ("1.2.840.113549.1.9.7",)


def test_csrattrs_204_means_nothing_requested(replay, replay_ca):
    srv = replay()
    srv.route("csrattrs", lambda req: http_response(204, "No Content", [], b""))
    attrs = client(srv, replay_ca).csrattrs()
    assert attrs.oids == () and attrs.attributes == {} and attrs.key_type() == "ec-p256"


# --- globalsign/est conventions --------------------------------------------------------------

def gs_body(der: bytes) -> bytes:
    return b64_lines(der, 76, b"\r\n")


def test_globalsign_cacerts_chunked_76_column_crlf(replay, replay_ca):
    srv = replay()
    srv.route("cacerts", lambda req: http_response(
        200, "OK", [("Content-Type", "application/pkcs7-mime"), ("Content-Transfer-Encoding", "base64"),
                    ("Server", "GlobalSign EST Server 1.0.6")], gs_body(certs_only(replay_ca.chain)), chunked=True))
    assert len(client(srv, replay_ca).cacerts()) == 2


def test_globalsign_enroll_chunked_and_error_text(replay, replay_ca):
    srv = replay()
    srv.route("cacerts", libest_cacerts(replay_ca))

    def enroll(req):
        if req.headers.get("authorization") is None:
            return http_response(401, "Unauthorized", [
                ("WWW-Authenticate", 'Basic realm="estserver@localhost"'),
                ("Content-Type", "text/plain; charset=utf-8")], b"401 authorization required\n")
        csr = x509.load_der_x509_csr(csr_of(req))
        if csr.subject.rfc4514_string() == "CN=bad.example.com":  # stands for any CSR it refuses
            return http_response(400, "Bad Request", [("Content-Type", "text/plain; charset=utf-8")],
                                 b"400 invalid PKCS#10\n")
        cert = replay_ca.issue(csr.public_bytes(serialization.Encoding.DER))
        return http_response(200, "OK", [("Content-Type", CERTS_ONLY), ("Content-Transfer-Encoding", "base64")],
                             gs_body(certs_only([cert])), chunked=True)
    srv.route("simpleenroll", enroll)
    c = client(srv, replay_ca, auth=("dev", "pw"), auth_mode="challenge")
    key = generate_key()
    assert c.simpleenroll(CsrSpec.for_names(key, "gs.example.com")).certificate.public_key() == key.public_key()
    with pytest.raises(BadRequest) as err:
        c.simpleenroll(spec("bad.example.com"))
    assert err.value.reason == "400 invalid PKCS#10"


def test_globalsign_serverkeygen_key_part_first(replay, replay_ca):
    srv = replay()
    srv.route("cacerts", libest_cacerts(replay_ca))
    new_key = generate_key("ec-p256")

    def keygen(req):
        cert = replay_ca.issue(csr_of(req), new_key.public_key())
        pkcs8 = new_key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())
        body = (b"--estServerKeyGenBoundary\r\n"
                b"Content-Type: application/pkcs8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                + gs_body(pkcs8) +
                b"\r\n--estServerKeyGenBoundary\r\n"
                b"Content-Type: application/pkcs7-mime; smime-type=certs-only\r\n"
                b"Content-Transfer-Encoding: base64\r\n\r\n"
                + gs_body(certs_only([cert])) +
                b"\r\n--estServerKeyGenBoundary--\r\n")
        return http_response(200, "OK", [("Content-Type", "multipart/mixed; boundary=estServerKeyGenBoundary")],
                             body, chunked=True)
    srv.route("serverkeygen", keygen)
    result = client(srv, replay_ca, auth=("dev", "pw")).serverkeygen(spec())
    assert result.private_key.public_key() == new_key.public_key()
    assert result.certificate.public_key() == new_key.public_key()
    assert result.key_media_type == "application/pkcs8" and not result.encrypted


def test_libest_style_serverkeygen_pkcs1_key_labelled_pkcs8_lf_and_trailing_crlf(replay, replay_ca):
    srv = replay()
    srv.route("cacerts", libest_cacerts(replay_ca))
    new_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def keygen(req):
        cert = replay_ca.issue(csr_of(req), new_key.public_key())
        pkcs1 = new_key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.TraditionalOpenSSL,
                                      serialization.NoEncryption())
        body = (b"\n--est-server-boundary\n"
                b"Content-Type: application/pkcs7-mime; smime-type=certs-only\n"
                b"Content-Transfer-Encoding: base64\n\n" + b64_lines(certs_only([cert])) +
                b"\n--est-server-boundary\nContent-Type: application/pkcs8\n"
                b"Content-Transfer-Encoding: base64\n\n" + b64_lines(pkcs1) +
                b"\n--est-server-boundary--\r\n\r\n")
        return http_response(200, "OK", [("Content-Type", 'multipart/mixed; boundary="est-server-boundary"')], body)
    srv.route("serverkeygen", keygen)
    result = client(srv, replay_ca, auth=("dev", "pw")).serverkeygen(spec())
    assert result.private_key.public_key().public_numbers() == new_key.public_key().public_numbers()


def test_serverkeygen_key_encrypted_to_the_csr_key(replay, replay_ca):
    """Delivery (b) of the design: CMS EnvelopedData to the CSR's own (RSA) key."""
    srv = replay()
    srv.route("cacerts", libest_cacerts(replay_ca))
    new_key = generate_key("ec-p256")

    def keygen(req):
        csr = x509.load_der_x509_csr(csr_of(req))
        cert = replay_ca.issue(csr_of(req), new_key.public_key())
        # cryptography's builder wants a recipient certificate: wrap the CSR key in a throwaway one
        recipient = replay_ca.issue(csr_of(req), csr.public_key())
        pkcs8 = new_key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())
        env = (pkcs7.PKCS7EnvelopeBuilder().set_data(pkcs8).add_recipient(recipient)
               .encrypt(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary]))
        body = (b"--b\r\nContent-Type: application/pkcs7-mime; smime-type=certs-only\r\n"
                b"Content-Transfer-Encoding: base64\r\n\r\n" + b64_lines(certs_only([cert])) +
                b"\r\n--b\r\nContent-Type: application/pkcs7-mime; smime-type=server-generated-key\r\n"
                b"Content-Transfer-Encoding: base64\r\n\r\n" + b64_lines(env) + b"\r\n--b--\r\n")
        return http_response(200, "OK", [("Content-Type", "multipart/mixed; boundary=b")], body)
    srv.route("serverkeygen", keygen)
    c = client(srv, replay_ca, auth=("dev", "pw"))
    result = c.serverkeygen(spec(kind="rsa2048"), delivery=CSR_KEY)
    assert result.encrypted and result.private_key.public_key() == new_key.public_key()
    # asked for pkcs8, the key comes encrypted to the CSR's key anyway: opened with it, not thrown away
    assert c.serverkeygen(spec(kind="rsa2048"), delivery=PKCS8).encrypted
    # without the decryption key (a ready-made CSR) the client says so instead of returning garbage
    from kipuka.client import DecryptionError
    with pytest.raises(DecryptionError, match="encrypted key"):
        c.serverkeygen(spec(kind="rsa2048").build(), delivery=PKCS8)


def test_serverkeygen_unencrypted_key_when_encryption_was_asked_is_refused(replay, replay_ca):
    srv = replay()
    new_key = generate_key()

    def keygen(req):
        cert = replay_ca.issue(csr_of(req), new_key.public_key())
        pkcs8 = new_key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())
        body = (b"--b\r\nContent-Type: application/pkcs8\r\n\r\n" + b64_lines(pkcs8) +
                b"\r\n--b\r\nContent-Type: application/pkcs7-mime; smime-type=certs-only\r\n\r\n"
                + b64_lines(certs_only([cert])) + b"\r\n--b--\r\n")
        return http_response(200, "OK", [("Content-Type", "multipart/mixed; boundary=b")], body)
    srv.route("serverkeygen", keygen)
    with pytest.raises(InvalidResponse, match="unencrypted"):
        client(srv, replay_ca, auth=("d", "p")).serverkeygen(spec(kind="rsa2048"), delivery=CSR_KEY)


# --- body variations ---------------------------------------------------------------------------

@pytest.mark.parametrize("variant", ["one-line-no-cte", "crlf-pem", "raw-der-binary", "trailing-nul",
                                     "no-padding", "x-pkcs7-certificates"])
def test_cacerts_body_variations(replay, replay_ca, variant):
    der = certs_only(replay_ca.chain)
    headers = [("Content-Type", "application/pkcs7-mime; smime-type=certs-only")]
    if variant == "one-line-no-cte":
        body = base64.b64encode(der)
    elif variant == "crlf-pem":
        body = b"-----BEGIN PKCS7-----\r\n" + b64_lines(der, 64, b"\r\n") + b"-----END PKCS7-----\r\n"
    elif variant == "raw-der-binary":
        headers.append(("Content-Transfer-Encoding", "binary"))
        body = der
    elif variant == "trailing-nul":
        body = b64_lines(der) + b"\x00"
    elif variant == "no-padding":
        body = base64.b64encode(der).rstrip(b"=")
    else:
        headers = [("Content-Type", "application/x-pkcs7-certificates")]
        body = b64_lines(der)
    srv = replay()
    srv.route("cacerts", lambda req: http_response(200, "OK", headers, body, close=True))
    c = client(srv, replay_ca)
    assert len(c.cacerts()) == 2
    assert len(c.cacerts()) == 2  # the server closed the connection; the client reconnects


def test_html_error_page_becomes_a_one_line_reason(replay, replay_ca):
    srv = replay()
    srv.route("cacerts", lambda req: http_response(
        502, "Bad Gateway", [("Content-Type", "text/html")],
        b"<html><head><title>502</title></head><body>\n<h1>Bad Gateway</h1>\n<p>upstream down</p></body></html>"))
    with pytest.raises(ServerError) as err:
        client(srv, replay_ca).cacerts()
    assert err.value.status == 502 and err.value.reason == "502 Bad Gateway upstream down"


def test_503_carries_retry_after(replay, replay_ca):
    srv = replay()
    srv.route("simpleenroll", lambda req: http_response(
        503, "Service Unavailable", [("Retry-After", "120"), ("Content-Type", "text/plain")],
        b"CA iot-fleet unavailable: all replicas down\n"))
    with pytest.raises(ServiceUnavailable) as err:
        client(srv, replay_ca, auth=("a", "b")).simpleenroll(spec())
    assert err.value.retry_after == 120 and err.value.reason == "CA iot-fleet unavailable: all replicas down"
    assert isinstance(err.value, ServerError)


# --- 202 + Retry-After ------------------------------------------------------------------------

def test_202_is_followed_after_retry_after_with_the_same_request(replay, replay_ca):
    srv = replay()
    srv.route("cacerts", libest_cacerts(replay_ca))
    answers = iter(["202", "202-date", "200"])

    def enroll(req):
        step = next(answers)
        if step == "202":
            return http_response(202, "Accepted", [("Retry-After", "7")], b"")
        if step == "202-date":
            when = email.utils.formatdate(time.time() + 3, usegmt=True)
            return http_response(202, "Accepted", [("Retry-After", when)], b"", close=True)
        return libest_enroll(replay_ca, require_auth=False)(req)
    srv.route("simpleenroll", enroll)
    slept: list[float] = []
    csr = spec().build()
    c = client(srv, replay_ca, auth=("a", "b"), sleep=slept.append)
    issued = c.simpleenroll(csr)
    assert issued.certificate.public_key() == csr.public_key()
    assert slept[0] == 7 and 1 <= slept[1] <= 4
    posts = [r for r in srv.requests if r.method == "POST"]
    assert len(posts) == 3 and len({r.body for r in posts}) == 1
    assert all(r.headers.get("authorization") for r in posts)


def test_202_beyond_the_bounded_wait_raises_pending_timeout(replay, replay_ca):
    srv = replay()
    srv.route("simpleenroll", lambda req: http_response(202, "Accepted", [("Retry-After", "3600")], b""))
    slept: list[float] = []
    with pytest.raises(PendingTimeout) as err:
        client(srv, replay_ca, auth=("a", "b"), max_wait=600, sleep=slept.append).simpleenroll(spec())
    assert err.value.retry_after == 3600 and slept == []


def test_202_polling_stops_at_the_deadline(replay, replay_ca):
    srv = replay()
    srv.route("simpleenroll", lambda req: http_response(202, "Accepted", [("Retry-After", "10")], b""))
    now = [0.0]
    slept: list[float] = []

    def sleep(s):
        slept.append(s)
        now[0] += s
    with pytest.raises(PendingTimeout):
        client(srv, replay_ca, auth=("a", "b"), max_wait=35, sleep=sleep, clock=lambda: now[0]).simpleenroll(spec())
    assert slept == [10, 10, 10]


# --- what the client checks ----------------------------------------------------------------------

def test_certificate_for_another_key_is_refused(replay, replay_ca):
    srv = replay()
    other = generate_key()
    srv.route("simpleenroll", lambda req: http_response(
        200, "OK", [("Content-Type", CERTS_ONLY)],
        b64_lines(certs_only([replay_ca.issue(csr_of(req), other.public_key())]))))
    with pytest.raises(InvalidResponse, match="CSR's public key"):
        client(srv, replay_ca, auth=("a", "b")).simpleenroll(spec())


def test_certificate_not_signed_by_the_labels_ca_is_refused(replay, replay_ca):
    srv = replay()
    srv.route("cacerts", libest_cacerts(replay_ca))
    rogue = generate_key()
    srv.route("simpleenroll", lambda req: http_response(
        200, "OK", [("Content-Type", CERTS_ONLY)],
        b64_lines(certs_only([replay_ca.issue(csr_of(req), signer=rogue)]))))
    with pytest.raises(InvalidResponse, match="not signed by any known CA"):
        client(srv, replay_ca, auth=("a", "b")).simpleenroll(spec())


def test_raw_certificate_instead_of_pkcs7_is_refused(replay, replay_ca):
    srv = replay()
    srv.route("simpleenroll", lambda req: http_response(
        200, "OK", [("Content-Type", "application/pkix-cert")],
        b64_lines(replay_ca.issue(csr_of(req)).public_bytes(serialization.Encoding.DER))))
    with pytest.raises(InvalidResponse, match="not a certs-only PKCS#7"):
        client(srv, replay_ca, auth=("a", "b")).simpleenroll(spec())


def test_html_with_200_is_refused(replay, replay_ca):
    srv = replay()
    srv.route("cacerts", lambda req: http_response(200, "OK", [("Content-Type", "text/html")], b"<html></html>"))
    with pytest.raises(InvalidResponse, match="Content-Type"):
        client(srv, replay_ca).cacerts()


def test_same_origin_redirect_is_followed(replay, replay_ca):
    srv = replay()
    srv.route("cacerts", lambda req: http_response(307, "Temporary Redirect",
                                                   [("Location", "/.well-known/est/moved/cacerts")], b""))
    srv.route("cacerts", libest_cacerts(replay_ca), label="moved")
    assert len(client(srv, replay_ca).cacerts()) == 2


def test_labels_go_into_the_path(replay, replay_ca):
    srv = replay()
    srv.route("cacerts", libest_cacerts(replay_ca), label="iot-fleet")
    assert client(srv, replay_ca, label="iot-fleet").cacerts()
    assert EstClient(f"{srv.base}/.well-known/est/iot-fleet", trust=str(replay_ca.anchors)).cacerts()
    assert srv.requests[-1].path == "/.well-known/est/iot-fleet/cacerts"


# --- channel binding ---------------------------------------------------------------------------

def _challenge_password(csr_der: bytes) -> str:
    csr = x509.load_der_x509_csr(csr_der)
    return csr.attributes.get_attribute_for_oid(AttributeOID.CHALLENGE_PASSWORD).value.decode()


def test_channel_binding_tls_unique_matches_the_servers_view(replay, replay_ca):
    srv = replay()
    srv.route("cacerts", libest_cacerts(replay_ca))
    srv.route("simpleenroll", libest_enroll(replay_ca))
    c = client(srv, replay_ca, auth=("a", "b"), auth_mode="challenge", channel_binding="tls-unique")
    c.simpleenroll(spec())
    for req in (r for r in srv.requests if r.method == "POST"):
        assert req.tls_unique and _challenge_password(csr_of(req)) == base64.b64encode(req.tls_unique).decode()


def test_channel_binding_across_reconnects_rebinds_the_csr(replay, replay_ca):
    srv = replay()
    srv.route("cacerts", libest_cacerts(replay_ca))
    answers = iter([http_response(202, "Accepted", [("Retry-After", "1")], b"", close=True)])

    def enroll(req):
        for raw in answers:
            return raw
        return libest_enroll(replay_ca, require_auth=False)(req)
    srv.route("simpleenroll", enroll)
    c = client(srv, replay_ca, auth=("a", "b"), channel_binding="tls-unique", sleep=lambda s: None)
    c.simpleenroll(spec())
    posts = [r for r in srv.requests if r.method == "POST"]
    assert posts[0].connection != posts[1].connection and posts[0].tls_unique != posts[1].tls_unique
    assert [_challenge_password(csr_of(r)) for r in posts] == [base64.b64encode(r.tls_unique).decode() for r in posts]


def test_channel_binding_needs_a_csr_made_by_the_client(replay, replay_ca):
    srv = replay()
    with pytest.raises(ChannelBindingError, match="CsrSpec"):
        client(srv, replay_ca, channel_binding=True).simpleenroll(spec().build())


def test_channel_binding_against_a_tls13_only_server_fails_clearly(replay, replay_ca):
    srv = replay(tls13_only=True)
    with pytest.raises(TlsError, match="channel binding needs TLS 1.2"):
        client(srv, replay_ca, channel_binding="tls-unique", auth=("a", "b")).simpleenroll(spec())


# --- fullcmc -----------------------------------------------------------------------------------

def test_fullcmc_posts_a_cmc_request_and_returns_the_response(replay, replay_ca):
    srv = replay()
    response_der = certs_only([replay_ca.issuing])  # a stand-in PKIResponse SignedData carrying a certificate
    srv.route("fullcmc", lambda req: http_response(
        200, "OK", [("Content-Type", "application/pkcs7-mime; smime-type=CMC-response"),
                    ("Content-Transfer-Encoding", "base64")], b64_lines(response_der)))
    result = client(srv, replay_ca, auth=("a", "b")).fullcmc(b"\x30\x03\x02\x01\x00")
    assert result.der == response_der and result.certificates == [replay_ca.issuing]
    req = srv.requests[0]
    assert req.headers["content-type"] == "application/pkcs7-mime; smime-type=CMC-request"
    assert base64.b64decode(req.body) == b"\x30\x03\x02\x01\x00"


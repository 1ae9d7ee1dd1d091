"""RFC 8951 wire rules and the interop traps of design.md, one test per rule."""

import base64
import http.client
import socket
import ssl

import pytest
import requests

from tests.helpers import CERTS_ONLY, b64, certs_from, make_csr, unique


def _enroll_body(server, body: bytes, headers: dict | None = None, label: str | None = None):
    entity = unique()
    otp = server.otp(entity)
    return server.post("simpleenroll", body, auth=(entity, otp), headers=headers, label=label)


def _csr_for_new_entity(server):
    entity = unique()
    otp = server.otp(entity)
    key, der = make_csr(f"{entity}.example.com")
    return entity, otp, key, der


# --- requests ------------------------------------------------------------------------------

def test_request_base64_on_one_long_line_is_accepted(server):
    entity, otp, key, der = _csr_for_new_entity(server)
    r = server.post("simpleenroll", base64.b64encode(der), auth=(entity, otp))
    assert certs_from(r)[0].public_key() == key.public_key()


def test_request_base64_with_crlf_spaces_and_tabs_is_accepted(server):
    entity, otp, key, der = _csr_for_new_entity(server)
    text = base64.b64encode(der).decode()
    messy = "\r\n".join(" \t" + text[i:i + 40] + " " for i in range(0, len(text), 40)) + "\r\n"
    r = server.post("simpleenroll", messy.encode(), auth=(entity, otp))
    assert certs_from(r)[0].public_key() == key.public_key()


def test_request_content_transfer_encoding_is_ignored(server):
    entity, otp, key, der = _csr_for_new_entity(server)
    headers = {"Content-Type": "application/pkcs10", "Content-Transfer-Encoding": "binary"}
    r = server.post("simpleenroll", b64(der), auth=(entity, otp), headers=headers)
    assert certs_from(r)[0].public_key() == key.public_key()


def test_request_without_content_transfer_encoding_is_accepted(server):
    entity, otp, key, der = _csr_for_new_entity(server)
    r = server.post("simpleenroll", b64(der), auth=(entity, otp))
    assert "Content-Transfer-Encoding" not in r.request.headers
    assert r.status_code == 200


def test_pem_armoured_csr_is_accepted(server):
    entity, otp, key, der = _csr_for_new_entity(server)
    pem = b"-----BEGIN CERTIFICATE REQUEST-----\n" + b64(der) + b"-----END CERTIFICATE REQUEST-----\n"
    r = server.post("simpleenroll", pem, auth=(entity, otp))
    assert certs_from(r)[0].public_key() == key.public_key()


def test_content_type_parameters_are_accepted(server):
    entity, otp, key, der = _csr_for_new_entity(server)
    r = server.post("simpleenroll", b64(der), auth=(entity, otp),
                    headers={"Content-Type": "Application/PKCS10; charset=us-ascii"})
    assert r.status_code == 200


def test_chunked_request_body_is_accepted(server):
    entity, otp, key, der = _csr_for_new_entity(server)
    body = b64(der)
    chunks = (body[i:i + 100] for i in range(0, len(body), 100))  # a generator makes requests send chunked
    r = requests.post(server.url("simpleenroll"), data=chunks, auth=(entity, otp), verify=server.ca_bundle,
                      headers={"Content-Type": "application/pkcs10"}, timeout=30)
    assert r.request.headers.get("Transfer-Encoding") == "chunked"
    assert certs_from(r)[0].public_key() == key.public_key()


# --- responses -----------------------------------------------------------------------------

def test_response_is_base64_wrapped_at_64_columns_with_lf(server):
    r = server.get("cacerts")
    body = r.content
    assert b"\r" not in body
    lines = body.split(b"\n")
    assert lines[-1] == b""
    assert all(len(line) == 64 for line in lines[:-2]) and 0 < len(lines[-2]) <= 64
    base64.b64decode(body, validate=False)


def test_response_has_content_length_and_no_chunking(server):
    r = server.get("cacerts")
    assert int(r.headers["Content-Length"]) == len(r.content)
    assert "Transfer-Encoding" not in r.headers


def test_response_carries_content_transfer_encoding_base64(server):
    entity, otp, key, der = _csr_for_new_entity(server)
    r = server.post("simpleenroll", b64(der), auth=(entity, otp))
    assert r.headers["Content-Transfer-Encoding"] == "base64"
    assert server.get("cacerts").headers["Content-Transfer-Encoding"] == "base64"


def test_certificate_response_content_type_is_exact(server):
    entity, otp, key, der = _csr_for_new_entity(server)
    r = server.post("simpleenroll", b64(der), auth=(entity, otp))
    assert r.headers["Content-Type"] == CERTS_ONLY
    assert server.get("cacerts").headers["Content-Type"] == CERTS_ONLY


def test_csrattrs_content_type_is_application_csrattrs(server):
    r = server.get("csrattrs")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/csrattrs"
    assert base64.b64decode(r.content)[0] == 0x30


def test_no_stray_bytes_after_base64(server):
    body = server.get("cacerts").content
    assert body.rstrip(b"\n") == body[:-1]
    assert b"\x00" not in body


# --- errors --------------------------------------------------------------------------------

def _assert_plain_error(r, status: int, fragment: str):
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["Content-Type"].startswith("text/plain")
    text = r.text
    assert text.endswith("\n") and text.count("\n") == 1, repr(text)
    assert fragment.lower() in text.lower(), text


def test_bad_base64_is_400(server):
    _assert_plain_error(_enroll_body(server, b"this is *not* base64!!"), 400, "base64")


def test_body_that_is_not_a_csr_is_400(server):
    _assert_plain_error(_enroll_body(server, b64(b"\x30\x03\x02\x01\x05")), 400, "not a valid PKCS#10")


def test_empty_body_is_400(server):
    _assert_plain_error(_enroll_body(server, b""), 400, "empty")


def test_wrong_content_type_is_400(server):
    entity, otp, key, der = _csr_for_new_entity(server)
    r = server.post("simpleenroll", b64(der), auth=(entity, otp), headers={"Content-Type": "text/plain"})
    _assert_plain_error(r, 400, "application/pkcs10")


def test_missing_content_type_is_400(server):
    entity, otp, key, der = _csr_for_new_entity(server)
    conn = http.client.HTTPSConnection("localhost", server.port,
                                       context=ssl.create_default_context(cafile=server.ca_bundle))
    token = base64.b64encode(f"{entity}:{otp}".encode()).decode()
    conn.request("POST", "/.well-known/est/simpleenroll", body=b64(der),
                 headers={"Authorization": f"Basic {token}"})
    resp = conn.getresponse()
    body = resp.read().decode()
    assert resp.status == 400 and "missing content-type" in body.lower()


def test_oversized_body_is_413(server):
    r = _enroll_body(server, b"A" * (64 * 1024 + 1))
    _assert_plain_error(r, 413, "exceeds")


def test_oversized_chunked_body_is_413(server):
    entity = unique()
    otp = server.otp(entity)
    chunks = (b"A" * 8192 for _ in range(10))
    r = requests.post(server.url("simpleenroll"), data=chunks, auth=(entity, otp), verify=server.ca_bundle,
                      headers={"Content-Type": "application/pkcs10"}, timeout=30)
    assert r.status_code == 413


def test_unknown_label_is_404(server):
    _assert_plain_error(server.get("cacerts", label="no-such-label"), 404, "unknown EST label")


def test_unknown_operation_is_404(server):
    _assert_plain_error(server.get("simpleenrol"), 404, "unknown EST operation")


def test_wrong_method_is_405_with_allow(server):
    r = server.post("cacerts", b"")
    assert r.status_code == 405 and r.headers["Allow"] == "GET, HEAD"
    r = requests.put(server.url("simpleenroll"), data=b"", verify=server.ca_bundle, timeout=10)
    assert r.status_code == 405 and r.headers["Allow"] == "POST"


def test_serverkeygen_while_off_is_a_plain_404(server):
    """serverkeygen is off by default ([est] serverkeygen, or per label): 404 with a plain-text reason."""
    body = b64(make_csr("x.example.com")[1])
    _assert_plain_error(server.post("serverkeygen", body, headers={"Content-Type": "application/pkcs10"}), 404,
                        "serverkeygen) is not enabled")


def test_fullcmc_while_off_is_a_plain_404(server):
    """fullcmc is off by default: 404 with a plain-text reason (RFC 7030 allows it), not a CMC response."""
    _assert_plain_error(server.post("fullcmc", b64(b"\x30\x03\x02\x01\x00"),
                                    headers={"Content-Type": "application/pkcs7-mime; smime-type=CMC-request"}),
                        404, "fullcmc is not enabled")


def test_401_carries_basic_challenge(server):
    entity, otp, key, der = _csr_for_new_entity(server)
    r = server.post("simpleenroll", b64(der))
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"] == 'Basic realm="est"'


def test_the_bare_challenge_has_an_empty_body_and_a_refusal_has_a_reason(server):
    """Bouncy Castle's client fails on a challenge 401 with a body; a refused credential keeps its reason."""
    entity, otp, key, der = _csr_for_new_entity(server)
    challenge = server.post("simpleenroll", b64(der))
    assert challenge.content == b"" and challenge.headers["Content-Length"] == "0"
    refused = server.post("simpleenroll", b64(der), auth=(entity, "wrong"))
    assert refused.status_code == 401 and refused.text == "invalid entity id or OTP\n"


def test_tls_1_1_is_refused(server):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        ctx.set_ciphers("ALL:@SECLEVEL=0")
    except (ValueError, ssl.SSLError):
        pytest.skip("this OpenSSL cannot even offer TLS 1.1")
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        with pytest.raises(ssl.SSLError):
            with ctx.wrap_socket(sock, server_hostname="localhost"):
                pass


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_tls_1_2_and_1_3_are_served(server, version):
    ctx = ssl.create_default_context(cafile=server.ca_bundle)
    ctx.minimum_version = ctx.maximum_version = version
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        with ctx.wrap_socket(sock, server_hostname="localhost") as tls:
            assert tls.version() == {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]


def test_wire_level_rejections_are_audited(server):
    entity = unique()
    otp = server.otp(entity)
    server.post("simpleenroll", b"%%% not base64 %%%", auth=(entity, otp))
    server.post("simpleenroll", b"", auth=(entity, otp), label="no-such-label")
    lines = [l.split("\t") for l in server.cli("audit", "list", "--limit", "500").stdout.splitlines()]
    mine = [l for l in lines if l[4] == entity and l[2] == "rejected"]
    reasons = " | ".join(l[7] for l in mine)
    assert "base64" in reasons and "unknown EST label" in reasons

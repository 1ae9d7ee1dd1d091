"""design.md's interoperability traps, each a test over every operation it can bite.

Already tested elsewhere, on the operation named (not repeated here):

* requiring Content-Transfer-Encoding on requests, base64 on one long line or with
  CR/LF/space/tab, PEM-armoured CSRs, chunked requests: test_wire.py, /simpleenroll;
* a PKCS#1 key labelled PKCS#8: test_serverkeygen.py::test_pkcs8_delivery_on_a_label_that_lists_only_pkcs8;
* no WWW-Authenticate challenge: test_wire.py (simpleenroll), test_serverkeygen.py,
  test_fullcmc.py; and Bouncy Castle's own client in test_bouncycastle.py. /simplereenroll
  answers 401 without a Basic challenge on purpose, since only a client certificate can
  satisfy it: test_mtls.py::test_reenroll_without_client_certificate_is_401_without_a_basic_challenge.

test_wire.py checks the response traps on /cacerts and /simpleenroll; here every response
kipuka sends (cacerts, csrattrs, simpleenroll, simplereenroll, serverkeygen in both its
unencrypted and CMS forms, fullcmc) and every request body the other POST operations take.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pyasn1.codec.der import decoder as der_decoder
from pyasn1_modules import rfc5652

from tests import der_strict
from tests.helpers import CERTS_ONLY, Server, b64, enroll_identity, make_csr, unique
from tests.interop.der import CMC_REQUEST, CMC_RESPONSE, openssl_signed

SGK = "application/pkcs7-mime; smime-type=server-generated-key"
PKCS10 = {"Content-Type": "application/pkcs10"}


@dataclass
class Identity:
    """A device enrolled on the unlabeled path: its files and an OTP with uses to spare (on any label:
    serverkeygen-cms goes to corp-devices)."""

    crt: str
    key: str
    cn: str
    entity: str
    otp: str
    dir: Path

    def key_object(self):
        return serialization.load_pem_private_key(Path(self.key).read_bytes(), None)


@pytest.fixture(scope="module")
def device(interop_server: Server, tmp_path_factory: pytest.TempPathFactory) -> Identity:
    d = tmp_path_factory.mktemp("traps")
    crt, key, cert = enroll_identity(interop_server, d)
    entity = unique()
    return Identity(crt, key, cert.subject.rfc4514_string().removeprefix("CN="), entity,
                    interop_server.otp(entity, "--uses", "100", "--label", "any"), d)


def request(srv: Server, device: Identity, op: str, body_of=b64, headers: dict | None = None,
            chunked: bool = False) -> requests.Response:
    """A valid request for `op`, its body (DER) encoded by `body_of`; GETs ignore the body."""
    label = "corp-devices" if op == "serverkeygen-cms" else None
    path = op.removesuffix("-cms")
    if path in ("cacerts", "csrattrs"):
        return srv.get(path, label=label)
    if path == "simplereenroll":
        der, auth, cert, ctype = make_csr(device.cn, device.key_object())[1], None, (device.crt, device.key), PKCS10
    elif path == "fullcmc":
        der = openssl_signed(device.dir, make_csr(device.cn, device.key_object())[1], device.crt, device.key)
        auth, cert, ctype = None, None, {"Content-Type": CMC_REQUEST}
    else:
        der = make_csr(f"{device.entity}.example.com")[1]
        auth, cert, ctype = (device.entity, device.otp), None, PKCS10
    body = body_of(der)
    data = (body[i:i + 100] for i in range(0, len(body), 100)) if chunked else body
    return requests.post(srv.url(path, label), data=data, auth=auth, cert=cert, verify=srv.ca_bundle,
                         headers={**ctype, **(headers or {})}, timeout=30)


RESPONSE_OPS = ["cacerts", "csrattrs", "simpleenroll", "simplereenroll", "serverkeygen", "serverkeygen-cms", "fullcmc"]
EXACT_TYPE = {"cacerts": CERTS_ONLY, "csrattrs": "application/csrattrs", "simpleenroll": CERTS_ONLY,
              "simplereenroll": CERTS_ONLY, "fullcmc": CMC_RESPONSE}
# RFC 7030 Appendix A.4: the key part first, the certificate second
PART_TYPES = {"serverkeygen": ["application/pkcs8", CERTS_ONLY], "serverkeygen-cms": [SGK, CERTS_ONLY]}


@pytest.fixture(scope="module")
def answers(interop_server: Server, device: Identity) -> dict[str, requests.Response]:
    out = {}
    for op in RESPONSE_OPS:
        r = request(interop_server, device, op)
        assert r.status_code == 200, (op, r.status_code, r.text[:300])
        out[op] = r
    return out


@dataclass
class Body:
    """One base64 body as sent: a whole response, or the payload of one part of a multipart one."""

    content_type: str
    headers: dict[str, str]
    raw: bytes
    eol: bytes  # LF in HTTP bodies; CRLF inside multipart, MIME's canonical line end
    terminated: bool  # a part's last line ends where the CRLF of the next delimiter begins (RFC 2046)

    def lines(self) -> list[bytes]:
        lines = self.raw.split(self.eol)
        if self.terminated:
            assert lines[-1] == b"", f"not terminated by {self.eol!r}: {self.raw[-10:]!r}"
            lines = lines[:-1]
        return lines


def bodies(op: str, r: requests.Response) -> list[Body]:
    """The response body, or the parts of a multipart one split by hand (headers and bytes as sent)."""
    if op not in PART_TYPES:
        return [Body(r.headers["Content-Type"], dict(r.headers), r.content, b"\n", True)]
    delimiter = b"--" + r.headers["Content-Type"].split("boundary=", 1)[1].strip('"').encode()
    assert r.content.startswith(delimiter + b"\r\n"), r.content[:100]
    pieces = r.content[len(delimiter) + 2:].split(b"\r\n" + delimiter)
    assert pieces[-1] == b"--\r\n", pieces[-1][:100]
    out = []
    for i, piece in enumerate(pieces[:-1]):
        if i:
            assert piece.startswith(b"\r\n"), piece[:100]
            piece = piece[2:]
        head, _, payload = piece.partition(b"\r\n\r\n")
        headers = dict(line.split(": ", 1) for line in head.decode("ascii").split("\r\n"))
        out.append(Body(headers["Content-Type"], headers, payload, b"\r\n", False))
    return out


def der_length(der: bytes) -> int:
    """Length of the first DER TLV in der, header included."""
    n = der[1]
    if n < 0x80:
        return 2 + n
    k = n & 0x7F
    return 2 + k + int.from_bytes(der[2:2 + k], "big")


# --- responses -----------------------------------------------------------------------------------

@pytest.mark.parametrize("op", RESPONSE_OPS)
def test_sending_base64_on_one_long_line(answers, op: str):
    """Never one long line: 64 columns (what OpenSSL BIO clients read), LF (GNU base64 -d), CRLF in MIME."""
    for body in bodies(op, answers[op]):
        lines = body.lines()
        assert all(len(line) == 64 for line in lines[:-1]) and 0 < len(lines[-1]) <= 64, [len(l) for l in lines]
        if body.eol == b"\n":
            assert b"\r" not in body.raw


@pytest.mark.parametrize("op", RESPONSE_OPS)
def test_omitting_content_transfer_encoding_base64_on_responses(answers, op: str):
    """Bouncy Castle decodes only when the header is there: on every body, and on every MIME part."""
    for body in bodies(op, answers[op]):
        assert body.headers.get("Content-Transfer-Encoding") == "base64", body.headers


@pytest.mark.parametrize("op", RESPONSE_OPS)
def test_content_type_not_exact(answers, op: str):
    """Bouncy Castle compares the media type as a string: no parameter added, none reordered."""
    r = answers[op]
    if op in PART_TYPES:
        assert re.fullmatch(r'multipart/mixed; boundary=[0-9A-Za-z\'()+_,./:=?-]{1,70}', r.headers["Content-Type"])
        assert [b.content_type for b in bodies(op, r)] == PART_TYPES[op]
    else:
        assert r.headers["Content-Type"] == EXACT_TYPE[op]


@pytest.mark.parametrize("op", RESPONSE_OPS)
def test_chunked_responses(answers, op: str):
    """Bouncy Castle needs Content-Length: never Transfer-Encoding: chunked."""
    r = answers[op]
    assert "Transfer-Encoding" not in r.headers
    assert int(r.headers["Content-Length"]) == len(r.content)


@pytest.mark.parametrize("op", RESPONSE_OPS)
def test_trailing_nul_or_stray_bytes_after_base64(answers, op: str):
    """Go's decoder rejects anything but base64 and line ends; the DER inside has no trailing bytes."""
    for body in bodies(op, answers[op]):
        lines = body.lines()
        assert all(re.fullmatch(rb"[A-Za-z0-9+/]+", line) for line in lines[:-1]), body.raw
        assert re.fullmatch(rb"[A-Za-z0-9+/]+={0,2}", lines[-1]), body.raw[-20:]
        der = base64.b64decode(b"".join(lines), validate=True)
        assert der_length(der) == len(der)


@pytest.mark.parametrize("op", ["cacerts", "simpleenroll", "simplereenroll", "serverkeygen", "serverkeygen-cms"])
def test_raw_der_certificate_instead_of_certs_only_pkcs7(answers, op: str):
    """Certificates always come as a certs-only SignedData: no signer, no content, certificates only."""
    cert_body = next(b for b in bodies(op, answers[op]) if b.content_type == CERTS_ONLY)
    der = base64.b64decode(cert_body.raw)
    with pytest.raises(ValueError):
        x509.load_der_x509_certificate(der)
    info, rest = der_decoder.decode(der, asn1Spec=rfc5652.ContentInfo())
    assert not rest and info["contentType"] == rfc5652.id_signedData
    signed, rest = der_decoder.decode(info["content"], asn1Spec=rfc5652.SignedData())
    assert not rest
    assert len(signed["signerInfos"]) == 0
    assert signed["encapContentInfo"]["eContentType"] == rfc5652.id_data
    assert not signed["encapContentInfo"]["eContent"].isValue
    assert len(signed["certificates"]) >= 1
    assert der_strict.certs_only(der)  # and DER: the certificate SET OF sorted (X.690 §11.6)


@pytest.mark.parametrize("op", ["serverkeygen", "serverkeygen-cms"])
def test_extra_crlf_after_the_last_mime_boundary(answers, op: str):
    """The multipart body ends at the close delimiter and its CRLF: no epilogue (Bouncy Castle)."""
    r = answers[op]
    boundary = r.headers["Content-Type"].split("boundary=", 1)[1].strip('"').encode()
    assert r.content.startswith(b"--" + boundary + b"\r\n")
    assert r.content.endswith(b"\r\n--" + boundary + b"--\r\n")
    assert r.content.count(b"--" + boundary + b"--") == 1


# --- requests on the other POST operations ---------------------------------------------------------

POST_OPS = ["simplereenroll", "serverkeygen", "fullcmc"]


def _messy(der: bytes) -> bytes:
    text = base64.b64encode(der).decode()
    return ("\r\n".join(" \t" + text[i:i + 40] + " " for i in range(0, len(text), 40)) + "\r\n").encode()


@pytest.mark.parametrize("op", POST_OPS)
def test_requiring_content_transfer_encoding_on_requests(interop_server: Server, device: Identity, op: str):
    """RFC 8951: a request without the header, or with a wrong one, is read as base64 all the same."""
    assert request(interop_server, device, op).status_code == 200
    r = request(interop_server, device, op, headers={"Content-Transfer-Encoding": "binary"})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("form", ["one-long-line", "crlf-space-tab"])
@pytest.mark.parametrize("op", POST_OPS)
def test_rejecting_base64_on_one_line_or_with_whitespace(interop_server: Server, device: Identity, op: str,
                                                          form: str):
    encode = base64.b64encode if form == "one-long-line" else _messy
    r = request(interop_server, device, op, body_of=encode)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("op", ["simplereenroll", "serverkeygen"])
def test_pem_armoured_csr(interop_server: Server, device: Identity, op: str):
    def pem(der: bytes) -> bytes:
        return b"-----BEGIN CERTIFICATE REQUEST-----\n" + b64(der) + b"-----END CERTIFICATE REQUEST-----\n"

    r = request(interop_server, device, op, body_of=pem)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("op", POST_OPS)
def test_chunked_requests(interop_server: Server, device: Identity, op: str):
    """Go's client sends chunked bodies: accepted on every POST."""
    r = request(interop_server, device, op, chunked=True)
    assert r.request.headers.get("Transfer-Encoding") == "chunked"
    assert r.status_code == 200, r.text

"""Layer (b): mutated requests against a real `kipuka serve` over real TLS.

Random bodies and content types for every POST operation (anonymous, with a
good OTP, a wrong one, garbage credentials, and a client certificate), random
request heads and framing on raw sockets, random label paths, and garbage at
the TLS layer (random bytes, cut-off ClientHellos, corrupted records, resets
mid-request). Whatever comes in: no 5xx, an answer within the server's own
deadlines, and afterwards the same worker process (same pid) still answers
/cacerts, with no error or traceback in its log.
"""

from __future__ import annotations

import base64
import re
import socket
import ssl
import struct
import time

import pytest
import requests
from hypothesis import event, given
from hypothesis import strategies as st

from tests.fuzz import net
from tests.fuzz.common import fuzz, hostile_der, mutated
from tests.helpers import Server, b64, enroll_identity, make_csr, make_server, unique

HEADER_TIMEOUT = BODY_TIMEOUT = 1
BAD_LOG = re.compile(r'Traceback|"level": "(error|critical)"|unhandled error|Error handling request')
POST_OPS = ["simpleenroll", "simplereenroll", "serverkeygen", "fullcmc"]
LABELS = [None, "iot-fleet", "corp-devices", "no-such-label"]


class Target:
    def __init__(self, srv: Server, tmp) -> None:  # type: ignore[no-untyped-def]
        self.srv = srv
        self.pid = srv.proc.pid
        self.entity = unique()
        self.otp = srv.otp(self.entity, "--uses", "1000")
        self.identity = enroll_identity(srv, tmp)[:2]
        self.sessions = {mode: requests.Session() for mode in ("none", "otp", "wrong", "garbage", "mtls")}
        self.sessions["mtls"].cert = self.identity
        self.log_offset = srv.log.stat().st_size

    def healthy(self) -> None:
        """The worker that started is the one answering, promptly, and it logged no error."""
        assert self.srv.proc.poll() is None, "kipuka serve exited"
        assert self.srv.proc.pid == self.pid
        started = time.monotonic()
        assert net.request(self.srv, "GET", net.est_path("cacerts"), timeout=5).status == 200
        assert time.monotonic() - started < 5
        with open(self.srv.log, "rb") as log:
            log.seek(self.log_offset)
            text = log.read()
        self.log_offset += len(text)  # each test answers for its own lines
        bad = [line for line in text.decode(errors="replace").splitlines() if BAD_LOG.search(line)]
        assert not bad, bad[:3]


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Target:
    root = tmp_path_factory.mktemp("wire-fuzz")
    srv = make_server(root, replacements={
        r"^workers = 1.*$": f'workers = 1\nheader_timeout = "{HEADER_TIMEOUT}s"\nbody_timeout = "{BODY_TIMEOUT}s"',
        r"^# serverkeygen = true.*$": "serverkeygen = true\nfullcmc = true",
    }, append="\n[ratelimit]\nrate = 1000000\nburst = 1000000\n").start()
    try:
        t = Target(srv, root)
        yield t
        for session in t.sessions.values():
            session.close()
    finally:
        srv.stop()


@pytest.fixture
def healthy(target: Target) -> Target:
    yield target
    target.healthy()


# --- bodies, content types and credentials ----------------------------------------------------

_CSR_DER = make_csr("device-1.example.com")[1]
bodies = st.one_of(
    st.just(b""), st.binary(max_size=3000), hostile_der, hostile_der.map(b64),
    mutated([b64(_CSR_DER), _CSR_DER, b"-----BEGIN CERTIFICATE REQUEST-----\n" + b64(_CSR_DER)
             + b"-----END CERTIFICATE REQUEST-----\n"]),
    st.integers(60_000, 70_000).map(lambda n: b"A" * n),  # around [server] max_body
)
content_types = st.one_of(
    st.sampled_from([None, "application/pkcs10", "application/pkcs10; charset=utf-8", "APPLICATION/PKCS10",
                     "application/pkcs7-mime; smime-type=CMC-request", "application/pkcs7-mime; smime-type=certs-only",
                     "multipart/mixed; boundary=x", "text/plain", ";", ";;;=", "application/pkcs10;"]),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=200))
authorizations = st.one_of(
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=300).map(lambda t: t.strip() or "x"),
    st.binary(max_size=200).map(lambda b: "Basic " + base64.b64encode(b).decode()),
    st.sampled_from(["Basic", "Basic ", "Bearer abc", "Basic ====", "Basic Og==", "Digest username=x"]))


@fuzz(100)
@given(op=st.sampled_from(POST_OPS), label=st.sampled_from(LABELS), body=bodies, ctype=content_types,
       auth=st.sampled_from(["none", "otp", "wrong", "garbage", "mtls"]), garbage=authorizations,
       cte=st.sampled_from([None, "base64", "binary", "7bit", "x"]))
def test_hostile_bodies_never_get_a_5xx(healthy: Target, op: str, label: str | None, body: bytes,
                                         ctype: str | None, auth: str, garbage: str, cte: str | None) -> None:
    headers = {k: v for k, v in (("Content-Type", ctype), ("Content-Transfer-Encoding", cte)) if v is not None}
    credentials = {"otp": (healthy.entity, healthy.otp), "wrong": (unique(), "wrong")}.get(auth)
    if auth == "garbage":
        headers["Authorization"] = garbage
    started = time.monotonic()
    r = healthy.sessions[auth].post(healthy.srv.url(op, label), data=body, headers=headers, auth=credentials,
                                    verify=healthy.srv.ca_bundle, timeout=15)
    assert time.monotonic() - started < 10
    event(f"{op} {auth} -> {r.status_code}")  # pytest --hypothesis-show-statistics shows what was reached
    assert r.status_code < 500, (r.status_code, r.text[:200])
    if r.headers.get("Content-Type", "").startswith("text/plain"):
        assert r.content.count(b"\n") <= 1  # a one-line reason


# --- request heads and framing on raw sockets --------------------------------------------------

_token = st.text(st.sampled_from("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"),
                 min_size=1, max_size=30)
_framing_names = {"content-length", "transfer-encoding"}
good_headers = st.one_of(
    st.tuples(_token, st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=100))
    .filter(lambda h: h[0].lower() not in _framing_names).map(lambda h: f"{h[0]}: {h[1]}".encode()),
    st.sampled_from([b"Authorization: Basic " + base64.b64encode(b"a:b"), b"Authorization: Basic \xff\xfe",
                     b"Authorization: Basic", b"Authorization:", b"Authorization: Bearer x",
                     b"Content-Type: application/pkcs10",
                     b"Content-Type: application/pkcs7-mime; smime-type=CMC-request",
                     b"Content-Type: \xe9", b"Host: localhost", b"Host:", b"Expect: 100-continue",
                     b"Connection: Upgrade", b"Upgrade: websocket", b"Upgrade: h2c", b"Content-Encoding: gzip",
                     b"Content-Encoding: deflate, br", b"Content-Transfer-Encoding: base64", b"X-Request-Id: \x01\x02",
                     b"X-Request-Id: " + b"r" * 500, b"X-Forwarded-For: 10.0.0.1", b"Accept: text/html"]),
)
bad_headers = st.one_of(  # lines an HTTP parser must refuse
    st.binary(min_size=1, max_size=80).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
    st.sampled_from([b" folded", b"\tfolded", b"no colon", b": empty name", b"Bad Name: x", b"X\x00Y: z",
                     b"X-A: a\x00b", b"X-A: a\rb"]),
)
EST_PATHS = [net.est_path(op, label) for op in POST_OPS + ["cacerts", "csrattrs"] for label in LABELS[:2]]
paths = st.one_of(st.sampled_from(EST_PATHS),
                  st.binary(min_size=1, max_size=100).map(lambda b: b"/" + b.replace(b" ", b"").replace(b"\r", b"")
                                                          .replace(b"\n", b"")).map(lambda b: b.decode("latin-1")))


@st.composite
def raw_requests(draw: st.DrawFn) -> tuple[bytes, bool]:
    """(request bytes, complete?): a request head with random lines and one of several body framings."""
    rare = draw(st.integers(0, 5)) == 5  # one request in six gets an odd method or a random path
    if rare:
        method, path = draw(_token.map(str.encode)), draw(paths)
    else:  # mostly the method the operation takes, so that the request reaches the EST handlers
        path = draw(st.sampled_from(EST_PATHS))
        usual = b"GET" if path.endswith(("cacerts", "csrattrs")) else b"POST"
        method = draw(st.sampled_from([usual] * 8 + [b"PUT", b"HEAD", b"OPTIONS", b"PATCH", b"PRI"]))
    version = draw(st.sampled_from([b"HTTP/1.1"] * 12 + [b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1x", b"", b"http/1.1"]))
    eol = draw(st.sampled_from([b"\r\n"] * 5 + [b"\n"]))
    body = draw(st.one_of(st.binary(max_size=400), st.just(b64(_CSR_DER)))) if method != b"GET" else b""
    framing = draw(st.sampled_from(["length"] * 6 + ["chunked"] * 2 + ["bad-chunk", "short", "long", "none", "both",
                                                                        "double-length", "negative"]))
    lines = [method + b" " + path.encode("latin-1") + b" " + version, b"Host: localhost"]
    if method == b"POST":
        lines.append(b"Content-Type: " + draw(st.sampled_from([b"application/pkcs10", b"application/pkcs10",
                                                               b"application/pkcs7-mime; smime-type=CMC-request",
                                                               b"application/pkcs10; x=\"y", b"a/b"])))
    if draw(st.booleans()):
        userpass = draw(st.sampled_from([b"a:b", b"device-1:x", b":", b""]))
        lines.append(b"Authorization: Basic " + base64.b64encode(userpass))
    lines += draw(st.lists(good_headers, max_size=6))
    if draw(st.integers(0, 5)) == 5:
        lines.insert(draw(st.integers(1, len(lines))), draw(bad_headers))
    complete = framing != "short"
    if framing in ("length", "long", "double-length"):
        lines.append(b"Content-Length: %d" % (len(body) if framing != "long" else max(0, len(body) - 5)))
        if framing == "double-length":
            lines.append(b"Content-Length: %d" % (len(body) + 1))
    elif framing == "short":
        lines.append(b"Content-Length: %d" % (len(body) + 100))
    elif framing == "negative":
        lines.append(b"Content-Length: -1")
    elif framing in ("chunked", "bad-chunk", "both"):
        lines.append(b"Transfer-Encoding: chunked")
        if framing == "both":
            lines.append(b"Content-Length: 3")
        size = b"%x" % len(body) if framing != "bad-chunk" else draw(st.sampled_from([b"zz", b"-1", b"fffffffffffff",
                                                                                     b"1;" + b"x" * 9000, b""]))
        body = (size + b"\r\n" + body + b"\r\n0\r\n\r\n") if body or framing == "bad-chunk" else b"0\r\n\r\n"
    lines.append(b"Connection: close")
    return eol.join(lines) + eol + eol + body, complete


def read_response(sock: ssl.SSLSocket, deadline: float) -> bytes:
    """One response (skipping 100 Continue): its head and Content-Length body, or what came before a close."""
    data = b""
    while time.monotonic() < deadline:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if sep:
            if net.status_of(head) == 100:
                data = rest
                continue
            m = re.search(rb"\r\ncontent-length: *(\d+)", head, re.I)
            if m and len(rest) >= int(m.group(1)):
                return data
        chunk = net.read_all_once(sock, deadline)
        if not chunk:
            return data
        data += chunk
    return data


@fuzz(80)
@given(req=raw_requests(), mtls=st.booleans())
def test_hostile_request_heads_never_get_a_5xx(healthy: Target, req: tuple[bytes, bool], mtls: bool) -> None:
    data, complete = req
    with net.tls(healthy.srv, cert=healthy.identity if mtls else None) as sock:
        started = time.monotonic()
        try:
            sock.sendall(data)
        except OSError:
            return  # the server hung up before reading it all (after an error answer): fine
        if not complete:  # a body that never comes: the client goes away
            time.sleep(0.05)
            return
        reply = read_response(sock, started + HEADER_TIMEOUT + BODY_TIMEOUT + 3)
        assert time.monotonic() - started < HEADER_TIMEOUT + BODY_TIMEOUT + 3
    status = net.status_of(reply)
    event(f"status {status}")
    assert status is None or status < 500, reply[:300]


# --- label paths -----------------------------------------------------------------------------

segments = st.one_of(
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, blacklist_characters="/?#%"), min_size=1,
            max_size=80),
    st.binary(min_size=1, max_size=40).map(lambda b: "".join(f"%{c:02X}" for c in b)),
    st.sampled_from(["..", ".", "%2e%2e", "%2F", "%00", "iot-fleet", "IOT-FLEET", "cacerts", "simpleenroll",
                     "a" * 64, "a" * 65, "x" * 3000, "%ZZ", "%", "~", "iot-fleet%2Fcacerts"]))


@fuzz(100)
@given(parts=st.lists(segments, min_size=1, max_size=4), method=st.sampled_from(["GET", "POST", "DELETE"]),
       query=st.sampled_from(["", "?a=b", "?" + "x" * 100, "?%00"]))
def test_random_label_paths_never_get_a_5xx(healthy: Target, parts: list[str], method: str, query: str) -> None:
    conn = net.SourcedHTTPS(healthy.srv, "127.0.0.1", None, 10)
    try:
        conn.putrequest(method, "/.well-known/est/" + "/".join(parts) + query, skip_host=True)
        conn.putheader("Host", "localhost")
        conn.putheader("Content-Length", "0")
        conn.endheaders()
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    event(f"{method} -> {resp.status}")
    assert resp.status < 500, (resp.status, body[:200])
    assert resp.status in (200, 204, 400, 401, 404, 405, 431), resp.status


# --- the TLS layer ---------------------------------------------------------------------------

def client_hello(srv: Server) -> bytes:
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = net.context(srv).wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


@fuzz(30)
@given(data=st.data(), kind=st.sampled_from(["garbage", "truncated-hello", "mutated-hello", "plain-http"]),
       linger=st.booleans())
def test_garbage_before_or_instead_of_tls_is_dropped(healthy: Target, data: st.DataObject, kind: str,
                                                     linger: bool) -> None:
    hello = client_hello(healthy.srv)
    payload = {
        "garbage": lambda: data.draw(st.binary(min_size=1, max_size=2000)),
        "truncated-hello": lambda: hello[:data.draw(st.integers(1, len(hello) - 1))],
        "mutated-hello": lambda: data.draw(mutated([hello])),
        "plain-http": lambda: b"GET /.well-known/est/cacerts HTTP/1.1\r\nHost: localhost\r\n\r\n",
    }[kind]()
    sock = net.tcp(healthy.srv)
    try:
        sock.sendall(payload)
        if linger:  # the client resets the connection at once
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return
        if kind in ("garbage", "plain-http"):  # not TLS at all: refused at once
            started = time.monotonic()
            net.read_all(sock, started + HEADER_TIMEOUT + 3)  # (a few bytes may still look like a TLS start)
            assert time.monotonic() - started < HEADER_TIMEOUT + 1.5
        else:  # a ClientHello cut short or mangled may leave the server waiting: the client gives up
            net.read_all(sock, time.monotonic() + 0.1)
    finally:
        sock.close()


def test_a_cut_off_client_hello_is_dropped_after_the_handshake_timeout(healthy: Target) -> None:
    hello = client_hello(healthy.srv)
    with net.tcp(healthy.srv) as sock:
        sock.sendall(hello[: len(hello) // 2])
        started = time.monotonic()
        assert net.read_all(sock, started + HEADER_TIMEOUT + 5) == b""
        assert time.monotonic() - started < HEADER_TIMEOUT + 3


def tls_pump(srv: Server) -> tuple[socket.socket, ssl.SSLObject, ssl.MemoryBIO]:
    """A TLS client on memory BIOs, so that its records can be tampered with before they are sent."""
    sock = net.tcp(srv)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = net.context(srv).wrap_bio(incoming, outgoing, server_hostname="localhost")
    while True:
        try:
            obj.do_handshake()
            sock.sendall(outgoing.read())
            return sock, obj, outgoing
        except ssl.SSLWantReadError:
            sock.sendall(outgoing.read())
            incoming.write(sock.recv(65536))


@fuzz(25)
@given(data=st.data(), where=st.sampled_from(["head", "body", "reset"]))
def test_corrupted_tls_records_and_resets_mid_request_are_survived(healthy: Target, data: st.DataObject,
                                                                   where: str) -> None:
    body = b64(_CSR_DER)
    request = (b"POST /.well-known/est/simpleenroll HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/pkcs10\r\n"
               + f"Content-Length: {len(body)}\r\n\r\n".encode())
    sock, obj, outgoing = tls_pump(healthy.srv)
    try:
        obj.write(request)
        head_records = outgoing.read()
        obj.write(body[:100])
        body_records = outgoing.read()
        if where == "head":
            head_records = data.draw(mutated([head_records]))
        elif where == "body":
            body_records = data.draw(mutated([body_records]))
        sock.sendall(head_records)
        if where == "reset":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return
        sock.sendall(body_records)
        net.read_all(sock, time.monotonic() + 0.2)  # an alert and a close, or nothing yet: the client leaves
    except OSError:
        pass  # the server reset a connection that sent it garbage: fine
    finally:
        sock.close()


# --- what the fuzzing found, pinned -------------------------------------------------------------

@pytest.mark.parametrize("head,body", [
    (b"Content-Encoding: gzip\r\nContent-Length: 8", b"notgzip!"),
    (b"Transfer-Encoding: chunked", b"zz\r\nMIIB\r\n0\r\n\r\n"),
    (b"Transfer-Encoding: chunked", b"4\r\nMIIBxx\r\n0\r\n\r\n"),
], ids=["bad-gzip", "bad-chunk-size", "chunk-overrun"])
@pytest.mark.parametrize("op", ["simpleenroll", "fullcmc"])
def test_a_malformed_body_encoding_is_a_400(healthy: Target, op: str, head: bytes, body: bytes) -> None:
    ctype = b"application/pkcs10" if op == "simpleenroll" else b"application/pkcs7-mime; smime-type=CMC-request"
    with net.tls(healthy.srv) as sock:
        sock.sendall(b"POST " + net.est_path(op).encode() + b" HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
                     b"Content-Type: " + ctype + b"\r\n" + head + b"\r\n\r\n" + body)
        reply = read_response(sock, time.monotonic() + 5)
    assert net.status_of(reply) == 400, reply[:300]
    if op == "simpleenroll":
        assert reply.split(b"\r\n\r\n", 1)[1].startswith(b"malformed ")  # HTTP request, or request body


def test_a_corrupted_tls_record_in_the_body_is_not_a_server_error(healthy: Target) -> None:
    body = b64(_CSR_DER)
    sock, obj, outgoing = tls_pump(healthy.srv)
    with sock:
        obj.write(b"POST /.well-known/est/simpleenroll HTTP/1.1\r\nHost: localhost\r\n"
                  b"Content-Type: application/pkcs10\r\n" + f"Content-Length: {len(body)}\r\n\r\n".encode())
        sock.sendall(outgoing.read())
        time.sleep(0.1)  # the handler is now reading the body
        obj.write(body)
        records = bytearray(outgoing.read())
        records[-5] ^= 0x01  # the last bytes are the record's authentication tag
        sock.sendall(bytes(records))
        net.read_all(sock, time.monotonic() + 1)

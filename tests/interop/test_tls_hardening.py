"""The EST listener's TLS, probed from outside: openssl s_client, raw ClientHellos and testssl.sh.

What must hold (issue 8, item 5): SSLv2, SSLv3, TLS 1.0 and 1.1 refused; TLS 1.2 with
ECDHE key exchange and AEAD ciphers only (AES-GCM, ChaCha20-Poly1305: no CBC, no RSA key
transport, no DHE, no NULL, EXPORT, RC4 or 3DES); TLS 1.3; no renegotiation; no
compression; the whole chain up to (not including) the root sent by the server.

The openssl matrix runs wherever openssl does; testssl.sh (Debian `testssl.sh`, about
15 s) adds its own socket-level probes of the 370 ciphers it knows, SSLv2/SSLv3 among
them, and is skipped when it is not installed. test_wire.py already checks that TLS 1.1
is refused and TLS 1.2 and 1.3 served through Python's ssl module.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
from cryptography import x509

from tests.helpers import Server

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")

EVERYTHING = "ALL:COMPLEMENTOFALL:@SECLEVEL=0"
TLS13_SUITES = ["TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256",
                "TLS_AES_128_CCM_SHA256", "TLS_AES_128_CCM_8_SHA256"]
TLS13_ACCEPTABLE = {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}


def s_client(srv: Server, *args: str, stdin: bytes = b"", timeout: float = 15) -> subprocess.CompletedProcess:
    return subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{srv.port}", "-servername", "localhost",
                           *args], input=stdin, capture_output=True, timeout=timeout)


def negotiated(out: bytes) -> tuple[str, str] | None:
    """(protocol, cipher) of a completed handshake, from s_client's "New, TLSv1.2, Cipher is X" line."""
    m = re.search(rb"^New, (TLSv1(?:\.\d)?|SSLv3), Cipher is (\S+)", out, re.M)
    return (m.group(1).decode(), m.group(2).decode()) if m and m.group(2) != b"(NONE)" else None


def openssl_ciphers() -> dict[str, dict[str, str]]:
    """Every pre-TLS 1.3 cipher suite this openssl can offer: name -> {Kx, Au, Enc, Mac}."""
    out = subprocess.run(["openssl", "ciphers", "-v", EVERYTHING], capture_output=True, text=True, check=True).stdout
    suites = {}
    for line in out.splitlines():
        name, version, *fields = line.split()
        if version != "TLSv1.3":
            suites[name] = dict(f.split("=", 1) for f in fields)
    return suites


# --- protocol versions ---------------------------------------------------------------------------

@pytest.mark.parametrize("flag", ["-tls1", "-tls1_1"])
def test_tls_1_0_and_1_1_are_refused(interop_server: Server, flag: str):
    proc = s_client(interop_server, flag, "-cipher", EVERYTHING)
    assert b"CONNECTED" in proc.stdout, proc.stderr  # the ClientHello went out
    assert proc.returncode != 0 and negotiated(proc.stdout) is None, proc.stdout[-800:]


def _ssl3_client_hello() -> bytes:
    suites = [0x000A, 0x002F, 0x0035, 0x0005, 0x0004, 0x0009, 0x0003, 0x0001]  # 3DES, AES-CBC, RC4, DES, EXPORT, NULL
    body = b"\x03\x00" + os.urandom(32) + b"\x00" + (2 * len(suites)).to_bytes(2, "big")
    body += b"".join(s.to_bytes(2, "big") for s in suites) + b"\x01\x00"
    handshake = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x00" + len(handshake).to_bytes(2, "big") + handshake


def _ssl2_client_hello() -> bytes:
    specs = bytes.fromhex("010080" "0700c0" "020080" "060040")  # RC4, 3DES, RC4-EXPORT, DES
    challenge = os.urandom(16)
    msg = b"\x01\x00\x02" + len(specs).to_bytes(2, "big") + b"\x00\x00" + len(challenge).to_bytes(2, "big")
    msg += specs + challenge
    return (0x8000 | len(msg)).to_bytes(2, "big") + msg


def _first_bytes(srv: Server, hello: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
        sock.sendall(hello)
        data = b""
        try:
            while len(data) < 5:
                chunk = sock.recv(5 - len(data))
                if not chunk:
                    break
                data += chunk
        except (ConnectionResetError, socket.timeout):
            pass
        return data


def test_sslv3_is_refused(interop_server: Server):
    """openssl 3 cannot offer SSLv3 at all: a hand-made SSLv3 ClientHello gets no ServerHello."""
    reply = _first_bytes(interop_server, _ssl3_client_hello())
    assert not reply.startswith(b"\x16"), reply  # a handshake record would be the ServerHello
    assert reply == b"" or reply[0] == 0x15, reply  # closed, or an alert


def test_sslv2_is_refused(interop_server: Server):
    reply = _first_bytes(interop_server, _ssl2_client_hello())
    assert not (len(reply) >= 3 and reply[0] & 0x80 and reply[2] == 0x04), reply  # no SSLv2 SERVER-HELLO
    assert not reply.startswith(b"\x16"), reply


# --- cipher suites -----------------------------------------------------------------------------------

def accepted_suites(srv: Server, offered: list[str], *flags: str, option: str) -> list[str]:
    """Every suite of `offered` the server accepts: offer them all, drop the one chosen, repeat.

    The server picks one of the offered suites whenever it supports any, so the loop ends with
    exactly the supported ones after len(accepted) + 1 handshakes.
    """
    left, accepted = list(offered), []
    while left:
        value = ":".join(left) + (":@SECLEVEL=0" if option == "-cipher" else "")
        proc = s_client(srv, *flags, option, value)
        got = negotiated(proc.stdout)
        if got is None:
            break
        assert got[1] in left, (got, left)
        accepted.append(got[1])
        left.remove(got[1])
    return accepted


def test_tls_1_2_offers_only_ecdhe_with_aead(interop_server: Server):
    suites = openssl_ciphers()
    assert len(suites) > 50, "this openssl offers too few suites for a meaningful scan"
    accepted = accepted_suites(interop_server, list(suites), "-tls1_2", option="-cipher")
    assert accepted, "no TLS 1.2 suite accepted at all"
    weak = {name: suites[name] for name in accepted
            if not (suites[name]["Kx"] == "ECDH" and suites[name]["Mac"] == "AEAD"
                    and re.fullmatch(r"AESGCM\(\d+\)|CHACHA20/POLY1305\(256\)", suites[name]["Enc"]))}
    assert not weak, f"weak TLS 1.2 suites accepted: {weak}"
    # what an EC server certificate needs, at least AES-GCM
    assert any("AES128-GCM" in name or "AES256-GCM" in name for name in accepted), accepted


def test_tls_1_3_suites(interop_server: Server):
    accepted = accepted_suites(interop_server, TLS13_SUITES, "-tls1_3", option="-ciphersuites")
    assert accepted and set(accepted) <= TLS13_ACCEPTABLE, accepted
    assert "TLS_AES_128_GCM_SHA256" in accepted  # RFC 8446 §9.1 MUST


@pytest.mark.parametrize("flag", ["-tls1_2", "-tls1_3"])
def test_key_exchange_is_ecdhe_never_finite_field(interop_server: Server, flag: str):
    out = s_client(interop_server, flag).stdout
    m = re.search(rb"^Server Temp Key: (\S+?),", out, re.M)
    assert m and m.group(1) in (b"X25519", b"X448", b"ECDH"), out[-1500:]


# --- renegotiation, compression, chain -----------------------------------------------------------------

def test_client_initiated_renegotiation_is_refused(interop_server: Server):
    """s_client's "R" asks for a renegotiation mid-connection (TLS 1.2: 1.3 has none); the server refuses it."""
    proc = subprocess.Popen(["openssl", "s_client", "-connect", f"127.0.0.1:{interop_server.port}", "-servername",
                             "localhost", "-tls1_2", "-CAfile", interop_server.ca_bundle],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdin.write(b"R\n")
    proc.stdin.flush()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        # still connected after asking: send a request and see whether it is answered
        proc.stdin.write(b"GET /.well-known/est/cacerts HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    out, err = proc.communicate(timeout=10)
    assert negotiated(out) is not None, out[-800:]
    assert b"RENEGOTIATING" in err, err[-800:]
    assert b"no renegotiation" in err, err[-800:]
    assert b"HTTP/1.1 200" not in out


@pytest.mark.parametrize("flag", ["-tls1_2", "-tls1_3"])
def test_no_compression(interop_server: Server, flag: str):
    out = s_client(interop_server, flag, "-comp").stdout  # the client offers compression where it can
    assert re.search(rb"^Compression: NONE$", out, re.M), out[-800:]
    assert re.search(rb"^Expansion: NONE$", out, re.M), out[-800:]


def _pem_certs(text: bytes) -> list[x509.Certificate]:
    return [x509.load_pem_x509_certificate(m) for m in
            re.findall(rb"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", text, re.S)]


@pytest.mark.parametrize("flag", ["-tls1_2", "-tls1_3"])
def test_full_server_chain_is_sent(interop_server: Server, flag: str):
    """The configured chain (leaf + issuing CA) goes out whole: a client trusting only the root verifies it."""
    root = interop_server.dir / "ca" / "root.pem"
    proc = s_client(interop_server, flag, "-showcerts", "-CAfile", str(root), "-verify_return_error",
                    "-verify_hostname", "localhost")
    assert proc.returncode == 0 and b"Verify return code: 0 (ok)" in proc.stdout, proc.stdout[-1500:]
    sent = _pem_certs(proc.stdout)
    configured = _pem_certs((interop_server.dir / "tls" / "server.pem").read_bytes())
    assert len(configured) >= 2 and sent == configured
    root_cert = x509.load_pem_x509_certificate(root.read_bytes())
    assert sent[-1].issuer == root_cert.subject and root_cert not in sent  # up to, not including, the root


# --- testssl.sh ----------------------------------------------------------------------------------

def _testssl() -> str | None:
    return shutil.which("testssl") or shutil.which("testssl.sh")


@pytest.fixture(scope="module")
def testssl_findings(interop_server: Server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict]]:
    tool = _testssl()
    if tool is None:
        pytest.skip("testssl.sh is not installed (Debian package testssl.sh)")
    out = Path(tmp_path_factory.mktemp("testssl")) / "testssl.json"
    # -p protocols, -e every cipher one by one, -R renegotiation, -C compression (CRIME)
    proc = subprocess.run([tool, "--quiet", "--color", "0", "--warnings", "off", "--ip", "127.0.0.1",
                           "-p", "-e", "-R", "-C", "--jsonfile", str(out), f"localhost:{interop_server.port}"],
                          capture_output=True, text=True, timeout=180)
    assert out.exists(), proc.stdout[-2000:] + proc.stderr[-2000:]
    findings: dict[str, list[dict]] = {}
    for f in json.loads(out.read_text()):
        findings.setdefault(f["id"], []).append(f)
    return findings


def _one(findings: dict[str, list[dict]], key: str) -> str:
    assert key in findings, f"testssl.sh reported nothing for {key}: {sorted(findings)}"
    return findings[key][0]["finding"]


@pytest.mark.parametrize("protocol,expected", [("SSLv2", "not offered"), ("SSLv3", "not offered"),
                                               ("TLS1", "not offered"), ("TLS1_1", "not offered"),
                                               ("TLS1_2", "offered"), ("TLS1_3", "offered")])
def test_testssl_protocols(testssl_findings, protocol: str, expected: str):
    assert _one(testssl_findings, protocol).startswith(expected), testssl_findings[protocol]


def test_testssl_ciphers_are_ecdhe_aead_only(testssl_findings):
    offered = [f["finding"] for key, fs in testssl_findings.items() if key.startswith("cipher_x") for f in fs]
    assert offered, sorted(testssl_findings)
    iana = [line.split()[-1] for line in offered]
    weak = [name for name in iana
            if not (re.fullmatch(r"TLS_(AES_(128|256)_GCM_SHA(256|384)|CHACHA20_POLY1305_SHA256)", name)
                    or re.fullmatch(r"TLS_ECDHE_(ECDSA|RSA)_WITH_(AES_(128|256)_GCM_SHA(256|384)|"
                                    r"CHACHA20_POLY1305_SHA256)", name))]
    assert not weak, f"testssl.sh found weak suites offered: {weak}"


def test_testssl_renegotiation_and_compression(testssl_findings):
    assert _one(testssl_findings, "secure_client_renego") == "not vulnerable"
    assert _one(testssl_findings, "CRIME_TLS") == "not vulnerable"
    # no finding at all of severity above INFO/OK (LOW, MEDIUM, HIGH, CRITICAL, WARN)
    bad = [f for fs in testssl_findings.values() for f in fs if f["severity"] not in ("OK", "INFO")]
    assert not bad, bad


@pytest.mark.parametrize("flag", ["-tls1_2", "-tls1_3"])
def test_tls_sessions_are_resumed(interop_server: Server, tmp_path: Path, flag: str):
    """RFC 7030 §3.3: TLS session resumption SHOULD be supported (a device renewing saves a full handshake)."""
    session = tmp_path / "session.pem"
    request = b"GET /.well-known/est/cacerts HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    # -ign_eof: stay until the server closes, so the TLS 1.3 ticket (sent after the handshake) is kept
    first = s_client(interop_server, flag, "-ign_eof", "-CAfile", interop_server.ca_bundle,
                     "-sess_out", str(session), stdin=request)
    assert negotiated(first.stdout) is not None and session.stat().st_size > 0, first.stdout[-800:]
    again = s_client(interop_server, flag, "-ign_eof", "-CAfile", interop_server.ca_bundle,
                     "-sess_in", str(session), stdin=request)
    assert re.search(rb"^Reused, TLSv1", again.stdout, re.M), again.stdout[-800:]

"""Small stand-ins for other EST servers, for the client's interoperability tests.

`ReplayServer` is a TLS listener on loopback that writes raw HTTP/1.1 bytes:
each response is built byte for byte (status line, header spelling, line
ends, chunked framing, body wrapping), so the tests exercise exactly the wire
forms other servers produce, which an HTTP framework would normalise away.
The conventions replayed are taken from those servers' sources:

- libest (cisco/libest, est_locl.h / est_server_http.c): cacerts as
  `application/pkcs7-mime` without smime-type, enrollment as
  `application/pkcs7-mime; smime-type=certs-only`, `Content-Transfer-Encoding:
  base64`, OpenSSL BIO base64 (64 columns, LF), Content-Length framing,
  `WWW-Authenticate: Basic realm="estrealm"` before any credential is
  considered, multipart boundary `est-server-boundary`, error bodies such as
  "The server was unable to authorize the request.".
- globalsign/est (encoding.go, server.go, common.go): base64 broken at 76
  columns with CRLF, `Content-Transfer-Encoding: base64`, Go's net/http chunked
  framing for bodies it does not size, `text/plain; charset=utf-8` errors
  written as "<status> <text>\\n", `Basic realm="estserver@<host>"`,
  serverkeygen as multipart/mixed; boundary=estServerKeyGenBoundary with the
  key part first.

A `TestCA` signs whatever CSR arrives, so enrollment answers carry the
client's key like a real server's would.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID

EST = "/.well-known/est"


# --- a CA of the tests' own ------------------------------------------------------------------

class TestCA:
    __test__ = False  # not a pytest class

    def __init__(self, directory: Path, name: str = "Replay") -> None:
        now = dt.datetime.now(dt.timezone.utc)
        self.root_key = ec.generate_private_key(ec.SECP256R1())
        root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} Root CA")])
        self.root = self._cert(root_name, root_name, self.root_key.public_key(), self.root_key, ca=True, now=now)
        self.issuing_key = ec.generate_private_key(ec.SECP256R1())
        self.issuing = self._cert(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} Issuing CA")]),
                                  root_name, self.issuing_key.public_key(), self.root_key, ca=True, now=now)
        tls_key = ec.generate_private_key(ec.SECP256R1())
        tls = self._cert(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]), self.issuing.subject,
                         tls_key.public_key(), self.issuing_key, ca=False, now=now,
                         sans=[x509.DNSName("localhost")])
        directory.mkdir(parents=True, exist_ok=True)
        self.tls_cert = directory / "replay-tls.pem"
        self.tls_key = directory / "replay-tls.key"
        self.anchors = directory / "replay-ca.pem"
        self.tls_cert.write_bytes(_pem(tls) + _pem(self.issuing))
        self.tls_key.write_bytes(tls_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
        self.anchors.write_bytes(_pem(self.root))

    @staticmethod
    def _cert(subject, issuer, public_key, signer, *, ca: bool, now, sans=None, days: float = 365):
        b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
             .serial_number(x509.random_serial_number())
             .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=days))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return b.sign(signer, hashes.SHA256())

    def issue(self, csr_der: bytes, public_key=None, *, signer=None) -> x509.Certificate:
        csr = x509.load_der_x509_csr(csr_der)
        return self._cert(csr.subject, self.issuing.subject, public_key or csr.public_key(),
                          signer or self.issuing_key, ca=False, now=dt.datetime.now(dt.timezone.utc), days=365)

    @property
    def chain(self) -> list[x509.Certificate]:
        return [self.issuing, self.root]


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def certs_only(certs: list[x509.Certificate]) -> bytes:
    return pkcs7.serialize_certificates(certs, serialization.Encoding.DER)


# --- wire forms ------------------------------------------------------------------------------

def b64_lines(der: bytes, width: int | None = 64, eol: bytes = b"\n") -> bytes:
    text = base64.b64encode(der)
    if width is None:
        return text
    return b"".join(text[i:i + width] + eol for i in range(0, len(text), width))


def http_response(status: int, reason: str, headers: list[tuple[str, str]], body: bytes = b"", *,
                  chunked: bool = False, chunk: int = 97, close: bool = False) -> bytes:
    head = [f"HTTP/1.1 {status} {reason}".encode()]
    for name, value in headers:
        head.append(f"{name}: {value}".encode())
    if close:
        head.append(b"Connection: close")
    if chunked:
        head.append(b"Transfer-Encoding: chunked")
        payload = b"".join(b"%x\r\n" % len(body[i:i + chunk]) + body[i:i + chunk] + b"\r\n"
                           for i in range(0, len(body), chunk)) + b"0\r\n\r\n"
    else:
        head.append(f"Content-Length: {len(body)}".encode())
        payload = body
    return b"\r\n".join(head) + b"\r\n\r\n" + payload


# --- the server ------------------------------------------------------------------------------

@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    tls_unique: bytes | None = None
    connection: int = 0


Handler = Callable[[Request], bytes]


@dataclass
class ReplayServer:
    ca: TestCA
    tls12_only: bool = False
    tls13_only: bool = False
    routes: dict[str, Handler] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    port: int = 0

    def __post_init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._connections = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def base(self) -> str:
        return f"https://localhost:{self.port}"

    def route(self, op: str, handler: Handler, label: str | None = None) -> None:
        self.routes[f"{EST}/{label}/{op}" if label else f"{EST}/{op}"] = handler

    def start(self) -> "ReplayServer":
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(self.ca.tls_cert), str(self.ca.tls_key))
        if self.tls12_only:
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        if self.tls13_only:
            ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        self._server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=ctx))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections += 1
        conn_id = self._connections
        ssl_object = writer.get_extra_info("ssl_object")
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers: dict[str, str] = {}
                for line in lines[1:]:
                    if ":" in line:
                        name, value = line.split(":", 1)
                        headers[name.strip().lower()] = value.strip()
                body = b""
                if headers.get("transfer-encoding", "").lower() == "chunked":
                    while True:
                        size = int((await reader.readline()).split(b";")[0], 16)
                        if size == 0:
                            await reader.readline()
                            break
                        body += await reader.readexactly(size)
                        await reader.readline()
                elif "content-length" in headers:
                    body = await reader.readexactly(int(headers["content-length"]))
                tls_unique = None
                if ssl_object is not None and ssl_object.version() == "TLSv1.2":
                    tls_unique = ssl_object.get_channel_binding("tls-unique")
                req = Request(method, path, headers, body, tls_unique, conn_id)
                self.requests.append(req)
                handler = self.routes.get(path)
                if handler is None:
                    raw = http_response(404, "Not Found", [("Content-Type", "text/plain")], b"no route\n")
                else:
                    raw = handler(req)
                writer.write(raw)
                await writer.drain()
                if b"\r\nConnection: close\r\n" in raw.split(b"\r\n\r\n", 1)[0] + b"\r\n":
                    return
        finally:
            writer.close()


def csr_of(req: Request) -> bytes:
    """The DER CSR of a request body (the client sends base64)."""
    return base64.b64decode(b"".join(req.body.split()))

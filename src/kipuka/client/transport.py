"""HTTPS for the EST client: the stdlib's http.client over an ssl.SSLContext.

Why the stdlib and not aiohttp (which the server uses): the client needs a
hold on the TLS connection itself. Channel binding (RFC 7030 3.5) puts the
tls-unique of the connection into the CSR, so the CSR must be signed after
the handshake and sent on that same connection; a retry after a 401 challenge
should reuse it; and the bootstrap step must see the server's certificate of
an unverified connection. http.client exposes the socket (`conn.sock`) at
every step, needs no event loop (the command line runs from cron), and adds
no dependency. An asyncio caller can run an `EstClient` in `asyncio.to_thread`.

One `Transport` keeps one keep-alive connection to one origin; it is not
thread safe (use one client per thread).
"""

from __future__ import annotations

import http.client
import os
import socket
import ssl
import tempfile
from dataclasses import dataclass
from typing import Callable

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from kipuka.client.errors import ChannelBindingError, TlsError, TransportError
from kipuka.tlsbinding import tls_exporter

MAX_BODY = 4 * 1024 * 1024
USER_AGENT = "kipuka-est/0.1"


@dataclass
class Response:
    status: int
    reason: str
    headers: dict[str, str]   # lower-case names; repeated headers joined with ", "
    body: bytes
    tls_version: str | None = None
    tls_unique: bytes | None = None
    peer_certificate: bytes | None = None  # DER of the server's TLS certificate

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass
class TlsSettings:
    """What the TLS context is made of.

    anchors: PEM text of the trust anchors; None means the system's default CAs.
    verify: False only for the bootstrap of /cacerts (the caller then checks a fingerprint).
    client_cert: (certificate chain PEM path, key PEM path) for mTLS.
    tls12_only: channel binding with tls-unique exists in TLS 1.2 only.
    """

    anchors: str | None = None
    verify: bool = True
    client_cert: tuple[str, str] | None = None
    tls12_only: bool = False
    key_password: bytes | None = None

    def context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.tls12_only:
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        if self.verify:
            ctx.check_hostname = True
            ctx.verify_mode = ssl.CERT_REQUIRED
            if self.anchors is None:
                ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
            else:
                ctx.load_verify_locations(cadata=self.anchors)
                # An explicit anchor may be the issuing CA alone (RFC 7030 3.6.1).
                ctx.verify_flags |= getattr(ssl, "VERIFY_X509_PARTIAL_CHAIN", 0x80000)
        else:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.client_cert is not None:
            cert, key = self.client_cert
            try:
                ctx.load_cert_chain(cert, key, password=self.key_password)
            except (ssl.SSLError, OSError) as exc:
                raise TlsError(f"cannot load the client certificate {cert} / key {key}: {exc}") from None
        return ctx


class Transport:
    def __init__(self, host: str, port: int, settings: TlsSettings, timeout: float = 30.0) -> None:
        self.host = host
        self.port = port
        self.settings = settings
        self.timeout = timeout
        self._ctx: ssl.SSLContext | None = None
        self._conn: http.client.HTTPSConnection | None = None
        self._requests_on_conn = 0
        self._facts: tuple[str | None, bytes | None, bytes | None] = (None, None, None)

    # --- connection -------------------------------------------------------------------

    def reconfigure(self, settings: TlsSettings) -> None:
        self.close()
        self.settings = settings
        self._ctx = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None
        self._requests_on_conn = 0

    def _connection(self) -> http.client.HTTPSConnection:
        if self._ctx is None:
            self._ctx = self.settings.context()
        if self._conn is None or self._conn.sock is None:
            if self._conn is not None:
                self._conn.close()
            self._conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout, context=self._ctx)
            self._requests_on_conn = 0
            try:
                self._conn.connect()
                self._facts = self._tls_facts(self._conn.sock)
            except ssl.SSLCertVerificationError as exc:
                self.close()
                raise TlsError(f"TLS: server certificate of {self.host}:{self.port} is not trusted "
                               f"({exc.verify_message or exc.reason}); give the CA chain as trust anchors "
                               f"(--trust) or bootstrap with the CA fingerprint (--fingerprint)") from None
            except ssl.SSLError as exc:
                self.close()
                hint = ""
                if self.settings.tls12_only:
                    hint = " (channel binding needs TLS 1.2; the server may allow TLS 1.3 only)"
                raise TlsError(f"TLS handshake with {self.host}:{self.port} failed: "
                               f"{exc.reason or exc}{hint}") from None
            except (socket.timeout, TimeoutError):
                self.close()
                raise TransportError(f"connection to {self.host}:{self.port} timed out") from None
            except OSError as exc:
                self.close()
                raise TransportError(f"cannot connect to {self.host}:{self.port}: "
                                     f"{exc.strerror or exc}") from None
        return self._conn

    def tls_unique(self) -> bytes:
        """The connection's channel binding: tls-unique on TLS 1.2, tls-exporter (RFC 9266) on TLS 1.3.

        RFC 7030 §3.5 names tls-unique only; TLS 1.3 has none, and kipuka servers
        accept tls-exporter there. Other servers may expect TLS 1.2 (tls12_only).
        """
        conn = self._connection()
        sock = conn.sock
        assert isinstance(sock, ssl.SSLSocket)
        if sock.version() == "TLSv1.3":
            value = tls_exporter(sock)  # type: ignore[arg-type]
            if not value:
                raise ChannelBindingError("tls-exporter is not available in this Python; use TLS 1.2 (tls-unique)")
            return value
        if sock.version() != "TLSv1.2":
            raise ChannelBindingError(f"no channel binding for {sock.version()}")
        value = sock.get_channel_binding("tls-unique")
        if not value:
            raise ChannelBindingError("the TLS library did not provide tls-unique for this connection")
        return value

    # --- requests ---------------------------------------------------------------------

    def request(self, method: str, path: str, headers: dict[str, str],
                body: bytes | Callable[["Transport"], bytes] | None = None) -> Response:
        """One exchange; `body` may be a function of the connection (for channel binding).

        A keep-alive connection that the server closed while idle is detected when
        the request fails before any answer; it is then retried once on a new one.
        """
        for attempt in (1, 2):
            conn = self._connection()
            reused = self._requests_on_conn > 0
            payload = body(self) if callable(body) else body
            try:
                conn.putrequest(method, path, skip_accept_encoding=True)
                send = {"User-Agent": USER_AGENT, "Accept": "*/*", **headers}
                if payload is not None:
                    send["Content-Length"] = str(len(payload))
                for name, value in send.items():
                    conn.putheader(name, value)
                conn.endheaders(payload)
                facts = self._facts
                resp = conn.getresponse()
                self._requests_on_conn += 1
                data = resp.read(MAX_BODY + 1)
                if len(data) > MAX_BODY:
                    self.close()
                    raise TransportError(f"response body from {self.host}:{self.port} exceeds {MAX_BODY} bytes")
                result = Response(resp.status, resp.reason or "", _headers(resp.headers), data, *facts)
                if resp.will_close:
                    self.close()
                return result
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                self.close()
                if reused and attempt == 1:
                    continue
                raise TransportError(f"{self.host}:{self.port} closed the connection: {exc}") from None
            except (socket.timeout, TimeoutError):
                self.close()
                raise TransportError(f"no answer from {self.host}:{self.port} within {self.timeout:g} s") from None
            except http.client.HTTPException as exc:
                self.close()
                raise TransportError(f"malformed HTTP answer from {self.host}:{self.port}: "
                                     f"{type(exc).__name__} {exc}") from None
            except ssl.SSLError as exc:
                self.close()
                raise TlsError(f"TLS error with {self.host}:{self.port}: {exc.reason or exc}") from None
            except OSError as exc:
                self.close()
                raise TransportError(f"connection to {self.host}:{self.port} failed: {exc.strerror or exc}") from None
        raise AssertionError("unreachable")

    def _tls_facts(self, sock: object) -> tuple[str | None, bytes | None, bytes | None]:
        """TLS version, tls-unique (TLS 1.2 only) and server certificate of a new connection."""
        if not isinstance(sock, ssl.SSLSocket):
            return None, None, None
        version = sock.version()
        unique = None
        if version == "TLSv1.2":
            try:
                unique = sock.get_channel_binding("tls-unique")
            except (ValueError, ssl.SSLError):
                pass
        return version, unique, sock.getpeercert(binary_form=True)

    def peer_certificate(self) -> x509.Certificate | None:
        conn = self._connection()
        der = conn.sock.getpeercert(binary_form=True) if isinstance(conn.sock, ssl.SSLSocket) else None
        return x509.load_der_x509_certificate(der) if der else None


def _headers(msg: http.client.HTTPMessage) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in msg.items():
        key = name.lower()
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out


class ClientIdentity:
    """mTLS credentials for ssl.SSLContext.load_cert_chain, which reads files only.

    Paths are used as they are; in-memory objects are written once to a private
    temporary directory (0700, files 0600) removed when the client closes.
    """

    def __init__(self, cert: object, key: object, chain: list[x509.Certificate] | None = None) -> None:
        self._tmp: tempfile.TemporaryDirectory | None = None
        if isinstance(cert, (str, os.PathLike)) and isinstance(key, (str, os.PathLike)) and not chain:
            self.paths = (os.fspath(cert), os.fspath(key))
            return
        self._tmp = tempfile.TemporaryDirectory(prefix="kipuka-est-")
        os.chmod(self._tmp.name, 0o700)
        cert_pem = _pem_of_cert(cert) + b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain or [])
        key_pem = _pem_of_key(key)
        cert_path = os.path.join(self._tmp.name, "client.crt")
        key_path = os.path.join(self._tmp.name, "client.key")
        for path, data in ((cert_path, cert_pem), (key_path, key_pem)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
        self.paths = (cert_path, key_path)

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def _pem_of_cert(cert: object) -> bytes:
    if isinstance(cert, x509.Certificate):
        return cert.public_bytes(serialization.Encoding.PEM)
    if isinstance(cert, (str, os.PathLike)):
        with open(cert, "rb") as fh:
            return fh.read()
    if isinstance(cert, bytes):
        return cert
    raise TypeError(f"client certificate must be a path, PEM bytes or an x509.Certificate, not {type(cert)}")


def _pem_of_key(key: object) -> bytes:
    if isinstance(key, (str, os.PathLike)):
        with open(key, "rb") as fh:
            return fh.read()
    if isinstance(key, bytes):
        return key
    if hasattr(key, "private_bytes"):
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,  # type: ignore[attr-defined]
                                 serialization.NoEncryption())
    raise TypeError(f"client key must be a path, PEM bytes or a private key object, not {type(key)}")

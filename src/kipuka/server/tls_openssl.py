"""The EST listener's optional TLS back end on pyOpenSSL ([tls] backend = "pyopenssl").

Why it exists: Python's `ssl` module is linked to the system OpenSSL, which before 3.5
knows no ML-DSA. It can then neither verify a client certificate that an ML-DSA CA
signed (the handshake fails, even for an EC device key) nor accept an ML-DSA
CertificateVerify from a device whose TLS key is ML-DSA. pyOpenSSL runs on the OpenSSL
that pyca/cryptography bundles (3.5 or later in every current wheel), which does both,
in TLS 1.3.

asyncio's TLS is built on `ssl.SSLObject`, so this module does the TLS record layer
itself: `TLSServerProtocol` sits on the raw TCP transport, drives an OpenSSL connection
over memory BIOs, and once the handshake is done hands aiohttp's request handler a
`TLSTransport` that encrypts what it writes. aiohttp and kipuka see the connection
through the same `get_extra_info("ssl_object")` as with the stdlib back end:
`OpenSSLObject` answers getpeercert(binary_form=True), version(), the tls-unique
channel binding and, natively, the TLS 1.3 exporter (kipuka.tlsbinding uses it).

The handshake policy is the stdlib back end's (kipuka.server.tls): TLS 1.2 ECDHE+AEAD
and TLS 1.3, no compression or renegotiation, client certificate optional, its chain
checked against [tls] client_ca without its dates (the RA answers 401 with a reason
for an expired one), no session resumption (so tls-unique is always the client's
Finished). Handshakes have the header deadline; the per-connection work is Python, so
this back end costs CPU per record (docs/pq.md has the figures).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from collections.abc import Callable
from typing import Any

from OpenSSL import SSL

from kipuka.config import TLSConfig

log = logging.getLogger("kipuka.tls")

X509_V_FLAG_NO_CHECK_TIME = 0x200000  # OpenSSL x509_vfy.h; pyOpenSSL's X509StoreFlags lacks it
READ_SIZE = 65536


def server_context(cfg: TLSConfig, extra_client_cas: tuple[Path, ...] = ()) -> SSL.Context:
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_3_VERSION if cfg.min_version == "1.3" else SSL.TLS1_2_VERSION)
    ctx.set_max_proto_version(SSL.TLS1_3_VERSION)
    ctx.set_cipher_list(b"ECDHE+AESGCM:ECDHE+CHACHA20")
    ctx.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_NO_RENEGOTIATION | SSL.OP_CIPHER_SERVER_PREFERENCE
                    | SSL.OP_NO_TICKET)
    ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    ctx.use_certificate_chain_file(str(cfg.cert))
    ctx.use_privatekey_file(str(cfg.key))
    ctx.check_privatekey()
    anchors = ((cfg.client_ca,) if cfg.client_ca is not None else ()) + tuple(extra_client_cas)
    if anchors:
        for path in anchors:  # [tls] client_ca, and BRSKI's manufacturer CAs (as in kipuka.server.tls)
            ctx.load_verify_locations(str(path))
        ctx.get_cert_store().set_flags(X509_V_FLAG_NO_CHECK_TIME)
        ctx.set_verify(SSL.VERIFY_PEER, _keep_verdict)  # no FAIL_IF_NO_PEER_CERT: OTP clients share the port
    else:
        ctx.set_verify(SSL.VERIFY_NONE)
    return ctx


def _keep_verdict(_conn: SSL.Connection, _cert: Any, _errno: int, _depth: int, ok: int) -> bool:
    return bool(ok)  # OpenSSL's own verdict; dates are off through the store flag above


class OpenSSLListener:
    """The listening side: the current context, replaced on reload (new handshakes take the new one)."""

    def __init__(self, cfg: TLSConfig, extra_client_cas: tuple[Path, ...] = ()) -> None:
        self.current = server_context(cfg, extra_client_cas)

    def reload(self, cfg: TLSConfig, extra_client_cas: tuple[Path, ...] = ()) -> None:
        self.current = server_context(cfg, extra_client_cas)

    def wrap(self, app_factory: Callable[[], asyncio.Protocol],
             handshake_timeout: float) -> Callable[[], asyncio.Protocol]:
        """A protocol factory for loop.create_server (with ssl=None): TLS here, then `app_factory`'s protocol."""
        return lambda: TLSServerProtocol(self, app_factory, handshake_timeout)


class ReloadableOpenSSL:
    """Same shape as kipuka.server.tls.ReloadableContext: `listener` goes to the site."""

    def __init__(self, cfg: TLSConfig, extra_client_cas: tuple[Path, ...] = ()) -> None:
        self.listener = OpenSSLListener(cfg, extra_client_cas)

    def reload(self, cfg: TLSConfig, extra_client_cas: tuple[Path, ...] = ()) -> None:
        self.listener.reload(cfg, extra_client_cas)


class OpenSSLObject:
    """What kipuka and aiohttp read from `get_extra_info("ssl_object")`, for an OpenSSL connection."""

    def __init__(self, conn: SSL.Connection) -> None:
        self._conn = conn

    def getpeercert(self, binary_form: bool = False) -> Any:
        cert = self._conn.get_peer_certificate(as_cryptography=True)
        if cert is None:
            return None
        if not binary_form:
            return {}  # the dict form needs a verified chain in the stdlib; kipuka reads the DER only
        from cryptography.hazmat.primitives import serialization
        return cert.public_bytes(serialization.Encoding.DER)

    def version(self) -> str | None:
        return self._conn.get_protocol_version_name()

    def cipher(self) -> tuple[str, str, int] | None:
        name = self._conn.get_cipher_name()
        return (name, self._conn.get_cipher_version() or "", self._conn.get_cipher_bits() or 0) if name else None

    def get_channel_binding(self, cb_type: str = "tls-unique") -> bytes | None:
        """RFC 5929 tls-unique: the first Finished of the handshake, the client's (no resumption here)."""
        if cb_type != "tls-unique":
            raise ValueError(f"{cb_type} channel binding type not supported")
        return self._conn.get_peer_finished()

    def export_keying_material(self, label: bytes, length: int) -> bytes:
        """RFC 5705 / 8446 §7.5 exporter with an empty context (what RFC 9266 tls-exporter asks)."""
        return self._conn.export_keying_material(label, length, None)


class TLSTransport(asyncio.Transport):
    """The plaintext side of a TLSServerProtocol, as aiohttp's request handler sees it."""

    def __init__(self, owner: "TLSServerProtocol") -> None:
        super().__init__()
        self._owner = owner
        self._closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "ssl_object":
            return self._owner.ssl_object
        if name == "sslcontext":
            return self._owner.context  # truthy: aiohttp reports the scheme as https
        return self._owner.raw.get_extra_info(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or not data:
            return
        self._owner.send(bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(bytes(d) for d in list_of_data))

    def can_write_eof(self) -> bool:
        return False

    def is_closing(self) -> bool:
        return self._closing or self._owner.raw.is_closing()

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            self._owner.close_notify()

    def abort(self) -> None:
        self._closing = True
        self._owner.raw.abort()

    def pause_reading(self) -> None:
        self._owner.raw.pause_reading()  # type: ignore[attr-defined]

    def resume_reading(self) -> None:
        self._owner.raw.resume_reading()  # type: ignore[attr-defined]

    def is_reading(self) -> bool:
        return self._owner.raw.is_reading()  # type: ignore[attr-defined]

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._owner.raw.set_write_buffer_limits(high, low)  # type: ignore[attr-defined]

    def get_write_buffer_size(self) -> int:
        return self._owner.raw.get_write_buffer_size()  # type: ignore[attr-defined]

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._owner.app  # type: ignore[return-value]

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._owner.app = protocol  # type: ignore[assignment]


class TLSServerProtocol(asyncio.Protocol):
    """TLS over the raw TCP transport; after the handshake, `app` (aiohttp's handler) gets the plaintext."""

    def __init__(self, listener: OpenSSLListener, app_factory: Callable[[], asyncio.Protocol],
                 handshake_timeout: float) -> None:
        self._listener = listener
        self._app_factory = app_factory
        self._handshake_timeout = handshake_timeout
        self.app: asyncio.Protocol | None = None
        self.raw: asyncio.Transport = None  # type: ignore[assignment]
        self.context: SSL.Context | None = None
        self.ssl_object: OpenSSLObject | None = None
        self._conn: SSL.Connection | None = None
        self._tls: TLSTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._done = False

    # --- the TCP side -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.raw = transport  # type: ignore[assignment]
        self.context = self._listener.current
        self._conn = SSL.Connection(self.context, None)
        self._conn.set_accept_state()
        self._timer = asyncio.get_running_loop().call_later(self._handshake_timeout, self._handshake_deadline)

    def data_received(self, data: bytes) -> None:
        conn = self._conn
        if conn is None or self._done:
            return
        conn.bio_write(data)
        if self.app is None and not self._handshake():
            return
        self._pump()

    def eof_received(self) -> bool | None:
        if self.app is not None:
            return self.app.eof_received()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._done = True
        self._cancel_timer()
        if self.app is not None:
            self.app.connection_lost(exc)
        self._conn = None

    def pause_writing(self) -> None:
        if self.app is not None:
            self.app.pause_writing()

    def resume_writing(self) -> None:
        if self.app is not None:
            self.app.resume_writing()

    # --- TLS --------------------------------------------------------------------------------

    def _handshake(self) -> bool:
        assert self._conn is not None
        try:
            self._conn.do_handshake()
        except SSL.WantReadError:
            self._flush()
            return False
        except SSL.Error as exc:
            log.info("TLS handshake with %s failed: %s", self._peer(), _reason(exc))
            self._flush()  # the alert, if OpenSSL made one
            self._give_up()
            return False
        self._cancel_timer()
        self._flush()
        self.ssl_object = OpenSSLObject(self._conn)
        self._tls = TLSTransport(self)
        self.app = self._app_factory()
        self.app.connection_made(self._tls)
        return True

    def _pump(self) -> None:
        """Hand every decrypted byte to the application, then send what OpenSSL queued (alerts, tickets)."""
        conn = self._conn
        while conn is not None and not self._done:
            try:
                chunk = conn.recv(READ_SIZE)
            except SSL.WantReadError:
                break
            except SSL.ZeroReturnError:  # the client's close_notify
                self._flush()
                if self.app is not None and not self.app.eof_received():
                    self.raw.close()
                return
            except SSL.Error as exc:
                log.info("TLS error from %s: %s", self._peer(), _reason(exc))
                self._give_up()
                return
            if not chunk:
                break
            assert self.app is not None
            self.app.data_received(chunk)
            conn = self._conn
        self._flush()

    def send(self, data: bytes) -> None:
        conn = self._conn
        if conn is None or self.raw.is_closing():
            return
        view = memoryview(data)
        while view:
            sent = conn.send(view[:READ_SIZE])  # into the memory BIO: never a partial write for want of room
            view = view[sent:]
        self._flush()

    def close_notify(self) -> None:
        conn = self._conn
        if conn is not None and not self.raw.is_closing():
            try:
                conn.shutdown()
            except SSL.Error:
                pass
            self._flush()
        self.raw.close()

    def _flush(self) -> None:
        conn = self._conn
        if conn is None:
            return
        while True:
            try:
                out = conn.bio_read(READ_SIZE)
            except SSL.WantReadError:
                return
            if not out:
                return
            if not self.raw.is_closing():
                self.raw.write(out)

    def _handshake_deadline(self) -> None:
        self._timer = None
        if self.app is None and not self._done:
            log.info("closing a connection from %s: TLS handshake not complete within %gs", self._peer(),
                     self._handshake_timeout)
            self._give_up()

    def _give_up(self) -> None:
        self._done = True
        self._cancel_timer()
        self.raw.close()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _peer(self) -> str:
        peer = self.raw.get_extra_info("peername") if self.raw is not None else None
        return str(peer[0]) if isinstance(peer, tuple) and peer else "?"


def _reason(exc: SSL.Error) -> str:
    parts = [p[2] for p in (exc.args[0] if exc.args and isinstance(exc.args[0], list) else []) if len(p) > 2]
    return ", ".join(str(p) for p in parts) or type(exc).__name__

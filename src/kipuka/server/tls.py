"""The EST listener's TLS context.

TLS 1.2 (ECDHE with AEAD only) and TLS 1.3; no compression, no renegotiation.
Client certificates are optional at the handshake so OTP and mTLS share one
port; the chain is checked against [tls] client_ca but its dates are not
(X509_V_FLAG_NO_CHECK_TIME), so an expired certificate reaches the RA and gets
a 401 with a reason rather than an opaque TLS alert.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from kipuka.config import TLSConfig

X509_V_FLAG_NO_CHECK_TIME = 0x200000  # OpenSSL x509_vfy.h; not exported by Python's ssl


def server_context(cfg: TLSConfig, extra_client_cas: tuple[Path, ...] = ()) -> ssl.SSLContext:
    """`extra_client_cas` are accepted at the handshake beside [tls] client_ca (BRSKI's manufacturer
    CAs); what a certificate may do is the RA's decision, not the handshake's."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3 if cfg.min_version == "1.3" else ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_ciphers("ECDHE+AESGCM:ECDHE+CHACHA20")
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
    try:
        ctx.load_cert_chain(str(cfg.cert), str(cfg.key))
    except (OSError, ssl.SSLError) as exc:  # name the files: OpenSSL's own words do not
        raise ValueError(f"cannot load the TLS certificate {cfg.cert} with its key {cfg.key}: {exc}") from None
    anchors = ((cfg.client_ca,) if cfg.client_ca is not None else ()) + tuple(extra_client_cas)
    if anchors:
        for path in anchors:
            try:
                ctx.load_verify_locations(cafile=str(path))
            except (OSError, ssl.SSLError) as exc:
                raise ValueError(f"cannot load client CA certificates from {path}: {exc}") from None
        ctx.verify_mode = ssl.CERT_OPTIONAL
        ctx.verify_flags |= X509_V_FLAG_NO_CHECK_TIME
    else:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def reloadable_context(cfg: TLSConfig, extra_client_cas: tuple[Path, ...] = ()) -> "ReloadableContext":
    """The EST listener's context for [tls] backend: the stdlib's, or pyOpenSSL's (kipuka.server.tls_openssl)."""
    if cfg.backend == "pyopenssl":
        from kipuka.server.tls_openssl import ReloadableOpenSSL
        return ReloadableOpenSSL(cfg, extra_client_cas)  # type: ignore[return-value]
    return ReloadableContext(cfg, extra_client_cas)


class ReloadableContext:
    """A listening context whose certificates can be replaced without a new socket.

    Every handshake starts on `listener`; its SNI callback (called by OpenSSL
    whether or not the client sends a name) moves the connection onto the
    current context, so a reload takes effect for the next handshake while
    existing connections keep theirs.
    """

    def __init__(self, cfg: TLSConfig, extra_client_cas: tuple[Path, ...] = ()) -> None:
        self.current = server_context(cfg, extra_client_cas)
        self.listener = server_context(cfg, extra_client_cas)
        self.listener.sni_callback = self._select

    def reload(self, cfg: TLSConfig, extra_client_cas: tuple[Path, ...] = ()) -> None:
        self.current = server_context(cfg, extra_client_cas)
        # Whether a client certificate is asked for is the listener's setting (OpenSSL copies it into each
        # connection before the switch); its verification uses the current context's anchors. So a
        # client_ca added or removed by a reload applies to the next handshake, never half.
        self.listener.verify_mode = self.current.verify_mode
        self.listener.verify_flags = self.current.verify_flags

    def _select(self, ssl_object: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext) -> None:
        ssl_object.context = self.current

"""TLS channel bindings for linking a CSR to its TLS session (RFC 7030 §3.5).

TLS 1.2: tls-unique (RFC 5929), which Python's ssl module provides.
TLS 1.3: tls-exporter (RFC 9266) — 32 bytes exported with the label
"EXPORTER-Channel-Binding" and an empty context. RFC 7030 defines only
tls-unique; using tls-exporter on TLS 1.3 is a kipuka extension.

Python's ssl module has no keying-material exporter. This module calls
OpenSSL's SSL_export_keying_material through ctypes on the SSL* that CPython's
_ssl object holds (second pointer after PyObject_HEAD in PySSLSocket, stable
from CPython 3.8 to 3.13). Because a wrong pointer would be fatal, it is used
only after `self_test()` has run a TLS 1.3 handshake in memory and found that
both ends export the same value and that OpenSSL agrees with Python about the
connection (SSL_version); otherwise TLS 1.3 linking is disabled with a log line
and requests that need it are refused, never answered with a wrong value.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import datetime as dt
import logging
import platform
import ssl
import sys
from typing import Any

log = logging.getLogger("kipuka.tls")

EXPORTER_LABEL = b"EXPORTER-Channel-Binding"
EXPORTER_LENGTH = 32
TLS1_3_VERSION = 0x0304

_libssl: Any = None
_exporter_ok: bool | None = None


def tls_unique(ssl_object: ssl.SSLObject) -> bytes | None:
    if ssl_object.version() != "TLSv1.2":
        return None
    return ssl_object.get_channel_binding("tls-unique")


def tls_exporter(ssl_object: ssl.SSLObject) -> bytes | None:
    """RFC 9266 tls-exporter of a TLS 1.3 connection, or None when unavailable."""
    if ssl_object.version() != "TLSv1.3":
        return None
    native = getattr(ssl_object, "export_keying_material", None)
    if native is not None:  # the pyOpenSSL back end (kipuka.server.tls_openssl) exports without ctypes
        return native(EXPORTER_LABEL, EXPORTER_LENGTH)
    if not exporter_available():
        return None
    return _export(ssl_object)


def binding_for(ssl_object: ssl.SSLObject | None) -> tuple[str, bytes] | None:
    """("tls-unique" | "tls-exporter", value) for the connection, if one can be computed."""
    if ssl_object is None:
        return None
    value = tls_unique(ssl_object)
    if value is not None:
        return "tls-unique", value
    value = tls_exporter(ssl_object)
    if value is not None:
        return "tls-exporter", value
    return None


def exporter_available() -> bool:
    global _exporter_ok
    if _exporter_ok is None:
        _exporter_ok = self_test()
    return _exporter_ok


def _load() -> Any:
    global _libssl
    if _libssl is None:
        name = ctypes.util.find_library("ssl") or "libssl.so.3"
        lib = ctypes.CDLL(name)
        lib.SSL_export_keying_material.argtypes = [
            ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t,
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int]
        lib.SSL_export_keying_material.restype = ctypes.c_int
        lib.SSL_version.argtypes = [ctypes.c_void_p]
        lib.SSL_version.restype = ctypes.c_int
        _libssl = lib
    return _libssl


def _ssl_pointer(ssl_object: ssl.SSLObject) -> int:
    inner = ssl_object._sslobj  # type: ignore[attr-defined]  # CPython's _ssl._SSLSocket
    offset = ctypes.sizeof(ctypes.c_ssize_t) + ctypes.sizeof(ctypes.c_void_p) * 2  # ob_refcnt, ob_type, Socket
    return ctypes.c_void_p.from_address(id(inner) + offset).value or 0


def _export(ssl_object: ssl.SSLObject) -> bytes | None:
    lib = _load()
    pointer = _ssl_pointer(ssl_object)
    if not pointer or lib.SSL_version(pointer) != TLS1_3_VERSION:
        return None
    out = ctypes.create_string_buffer(EXPORTER_LENGTH)
    ok = lib.SSL_export_keying_material(pointer, out, EXPORTER_LENGTH, EXPORTER_LABEL, len(EXPORTER_LABEL),
                                        None, 0, 0)
    return out.raw if ok == 1 else None


def self_test() -> bool:
    """A TLS 1.3 handshake in memory; True only if both ends export the same 32 bytes."""
    if platform.python_implementation() != "CPython" or not (3, 8) <= sys.version_info[:2] <= (3, 13):
        log.warning("TLS 1.3 channel binding (tls-exporter) disabled: unsupported Python %s", sys.version)
        return False
    try:
        client, server = _memory_pair()
        for end in (client, server):  # OpenSSL must agree with Python about what the pointer is
            if _load().SSL_version(_ssl_pointer(end)) != TLS1_3_VERSION:
                raise RuntimeError("SSL pointer check failed")
        a, b = _export(client), _export(server)
        if a is None or a != b or a == bytes(EXPORTER_LENGTH):
            raise RuntimeError("client and server exporters differ")
    except Exception as exc:  # any doubt disables the feature
        log.warning("TLS 1.3 channel binding (tls-exporter) disabled: self-test failed: %s", exc)
        return False
    return True


def _memory_pair() -> tuple[ssl.SSLObject, ssl.SSLObject]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import tempfile
    import os

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "self-test")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(minutes=5)).sign(key, hashes.SHA256()))
    with tempfile.TemporaryDirectory() as tmp:
        cert_path, key_path = os.path.join(tmp, "c.pem"), os.path.join(tmp, "k.pem")
        with open(cert_path, "wb") as fh:
            fh.write(cert.public_bytes(serialization.Encoding.PEM))
        with open(key_path, "wb") as fh:
            fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ctx.load_cert_chain(cert_path, key_path)
    server_ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname = False
    client_ctx.verify_mode = ssl.CERT_NONE
    client_ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(c_in, c_out, server_side=False)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        for end in (client, server):
            try:
                end.do_handshake()
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if client.version() and server.version():
            try:
                client.do_handshake()
                server.do_handshake()
                return client, server
            except ssl.SSLWantReadError:
                continue
    raise RuntimeError("in-memory handshake did not complete")

"""Writing credentials to disk: atomically, with safe permissions.

A renewal run from cron or a systemd timer must never leave a half-written
certificate or key behind, nor a key readable by others even for an instant:
the data goes to a temporary file created 0600 in the target's directory,
is fsynced, given its final mode, and renamed over the target (os.replace is
atomic on POSIX); the directory is fsynced so the rename survives a crash.
"""

from __future__ import annotations

import os
import re
import tempfile

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from kipuka.client.errors import EstError

KEY_MODE = 0o600
CERT_MODE = 0o644


Owner = tuple[int, int]  # (uid, gid) for os.fchown; -1 leaves one unchanged


def write_atomic(path: str | os.PathLike, data: bytes, mode: int, owner: Owner | None = None) -> None:
    target = os.path.abspath(os.fspath(path))
    directory = os.path.dirname(target)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise EstError(f"cannot write {target}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)
            if owner is not None:
                os.fchown(fh.fileno(), *owner)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise EstError(f"cannot write {target}: {exc.strerror}") from None
    try:
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass  # some filesystems refuse fsync on directories; the rename is done anyway


def check_writable(path: str | os.PathLike, what: str) -> None:
    """Fail now, before anything is sent, when `path` could not be written later.

    A file is made and removed in the target's directory: that is what the
    atomic write will need, and unlike os.access it is right for root, ACLs and
    read-only mounts.
    """
    target = os.path.abspath(os.fspath(path))
    if os.path.isdir(target):
        raise EstError(f"cannot write the {what} to {target}: it is a directory")
    directory = os.path.dirname(target)
    if not os.path.isdir(directory):
        raise EstError(f"cannot write the {what} to {target}: directory {directory} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=".check", dir=directory)
    except OSError as exc:
        raise EstError(f"cannot write the {what} to {target}: {exc.strerror}") from None
    os.close(fd)
    os.unlink(tmp)


def key_pem(key: object) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,  # type: ignore[attr-defined]
                             serialization.NoEncryption())


def certs_pem(certs: list[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def write_key(path: str | os.PathLike, key: object, mode: int = KEY_MODE, owner: Owner | None = None) -> None:
    write_atomic(path, key_pem(key), mode, owner)


def write_certs(path: str | os.PathLike, certs: list[x509.Certificate], mode: int = CERT_MODE,
                owner: Owner | None = None) -> None:
    write_atomic(path, certs_pem(certs), mode, owner)


def read_bytes(path: str | os.PathLike, what: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise EstError(f"cannot read {what} {os.fspath(path)}: {exc.strerror}") from None


def read_certificate(path: str | os.PathLike) -> x509.Certificate:
    data = read_bytes(path, "certificate")
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificates(data)[0]
        return x509.load_der_x509_certificate(data)
    except ValueError:
        raise EstError(f"{os.fspath(path)} holds no certificate") from None


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(w|d|h|m|s)", re.I)
_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_duration(text: str, bare_unit: str = "s") -> float:
    """ "30d", "12h", "1d12h", "90m", "45s", "2w"; a bare number is in `bare_unit`."""
    value = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value) * _UNITS[bare_unit]
    pos, total = 0, 0.0
    for m in _DURATION.finditer(value):
        if value[pos:m.start()].strip():
            break
        total += float(m.group(1)) * _UNITS[m.group(2).lower()]
        pos = m.end()
    if pos == 0 or value[pos:].strip():
        raise ValueError(f"invalid duration {text!r} (use e.g. 30d, 12h, 90m, 45s)")
    return total

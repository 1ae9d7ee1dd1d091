"""Putting an issued certificate and its key in place, as a pair, and finishing an interrupted install.

Two files cannot be replaced in one atomic step. So the install is journaled:
1. the issued certificate is recorded in the pending-request file, which
   already holds the new key (`kipuka.client.pending`): from this moment
   the new pair exists, complete, in one file that was written atomically;
2. the key file is replaced (temporary file, fsync, rename), then the
   certificate file, then the chain; each step atomic;
3. the pending-request file is removed.
Until step 1 the previous pair is untouched; after it, a crash at any
point is finished by `recover()` at the next run, before anything else. The
key goes first so that a program that watches the certificate file sees the
new certificate only once its key is in place.
"""

from __future__ import annotations

import glob
import os
import time
from dataclasses import dataclass

from cryptography import x509

from kipuka.client.errors import EstError
from kipuka.client.files import (CERT_MODE, KEY_MODE, Owner, check_writable, read_bytes, write_certs,
                                 write_key)
from kipuka.client.csr import PrivateKey, load_private_key
from kipuka.client.pending import PendingFile, PendingRequest
from kipuka.client.verify import is_self_signed, same_public_key


@dataclass
class Destination:
    """Where a certificate (and its key) go, with which modes and owner."""

    cert: str
    key: str | None = None        # None: the key is not written (it stays where it is)
    chain: str | None = None      # the issuer chain, issuing CA first
    fullchain: bool = False       # the certificate file also holds the intermediate CAs
    cert_mode: int = CERT_MODE
    key_mode: int = KEY_MODE
    owner: Owner | None = None

    def check(self, *extra: tuple[str, str]) -> None:
        """Every path writable, before anything is sent (extra: (path, what) pairs)."""
        for path, what in ((self.cert, "certificate"), (self.key, "key"), (self.chain, "chain"), *extra):
            if path:
                check_writable(path, what)


def install(dest: Destination, leaf: x509.Certificate, chain: list[x509.Certificate], key: PrivateKey | None,
            journal: PendingFile | None = None, request: PendingRequest | None = None) -> None:
    """Write the pair; with a journal, commit to it first and remove it last."""
    if journal is not None and request is not None:
        request.issued = [leaf, *chain]
        journal.save(request)
    _write(dest, leaf, chain, key)
    if journal is not None:
        journal.remove()
    for path in (dest.key, dest.cert, dest.chain):
        if path:
            _remove_stale_temporaries(path)


def recover(dest: Destination, journal: PendingFile) -> x509.Certificate | None:
    """Finish an install that a crash interrupted; the certificate it put in place, or None.

    A journal older than the pair on disk (the files were replaced by other
    means since) is dropped rather than replayed.
    """
    request = journal.load()
    if request is None or not request.issued:
        return None
    leaf = request.issued[0]
    on_disk = _current_pair(dest)
    if on_disk is not None and (on_disk == leaf or on_disk.not_valid_before_utc > leaf.not_valid_before_utc):
        journal.remove()
        return None
    _write(dest, leaf, request.issued[1:], request.key if dest.key else None)
    journal.remove()
    return leaf


def _write(dest: Destination, leaf: x509.Certificate, chain: list[x509.Certificate],
           key: PrivateKey | None) -> None:
    if dest.key and key is not None:
        write_key(dest.key, key, dest.key_mode, dest.owner)
    intermediates = [c for c in chain if not is_self_signed(c)]
    write_certs(dest.cert, [leaf, *(intermediates if dest.fullchain else [])], dest.cert_mode, dest.owner)
    if dest.chain:
        write_certs(dest.chain, chain, dest.cert_mode, dest.owner)


def _current_pair(dest: Destination) -> x509.Certificate | None:
    """The certificate on disk when it and the key file on disk belong together."""
    if not dest.key or not (os.path.exists(dest.cert) and os.path.exists(dest.key)):
        return None
    try:
        cert = x509.load_pem_x509_certificates(read_bytes(dest.cert, "certificate"))[0]
        key = load_private_key(read_bytes(dest.key, "key"))
    except (ValueError, EstError):
        return None
    return cert if same_public_key(cert.public_key(), key.public_key()) else None


def pair_matches(cert_path: str, key_path: str) -> bool:
    return _current_pair(Destination(cert_path, key_path)) is not None


def _remove_stale_temporaries(path: str) -> None:
    """Temporary files of writes that a kill interrupted (`.NAME.*.tmp`, see files.write_atomic).

    Only those a minute old: a younger one may belong to a write in progress.
    """
    directory, name = os.path.split(os.path.abspath(path))
    for tmp in glob.glob(os.path.join(glob.escape(directory), f".{glob.escape(name)}.*.tmp")):
        try:
            if time.time() - os.stat(tmp).st_mtime > 60:
                os.unlink(tmp)
        except OSError:
            pass

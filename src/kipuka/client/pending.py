"""A request in flight, kept on disk so that nothing is lost when the client stops.

An EST enrollment can take a while: the server may hold it for approval
(202 + Retry-After, for hours), the network may fail, the process may be
killed. What must survive is the private key the CSR was made with: the
server matches a retried request by requester and public key (RFC 7030
4.2.3), so a rerun with the same key resumes the same request, and a
single-use OTP that a held request has reserved is not spent twice.

The file (JSON, mode 0600 like the key it holds) is written before the
request is first sent, and removed once the certificate and key are in
place. In between it doubles as the journal of the final write: the issued
certificate is recorded in it before the certificate and key files are
replaced, so a crash between those two renames is finished by the next run
(`kipuka.client.install.recover`), never left as a key that does not match its
certificate.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from kipuka.client.csr import CsrSpec, PrivateKey, load_private_key
from kipuka.client.describe import iso, parse_iso, utcnow
from kipuka.client.errors import EstError
from kipuka.client.files import KEY_MODE, certs_pem, key_pem, write_atomic

FORMAT = 1
MAX_FILE = 256 * 1024


def suffix_path(path: str | os.PathLike, suffix: str = ".pending") -> str:
    return os.fspath(path) + suffix


@dataclass
class PendingRequest:
    """One enrollment in flight: its key, the CSR it was made as, and where it stands."""

    operation: str                       # simpleenroll | simplereenroll
    server: str                          # the EST base URL with label, to refuse resuming elsewhere
    key: PrivateKey
    csr: x509.CertificateSigningRequest  # without challengePassword (remade per connection)
    created: dt.datetime
    accepted: bool = False               # the server answered 202 at least once: it holds the request
    next_attempt: dt.datetime | None = None
    issued: list[x509.Certificate] = field(default_factory=list)  # leaf first: the commit record

    @classmethod
    def new(cls, operation: str, server: str, spec: CsrSpec) -> "PendingRequest":
        return cls(operation, server, spec.key, spec.build(), utcnow())

    def spec(self) -> CsrSpec:
        return CsrSpec.from_csr(self.key, self.csr)

    def to_json(self) -> dict:
        return {"format": FORMAT, "operation": self.operation, "server": self.server,
                "created": iso(self.created), "accepted": self.accepted,
                "next_attempt": iso(self.next_attempt) if self.next_attempt else None,
                "key": key_pem(self.key).decode(),
                "csr": self.csr.public_bytes(serialization.Encoding.PEM).decode(),
                "issued": certs_pem(self.issued).decode() if self.issued else None}

    @classmethod
    def from_json(cls, doc: dict) -> "PendingRequest":
        if doc.get("format") != FORMAT:
            raise ValueError(f"unknown format {doc.get('format')!r}")
        issued = x509.load_pem_x509_certificates(doc["issued"].encode()) if doc.get("issued") else []
        return cls(operation=str(doc["operation"]), server=str(doc["server"]),
                   key=load_private_key(doc["key"].encode()),
                   csr=x509.load_pem_x509_csr(doc["csr"].encode()),
                   created=parse_iso(doc["created"]), accepted=bool(doc.get("accepted")),
                   next_attempt=parse_iso(doc["next_attempt"]) if doc.get("next_attempt") else None,
                   issued=issued)


class PendingFile:
    """Where one PendingRequest lives; mode 0600 (it holds a private key)."""

    def __init__(self, path: str | os.PathLike, owner: tuple[int, int] | None = None) -> None:
        self.path = os.fspath(path)
        self.owner = owner

    def exists(self) -> bool:
        return os.path.exists(self.path)

    def load(self) -> PendingRequest | None:
        try:
            with open(self.path, "rb") as fh:
                data = fh.read(MAX_FILE + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise EstError(f"cannot read the pending request {self.path}: {exc.strerror}") from None
        try:
            if len(data) > MAX_FILE:
                raise ValueError("file too large")
            return PendingRequest.from_json(json.loads(data))
        except (ValueError, KeyError, TypeError, EstError) as exc:
            raise EstError(f"the pending request {self.path} is damaged ({exc}); move it away to start a new "
                           f"request (its key may still be held by the server)") from None

    def save(self, request: PendingRequest) -> None:
        write_atomic(self.path, json.dumps(request.to_json(), indent=1).encode(), KEY_MODE, self.owner)

    def remove(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

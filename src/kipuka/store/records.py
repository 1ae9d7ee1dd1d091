"""Plain records passed between the RA and the store (no SQL, no HTTP)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclass(frozen=True)
class CertRecord:
    ca_id: str
    serial: str  # lower-case hex, no leading zeros: random 159-bit serials overflow BIGINT
    subject: str
    sans: str
    not_before: dt.datetime
    not_after: dt.datetime
    label: str
    entity: str
    auth: str  # "otp" | "mtls"
    pubkey_sha256: str
    fingerprint_sha256: str
    der: bytes
    issued_at: dt.datetime
    otp_id: int | None = None
    revoked_at: dt.datetime | None = None
    revocation_reason: str | None = None
    # The certificate this one renewed (schema v6): lineage for the console's detail page.
    replaces_ca: str | None = None
    replaces_serial: str | None = None
    # The names the request asked for (schema v8), kept only where the CA certified others (a
    # Dogtag profile or an upstream EST server that rewrites the subject): a retry after a lost
    # response is recognised by the names it asks for, not by the names the CA gave.
    requested_subject: str | None = None
    requested_sans: str | None = None

    def request_names(self) -> tuple[str, str]:
        """(subject, SANs) as the request asked for them."""
        if self.requested_subject is None:
            return self.subject, self.sans
        return self.requested_subject, self.requested_sans or ""


@dataclass(frozen=True)
class OtpRecord:
    id: int
    entity: str
    label: str | None
    key_id: str
    digest: bytes
    expires_at: dt.datetime
    uses_total: int
    uses_left: int
    revoked_at: dt.datetime | None
    created_at: dt.datetime


@dataclass(frozen=True)
class AuditEvent:
    event: str  # enroll | reenroll | otp.create | otp.revoke | cert.revoke | auth ...
    outcome: str  # success | rejected | error
    reason: str = ""
    label: str = ""
    entity: str = ""
    client_addr: str = ""
    auth: str = ""
    ca_id: str = ""
    serial: str = ""
    at: dt.datetime = field(default_factory=utcnow)
    # Set by the store when read back; never written by callers.
    id: int | None = None
    chain_seq: int | None = None
    prev_hash: str | None = None
    hash: str | None = None

    def row(self) -> dict:
        """The columns a writer inserts (identity and chain are the store's)."""
        return {"event": self.event, "outcome": self.outcome, "reason": self.reason, "label": self.label,
                "entity": self.entity, "client_addr": self.client_addr, "auth": self.auth, "ca_id": self.ca_id,
                "serial": self.serial, "at": self.at}


@dataclass(frozen=True)
class PendingRecord:
    id: int
    op: str
    label: str
    ca_id: str
    requester: str
    entity: str
    auth: str
    client_addr: str
    otp_id: int | None
    credential_ca: str | None
    credential_serial: str | None
    pubkey_sha256: str
    csr_der: bytes
    subject: str
    sans: str
    status: str
    reason: str
    created_at: dt.datetime
    expires_at: dt.datetime
    decided_at: dt.datetime | None = None
    decided_by: str | None = None
    serial: str | None = None
    ca_ref: str | None = None  # the CA's own request id when a remote CA holds the request


@dataclass(frozen=True)
class ChainCheck:
    """The result of walking the audit hash chain."""

    ok: bool
    checked: int
    unchained: int
    broken_id: int | None = None
    broken_seq: int | None = None
    problem: str = ""

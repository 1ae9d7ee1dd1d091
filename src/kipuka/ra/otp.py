"""One-time passwords: making them and checking them against a keyed hash.

An OTP is 128 random bits, so HMAC-SHA-256 under a server secret is as safe as
a slow password hash and thousands of times cheaper. The secret lives in a key
file with one `key-id base64-key` line per key; new OTPs use the last key and
old ones keep verifying under theirs, so rotation invalidates nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import datetime as dt

    from kipuka.store import OtpRecord, Store

OTP_BYTES = 16
ENTITY_RE = re.compile(r"^[^:\x00-\x1f\x7f]{1,255}$")


class OtpKeyring:
    def __init__(self, keys: dict[str, bytes], current: str) -> None:
        self._keys = keys
        self.current = current

    @classmethod
    def load(cls, path: Path) -> "OtpKeyring":
        keys: dict[str, bytes] = {}
        current = ""
        for line in Path(path).read_text().splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            key_id, _, b64 = line.partition(" ")
            keys[key_id] = base64.b64decode(b64.strip())
            current = key_id
        if not keys:
            raise ValueError(f"{path}: no OTP hashing key")
        return cls(keys, current)

    @staticmethod
    def add_key(path: Path) -> str:
        """Append a new key (it becomes current); creates the file with mode 0600."""
        path = Path(path)
        existing = path.read_text() if path.exists() else ""
        key_id = "k" + secrets.token_hex(4)
        line = f"{key_id} {base64.b64encode(os.urandom(32)).decode()}\n"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a") as fh:
            if existing and not existing.endswith("\n"):
                fh.write("\n")
            fh.write(line)
        os.chmod(path, 0o600)
        return key_id

    def digest(self, key_id: str, entity: str, secret: str) -> bytes | None:
        key = self._keys.get(key_id)
        if key is None:
            return None
        msg = entity.encode() + b"\x00" + secret.encode()
        return hmac.new(key, msg, hashlib.sha256).digest()

    def matches(self, key_id: str, entity: str, secret: str, stored: bytes) -> bool:
        d = self.digest(key_id, entity, secret)
        return d is not None and hmac.compare_digest(d, stored)


def new_secret() -> str:
    """128 random bits, URL-safe base64 without padding (never contains ':').

    Never starting with '-' either: such a value is read as an option by command-line
    tools (`kipuka-est enroll --otp -x...`) and as a formula by spreadsheets holding a
    provisioning CSV. Drawing again in that case keeps every remaining value equally likely.
    """
    while True:
        secret = secrets.token_urlsafe(OTP_BYTES)
        if not secret.startswith("-"):
            return secret


ANY_LABEL = "any"
SCOPE_MAX = 64  # the otps.label column


def otp_scope(requested: str | list[str] | None, known_labels: set[str]) -> str | None:
    """The stored scope of a new OTP from what the operator asked for (CLI --label, admin API label).

    Nothing (None, "") is the unlabeled path only; "any" is every label, stored as NULL
    (what every OTP made before scopes existed means too); a label name, a
    comma-separated list or a JSON list are those labels. Unknown labels are refused.
    """
    from kipuka.errors import BadRequest

    if requested is None or requested == "" or requested == []:
        return ""
    if requested == ANY_LABEL or requested == [ANY_LABEL]:
        return None
    names = requested.split(",") if isinstance(requested, str) else list(requested)
    names = [n.strip() for n in names]
    if ANY_LABEL in names:
        raise BadRequest('"any" stands alone: every label, or a list of label names')
    for name in names:
        if name not in known_labels:
            raise BadRequest(f"unknown EST label {name[:64]!r}")
    scope = ",".join(dict.fromkeys(names))
    if len(scope) > SCOPE_MAX:
        raise BadRequest(f"a list of labels is at most {SCOPE_MAX} characters; use \"any\" or fewer labels")
    return scope


def otp_scope_allows(scope: str | None, label: str) -> bool:
    """May an OTP of this stored scope enroll on `label` ("" is the unlabeled path)?"""
    if scope is None:
        return True
    if scope == label:
        return True
    return bool(label) and "," in scope and label in scope.split(",")


def describe_scope(scope: str | None) -> str:
    """How listings show a scope: "any", "(unlabeled)" or the label names."""
    return ANY_LABEL if scope is None else (scope or "(unlabeled)")


def otp_status(otp: "OtpRecord", now: "dt.datetime") -> str:
    """revoked, spent, expired or active: the same word in `kipuka otp list`, the admin API and the console."""
    if otp.revoked_at:
        return "revoked"
    if otp.uses_left <= 0:
        return "spent"
    return "expired" if otp.expires_at <= now else "active"


def scope_json(scope: str | None) -> str:
    """A scope in the admin API: "any", "" (the unlabeled path) or the label names, comma-separated."""
    return ANY_LABEL if scope is None else scope


def issue_otp(store: "Store", keyring: OtpKeyring, entity: str, label: str | None, ttl_seconds: int,
              uses: int, known_labels: set[str], actor: str = "cli") -> tuple[int, str]:
    """Create an OTP and return (id, secret). The secret is shown once and never stored.

    `label` is the stored scope (see `otp_scope`): "" the unlabeled path, None any label.
    """
    import datetime as dt

    from kipuka.errors import BadRequest
    from kipuka.store.records import AuditEvent, utcnow

    if not ENTITY_RE.match(entity):
        raise BadRequest("entity id must be 1-255 characters without ':' or control characters")
    if label and any(name not in known_labels for name in label.split(",")):
        raise BadRequest(f"unknown EST label {label!r}")
    if uses < 1 or uses > 1000:
        raise BadRequest("uses must be between 1 and 1000")
    secret = new_secret()
    digest = keyring.digest(keyring.current, entity, secret)
    assert digest is not None
    now = utcnow()
    otp_id = store.create_otp(entity, label, keyring.current, digest, now + dt.timedelta(seconds=ttl_seconds), uses,
                              AuditEvent(event="otp.create", outcome="success", label=label or "", entity=entity,
                                         auth=actor, at=now,
                                         reason=f"ttl={ttl_seconds}s uses={uses} labels={describe_scope(label)}"))
    return otp_id, secret

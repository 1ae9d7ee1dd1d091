"""What the agent remembers between runs, per certificate, in its state directory.

    STATE_DIR/NAME.json       last attempt and result, failures in a row, when to try
                              next (back-off, or the server's Retry-After), which
                              bootstrap credential was spent
    STATE_DIR/NAME.pending    the request in flight and its key (kipuka.client.pending), 0600
    STATE_DIR/NAME.trust.pem  the CA certificates a fingerprint bootstrap accepted
    STATE_DIR/agent.lock      held while a pass runs: one agent per state directory

The state file holds no secret: a spent OTP is remembered by its SHA-256
(an OTP is a random single-use secret, already consumed when recorded), so a
new OTP written to the same file is recognised as new.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
from dataclasses import asdict, dataclass, fields

from kipuka.client.describe import parse_iso
from kipuka.client.errors import EstError
from kipuka.client.files import write_atomic
from kipuka.client.pending import PendingFile

STATE_MODE = 0o600


@dataclass
class CertState:
    last_attempt: str | None = None      # ISO times (UTC)
    last_success: str | None = None
    last_result: str | None = None       # enrolled | renewed | not_due | pending | waiting | failed
    last_error: str | None = None
    last_exit_code: int | None = None
    failures: int = 0                    # failures in a row (back-off)
    next_attempt: str | None = None      # not before: back-off or Retry-After
    otp_spent: str | None = None         # SHA-256 of the bootstrap OTP that obtained a certificate
    bootstrap_cert_spent: str | None = None  # SHA-256 of the bootstrap certificate that did
    hook_exit_code: int | None = None
    hook_last_run: str | None = None

    def next_attempt_time(self) -> dt.datetime | None:
        return parse_iso(self.next_attempt) if self.next_attempt else None


class StateDir:
    def __init__(self, path: str, owner: tuple[int, int] | None = None) -> None:
        self.path = path
        self.owner = owner
        self._lock_fd: int | None = None

    def ensure(self) -> None:
        try:
            os.makedirs(self.path, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise EstError(f"cannot create the state directory {self.path}: {exc.strerror}") from None

    def file(self, name: str, suffix: str) -> str:
        return os.path.join(self.path, f"{name}{suffix}")

    def journal(self, name: str) -> PendingFile:
        return PendingFile(self.file(name, ".pending"))

    def trust_file(self, name: str) -> str:
        return self.file(name, ".trust.pem")

    def load(self, name: str) -> CertState:
        try:
            with open(self.file(name, ".json"), "rb") as fh:
                doc = json.loads(fh.read(64 * 1024))
        except FileNotFoundError:
            return CertState()
        except (OSError, ValueError):
            return CertState()  # a damaged state file costs a retry, never the certificate
        known = {f.name for f in fields(CertState)}
        return CertState(**{k: v for k, v in doc.items() if k in known})

    def save(self, name: str, state: CertState) -> None:
        write_atomic(self.file(name, ".json"), json.dumps(asdict(state), indent=1, sort_keys=True).encode(),
                     STATE_MODE)

    # --- one agent at a time -------------------------------------------------------------

    def lock(self) -> None:
        """Take the directory's lock, or fail at once: two agents must not renew the same files."""
        path = os.path.join(self.path, "agent.lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise EstError(f"another kipuka-est agent is running on {self.path} (it holds {path})") from None
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

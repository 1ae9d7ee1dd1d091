"""Pre-shared key-encryption keys for /serverkeygen's symmetric delivery ([est] kek_file).

RFC 7030 4.4.1.1: a CSR's DecryptKeyIdentifier names an AES key the client and
the server already share; the server wraps the content key with it (CMS
KEKRecipientInfo, AES key wrap). The file, one key per line:

    # kek-id (hex)   AES key (base64, 16/24/32 bytes)   [who may use it ...]
    6b656b2d303031   q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=   device-001
    6b656b2d303032   ASNFZ4mrze/+3LqYdlQyEA==                       label:iot-fleet entity:device-002

Scopes, separated by spaces: `label:NAME`, `entity:ID`, or a bare name that
matches either. A key with no scope serves every requester on every label. The
entity is the OTP entity id, or for mTLS the client certificate's subject as
RFC 4514 text (`entity:CN=device-001.example.com`). The file must be readable by
its owner only (mode 0600 or stricter), like every other key kipuka reads.
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

KEK_LENGTHS = (16, 24, 32)
MAX_KEK_ID = 64


class KekFileError(ValueError):
    """The kek_file is unreadable, too open, or has a bad line."""


@dataclass(frozen=True)
class Kek:
    kek_id: bytes
    key: bytes = field(repr=False)
    scopes: tuple[str, ...] = ()

    def usable_by(self, label: str, entity: str) -> bool:
        if not self.scopes:
            return True
        for scope in self.scopes:
            kind, sep, name = scope.partition(":")
            if sep and kind == "label" and name == label:
                return True
            if sep and kind == "entity" and name == entity:
                return True
            if not sep and scope in (label, entity):
                return True
        return False


class KekTable:
    """The keys of a kek_file, looked up by identifier and requester."""

    def __init__(self, keys: dict[bytes, Kek]) -> None:
        self._keys = keys

    def __len__(self) -> int:
        return len(self._keys)

    def find(self, kek_id: bytes, label: str, entity: str) -> Kek | None:
        """The key named `kek_id` if this requester may use it; None otherwise (unknown looks the same)."""
        kek = self._keys.get(kek_id)
        return kek if kek is not None and kek.usable_by(label, entity) else None

    @classmethod
    def load(cls, path: Path | None) -> "KekTable":
        if path is None:
            return cls({})
        try:
            st = os.stat(path)
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise KekFileError(f"cannot read {path}: {exc.strerror}") from None
        if stat.S_IMODE(st.st_mode) & 0o077:
            raise KekFileError(f"{path} is readable by others (mode {stat.S_IMODE(st.st_mode):o}); chmod 600 it")
        return cls(parse_kek_lines(text, str(path)))


def parse_kek_lines(text: str, where: str = "kek_file") -> dict[bytes, Kek]:
    keys: dict[bytes, Kek] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        if len(fields) < 2:
            raise KekFileError(f"{where} line {number}: expected KEK-ID-HEX BASE64-KEY [SCOPE ...]")
        try:
            kek_id = bytes.fromhex(fields[0])
        except ValueError:
            raise KekFileError(f"{where} line {number}: the key identifier is not hexadecimal") from None
        if not 0 < len(kek_id) <= MAX_KEK_ID:
            raise KekFileError(f"{where} line {number}: the key identifier must be 1 to {MAX_KEK_ID} bytes")
        try:
            key = base64.b64decode(fields[1], validate=True)
        except (binascii.Error, ValueError):
            raise KekFileError(f"{where} line {number}: the key is not base64") from None
        if len(key) not in KEK_LENGTHS:
            raise KekFileError(f"{where} line {number}: an AES key is 16, 24 or 32 bytes, not {len(key)}")
        if kek_id in keys:
            raise KekFileError(f"{where} line {number}: key identifier {fields[0]} is listed twice")
        keys[kek_id] = Kek(kek_id, key, tuple(fields[2:]))
    return keys

"""Settings of a pkcs11 CA: its [ca.ID] table checked once, at start-up, into `Pkcs11Settings`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from kipuka.ca.options import CaOptions
from kipuka.config import CAConfig, ConfigError

DEFAULT_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
MODULE_CANDIDATES = (DEFAULT_MODULE, "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
                     "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so", "/usr/local/lib/softhsm/libsofthsm2.so")
OPTION_KEYS = frozenset({"module", "token_label", "slot", "key_label", "key_id", "cert", "chain", "pin_env",
                         "pin_file", "sessions", "session_timeout", "retry_after", "reconnect_interval",
                         "ocsp_cert", "ocsp_key", "debug_sign_delay"})


@dataclass(frozen=True)
class Pkcs11Settings:
    ca_id: str
    module: str
    token_label: str | None
    slot: int | None
    key_label: str | None
    key_id: bytes | None
    cert: Path
    chain: Path | None
    pin: str = ""
    sessions: int = 4
    session_timeout: float = 2.0
    retry_after: int = 2
    reconnect_interval: float = 1.0
    ocsp_cert: Path | None = None
    ocsp_key: Path | None = None
    sign_delay: float = 0.0  # debug_sign_delay: a slow HSM, for tests of session exhaustion

    def token_name(self) -> str:
        return f"token {self.token_label!r}" if self.token_label is not None else f"slot {self.slot}"

    def key_name(self) -> str:
        return f"key {self.key_label!r}" if self.key_label is not None else f"key id {self.key_id.hex()}"  # type: ignore[union-attr]


def settings_from_config(cfg: CAConfig) -> Pkcs11Settings:
    """Validate the [ca.ID] table of a pkcs11 CA; errors name the offending key."""
    o = CaOptions(cfg, "pkcs11", OPTION_KEYS, inline_secrets={"pin": "PIN"})
    module = o.string("module")
    if module is None:
        module = next((m for m in MODULE_CANDIDATES if os.path.exists(m)), DEFAULT_MODULE)
    elif not os.path.isabs(module):
        module = str((cfg.base / module).resolve())
    if not os.path.exists(module):
        raise ConfigError(o.key("module"), f"no PKCS#11 module at {module} (Debian: apt-get install softhsm2)")
    token_label, slot = o.string("token_label"), o.opts.get("slot")
    if slot is not None and (isinstance(slot, bool) or not isinstance(slot, int) or slot < 0):
        raise ConfigError(o.key("slot"), "expected a slot number")
    if (token_label is None) == (slot is None):
        raise ConfigError(o.key("token_label"), "give exactly one of token_label and slot")
    key_label, key_id_hex = o.string("key_label"), o.string("key_id")
    if key_label is None and key_id_hex is None:
        raise ConfigError(o.key("key_label"), "give key_label or key_id (or both)")
    key_id = None
    if key_id_hex is not None:
        try:
            key_id = bytes.fromhex(key_id_hex.replace(":", ""))
        except ValueError:
            raise ConfigError(o.key("key_id"), "expected hex digits, e.g. \"a1b2c3\"") from None
    cert = o.path("cert", required=True, what="the CA certificate, PEM")
    pin = o.secret("pin_env", "pin_file", "PIN", required=True)
    ocsp_cert, ocsp_key = o.path("ocsp_cert"), o.path("ocsp_key")
    if (ocsp_cert is None) != (ocsp_key is None):
        raise ConfigError(o.key("ocsp_cert"), "ocsp_cert and ocsp_key go together")
    return Pkcs11Settings(
        ca_id=cfg.id, module=module, token_label=token_label, slot=slot, key_label=key_label, key_id=key_id,
        cert=cert, chain=o.path("chain"), pin=pin,  # type: ignore[arg-type]
        sessions=o.integer("sessions", 4, 1, 256),
        session_timeout=o.seconds("session_timeout", "2s", allow_zero=True),
        retry_after=o.integer("retry_after", 2, 1, 86400),
        reconnect_interval=o.seconds("reconnect_interval", "1s"),
        ocsp_cert=ocsp_cert, ocsp_key=ocsp_key,
        sign_delay=o.seconds("debug_sign_delay", 0, allow_zero=True),
    )

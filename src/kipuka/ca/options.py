"""Reading a back end's [ca.ID] table: typed values whose errors name the key, and secrets.

Every non-local back end (pkcs11, dogtag, est) validates its own options when it
is built; this keeps the checks and their wording the same across them. Secrets
(PINs, key passwords) come from an environment variable or a file, never from
the configuration file itself.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Iterable

from kipuka.config import CAConfig, ConfigError

_SECONDS_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*$")


def parse_seconds(value: Any, key: str, *, allow_zero: bool = False) -> float:
    """Seconds from 2, 0.5, "2s", "250ms" or "1m"."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(key, 'expected a duration such as "2s" or "250ms"')
    if isinstance(value, str):
        m = _SECONDS_RE.match(value)
        if not m:
            raise ConfigError(key, f'expected a duration such as "2s" or "250ms", got {value!r}')
        seconds = float(m.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}[m.group(2)]
    else:
        seconds = float(value)
    if seconds < 0 or (seconds == 0 and not allow_zero):
        raise ConfigError(key, "must be positive")
    return seconds


class CaOptions:
    """The options of one [ca.ID] table, checked as they are read."""

    def __init__(self, cfg: CAConfig, kind: str, known: Iterable[str], *, inline_secrets: dict[str, str] | None = None
                 ) -> None:
        """`kind` names the back end in messages; `known` are its keys; `inline_secrets` maps a key that
        must never appear (e.g. "pin") to the word for the secret ("PIN")."""
        self.opts = cfg.options
        self.base = cfg.base
        self.prefix = f"ca.{cfg.id}"
        known = set(known)
        for name, what in (inline_secrets or {}).items():
            if name in self.opts:
                raise ConfigError(self.key(name), f"never put a {what} in the file: use {name}_env or {name}_file")
        for name in self.opts:
            if name not in known:
                raise ConfigError(self.key(name), f"unknown key for a {kind} CA; known: {', '.join(sorted(known))}")

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}"

    def string(self, name: str, default: str | None = None) -> str | None:
        value = self.opts.get(name, default)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise ConfigError(self.key(name), "expected a non-empty string")
        return value

    def path(self, name: str, *, required: bool = False, must_exist: bool = False,
             what: str = "") -> Path | None:
        """A file path, relative to the configuration file's directory."""
        value = self.string(name)
        if value is None:
            if required:
                raise ConfigError(self.key(name), "required key is missing" + (f" ({what})" if what else ""))
            return None
        resolved = (self.base / value).resolve()
        if must_exist and not resolved.is_file():
            raise ConfigError(self.key(name), f"no such file: {resolved}")
        return resolved

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        value = self.opts.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ConfigError(self.key(name), f"expected an integer from {low} to {high}")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self.opts.get(name, default)
        if not isinstance(value, bool):
            raise ConfigError(self.key(name), "expected true or false")
        return value

    def seconds(self, name: str, default: Any, *, allow_zero: bool = False) -> float:
        return parse_seconds(self.opts.get(name, default), self.key(name), allow_zero=allow_zero)

    def secret(self, env_name: str, file_name: str, what: str, *, required: bool) -> str | None:
        """A secret from the environment variable named by `env_name` or the file named by `file_name`."""
        env, file = self.string(env_name), self.path(file_name)
        if env is not None and file is not None:
            raise ConfigError(self.key(env_name), f"give only one of {env_name} and {file_name}")
        if env is None and file is None:
            if required:
                raise ConfigError(self.key(env_name), f"give exactly one of {env_name} and {file_name}")
            return None
        if env is not None:
            if env not in os.environ:
                raise ConfigError(self.key(env_name), f"environment variable {env} is not set")
            value = os.environ[env]
        else:
            try:
                value = file.read_text(encoding="utf-8").rstrip("\r\n")  # type: ignore[union-attr]
            except OSError as exc:
                raise ConfigError(self.key(file_name), f"cannot read the {what}: {exc.strerror or exc}") from None
        if not value:
            raise ConfigError(self.key(env_name if env is not None else file_name), f"the {what} is empty")
        return value

"""Reading TOML values into kipuka's settings: the error every problem raises, durations, and
building a frozen dataclass from a table with its keys and types checked.

Shared by the server configuration (kipuka.config) and the settings modules of other parts
(the BRSKI registrar's [brski] table).
"""

from __future__ import annotations

import re
from dataclasses import MISSING, fields, replace
from pathlib import Path
from typing import Any


class ConfigError(Exception):
    """A configuration problem, with the offending key and (when known) its line."""

    def __init__(self, key: str, message: str, line: int | None = None) -> None:
        self.key, self.message, self.line = key, message, line
        where = f" (line {line})" if line else ""
        super().__init__(f"{key}{where}: {message}")


_DURATION_RE = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: str | int, key: str = "duration") -> int:
    """Seconds from "90s", "15m", "24h", "30d" or a bare number of seconds."""
    if isinstance(value, bool):
        raise ConfigError(key, "expected a duration such as 15m, 24h or 30d")
    if isinstance(value, int):
        seconds = value
    else:
        m = _DURATION_RE.match(str(value))
        if not m:
            raise ConfigError(key, f"expected a duration such as 15m, 24h or 30d, got {value!r}")
        seconds = int(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    if seconds <= 0:
        raise ConfigError(key, "duration must be positive")
    return seconds



DURATION_FIELDS = {"default_ttl", "lockout", "recovery_window", "shutdown_timeout", "retry_after", "pending_ttl",
                    "crl_validity", "crl_refresh", "header_timeout", "body_timeout", "validity"}


def section(cls: type, table: dict[str, Any], key: str, base: Path, defaults: Any = None) -> Any:
    """Build a dataclass from a TOML table, checking names and types."""
    if not isinstance(table, dict):
        raise ConfigError(key, "expected a table")
    spec = {f.name: f for f in fields(cls)}
    values: dict[str, Any] = {}
    for name, raw in table.items():
        if name not in spec:
            raise ConfigError(f"{key}.{name}", "unknown key")
        values[name] = _coerce(spec[name].type, raw, f"{key}.{name}" if name != "id" else key, base, name)
    for name, f in spec.items():
        if name not in values and f.default is MISSING and f.default_factory is MISSING and defaults is None:
            raise ConfigError(f"{key}.{name}", "required key is missing")
    if defaults is not None:
        return replace(defaults, **values)
    return cls(**values)


def _coerce(type_name: Any, raw: Any, key: str, base: Path, name: str) -> Any:
    t = str(type_name)
    if name in DURATION_FIELDS:
        return parse_duration(raw, key)
    if t == "bool":
        if not isinstance(raw, bool):
            raise ConfigError(key, "expected true or false")
        return raw
    if t == "int":
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise ConfigError(key, "expected an integer")
        return raw
    if t == "str":
        if not isinstance(raw, str):
            raise ConfigError(key, "expected a string")
        return raw
    if t in ("Path", "Path | None"):
        if not isinstance(raw, str) or not raw:
            raise ConfigError(key, "expected a file path")
        return (base / raw).resolve()
    if t == "tuple[str, ...]":
        if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
            raise ConfigError(key, "expected a list of strings")
        return tuple(raw)
    if t == "tuple[Path, ...]":
        if not isinstance(raw, list) or not all(isinstance(x, str) and x for x in raw):
            raise ConfigError(key, "expected a list of file paths")
        return tuple((base / x).resolve() for x in raw)
    raise ConfigError(key, f"unsupported type {t}")  # a bug in this module, not in the file


def locate_key(text: str, dotted: str) -> int | None:
    """Best-effort line number of a dotted key (tomllib keeps no positions).

    Finds the deepest table header that prefixes the key, then the key's own
    line inside that table.
    """
    parts = dotted.split(".")
    lines = text.splitlines()
    header_line, depth = None, 0
    for i, line in enumerate(lines):
        m = re.match(r"^\s*\[\s*([^\]]+?)\s*\]", line)
        if not m:
            continue
        name = [p.strip().strip('"') for p in m.group(1).split(".")]
        if parts[: len(name)] == name and len(name) > depth:
            header_line, depth = i, len(name)
    rest = parts[depth:]
    if not rest:
        return header_line + 1 if header_line is not None else None
    start = header_line + 1 if header_line is not None else 0
    for i in range(start, len(lines)):
        if re.match(r"^\s*\[", lines[i]):
            break
        if re.match(rf'^\s*"?{re.escape(rest[0])}"?\s*=', lines[i]):
            return i + 1
    return header_line + 1 if header_line is not None else None

"""When to renew and when to try again: thresholds, jitter, back-off.

- A threshold is a share of the certificate's lifetime ("33%": renew when a
  third of it remains) or a duration before expiry ("7d"), as cert-manager's
  renewBeforePercentage / renewBefore and Azure IoT Edge's auto_renew do.
- Jitter moves each renewal earlier by up to the jitter ("5%" of the
  lifetime, or a duration), so a fleet enrolled at once does not renew at
  once. The amount is drawn from the certificate's serial and the entry's
  name, not at random per run: a timer-driven `--once` sees the same renewal
  time every time it asks.
- Back-off after failures doubles from `retry_initial` up to `retry_max`,
  with up to a quarter taken off at random so that a fleet whose server came
  back does not return in lockstep. The agent never gives up.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
import re
from dataclasses import dataclass

from cryptography import x509

from kipuka.client.files import parse_duration

_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")


@dataclass(frozen=True)
class Threshold:
    """A share of the lifetime (`fraction`) or a number of seconds; `of(cert)` gives seconds."""

    fraction: float | None = None
    seconds: float | None = None

    @classmethod
    def parse(cls, text: str | int | float, bare_unit: str = "s", what: str = "threshold") -> "Threshold":
        if isinstance(text, (int, float)) and not isinstance(text, bool):
            return cls(seconds=float(text))
        if not isinstance(text, str):
            raise ValueError(f"{what}: expected a duration (7d, 12h) or a percentage (33%), not {text!r}")
        m = _PERCENT.match(text)
        if m:
            value = float(m.group(1))
            if not 0 <= value <= 100:
                raise ValueError(f"{what}: a percentage between 0% and 100%, not {text!r}")
            return cls(fraction=value / 100)
        try:
            return cls(seconds=parse_duration(text, bare_unit=bare_unit))
        except ValueError as exc:
            raise ValueError(f"{what}: {exc}; or a percentage of the lifetime (33%)") from None

    def of(self, cert: x509.Certificate) -> float:
        if self.fraction is not None:
            lifetime = (cert.not_valid_after_utc - cert.not_valid_before_utc).total_seconds()
            return max(0.0, lifetime) * self.fraction
        return self.seconds or 0.0

    def __str__(self) -> str:
        return f"{self.fraction * 100:g}%" if self.fraction is not None else f"{self.seconds:g}s"


def renewal_time(cert: x509.Certificate, threshold: Threshold, jitter: Threshold, seed: str) -> dt.datetime:
    """When `cert` is due: `threshold` before it expires, moved earlier by its share of the jitter."""
    due = cert.not_valid_after_utc - dt.timedelta(seconds=threshold.of(cert))
    spread = jitter.of(cert) * _unit(f"{seed}/{cert.serial_number:x}")
    return max(cert.not_valid_before_utc, due - dt.timedelta(seconds=spread))


def backoff(failures: int, initial: float, cap: float, rng: random.Random | None = None) -> float:
    """Seconds to wait after the `failures`-th failure in a row (1 = the first)."""
    delay = min(cap, initial * (2 ** max(0, min(failures - 1, 30))))
    return max(1.0, delay * (1 - 0.25 * (rng or random).random()))


def _unit(seed: str) -> float:
    """A number in [0, 1) that depends on `seed` only."""
    return int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big") / 2 ** 64

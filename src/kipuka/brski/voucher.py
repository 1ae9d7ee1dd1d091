"""Vouchers and voucher requests as JSON (RFC 8366 §5.3, RFC 8995 §3).

Only the leaves BRSKI uses are modelled. Parsing is strict about the leaves it
reads (types, sizes, enumerations) and ignores leaves it does not know, as a
YANG-modelled JSON reader may (RFC 7951 leaves unknown members to the reader).
Binary leaves are base64 (RFC 7951 §6.6); date-and-time leaves are RFC 3339.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from kipuka.errors import BadRequest

VOUCHER = "ietf-voucher:voucher"
VOUCHER_REQUEST = "ietf-voucher-request:voucher"
ASSERTIONS = ("verified", "logged", "proximity")
MAX_JSON = 64 * 1024          # a voucher request carries at most two certificates and one CMS blob
MAX_NONCE = 64                # bytes; RFC 8995 §3.3 pledges use 8 to 32
MAX_SERIAL = 128
MAX_PRIOR = 48 * 1024         # the pledge's CMS voucher request, inside the registrar's


class VoucherError(BadRequest):
    """A voucher or voucher request that does not follow RFC 8366 / RFC 8995."""


@dataclass(frozen=True)
class VoucherRequest:
    """The leaves of a voucher request that BRSKI uses (pledge's or registrar's)."""

    created_on: dt.datetime | None = None
    nonce: bytes | None = None
    serial_number: str | None = None
    assertion: str | None = None
    proximity_registrar_cert: bytes | None = None   # DER, pledge requests only
    idevid_issuer: bytes | None = None              # the IDevID's AKI as DER OCTET STRING (RFC 8366 §5.3)
    prior_signed_voucher_request: bytes | None = None  # the pledge's CMS, registrar requests only

    def to_json(self) -> bytes:
        leaves: dict[str, str] = {}
        if self.created_on is not None:
            leaves["created-on"] = format_time(self.created_on)
        if self.nonce is not None:
            leaves["nonce"] = _b64(self.nonce)
        if self.serial_number is not None:
            leaves["serial-number"] = self.serial_number
        if self.assertion is not None:
            leaves["assertion"] = self.assertion
        if self.proximity_registrar_cert is not None:
            leaves["proximity-registrar-cert"] = _b64(self.proximity_registrar_cert)
        if self.idevid_issuer is not None:
            leaves["idevid-issuer"] = _b64(self.idevid_issuer)
        if self.prior_signed_voucher_request is not None:
            leaves["prior-signed-voucher-request"] = _b64(self.prior_signed_voucher_request)
        return json.dumps({VOUCHER_REQUEST: leaves}, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> "VoucherRequest":
        leaves = _container(data, VOUCHER_REQUEST, "voucher request")
        return cls(
            created_on=_time(leaves, "created-on"),
            nonce=_binary(leaves, "nonce", MAX_NONCE),
            serial_number=_text(leaves, "serial-number", MAX_SERIAL),
            assertion=_assertion(leaves),
            proximity_registrar_cert=_certificate(leaves, "proximity-registrar-cert"),
            idevid_issuer=_binary(leaves, "idevid-issuer", 128),
            prior_signed_voucher_request=_binary(leaves, "prior-signed-voucher-request", MAX_PRIOR),
        )


@dataclass(frozen=True)
class Voucher:
    """The leaves of a voucher (RFC 8366 §5.3) a registrar checks before passing it on."""

    created_on: dt.datetime
    assertion: str
    serial_number: str
    pinned_domain_cert: bytes          # DER
    nonce: bytes | None = None
    expires_on: dt.datetime | None = None
    idevid_issuer: bytes | None = None
    domain_cert_revocation_checks: bool | None = None

    def to_json(self) -> bytes:
        leaves: dict[str, object] = {"created-on": format_time(self.created_on), "assertion": self.assertion,
                                     "serial-number": self.serial_number,
                                     "pinned-domain-cert": _b64(self.pinned_domain_cert)}
        if self.nonce is not None:
            leaves["nonce"] = _b64(self.nonce)
        if self.expires_on is not None:
            leaves["expires-on"] = format_time(self.expires_on)
        if self.idevid_issuer is not None:
            leaves["idevid-issuer"] = _b64(self.idevid_issuer)
        if self.domain_cert_revocation_checks is not None:
            leaves["domain-cert-revocation-checks"] = self.domain_cert_revocation_checks
        return json.dumps({VOUCHER: leaves}, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> "Voucher":
        leaves = _container(data, VOUCHER, "voucher")
        created, assertion, serial = _time(leaves, "created-on"), _assertion(leaves), _text(leaves, "serial-number",
                                                                                              MAX_SERIAL)
        pinned = _certificate(leaves, "pinned-domain-cert")
        if created is None or assertion is None or serial is None or pinned is None:
            raise VoucherError("a voucher needs created-on, assertion, serial-number and pinned-domain-cert "
                               "(RFC 8366 §5.3)")
        checks = leaves.get("domain-cert-revocation-checks")
        if checks is not None and not isinstance(checks, bool):
            raise VoucherError("domain-cert-revocation-checks must be true or false")
        return cls(created, assertion, serial, pinned, nonce=_binary(leaves, "nonce", MAX_NONCE),
                   expires_on=_time(leaves, "expires-on"), idevid_issuer=_binary(leaves, "idevid-issuer", 128),
                   domain_cert_revocation_checks=checks)


def format_time(when: dt.datetime) -> str:
    """RFC 3339 in UTC with milliseconds, the form RFC 8995's examples use."""
    when = when.astimezone(dt.timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def certificate_der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


# --- reading -------------------------------------------------------------------------------

def _container(data: bytes, name: str, what: str) -> dict[str, object]:
    if len(data) > MAX_JSON:
        raise VoucherError(f"the {what} is larger than {MAX_JSON} bytes")
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise VoucherError(f"the {what} is not JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get(name), dict):
        raise VoucherError(f"the {what} has no {name!r} container")
    return doc[name]


def _text(leaves: dict[str, object], name: str, limit: int) -> str | None:
    value = leaves.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > limit or not value.isprintable():
        raise VoucherError(f"{name} must be a non-empty printable string of at most {limit} characters")
    return value


def _binary(leaves: dict[str, object], name: str, limit: int) -> bytes | None:
    value = leaves.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 4 * limit // 3 + 4:
        raise VoucherError(f"{name} must be base64 of at most {limit} bytes")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise VoucherError(f"{name} is not base64") from None
    if not raw:
        raise VoucherError(f"{name} is empty")
    return raw


def _certificate(leaves: dict[str, object], name: str) -> bytes | None:
    der = _binary(leaves, name, 16 * 1024)
    if der is None:
        return None
    try:
        x509.load_der_x509_certificate(der)
    except ValueError:
        raise VoucherError(f"{name} is not a DER certificate") from None
    return der


def _time(leaves: dict[str, object], name: str) -> dt.datetime | None:
    value = leaves.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 40:
        raise VoucherError(f"{name} must be an RFC 3339 date-time")
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise VoucherError(f"{name} {value!r} is not an RFC 3339 date-time") from None
    if when.tzinfo is None:
        raise VoucherError(f"{name} must carry a time zone (RFC 3339)")
    return when.astimezone(dt.timezone.utc)


def _assertion(leaves: dict[str, object]) -> str | None:
    value = leaves.get("assertion")
    if value is None:
        return None
    if value not in ASSERTIONS:
        raise VoucherError(f"assertion must be one of {', '.join(ASSERTIONS)}")
    return value  # type: ignore[return-value]


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")

"""What an EST label lets a requester obtain: the [policy] keys, their defaults and their checks.

Kept apart from the rest of the configuration because it is the part operators tune per
label and the part the RA reads on every request (kipuka.ra).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kipuka.config.parse import ConfigError, section

KEY_TYPES = frozenset({"ec-p256", "ec-p384", "ec-p521", "rsa", "ed25519", "ml-dsa-44", "ml-dsa-65", "ml-dsa-87"})
EKU_NAMES = frozenset({"clientAuth", "serverAuth", "codeSigning", "emailProtection", "timeStamping", "OCSPSigning"})
SAN_TYPES = frozenset({"dns", "ip", "email", "uri"})
NAME_RULES = frozenset({"exact", "prefix", "any"})
SERVERKEYGEN_KEY_TYPES = ("ec-p256", "ec-p384", "rsa2048", "rsa3072", "rsa4096", "ml-dsa-44", "ml-dsa-65",
                          "ml-dsa-87")
DELIVERIES = ("csr-key", "asymmetric", "symmetric", "pkcs8")
ID_KP_CMC_RA = "1.3.6.1.5.5.7.3.28"  # RFC 6402: an RA agent may act for others in Full CMC


@dataclass(frozen=True)
class Policy:
    """What one EST label lets a requester obtain. Defaults apply to every key."""

    key_types: tuple[str, ...] = ("ec-p256", "ec-p384", "rsa")
    rsa_min_bits: int = 2048
    validity_days: int = 365
    validity: int = 0  # seconds ("10m", "12h"); when set, replaces validity_days (short-lived certificates)
    ekus: tuple[str, ...] = ("clientAuth",)
    otp_name_rule: str = "prefix"  # the entity id, then a boundary: "." (CN, DNS, URI host), "@" (email) or the end
    # Domains every name must lie under (DNS SANs, email domains, URI hosts, a dotted CN); () allows none,
    # ("*",) any. `kipuka init` writes the demo's domain.
    dns_suffixes: tuple[str, ...] = ()
    max_sans: int = 10  # subject alternative names per certificate
    # Subject attribute types a requester may fill in (those subject_rdns names are allowed too); any
    # other is refused (403) or, with subject_unlisted = "drop", left out of the certificate
    subject_attributes: tuple[str, ...] = ("CN",)
    subject_unlisted: str = "refuse"
    subject_fixed: tuple[str, ...] = ()  # "O=Example Corp": attributes the CA puts in every certificate itself
    # Other [ca.ID]s whose certificate holders may /simpleenroll here over mTLS (the label's own CA always may)
    mtls_enroll_cas: tuple[str, ...] = ()
    san_types: tuple[str, ...] = ("dns", "ip", "email", "uri")
    require_common_name: bool = True
    allow_subject_change: bool = False
    bootstrap_anchors: tuple[Path, ...] = ()
    ra_anchors: tuple[Path, ...] = ()
    csrattrs: bool = True
    require_approval: bool = False
    reenroll_requires_approval: bool = False
    require_linking: bool = False  # CSRs must carry the TLS channel binding in challengePassword
    # RFC 9908: the subject RDNs a CSR must carry ("OU" or, value fixed, "O=Example Corp"),
    # whether it must carry a subjectAltName, and whether /csrattrs advertises them as a template
    subject_rdns: tuple[str, ...] = ()
    require_san: bool = False
    csr_template: bool = False
    # /serverkeygen (RFC 7030 4.4); on when this or [est] serverkeygen is true
    serverkeygen: bool = False
    serverkeygen_key_types: tuple[str, ...] = ("ec-p256",)  # the first is the default
    # RFC 7030 4.4.2: application/pkcs8 unless the CSR names a key; "csr-key" is kipuka's opt-in
    serverkeygen_deliveries: tuple[str, ...] = ("pkcs8", "asymmetric", "symmetric")
    escrow: bool = False
    escrow_cert: Path | None = None
    # /fullcmc (RFC 5272); on when this or [est] fullcmc is true
    fullcmc: bool = False


@dataclass(frozen=True)
class Label:
    name: str  # "" for the unlabeled path
    ca: str
    policy: Policy


def parse_policy(table: dict[str, Any], key: str, base: Path, parent: Policy) -> Policy:
    """A label's [policy] table over its parent's (the [policy] defaults), every key checked."""
    policy = section(Policy, table, key, base, defaults=parent)
    for kt in policy.key_types:
        if kt not in KEY_TYPES:
            raise ConfigError(f"{key}.key_types", f"unknown key type {kt!r}; known: {', '.join(sorted(KEY_TYPES))}")
    for eku in policy.ekus:
        if eku not in EKU_NAMES and not re.match(r"^\d+(\.\d+)+$", eku):
            raise ConfigError(f"{key}.ekus", f"unknown extended key usage {eku!r}")
        if eku == ID_KP_CMC_RA:
            raise ConfigError(f"{key}.ekus", "id-kp-cmcRA (1.3.6.1.5.5.7.3.28) marks RA agents, whose "
                              "certificates come from ra_anchors: it is never put into a certificate kipuka issues")
    for st in policy.san_types:
        if st not in SAN_TYPES:
            raise ConfigError(f"{key}.san_types", f"unknown SAN type {st!r}")
    for kt in policy.serverkeygen_key_types:
        if kt not in SERVERKEYGEN_KEY_TYPES:
            raise ConfigError(f"{key}.serverkeygen_key_types", f"unknown key type {kt!r}; known: "
                              f"{', '.join(SERVERKEYGEN_KEY_TYPES)}")
    for d in policy.serverkeygen_deliveries:
        if d not in DELIVERIES:
            raise ConfigError(f"{key}.serverkeygen_deliveries", f"unknown delivery {d!r}; known: {', '.join(DELIVERIES)}")
    if policy.escrow and policy.escrow_cert is None:
        raise ConfigError(f"{key}.escrow_cert", "escrow = true needs an escrow (key recovery) certificate")
    for suffix in policy.dns_suffixes:
        if suffix != "*" and not re.match(r"^\.?[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?$", suffix):
            raise ConfigError(f"{key}.dns_suffixes", f"{suffix!r} is not a domain such as example.com "
                              '(or "*" for any domain)')
    if "*" in policy.dns_suffixes and len(policy.dns_suffixes) > 1:
        raise ConfigError(f"{key}.dns_suffixes", '"*" (any domain) stands alone')
    if not 0 <= policy.max_sans <= 1000:
        raise ConfigError(f"{key}.max_sans", "must be between 0 and 1000")
    for name in policy.subject_attributes:
        if rdn_type_oid(name) is None:
            raise ConfigError(f"{key}.subject_attributes", f"unknown subject attribute type {name!r}; use one of "
                              f"{', '.join(RDN_TYPES)} or a dotted OID")
    _check_subject_rdns(policy.subject_fixed, f"{key}.subject_fixed")
    for entry in policy.subject_fixed:
        if "=" not in entry:
            raise ConfigError(f"{key}.subject_fixed", f"{entry!r} has no value: write TYPE=VALUE (the CA sets it)")
    if policy.subject_unlisted not in ("refuse", "drop"):
        raise ConfigError(f"{key}.subject_unlisted", 'must be "refuse" or "drop"')
    if policy.otp_name_rule not in NAME_RULES:
        raise ConfigError(f"{key}.otp_name_rule", "must be exact, prefix or any")
    _check_subject_rdns(policy.subject_rdns, f"{key}.subject_rdns")
    if policy.csr_template and policy.require_linking:
        raise ConfigError(f"{key}.csr_template", "a label with require_linking cannot advertise an RFC 9908 "
                          "template: the template cannot ask for challengePassword, and RFC 9908 §4 tells clients "
                          "that read it to ignore the rest of /csrattrs (set csr_template = false here)")
    if policy.rsa_min_bits < 2048:
        raise ConfigError(f"{key}.rsa_min_bits", "must be at least 2048")
    if not 1 <= policy.validity_days <= 3650:
        raise ConfigError(f"{key}.validity_days", "must be between 1 and 3650")
    if policy.validity and not 60 <= policy.validity <= 3650 * 86400:
        raise ConfigError(f"{key}.validity", "must be between 1m and 3650d")
    return policy


# Subject attribute types `subject_rdns` may name (RFC 4519 / RFC 5280 short names) and their OIDs;


# any other type is given as a dotted OID.
RDN_TYPES = {
    "CN": "2.5.4.3", "SN": "2.5.4.4", "serialNumber": "2.5.4.5", "C": "2.5.4.6", "L": "2.5.4.7",
    "ST": "2.5.4.8", "STREET": "2.5.4.9", "O": "2.5.4.10", "OU": "2.5.4.11", "title": "2.5.4.12",
    "GN": "2.5.4.42", "dnQualifier": "2.5.4.46", "pseudonym": "2.5.4.65",
    "DC": "0.9.2342.19200300.100.1.25", "UID": "0.9.2342.19200300.100.1.1",
    "emailAddress": "1.2.840.113549.1.9.1",
}
_PRINTABLE_RDNS = {"2.5.4.6", "2.5.4.5", "2.5.4.46"}  # PrintableString (RFC 5280 appendix A)
_IA5_RDNS = {"0.9.2342.19200300.100.1.25", "1.2.840.113549.1.9.1"}
_PRINTABLE_RE = re.compile(r"^[A-Za-z0-9 '()+,\-./:=?]+$")


def rdn_type_oid(name: str) -> str | None:
    """The dotted OID of a `subject_rdns` type name (case-insensitive short name or dotted OID)."""
    if re.match(r"^\d+(\.\d+)+$", name):
        return name
    for short, dotted in RDN_TYPES.items():
        if short.lower() == name.lower():
            return dotted
    return None


def _check_subject_rdns(entries: tuple[str, ...], key: str) -> None:
    for entry in entries:
        name, sep, value = entry.partition("=")
        dotted = rdn_type_oid(name.strip())
        if dotted is None:
            raise ConfigError(key, f"unknown subject attribute type {name.strip()!r} in {entry!r}; use one of "
                              f"{', '.join(RDN_TYPES)} or a dotted OID")
        if sep and not value:
            raise ConfigError(key, f"{entry!r} has an empty value (write just {name.strip()!r} to let the "
                              "requester fill it in)")
        if sep and dotted == "2.5.4.6" and len(value) != 2:
            raise ConfigError(key, f"a country (C) is two letters, not {value!r}")
        if sep and dotted in _PRINTABLE_RDNS and not _PRINTABLE_RE.match(value):
            raise ConfigError(key, f"{entry!r}: this type is a PrintableString "
                              "(letters, digits, space and '()+,-./:=?)")
        if sep and dotted in _IA5_RDNS and not value.isascii():
            raise ConfigError(key, f"{entry!r}: this type is ASCII only")

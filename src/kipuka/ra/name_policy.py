"""Which names a requester may put in a certificate: content, count, domains, entity binding.

A hostile device holding one valid credential tries to obtain names that are not
its own: another device's name sharing its entity id as a prefix (`dev-10` for
`dev-1`), its id under a foreign domain (`dev-1.evil.com`, `dev-1@evil.com`), a
name a relying party reads differently than a CA does (a NUL or control character,
a wildcard in the CN, a CN past RFC 5280's upper bound), or thousands of SANs.
Each rule here refuses one of those; `csr.check_names` runs the shape rules for
every request, `check_names_for_entity` binds an OTP's entity id to the names.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.x509.oid import NameOID

from kipuka.config import Policy
from kipuka.errors import BadRequest, Forbidden

ANY_DOMAIN = "*"  # dns_suffixes = ["*"]: names in any domain (an operator's explicit choice)
UB_COMMON_NAME = 64  # RFC 5280 appendix A, ub-common-name
# RFC 5280 appendix A upper bounds of the other attribute types a subject commonly carries
UPPER_BOUNDS = {
    NameOID.COMMON_NAME: UB_COMMON_NAME, NameOID.ORGANIZATION_NAME: 64, NameOID.ORGANIZATIONAL_UNIT_NAME: 64,
    NameOID.LOCALITY_NAME: 128, NameOID.STATE_OR_PROVINCE_NAME: 128, NameOID.SERIAL_NUMBER: 64,
    NameOID.TITLE: 64, NameOID.EMAIL_ADDRESS: 255, NameOID.SURNAME: 32768, NameOID.GIVEN_NAME: 32768,
    NameOID.PSEUDONYM: 128, NameOID.DN_QUALIFIER: 64,
}
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_DOMAIN_LIKE_RE = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)+\.?$")


def show(value: str, limit: int = 64) -> str:
    """A name as a reason may quote it: escaped (repr), and cut after `limit` characters."""
    return repr(value[:limit]) + (f"... ({len(value)} characters)" if len(value) > limit else "")


def check_content(subject: x509.Name, san: x509.SubjectAlternativeName | None, policy: Policy) -> None:
    """RFC 5280 bounds, no control characters anywhere, no wildcard CN, at most `max_sans` SANs (400)."""
    for attr in subject:
        value = attr.value
        if not isinstance(value, str):
            continue
        what = "CN" if attr.oid == NameOID.COMMON_NAME else _attr_name(attr.oid)
        if _CONTROL_RE.search(value):
            raise BadRequest(f"CSR subject {what} {show(value)} contains a NUL or control character")
        bound = UPPER_BOUNDS.get(attr.oid)
        if bound is not None and len(value) > bound:
            raise BadRequest(f"CSR subject {what} is {len(value)} characters long; RFC 5280 allows at most {bound}")
        if attr.oid == NameOID.COMMON_NAME and "*" in value:
            raise BadRequest(f"CN {show(value)} is a wildcard; wildcard names are not issued")
    names = list(san or [])
    if len(names) > policy.max_sans:
        raise BadRequest(f"CSR asks for {len(names)} subject alternative names; this label allows at most "
                         f"{policy.max_sans}")
    for general_name in names:
        value = general_name.value
        if isinstance(value, str) and _CONTROL_RE.search(value):
            raise BadRequest(f"subject alternative name {show(value)} contains a NUL or control character")


def check_domains(subject: x509.Name, san: x509.SubjectAlternativeName | None, policy: Policy) -> None:
    """Every domain a certificate would name lies under `dns_suffixes` (400 otherwise).

    Checked: DNS SANs, the domain of email SANs, the host of URI SANs, and a CN
    shaped like a domain name (a dotted CN such as "dev-1.example.com"; "John Smith"
    is no domain). An empty list allows no domain at all; `["*"]` allows any.
    """
    suffixes = policy.dns_suffixes
    if ANY_DOMAIN in suffixes:
        return
    for attr in subject:
        if attr.oid == NameOID.COMMON_NAME:
            cn = str(attr.value)
            if _DOMAIN_LIKE_RE.match(cn) and not _is_ip(cn):
                _require_under(cn, "CN", suffixes)
    for general_name in san or []:
        if isinstance(general_name, x509.DNSName):
            _require_under(general_name.value, "DNS name", suffixes)
        elif isinstance(general_name, x509.RFC822Name):
            domain = general_name.value.rpartition("@")[2]
            _require_under(domain, f"email {general_name.value!r}: domain", suffixes)
        elif isinstance(general_name, x509.UniformResourceIdentifier):
            try:
                host = urlsplit(general_name.value).hostname or ""
            except ValueError:
                raise BadRequest(f"URI {show(general_name.value)} is not a valid URI") from None
            if host and not _is_ip(host):
                _require_under(host, f"URI {show(general_name.value)}: host", suffixes)


def under(name: str, suffix: str) -> bool:
    """`name` is the domain `suffix` or inside it ("a.example.com" is under "example.com" and ".example.com")."""
    name, suffix = name.lower().rstrip("."), suffix.lower().rstrip(".").lstrip(".")
    return name == suffix or name.endswith("." + suffix)


def _require_under(name: str, what: str, suffixes: tuple[str, ...]) -> None:
    if not any(under(name, s) for s in suffixes):
        allowed = ", ".join(suffixes) if suffixes else "none configured: set dns_suffixes"
        raise BadRequest(f"{what} {show(name)} is outside the allowed domains ({allowed})")


def check_names_for_entity(subject: x509.Name, san: x509.SubjectAlternativeName | None,
                           entity: str, rule: str) -> None:
    """The OTP identity binding: which names an entity id may ask for (else 403).

    `exact`: every name equals the entity id (a URI: its host).
    `prefix`: every name is the entity id followed by a boundary: the end, or "."
    for CN, DNS names and URI hosts ("dev-1.example.com"), "@" for email
    ("dev-1@example.com"). "dev-10", "dev-1x.example.com", "dev-1x@example.com" are not `dev-1`'s.
    """
    if rule == "any":
        return
    names: list[tuple[str, str, str]] = []  # (kind, the name as shown, the part bound to the entity)
    for attr in subject.get_attributes_for_oid(NameOID.COMMON_NAME):
        names.append(("CN", str(attr.value), str(attr.value)))
    for general_name in san or []:
        if isinstance(general_name, x509.IPAddress):
            raise Forbidden(f"IP address names cannot be bound to entity {entity!r} by this policy")
        if isinstance(general_name, x509.RFC822Name):
            names.append(("email", general_name.value, general_name.value))
        elif isinstance(general_name, x509.UniformResourceIdentifier):
            try:
                host = urlsplit(general_name.value).hostname or ""
            except ValueError:
                host = ""
            names.append(("URI", general_name.value, host or general_name.value))
        else:
            names.append(("name", str(general_name.value), str(general_name.value)))
    for kind, shown, bound in names:
        if not _bound_to(kind, bound, entity, rule):
            how = ("equal the entity id" if rule == "exact" else
                   "be the entity id followed by '@'" if kind == "email" else
                   "be the entity id or start with the entity id and '.'")
            raise Forbidden(f"name {show(shown)} is not allowed for entity {entity!r} (names must {how})")


def _bound_to(kind: str, name: str, entity: str, rule: str) -> bool:
    if rule == "exact":
        return name == entity
    if kind == "email":
        return name == entity or name.rpartition("@")[0] == entity
    return name.rstrip(".") == entity or (name.startswith(entity + ".") and len(name) > len(entity) + 1)


def _is_ip(text: str) -> bool:
    if ":" not in text and not text.rpartition(".")[2].isdigit():
        return False  # the common case, without the cost of ipaddress raising ValueError
    try:
        ipaddress.ip_address(text.strip("[]"))
        return True
    except ValueError:
        return False


def _attr_name(oid: x509.ObjectIdentifier) -> str:
    name = getattr(oid, "_name", None)
    return name if name and name != "Unknown OID" else oid.dotted_string

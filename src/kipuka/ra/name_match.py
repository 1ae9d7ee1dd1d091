"""Comparing names the way RFC 5280 §7 compares them (re-enrollment keeps "the same" names).

RFC 7030 §4.2.2 asks a re-enrollment CSR for the Subject and SubjectAltName of
the current certificate. Clients rebuild those names, and some change the
case on the way (a DNS name typed in capitals, a CN upper-cased by a device
UI). RFC 5280 defines when two names are the same, and those rules apply here:

- §7.1 distinguished names: attribute values are compared after the LDAP
  string preparation of RFC 4518. For attribute types whose equality rule is
  caseIgnoreMatch (or caseIgnoreIA5Match: CN, O, OU, L, ST, C, serialNumber,
  DC, UID, ...), that means case folding, NFKC normalisation and insignificant
  space handling (leading and trailing spaces dropped, inner runs as one).
  Other attribute types (emailAddress among them) compare exactly.
- §7.2 dNSName: case-insensitive (ASCII).
- §7.5 rfc822Name: the local-part is case-sensitive, the domain is not.
- §7.4 URI: scheme and host without regard to case, the rest exactly.
- Everything else (IP addresses, registered IDs, other names) exactly.

`unicodedata` has no RFC 3454 table B.2; str.casefold followed by NFKC is the
same mapping for every character a certificate name is likely to carry. The
prohibit and bidi steps of RFC 4518 are left out: they reject strings, and
both names here were already accepted (one was issued, one passed the policy).
"""

from __future__ import annotations

import unicodedata

from cryptography import x509

# RFC 4519 / X.520 attribute types whose EQUALITY rule is caseIgnoreMatch or caseIgnoreIA5Match.
CASE_IGNORE_TYPES = frozenset({
    "2.5.4.3",   # commonName
    "2.5.4.4",   # surname
    "2.5.4.5",   # serialNumber
    "2.5.4.6",   # countryName
    "2.5.4.7",   # localityName
    "2.5.4.8",   # stateOrProvinceName
    "2.5.4.9",   # streetAddress
    "2.5.4.10",  # organizationName
    "2.5.4.11",  # organizationalUnitName
    "2.5.4.12",  # title
    "2.5.4.15",  # businessCategory
    "2.5.4.17",  # postalCode
    "2.5.4.42",  # givenName
    "2.5.4.43",  # initials
    "2.5.4.44",  # generationQualifier
    "2.5.4.46",  # dnQualifier
    "2.5.4.65",  # pseudonym
    "0.9.2342.19200300.100.1.1",   # uid
    "0.9.2342.19200300.100.1.25",  # domainComponent (caseIgnoreIA5Match)
})

# RFC 4518 §2.2: controls that map to SPACE, and characters that map to nothing.
_TO_SPACE = {ord(c): " " for c in "\t\n\x0b\x0c\r\x85"}
_TO_NOTHING = {cp: None for cp in (0x00AD, 0x034F, 0x1806, 0x180B, 0x180C, 0x180D, 0x200B, 0x200C, 0x200D,
                                   0x2060, 0xFEFF, *range(0xFE00, 0xFE10))}
_ASCII_LOWER = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}


def prepare_case_ignore(value: str) -> str:
    """RFC 4518 preparation of a caseIgnoreMatch value: map, fold, normalise, squeeze spaces."""
    mapped = value.translate(_TO_SPACE).translate(_TO_NOTHING)
    mapped = "".join(" " if unicodedata.category(c) == "Zs" else c for c in mapped)
    folded = unicodedata.normalize("NFKC", mapped.casefold())
    return " ".join(part for part in folded.split(" ") if part)  # leading, trailing, inner runs


def _attribute_key(attr: x509.NameAttribute) -> tuple[str, object]:
    oid = attr.oid.dotted_string
    value = attr.value
    if isinstance(value, str) and oid in CASE_IGNORE_TYPES:
        return oid, prepare_case_ignore(value)
    return oid, value


def _rdn_key(rdn: x509.RelativeDistinguishedName) -> tuple[tuple[str, object], ...]:
    return tuple(sorted((_attribute_key(a) for a in rdn), key=repr))


def same_name(a: x509.Name, b: x509.Name) -> bool:
    """RFC 5280 §7.1: the same RDNs in the same order, each attribute value matching by its type's rule."""
    return [_rdn_key(r) for r in a.rdns] == [_rdn_key(r) for r in b.rdns]


def _ascii_lower(text: str) -> str:
    return text.translate(_ASCII_LOWER)


def _uri_key(uri: str) -> str:
    """Scheme and host lower-cased (RFC 5280 §7.4); userinfo, port, path, query, fragment as given."""
    scheme, colon, rest = uri.partition(":")
    if not colon:
        return uri
    if rest.startswith("//"):
        end = min((i for i in (rest.find(c, 2) for c in "/?#") if i >= 0), default=len(rest))
        authority = rest[2:end]
        userinfo, at, hostport = authority.rpartition("@")
        if hostport.startswith("["):  # an IPv6 literal: hex digits, any case
            host, bracket, port = hostport.partition("]")
            hostport = _ascii_lower(host) + bracket + port
        else:
            host, sep, port = hostport.partition(":")
            hostport = _ascii_lower(host) + sep + port
        rest = "//" + userinfo + at + hostport + rest[end:]
    return _ascii_lower(scheme) + ":" + rest


def _general_name_key(name: x509.GeneralName) -> tuple[str, object]:
    if isinstance(name, x509.DNSName):
        return "dns", _ascii_lower(name.value)
    if isinstance(name, x509.RFC822Name):
        local, at, domain = name.value.rpartition("@")
        return "email", (local + at + _ascii_lower(domain)) if at else name.value
    if isinstance(name, x509.UniformResourceIdentifier):
        return "uri", _uri_key(name.value)
    if isinstance(name, x509.DirectoryName):
        return "dirname", tuple(_rdn_key(r) for r in name.value.rdns)
    return type(name).__name__, name


def same_general_names(a: list[x509.GeneralName], b: list[x509.GeneralName]) -> bool:
    """The same set of names (order and repetition ignored), each compared by RFC 5280 §7's rule for its kind."""
    return {_general_name_key(n) for n in a} == {_general_name_key(n) for n in b}

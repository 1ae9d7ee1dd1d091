"""Which subject attributes a certificate may carry: an allow-list per label.

A CSR that asks for `O=Other Corp, OU=admins` must not get them copied into a
certificate that relying parties authorize by organisation. The label lists the
attribute types a requester may fill in (`subject_attributes`; the types
`subject_rdns` names are always allowed); any other type is refused (403) or,
with `subject_unlisted = "drop"`, left out of the certificate. `subject_fixed`
("O=Example Corp") are attributes the CA puts in every certificate itself: a CSR
may leave them out or carry the same value; another value is refused (or dropped).
"""

from __future__ import annotations

from functools import lru_cache

from cryptography import x509

from kipuka.config import Policy, rdn_type_oid
from kipuka.errors import Forbidden


@lru_cache(maxsize=256)
def allowed_types(attributes: tuple[str, ...], subject_rdns: tuple[str, ...],
                  subject_fixed: tuple[str, ...] = ()) -> frozenset[str]:
    """Dotted OIDs of the attribute types a label lets a requester put in its subject."""
    names = list(attributes) + [entry.partition("=")[0].strip() for entry in subject_rdns + subject_fixed]
    return frozenset(oid for oid in (rdn_type_oid(n) for n in names) if oid is not None)


@lru_cache(maxsize=256)
def fixed_attributes(subject_fixed: tuple[str, ...]) -> tuple[x509.NameAttribute, ...]:
    """`subject_fixed` as attributes, in the order written (checked when the configuration was loaded)."""
    out = []
    for entry in subject_fixed:
        name, _, value = entry.partition("=")
        out.append(x509.NameAttribute(x509.ObjectIdentifier(rdn_type_oid(name.strip()) or ""), value))
    return tuple(out)


def _allowed(policy: Policy) -> frozenset[str]:
    return allowed_types(policy.subject_attributes, policy.subject_rdns, policy.subject_fixed)


def _fixed_values(policy: Policy) -> dict[x509.ObjectIdentifier, frozenset[str]]:
    return _fixed_by_type(policy.subject_fixed)


@lru_cache(maxsize=256)
def _fixed_by_type(subject_fixed: tuple[str, ...]) -> dict[x509.ObjectIdentifier, frozenset[str]]:
    values: dict[x509.ObjectIdentifier, set[str]] = {}
    for attr in fixed_attributes(subject_fixed):
        values.setdefault(attr.oid, set()).add(str(attr.value))
    return {oid: frozenset(v) for oid, v in values.items()}


def check_subject(subject: x509.Name, policy: Policy) -> None:
    """403 for an attribute type the label does not allow, or another value of one the CA fixes,
    unless the label drops such attributes."""
    if policy.subject_unlisted == "drop":
        return
    allowed = _allowed(policy)
    fixed = _fixed_values(policy)
    for attr in subject:
        if attr.oid.dotted_string not in allowed:
            raise Forbidden(f"subject attribute {_name(attr.oid)} is not allowed on this label (allowed: "
                            f"{', '.join(sorted(_name(x509.ObjectIdentifier(o)) for o in allowed)) or 'none'})")
        if attr.oid in fixed and attr.value not in fixed[attr.oid]:
            raise Forbidden(f"subject attribute {_name(attr.oid)} is set by this label's CA to "
                            f"{', '.join(repr(v) for v in sorted(fixed[attr.oid]))}; the CSR may only repeat it")


def changes_subject(policy: Policy) -> bool:
    """Whether certified_subject may differ from the CSR's subject (else callers skip it)."""
    return policy.subject_unlisted == "drop" or bool(policy.subject_fixed)


def certified_subject(subject: x509.Name, policy: Policy) -> x509.Name:
    """The subject the certificate carries: the `subject_fixed` attributes first, then the CSR's,
    less what `subject_unlisted = "drop"` leaves out (and values of fixed types other than the CA's)."""
    if not changes_subject(policy):
        return subject
    allowed = _allowed(policy)
    fixed = _fixed_values(policy)
    drop = policy.subject_unlisted == "drop"

    def keep(a: x509.NameAttribute) -> bool:
        if a.oid in fixed:
            return False  # the CA's own value is put in below, once
        return a.oid.dotted_string in allowed or not drop

    rdns = [x509.RelativeDistinguishedName([attr]) for attr in fixed_attributes(policy.subject_fixed)]
    rdns += [x509.RelativeDistinguishedName(kept) for kept in
             ([a for a in rdn if keep(a)] for rdn in subject.rdns) if kept]
    return x509.Name(rdns)


def _name(oid: x509.ObjectIdentifier) -> str:
    short = {"2.5.4.3": "CN", "2.5.4.10": "O", "2.5.4.11": "OU", "2.5.4.6": "C", "2.5.4.7": "L", "2.5.4.8": "ST",
             "2.5.4.5": "serialNumber", "1.2.840.113549.1.9.1": "emailAddress", "2.5.4.12": "title",
             "0.9.2342.19200300.100.1.25": "DC", "0.9.2342.19200300.100.1.1": "UID", "2.5.4.9": "STREET"}
    return short.get(oid.dotted_string) or oid.dotted_string

"""Which subject attributes a certificate may carry: an allow-list per label.

A CSR that asks for `O=Other Corp, OU=admins` must not get them copied into a
certificate that relying parties authorize by organisation. The label lists the
attribute types a requester may fill in (`subject_attributes`; the types
`subject_rdns` names are always allowed); any other type is refused (403) or,
with `subject_unlisted = "drop"`, left out of the certificate.
"""

from __future__ import annotations

from functools import lru_cache

from cryptography import x509

from kipuka.config import Policy, rdn_type_oid
from kipuka.errors import Forbidden


@lru_cache(maxsize=256)
def allowed_types(attributes: tuple[str, ...], subject_rdns: tuple[str, ...]) -> frozenset[str]:
    """Dotted OIDs of the attribute types a label lets a requester put in its subject."""
    names = list(attributes) + [entry.partition("=")[0].strip() for entry in subject_rdns]
    return frozenset(oid for oid in (rdn_type_oid(n) for n in names) if oid is not None)


def _allowed(policy: Policy) -> frozenset[str]:
    return allowed_types(policy.subject_attributes, policy.subject_rdns)


def check_subject(subject: x509.Name, policy: Policy) -> None:
    """403 for an attribute type the label does not allow, unless the label drops such attributes."""
    if policy.subject_unlisted == "drop":
        return
    allowed = _allowed(policy)
    for attr in subject:
        if attr.oid.dotted_string not in allowed:
            raise Forbidden(f"subject attribute {_name(attr.oid)} is not allowed on this label (allowed: "
                            f"{', '.join(sorted(_name(x509.ObjectIdentifier(o)) for o in allowed)) or 'none'})")


def certified_subject(subject: x509.Name, policy: Policy) -> x509.Name:
    """The subject the certificate carries: the CSR's, less what `subject_unlisted = "drop"` leaves out."""
    if policy.subject_unlisted != "drop":
        return subject
    allowed = _allowed(policy)
    if all(attr.oid.dotted_string in allowed for attr in subject):
        return subject
    rdns = [x509.RelativeDistinguishedName(kept) for kept in
            ([a for a in rdn if a.oid.dotted_string in allowed] for rdn in subject.rdns) if kept]
    return x509.Name(rdns)


def _name(oid: x509.ObjectIdentifier) -> str:
    short = {"2.5.4.3": "CN", "2.5.4.10": "O", "2.5.4.11": "OU", "2.5.4.6": "C", "2.5.4.7": "L", "2.5.4.8": "ST",
             "2.5.4.5": "serialNumber", "1.2.840.113549.1.9.1": "emailAddress", "2.5.4.12": "title",
             "0.9.2342.19200300.100.1.25": "DC", "0.9.2342.19200300.100.1.1": "UID", "2.5.4.9": "STREET"}
    return short.get(oid.dotted_string) or oid.dotted_string

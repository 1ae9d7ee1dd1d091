"""ra/name_policy.py and ra/subject_policy.py: the name rules of issue #16, one case a line."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from kipuka.config import Policy
from kipuka.errors import BadRequest, Forbidden
from kipuka.ra import name_policy, subject_policy

DEMO = Policy(dns_suffixes=("example.com",))


def _subject(*attrs: tuple[x509.ObjectIdentifier, str]) -> x509.Name:
    return x509.Name([x509.NameAttribute(oid, value, _validate=False) for oid, value in attrs])


def _cn(value: str) -> x509.Name:
    return _subject((NameOID.COMMON_NAME, value))


@pytest.mark.parametrize("name, ok", [
    ("dev-1", True), ("dev-1.example.com", True), ("dev-1.", True), ("dev-10.example.com", False),
    ("dev-1x.example.com", False), ("dev-", False), ("x.dev-1.example.com", False),
])
def test_prefix_binding_needs_a_boundary_after_the_entity_id(name, ok):
    check = lambda: name_policy.check_names_for_entity(_cn(name), None, "dev-1", "prefix")  # noqa: E731
    if ok:
        check()
    else:
        with pytest.raises(Forbidden):
            check()


@pytest.mark.parametrize("email, ok", [("dev-1@example.com", True), ("dev-10@example.com", False),
                                       ("dev-1.x@example.com", False), ("dev-1", True)])
def test_an_email_binds_its_local_part(email, ok):
    san = x509.SubjectAlternativeName([x509.RFC822Name(email)])
    check = lambda: name_policy.check_names_for_entity(_cn("dev-1.example.com"), san, "dev-1", "prefix")  # noqa: E731
    if ok:
        check()
    else:
        with pytest.raises(Forbidden):
            check()


@pytest.mark.parametrize("general_name, ok", [
    (x509.DNSName("a.example.com"), True), (x509.DNSName("example.com"), True),
    (x509.DNSName("a.evil.com"), False), (x509.DNSName("a.example.com.evil.com"), False),
    (x509.DNSName("aexample.com"), False), (x509.RFC822Name("a@sub.example.com"), True),
    (x509.RFC822Name("a@evil.com"), False), (x509.UniformResourceIdentifier("https://a.example.com/x"), True),
    (x509.UniformResourceIdentifier("https://a.evil.com/x"), False),
    (x509.UniformResourceIdentifier("https://10.0.0.1/x"), True),
])
def test_every_domain_lies_under_dns_suffixes(general_name, ok):
    check = lambda: name_policy.check_domains(_cn("a"), x509.SubjectAlternativeName([general_name]), DEMO)  # noqa: E731
    if ok:
        check()
    else:
        with pytest.raises(BadRequest, match="outside the allowed domains"):
            check()


def test_a_dotted_cn_is_a_domain_and_a_plain_one_is_not():
    name_policy.check_domains(_cn("Jane Doe"), None, DEMO)
    name_policy.check_domains(_cn("10.1.2.3"), None, DEMO)
    with pytest.raises(BadRequest):
        name_policy.check_domains(_cn("dev-1.evil.com"), None, DEMO)
    with pytest.raises(BadRequest, match="none configured"):
        name_policy.check_domains(_cn("dev-1.example.com"), None, Policy())
    name_policy.check_domains(_cn("dev-1.evil.com"), None, Policy(dns_suffixes=("*",)))


@pytest.mark.parametrize("cn, reason", [("a" * 65, "at most 64"), ("a\x00b", "NUL"), ("a\tb", "control"),
                                        ("a\x7fb", "control"), ("*.example.com", "wildcard")])
def test_cn_content(cn, reason):
    with pytest.raises(BadRequest, match=reason):
        name_policy.check_content(_cn(cn), None, DEMO)


def test_max_sans():
    sans = x509.SubjectAlternativeName([x509.DNSName(f"a{i}.example.com") for i in range(11)])
    with pytest.raises(BadRequest, match="at most 10"):
        name_policy.check_content(_cn("a"), sans, DEMO)
    name_policy.check_content(_cn("a"), sans, Policy(max_sans=11))


def test_subject_allow_list_refuses_drops_and_fixes():
    asked = _subject((NameOID.ORGANIZATION_NAME, "Other Corp"), (NameOID.COMMON_NAME, "a.example.com"))
    with pytest.raises(Forbidden, match="subject attribute O is not allowed"):
        subject_policy.check_subject(asked, DEMO)
    subject_policy.check_subject(asked, Policy(subject_attributes=("CN", "O")))
    drop = Policy(subject_unlisted="drop")
    assert subject_policy.certified_subject(asked, drop) == _cn("a.example.com")
    fixed = Policy(subject_fixed=("O=Example Corp",))
    with pytest.raises(Forbidden, match="set by this label's CA"):
        subject_policy.check_subject(asked, fixed)
    same = _subject((NameOID.ORGANIZATION_NAME, "Example Corp"), (NameOID.COMMON_NAME, "a.example.com"))
    subject_policy.check_subject(same, fixed)
    assert subject_policy.certified_subject(_cn("a.example.com"), fixed) == same
    assert subject_policy.certified_subject(same, fixed) == same

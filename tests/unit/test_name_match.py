"""RFC 5280 §7 name comparison (ra/name_match.py), which re-enrollment uses: one rule per test."""

from __future__ import annotations

import ipaddress

from cryptography import x509
from cryptography.x509.oid import NameOID

from kipuka.ra.name_match import prepare_case_ignore, same_general_names, same_name


def name(*attrs: tuple[x509.ObjectIdentifier, str]) -> x509.Name:
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in attrs])


def test_case_ignore_attributes_match_after_case_folding_and_space_handling():
    assert same_name(name((NameOID.COMMON_NAME, "Device-1.Example.COM")),
                     name((NameOID.COMMON_NAME, "  device-1.example.com  ")))
    assert same_name(name((NameOID.ORGANIZATION_NAME, "Example   Corp"), (NameOID.COMMON_NAME, "A")),
                     name((NameOID.ORGANIZATION_NAME, "example corp"), (NameOID.COMMON_NAME, "a")))
    assert same_name(name((NameOID.COMMON_NAME, "STRASSE")), name((NameOID.COMMON_NAME, "straße")))
    assert not same_name(name((NameOID.COMMON_NAME, "device-1")), name((NameOID.COMMON_NAME, "device-2")))


def test_rfc4518_maps_controls_to_space_and_drops_invisible_characters():
    assert prepare_case_ignore("A\tB\u00adC\u200b") == "a bc"
    assert prepare_case_ignore("\uff21\uff22") == "ab"  # NFKC: full-width letters


def test_other_attribute_types_compare_exactly():
    assert not same_name(name((NameOID.EMAIL_ADDRESS, "Dev@example.com")),
                         name((NameOID.EMAIL_ADDRESS, "dev@example.com")))


def test_rdn_order_matters_and_multi_valued_rdns_are_sets():
    a = x509.Name([x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COMMON_NAME, "A"),
                                                   x509.NameAttribute(NameOID.SERIAL_NUMBER, "7")])])
    b = x509.Name([x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.SERIAL_NUMBER, "7"),
                                                   x509.NameAttribute(NameOID.COMMON_NAME, "a")])])
    assert same_name(a, b)
    assert not same_name(name((NameOID.ORGANIZATION_NAME, "O"), (NameOID.COMMON_NAME, "A")),
                         name((NameOID.COMMON_NAME, "A"), (NameOID.ORGANIZATION_NAME, "O")))


def test_dns_names_ignore_case():
    assert same_general_names([x509.DNSName("Device-1.Example.COM")], [x509.DNSName("device-1.example.com")])
    assert not same_general_names([x509.DNSName("device-1.example.com")], [x509.DNSName("device-1.example.org")])


def test_email_domain_ignores_case_but_the_local_part_does_not():
    assert same_general_names([x509.RFC822Name("dev@EXAMPLE.com")], [x509.RFC822Name("dev@example.com")])
    assert not same_general_names([x509.RFC822Name("Dev@example.com")], [x509.RFC822Name("dev@example.com")])


def test_uri_scheme_and_host_ignore_case_the_rest_does_not():
    assert same_general_names([x509.UniformResourceIdentifier("HTTPS://Host.Example:8443/Path?q=A")],
                              [x509.UniformResourceIdentifier("https://host.example:8443/Path?q=A")])
    assert not same_general_names([x509.UniformResourceIdentifier("https://host.example/Path")],
                                  [x509.UniformResourceIdentifier("https://host.example/path")])
    assert not same_general_names([x509.UniformResourceIdentifier("https://User@host/")],
                                  [x509.UniformResourceIdentifier("https://user@host/")])


def test_san_order_is_ignored_and_other_kinds_compare_exactly():
    ip = x509.IPAddress(ipaddress.ip_address("192.0.2.1"))
    assert same_general_names([ip, x509.DNSName("a.example")], [x509.DNSName("A.example"), ip])
    assert not same_general_names([ip], [x509.IPAddress(ipaddress.ip_address("192.0.2.2"))])
    assert same_general_names([x509.DirectoryName(name((NameOID.COMMON_NAME, "X")))],
                              [x509.DirectoryName(name((NameOID.COMMON_NAME, "x")))])

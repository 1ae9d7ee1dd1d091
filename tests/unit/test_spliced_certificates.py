"""Certificates spliced from pre-encoded DER (ca/spliced.py) equal CertificateBuilder's, byte for byte.

The CA signs with build_certificate (the spliced path); ca/profile.reference_certificate spells the
same profile out with cryptography's CertificateBuilder. For every issuer key type, subject key type
and shape of template the two TBSCertificates must be identical, and the spliced certificate must
verify under its issuer.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kipuka.ca.base import IssueRequest
from kipuka.ca.profile import build_certificate, reference_certificate
from kipuka.ca.signing import signing_hash
from tests.helpers import new_key

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 12, 7, 21, 0, 0, tzinfo=UTC)


def _issuer(kind: str, *, until: dt.datetime = NOW + dt.timedelta(days=3650)):
    key = ed25519.Ed25519PrivateKey.generate() if kind == "ed25519" else new_key(kind)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Issuing CA {kind}")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(7).not_valid_before(NOW - dt.timedelta(days=1)).not_valid_after(until)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, signing_hash(key)))
    return cert, key


def _request(subject_key: str = "ec-p256", **changes) -> IssueRequest:
    req = IssueRequest(
        subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dev-1.example.com"),
                           x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example")]),
        public_key=new_key(subject_key).public_key(),
        san=x509.SubjectAlternativeName([x509.DNSName("dev-1.example.com"), x509.IPAddress(ipaddress.ip_address("192.0.2.7"))]),
        ekus=(ExtendedKeyUsageOID.CLIENT_AUTH,),
        validity=dt.timedelta(days=90),
        crl_urls=("http://pki.example.com/crl/ca.crl",),
        ocsp_urls=("http://pki.example.com/ocsp",),
    )
    return dataclasses.replace(req, **changes)


def _same(req: IssueRequest, issuer, key, serial: int = 0x1234_5678_9ABC) -> x509.Certificate:
    spliced = build_certificate(req, issuer, key, serial, NOW)
    reference = reference_certificate(req, issuer, key, serial, NOW)
    assert spliced.tbs_certificate_bytes == reference.tbs_certificate_bytes
    assert spliced.signature_algorithm_oid == reference.signature_algorithm_oid
    spliced.verify_directly_issued_by(issuer)
    return spliced


@pytest.mark.parametrize("issuer_kind", ["ec-p256", "ec-p384", "rsa2048", "ed25519", "ml-dsa-65"])
def test_spliced_certificate_equals_the_builders_for_every_ca_key_type(issuer_kind):
    issuer, key = _issuer(issuer_kind)
    _same(_request(), issuer, key)


@pytest.mark.parametrize("subject_kind", ["ec-p256", "ec-p384", "rsa2048", "ml-dsa-44"])
def test_spliced_certificate_equals_the_builders_for_every_subject_key_type(subject_kind):
    issuer, key = _issuer("ec-p256")
    cert = _same(_request(subject_kind), issuer, key)
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_encipherment == \
        subject_kind.startswith("rsa")


def test_san_is_critical_when_the_subject_is_empty():
    issuer, key = _issuer("ec-p256")
    cert = _same(_request(subject=x509.Name([])), issuer, key)
    assert cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).critical


def test_no_san_no_ekus_no_urls():
    issuer, key = _issuer("ec-p256")
    cert = _same(_request(san=None, ekus=(), crl_urls=(), ocsp_urls=()), issuer, key)
    assert [e.oid for e in cert.extensions] == [x509.BasicConstraints.oid, x509.KeyUsage.oid,
                                                x509.SubjectKeyIdentifier.oid, x509.AuthorityKeyIdentifier.oid]


def test_templates_that_differ_in_ekus_do_not_share_bytes():
    issuer, key = _issuer("ec-p256")
    client = _same(_request(ekus=(ExtendedKeyUsageOID.CLIENT_AUTH,)), issuer, key)
    server = _same(_request(ekus=(ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH)), issuer, key)
    assert list(client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == \
        [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert list(server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == \
        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]


@pytest.mark.parametrize("serial", [1, 0x7F, 0x80, 0xFF, 0x100, (1 << 159) - 1,
                                    0x5F3A_9C41_07D2_E8B6_1F0C_7A93_4E2D_B815_C6A0_39F7])
def test_serial_numbers_encode_as_positive_integers(serial):
    issuer, key = _issuer("ec-p256")
    assert _same(_request(), issuer, key, serial).serial_number == serial


@pytest.mark.parametrize("serial", [0, -5, 1 << 159])
def test_serial_numbers_outside_rfc_5280_are_refused(serial):
    issuer, key = _issuer("ec-p256")
    with pytest.raises(ValueError):
        build_certificate(_request(), issuer, key, serial, NOW)


def test_a_validity_past_2049_is_generalized_time_and_capped_at_the_issuers():
    issuer, key = _issuer("ec-p256", until=dt.datetime(2061, 1, 1, tzinfo=UTC))
    cert = _same(_request(validity=dt.timedelta(days=365 * 40)), issuer, key)
    assert cert.not_valid_after_utc == issuer.not_valid_after_utc
    assert b"\x18\x0f20610101000000Z" in cert.tbs_certificate_bytes


def test_basic_constraints_are_always_critical_and_not_a_ca():
    """The template's BasicConstraints come from the profile, never from the request."""
    issuer, key = _issuer("ec-p256")
    cert = _same(_request(), issuer, key)
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca is False

"""The whole CSR as the console shows it before an officer decides (admin/certinfo.decoded_csr)."""

from cryptography import x509
from cryptography.x509.oid import AttributeOID

from kipuka.admin.certinfo import decoded_csr
from tests.helpers import make_csr


def test_a_csr_shows_its_names_key_signature_extensions_and_attributes():
    _, der = make_csr("cam-1.example.com", sans=[x509.DNSName("cam-1.example.com")])
    csr = decoded_csr(der)
    assert csr["subject"] == "CN=cam-1.example.com" and csr["sans"] == ["DNS:cam-1.example.com"]
    assert csr["public_key"] == "EC P-256" and csr["signature_algorithm"] == "ecdsa-with-SHA256"
    assert csr["signature_valid"] and not csr["linked"]
    assert [e["name"] for e in csr["extensions"]] == ["subjectAltName"]
    assert csr["attributes"] == ["extensionRequest"]


def test_a_csr_with_a_challenge_password_is_shown_as_linked_to_its_tls_session():
    _, der = make_csr("cam-2.example.com", attributes=[(AttributeOID.CHALLENGE_PASSWORD, b"AAAA")])
    csr = decoded_csr(der)
    assert csr["linked"] and "challengePassword" in csr["attributes"]


def test_a_request_that_is_no_pkcs10_csr_is_shown_as_unreadable():
    csr = decoded_csr(b"\x30\x03\x02\x01\x00")
    assert not csr["readable"] and csr["public_key"] == "unreadable"

"""CSR checks and the issued certificate profile."""

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.helpers import b64, certs_from, certs_in_body, make_csr, new_key, unique


def _enroll(server, der: bytes, label: str | None = None, entity: str | None = None):
    entity = entity or unique()
    otp = server.otp(entity, *(["--label", label] if label else []))  # an OTP is valid on its own label only
    return server.post("simpleenroll", b64(der), auth=(entity, otp), label=label)


def _enroll_csr(server, label=None, **kwargs):
    entity = unique()
    key, der = make_csr(f"{entity}.example.com", **kwargs)
    return key, _enroll(server, der, label=label, entity=entity)


def _ca(server, ca_id="default") -> x509.Certificate:
    return x509.load_pem_x509_certificate((server.dir / "ca" / f"{ca_id}.pem").read_bytes())


# --- rejected CSRs ---------------------------------------------------------------------------

def test_bad_csr_signature_is_400(server):
    entity = unique()
    _, der = make_csr(f"{entity}.example.com")
    tampered = bytearray(der)
    tampered[-5] ^= 0x01  # inside the signature
    r = _enroll(server, bytes(tampered), entity=entity)
    assert r.status_code == 400 and ("signature" in r.text or "not a valid" in r.text), r.text


def test_rsa_key_below_2048_bits_is_400(server):
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    _, r = _enroll_csr(server, key=key)
    assert r.status_code == 400 and "too small" in r.text


def test_sha1_csr_signature_is_400(server, tmp_path):
    import subprocess
    entity = unique()
    out = tmp_path / "sha1.der"
    subprocess.run(["openssl", "req", "-new", "-sha1", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", str(tmp_path / "k.pem"), "-subj", f"/CN={entity}.example.com",
                    "-outform", "DER", "-out", str(out)], check=True, capture_output=True)
    r = _enroll(server, out.read_bytes(), entity=entity)
    assert r.status_code == 400 and "signature algorithm" in r.text


def test_weak_named_curve_is_400(server):
    _, r = _enroll_csr(server, key=ec.generate_private_key(ec.SECP192R1()))
    assert r.status_code == 400 and "not allowed" in r.text


def test_key_type_outside_label_policy_is_400(server):
    # iot-fleet allows EC keys only
    _, r = _enroll_csr(server, label="iot-fleet", key=new_key("rsa2048"))
    assert r.status_code == 400 and "key type rsa is not allowed" in r.text


def test_missing_common_name_is_400(server):
    entity = unique()
    _, der = make_csr(None, sans=[x509.DNSName(f"{entity}.example.com")])
    r = _enroll(server, der, entity=entity)
    assert r.status_code == 400 and "common name" in r.text


def test_disallowed_san_type_is_400(fresh_server):
    srv = fresh_server(replacements={r'^san_types = .*$': 'san_types = ["dns"]'})
    entity = unique()
    _, der = make_csr(f"{entity}.example.com", sans=[x509.RFC822Name(f"{entity}@example.com")])
    r = _enroll(srv, der, entity=entity)
    assert r.status_code == 400 and "email" in r.text


def test_wildcard_dns_name_is_400(server):
    entity = unique()
    _, der = make_csr(f"{entity}.example.com", sans=[x509.DNSName(f"*.{entity}.example.com")])
    assert _enroll(server, der, entity=entity).status_code == 400


def test_dns_name_outside_allowed_domains_is_400(fresh_server):
    srv = fresh_server(replacements={r'^san_types = .*$': 'san_types = ["dns"]',
                                     r'^dns_suffixes = .*$': 'dns_suffixes = [".example.com"]'})
    entity = unique()
    _, der = make_csr(f"{entity}.example.com", sans=[x509.DNSName(f"{entity}.evil.test")])
    r = _enroll(srv, der, entity=entity)
    assert r.status_code == 400 and "outside the allowed domains" in r.text


# --- the profile -----------------------------------------------------------------------------

def test_ca_flag_requested_in_csr_is_never_copied(server):
    _, r = _enroll_csr(server, extensions=[(x509.BasicConstraints(ca=True, path_length=None), True)])
    cert = certs_from(r)[0]
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca is False


def test_other_requested_extensions_are_not_copied(server):
    ku = x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=True, data_encipherment=True,
                       key_agreement=True, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False)
    unknown = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00")
    _, r = _enroll_csr(server, extensions=[(ku, True), (unknown, True),
                                           (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), False)])
    cert = certs_from(r)[0]
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_cert_sign and not usage.crl_sign
    oids = {e.oid.dotted_string for e in cert.extensions}
    assert "1.3.6.1.4.1.99999.1" not in oids
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_issued_certificate_profile(server):
    key, r = _enroll_csr(server, sans=None)
    cert = certs_from(r)[0]
    ca = _ca(server)
    now = dt.datetime.now(dt.timezone.utc)
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).critical
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    assert now - dt.timedelta(minutes=10) < cert.not_valid_before_utc <= now - dt.timedelta(minutes=2)
    assert cert.not_valid_after_utc <= ca.not_valid_after_utc
    cert.verify_directly_issued_by(ca)


def test_rsa_certificate_allows_key_encipherment_ec_does_not(server):
    _, r = _enroll_csr(server, key=new_key("rsa2048"))
    assert certs_from(r)[0].extensions.get_extension_for_class(x509.KeyUsage).value.key_encipherment
    _, r = _enroll_csr(server)
    assert not certs_from(r)[0].extensions.get_extension_for_class(x509.KeyUsage).value.key_encipherment


def test_serial_is_positive_random_and_at_most_20_octets(server):
    serials = [certs_from(_enroll_csr(server)[1])[0].serial_number for _ in range(4)]
    assert len(set(serials)) == 4
    for s in serials:
        assert 0 < s < 2 ** 159 and s.bit_length() > 64


def test_validity_is_clamped_by_label_policy(server):
    _, r = _enroll_csr(server, label="iot-fleet")
    cert = certs_from(r)[0]
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert dt.timedelta(days=89) < lifetime <= dt.timedelta(days=90, minutes=10)


def test_label_ekus_are_applied(server):
    _, r = _enroll_csr(server, label="corp-devices")
    ekus = list(certs_from(r)[0].extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert ekus == [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]


def test_each_label_signs_with_its_own_ca(server):
    for label, ca_id in ((None, "default"), ("iot-fleet", "iot-fleet"), ("corp-devices", "corp-devices")):
        cert = certs_from(_enroll_csr(server, label=label)[1])[0]
        cert.verify_directly_issued_by(_ca(server, ca_id))


def test_san_from_csr_is_issued(server):
    entity = unique()
    sans = [x509.DNSName(f"{entity}.example.com"), x509.DNSName(f"{entity}.alt.example.com")]
    _, der = make_csr(f"{entity}.example.com", sans=sans)
    cert = certs_from(_enroll(server, der, entity=entity))[0]
    assert list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value) == sans


def test_issued_certificate_is_recorded_with_its_facts(server):
    entity = unique()
    key, der = make_csr(f"{entity}.example.com")
    cert = certs_from(_enroll(server, der, entity=entity))[0]
    serial = format(cert.serial_number, "x")
    shown = dict(line.split(": ", 1) for line in server.cli("certs", "show", serial).stdout.splitlines())
    fingerprint = cert.fingerprint(hashes.SHA256()).hex()
    assert shown["sha256"] == fingerprint and shown["entity"] == entity and shown["auth"] == "otp"
    assert shown["ca"] == "default" and shown["subject"] == f"CN={entity}.example.com"
    pem = server.cli("certs", "show", serial, "--pem").stdout.encode()
    assert x509.load_pem_x509_certificate(pem) == cert


def test_cacerts_returns_issuing_ca_and_root(server):
    for label, ca_id in ((None, "default"), ("iot-fleet", "iot-fleet")):
        certs = certs_in_body(server.get("cacerts", label=label).content)
        root = x509.load_pem_x509_certificate((server.dir / "ca" / "root.pem").read_bytes())
        assert set(certs) == {_ca(server, ca_id), root}


def test_csrattrs_advertises_the_label_key_types(server):
    import base64
    from pyasn1.codec.der import decoder
    from pyasn1_modules import rfc7030
    attrs, _ = decoder.decode(base64.b64decode(server.get("csrattrs", label="iot-fleet").content),
                              asn1Spec=rfc7030.CsrAttrs())
    found = {}
    for item in attrs:
        if item.getName() == "attribute":
            found[str(item["attribute"]["attrType"])] = {str(decoder.decode(bytes(v))[0])
                                                         for v in item["attribute"]["attrValues"]}
    assert found["1.2.840.10045.2.1"] == {"1.2.840.10045.3.1.7", "1.3.132.0.34"}  # P-256, P-384
    assert "1.2.840.113549.1.1.1" not in str(attrs)  # iot-fleet allows no RSA


def test_csrattrs_asks_for_subject_alt_name_without_an_incomplete_extension_request(server):
    """RFC 9908 §3.2: an extensionRequest attribute holds exactly one complete Extensions value, so
    "include a subjectAltName" (no value imposed) is the extension's OID on its own."""
    import base64
    from pyasn1.codec.der import decoder
    from pyasn1_modules import rfc5280, rfc7030
    attrs, _ = decoder.decode(base64.b64decode(server.get("csrattrs").content), asn1Spec=rfc7030.CsrAttrs())
    assert "2.5.29.17" in {str(item["oid"]) for item in attrs if item.getName() == "oid"}
    for item in attrs:
        if item.getName() == "attribute" and str(item["attribute"]["attrType"]) == "1.2.840.113549.1.9.14":
            assert len(item["attribute"]["attrValues"]) == 1
            decoder.decode(bytes(item["attribute"]["attrValues"][0]), asn1Spec=rfc5280.Extensions())


def test_csrattrs_is_204_when_the_policy_asks_for_nothing(fresh_server):
    srv = fresh_server(replacements={r"^csrattrs = true.*$": "csrattrs = false"})
    r = srv.get("csrattrs")
    assert r.status_code == 204 and r.content == b""

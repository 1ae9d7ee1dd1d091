"""The decisions of /serverkeygen without a server: delivery, key type, CSR attributes, KEK file, escrow."""

from __future__ import annotations

import base64
import datetime as dt
import os
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID

from kipuka.config import Label, Policy
from kipuka.errors import BadRequest
from kipuka.keydelivery import RSA_PKCS1_V15, RSAES_OAEP_SHA256, key_identifier
from kipuka.ra import delivery
from kipuka.ra.escrow import EscrowTarget, RecoveryError, recover
from kipuka.ra.kek import KekFileError, KekTable, parse_kek_lines
from kipuka.ra.keygen_request import ASYMMETRIC_DECRYPT_KEY_ID, DECRYPT_KEY_ID, KeygenAsk, read_ask
from kipuka.ra.keymaker import KeyMaker
from kipuka.ra.serverkeygen import choose_key_type, enabled

KEK = base64.b64encode(bytes(32)).decode()


def csr(key=None, attributes=()):
    key = key or ec.generate_private_key(ec.SECP256R1())
    b = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "d.example.com")]))
    for oid, value in attributes:
        b = b.add_attribute(x509.ObjectIdentifier(oid), value, _tag=_ASN1Type.OctetString)
    return b.sign(key, hashes.SHA256())


def cert_for(key, ski: bool = True) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")])
    now = dt.datetime.now(dt.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
         .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1)))
    if ski:
        b = b.add_extension(x509.SubjectKeyIdentifier(b"\x42" * 20), critical=False)
    return b.sign(key, hashes.SHA256())


def choose(policy: Policy, request, client_cert=None, keks=None, entity="dev"):
    from cryptography.hazmat.primitives import serialization
    der = request.public_bytes(serialization.Encoding.DER)
    return delivery.choose(policy, read_ask(der), request, client_cert, keks or KekTable({}), "lbl", entity)


# --- CSR attributes --------------------------------------------------------------------------------

def test_read_ask_finds_the_identifiers():
    from cryptography.hazmat.primitives import serialization
    der = csr(attributes=[(DECRYPT_KEY_ID, b"kid")]).public_bytes(serialization.Encoding.DER)
    assert read_ask(der) == KeygenAsk(decrypt_key_id=b"kid")
    der = csr(attributes=[(ASYMMETRIC_DECRYPT_KEY_ID, b"a" * 20)]).public_bytes(serialization.Encoding.DER)
    assert read_ask(der).asymmetric_key_id == b"a" * 20
    assert read_ask(csr().public_bytes(serialization.Encoding.DER)) == KeygenAsk()


def test_capabilities_choose_key_transport_and_content_key():
    assert KeygenAsk().key_transport() == RSAES_OAEP_SHA256 and KeygenAsk().content_key_bytes() == 32
    only_v15 = KeygenAsk(capabilities=("1.2.840.113549.1.1.1", "2.16.840.1.101.3.4.1.2"))
    assert only_v15.key_transport() == RSA_PKCS1_V15 and only_v15.content_key_bytes() == 16
    both = KeygenAsk(capabilities=("1.2.840.113549.1.1.1", "1.2.840.113549.1.1.7"))
    assert both.key_transport() == RSAES_OAEP_SHA256 and both.content_key_bytes() == 32


# --- delivery ---------------------------------------------------------------------------------------

def test_no_attribute_gets_pkcs8_by_default_as_rfc7030_says():
    """RFC 7030 4.4.2: a CSR that names no decryption key gets application/pkcs8; csr-key is opt-in."""
    assert Policy().serverkeygen_deliveries == ("pkcs8", "asymmetric", "symmetric")
    assert choose(Policy(), csr()).kind == "pkcs8"
    with pytest.raises(BadRequest, match="'csr-key' is not allowed"):
        key = ec.generate_private_key(ec.SECP256R1())
        choose(Policy(), csr(key, [(ASYMMETRIC_DECRYPT_KEY_ID, key_identifier(key.public_key()))]))


def test_no_attribute_gets_the_first_unasked_delivery_of_the_policy():
    """An explicit list keeps meaning what it says: the first of csr-key / pkcs8 it names."""
    assert choose(Policy(serverkeygen_deliveries=("csr-key", "asymmetric", "symmetric")), csr()).kind == "csr-key"
    assert choose(Policy(serverkeygen_deliveries=("csr-key", "pkcs8")), csr()).kind == "csr-key"
    assert choose(Policy(serverkeygen_deliveries=("pkcs8", "csr-key")), csr()).kind == "pkcs8"
    assert choose(Policy(serverkeygen_deliveries=("asymmetric", "pkcs8")), csr()).kind == "pkcs8"
    with pytest.raises(BadRequest, match="only to a key the CSR names"):
        choose(Policy(serverkeygen_deliveries=("asymmetric", "symmetric")), csr())


def test_csr_key_delivery_names_the_csr_key_by_its_key_identifier():
    key = ec.generate_private_key(ec.SECP256R1())
    opted_in = Policy(serverkeygen_deliveries=("csr-key", "asymmetric", "symmetric"))
    d = choose(opted_in, csr(key))
    assert d.recipient.key_id == key_identifier(key.public_key())
    asked = choose(Policy(serverkeygen_deliveries=("pkcs8", "csr-key")),
                   csr(key, [(ASYMMETRIC_DECRYPT_KEY_ID, key_identifier(key.public_key()))]))
    assert asked.kind == "csr-key"


def test_asymmetric_matches_the_client_certificate_ski_or_key_id():
    device = rsa.generate_private_key(65537, 2048)
    cert = cert_for(device)
    d = choose(Policy(), csr(attributes=[(ASYMMETRIC_DECRYPT_KEY_ID, b"\x42" * 20)]), cert)
    assert d.kind == "asymmetric" and d.recipient.key_id == b"\x42" * 20
    kid = key_identifier(device.public_key())
    assert choose(Policy(), csr(attributes=[(ASYMMETRIC_DECRYPT_KEY_ID, kid)]), cert).kind == "asymmetric"
    with pytest.raises(BadRequest, match="names no key known"):
        choose(Policy(), csr(attributes=[(ASYMMETRIC_DECRYPT_KEY_ID, b"\x43" * 20)]), cert)
    with pytest.raises(BadRequest, match="names no key known"):  # no client certificate
        choose(Policy(), csr(attributes=[(ASYMMETRIC_DECRYPT_KEY_ID, b"\x42" * 20)]))
    with pytest.raises(BadRequest, match="'asymmetric' is not allowed"):
        choose(Policy(serverkeygen_deliveries=("csr-key",)),
               csr(attributes=[(ASYMMETRIC_DECRYPT_KEY_ID, b"\x42" * 20)]), cert)


def test_symmetric_needs_a_known_kek_in_scope():
    keks = KekTable(parse_kek_lines(f"6b31 {KEK}\n6b32 {KEK} label:other entity:someone\n6b33 {KEK} dev\n"))
    d = choose(Policy(), csr(attributes=[(DECRYPT_KEY_ID, b"k1")]), keks=keks)
    assert d.kind == "symmetric" and d.recipient.kek_id == b"k1"
    assert choose(Policy(), csr(attributes=[(DECRYPT_KEY_ID, b"k3")]), keks=keks).kind == "symmetric"
    for kid in (b"k2", b"zz"):
        with pytest.raises(BadRequest, match="names no pre-shared key"):
            choose(Policy(), csr(attributes=[(DECRYPT_KEY_ID, kid)]), keks=keks)
    with pytest.raises(BadRequest, match="'symmetric' is not allowed"):
        choose(Policy(serverkeygen_deliveries=("pkcs8",)), csr(attributes=[(DECRYPT_KEY_ID, b"k1")]), keks=keks)


# --- key type, enablement -------------------------------------------------------------------------

def test_key_type_follows_the_csr_key_when_allowed():
    allowed = ("ec-p256", "ec-p384", "rsa2048")
    assert choose_key_type(allowed, csr(ec.generate_private_key(ec.SECP384R1()))) == "ec-p384"
    assert choose_key_type(allowed, csr(rsa.generate_private_key(65537, 2048))) == "rsa2048"
    assert choose_key_type(("ec-p384",), csr()) == "ec-p384"


def test_enabled_globally_or_per_label():
    from types import SimpleNamespace
    label = Label("x", "default", Policy())
    assert not enabled(SimpleNamespace(est=SimpleNamespace(serverkeygen=False)), label)
    assert enabled(SimpleNamespace(est=SimpleNamespace(serverkeygen=True)), label)
    assert enabled(SimpleNamespace(est=SimpleNamespace(serverkeygen=False)),
                   Label("x", "default", Policy(serverkeygen=True)))


# --- KEK file --------------------------------------------------------------------------------------

def test_kek_file_must_be_private_and_well_formed(tmp_path: Path):
    path = tmp_path / "keks"
    path.write_text(f"# comment\n\n6b31 {KEK}  # trailing comment\n")
    os.chmod(path, 0o644)
    with pytest.raises(KekFileError, match="chmod 600"):
        KekTable.load(path)
    os.chmod(path, 0o600)
    assert len(KekTable.load(path)) == 1
    for bad, why in ((f"zz {KEK}", "not hexadecimal"), ("6b31 !!!", "not base64"),
                     (f"6b31 {base64.b64encode(bytes(7)).decode()}", "16, 24 or 32"),
                     (f"6b31 {KEK}\n6b31 {KEK}", "listed twice"), ("6b31", "expected")):
        with pytest.raises(KekFileError, match=why):
            parse_kek_lines(bad)


# --- escrow and the pool ----------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_escrow_archive_opens_only_with_the_escrow_key(tmp_path: Path, kind: str):
    from cryptography.hazmat.primitives import serialization
    escrow_key = rsa.generate_private_key(65537, 2048) if kind == "rsa" else ec.generate_private_key(ec.SECP384R1())
    (tmp_path / "e.pem").write_bytes(cert_for(escrow_key).public_bytes(serialization.Encoding.PEM))
    target = EscrowTarget.load(tmp_path / "e.pem")
    key = ec.generate_private_key(ec.SECP256R1())
    archive = target.archive(key)
    assert recover(archive, escrow_key, None).private_numbers() == key.private_numbers()
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(RecoveryError, match="does not match"):
        recover(archive, escrow_key, cert_for(other))
    with pytest.raises(RecoveryError, match="cannot open"):
        recover(archive, rsa.generate_private_key(65537, 2048) if kind == "rsa"
                else ec.generate_private_key(ec.SECP384R1()), None)


def test_key_maker_pool_gives_each_key_once():
    import asyncio
    import time

    async def run():
        maker = KeyMaker(pool_size=2, key_types=["ec-p256"])
        first = await maker.new_key("ec-p256")
        deadline = time.monotonic() + 5
        while maker.ready("ec-p256") < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert maker.ready("ec-p256") == 2
        keys = [first] + [await maker.new_key("ec-p256") for _ in range(4)]
        assert len({k.private_numbers().private_value for k in keys}) == 5
        assert isinstance(await KeyMaker().new_key("rsa2048"), rsa.RSAPrivateKey)
    asyncio.run(run())

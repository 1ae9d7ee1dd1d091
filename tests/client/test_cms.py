"""Server-generated keys in CMS (RFC 7030 4.4.2), made by an independent implementation: `openssl cms`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import AttributeOID

from kipuka.client import (AsymmetricDecryptKey, CsrSpec, DecryptionError, InvalidResponse, SymmetricDecryptKey,
                           generate_key)
from kipuka.client.cms import key_id, open_server_generated_key
from kipuka.client.csr import ASYMMETRIC_DECRYPT_KEY_ID, DECRYPT_KEY_ID
from tests.client.fakes import b64_lines, certs_only, csr_of, http_response
from tests.client.test_interop import client, libest_cacerts

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")

KEK = bytes(range(16))
KEK_ID = b"\x0a\x0b\x0c"


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def material(tmp_path_factory):
    d = tmp_path_factory.mktemp("cms")
    for name, opts in (("rsa", ["-newkey", "rsa:2048"]),
                       ("ec", ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]),
                       ("signer", ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"])):
        openssl("req", "-x509", *opts, "-nodes", "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.pem"),
                "-subj", f"/CN={name}", "-days", "30")
    new_key = generate_key("ec-p256")
    pkcs8 = new_key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
    (d / "key.der").write_bytes(pkcs8)
    # AsymmetricKeyPackage ::= SEQUENCE OF OneAsymmetricKey (a v1 OneAsymmetricKey is a PrivateKeyInfo)
    (d / "package.der").write_bytes(b"\x30" + _der_len(len(pkcs8)) + pkcs8)
    openssl("cms", "-sign", "-binary", "-nodetach", "-in", str(d / "package.der"), "-signer", str(d / "signer.pem"),
            "-inkey", str(d / "signer.key"), "-outform", "DER", "-econtent_type", "2.16.840.1.101.2.1.2.78.5",
            "-out", str(d / "signed.der"))
    return d, new_key


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _key(d: Path, name: str):
    return serialization.load_pem_private_key((d / f"{name}.key").read_bytes(), None)


def encrypt(d: Path, content: str, out: str, *recipient: str) -> bytes:
    openssl("cms", "-encrypt", "-binary", "-in", str(d / content), "-outform", "DER", "-out", str(d / out), *recipient)
    return (d / out).read_bytes()


@pytest.mark.parametrize("content", ["key.der", "signed.der"])
@pytest.mark.parametrize("recipient", ["rsa-pkcs1", "rsa-oaep-sha256", "ec-ecdh", "kek-aes"])
def test_openssl_enveloped_keys_open(material, content, recipient):
    d, new_key = material
    out = f"{recipient}-{content}"
    if recipient == "rsa-pkcs1":
        der, kw = encrypt(d, content, out, "-aes-128-cbc", str(d / "rsa.pem")), {"private_key": _key(d, "rsa")}
    elif recipient == "rsa-oaep-sha256":
        der = encrypt(d, content, out, "-aes-256-cbc", "-recip", str(d / "rsa.pem"),
                      "-keyopt", "rsa_padding_mode:oaep", "-keyopt", "rsa_oaep_md:sha256")
        kw = {"private_key": _key(d, "rsa")}
    elif recipient == "ec-ecdh":
        der, kw = encrypt(d, content, out, "-aes-128-cbc", str(d / "ec.pem")), {"private_key": _key(d, "ec")}
    else:
        der = encrypt(d, content, out, "-aes-192-cbc", "-secretkey", KEK.hex(), "-secretkeyid", KEK_ID.hex())
        kw = {"kek": KEK, "kek_id": KEK_ID}
    opened = open_server_generated_key(der, **kw)
    assert opened.private_key.public_key() == new_key.public_key()
    assert opened.signed is (content == "signed.der")
    if opened.signed:
        assert opened.signer.subject.rfc4514_string() == "CN=signer"


def test_signed_only_key_package_opens_without_a_key(material):
    d, new_key = material
    opened = open_server_generated_key((d / "signed.der").read_bytes())
    assert opened.signed and opened.private_key.public_key() == new_key.public_key()


def test_tampered_signed_package_is_refused(material):
    d, _ = material
    der = bytearray((d / "signed.der").read_bytes())
    key_at = bytes(der).find((d / "package.der").read_bytes()[-20:])
    assert key_at > 0
    der[key_at] ^= 0x01  # one bit of the signed key package
    with pytest.raises(InvalidResponse, match="messageDigest|signature"):
        open_server_generated_key(bytes(der))


def test_wrong_decryption_key_is_a_decryption_error(material):
    d, _ = material
    der = encrypt(d, "key.der", "wrong.der", "-aes-128-cbc", str(d / "rsa.pem"))
    with pytest.raises(DecryptionError, match="none of the recipients"):
        open_server_generated_key(der, private_key=generate_key("rsa2048"))
    with pytest.raises(DecryptionError, match="no decryption key"):
        open_server_generated_key(der)


# --- end to end through /serverkeygen -----------------------------------------------------------

def _keygen_route(replay_ca, material, recipient_args):
    d, new_key = material

    def keygen(req):
        cert = replay_ca.issue(csr_of(req), new_key.public_key())
        env = encrypt(d, "signed.der", f"e2e-{id(req)}.der", "-aes-128-cbc", *recipient_args(req))
        body = (b"--XyZ\r\nContent-Type: application/pkcs7-mime; smime-type=certs-only\r\n"
                b"Content-Transfer-Encoding: base64\r\n\r\n" + b64_lines(certs_only([cert])) +
                b"\r\n--XyZ\r\nContent-Type: application/pkcs7-mime; smime-type=server-generated-key\r\n"
                b"Content-Transfer-Encoding: base64\r\n\r\n" + b64_lines(env) + b"\r\n--XyZ--\r\n")
        return http_response(200, "OK", [("Content-Type", "multipart/mixed; boundary=XyZ")], body)
    return keygen


def _attr(req, oid) -> bytes:
    csr = x509.load_der_x509_csr(csr_of(req))
    return csr.attributes.get_attribute_for_oid(oid).value


def test_serverkeygen_with_asymmetric_decrypt_key_identifier(replay, replay_ca, material):
    d, new_key = material
    decrypt_key = _key(d, "ec")
    kid = key_id(decrypt_key.public_key())
    srv = replay()
    srv.route("cacerts", libest_cacerts(replay_ca))
    srv.route("serverkeygen", _keygen_route(replay_ca, material, lambda req: [str(d / "ec.pem")]))
    result = client(srv, replay_ca, auth=("a", "b")).serverkeygen(
        CsrSpec.for_names(generate_key(), "kg.example.com"), delivery=AsymmetricDecryptKey(kid, decrypt_key))
    assert result.private_key.public_key() == new_key.public_key() == result.certificate.public_key()
    assert result.encrypted and result.signed and result.key_signer.subject.rfc4514_string() == "CN=signer"
    assert _attr(srv.requests[0], ASYMMETRIC_DECRYPT_KEY_ID) == kid


def test_serverkeygen_with_decrypt_key_identifier(replay, replay_ca, material):
    d, new_key = material
    srv = replay()
    srv.route("cacerts", libest_cacerts(replay_ca))
    srv.route("serverkeygen", _keygen_route(replay_ca, material,
                                            lambda req: ["-secretkey", KEK.hex(), "-secretkeyid", KEK_ID.hex()]))
    result = client(srv, replay_ca, auth=("a", "b")).serverkeygen(
        CsrSpec.for_names(generate_key(), "kg.example.com"), delivery=SymmetricDecryptKey(KEK_ID, KEK))
    assert result.private_key.public_key() == new_key.public_key()
    assert _attr(srv.requests[0], DECRYPT_KEY_ID) == KEK_ID
    assert AttributeOID.CHALLENGE_PASSWORD not in [a.oid for a in x509.load_der_x509_csr(csr_of(srv.requests[0])).attributes]

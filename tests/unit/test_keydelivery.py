"""kipuka.keydelivery against independent implementations: the openssl CLI and Bouncy Castle.

Every encrypted form is opened by `openssl cms -decrypt`, every SignedData is
checked by `openssl cms -verify` against the root CA (a full path and signature
check, no -noverify), and the key that comes out is compared with the key that
went in. Bouncy Castle (CMSEnvelopedData, CMSSignedData, and the MIME parser
its EST client uses) runs the same checks when its jars and a JDK are present.
"""

from __future__ import annotations

import base64
import datetime as dt
import email
import email.policy
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID
from pyasn1.codec.der import decoder as der_decoder
from pyasn1.type import univ
from pyasn1_modules import rfc4055, rfc5652, rfc5753, rfc5958

from kipuka import keydelivery as kd
from kipuka.keydelivery import oids
from tests.interop.jvm import compile_or_skip

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")

NOW = dt.datetime.now(dt.timezone.utc)
DER = serialization.Encoding.DER
PEM = serialization.Encoding.PEM
SPKI = serialization.PublicFormat.SubjectPublicKeyInfo
CERTS_ONLY = "application/pkcs7-mime; smime-type=certs-only"


# --- a small PKI -----------------------------------------------------------------------------

def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "kipuka test"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject_key, cn: str, issuer_key, issuer: x509.Certificate | None, *, ca: bool,
          hash_alg: hashes.HashAlgorithm | None = hashes.SHA256()) -> x509.Certificate:
    pub = subject_key.public_key()
    b = (x509.CertificateBuilder().subject_name(_name(cn))
         .issuer_name(issuer.subject if issuer else _name(cn)).public_key(pub)
         .serial_number(x509.random_serial_number())
         .not_valid_before(NOW - dt.timedelta(minutes=5)).not_valid_after(NOW + dt.timedelta(days=30))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False))
    if ca:
        b = b.add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
    elif isinstance(pub, rsa.RSAPublicKey):
        b = b.add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True)
    else:
        b = b.add_extension(x509.KeyUsage(True, False, False, False, True, False, False, False, False), critical=True)
    if issuer is not None:
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key()), critical=False)
    if isinstance(issuer_key, ed25519.Ed25519PrivateKey):
        hash_alg = None
    return b.sign(issuer_key, hash_alg)


@dataclass
class Party:
    key: object
    cert: x509.Certificate
    key_pem: Path
    cert_pem: Path
    key_der: Path  # PKCS#8 DER, for Java


@dataclass
class Pki:
    dir: Path
    root: Party
    signers: dict[str, Party]     # issuing CAs that sign key packages
    recipients: dict[str, Party]  # end entities that receive keys


def _party(dir: Path, name: str, key, cert: x509.Certificate) -> Party:
    key_pem, cert_pem, key_der = dir / f"{name}.key.pem", dir / f"{name}.pem", dir / f"{name}.key.der"
    key_pem.write_bytes(key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    key_der.write_bytes(kd.one_asymmetric_key(key))
    cert_pem.write_bytes(cert.public_bytes(PEM))
    return Party(key, cert, key_pem, cert_pem, key_der)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    root_key = ec.generate_private_key(ec.SECP384R1())
    root_cert = _cert(root_key, "Root CA", root_key, None, ca=True, hash_alg=hashes.SHA384())
    root = _party(d, "root", root_key, root_cert)
    signer_keys = {"ec-p256": ec.generate_private_key(ec.SECP256R1()),
                   "ec-p384": ec.generate_private_key(ec.SECP384R1()),
                   "rsa2048": rsa.generate_private_key(65537, 2048),
                   "ed25519": ed25519.Ed25519PrivateKey.generate()}
    signers = {n: _party(d, f"signer-{n}", k, _cert(k, f"Issuing CA {n}", root_key, root_cert, ca=True,
                                                     hash_alg=hashes.SHA384()))
               for n, k in signer_keys.items()}
    recipient_keys = {"rsa2048": rsa.generate_private_key(65537, 2048),
                      "ec-p256": ec.generate_private_key(ec.SECP256R1()),
                      "ec-p384": ec.generate_private_key(ec.SECP384R1())}
    recipients = {n: _party(d, f"device-{n}", k, _cert(k, f"device {n}", root_key, root_cert, ca=False,
                                                        hash_alg=hashes.SHA384()))
                  for n, k in recipient_keys.items()}
    return Pki(d, root, signers, recipients)


def openssl(*args: str, input: bytes | None = None, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["openssl", *args], input=input, capture_output=True, timeout=60)
    if check and proc.returncode != 0:
        raise AssertionError(f"openssl {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stderr.decode(errors='replace')}")
    return proc


def pub_pem(key) -> bytes:
    return key.public_key().public_bytes(PEM, SPKI)


def openssl_pubkey_of_pkcs8(path: Path) -> bytes:
    """`openssl pkey -inform DER -pubout` of a PKCS#8 DER file: the public key it holds."""
    return openssl("pkey", "-inform", "DER", "-in", str(path), "-pubout").stdout


def openssl_decrypt(env: Path, out: Path, party: Party | None = None, *, recip: bool = True,
                    kek: bytes | None = None, kek_id: bytes | None = None) -> bytes:
    args = ["cms", "-decrypt", "-binary", "-inform", "DER", "-in", str(env), "-out", str(out)]
    if kek is not None:
        args += ["-secretkey", kek.hex(), "-secretkeyid", kek_id.hex()]  # type: ignore[union-attr]
    else:
        assert party is not None
        args += ["-inkey", str(party.key_pem)]
        if recip:
            args += ["-recip", str(party.cert_pem)]
    openssl(*args)
    return out.read_bytes()


def openssl_verify(signed_ci: Path, root: Party, out: Path) -> bytes:
    """Full check: signature, signed attributes and the signer's path to the root (no -noverify)."""
    openssl("cms", "-verify", "-binary", "-inform", "DER", "-in", str(signed_ci),
            "-CAfile", str(root.cert_pem), "-out", str(out))
    return out.read_bytes()


def decode(der: bytes, spec):
    value, rest = der_decoder.decode(der, asn1Spec=spec)
    assert rest == b""
    return value


def new_key(kind: str):
    return {"rsa2048": lambda: rsa.generate_private_key(65537, 2048),
            "ec-p256": lambda: ec.generate_private_key(ec.SECP256R1()),
            "ec-p384": lambda: ec.generate_private_key(ec.SECP384R1()),
            "ed25519": ed25519.Ed25519PrivateKey.generate}[kind]()


# --- OneAsymmetricKey (application/pkcs8) -------------------------------------------------------

@pytest.mark.parametrize("kind", ["rsa2048", "ec-p256", "ec-p384", "ed25519"])
def test_one_asymmetric_key_is_pkcs8_private_key_info(kind: str, tmp_path: Path) -> None:
    key = new_key(kind)
    der = kd.one_asymmetric_key(key)
    path = tmp_path / "key.der"
    path.write_bytes(der)

    # openssl pkcs8 reads it as an unencrypted PKCS#8 PrivateKeyInfo ...
    pem = openssl("pkcs8", "-inform", "DER", "-nocrypt", "-in", str(path)).stdout
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    # ... whose top level is version INTEGER 0, then an AlgorithmIdentifier SEQUENCE (not PKCS#1/SEC 1,
    # which go on with INTEGER modulus / OCTET STRING privateKey).
    lines = openssl("asn1parse", "-inform", "DER", "-in", str(path)).stdout.decode().splitlines()
    assert "d=0" in lines[0] and "SEQUENCE" in lines[0]
    assert "d=1" in lines[1] and "INTEGER" in lines[1] and lines[1].rstrip().endswith(":00")
    assert "d=1" in lines[2] and "cons: SEQUENCE" in lines[2]
    assert "d=2" in lines[3] and "OBJECT" in lines[3]
    algo = {"rsa2048": "rsaEncryption", "ec-p256": "id-ecPublicKey", "ec-p384": "id-ecPublicKey",
            "ed25519": "ED25519"}[kind]
    assert algo in lines[3]
    # and it is the same key
    assert openssl_pubkey_of_pkcs8(path) == pub_pem(key)
    oak = decode(der, rfc5958.OneAsymmetricKey())
    assert int(oak["version"]) == 0


def test_asymmetric_key_package_is_a_sequence_of_keys() -> None:
    keys = [kd.one_asymmetric_key(new_key("ec-p256")), kd.one_asymmetric_key(new_key("rsa2048"))]
    package = kd.asymmetric_key_package(keys)
    assert len(decode(package, rfc5958.AsymmetricKeyPackage())) == 2
    assert kd.read_asymmetric_key_package(package) == keys
    with pytest.raises(ValueError):
        kd.asymmetric_key_package([])
    pkcs1 = new_key("rsa2048").private_bytes(DER, serialization.PrivateFormat.TraditionalOpenSSL,
                                             serialization.NoEncryption())
    with pytest.raises(kd.KeyDeliveryError):
        kd.asymmetric_key_package([pkcs1])
    with pytest.raises(kd.KeyDeliveryError):
        kd.load_private_key(pkcs1)


# --- SignedData ---------------------------------------------------------------------------------

# OpenSSL 3.0 has no Ed25519 in CMS ("no default digest" when signing, "invalid digest" when
# verifying); Ed25519 SignedData (RFC 8419) is checked by Bouncy Castle below instead.
@pytest.mark.parametrize("signer", ["ec-p256", "ec-p384", "rsa2048"])
def test_signed_data_verifies_with_openssl(pki: Pki, signer: str, tmp_path: Path) -> None:
    s = pki.signers[signer]
    package = kd.asymmetric_key_package([kd.one_asymmetric_key(new_key("ec-p256"))])
    sd = kd.signed_data(package, oids.ID_CT_KP_AKEY_PACKAGE, s.key, s.cert, [pki.root.cert])
    (tmp_path / "sd.der").write_bytes(sd)
    assert openssl_verify(tmp_path / "sd.der", pki.root, tmp_path / "out.der") == package
    # the content type openssl sees is id-ct-KP-aKeyPackage
    printed = openssl("cms", "-cmsout", "-print", "-inform", "DER", "-in", str(tmp_path / "sd.der")).stdout.decode()
    assert "eContentType: undefined (2.16.840.1.101.2.1.2.78.5)" in printed or "2.16.840.1.101.2.1.2.78.5" in printed

    verified = kd.verify_signed_data(sd)
    assert verified.content == package and verified.content_type == oids.ID_CT_KP_AKEY_PACKAGE
    assert verified.signer == s.cert


@pytest.mark.parametrize("where", ["signature", "content"])
def test_tampered_signed_data_fails_openssl_and_ours(pki: Pki, where: str, tmp_path: Path) -> None:
    s = pki.signers["ec-p256"]
    content = b"\x30\x03\x02\x01\x07"
    sd = bytearray(kd.signed_data(content, oids.ID_CT_KP_AKEY_PACKAGE, s.key, s.cert))
    if where == "content":
        i = bytes(sd).index(content)
        sd[i + 4] ^= 0x01
    else:
        sd[-3] ^= 0x01  # inside the ECDSA signature, the last field of the last SignerInfo
    (tmp_path / "bad.der").write_bytes(bytes(sd))
    proc = openssl("cms", "-verify", "-binary", "-inform", "DER", "-in", str(tmp_path / "bad.der"),
                   "-CAfile", str(pki.root.cert_pem), "-out", str(tmp_path / "o"), check=False)
    assert proc.returncode != 0
    with pytest.raises(kd.KeyDeliveryError):
        kd.verify_signed_data(bytes(sd))


@pytest.mark.parametrize("signer,digest,sig", [
    ("ec-p256", oids.ID_SHA256, oids.ECDSA_WITH_SHA256),
    ("ec-p384", oids.ID_SHA384, oids.ECDSA_WITH_SHA384),
    ("rsa2048", oids.ID_SHA256, oids.SHA256_WITH_RSA),
    ("ed25519", oids.ID_SHA512, oids.ID_ED25519),
])
def test_signed_data_structure(pki: Pki, signer: str, digest: str, sig: str) -> None:
    s = pki.signers[signer]
    when = dt.datetime(2031, 2, 3, 4, 5, 6, tzinfo=dt.timezone.utc)
    ci = decode(kd.signed_data(b"\x30\x00", oids.ID_CT_KP_AKEY_PACKAGE, s.key, s.cert, [pki.root.cert],
                               signing_time=when), rfc5652.ContentInfo())
    assert str(ci["contentType"]) == "1.2.840.113549.1.7.2"
    sd = decode(bytes(ci["content"]), rfc5652.SignedData())
    assert int(sd["version"]) == 3  # eContentType is not id-data (RFC 5652 5.1)
    assert [str(a["algorithm"]) for a in sd["digestAlgorithms"]] == [digest]
    assert not sd["digestAlgorithms"][0]["parameters"].isValue  # absent for SHA-2 (RFC 5754)
    assert str(sd["encapContentInfo"]["eContentType"]) == "2.16.840.1.101.2.1.2.78.5"
    assert len(sd["certificates"]) == 2
    (si,) = sd["signerInfos"]
    assert int(si["version"]) == 1 and si["sid"].getName() == "issuerAndSerialNumber"
    assert int(si["sid"]["issuerAndSerialNumber"]["serialNumber"]) == s.cert.serial_number
    assert str(si["signatureAlgorithm"]["algorithm"]) == sig
    attrs = {str(a["attrType"]): bytes(a["attrValues"][0]) for a in si["signedAttrs"]}
    assert set(attrs) == {"1.2.840.113549.1.9.3", "1.2.840.113549.1.9.4", "1.2.840.113549.1.9.5"}
    assert str(decode(attrs["1.2.840.113549.1.9.3"], univ.ObjectIdentifier())) == "2.16.840.1.101.2.1.2.78.5"
    t = decode(attrs["1.2.840.113549.1.9.5"], rfc5652.Time())
    assert t.getName() == "utcTime" and str(t["utcTime"]) == "310203040506Z"
    h = hashes.Hash({oids.ID_SHA256: hashes.SHA256(), oids.ID_SHA384: hashes.SHA384(),
                     oids.ID_SHA512: hashes.SHA512()}[digest])
    h.update(b"\x30\x00")
    assert bytes(decode(attrs["1.2.840.113549.1.9.4"], univ.OctetString())) == h.finalize()


def test_signed_data_refuses_a_key_that_is_not_the_certificates(pki: Pki) -> None:
    with pytest.raises(ValueError, match="not the key"):
        kd.signed_data(b"x", oids.ID_DATA, pki.signers["ec-p256"].key, pki.signers["ec-p384"].cert)


def test_signed_data_verifies_against_a_given_signer_only(pki: Pki) -> None:
    s = pki.signers["ec-p256"]
    sd = kd.signed_data(b"\x30\x00", oids.ID_CT_KP_AKEY_PACKAGE, s.key, s.cert)
    assert kd.verify_signed_data(sd, signer=s.cert).signer == s.cert
    with pytest.raises(kd.KeyDeliveryError, match="not available"):
        kd.verify_signed_data(sd, signer=pki.signers["ec-p384"].cert)


# --- EnvelopedData ------------------------------------------------------------------------------

RECIPIENT_FORMS = [("rsa2048", kd.RSAES_OAEP_SHA256), ("rsa2048", kd.RSA_PKCS1_V15),
                   ("ec-p256", None), ("ec-p384", None)]


@pytest.mark.parametrize("name,transport", RECIPIENT_FORMS)
@pytest.mark.parametrize("by", ["certificate", "key-id"])
def test_enveloped_decrypts_with_openssl(pki: Pki, name: str, transport: str | None, by: str,
                                         tmp_path: Path) -> None:
    r = pki.recipients[name]
    content = b"secret for " + name.encode() + bytes(range(256))
    kw = {"key_transport": transport} if transport else {}
    if by == "certificate":
        env = kd.enveloped_for_certificate(content, oids.ID_DATA, r.cert, **kw)
    else:  # AsymmetricDecryptKeyIdentifier: no certificate, a subjectKeyIdentifier rid
        env = kd.enveloped_for_public_key(content, oids.ID_DATA, r.key.public_key(),
                                          kd.RecipientId(key_id=kd.key_identifier(r.key.public_key())), **kw)
    (tmp_path / "env.der").write_bytes(env)
    # By certificate: openssl matches -recip; by key id: openssl tries the key on every recipient.
    assert openssl_decrypt(tmp_path / "env.der", tmp_path / "out", r, recip=(by == "certificate")) == content
    assert kd.decrypt_enveloped(env, private_key=r.key) == (oids.ID_DATA, content)


@pytest.mark.parametrize("kek_len", [16, 24, 32])
def test_kek_enveloped_decrypts_with_openssl(kek_len: int, tmp_path: Path) -> None:
    kek, kek_id = bytes(range(1, kek_len + 1)), b"device-42 kek"
    content = b"\x30\x03\x02\x01\x05" * 50
    env = kd.enveloped_for_kek(content, oids.ID_DATA, kek, kek_id)
    (tmp_path / "env.der").write_bytes(env)
    assert openssl_decrypt(tmp_path / "env.der", tmp_path / "out", kek=kek, kek_id=kek_id) == content
    assert kd.decrypt_enveloped(env, kek=kek, kek_id=kek_id) == (oids.ID_DATA, content)
    # the wrong key or identifier fails for openssl and for us
    proc = openssl("cms", "-decrypt", "-binary", "-inform", "DER", "-in", str(tmp_path / "env.der"),
                   "-secretkey", bytes(kek_len).hex(), "-secretkeyid", kek_id.hex(), check=False)
    assert proc.returncode != 0
    with pytest.raises(kd.KeyDeliveryError):
        kd.decrypt_enveloped(env, kek=bytes(kek_len), kek_id=kek_id)
    with pytest.raises(kd.KeyDeliveryError):
        kd.decrypt_enveloped(env, kek=kek, kek_id=b"other")


def _envelope(der: bytes) -> rfc5652.EnvelopedData:
    ci = decode(der, rfc5652.ContentInfo())
    assert str(ci["contentType"]) == "1.2.840.113549.1.7.3"
    return decode(bytes(ci["content"]), rfc5652.EnvelopedData())


def test_enveloped_structures_follow_rfc_5652_and_5753(pki: Pki) -> None:
    # RSA-OAEP by certificate: EnvelopedData v0, ktri v0 with issuerAndSerialNumber, RFC 4055 OAEP-SHA256
    r = pki.recipients["rsa2048"]
    env = _envelope(kd.enveloped_for_certificate(b"x", oids.ID_SIGNED_DATA, r.cert))
    assert int(env["version"]) == 0
    eci = env["encryptedContentInfo"]
    assert str(eci["contentType"]) == "1.2.840.113549.1.7.2"
    assert str(eci["contentEncryptionAlgorithm"]["algorithm"]) == "2.16.840.1.101.3.4.1.42"  # id-aes256-CBC
    assert len(decode(bytes(eci["contentEncryptionAlgorithm"]["parameters"]), univ.OctetString())) == 16
    ktri = env["recipientInfos"][0]["ktri"]
    assert int(ktri["version"]) == 0 and ktri["rid"].getName() == "issuerAndSerialNumber"
    assert str(ktri["keyEncryptionAlgorithm"]["algorithm"]) == "1.2.840.113549.1.1.7"
    oaep = decode(bytes(ktri["keyEncryptionAlgorithm"]["parameters"]), rfc4055.RSAES_OAEP_params())
    assert str(oaep["hashFunc"]["algorithm"]) == "2.16.840.1.101.3.4.2.1"
    assert str(oaep["maskGenFunc"]["algorithm"]) == "1.2.840.113549.1.1.8"
    assert not oaep["pSourceFunc"].isValue

    # PKCS#1 v1.5 by key id: EnvelopedData v2, ktri v2 with subjectKeyIdentifier, rsaEncryption + NULL
    env = _envelope(kd.enveloped_for_public_key(b"x", oids.ID_DATA, r.key.public_key(),
                                                kd.RecipientId(key_id=b"\x07" * 20),
                                                key_transport=kd.RSA_PKCS1_V15, content_key_bytes=16))
    assert int(env["version"]) == 2
    assert str(env["encryptedContentInfo"]["contentEncryptionAlgorithm"]["algorithm"]) == "2.16.840.1.101.3.4.1.2"
    ktri = env["recipientInfos"][0]["ktri"]
    assert int(ktri["version"]) == 2 and bytes(ktri["rid"]["subjectKeyIdentifier"]) == b"\x07" * 20
    assert str(ktri["keyEncryptionAlgorithm"]["algorithm"]) == "1.2.840.113549.1.1.1"
    assert bytes(ktri["keyEncryptionAlgorithm"]["parameters"]) == b"\x05\x00"

    # EC: kari v3, ephemeral originatorKey, dhSinglePass-stdDH-sha256kdf-scheme + id-aes256-wrap
    e = pki.recipients["ec-p384"]
    env = _envelope(kd.enveloped_for_certificate(b"x", oids.ID_DATA, e.cert))
    assert int(env["version"]) == 2
    kari = env["recipientInfos"][0]["kari"]
    assert int(kari["version"]) == 3
    okey = kari["originator"]["originatorKey"]
    assert str(okey["algorithm"]["algorithm"]) == "1.2.840.10045.2.1"
    point = okey["publicKey"].asOctets()
    assert point[0] == 4 and len(point) == 97  # an uncompressed P-384 point, i.e. the recipient's curve
    assert str(kari["keyEncryptionAlgorithm"]["algorithm"]) == "1.3.132.1.11.1"
    wrap = decode(bytes(kari["keyEncryptionAlgorithm"]["parameters"]), rfc5753.KeyWrapAlgorithm())
    assert str(wrap["algorithm"]) == "2.16.840.1.101.3.4.1.45" and not wrap["parameters"].isValue
    (rek,) = kari["recipientEncryptedKeys"]
    assert rek["rid"].getName() == "issuerAndSerialNumber"
    assert len(bytes(rek["encryptedKey"])) == 40  # RFC 3394 wrap of a 32-byte key

    # EC by key id: rKeyId
    env = _envelope(kd.enveloped_for_public_key(b"x", oids.ID_DATA, e.key.public_key(),
                                                kd.RecipientId(key_id=b"\x01\x02")))
    rek = env["recipientInfos"][0]["kari"]["recipientEncryptedKeys"][0]
    assert bytes(rek["rid"]["rKeyId"]["subjectKeyIdentifier"]) == b"\x01\x02"

    # KEK: kekri v4, id-aes128-wrap for a 16-byte KEK, AES-128-CBC content
    env = _envelope(kd.enveloped_for_kek(b"x", oids.ID_DATA, bytes(16), b"id"))
    assert int(env["version"]) == 2
    kekri = env["recipientInfos"][0]["kekri"]
    assert int(kekri["version"]) == 4 and bytes(kekri["kekid"]["keyIdentifier"]) == b"id"
    assert str(kekri["keyEncryptionAlgorithm"]["algorithm"]) == "2.16.840.1.101.3.4.1.5"
    assert str(env["encryptedContentInfo"]["contentEncryptionAlgorithm"]["algorithm"]) == "2.16.840.1.101.3.4.1.2"


def test_enveloped_other_kdf_hashes_decrypt_with_openssl(pki: Pki, tmp_path: Path) -> None:
    r = pki.recipients["ec-p384"]
    for h, oid in [(hashes.SHA384(), "1.3.132.1.11.2"), (hashes.SHA512(), "1.3.132.1.11.3")]:
        env = kd.enveloped_for_certificate(b"kdf", oids.ID_DATA, r.cert, kdf_hash=h)
        assert str(_envelope(env)["recipientInfos"][0]["kari"]["keyEncryptionAlgorithm"]["algorithm"]) == oid
        (tmp_path / "env.der").write_bytes(env)
        assert openssl_decrypt(tmp_path / "env.der", tmp_path / "out", r) == b"kdf"


def test_enveloped_refuses_bad_arguments(pki: Pki) -> None:
    r = pki.recipients["rsa2048"]
    with pytest.raises(ValueError):
        kd.enveloped_for_certificate(b"x", oids.ID_DATA, r.cert, key_transport="rsa-oaep-md5")
    with pytest.raises(ValueError):
        kd.enveloped_for_certificate(b"x", oids.ID_DATA, r.cert, content_key_bytes=8)
    with pytest.raises(ValueError):
        kd.enveloped_for_kek(b"x", oids.ID_DATA, bytes(20), b"id")
    with pytest.raises(ValueError):
        kd.enveloped_for_kek(b"x", oids.ID_DATA, bytes(16), b"")
    with pytest.raises(ValueError):
        kd.enveloped_for_certificate(b"", oids.ID_DATA, r.cert)
    with pytest.raises(TypeError):
        kd.enveloped_for_public_key(b"x", oids.ID_DATA, ed25519.Ed25519PrivateKey.generate().public_key(),
                                    kd.RecipientId(key_id=b"1"))
    with pytest.raises(ValueError):
        kd.RecipientId()


def test_readers_bound_and_reject_bad_input(pki: Pki) -> None:
    r = pki.recipients["ec-p256"]
    env = kd.enveloped_for_certificate(b"x", oids.ID_DATA, r.cert)
    for bad in (b"", b"\x30\x80\x00\x00", b"garbage", env + b"\x00", env[:-1],
                b"\x30\x84\x7f\xff\xff\xff" + bytes(10), bytes(kd.MAX_CMS_BYTES + 1)):
        with pytest.raises(kd.KeyDeliveryError):
            kd.decrypt_enveloped(bad, private_key=r.key)
        with pytest.raises(kd.KeyDeliveryError):
            kd.verify_signed_data(bad)
    with pytest.raises(kd.KeyDeliveryError, match="no RecipientInfo"):
        kd.decrypt_enveloped(env, private_key=pki.recipients["ec-p384"].key)
    with pytest.raises(kd.KeyDeliveryError, match="expected a SignedData"):
        kd.verify_signed_data(env)


# --- the whole server-generated key ---------------------------------------------------------------

SGK_FORMS = [
    ("rsa2048", kd.RSAES_OAEP_SHA256, "ec-p256"),
    ("rsa2048", kd.RSA_PKCS1_V15, "rsa2048"),
    ("ec-p256", None, "ec-p256"),
    ("ec-p384", None, "ec-p384"),
]


def _check_key_package(pkg: bytes, expected_key, tmp_path: Path) -> None:
    (key_der,) = kd.read_asymmetric_key_package(pkg)
    (tmp_path / "key.der").write_bytes(key_der)
    assert openssl_pubkey_of_pkcs8(tmp_path / "key.der") == pub_pem(expected_key)
    assert key_der == kd.one_asymmetric_key(expected_key)


def _verify_inner_with_openssl(pki: Pki, bare_signed: bytes, tmp_path: Path) -> bytes:
    """openssl cms -verify wants a ContentInfo; the EnvelopedData holds the SignedData itself."""
    decode(bare_signed, rfc5652.SignedData())  # it is a bare SignedData, as CMS nests
    (tmp_path / "signed.der").write_bytes(kd.content_info(oids.ID_SIGNED_DATA, bare_signed))
    return openssl_verify(tmp_path / "signed.der", pki.root, tmp_path / "pkg.der")


@pytest.mark.parametrize("name,transport,signer", SGK_FORMS)
def test_server_generated_key_to_certificate_openssl(pki: Pki, name: str, transport: str | None, signer: str,
                                                     tmp_path: Path) -> None:
    r, s = pki.recipients[name], pki.signers[signer]
    new = new_key("ec-p256")
    kw = {"key_transport": transport} if transport else {}
    der = kd.server_generated_key_cms(new, s.key, s.cert, r.cert, extra_certs=[pki.root.cert], **kw)
    assert str(_envelope(der)["encryptedContentInfo"]["contentType"]) == "1.2.840.113549.1.7.2"
    (tmp_path / "sgk.der").write_bytes(der)
    bare = openssl_decrypt(tmp_path / "sgk.der", tmp_path / "signed-bare.der", r)
    pkg = _verify_inner_with_openssl(pki, bare, tmp_path)
    _check_key_package(pkg, new, tmp_path)

    opened = kd.open_server_generated_key(der, private_key=r.key)
    assert opened.one_asymmetric_key == kd.one_asymmetric_key(new) and opened.signer == s.cert


@pytest.mark.parametrize("name", ["rsa2048", "ec-p256", "ec-p384"])
def test_server_generated_key_to_key_identifier_openssl(pki: Pki, name: str, tmp_path: Path) -> None:
    """RFC 7030's AsymmetricDecryptKeyIdentifier, or the CSR's own key: no certificate to name."""
    r, s = pki.recipients[name], pki.signers["ec-p256"]
    new = new_key("rsa2048")
    key_id = kd.key_identifier(r.key.public_key())
    der = kd.server_generated_key_cms(new, s.key, s.cert, kd.PublicKeyRecipient(r.key.public_key(), key_id))
    (tmp_path / "sgk.der").write_bytes(der)
    bare = openssl_decrypt(tmp_path / "sgk.der", tmp_path / "signed-bare.der", r, recip=False)
    _check_key_package(_verify_inner_with_openssl(pki, bare, tmp_path), new, tmp_path)
    assert kd.open_server_generated_key(der, private_key=r.key).one_asymmetric_key == kd.one_asymmetric_key(new)


@pytest.mark.parametrize("kek_len", [16, 32])
def test_server_generated_key_to_kek_openssl(pki: Pki, kek_len: int, tmp_path: Path) -> None:
    """RFC 7030's DecryptKeyIdentifier: a pre-shared symmetric key."""
    s = pki.signers["rsa2048"]
    kek, kek_id = bytes(range(100, 100 + kek_len)), b"\x00\x01kek-id"
    new = new_key("ec-p384")
    der = kd.server_generated_key_cms(new, s.key, s.cert, (kek, kek_id), extra_certs=[pki.root.cert])
    (tmp_path / "sgk.der").write_bytes(der)
    bare = openssl_decrypt(tmp_path / "sgk.der", tmp_path / "signed-bare.der", kek=kek, kek_id=kek_id)
    _check_key_package(_verify_inner_with_openssl(pki, bare, tmp_path), new, tmp_path)
    opened = kd.open_server_generated_key(der, kek=kek, kek_id=kek_id, signer=s.cert)
    assert opened.one_asymmetric_key == kd.one_asymmetric_key(new)


def test_open_accepts_a_content_info_inside_the_envelope(pki: Pki) -> None:
    """Some senders put ContentInfo(SignedData) inside; the reader takes both layouts."""
    r, s = pki.recipients["ec-p256"], pki.signers["ec-p256"]
    new = new_key("ec-p256")
    signed = kd.signed_data(kd.asymmetric_key_package([kd.one_asymmetric_key(new)]),
                            oids.ID_CT_KP_AKEY_PACKAGE, s.key, s.cert)
    der = kd.enveloped_for_certificate(signed, oids.ID_SIGNED_DATA, r.cert)
    assert kd.open_server_generated_key(der, private_key=r.key).one_asymmetric_key == kd.one_asymmetric_key(new)


def test_open_refuses_a_package_with_the_wrong_content_type(pki: Pki) -> None:
    r, s = pki.recipients["ec-p256"], pki.signers["ec-p256"]
    pkg = kd.asymmetric_key_package([kd.one_asymmetric_key(new_key("ec-p256"))])
    _, bare = kd.read_content_info(kd.signed_data(pkg, oids.ID_DATA, s.key, s.cert))
    der = kd.enveloped_for_certificate(bare, oids.ID_SIGNED_DATA, r.cert)
    with pytest.raises(kd.KeyDeliveryError, match="aKeyPackage"):
        kd.open_server_generated_key(der, private_key=r.key)


def _indefinite(der: bytes) -> bytes:
    """The same constructed value with a BER indefinite length, as streaming encoders write it."""
    tag, length = der[0], der[1]
    header = 2 + (length & 0x7F if length & 0x80 else 0)
    return bytes([tag, 0x80]) + der[header:] + b"\x00\x00"


def test_readers_accept_ber_indefinite_lengths(pki: Pki) -> None:
    r, s = pki.recipients["ec-p256"], pki.signers["rsa2048"]
    new = new_key("ec-p256")
    _, bare = kd.read_content_info(kd.signed_data(kd.asymmetric_key_package([kd.one_asymmetric_key(new)]),
                                                  oids.ID_CT_KP_AKEY_PACKAGE, s.key, s.cert))
    env = kd.enveloped_for_certificate(_indefinite(bare), oids.ID_SIGNED_DATA, r.cert)
    _, env_der = kd.read_content_info(env)
    oid_tlv = bytes.fromhex("06092a864886f70d010703")  # id-envelopedData
    ber = b"\x30\x80" + oid_tlv + b"\xa0\x80" + env_der + b"\x00\x00" + b"\x00\x00"
    opened = kd.open_server_generated_key(ber, private_key=r.key)
    assert opened.one_asymmetric_key == kd.one_asymmetric_key(new) and opened.signer == s.cert


def test_readers_open_what_openssl_writes(pki: Pki, tmp_path: Path) -> None:
    """openssl cms -sign (with -econtent_type) and cms -encrypt output, read by this package."""
    s, r = pki.signers["ec-p384"], pki.recipients["rsa2048"]
    new = new_key("ec-p256")
    pkg = kd.asymmetric_key_package([kd.one_asymmetric_key(new)])
    (tmp_path / "pkg.der").write_bytes(pkg)
    openssl("cms", "-sign", "-binary", "-nodetach", "-in", str(tmp_path / "pkg.der"), "-econtent_type",
            oids.ID_CT_KP_AKEY_PACKAGE, "-signer", str(s.cert_pem), "-inkey", str(s.key_pem), "-outform", "DER",
            "-out", str(tmp_path / "sd.der"))
    verified = kd.verify_signed_data((tmp_path / "sd.der").read_bytes())
    assert verified.content == pkg and verified.signer == s.cert
    openssl("cms", "-encrypt", "-binary", "-aes256", "-in", str(tmp_path / "sd.der"), "-outform", "DER",
            "-out", str(tmp_path / "env.der"), str(r.cert_pem))
    ctype, content = kd.decrypt_enveloped((tmp_path / "env.der").read_bytes(), private_key=r.key)
    assert (ctype, content) == (oids.ID_DATA, (tmp_path / "sd.der").read_bytes())


def test_recipient_objects_validate() -> None:
    with pytest.raises(ValueError):
        kd.KekRecipient(bytes(15), b"id")
    with pytest.raises(ValueError):
        kd.KekRecipient(bytes(16), b"")
    with pytest.raises(TypeError):
        kd.PublicKeyRecipient(ed25519.Ed25519PrivateKey.generate().public_key(), b"id")  # type: ignore[arg-type]
    assert "kek=" not in repr(kd.KekRecipient(bytes(16), b"id"))  # the secret stays out of logs


# --- multipart/mixed ------------------------------------------------------------------------------

def _two_parts(pki: Pki) -> list[tuple[str, bytes]]:
    key = new_key("ec-p256")
    certs_only = pkcs7.serialize_certificates([pki.recipients["ec-p256"].cert], DER)
    return [(kd.PKCS8, kd.one_asymmetric_key(key)), (CERTS_ONLY, certs_only)]


def test_multipart_shape(pki: Pki) -> None:
    parts = _two_parts(pki)
    ctype, body = kd.multipart_mixed(parts)
    m = re.fullmatch(r"multipart/mixed; boundary=([0-9A-Za-z-]+)", ctype)
    assert m, ctype
    delim = b"--" + m.group(1).encode()
    assert body.startswith(delim + b"\r\n")
    assert body.endswith(b"\r\n" + delim + b"--\r\n")  # nothing after the closing delimiter but CRLF
    assert body.count(delim + b"--") == 1
    assert b"\n" not in body.replace(b"\r\n", b"") and b"\r" not in body.replace(b"\r\n", b"")
    for line in body.split(b"\r\n"):
        assert len(line) <= 76
    b64_lines = [ln for ln in body.split(b"\r\n") if ln and not ln.startswith((b"--", b"Content-"))]
    assert b64_lines and all(len(ln) <= 64 for ln in b64_lines)
    assert body.count(b"Content-Transfer-Encoding: base64\r\n") == 2
    assert kd.parse_multipart_mixed(ctype, body) == parts
    # a fresh random boundary each time
    assert kd.multipart_mixed(parts)[0] != ctype


def test_multipart_parses_with_the_python_email_package(pki: Pki) -> None:
    parts = _two_parts(pki)
    ctype, body = kd.multipart_mixed(parts)
    msg = email.message_from_bytes(f"Content-Type: {ctype}\r\n\r\n".encode() + body, policy=email.policy.HTTP)
    assert msg.is_multipart() and not msg.defects
    got = [(p.get_content_type(), p.get_param("smime-type"), p.get_payload(decode=True)) for p in msg.iter_parts()]
    assert got == [("application/pkcs8", None, parts[0][1]), ("application/pkcs7-mime", "certs-only", parts[1][1])]
    assert msg.epilogue in ("", None)


def test_multipart_quotes_a_boundary_that_needs_it() -> None:
    ctype, body = kd.multipart_mixed([("application/pkcs8", b"x")], boundary="a:b=c")
    assert ctype == 'multipart/mixed; boundary="a:b=c"'
    assert kd.parse_multipart_mixed(ctype, body) == [("application/pkcs8", b"x")]
    for bad in ("", "x" * 71, "has space", "new\r\nline", "é"):
        with pytest.raises(ValueError):
            kd.multipart_mixed([("application/pkcs8", b"x")], boundary=bad)
    with pytest.raises(ValueError):
        kd.multipart_mixed([("application/pkcs8\r\nX-Evil: 1", b"x")])
    with pytest.raises(ValueError):
        kd.multipart_mixed([])


def test_strict_parser_rejects_what_strict_clients_reject(pki: Pki) -> None:
    ctype, body = kd.multipart_mixed(_two_parts(pki), boundary="BOUNDARY")
    lines = body.split(b"\r\n")
    first_b64 = lines.index(b"") + 1  # the first part's first base64 line, after the blank line
    joined = lines[:first_b64] + [lines[first_b64] + lines[first_b64 + 1]] + lines[first_b64 + 2:]
    starred = lines[:first_b64] + [b"*" + lines[first_b64][1:]] + lines[first_b64 + 1:]
    bad_bodies = {
        "extra CRLF after the closing delimiter": (body + b"\r\n", "exactly CRLF"),
        "epilogue": (body + b"trailer", "exactly CRLF"),
        "no CRLF after the closing delimiter": (body[:-2], "exactly CRLF"),
        "preamble": (b"preamble\r\n" + body, "preamble"),
        "LF line ends": (body.replace(b"\r\n", b"\n"), "bare CR or LF"),
        "no closing delimiter": (body[: body.rindex(b"\r\n--BOUNDARY--")], "no closing delimiter"),
        "missing CTE": (body.replace(b"Content-Transfer-Encoding: base64\r\n", b"", 1), "Content-Transfer-Encoding"),
        "bad base64": (b"\r\n".join(starred), "not base64"),
        "base64 line over 76": (b"\r\n".join(joined), "at most 76"),
        "padding after a delimiter": (body.replace(b"--BOUNDARY\r\n", b"--BOUNDARY \r\n", 1), "trailing characters"),
        "repeated header": (body.replace(b"Content-Type: application/pkcs8\r\n",
                                         b"Content-Type: application/pkcs8\r\nContent-Type: text/plain\r\n", 1),
                            "repeats the header"),
        "no blank line after headers": (body.replace(b"base64\r\n\r\n", b"base64\r\n", 1), "header"),
    }
    for what, (bad, reason) in bad_bodies.items():
        with pytest.raises(kd.MultipartError, match=reason):
            kd.parse_multipart_mixed(ctype, bad)
            pytest.fail(f"strict parser accepted: {what}")
    for bad_ctype in ("multipart/related; boundary=BOUNDARY", "multipart/mixed", "multipart/mixed; boundary=",
                      'multipart/mixed; boundary="BOUNDARY', "application/pkcs8"):
        with pytest.raises(kd.MultipartError):
            kd.parse_multipart_mixed(bad_ctype, body)
    with pytest.raises(kd.MultipartError, match="larger than"):
        kd.parse_multipart_mixed(ctype, body, max_body=len(body) - 1)
    with pytest.raises(kd.MultipartError, match="more than 1 parts"):
        kd.parse_multipart_mixed(ctype, body, max_parts=1)


def test_lenient_parser_accepts_what_other_servers_send(pki: Pki) -> None:
    parts = _two_parts(pki)
    ctype, body = kd.multipart_mixed(parts, boundary="BOUNDARY")
    variants = [body + b"\r\n", b"This is a preamble.\r\n" + body + b"epilogue\r\n",
                body.replace(b"\r\n", b"\n"), body.replace(b"Content-Transfer-Encoding: base64\r\n", b""),
                body.replace(b"--BOUNDARY\r\n", b"--BOUNDARY  \r\n")]
    for variant in variants:
        assert kd.parse_multipart_mixed('Multipart/Mixed; Boundary="BOUNDARY"', variant, strict=False) == parts
    # stdlib-style body with a one-line base64 and its own boundary quoting
    one_line = (b"--b 1\r\nContent-Type: application/pkcs8\r\n\r\n" + base64.b64encode(parts[0][1])
                + b"\r\n--b 1--")
    assert kd.parse_multipart_mixed('multipart/mixed; boundary="b 1"', one_line, strict=False) == [parts[0]]


# --- Bouncy Castle ----------------------------------------------------------------------------------

JAVA_SOURCE = r"""
import java.io.*;
import java.nio.file.*;
import java.security.*;
import java.security.spec.PKCS8EncodedKeySpec;
import java.util.*;
import javax.crypto.spec.SecretKeySpec;
import org.bouncycastle.asn1.*;
import org.bouncycastle.asn1.cms.*;
import org.bouncycastle.asn1.pkcs.PrivateKeyInfo;
import org.bouncycastle.cert.X509CertificateHolder;
import org.bouncycastle.cms.*;
import org.bouncycastle.cms.jcajce.*;
import org.bouncycastle.jce.provider.BouncyCastleProvider;
import org.bouncycastle.mime.*;
import org.bouncycastle.util.Store;
import org.bouncycastle.util.encoders.Hex;

/** open ALG(RSA|EC|KEK) ENV KEY(pkcs8 file | kek hex) OUT: decrypt, verify the inner SignedData, write eContent.
 *  mime CONTENT-TYPE BODY: parse as org.bouncycastle.est.ESTService does for /serverkeygen. */
public class KdCheck {
    public static void main(String[] a) throws Exception {
        Security.addProvider(new BouncyCastleProvider());
        if (a[0].equals("open")) open(a[1], a[2], a[3], a[4]); else mime(a[1], a[2]);
    }

    static void open(String alg, String envFile, String key, String out) throws Exception {
        CMSEnvelopedData env = new CMSEnvelopedData(Files.readAllBytes(Paths.get(envFile)));
        String ct = EnvelopedData.getInstance(env.toASN1Structure().getContent())
            .getEncryptedContentInfo().getContentType().getId();
        RecipientInformation ri = env.getRecipientInfos().getRecipients().iterator().next();
        Recipient r;
        if (alg.equals("KEK")) {
            r = new JceKEKEnvelopedRecipient(new SecretKeySpec(Hex.decode(key), "AES")).setProvider("BC");
        } else {
            PrivateKey k = KeyFactory.getInstance(alg, "BC")
                .generatePrivate(new PKCS8EncodedKeySpec(Files.readAllBytes(Paths.get(key))));
            r = (ri instanceof KeyAgreeRecipientInformation)
                ? new JceKeyAgreeEnvelopedRecipient(k).setProvider("BC")
                : new JceKeyTransEnvelopedRecipient(k).setProvider("BC");
        }
        byte[] inner = ri.getContent(r);
        System.out.println("encryptedContentType " + ct);
        CMSSignedData sd = new CMSSignedData(new ContentInfo(CMSObjectIdentifiers.signedData,
            SignedData.getInstance(ASN1Primitive.fromByteArray(inner))));
        System.out.println("eContentType " + sd.getSignedContentTypeOID());
        Store<X509CertificateHolder> certs = sd.getCertificates();
        int verified = 0;
        for (SignerInformation si : sd.getSignerInfos().getSigners()) {
            X509CertificateHolder cert = (X509CertificateHolder) certs.getMatches(si.getSID()).iterator().next();
            if (!si.verify(new JcaSimpleSignerInfoVerifierBuilder().setProvider("BC").build(cert)))
                throw new IllegalStateException("signature does not verify");
            verified++;
        }
        if (verified != 1) throw new IllegalStateException("signers: " + verified);
        System.out.println("verified " + verified);
        Files.write(Paths.get(out), (byte[]) sd.getSignedContent().getContent());
    }

    static void mime(String contentType, String bodyFile) throws Exception {
        Headers headers = new Headers(contentType, "base64");
        InputStream in = new ByteArrayInputStream(Files.readAllBytes(Paths.get(bodyFile)));
        final List<String> seen = new ArrayList<>();
        new BasicMimeParser(headers, in).parse(new MimeParserListener() {
            public MimeContext createContext(MimeParserContext pc, Headers h) { return ConstantMimeContext.Instance; }
            public void object(MimeParserContext pc, Headers h, InputStream is) throws IOException {
                ASN1InputStream asn1 = new ASN1InputStream(is);
                if (h.getContentType().contains("application/pkcs8")) {
                    PrivateKeyInfo pki = PrivateKeyInfo.getInstance(asn1.readObject());
                    seen.add("pkcs8 " + pki.getPrivateKeyAlgorithm().getAlgorithm().getId());
                } else if (h.getContentType().contains("application/pkcs7-mime")) {
                    ContentInfo ci = ContentInfo.getInstance(asn1.readObject());
                    seen.add("pkcs7 " + ci.getContentType().getId());
                }
                if (asn1.readObject() != null) throw new IOException("trailing data in a part");
            }
        });
        for (String s : seen) System.out.println(s);
    }
}
"""


@pytest.fixture(scope="module")
def bc(tmp_path_factory: pytest.TempPathFactory):
    """A compiled KdCheck, or a skip that says what is missing."""
    jvm = compile_or_skip(tmp_path_factory.mktemp("bc"), {"KdCheck": JAVA_SOURCE})
    return lambda *args: jvm.run("KdCheck", *args)


@pytest.mark.parametrize("name,transport,signer", [*SGK_FORMS, ("ec-p256", None, "ed25519")])
def test_bouncy_castle_opens_server_generated_key_to_certificate(pki: Pki, bc, name: str, transport: str | None,
                                                                 signer: str, tmp_path: Path) -> None:
    r, s = pki.recipients[name], pki.signers[signer]
    new = new_key("ec-p384")
    kw = {"key_transport": transport} if transport else {}
    (tmp_path / "sgk.der").write_bytes(kd.server_generated_key_cms(new, s.key, s.cert, r.cert, **kw))
    out = bc("open", "RSA" if name.startswith("rsa") else "EC", str(tmp_path / "sgk.der"), str(r.key_der),
             str(tmp_path / "pkg.der"))
    assert "encryptedContentType 1.2.840.113549.1.7.2" in out
    assert "eContentType 2.16.840.1.101.2.1.2.78.5" in out and "verified 1" in out
    _check_key_package((tmp_path / "pkg.der").read_bytes(), new, tmp_path)


@pytest.mark.parametrize("name", ["rsa2048", "ec-p256"])
def test_bouncy_castle_opens_server_generated_key_to_key_identifier(pki: Pki, bc, name: str,
                                                                    tmp_path: Path) -> None:
    r, s = pki.recipients[name], pki.signers["ec-p256"]
    new = new_key("ec-p256")
    recipient = kd.PublicKeyRecipient(r.key.public_key(), kd.key_identifier(r.key.public_key()))
    (tmp_path / "sgk.der").write_bytes(kd.server_generated_key_cms(new, s.key, s.cert, recipient))
    out = bc("open", "RSA" if name.startswith("rsa") else "EC", str(tmp_path / "sgk.der"), str(r.key_der),
             str(tmp_path / "pkg.der"))
    assert "verified 1" in out
    _check_key_package((tmp_path / "pkg.der").read_bytes(), new, tmp_path)


def test_bouncy_castle_opens_server_generated_key_to_kek(pki: Pki, bc, tmp_path: Path) -> None:
    s = pki.signers["ec-p384"]
    kek = bytes(range(32))
    new = new_key("rsa2048")
    (tmp_path / "sgk.der").write_bytes(kd.server_generated_key_cms(new, s.key, s.cert, (kek, b"kid")))
    out = bc("open", "KEK", str(tmp_path / "sgk.der"), kek.hex(), str(tmp_path / "pkg.der"))
    assert "verified 1" in out
    _check_key_package((tmp_path / "pkg.der").read_bytes(), new, tmp_path)


def test_bouncy_castle_mime_parser_reads_the_serverkeygen_body(pki: Pki, bc, tmp_path: Path) -> None:
    """The parse org.bouncycastle.est.ESTService runs on a /serverkeygen response."""
    ctype, body = kd.multipart_mixed(_two_parts(pki))
    (tmp_path / "body").write_bytes(body)
    out = bc("mime", ctype, str(tmp_path / "body")).split()
    assert out == ["pkcs8", "1.2.840.10045.2.1", "pkcs7", "1.2.840.113549.1.7.2"]

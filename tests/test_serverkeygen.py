"""/serverkeygen against a real `kipuka serve`, every key form opened by openssl.

One server (module scope) has these labels:

* keygen          serverkeygen on; EC P-256/P-384 and RSA-2048; csr-key, asymmetric, symmetric
* keygen-pkcs8    serverkeygen on; the unencrypted application/pkcs8 form only
* keygen-escrow   serverkeygen on; csr-key and pkcs8; keys escrowed to an RSA recovery certificate
* keygen-approval serverkeygen on, but enrollments wait for approval (refused: 403)

with [est] keygen_pool = 2 and a kek_file; the unlabeled path and the demo labels keep serverkeygen off (404).
"""

from __future__ import annotations

import base64
import datetime as dt
import email
import email.policy
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from pyasn1.codec.der import decoder as der_decoder
from pyasn1.codec.der import encoder as der_encoder
from pyasn1.type import univ
from pyasn1_modules import rfc2986, rfc5280, rfc5652, rfc5751

from kipuka import keydelivery as kd
from tests.helpers import (CERTS_ONLY, Server, b64, certs_from, certs_in_der, make_server, new_key, unique,
                           write_identity)

pytestmark = pytest.mark.skipif(not (shutil.which("openssl") and shutil.which("curl")),
                                reason="needs the openssl and curl CLIs")

SGK = "application/pkcs7-mime; smime-type=server-generated-key"
DECRYPT_KEY_ID = "1.2.840.113549.1.9.16.2.37"
ASYMMETRIC_DECRYPT_KEY_ID = "1.2.840.113549.1.9.16.2.54"
SMIME_CAPABILITIES = "1.2.840.113549.1.9.15"
PEM = serialization.Encoding.PEM
SPKI = serialization.PublicFormat.SubjectPublicKeyInfo

KEK_ID = b"kek-fleet-001"
KEK = bytes(range(32))
KEK_SCOPED_ID = b"kek-other"

LABELS = """
[labels.keygen]
serverkeygen = true
serverkeygen_key_types = ["ec-p256", "ec-p384", "rsa2048"]
serverkeygen_deliveries = ["csr-key", "asymmetric", "symmetric"]

[labels.keygen-pkcs8]
serverkeygen = true
serverkeygen_deliveries = ["pkcs8"]

[labels.keygen-escrow]
serverkeygen = true
serverkeygen_deliveries = ["csr-key", "pkcs8"]
escrow = true
escrow_cert = "escrow/escrow.pem"

[labels.keygen-approval]
serverkeygen = true
require_approval = true
"""


# --- fixtures ---------------------------------------------------------------------------------

def _self_signed(key, cn: str) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.timezone.utc)
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.KeyUsage(False, False, True, False, False, False, False, False, False), critical=True)
            .sign(key, hashes.SHA256()))


def configure(srv: Server) -> Server:
    """Write the escrow certificate (its key stays with the test, 'offline') and the KEK file."""
    (srv.dir / "escrow").mkdir()
    key = rsa.generate_private_key(65537, 2048)
    (srv.dir / "escrow" / "escrow.pem").write_bytes(_self_signed(key, "kipuka test key recovery").public_bytes(PEM))
    offline = srv.dir / "offline"
    offline.mkdir()
    (offline / "escrow.key").write_bytes(key.private_bytes(PEM, serialization.PrivateFormat.PKCS8,
                                                           serialization.NoEncryption()))
    kek_file = srv.dir / "private" / "keks.txt"
    kek_file.write_text(f"# test keys\n{KEK_ID.hex()} {base64.b64encode(KEK).decode()}\n"
                        f"{KEK_SCOPED_ID.hex()} {base64.b64encode(bytes(16)).decode()} entity:somebody-else\n")
    os.chmod(kek_file, 0o600)
    return srv


def keygen_server(root: Path, **kwargs) -> Server:
    srv = make_server(root, replacements={r"^\[est\]$": '[est]\nkek_file = "private/keks.txt"\nkeygen_pool = 2'},
                      append=LABELS, **kwargs)
    return configure(srv)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Server:
    s = keygen_server(tmp_path_factory.mktemp("keygen")).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def pool(srv: Server) -> tuple[str, str]:
    """One many-use OTP for tests that are not about OTPs (each `kipuka otp create` is a process start)."""
    entity = unique("keygen")
    return entity, srv.otp(entity, "--uses", "1000", "--label", "any")  # every label


# --- CSRs with RFC 7030 4.4.1 attributes ---------------------------------------------------------

def octet_string(value: bytes) -> bytes:
    return der_encoder.encode(univ.OctetString(value))


def smime_capabilities(*oids: str) -> bytes:
    caps = rfc5751.SMIMECapabilities()
    for oid in oids:
        cap = rfc5751.SMIMECapability()
        cap["capabilityID"] = univ.ObjectIdentifier(oid)
        caps.append(cap)
    return der_encoder.encode(caps)


def keygen_csr(cn: str, key=None, attributes: list[tuple[str, bytes]] = ()) -> tuple[object, bytes]:
    """A PKCS#10 CSR with arbitrary (DER-valued) attributes, which cryptography cannot write."""
    key = key or new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    info = rfc2986.CertificationRequestInfo()
    info["version"] = 0
    info["subject"] = der_decoder.decode(name.public_bytes(), asn1Spec=rfc5280.Name())[0]
    spki = key.public_key().public_bytes(serialization.Encoding.DER, SPKI)
    info["subjectPKInfo"] = der_decoder.decode(spki, asn1Spec=rfc2986.SubjectPublicKeyInfo())[0]
    attrs = info["attributes"]
    for oid, value in attributes:
        attr = rfc2986.Attribute()
        attr["type"] = univ.ObjectIdentifier(oid)
        attr["values"].append(univ.Any(value))
        attrs.append(attr)
    tbs = der_encoder.encode(info)
    req = rfc2986.CertificationRequest()
    req["certificationRequestInfo"] = info
    if isinstance(key, rsa.RSAPrivateKey):
        sig, alg = key.sign(tbs, padding.PKCS1v15(), hashes.SHA256()), "1.2.840.113549.1.1.11"
    else:
        sig, alg = key.sign(tbs, ec.ECDSA(hashes.SHA256())), "1.2.840.10045.4.3.2"
    req["signatureAlgorithm"]["algorithm"] = univ.ObjectIdentifier(alg)
    if alg.startswith("1.2.840.113549"):
        req["signatureAlgorithm"]["parameters"] = univ.Any(b"\x05\x00")
    req["signature"] = univ.BitString.fromOctetString(sig)
    der = der_encoder.encode(req)
    x509.load_der_x509_csr(der)  # what the server will parse
    return key, der


# --- response handling ----------------------------------------------------------------------------

def split(response: requests.Response) -> dict[str, bytes]:
    """{part media type: decoded bytes}, via the Python email package (an independent MIME parser)."""
    assert response.status_code == 200, (response.status_code, response.text)
    ctype = response.headers["Content-Type"]
    body = response.content
    assert int(response.headers["Content-Length"]) == len(body)
    assert body.endswith(b"--\r\n") and not body.endswith(b"--\r\n\r\n")
    assert re.search(rb"(?<!\r)\n", body) is None, "every MIME line ends in CRLF"
    msg = email.message_from_bytes(b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + body,
                                   policy=email.policy.default)
    payloads = []
    for part in msg.iter_parts():
        assert part["Content-Transfer-Encoding"] == "base64"
        payloads.append((part.get_content_type(), part.get_payload(decode=True)))
    strict = kd.parse_multipart_mixed(ctype, body)  # the exact shape strict clients need, too
    assert [(t.split(";")[0], b) for t, b in strict] == payloads
    # RFC 7030 Appendix A.4: the key part first, then the certificate (some clients take part 1 as the key)
    assert [t for t, _ in strict][1:] == [CERTS_ONLY], [t for t, _ in strict]
    certs_in_der(strict[1][1])  # the certs-only PKCS#7 is DER
    parts = dict(strict)
    return parts


def openssl(*args: str, cwd: Path, input: bytes | None = None) -> bytes:
    proc = subprocess.run(["openssl", *args], cwd=cwd, input=input, capture_output=True, timeout=60)
    assert proc.returncode == 0, f"openssl {' '.join(args)}: {proc.stderr.decode(errors='replace')}"
    return proc.stdout


def certificate_of(parts: dict[str, bytes], cwd: Path) -> Path:
    """The certificate part exactly as /simpleenroll returns it, decoded by openssl."""
    (cwd / "cert.p7").write_bytes(parts[CERTS_ONLY])
    openssl("pkcs7", "-inform", "DER", "-in", "cert.p7", "-print_certs", "-out", "cert.pem", cwd=cwd)
    return cwd / "cert.pem"


def cert_pubkey(cwd: Path) -> bytes:
    return openssl("x509", "-in", "cert.pem", "-noout", "-pubkey", cwd=cwd)


def open_cms_with_openssl(srv: Server, parts: dict[str, bytes], cwd: Path, *decrypt_args: str) -> Path:
    """openssl cms -decrypt, then openssl cms -verify of the SignedData against /cacerts; the key as PKCS#8 DER."""
    (cwd / "key.p7").write_bytes(parts[SGK])
    openssl("cms", "-decrypt", "-binary", "-inform", "DER", "-in", "key.p7", "-out", "signed.der",
            *decrypt_args, cwd=cwd)
    # The EnvelopedData holds the SignedData itself (CMS nesting); openssl cms -verify reads a ContentInfo.
    (cwd / "signed-ci.der").write_bytes(kd.content_info(kd.ID_SIGNED_DATA, (cwd / "signed.der").read_bytes()))
    openssl("cms", "-verify", "-binary", "-inform", "DER", "-in", "signed-ci.der", "-CAfile", srv.ca_bundle,
            "-out", "package.der", cwd=cwd)
    (key_der,) = kd.read_asymmetric_key_package((cwd / "package.der").read_bytes())
    (cwd / "key.der").write_bytes(key_der)
    return cwd / "key.der"


def assert_key_matches_certificate(cwd: Path, key_der: Path) -> None:
    assert openssl("pkey", "-inform", "DER", "-in", key_der.name, "-pubout", cwd=cwd) == cert_pubkey(cwd)


def post(srv: Server, der: bytes, label: str | None = "keygen", **kwargs) -> requests.Response:
    return srv.post("serverkeygen", b64(der), label=label, **kwargs)


def otp_for(srv: Server, label: str | None = "keygen") -> tuple[str, str]:
    """A single-use OTP for one label (`post`'s default, keygen, unless told)."""
    entity = unique()
    return entity, srv.otp(entity, *(["--label", label] if label else []))


def assert_plain(r: requests.Response, status: int, text: str) -> None:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["Content-Type"].startswith("text/plain")
    assert text in r.text, r.text


def audit_lines(srv: Server, limit: int = 200) -> list[str]:
    return srv.cli("audit", "list", "--limit", str(limit)).stdout.splitlines()


# --- the reference page's example ----------------------------------------------------------------

PAGE_SERVERKEYGEN = """\
# Generate a throwaway CSR (the server will generate the real key pair)
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 \\
-keyout throwaway.key -out serverkeygen.csr -nodes \\
-subj "/CN=device-002.example.com"
# Base64-encode
openssl req -in serverkeygen.csr -outform DER | base64 > serverkeygen.csr.b64
# Request server-side key generation
curl -X POST \\
--cacert ca-chain.pem \\
-u "device-002:b8e4c1d5f2a7" \\
-H "Content-Type: application/pkcs10" \\
--data-binary @serverkeygen.csr.b64 \\
-o serverkeygen-response.mime \\
https://est.example.com:9443/.well-known/est/serverkeygen
"""


def test_reference_page_example_csr_key_delivery_opened_with_openssl(srv: Server, tmp_path: Path):
    entity, otp = otp_for(srv)
    shutil.copy(srv.ca_bundle, tmp_path / "ca-chain.pem")
    script = (PAGE_SERVERKEYGEN.replace("device-002", entity).replace("b8e4c1d5f2a7", otp)
              .replace("https://est.example.com:9443/.well-known/est/serverkeygen",
                       f"https://localhost:{srv.port}/.well-known/est/keygen/serverkeygen")
              .replace("curl -X POST", "curl -sS -D headers.txt -X POST"))
    proc = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    headers = (tmp_path / "headers.txt").read_text()
    assert headers.startswith("HTTP/1.1 200"), headers
    ctype = re.search(r"^content-type: (.*?)\r?$", headers, re.I | re.M).group(1)
    length = int(re.search(r"^content-length: (\d+)", headers, re.I | re.M).group(1))
    body = (tmp_path / "serverkeygen-response.mime").read_bytes()
    assert ctype.startswith("multipart/mixed; boundary=") and length == len(body)
    fake = requests.Response()
    fake.status_code, fake._content = 200, body
    fake.headers["Content-Type"], fake.headers["Content-Length"] = ctype, str(length)
    parts = split(fake)
    assert list(parts) == [SGK, CERTS_ONLY]
    certificate_of(parts, tmp_path)
    key_der = open_cms_with_openssl(srv, parts, tmp_path, "-inkey", "throwaway.key")
    assert_key_matches_certificate(tmp_path, key_der)
    cert = x509.load_pem_x509_certificate((tmp_path / "cert.pem").read_bytes())
    assert cert.subject.rfc4514_string() == f"CN={entity}.example.com"
    throwaway = openssl("pkey", "-in", "throwaway.key", "-pubout", cwd=tmp_path)
    assert throwaway != cert_pubkey(tmp_path), "the CSR's key is not the new key"
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey) and cert.public_key().curve.name == "secp256r1"
    # the chain of the certificate part verifies like a /simpleenroll answer
    openssl("verify", "-CAfile", "ca-chain.pem", "cert.pem", cwd=tmp_path)


# --- each delivery --------------------------------------------------------------------------------

def test_csr_key_delivery_to_an_rsa_csr_key_makes_an_rsa_2048_key(srv: Server, pool, tmp_path: Path):
    entity, otp = pool
    key, der = keygen_csr(f"{entity}.example.com", new_key("rsa2048"))
    write_identity(tmp_path, "throwaway", key, _self_signed(key, "unused"))
    parts = split(post(srv, der, auth=(entity, otp)))
    certificate_of(parts, tmp_path)
    key_der = open_cms_with_openssl(srv, parts, tmp_path, "-inkey", "throwaway.key")
    assert_key_matches_certificate(tmp_path, key_der)
    new = serialization.load_der_private_key(key_der.read_bytes(), None)
    assert isinstance(new, rsa.RSAPrivateKey) and new.key_size == 2048


def test_csr_key_type_not_offered_falls_back_to_the_labels_first_type(srv: Server, pool, tmp_path: Path):
    entity, otp = pool
    _, der = keygen_csr(f"{entity}.example.com", new_key("ec-p384"))
    cert = x509.load_der_x509_certificate(_cert_der(split(post(srv, der, auth=(entity, otp)))))
    assert cert.public_key().curve.name == "secp384r1"  # asked for and allowed
    entity, otp = pool
    _, der = keygen_csr(f"{entity}.example.com", new_key("rsa3072"))
    cert = x509.load_der_x509_certificate(_cert_der(split(post(srv, der, auth=(entity, otp)))))
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)  # rsa3072 not offered: ec-p256
    assert cert.public_key().curve.name == "secp256r1"


def _cert_der(parts: dict[str, bytes]) -> bytes:
    (cert,) = certs_in_der(parts[CERTS_ONLY])
    return cert.public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize("kind", ["rsa2048", "ec-p256"])
def test_asymmetric_delivery_to_the_mtls_certificate(srv: Server, pool, tmp_path: Path, kind: str):
    """AsymmetricDecryptKeyIdentifier = the client certificate's SKI: RSA key transport or ECDH."""
    entity, otp = pool
    device_key = new_key(kind)
    _, der = keygen_csr(f"{entity}.example.com", device_key)
    device = certs_from(srv.post("simpleenroll", b64(der), label="keygen", auth=(entity, otp)))[0]
    crt, key = write_identity(tmp_path, "device", device_key, device)
    ski = device.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    _, der = keygen_csr(f"{entity}.example.com", attributes=[
        (ASYMMETRIC_DECRYPT_KEY_ID, octet_string(ski)),
        (SMIME_CAPABILITIES, smime_capabilities("2.16.840.1.101.3.4.1.42", "1.2.840.113549.1.1.7"))])
    parts = split(post(srv, der, cert=(crt, key)))
    certificate_of(parts, tmp_path)
    key_der = open_cms_with_openssl(srv, parts, tmp_path, "-recip", "device.crt", "-inkey", "device.key")
    assert_key_matches_certificate(tmp_path, key_der)
    env = der_decoder.decode(kd.read_content_info(parts[SGK])[1], asn1Spec=rfc5652.EnvelopedData())[0]
    ri = env["recipientInfos"][0]
    assert ri.getName() == ("ktri" if kind.startswith("rsa") else "kari")
    if kind.startswith("rsa"):  # rid is the identifier the client sent (RFC 7030 4.4.2)
        assert bytes(ri["ktri"]["rid"]["subjectKeyIdentifier"]) == ski
        assert str(ri["ktri"]["keyEncryptionAlgorithm"]["algorithm"]) == "1.2.840.113549.1.1.7"


def test_smime_capabilities_with_only_rsa_encryption_gets_pkcs1_v15(srv: Server, pool, tmp_path: Path):
    entity, otp = pool
    device_key = new_key("rsa2048")
    _, der = keygen_csr(f"{entity}.example.com", device_key)
    device = certs_from(srv.post("simpleenroll", b64(der), label="keygen", auth=(entity, otp)))[0]
    crt, key = write_identity(tmp_path, "device", device_key, device)
    ski = device.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    _, der = keygen_csr(f"{entity}.example.com", attributes=[
        (ASYMMETRIC_DECRYPT_KEY_ID, octet_string(ski)),
        (SMIME_CAPABILITIES, smime_capabilities("2.16.840.1.101.3.4.1.2", "1.2.840.113549.1.1.1"))])
    parts = split(post(srv, der, cert=(crt, key)))
    env = der_decoder.decode(kd.read_content_info(parts[SGK])[1], asn1Spec=rfc5652.EnvelopedData())[0]
    assert str(env["recipientInfos"][0]["ktri"]["keyEncryptionAlgorithm"]["algorithm"]) == "1.2.840.113549.1.1.1"
    assert str(env["encryptedContentInfo"]["contentEncryptionAlgorithm"]["algorithm"]) == "2.16.840.1.101.3.4.1.2"
    certificate_of(parts, tmp_path)
    assert_key_matches_certificate(tmp_path, open_cms_with_openssl(srv, parts, tmp_path, "-recip", "device.crt",
                                                                   "-inkey", "device.key"))


def test_asymmetric_identifier_of_the_csr_key_is_the_csr_key_delivery(srv: Server, pool, tmp_path: Path):
    entity, otp = pool
    throwaway = new_key()
    kid = kd.key_identifier(throwaway.public_key())
    _, der = keygen_csr(f"{entity}.example.com", throwaway, [(ASYMMETRIC_DECRYPT_KEY_ID, octet_string(kid))])
    write_identity(tmp_path, "throwaway", throwaway, _self_signed(throwaway, "unused"))
    parts = split(post(srv, der, auth=(entity, otp)))
    certificate_of(parts, tmp_path)
    assert_key_matches_certificate(tmp_path, open_cms_with_openssl(srv, parts, tmp_path, "-inkey", "throwaway.key"))


def test_symmetric_delivery_with_a_pre_shared_kek(srv: Server, pool, tmp_path: Path):
    entity, otp = pool
    _, der = keygen_csr(f"{entity}.example.com", attributes=[(DECRYPT_KEY_ID, octet_string(KEK_ID))])
    parts = split(post(srv, der, auth=(entity, otp)))
    certificate_of(parts, tmp_path)
    key_der = open_cms_with_openssl(srv, parts, tmp_path, "-secretkey", KEK.hex(), "-secretkeyid", KEK_ID.hex())
    assert_key_matches_certificate(tmp_path, key_der)


def test_pkcs8_delivery_on_a_label_that_lists_only_pkcs8(srv: Server, pool, tmp_path: Path):
    entity, otp = pool
    _, der = keygen_csr(f"{entity}.example.com")
    parts = split(post(srv, der, label="keygen-pkcs8", auth=(entity, otp)))
    assert list(parts) == ["application/pkcs8", CERTS_ONLY]
    certificate_of(parts, tmp_path)
    (tmp_path / "key.der").write_bytes(parts["application/pkcs8"])
    assert_key_matches_certificate(tmp_path, tmp_path / "key.der")
    # PrivateKeyInfo, never PKCS#1 / SEC 1: openssl pkcs8 reads it as such
    pem = openssl("pkcs8", "-inform", "DER", "-in", "key.der", "-nocrypt", cwd=tmp_path)
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")


# --- escrow -----------------------------------------------------------------------------------------

def test_escrow_round_trip_with_kipuka_keys_recover(srv: Server, pool, tmp_path: Path):
    entity, otp = pool
    throwaway, der = keygen_csr(f"{entity}.example.com")
    write_identity(tmp_path, "throwaway", throwaway, _self_signed(throwaway, "unused"))
    parts = split(post(srv, der, label="keygen-escrow", auth=(entity, otp)))
    certificate_of(parts, tmp_path)
    delivered = open_cms_with_openssl(srv, parts, tmp_path, "-inkey", "throwaway.key").read_bytes()
    cert = x509.load_pem_x509_certificate((tmp_path / "cert.pem").read_bytes())
    serial = format(cert.serial_number, "x")
    escrow_key = srv.dir / "offline" / "escrow.key"
    out = srv.cli("keys", "recover", serial, "--escrow-key", str(escrow_key))
    recovered = serialization.load_pem_private_key(out.stdout.encode(), None)
    assert recovered.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()) == delivered
    (tmp_path / "recovered.pem").write_text(out.stdout)
    assert openssl("pkey", "-in", "recovered.pem", "-pubout", cwd=tmp_path) == cert_pubkey(tmp_path)
    # --out writes 0600
    srv.cli("keys", "recover", serial, "--escrow-key", str(escrow_key), "--out", str(tmp_path / "k.pem"))
    assert stat.S_IMODE(os.stat(tmp_path / "k.pem").st_mode) == 0o600
    # a wrong escrow key is refused (and audited)
    wrong = tmp_path / "wrong.key"
    wrong.write_bytes(rsa.generate_private_key(65537, 2048).private_bytes(
        PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    bad = srv.cli("keys", "recover", serial, "--escrow-key", str(wrong), check=False)
    assert bad.returncode == 1 and "cannot open the archive" in bad.stderr and not bad.stdout
    events = [line for line in audit_lines(srv) if serial in line]
    kinds = [(line.split("\t")[1], line.split("\t")[2]) for line in events]
    assert ("serverkeygen", "success") in kinds and ("key.escrow", "success") in kinds
    assert kinds.count(("key.recover", "success")) == 2 and ("key.recover", "rejected") in kinds


def _engine(srv: Server):
    import sqlalchemy

    from kipuka.config import load_config
    url = load_config(srv.config).database.url
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    return sqlalchemy.create_engine(url)


def test_no_key_is_delivered_when_escrow_fails(srv: Server):
    """The archive insert fails (table gone): 500, no certificate recorded, the OTP use not spent."""
    import sqlalchemy

    from kipuka.store import schema

    entity, otp = otp_for(srv, "keygen-escrow")
    _, der = keygen_csr(f"{entity}.example.com")
    engine = _engine(srv)
    try:
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text("DROP TABLE escrowed_keys"))
        r = post(srv, der, label="keygen-escrow", auth=(entity, otp))
        assert_plain(r, 500, "could not be archived")
        assert "no key or certificate was issued" in r.text
    finally:
        with engine.begin() as conn:
            schema.escrowed_keys.create(conn, checkfirst=True)
        engine.dispose()
    assert srv.cli("certs", "list", "--entity", entity).stdout.strip() == ""
    (line,) = srv.cli("otp", "list", "--entity", entity).stdout.splitlines()
    assert "\t1/1\t" in line and line.endswith("active")
    # with the archive back, the same OTP works
    parts = split(post(srv, der, label="keygen-escrow", auth=(entity, otp)))
    assert SGK in parts


# --- OTP semantics and errors ----------------------------------------------------------------------

def test_one_otp_gives_one_key_and_a_retry_is_refused(srv: Server):
    entity, otp = otp_for(srv)
    _, der = keygen_csr(f"{entity}.example.com")
    split(post(srv, der, auth=(entity, otp)))
    assert_plain(post(srv, der, auth=(entity, otp)), 401, "OTP already used")
    lines = [line for line in audit_lines(srv) if f"\t{entity}\t" in line]
    assert any("\tserverkeygen\tsuccess\t" in line and "delivery csr-key" in line for line in lines)
    assert any("\tserverkeygen\trejected\t" in line and "OTP already used" in line for line in lines)


def test_bad_authentication_is_401_with_a_challenge(srv: Server):
    entity, otp = otp_for(srv)
    _, der = keygen_csr(f"{entity}.example.com")
    r = post(srv, der, auth=(entity, "wrong-" + otp))
    assert_plain(r, 401, "invalid entity id or OTP")
    assert r.headers["WWW-Authenticate"] == 'Basic realm="est"'
    challenge = post(srv, der)  # no credential at all: the bare challenge, empty body (see test_wire)
    assert challenge.status_code == 401 and challenge.content == b""
    assert challenge.headers["WWW-Authenticate"] == 'Basic realm="est"'


@pytest.mark.parametrize("label", [None, "iot-fleet"])
def test_serverkeygen_off_is_404_with_a_reason(srv: Server, pool, label):
    entity, otp = pool
    _, der = keygen_csr(f"{entity}.example.com")
    assert_plain(post(srv, der, label=label, auth=(entity, otp)), 404, "serverkeygen) is not enabled")


def test_unknown_asymmetric_key_identifier_is_400(srv: Server, pool):
    entity, otp = pool
    _, der = keygen_csr(f"{entity}.example.com", attributes=[(ASYMMETRIC_DECRYPT_KEY_ID, octet_string(b"\x01" * 20))])
    assert_plain(post(srv, der, auth=(entity, otp)), 400, "names no key known to this server")


@pytest.mark.parametrize("kek_id", [b"no-such-kek", KEK_SCOPED_ID])
def test_unknown_or_foreign_kek_identifier_is_400(srv: Server, pool, kek_id: bytes):
    entity, otp = pool
    _, der = keygen_csr(f"{entity}.example.com", attributes=[(DECRYPT_KEY_ID, octet_string(kek_id))])
    assert_plain(post(srv, der, auth=(entity, otp)), 400, "names no pre-shared key")


def test_forbidden_delivery_is_400_never_a_downgrade(srv: Server):
    entity, otp = otp_for(srv, "keygen-pkcs8,keygen")  # a list of labels
    # the pkcs8-only label refuses a CSR that asks for symmetric encryption
    _, der = keygen_csr(f"{entity}.example.com", attributes=[(DECRYPT_KEY_ID, octet_string(KEK_ID))])
    assert_plain(post(srv, der, label="keygen-pkcs8", auth=(entity, otp)), 400,
                 "key delivery 'symmetric' is not allowed on this label")
    # ... and one that asks for the CSR key
    throwaway = new_key()
    _, der = keygen_csr(f"{entity}.example.com", throwaway,
                        [(ASYMMETRIC_DECRYPT_KEY_ID, octet_string(kd.key_identifier(throwaway.public_key())))])
    assert_plain(post(srv, der, label="keygen-pkcs8", auth=(entity, otp)), 400, "'csr-key' is not allowed")
    # both identifiers at once
    _, der = keygen_csr(f"{entity}.example.com", attributes=[(DECRYPT_KEY_ID, octet_string(KEK_ID)),
                                                              (ASYMMETRIC_DECRYPT_KEY_ID, octet_string(b"x"))])
    assert_plain(post(srv, der, auth=(entity, otp)), 400, "ask for one delivery")
    # none of it spent the OTP
    (line,) = srv.cli("otp", "list", "--entity", entity).stdout.splitlines()
    assert "\t1/1\t" in line


def test_approval_labels_refuse_serverkeygen_with_403(srv: Server, pool):
    entity, otp = pool
    _, der = keygen_csr(f"{entity}.example.com")
    assert_plain(post(srv, der, label="keygen-approval", auth=(entity, otp)), 403, "cannot wait for approval")


def test_keygen_pool_hands_out_distinct_keys(srv: Server, pool):
    """The server runs with [est] keygen_pool = 2: each pooled key goes out once."""
    entity, otp = pool
    seen = set()
    for _ in range(5):
        _, der = keygen_csr(f"{entity}.example.com")
        cert = x509.load_der_x509_certificate(_cert_der(split(post(srv, der, auth=(entity, otp)))))
        seen.add(cert.public_key().public_bytes(serialization.Encoding.DER, SPKI))
    assert len(seen) == 5
    assert b"PRIVATE KEY" not in srv.log.read_bytes()


# --- the documented openssl commands, as written in docs/est-endpoints.md -----------------------------

DOC = Path(__file__).resolve().parent.parent / "docs" / "est-endpoints.md"


def documented(marker: str) -> str:
    """The sh block of the serverkeygen section of docs/est-endpoints.md that contains `marker`."""
    text = DOC.read_text()
    section = text[text.index("## Server-side key generation"):]
    section = section[:section.index("\n## ", 5)]
    (block,) = [b for b in re.findall(r"```sh\n(.*?)```", section, re.S) if marker in b]
    return block


@pytest.mark.parametrize("delivery", ["csr-key", "asymmetric", "symmetric", "pkcs8"])
def test_documented_openssl_commands_open_every_form(srv: Server, pool, tmp_path: Path, delivery: str):
    entity, otp = pool
    shutil.copy(srv.ca_bundle, tmp_path / "ca-chain.pem")
    label, kwargs, attributes, key = "keygen", {"auth": (entity, otp)}, [], None
    if delivery == "csr-key":
        key = new_key()
        write_identity(tmp_path, "throwaway", key, _self_signed(key, "unused"))
    elif delivery == "asymmetric":
        device_key = new_key("rsa2048")
        _, der = keygen_csr(f"{entity}.example.com", device_key)
        device = certs_from(srv.post("simpleenroll", b64(der), label="keygen", auth=(entity, otp)))[0]
        kwargs = {"cert": write_identity(tmp_path, "current", device_key, device)}
        ski = device.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
        attributes = [(ASYMMETRIC_DECRYPT_KEY_ID, octet_string(ski))]
    elif delivery == "symmetric":
        attributes = [(DECRYPT_KEY_ID, octet_string(KEK_ID))]
    else:
        label = "keygen-pkcs8"
    _, der = keygen_csr(f"{entity}.example.com", key, attributes)
    r = post(srv, der, label=label, **kwargs)
    assert r.status_code == 200, r.text
    (tmp_path / "serverkeygen-response.mime").write_bytes(r.content)
    if delivery == "pkcs8":
        steps = [documented("key.p8 -out device.key")]
    else:
        pick = {"csr-key": "throwaway.key", "asymmetric": "-recip", "symmetric": "-secretkey"}[delivery]
        (line,) = [ln for ln in documented("openssl cms -decrypt").splitlines()
                   if pick in ln and not ln.startswith("#")]
        steps = [line.replace("KEK-HEX", KEK.hex()).replace("KEK-ID-HEX", KEK_ID.hex()),
                 documented("openssl cms -verify")]
    script = "\n".join([documented("email.message_from_bytes"), *steps, documented("diff <(")])
    proc = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("key matches")

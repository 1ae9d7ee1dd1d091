"""Stock EST clients work out of the box: the RFC-exact wire is the default (issue #15).

One server is the demo deployment exactly as `kipuka init` writes it, with only
`[est] serverkeygen = true` and `fullcmc = true` turned on, and corp-devices opting
into kipuka's csr-key delivery. Every test talks to it over real TLS:

1. /serverkeygen for a CSR that names no decryption key answers application/pkcs8
   (RFC 7030 §4.4.2), key part first (Appendix A.4), read by Bouncy Castle's EST
   client without a KEK, by `openssl pkey`, and by kipuka's own client;
2. every SignedData on the wire is DER (RFC 8951 §3, X.690 §11.6: SET OF sorted);
3. HEAD on every GET endpoint (RFC 9110 §9.3.2);
4. unpadded base64 bodies; re-enrollment names compared as RFC 5280 §7 compares them;
5. (the 401 of /simplereenroll without a Basic challenge is in tests/test_mtls.py);
6. `kipuka serve --admin-listen / --revocation-listen` and `scripts/demo.sh`'s ports.
"""

from __future__ import annotations

import base64
import http.client
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID
from pyasn1_modules import rfc5652, rfc7030

from kipuka import cmc
from kipuka import keydelivery as kd
from kipuka.client import CSR_KEY, PKCS8, CsrSpec, EstClient, generate_key
from kipuka.cmc import CMCStatus, CmsSigner
from tests import der_strict
from tests.helpers import (CERTS_ONLY, KIPUKA, Server, admin_call, b64, certs_from, certs_in_der, enroll_identity,
                           free_port, make_csr, make_server, new_key, public_url, spki, unique, write_identity)
from tests.test_serverkeygen import ASYMMETRIC_DECRYPT_KEY_ID, keygen_csr, octet_string

ROOT = Path(__file__).resolve().parent.parent
PKCS8_TYPE = "application/pkcs8"
SGK = "application/pkcs7-mime; smime-type=server-generated-key"
LABELS = ["", "iot-fleet"]  # the unlabeled path and a demo label, neither with serverkeygen_deliveries set
LABEL_IDS = ["unlabeled", "iot-fleet"]


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Server:
    s = make_server(tmp_path_factory.mktemp("stock"), replacements={
        r"^# serverkeygen = true.*$": "serverkeygen = true\nfullcmc = true",
        r"^\[labels\.corp-devices\]$": '[labels.corp-devices]\nserverkeygen_deliveries = ["pkcs8", "csr-key"]',
    }).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def pool(srv: Server) -> tuple[str, str]:
    """One many-use OTP for the tests that are not about OTPs."""
    entity = unique("stock")
    return entity, srv.otp(entity, "--uses", "1000", "--label", "any")  # every label


def _openssl(*args: str, cwd: Path) -> str:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"openssl {' '.join(args)}: {proc.stderr}"
    return proc.stdout


def _serverkeygen(srv: Server, pool, label: str, der: bytes) -> list[tuple[str, bytes]]:
    r = srv.post("serverkeygen", b64(der), label=label or None, auth=pool)
    assert r.status_code == 200, r.text
    return kd.parse_multipart_mixed(r.headers["Content-Type"], r.content)


# --- 1. /serverkeygen: application/pkcs8 by default, key part first ------------------------------

@pytest.mark.parametrize("label", LABELS, ids=LABEL_IDS)
def test_serverkeygen_without_a_key_identifier_sends_pkcs8_key_first(srv: Server, pool, label: str,
                                                                     tmp_path: Path):
    """RFC 7030 §4.4.2: no DecryptKeyIdentifier nor AsymmetricDecryptKeyIdentifier, so the key "MUST be
    placed in an application/pkcs8 part"; Appendix A.4 puts it first, the certificate second."""
    entity, _ = pool
    parts = _serverkeygen(srv, pool, label, make_csr(f"{entity}.example.com")[1])
    assert [t for t, _ in parts] == [PKCS8_TYPE, CERTS_ONLY]
    (tmp_path / "key.der").write_bytes(parts[0][1])
    (tmp_path / "cert.der").write_bytes(parts[1][1])
    pem = _openssl("pkey", "-inform", "DER", "-in", "key.der", cwd=tmp_path)  # a PrivateKeyInfo, unencrypted
    assert pem.startswith("-----BEGIN PRIVATE KEY-----")
    key_pub = _openssl("pkey", "-inform", "DER", "-in", "key.der", "-pubout", cwd=tmp_path)
    _openssl("pkcs7", "-inform", "DER", "-in", "cert.der", "-print_certs", "-out", "cert.pem", cwd=tmp_path)
    assert key_pub == _openssl("x509", "-in", "cert.pem", "-noout", "-pubkey", cwd=tmp_path)


@pytest.fixture(scope="module")
def bc(tmp_path_factory: pytest.TempPathFactory):
    from tests.interop.jvm import compile_or_skip
    from tests.test_serverkeygen_bc import EST_CLIENT

    return compile_or_skip(tmp_path_factory.mktemp("bc-stock"), {"BcServerKeygen": EST_CLIENT}).run


@pytest.mark.parametrize("label", LABELS, ids=LABEL_IDS)
def test_bouncy_castle_serverkeygen_without_a_kek_on_the_stock_deployment(srv: Server, pool, bc, label: str,
                                                                          tmp_path: Path):
    """ESTService.simpleEnrollWithServersideCreation, stock: no KEK, no label tuning on the server."""
    entity, otp = pool
    out = bc("BcServerKeygen", f"localhost:{srv.port}", label, srv.ca_bundle, entity, otp,
             f"{entity}.example.com", str(tmp_path / "key.der"), str(tmp_path / "cert.der"), "challenge")
    assert "key 1.2.840.10045.2.1" in out
    key = serialization.load_der_private_key((tmp_path / "key.der").read_bytes(), None)
    cert = x509.load_der_x509_certificate((tmp_path / "cert.der").read_bytes())
    assert spki(key.public_key()) == spki(cert.public_key())


def test_csr_key_is_an_opt_in_that_kipukas_client_asks_for_by_name(srv: Server, pool):
    """csr-key (EnvelopedData to the CSR's key) is kipuka's extension: only where a label lists it, and
    the bundled client asks for it with an AsymmetricDecryptKeyIdentifier naming the CSR's key."""
    entity, otp = pool

    def client(label: str | None) -> EstClient:
        return EstClient(f"https://localhost:{srv.port}", label, trust=srv.ca_bundle, auth=(entity, otp))

    with client(None) as c:
        plain = c.serverkeygen(CsrSpec.for_names(generate_key(), f"{entity}.example.com"))  # PKCS8 by default
        assert plain.key_media_type == PKCS8_TYPE and not plain.encrypted
        with pytest.raises(Exception, match="'csr-key' is not allowed"):
            c.serverkeygen(CsrSpec.for_names(generate_key(), f"{entity}.example.com"), delivery=CSR_KEY)
    with client("corp-devices") as c:  # serverkeygen_deliveries = ["pkcs8", "csr-key"]
        assert c.serverkeygen(CsrSpec.for_names(generate_key(), f"{entity}.example.com"),
                              delivery=PKCS8).key_media_type == PKCS8_TYPE
        encrypted = c.serverkeygen(CsrSpec.for_names(generate_key(), f"{entity}.example.com"), delivery=CSR_KEY)
        assert encrypted.encrypted and encrypted.signed and encrypted.key_media_type == SGK
    for result in (plain, encrypted):
        assert spki(result.private_key.public_key()) == spki(result.certificate.public_key())


def _asking_for_csr_key(cn: str) -> tuple[object, bytes]:
    """(throwaway key, CSR) whose AsymmetricDecryptKeyIdentifier names the CSR's own key: csr-key, asked for."""
    throwaway = new_key()
    kid = x509.SubjectKeyIdentifier.from_public_key(throwaway.public_key()).digest
    return keygen_csr(cn, throwaway, attributes=[(ASYMMETRIC_DECRYPT_KEY_ID, octet_string(kid))])


def _bad_signature(der: bytes) -> bytes:
    """The CSR with the last byte of its signature changed: it still parses, it no longer verifies."""
    bad = der[:-1] + bytes([der[-1] ^ 0x01])
    assert not x509.load_der_x509_csr(bad).is_signature_valid
    return bad


def test_serverkeygen_ignores_the_csr_key_and_signature_unless_it_encrypts_to_that_key(srv: Server, pool):
    """RFC 7030 §4.4.1: "the server MUST ignore the public key values and signature in the CSR". kipuka's
    csr-key delivery is the exception it documents: it encrypts to that key, so there it checks both."""
    entity, _ = pool
    small_rsa = new_key("rsa1024")  # below rsa_min_bits: a key /simpleenroll would refuse
    for der in (_bad_signature(make_csr(f"{entity}.example.com")[1]),
                make_csr(f"{entity}.example.com", small_rsa)[1]):
        parts = _serverkeygen(srv, pool, "", der)
        assert [t for t, _ in parts] == [PKCS8_TYPE, CERTS_ONLY]
        made = serialization.load_der_private_key(parts[0][1], None)
        assert spki(made.public_key()) == spki(certs_in_der(parts[1][1])[0].public_key())
    _, asked = _asking_for_csr_key(f"{entity}.example.com")
    r = srv.post("serverkeygen", b64(_bad_signature(asked)), label="corp-devices", auth=pool)
    assert r.status_code == 400 and "signature does not verify" in r.text


# --- 2. DER everywhere ------------------------------------------------------------------------------

@pytest.mark.parametrize("label", ["", "iot-fleet", "corp-devices"])
def test_cacerts_is_der_with_the_certificate_set_sorted(srv: Server, label: str):
    r = requests.get(srv.url("cacerts", label or None), verify=srv.ca_bundle, timeout=10)
    certs = certs_from(r)  # strict DER (tests/der_strict.py) and no BER warning from cryptography
    assert len(certs) == 2
    encodings = [c.public_bytes(serialization.Encoding.DER) for c in certs]
    assert encodings == sorted(encodings)


def test_simpleenroll_and_simplereenroll_answers_are_der(srv: Server, tmp_path: Path):
    crt, key, cert = enroll_identity(srv, tmp_path)  # certs_from checks /simpleenroll's bytes
    device_key = serialization.load_pem_private_key(Path(key).read_bytes(), None)
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    r = srv.post("simplereenroll", b64(make_csr(cn, device_key)[1]), cert=(crt, key))
    assert der_strict.certs_only(base64.b64decode(r.content)) == certs_from(r)


def test_fullcmc_response_is_der_down_to_its_pki_response(srv: Server):
    entity = unique()
    otp = srv.otp(entity)
    key = new_key()
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{entity}.example.com")]))
           .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
           .sign(key, hashes.SHA256()))
    builder = cmc.PKIDataBuilder()
    builder.transaction_id()
    builder.sender_nonce()
    body_part = builder.add_tcr(csr)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key()).digest
    message = builder.sign(CmsSigner(key, None, sid="subjectKeyIdentifier", ski=ski))
    r = srv.post("fullcmc", b64(message), auth=(entity, otp),
                 headers={"Content-Type": "application/pkcs7-mime; smime-type=CMC-request"})
    assert r.status_code == 200, r.content[:300]
    der = base64.b64decode(r.content)
    sd = der_strict.assert_der_signed_data(der, "Full PKI Response")
    certs = der_strict.signed_data_certificates(sd)
    assert len(certs) >= 2  # the issued certificate and the signer's: a set whose order DER fixes
    parsed = cmc.parse_pki_response(der)
    assert {i.body_list[0]: i.status for i in parsed.response.status_info_v2()}[body_part] == CMCStatus.success


def test_server_generated_key_package_is_der(srv: Server, pool):
    """The csr-key form (corp-devices opts in): EnvelopedData, and inside it the CA-signed SignedData."""
    entity, _ = pool
    throwaway, der = _asking_for_csr_key(f"{entity}.example.com")
    parts = dict(_serverkeygen(srv, pool, "corp-devices", der))
    der_strict.assert_der(parts[SGK], rfc5652.ContentInfo(), "server-generated-key ContentInfo")
    content_type, signed = kd.decrypt_enveloped(parts[SGK], private_key=throwaway)
    assert content_type == kd.ID_SIGNED_DATA
    sd = der_strict.assert_der_signed_data_content(signed, "key package SignedData")
    assert len(sd["signerInfos"][0]["signedAttrs"]) == 3  # a SET OF that DER sorts
    certs_in_der(parts[CERTS_ONLY])


def test_csrattrs_is_der(srv: Server):
    r = requests.get(srv.url("csrattrs"), verify=srv.ca_bundle, timeout=10)
    assert r.status_code == 200
    der_strict.assert_der(base64.b64decode(r.content), rfc7030.CsrAttrs(), "CsrAttrs")


# --- 3. HEAD ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("op", ["cacerts", "csrattrs"])
@pytest.mark.parametrize("label", ["", "iot-fleet"], ids=["unlabeled", "iot-fleet"])
def test_head_on_every_get_endpoint_has_the_gets_headers_and_no_body(srv: Server, op: str, label: str):
    """RFC 9110 §9.3.2: the same header fields as GET, no content; the connection stays in step."""
    path = f"/.well-known/est/{label + '/' if label else ''}{op}"
    ctx = ssl.create_default_context(cafile=srv.ca_bundle)
    conn = http.client.HTTPSConnection("localhost", srv.port, context=ctx, timeout=10)
    try:
        conn.request("GET", path)
        get = conn.getresponse()
        get_body = get.read()
        conn.request("HEAD", path)
        head = conn.getresponse()
        assert head.read() == b""
        conn.request("GET", path)  # on the same connection: HEAD left no stray bytes behind
        again = conn.getresponse()
        assert again.read() == get_body
    finally:
        conn.close()
    assert head.status == get.status == 200
    for name in ("Content-Type", "Content-Length", "Content-Transfer-Encoding"):
        assert head.getheader(name) == get.getheader(name), name
    assert int(head.getheader("Content-Length")) == len(get_body) > 0


def test_head_on_the_revocation_and_admin_listeners(srv: Server):
    for url, verify in ((public_url(srv, "/crl/default.crl"), True),
                        (f"https://localhost:{srv.admin_port}/admin/health/live", srv.ca_bundle)):
        get = requests.get(url, verify=verify, timeout=10)
        head = requests.head(url, verify=verify, timeout=10)
        assert head.status_code == get.status_code == 200 and head.content == b""
        assert head.headers["Content-Type"] == get.headers["Content-Type"]


# --- 4. leniency where real clients differ -------------------------------------------------------------

def test_unpadded_base64_request_body_is_accepted(srv: Server, pool):
    entity, _ = pool
    while True:  # a CSR whose base64 needs padding
        key, der = make_csr(f"{entity}.example.com")
        if len(der) % 3:
            break
    text = base64.b64encode(der).rstrip(b"=")
    assert len(text) % 4 in (2, 3)
    r = srv.post("simpleenroll", text, auth=pool)
    assert certs_from(r)[0].public_key() == key.public_key()
    r = srv.post("simpleenroll", text[:-1] if len(text) % 4 == 2 else text + b"A" * 2, auth=pool)
    assert r.status_code == 400 and "base64" in r.text  # a length no base64 can have stays an error


def _reenroll_names(srv: Server, tmp_path: Path, cn: str, sans: list[x509.GeneralName],
                    new_cn: str, new_sans: list[x509.GeneralName]) -> requests.Response:
    entity = cn.split(".")[0].lower()
    otp = srv.otp(entity)
    key, der = make_csr(cn, sans=sans)
    cert = certs_from(srv.post("simpleenroll", b64(der), auth=(entity, otp)))[0]
    crt, k = write_identity(tmp_path, entity, key, cert)
    return srv.post("simplereenroll", b64(make_csr(new_cn, key, sans=new_sans)[1]), cert=(crt, k))


def test_reenroll_matches_names_rfc5280_compares_without_case(srv: Server, tmp_path: Path):
    """CN (caseIgnoreMatch, spaces normalised), DNS names and an email's domain: RFC 5280 §7 ignores case."""
    entity = unique()
    r = _reenroll_names(
        srv, tmp_path, f"{entity}.example.com",
        [x509.DNSName(f"{entity}.example.com"), x509.RFC822Name(f"{entity}@example.com")],
        f"  {entity.upper()}.Example.COM ",
        [x509.RFC822Name(f"{entity}@EXAMPLE.com"), x509.DNSName(f"{entity.upper()}.EXAMPLE.com")])
    renewed = certs_from(r)[0]
    assert renewed.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == f"  {entity.upper()}.Example.COM "


def test_reenroll_keeps_the_email_local_part_case_sensitive(srv: Server, tmp_path: Path):
    entity = unique()
    r = _reenroll_names(srv, tmp_path, f"{entity}.example.com", [x509.RFC822Name(f"{entity}@example.com")],
                        f"{entity}.example.com", [x509.RFC822Name(f"{entity.upper()}@example.com")])
    assert r.status_code == 403 and "differs" in r.text


# --- 6. listeners: kipuka serve and scripts/demo.sh ----------------------------------------------------

def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return True
    return False


def test_serve_overrides_the_admin_and_revocation_listeners(tmp_path: Path):
    s = make_server(tmp_path)
    configured = (s.admin_port, s.public_port)
    s.admin_port, s.public_port = free_port(), free_port()
    s.start("--admin-listen", f"127.0.0.1:{s.admin_port}", "--revocation-listen", f"127.0.0.1:{s.public_port}")
    try:
        deadline = time.monotonic() + 30  # the EST port answers first; the others follow at once
        while _refused(s.public_port) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert admin_call(s, "GET", "/admin/health/live").json() == {"status": "ok"}
        crl = requests.get(public_url(s, "/crl/default.crl"), timeout=10)
        assert crl.status_code == 200
        assert x509.load_der_x509_crl(crl.content).issuer.rfc4514_string().startswith("CN=")
        assert all(_refused(port) for port in configured)
    finally:
        s.stop()
    bad = subprocess.run([*KIPUKA, "serve", "-c", str(s.config), "--admin-listen", "nowhere"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--admin-listen" in bad.stderr and "HOST:PORT" in bad.stderr


demo_ready = pytest.mark.skipif(not (ROOT / ".venv" / "bin" / "kipuka").exists() or not shutil.which("bash"),
                                reason="scripts/demo.sh runs the checkout's .venv (scripts/test.sh makes it)")


@demo_ready
def test_demo_script_takes_the_est_admin_and_revocation_ports(tmp_path: Path):
    est, admin, revocation = free_port(), free_port(), free_port()
    demo = tmp_path / "demo"
    proc = subprocess.Popen(["bash", str(ROOT / "scripts" / "demo.sh"), "--est-port", str(est),
                             "--admin-port", str(admin), str(demo)],
                            env={**os.environ, "REVOCATION_PORT": str(revocation)}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while any(_refused(p) for p in (est, admin, revocation)):
            assert proc.poll() is None, proc.stdout.read().decode(errors="replace")
            assert time.monotonic() < deadline, "demo.sh did not start its three listeners"
            time.sleep(0.2)
        root = str(demo / "ca" / "root.pem")  # the TLS certificate chains to the demo's root
        r = requests.get(f"https://localhost:{est}/.well-known/est/cacerts", verify=root, timeout=10)
        assert len(certs_from(r)) == 2
        r = requests.get(f"https://127.0.0.1:{admin}/admin/health/live", verify=root, timeout=10)
        assert r.json() == {"status": "ok"}
        assert requests.get(f"http://127.0.0.1:{revocation}/crl/default.crl", timeout=10).status_code == 200
        assert f'base_url = "http://localhost:{revocation}"' in (demo / "kipuka.toml").read_text()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        out = proc.communicate(timeout=60)[0].decode(errors="replace")
    assert f"https://localhost:{est}/.well-known/est/" in out and f"https://127.0.0.1:{admin}/" in out


@demo_ready
def test_demo_script_names_a_busy_port_and_how_to_choose_another(tmp_path: Path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        proc = subprocess.run(["bash", str(ROOT / "scripts" / "demo.sh"), str(tmp_path / "demo")],
                              env={**os.environ, "EST_PORT": str(port), "ADMIN_PORT": str(free_port()),
                                   "REVOCATION_PORT": str(free_port())},
                              capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert f"port {port} is already in use" in proc.stderr and "--est-port" in proc.stderr
    assert not (tmp_path / "demo").exists()  # nothing made

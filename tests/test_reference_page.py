"""The reference page's (EST Endpoints) curl and openssl commands, run as written.

The command blocks below are copied verbatim from the page. Only these are
substituted before they run in a scratch directory:

* `https://est.example.com:9443` -> the test server's `https://localhost:PORT`;
* `device-001` -> an entity id unique to the test (OTPs are single-use), so the
  CSR's `CN=device-001.example.com` becomes `CN=<entity>.example.com`;
* `a7f3b9c2d1e4` -> an OTP made with `kipuka otp create`;
* every `curl` also gets `-D headers.txt` (so the status line and the
  Content-Type can be checked); the very first `/cacerts` fetch is the
  bootstrap and gets `-k`, every later call trusts `--cacert ca-chain.pem` as
  the page does (the page's /cacerts examples carry no `--cacert`; after the
  bootstrap we add it, the whole point of the bootstrap being to stop using -k).

Whatever is checked about the results is checked with openssl too.
"""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from tests.helpers import CERTS_ONLY, Server, certs_in_der, unique

pytestmark = pytest.mark.skipif(not (shutil.which("curl") and shutil.which("openssl") and shutil.which("base64")),
                                reason="needs curl, openssl and base64")

CSRATTRS = "application/csrattrs"

# --- the page, verbatim ------------------------------------------------------------------

PAGE_CACERTS = """\
# Fetch the CA chain (no auth required)
curl -o cacerts.p7b \\
https://est.example.com:9443/.well-known/est/cacerts
# Decode the base64 PKCS#7 and view the certificates
base64 -d cacerts.p7b | openssl pkcs7 -inform DER -print_certs -noout
# Save decoded certificates to a PEM file
base64 -d cacerts.p7b | openssl pkcs7 -inform DER -print_certs -out ca-chain.pem
"""

PAGE_CACERTS_LABEL = """\
curl -o cacerts.p7b \\
https://est.example.com:9443/.well-known/est/iot-fleet/cacerts
"""

PAGE_KEY_AND_CSR = """\
# Generate a private key and CSR
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 \\
-keyout device.key -out device.csr -nodes \\
-subj "/CN=device-001.example.com"
# Base64-encode the CSR (DER format)
openssl req -in device.csr -outform DER | base64 > device.csr.b64
"""

PAGE_ENROLL_OTP = """\
# Enroll using OTP (entity-id:otp-value as HTTP Basic auth)
curl -X POST \\
--cacert ca-chain.pem \\
-u "device-001:a7f3b9c2d1e4" \\
-H "Content-Type: application/pkcs10" \\
--data-binary @device.csr.b64 \\
-o enrolled.p7b \\
https://est.example.com:9443/.well-known/est/simpleenroll
"""

PAGE_DECODE_ENROLLED = """\
# Decode the response to get the signed certificate
base64 -d enrolled.p7b | openssl pkcs7 -inform DER -print_certs -out device.crt
"""

PAGE_ENROLL_MTLS = """\
# Enroll using an existing client certificate for authentication
curl -X POST \\
--cacert ca-chain.pem \\
--cert existing-device.crt \\
--key existing-device.key \\
-H "Content-Type: application/pkcs10" \\
--data-binary @device.csr.b64 \\
-o enrolled.p7b \\
https://est.example.com:9443/.well-known/est/simpleenroll
"""

PAGE_ENROLL_LABEL = """\
curl -X POST \\
--cacert ca-chain.pem \\
-u "device-001:a7f3b9c2d1e4" \\
-H "Content-Type: application/pkcs10" \\
--data-binary @device.csr.b64 \\
-o enrolled.p7b \\
https://est.example.com:9443/.well-known/est/corp-devices/simpleenroll
"""

PAGE_REENROLL = """\
# Generate a new CSR using the existing key (or a new key for rekeying)
openssl req -new -key device.key -out renew.csr -nodes \\
-subj "/CN=device-001.example.com"
# Base64-encode the CSR
openssl req -in renew.csr -outform DER | base64 > renew.csr.b64
# Re-enroll using the current device certificate for mTLS auth
curl -X POST \\
--cacert ca-chain.pem \\
--cert device.crt \\
--key device.key \\
-H "Content-Type: application/pkcs10" \\
--data-binary @renew.csr.b64 \\
-o renewed.p7b \\
https://est.example.com:9443/.well-known/est/simplereenroll
# Decode the renewed certificate
base64 -d renewed.p7b | openssl pkcs7 -inform DER -print_certs -out device-renewed.crt
"""

PAGE_CSRATTRS = """\
# Fetch supported CSR attributes
curl --cacert ca-chain.pem \\
-o csrattrs.b64 \\
https://est.example.com:9443/.well-known/est/csrattrs
# Decode and inspect (requires ASN.1 tools)
base64 -d csrattrs.b64 | openssl asn1parse -inform DER
"""

PAGE_FAILED_OTP = """\
# A failed OTP enrollment returns 401
curl -v -X POST \\
--cacert ca-chain.pem \\
-u "device-001:wrong-otp-value" \\
-H "Content-Type: application/pkcs10" \\
--data-binary @device.csr.b64 \\
https://est.example.com:9443/.well-known/est/simpleenroll
"""


# --- running it ------------------------------------------------------------------------------

def adapt(text: str, server: Server, entity: str = "device-001", otp: str = "a7f3b9c2d1e4", *,
          bootstrap: bool = False, cacert: bool = False) -> str:
    text = text.replace("https://est.example.com:9443", f"https://localhost:{server.port}")
    text = text.replace("device-001", entity).replace("a7f3b9c2d1e4", otp)
    curl = "curl -k -D headers.txt " if bootstrap else "curl -D headers.txt "
    if cacert:
        curl += "--cacert ca-chain.pem "
    return re.sub(r"^curl ", curl, text, flags=re.M)


def sh(script: str, cwd: Path, *, check: bool = True) -> subprocess.CompletedProcess:
    """Run page commands with bash (pipefail: a failed `base64 -d` or curl is a failure)."""
    (cwd / "headers.txt").unlink(missing_ok=True)
    proc = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=cwd, capture_output=True,
                          text=True, timeout=60)
    if check and proc.returncode != 0:
        headers = (cwd / "headers.txt").read_text() if (cwd / "headers.txt").exists() else "(none)"
        pytest.fail(f"commands failed (exit {proc.returncode}):\n{script}\n--- stdout\n{proc.stdout}\n"
                    f"--- stderr\n{proc.stderr[-3000:]}\n--- response headers\n{headers}")
    return proc


def response_headers(cwd: Path) -> tuple[str, dict[str, str]]:
    """The status line and headers (names lower-cased) of the last response curl wrote with -D."""
    lines = (cwd / "headers.txt").read_text().replace("\r\n", "\n").strip().split("\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return lines[0].strip(), headers


def assert_ok(cwd: Path, content_type: str = CERTS_ONLY) -> None:
    status, headers = response_headers(cwd)
    assert status == "HTTP/1.1 200 OK", (status, headers)
    assert headers.get("content-type") == content_type, headers


def openssl(cwd: Path, *args: str) -> str:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
    return proc.stdout


def subject(cwd: Path, crt: str) -> str:
    return openssl(cwd, "x509", "-in", crt, "-noout", "-subject", "-nameopt", "RFC2253").strip()


def cert_pubkey(cwd: Path, crt: str) -> str:
    return openssl(cwd, "x509", "-in", crt, "-noout", "-pubkey")


def key_pubkey(cwd: Path, key: str) -> str:
    return openssl(cwd, "pkey", "-in", key, "-pubout")


def verify(cwd: Path, cafile: str, crt: str) -> subprocess.CompletedProcess:
    return subprocess.run(["openssl", "verify", "-CAfile", cafile, crt], cwd=cwd, capture_output=True,
                          text=True, timeout=30)


def pem_count(path: Path) -> int:
    return path.read_text().count("-----BEGIN CERTIFICATE-----")


def split_pem(path: Path, cwd: Path, stem: str) -> list[str]:
    """Write each certificate of a PEM bundle to its own file; returns their names in bundle order."""
    blocks = re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n", path.read_text(), re.S)
    names = []
    for i, block in enumerate(blocks):
        name = f"{stem}-{i}.pem"
        (cwd / name).write_text(block)
        names.append(name)
    return names


def cert_field(cwd: Path, crt: str, option: str) -> str:
    out = openssl(cwd, "x509", "-in", crt, "-noout", option, "-nameopt", "RFC2253").strip()
    return out.split("=", 1)[1] if "=" in out else out


@pytest.fixture
def work(server: Server, tmp_path: Path) -> Path:
    """A client directory after the bootstrap: cacerts.p7b and ca-chain.pem from the page's commands."""
    sh(adapt(PAGE_CACERTS, server, bootstrap=True), tmp_path)
    assert_ok(tmp_path)
    assert (tmp_path / "ca-chain.pem").exists()
    return tmp_path


def enroll_with_otp(server: Server, work: Path, entity: str, *, label: bool = False, bind: bool = False) -> None:
    """The page's OTP enrollment: key + CSR, curl -u (the label example: corp-devices), decode to device.crt."""
    otp = server.otp(entity, "--label", "corp-devices" if bind else "any")  # "any": an explicit choice
    sh(adapt(PAGE_KEY_AND_CSR, server, entity), work)
    sh(adapt(PAGE_ENROLL_LABEL if label else PAGE_ENROLL_OTP, server, entity, otp), work)
    assert_ok(work)
    sh(adapt(PAGE_DECODE_ENROLLED, server, entity), work)


def assert_device_cert(work: Path, entity: str, crt: str = "device.crt", key: str = "device.key",
                       cafile: str = "ca-chain.pem") -> None:
    assert pem_count(work / crt) == 1
    assert subject(work, crt) == f"subject=CN={entity}.example.com"
    assert cert_pubkey(work, crt) == key_pubkey(work, key)
    result = verify(work, cafile, crt)
    assert result.returncode == 0 and f"{crt}: OK" in result.stdout, (result.stdout, result.stderr)


# --- /cacerts ------------------------------------------------------------------------------

def chain_facts(work: Path, bundle: str, stem: str) -> list[tuple[str, str]]:
    """(subject, issuer) of each certificate of a bundle, in order; checks the bundle is issuing CA + root."""
    names = split_pem(work / bundle, work, stem)
    assert len(names) == 2, f"{bundle}: expected issuing CA + root, got {len(names)} certificates"
    facts = [(cert_field(work, n, "-subject"), cert_field(work, n, "-issuer")) for n in names]
    roots = [i for i, (s, iss) in enumerate(facts) if s == iss]
    assert len(roots) == 1, facts
    root, issuing = names[roots[0]], names[1 - roots[0]]
    # the issuing CA chains to the root, and both are CAs
    result = verify(work, root, issuing)
    assert result.returncode == 0, (result.stdout, result.stderr)
    for n in names:
        assert "CA:TRUE" in openssl(work, "x509", "-in", n, "-noout", "-ext", "basicConstraints")
    return facts


def issuing_ca(work: Path, bundle: str, stem: str) -> str:
    """The file name of the issuing (not self-signed) CA certificate of a bundle."""
    names = split_pem(work / bundle, work, stem)
    return next(n for n in names if cert_field(work, n, "-subject") != cert_field(work, n, "-issuer"))


def test_cacerts_bootstrap_gives_issuing_ca_and_root(server: Server, work: Path):
    # the page's `-print_certs -noout` view lists two certificates
    listing = sh(adapt("base64 -d cacerts.p7b | openssl pkcs7 -inform DER -print_certs -noout\n", server), work)
    assert listing.stdout.count("subject=") == 2, listing.stdout
    chain_facts(work, "ca-chain.pem", "default")
    # a second fetch now trusts the bootstrapped chain instead of -k
    sh(adapt(PAGE_CACERTS_LABEL.replace("/iot-fleet", ""), server, cacert=True), work)
    assert_ok(work)


@pytest.mark.parametrize("label", ["", "iot-fleet"], ids=["unlabeled", "iot-fleet"])
def test_cacerts_chain_from_issuing_ca_to_root_is_a_der_set(server: Server, work: Path, label: str):
    """The page: "containing the CA certificate chain in order from the issuing CA to the root".

    The chain is all there: the issuing CA and the root that signed it (RFC 7030 §4.1.3). A
    PKCS#7 certificate set has no order, and RFC 8951 §3 asks for DER, which sorts the SET OF
    by encoding (X.690 §11.6): so the bytes are DER, and the chain is built from names and
    signatures (as openssl does here), never from the position in the set.
    """
    sh(adapt(PAGE_CACERTS_LABEL.replace("/iot-fleet", f"/{label}" if label else ""), server, cacert=True), work)
    assert_ok(work)
    der = base64.b64decode((work / "cacerts.p7b").read_bytes())
    in_set = certs_in_der(der)  # strict DER, or this fails
    assert [c.public_bytes(serialization.Encoding.DER) for c in in_set] == \
        sorted(c.public_bytes(serialization.Encoding.DER) for c in in_set)
    sh("base64 -d cacerts.p7b | openssl pkcs7 -inform DER -print_certs -out chain.pem\n", work)
    facts = chain_facts(work, "chain.pem", "c")  # one root, one issuing CA that the root verifies
    (root_subject,) = [s for s, i in facts if s == i]
    (issuing_issuer,) = [i for s, i in facts if s != i]
    assert issuing_issuer == root_subject, facts


def test_cacerts_with_label_is_the_iot_fleet_ca(server: Server, work: Path):
    default_facts = chain_facts(work, "ca-chain.pem", "default")
    (work / "default-cacerts.p7b").write_bytes((work / "cacerts.p7b").read_bytes())
    sh(adapt(PAGE_CACERTS_LABEL, server, cacert=True), work)
    assert_ok(work)
    sh("base64 -d cacerts.p7b | openssl pkcs7 -inform DER -print_certs -out iot-chain.pem\n", work)
    iot_facts = chain_facts(work, "iot-chain.pem", "iot")
    default_issuing = next(s for s, i in default_facts if s != i)
    iot_issuing = next(s for s, i in iot_facts if s != i)
    assert iot_issuing != default_issuing
    # the CA `kipuka init` configured as [ca.iot-fleet]
    assert iot_issuing == cert_field(work, str(server.dir / "ca" / "iot-fleet.pem"), "-subject"), iot_issuing
    # same root, different issuing CA
    assert {s for s, i in iot_facts if s == i} == {s for s, i in default_facts if s == i}
    assert (work / "cacerts.p7b").read_bytes() != (work / "default-cacerts.p7b").read_bytes()


# --- /simpleenroll ---------------------------------------------------------------------------

def test_simpleenroll_with_otp(server: Server, work: Path):
    entity = unique()
    enroll_with_otp(server, work, entity)
    assert_device_cert(work, entity)
    # issued by the default CA: the issuing CA of ca-chain.pem
    issuing = issuing_ca(work, "ca-chain.pem", "chain")
    assert cert_field(work, "device.crt", "-issuer") == cert_field(work, issuing, "-subject")


def test_simpleenroll_with_mtls(server: Server, work: Path):
    entity = unique()
    enroll_with_otp(server, work, entity)
    shutil.copy(work / "device.crt", work / "existing-device.crt")
    shutil.copy(work / "device.key", work / "existing-device.key")
    # a new key and CSR for the same names, then the page's mTLS command
    sh(adapt(PAGE_KEY_AND_CSR, server, entity), work)
    sh(adapt(PAGE_ENROLL_MTLS, server, entity), work)
    assert_ok(work)
    sh(adapt(PAGE_DECODE_ENROLLED, server, entity), work)
    assert_device_cert(work, entity)
    assert cert_pubkey(work, "device.crt") != cert_pubkey(work, "existing-device.crt")
    assert cert_field(work, "device.crt", "-serial") != cert_field(work, "existing-device.crt", "-serial")


def corp_chain(server: Server, work: Path) -> None:
    sh(adapt(PAGE_CACERTS_LABEL.replace("iot-fleet", "corp-devices"), server, cacert=True), work)
    assert_ok(work)
    sh("base64 -d cacerts.p7b | openssl pkcs7 -inform DER -print_certs -out corp-chain.pem\n", work)


@pytest.mark.parametrize("bound", [True, False], ids=["otp-bound-to-label", "otp-for-any-label"])
def test_simpleenroll_with_label(server: Server, work: Path, bound: bool):
    entity = unique()
    enroll_with_otp(server, work, entity, label=True, bind=bound)
    corp_chain(server, work)
    assert_device_cert(work, entity, cafile="corp-chain.pem")
    corp_issuing = issuing_ca(work, "corp-chain.pem", "corp")
    assert cert_field(work, "device.crt", "-issuer") == cert_field(work, corp_issuing, "-subject")
    # not the default CA's certificate
    assert verify(work, "ca-chain.pem", "device.crt").returncode != 0
    # corp-devices' profile: clientAuth and serverAuth
    eku = openssl(work, "x509", "-in", "device.crt", "-noout", "-ext", "extendedKeyUsage")
    assert "TLS Web Client Authentication" in eku and "TLS Web Server Authentication" in eku, eku


def test_otp_bound_to_label_is_refused_elsewhere(server: Server, work: Path):
    entity = unique()
    otp = server.otp(entity, "--label", "corp-devices")
    sh(adapt(PAGE_KEY_AND_CSR, server, entity), work)
    sh(adapt(PAGE_ENROLL_OTP, server, entity, otp), work)  # unlabeled path
    status, headers = response_headers(work)
    assert status == "HTTP/1.1 401 Unauthorized", (status, headers)
    # the OTP is still good where it belongs
    sh(adapt(PAGE_ENROLL_LABEL, server, entity, otp), work)
    assert_ok(work)


# --- /simplereenroll -------------------------------------------------------------------------

def test_simplereenroll_with_existing_key(server: Server, work: Path):
    entity = unique()
    enroll_with_otp(server, work, entity)
    sh(adapt(PAGE_REENROLL, server, entity), work)
    assert_ok(work)
    assert_device_cert(work, entity, crt="device-renewed.crt")
    assert cert_pubkey(work, "device-renewed.crt") == cert_pubkey(work, "device.crt")
    assert cert_field(work, "device-renewed.crt", "-serial") != cert_field(work, "device.crt", "-serial")
    assert cert_field(work, "device-renewed.crt", "-issuer") == cert_field(work, "device.crt", "-issuer")


# --- /csrattrs -------------------------------------------------------------------------------

def test_csrattrs(server: Server, work: Path):
    out = sh(adapt(PAGE_CSRATTRS, server), work).stdout
    assert_ok(work, CSRATTRS)
    assert "id-ecPublicKey" in out and "prime256v1" in out, out


# --- the 401 example -------------------------------------------------------------------------

def test_failed_otp_gives_401_with_basic_challenge(server: Server, work: Path):
    entity = unique()
    otp = server.otp(entity)  # the entity has an OTP; the client sends the wrong one
    sh(adapt(PAGE_KEY_AND_CSR, server, entity), work)
    proc = sh(adapt(PAGE_FAILED_OTP, server, entity), work)
    assert "< HTTP/1.1 401 Unauthorized" in proc.stderr, proc.stderr[-3000:]
    assert '< WWW-Authenticate: Basic realm="est"' in proc.stderr, proc.stderr[-3000:]
    # a wrong guess does not burn the real OTP
    sh(adapt(PAGE_ENROLL_OTP, server, entity, otp), work)
    assert_ok(work)
    sh(adapt(PAGE_DECODE_ENROLLED, server, entity), work)
    assert_device_cert(work, entity)

"""curl + openssl for the operations and labels tests/test_reference_page.py leaves out.

test_reference_page.py runs the reference page's commands for /cacerts (with and without
a label), /simpleenroll (OTP, mTLS, label), /simplereenroll and /csrattrs on the unlabeled
path; test_serverkeygen.py runs its /serverkeygen example on a label. Here, with the same
page commands and the same substitutions:

* /csrattrs with a label;
* /simplereenroll with a label (and the label's CA is checked: another label refuses it);
* /serverkeygen on the unlabeled path (this server delivers application/pkcs8 there);
* /fullcmc with and without a label: a holder's renewal signed by `openssl cms -sign`,
  posted with the page's curl command, its answer verified by `openssl cms -verify`.

Nothing of kipuka's own code parses what comes back: openssl does, and Python's email
package splits the multipart answer.
"""

from __future__ import annotations

import email
import email.policy
import os
import re
import shutil
from pathlib import Path

import pytest

from tests.helpers import CERTS_ONLY, Server, unique
from tests.interop.der import CMC_RESPONSE, ID_CCT_PKI_DATA, pki_data
from tests.test_reference_page import (PAGE_CACERTS, PAGE_CSRATTRS, PAGE_DECODE_ENROLLED, PAGE_ENROLL_LABEL,
                                       PAGE_ENROLL_OTP, PAGE_KEY_AND_CSR, PAGE_REENROLL, adapt, assert_ok, cert_field,
                                       cert_pubkey, key_pubkey, openssl, response_headers, sh, split_pem, subject,
                                       verify)
from tests.test_serverkeygen import PAGE_SERVERKEYGEN

pytestmark = pytest.mark.skipif(not (shutil.which("curl") and shutil.which("openssl") and shutil.which("base64")),
                                reason="needs curl, openssl and base64")

# The page's /fullcmc example, verbatim.
PAGE_FULLCMC = """\
curl -X POST \\
--cacert ca-chain.pem \\
--cert ra-agent.crt \\
--key ra-agent.key \\
-H "Content-Type: application/pkcs7-mime; smime-type=CMC-request" \\
--data-binary @cmc-request.b64 \\
-o cmc-response.p7b \\
https://est.example.com:9443/.well-known/est/fullcmc
# Decode the CMC response
base64 -d cmc-response.p7b | openssl cms -inform DER -cmsout -print
"""


def with_label(text: str, op: str, label: str) -> str:
    return text.replace(f"/.well-known/est/{op}", f"/.well-known/est/{label}/{op}") if label else text


@pytest.fixture
def work(interop_server: Server, tmp_path: Path) -> Path:
    """A client directory after the page's bootstrap: ca-chain.pem from /cacerts."""
    sh(adapt(PAGE_CACERTS, interop_server, bootstrap=True), tmp_path)
    assert_ok(tmp_path)
    return tmp_path


def label_chain(server: Server, work: Path, label: str) -> str:
    """The label's /cacerts decoded to PEM (issuing CA + root), as the page decodes it."""
    sh(adapt(with_label("curl -o cacerts.p7b \\\nhttps://est.example.com:9443/.well-known/est/cacerts\n",
                        "cacerts", label), server, cacert=True), work)
    assert_ok(work)
    name = f"{label or 'default'}-chain.pem"
    sh(f"base64 -d cacerts.p7b | openssl pkcs7 -inform DER -print_certs -out {name}\n", work)
    return name


def enroll(server: Server, work: Path, entity: str, label: str) -> None:
    """The page's key + CSR and OTP enrollment (on `label`), decoded to device.crt."""
    otp = server.otp(entity, *(["--label", label] if label else []))
    sh(adapt(PAGE_KEY_AND_CSR, server, entity), work)
    page = PAGE_ENROLL_LABEL.replace("corp-devices", label) if label else PAGE_ENROLL_OTP
    sh(adapt(page, server, entity, otp), work)
    assert_ok(work)
    sh(adapt(PAGE_DECODE_ENROLLED, server, entity), work)


def issuing_subject(work: Path, chain: str) -> str:
    names = split_pem(work / chain, work, chain.removesuffix(".pem"))
    return next(cert_field(work, n, "-subject") for n in names
                if cert_field(work, n, "-subject") != cert_field(work, n, "-issuer"))


# --- /csrattrs with a label ------------------------------------------------------------------------

def test_csrattrs_with_label(interop_server: Server, work: Path):
    """iot-fleet accepts EC keys only: its /csrattrs lists no rsaEncryption, the unlabeled path's does."""
    labelled = sh(adapt(with_label(PAGE_CSRATTRS, "csrattrs", "iot-fleet"), interop_server), work).stdout
    assert_ok(work, "application/csrattrs")
    assert "id-ecPublicKey" in labelled and "prime256v1" in labelled and "secp384r1" in labelled, labelled
    assert "rsaEncryption" not in labelled, labelled
    unlabeled = sh(adapt(PAGE_CSRATTRS, interop_server), work).stdout
    assert "rsaEncryption" in unlabeled, unlabeled


# --- /simplereenroll with a label ------------------------------------------------------------------

def test_simplereenroll_with_label(interop_server: Server, work: Path):
    entity = unique()
    enroll(interop_server, work, entity, "corp-devices")
    chain = label_chain(interop_server, work, "corp-devices")
    sh(adapt(with_label(PAGE_REENROLL, "simplereenroll", "corp-devices"), interop_server, entity), work)
    assert_ok(work)
    assert subject(work, "device-renewed.crt") == f"subject=CN={entity}.example.com"
    assert cert_pubkey(work, "device-renewed.crt") == key_pubkey(work, "device.key")
    assert cert_field(work, "device-renewed.crt", "-serial") != cert_field(work, "device.crt", "-serial")
    assert cert_field(work, "device-renewed.crt", "-issuer") == issuing_subject(work, chain)
    result = verify(work, chain, "device-renewed.crt")
    assert result.returncode == 0, result.stderr
    # corp-devices' profile (clientAuth and serverAuth) again
    eku = openssl(work, "x509", "-in", "device-renewed.crt", "-noout", "-ext", "extendedKeyUsage")
    assert "TLS Web Server Authentication" in eku, eku
    # the unlabeled path's CA did not issue it: re-enrolling there is refused
    sh(adapt(PAGE_REENROLL, interop_server, entity), work, check=False)
    status, _ = response_headers(work)
    assert status == "HTTP/1.1 403 Forbidden", status


# --- /serverkeygen without a label -----------------------------------------------------------------

def split_multipart(headers: dict[str, str], body: bytes) -> list[tuple[str, dict[str, str], bytes]]:
    """(content type, headers, decoded payload) of each part, by Python's email package."""
    # compat32 keeps each header as sent (the default policy would re-quote parameters)
    msg = email.message_from_bytes(f"Content-Type: {headers['content-type']}\r\n\r\n".encode() + body,
                                   policy=email.policy.compat32)
    assert msg.is_multipart(), headers
    return [(p.get_content_type(), dict(p.items()), p.get_payload(decode=True)) for p in msg.get_payload()]


def test_serverkeygen_without_label(interop_server: Server, work: Path):
    entity = unique("device")
    otp = interop_server.otp(entity)
    script = (adapt(PAGE_SERVERKEYGEN.replace("device-002", entity).replace("b8e4c1d5f2a7", otp), interop_server))
    sh(script, work)
    status, headers = response_headers(work)
    assert status == "HTTP/1.1 200 OK", (status, headers)
    assert headers["content-type"].startswith("multipart/mixed; boundary="), headers
    body = (work / "serverkeygen-response.mime").read_bytes()
    assert int(headers["content-length"]) == len(body)
    parts = split_multipart(headers, body)
    # RFC 7030 Appendix A.4: the key part first, then the certificate
    assert [(t, h.get("Content-Transfer-Encoding")) for t, h, _ in parts] == \
        [("application/pkcs8", "base64"), ("application/pkcs7-mime", "base64")], parts
    assert parts[1][1]["Content-Type"] == CERTS_ONLY
    (work / "key.der").write_bytes(parts[0][2])
    (work / "cert.p7").write_bytes(parts[1][2])
    openssl(work, "pkcs7", "-inform", "DER", "-in", "cert.p7", "-print_certs", "-out", "keygen.crt")
    # an unencrypted PrivateKeyInfo, whose public half is the certified key
    assert openssl(work, "pkcs8", "-inform", "DER", "-in", "key.der", "-nocrypt").startswith("-----BEGIN PRIVATE KEY")
    assert openssl(work, "pkey", "-inform", "DER", "-in", "key.der", "-pubout") == cert_pubkey(work, "keygen.crt")
    assert cert_pubkey(work, "keygen.crt") != key_pubkey(work, "throwaway.key")
    assert subject(work, "keygen.crt") == f"subject=CN={entity}.example.com"
    result = verify(work, "ca-chain.pem", "keygen.crt")
    assert result.returncode == 0, result.stderr


# --- /fullcmc with openssl cms ---------------------------------------------------------------------

@pytest.mark.parametrize("label", ["", "iot-fleet"], ids=["unlabeled", "iot-fleet"])
def test_fullcmc_holder_renewal_signed_by_openssl_cms(interop_server: Server, work: Path, label: str):
    entity = unique()
    enroll(interop_server, work, entity, label)
    chain = label_chain(interop_server, work, label)
    # renewal request: a CSR for the same name from openssl, PKIData around it, signed by the holder
    sh(f'openssl req -new -key device.key -subj "/CN={entity}.example.com" -outform DER -out renew.der\n', work)
    txid, nonce = int.from_bytes(os.urandom(7), "big") >> 2 | 1 << 54, os.urandom(16)  # 14 hex digits
    (work / "pkidata.der").write_bytes(pki_data((work / "renew.der").read_bytes(), txid, nonce))
    sh(f"openssl cms -sign -in pkidata.der -binary -nodetach -signer device.crt -inkey device.key "
       f"-econtent_type {ID_CCT_PKI_DATA} -outform DER -out cmc-request.der\n"
       "base64 cmc-request.der > cmc-request.b64\n", work)
    # the page's command; the holder's certificate stands in for the RA agent's
    page = with_label(PAGE_FULLCMC, "fullcmc", label).replace("ra-agent.", "device.")
    printed = sh(adapt(page, interop_server, entity), work).stdout
    assert_ok(work, CMC_RESPONSE)
    assert "eContentType: id-cct-PKIResponse" in printed, printed[:2000]
    # the response verifies against the label's chain; the certificates it carries include the new one
    sh(f"base64 -d cmc-response.p7b > cmc-response.der\n"
       f"openssl cms -verify -inform DER -in cmc-response.der -CAfile {chain} -purpose any -binary "
       f"-out pkiresponse.der -certsout response-certs.pem\n", work)
    names = split_pem(work / "response-certs.pem", work, "resp")
    renewed = [n for n in names if cert_pubkey(work, n) == key_pubkey(work, "device.key")
               and cert_field(work, n, "-serial") != cert_field(work, "device.crt", "-serial")]
    assert len(renewed) == 1, names
    assert subject(work, renewed[0]) == f"subject=CN={entity}.example.com"
    assert cert_field(work, renewed[0], "-issuer") == issuing_subject(work, chain)
    result = verify(work, chain, renewed[0])
    assert result.returncode == 0, result.stderr
    # the PKIResponse, as openssl asn1parse shows it: one statusInfoV2, success (cMCStatus 0) for
    # body part 3; our transactionId echoed and our senderNonce returned as recipientNonce
    parsed = openssl(work, "asn1parse", "-inform", "DER", "-in", "pkiresponse.der")
    assert parsed.count(":1.3.6.1.5.5.7.7.25\n") == 1, parsed
    assert re.search(r"OBJECT +:1\.3\.6\.1\.5\.5\.7\.7\.25\n.*SET *\n.*SEQUENCE *\n.*INTEGER +:00\n"
                     r".*SEQUENCE *\n.*INTEGER +:03\n", parsed), parsed
    assert re.search(rf"OBJECT +:id-cmc-transactionId\n.*SET *\n.*INTEGER +:{txid:X}\n", parsed), parsed
    assert re.search(rf"OBJECT +:id-cmc-recipientNonce\n.*SET *\n.*OCTET STRING +\[HEX DUMP\]:{nonce.hex().upper()}\n",
                     parsed), parsed

"""Post-quantum certificates (issue #18): ML-DSA (FIPS 204) keys and CAs, end to end over TLS.

The server is `kipuka init --pq`: label pq has an ML-DSA-65 root and issuing CA, pq-mixed an
ML-DSA-65 issuing CA under the deployment's ECDSA root. Every signature kipuka makes is
checked here with pyca/cryptography's own ML-DSA (its bundled OpenSSL), an implementation
independent of the code under test; the machine's `openssl` (3.0) has no ML-DSA.
"""

from __future__ import annotations

import base64

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import SignatureAlgorithmOID
from pyasn1.codec.der import decoder
from pyasn1_modules import rfc7030

from kipuka import pq
from tests.helpers import (admin_call, admin_token, b64, certs_from, make_csr, make_server, new_key, public_url,
                           unique)

ML_DSA_65 = SignatureAlgorithmOID.ML_DSA_65


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    server = make_server(tmp_path_factory.mktemp("pq"), init_args=("--pq",)).start()
    server.token = admin_token(server)
    yield server
    server.stop()


def _enroll(srv, label: str, key_kind: str, entity: str | None = None) -> tuple[object, x509.Certificate, list]:
    entity = entity or unique()
    otp = srv.otp(entity, "--label", label)
    key, der = make_csr(f"{entity}.example.com", new_key(key_kind))
    r = srv.post("simpleenroll", b64(der), label=label, auth=(entity, otp))
    return key, certs_from(r)[0], r


def _cacerts(srv, label: str) -> list[x509.Certificate]:
    return certs_from(srv.get("cacerts", label=label))


def _chain_verifies(leaf: x509.Certificate, chain: list[x509.Certificate]) -> None:
    """Each certificate directly issued by the next one up, ending at a self-signed root."""
    by_subject = {c.subject: c for c in chain}
    cert = leaf
    for _ in range(4):
        issuer = by_subject[cert.issuer]
        cert.verify_directly_issued_by(issuer)  # raises on a bad signature
        if issuer.issuer == issuer.subject:
            issuer.verify_directly_issued_by(issuer)
            return
        cert = issuer
    raise AssertionError("no root reached")


# --- enrollment ---------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["ml-dsa-44", "ml-dsa-65", "ml-dsa-87"])
def test_simpleenroll_accepts_an_ml_dsa_csr_on_the_pq_label(srv, kind):
    key, cert, _ = _enroll(srv, "pq", kind)
    assert pq.key_type(cert.public_key()) == kind
    assert cert.public_key() == key.public_key()
    assert cert.signature_algorithm_oid == ML_DSA_65  # the pq CA's key is ML-DSA-65
    _chain_verifies(cert, _cacerts(srv, "pq"))


def test_ml_dsa_certificate_follows_rfc9881(srv):
    _, cert, _ = _enroll(srv, "pq", "ml-dsa-65")
    der = cert.public_bytes(serialization.Encoding.DER)
    # AlgorithmIdentifier { id-ml-dsa-65 } with no parameters: 30 0b 06 09 60 86 48 01 65 03 04 03 12
    alg = bytes.fromhex("300b0609608648016503040312")
    assert der.count(alg) == 3  # tbs signature, SubjectPublicKeyInfo, outer signatureAlgorithm
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_encipherment and not usage.key_agreement
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_ec_device_key_under_an_ml_dsa_ca(srv):
    _, cert, _ = _enroll(srv, "pq", "ec-p256")
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.signature_algorithm_oid == ML_DSA_65
    _chain_verifies(cert, _cacerts(srv, "pq"))


def test_mixed_chain_ml_dsa_issuing_ca_under_an_ecdsa_root(srv):
    key, cert, _ = _enroll(srv, "pq-mixed", "ml-dsa-65")
    chain = _cacerts(srv, "pq-mixed")
    root = next(c for c in chain if c.issuer == c.subject)
    issuing = next(c for c in chain if c.issuer != c.subject)
    assert isinstance(root.public_key(), ec.EllipticCurvePublicKey)
    assert issuing.signature_algorithm_oid == SignatureAlgorithmOID.ECDSA_WITH_SHA256
    assert pq.key_type(issuing.public_key()) == "ml-dsa-65"
    assert cert.signature_algorithm_oid == ML_DSA_65
    _chain_verifies(cert, chain)


def test_ml_dsa_key_refused_where_the_policy_does_not_list_it(srv):
    entity = unique()
    otp = srv.otp(entity)
    _, der = make_csr(f"{entity}.example.com", new_key("ml-dsa-65"))
    r = srv.post("simpleenroll", b64(der), auth=(entity, otp))
    assert r.status_code == 400 and "key type ml-dsa-65 is not allowed" in r.text


def test_ml_dsa_csr_with_a_bad_signature_is_refused(srv):
    entity = unique()
    otp = srv.otp(entity, "--label", "pq")
    _, der = make_csr(f"{entity}.example.com", new_key("ml-dsa-65"))
    tampered = der[:-40] + bytes(b ^ 0xFF for b in der[-40:])  # inside the signature BIT STRING
    r = srv.post("simpleenroll", b64(tampered), label="pq", auth=(entity, otp))
    assert r.status_code == 400 and "proof of possession" in r.text


def test_csrattrs_advertises_the_ml_dsa_oids(srv):
    r = srv.get("csrattrs", label="pq")
    assert r.status_code == 200
    attrs, _ = decoder.decode(base64.b64decode(r.content), asn1Spec=rfc7030.CsrAttrs())
    oids = [str(item["oid"]) for item in attrs if item.getName() == "oid"]
    assert pq.ID_ML_DSA_65 in oids and pq.ID_ML_DSA_44 in oids and pq.ID_ML_DSA_87 in oids
    assert oids.index(pq.ID_ML_DSA_65) < oids.index(pq.ID_ML_DSA_44)  # in the policy's order


# --- revocation -------------------------------------------------------------------------------

def _revoke(srv, cert, reason="keyCompromise"):
    r = admin_call(srv, "POST", f"/admin/certs/{cert.serial_number:x}/revoke", srv.token, json_body={"reason": reason})
    assert r.status_code == 200, r.text


def test_crl_of_an_ml_dsa_ca_is_signed_with_ml_dsa(srv):
    _, cert, _ = _enroll(srv, "pq", "ml-dsa-65")
    _revoke(srv, cert)
    r = requests.get(public_url(srv, "/crl/pq.crl"), timeout=10)
    assert r.status_code == 200
    crl = x509.load_der_x509_crl(r.content)
    issuing = next(c for c in _cacerts(srv, "pq") if c.subject == cert.issuer)
    assert crl.signature_algorithm_oid == ML_DSA_65
    assert crl.is_signature_valid(issuing.public_key())
    entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == x509.ReasonFlags.key_compromise


def _ocsp(srv, cert: x509.Certificate, issuer: x509.Certificate, ca: str) -> ocsp.OCSPResponse:
    req = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA256()).build()
    r = requests.post(public_url(srv, f"/ocsp/{ca}"), data=req.public_bytes(serialization.Encoding.DER),
                      headers={"Content-Type": "application/ocsp-request"}, timeout=10)
    assert r.status_code == 200
    resp = ocsp.load_der_ocsp_response(r.content)
    assert resp.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
    assert resp.signature_algorithm_oid == ML_DSA_65
    issuer.public_key().verify(resp.signature, resp.tbs_response_bytes)  # pure ML-DSA over the DER tbs
    return resp


def test_ocsp_answers_of_an_ml_dsa_ca_are_signed_with_ml_dsa(srv):
    _, good, _ = _enroll(srv, "pq", "ml-dsa-87")
    _, bad, _ = _enroll(srv, "pq", "ec-p256")
    _revoke(srv, bad, "superseded")
    issuing = next(c for c in _cacerts(srv, "pq") if c.subject == good.issuer)
    assert _ocsp(srv, good, issuing, "pq").certificate_status == ocsp.OCSPCertStatus.GOOD
    answer = _ocsp(srv, bad, issuing, "pq")
    assert answer.certificate_status == ocsp.OCSPCertStatus.REVOKED
    assert answer.revocation_reason == x509.ReasonFlags.superseded


def test_ocsp_and_crl_of_the_mixed_label(srv):
    _, cert, _ = _enroll(srv, "pq-mixed", "ec-p384")
    issuing = next(c for c in _cacerts(srv, "pq-mixed") if c.subject == cert.issuer)
    assert _ocsp(srv, cert, issuing, "pq-mixed").certificate_status == ocsp.OCSPCertStatus.GOOD
    crl = x509.load_der_x509_crl(requests.get(public_url(srv, "/crl/pq-mixed.crl"), timeout=10).content)
    assert crl.is_signature_valid(issuing.public_key())

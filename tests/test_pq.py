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
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509 import ocsp
from cryptography.x509.oid import SignatureAlgorithmOID
from pyasn1.codec.der import decoder
from pyasn1_modules import rfc7030

from kipuka import pq
from tests.softhsm import softhsm  # noqa: F401  (fixture)
from tests.helpers import (admin_call, admin_token, b64, certs_from, make_csr, make_server, new_key, public_url,
                           unique)

ML_DSA_65 = SignatureAlgorithmOID.ML_DSA_65


PQ_LABEL_EXTRAS = {r'^\[labels\.pq\]\nca = "pq"$': """[labels.pq]
ca = "pq"
serverkeygen = true
serverkeygen_key_types = ["ml-dsa-65", "ml-dsa-87"]
serverkeygen_deliveries = ["csr-key", "asymmetric"]"""}
PQ_PKCS8_LABEL = """
[labels.pq-pkcs8]
ca = "pq"
key_types = ["ml-dsa-44", "ml-dsa-65", "ml-dsa-87", "ec-p256"]
serverkeygen = true
serverkeygen_key_types = ["ml-dsa-44", "ml-dsa-65", "ml-dsa-87"]
serverkeygen_deliveries = ["pkcs8"]

[labels.pq-template]
ca = "pq"
key_types = ["ml-dsa-87", "ec-p256"]
csr_template = true
"""


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    server = make_server(tmp_path_factory.mktemp("pq"), init_args=("--pq",), replacements=PQ_LABEL_EXTRAS,
                         append=PQ_PKCS8_LABEL).start()
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


# --- /serverkeygen ----------------------------------------------------------------------------

def _client(srv, label: str, auth: tuple[str, str]):
    from kipuka.client import EstClient
    return EstClient(f"https://localhost:{srv.port}", label, trust=srv.ca_bundle, auth=auth)


@pytest.mark.parametrize("kind", ["ml-dsa-44", "ml-dsa-87"])
def test_serverkeygen_generates_an_ml_dsa_key_delivered_as_pkcs8(srv, kind):
    from kipuka.client import PKCS8, CsrSpec
    entity = unique()
    with _client(srv, "pq-pkcs8", (entity, srv.otp(entity, "--label", "pq-pkcs8"))) as client:
        # the CSR's own key type is how a client asks for one (RFC 7030 4.4.1)
        result = client.serverkeygen(CsrSpec.for_names(new_key(kind), f"{entity}.example.com"), PKCS8)
    assert pq.key_type(result.private_key) == kind
    assert result.certificate.public_key() == result.private_key.public_key()
    assert result.certificate.signature_algorithm_oid == ML_DSA_65


def test_serverkeygen_cms_delivery_signed_by_an_ml_dsa_ca_follows_rfc9882(srv):
    """csr-key delivery: an ML-DSA-65 key encrypted to the CSR's EC key, in a SignedData the ML-DSA CA signed."""
    from pyasn1.codec.der import encoder
    from pyasn1_modules import rfc5652

    from kipuka import keydelivery as kd
    entity = unique()
    otp = srv.otp(entity, "--label", "pq")
    throwaway, der = make_csr(f"{entity}.example.com", new_key("ec-p256"))
    r = srv.post("serverkeygen", b64(der), label="pq", auth=(entity, otp))
    assert r.status_code == 200, r.text
    parts = dict(kd.parse_multipart_mixed(r.headers["Content-Type"], r.content))
    (envelope,) = [v for k, v in parts.items() if "server-generated-key" in k]
    (cert,) = pkcs7.load_der_pkcs7_certificates(next(v for k, v in parts.items() if "certs-only" in k))
    ctype, signed_der = kd.decrypt_enveloped(envelope, private_key=throwaway)
    assert ctype == "1.2.840.113549.1.7.2"
    sd, _ = decoder.decode(signed_der, asn1Spec=rfc5652.SignedData())
    (si,) = sd["signerInfos"]
    assert str(si["signatureAlgorithm"]["algorithm"]) == pq.ID_ML_DSA_65
    assert not si["signatureAlgorithm"]["parameters"].isValue  # absent, not NULL (RFC 9882 §3.3)
    assert str(si["digestAlgorithm"]["algorithm"]) == "2.16.840.1.101.3.4.2.3"  # SHA-512
    signers = [x509.load_der_x509_certificate(encoder.encode(c["certificate"])) for c in sd["certificates"]]
    signer = next(c for c in signers if c.subject == cert.issuer)
    attrs = bytearray(encoder.encode(si["signedAttrs"]))
    attrs[0] = 0x31  # signed as a SET OF, not as the [0] it travels in
    signer.public_key().verify(bytes(si["signature"]), bytes(attrs))  # pure ML-DSA, empty context
    package, _ = decoder.decode(bytes(sd["encapContentInfo"]["eContent"]))
    key = serialization.load_der_private_key(encoder.encode(package[0]), None)
    assert pq.key_type(key) == "ml-dsa-65"  # the label's first type: the CSR's EC key type is not offered
    assert key.public_key() == cert.public_key()


def test_serverkeygen_cms_delivery_opened_by_the_kipuka_client(srv):
    from kipuka.client import CSR_KEY, CsrSpec
    entity = unique()
    with _client(srv, "pq", (entity, srv.otp(entity, "--label", "pq"))) as client:
        result = client.serverkeygen(CsrSpec.for_names(new_key("ec-p256"), f"{entity}.example.com"), CSR_KEY)
    assert result.encrypted and result.signed and pq.key_type(result.key_signer.public_key()) == "ml-dsa-65"
    assert pq.key_type(result.private_key) == "ml-dsa-65"
    assert result.certificate.public_key() == result.private_key.public_key()


def test_serverkeygen_cannot_encrypt_to_an_ml_dsa_csr_key(srv):
    entity = unique()
    otp = srv.otp(entity, "--label", "pq")
    _, der = make_csr(f"{entity}.example.com", new_key("ml-dsa-65"))
    r = srv.post("serverkeygen", b64(der), label="pq", auth=(entity, otp))
    assert r.status_code == 400 and "cannot encrypt to the CSR's key" in r.text


# --- /fullcmc: PKCS#10 and CRMF with ML-DSA, and re-enrollment signed by the holder ----------

CMC_REQUEST = {"Content-Type": "application/pkcs7-mime; smime-type=CMC-request"}


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, cn)])


def _self_signer(key):
    from kipuka.cmc import CmsSigner
    return CmsSigner(key, None, sid="subjectKeyIdentifier",
                     ski=x509.SubjectKeyIdentifier.from_public_key(key.public_key()).digest)


def _builder():
    from kipuka import cmc
    b = cmc.PKIDataBuilder()
    b.transaction_id()
    b.sender_nonce()
    return b


def _cms_signature_checks(content_info: bytes, signer_cert: x509.Certificate) -> None:
    """RFC 9882 by hand on a ContentInfo(SignedData): id-ml-dsa-NN without parameters, SHA-512, a valid
    pure ML-DSA signature over the DER signed attributes (cryptography verifies, not kipuka's CMS code)."""
    from pyasn1.codec.der import encoder
    from pyasn1_modules import rfc5652
    ci, _ = decoder.decode(content_info, asn1Spec=rfc5652.ContentInfo())
    sd, _ = decoder.decode(bytes(ci["content"]), asn1Spec=rfc5652.SignedData())
    (si,) = sd["signerInfos"]
    assert str(si["signatureAlgorithm"]["algorithm"]) == pq.algorithm_oid(signer_cert.public_key())
    assert not si["signatureAlgorithm"]["parameters"].isValue
    assert str(si["digestAlgorithm"]["algorithm"]) == "2.16.840.1.101.3.4.2.3"
    attrs = bytearray(encoder.encode(si["signedAttrs"]))
    attrs[0] = 0x31
    signer_cert.public_key().verify(bytes(si["signature"]), bytes(attrs))


def _cmc(srv, body: bytes, **kw):
    from kipuka import cmc
    r = srv.post("fullcmc", b64(body), label="pq", headers=CMC_REQUEST, **kw)
    assert r.status_code == 200, (r.status_code, r.content[:300])
    der = base64.b64decode(r.content)
    parsed = cmc.parse_pki_response(der)
    ca = parsed.signers[0].certificate
    assert pq.key_type(ca.public_key()) == "ml-dsa-65"  # the pq label's CA signs its responses
    _cms_signature_checks(der, ca)
    return parsed


def _issued(parsed, key) -> x509.Certificate:
    (cert,) = [c for c in parsed.certificates if c.public_key() == key.public_key()]
    return cert


def test_fullcmc_crmf_request_with_an_ml_dsa_pop(srv):
    from kipuka import cmc
    entity = unique()
    otp = srv.otp(entity, "--label", "pq")
    key = new_key("ml-dsa-65")
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    b = _builder()
    b.add_crm(cmc.build_crmf_request(key, cert_req_id=7, subject=_name(f"{entity}.example.com"),
                                     extensions=[x509.Extension(ski.oid, False, ski)]))
    parsed = _cmc(srv, b.sign(_self_signer(key)), auth=(entity, otp))
    assert _issued(parsed, key).signature_algorithm_oid == ML_DSA_65


def test_fullcmc_crmf_with_a_forged_ml_dsa_pop_is_refused(srv):
    from kipuka import cmc
    from kipuka.cmc import CMCStatus
    entity = unique()
    otp = srv.otp(entity, "--label", "pq")
    key, other = new_key("ml-dsa-65"), new_key("ml-dsa-65")
    msg = bytearray(cmc.build_crmf_request(key, cert_req_id=7, subject=_name(f"{entity}.example.com")))
    msg[-10] ^= 0xFF  # inside the POP signature
    b = _builder()
    b.add_crm(bytes(msg))
    r = srv.post("fullcmc", b64(b.sign(_self_signer(other))), label="pq", headers=CMC_REQUEST, auth=(entity, otp))
    parsed = cmc.parse_pki_response(base64.b64decode(r.content))
    assert r.status_code >= 400 and all(i.status == CMCStatus.failed for i in parsed.response.status_info_v2())


def test_fullcmc_pkcs10_request_with_an_ml_dsa_87_key(srv):
    entity = unique()
    otp = srv.otp(entity, "--label", "pq")
    key = new_key("ml-dsa-87")
    csr = x509.CertificateSigningRequestBuilder().subject_name(_name(f"{entity}.example.com")).add_extension(
        x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False).sign(key, None)
    b = _builder()
    b.identification(entity)
    b.add_tcr(csr)
    b.identity_proof_v2(otp)
    parsed = _cmc(srv, b.sign(_self_signer(key)), auth=(entity, otp))
    assert pq.key_type(_issued(parsed, key).public_key()) == "ml-dsa-87"


def test_reenrollment_of_an_ml_dsa_device_by_a_holder_signed_fullcmc_request(srv):
    """The re-enrollment path that needs no ML-DSA in the TLS stack: the device signs the Full PKI
    Request with its current ML-DSA certificate's key, and kipuka verifies that signature itself."""
    from kipuka.cmc import CmsSigner
    old_key, old_cert, _ = _enroll(srv, "pq", "ml-dsa-65")
    new = new_key("ml-dsa-65")
    csr = x509.CertificateSigningRequestBuilder().subject_name(old_cert.subject).sign(new, None)
    b = _builder()
    b.add_tcr(csr)
    parsed = _cmc(srv, b.sign(CmsSigner(old_key, old_cert)))  # no OTP, no TLS client certificate
    renewed = _issued(parsed, new)
    assert renewed.subject == old_cert.subject and renewed.serial_number != old_cert.serial_number
    # someone else's names are refused, as for /simplereenroll
    b = _builder()
    b.add_tcr(x509.CertificateSigningRequestBuilder().subject_name(_name("someone-else.example.com")).sign(new, None))
    r = srv.post("fullcmc", b64(b.sign(CmsSigner(old_key, old_cert))), label="pq", headers=CMC_REQUEST)
    assert r.status_code == 403


# --- TLS: mTLS re-enrollment on an ML-DSA label --------------------------------------------------
# The stdlib back end (Python's ssl on the system OpenSSL 3.0) cannot verify a client certificate
# that an ML-DSA CA signed; [tls] backend = "pyopenssl" (cryptography's bundled OpenSSL) can, and
# accepts an ML-DSA TLS client key too.

@pytest.fixture(scope="module")
def osrv(tmp_path_factory):
    server = make_server(tmp_path_factory.mktemp("pq-openssl"), init_args=("--pq",),
                         replacements={r'^min_version = "1\.2".*$': 'min_version = "1.2"\nbackend = "pyopenssl"'},
                         append='\n[labels.pq-linked]\nca = "pq"\nrequire_linking = true\n')
    yield server.start()
    server.stop()


def _identity(srv, tmp_path, label: str, kind: str):
    from tests.helpers import write_identity
    entity = unique()
    key, cert, _ = _enroll(srv, label, kind, entity)
    crt, k = write_identity(tmp_path, entity, key, cert)
    return key, cert, crt, k


def _renewal_csr(cert: x509.Certificate, kind: str) -> tuple[object, bytes]:
    key = new_key(kind)
    der = x509.CertificateSigningRequestBuilder().subject_name(cert.subject).sign(
        key, None if pq.is_mldsa(key) else hashes.SHA256()).public_bytes(serialization.Encoding.DER)
    return key, der


def _reenroll_over_openssl(srv, label: str, der: bytes, crt: str, k: str):
    from tests.pq_tls import https_request
    return https_request(srv.port, "POST", f"/.well-known/est/{label}/simplereenroll", ca_file=srv.ca_bundle,
                         body=b64(der), headers={"Content-Type": "application/pkcs10"}, cert_file=crt, key_file=k)


def test_stdlib_tls_cannot_verify_a_client_certificate_an_ml_dsa_ca_signed(srv, tmp_path):
    """Why the pyopenssl back end exists: the stdlib listener (OpenSSL 3.0) fails the handshake on the
    ML-DSA signature of the client's certificate, although the client's own key is EC."""
    from OpenSSL import SSL
    _, cert, crt, k = _identity(srv, tmp_path, "pq", "ec-p256")
    _, der = _renewal_csr(cert, "ec-p256")
    with pytest.raises(SSL.Error):  # the listener drops the connection after the client's Finished
        _reenroll_over_openssl(srv, "pq", der, crt, k)
    # the control: the same client, an EC certificate from an ECDSA CA, the same listener
    _, cert, crt, k = _identity(srv, tmp_path, "iot-fleet", "ec-p256")
    _, der = _renewal_csr(cert, "ec-p256")
    assert _reenroll_over_openssl(srv, "iot-fleet", der, crt, k).status == 200


def test_stdlib_tls_clients_cannot_load_a_certificate_an_ml_dsa_ca_signed(srv, tmp_path):
    """The other half, client side: OpenSSL < 3.5 refuses such a certificate as its own (CA_MD_TOO_WEAK)."""
    _, cert, crt, k = _identity(srv, tmp_path, "pq", "ec-p256")
    _, der = _renewal_csr(cert, "ec-p256")
    with pytest.raises(requests.exceptions.SSLError, match="CA_MD_TOO_WEAK"):
        srv.post("simplereenroll", b64(der), label="pq", cert=(crt, k))


def test_pyopenssl_backend_serves_stock_clients(osrv):
    _, cert, _ = _enroll(osrv, "iot-fleet", "ec-p256")
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    key, cert, r = _enroll(osrv, "pq", "ml-dsa-65")
    assert r.headers["Content-Type"] == "application/pkcs7-mime; smime-type=certs-only"


def test_simplereenroll_with_an_ec_tls_key_under_an_ml_dsa_ca(osrv, tmp_path):
    """An EC TLS key whose certificate the ML-DSA CA signed: the pyopenssl listener verifies that chain."""
    _, cert, crt, k = _identity(osrv, tmp_path, "pq", "ec-p256")
    new, der = _renewal_csr(cert, "ml-dsa-65")  # and rekeys to ML-DSA while at it
    answer = _reenroll_over_openssl(osrv, "pq", der, crt, k)
    assert answer.status == 200, answer.body
    (renewed,) = pkcs7.load_der_pkcs7_certificates(base64.b64decode(answer.body))
    assert renewed.subject == cert.subject and renewed.public_key() == new.public_key()


@pytest.mark.parametrize("label", ["pq", "pq-mixed"])
def test_simplereenroll_with_an_ml_dsa_tls_client_key(osrv, tmp_path, label):
    """End to end post-quantum: the device's TLS 1.3 CertificateVerify is ML-DSA, so is its chain."""
    _, cert, crt, k = _identity(osrv, tmp_path, label, "ml-dsa-65")
    new, der = _renewal_csr(cert, "ml-dsa-65")
    answer = _reenroll_over_openssl(osrv, label, der, crt, k)
    assert answer.version == "TLSv1.3"
    assert answer.status == 200, answer.body
    (renewed,) = pkcs7.load_der_pkcs7_certificates(base64.b64decode(answer.body))
    assert renewed.subject == cert.subject and renewed.public_key() == new.public_key()
    assert renewed.serial_number != cert.serial_number


def test_ml_dsa_tls_client_key_with_someone_elses_names_is_403(osrv, tmp_path):
    _, cert, crt, k = _identity(osrv, tmp_path, "pq", "ml-dsa-44")
    _, der = make_csr("someone-else.example.com", new_key("ml-dsa-44"))
    answer = _reenroll_over_openssl(osrv, "pq", der, crt, k)
    assert answer.status == 403


def test_revoked_ml_dsa_tls_client_is_refused(osrv, tmp_path):
    _, cert, crt, k = _identity(osrv, tmp_path, "pq", "ml-dsa-65")
    token = admin_token(osrv)
    r = admin_call(osrv, "POST", f"/admin/certs/{cert.serial_number:x}/revoke", token,
                   json_body={"reason": "keyCompromise"})
    assert r.status_code == 200, r.text
    _, der = _renewal_csr(cert, "ml-dsa-65")
    answer = _reenroll_over_openssl(osrv, "pq", der, crt, k)
    assert answer.status == 401 and b"revoked" in answer.body


@pytest.mark.parametrize("version", ["TLSv1_2", "TLSv1_3"])
def test_pyopenssl_backend_links_csrs_to_the_tls_session(osrv, version):
    """tls-unique (TLS 1.2) and tls-exporter (TLS 1.3, RFC 9266) come from the pyOpenSSL connection too."""
    import ssl

    from tests.test_channel_binding import _enroll_linked
    tls_version = getattr(ssl.TLSVersion, version)
    status, body = _enroll_linked(osrv, tls_version, label="pq-linked")
    assert status == 200, body
    status, body = _enroll_linked(osrv, tls_version, label="pq-linked", tamper=True)
    assert status in (400, 403), body


# --- PKCS#11: a token that cannot do ML-DSA is refused at start-up --------------------------------

def test_pkcs11_token_without_ml_dsa_is_refused_at_start_up(tmp_path, softhsm):  # noqa: F811
    from tests.softhsm import PIN_ENV, module_path
    softhsm.init_token("kipuka-pq")
    server = make_server(tmp_path, init_args=("--pq",), append=f"""
[ca.pq-hsm]
type = "pkcs11"
module = "{module_path()}"
token_label = "kipuka-pq"
key_label = "pq"
cert = "ca/pq.pem"
chain = "ca/pq-root.pem"
pin_env = "{PIN_ENV}"

[labels.pq-hsm]
ca = "pq-hsm"
key_types = ["ml-dsa-65"]
""")
    with pytest.raises(RuntimeError) as failure:
        server.start()
    message = str(failure.value)
    assert "ca.pq-hsm" in message and "ml-dsa-65" in message and "offers no CKM_ML_DSA" in message
    server.stop()


# --- sizes: kilobyte keys and signatures stay well inside max_body and the header limits -----------

def test_largest_ml_dsa_messages_fit_well_inside_max_body(srv):
    """ML-DSA-87: 2.6 kB public keys, 4.6 kB signatures. The biggest single-request messages a device
    sends fit the default max_body (65536): a CSR with twenty names under a quarter of it; the worst
    Full PKI Request (a CRMF request with twenty names and its POP, signed by the device's current
    ML-DSA-87 certificate with that certificate and its whole ML-DSA chain attached) under three
    quarters (~42 kB in base64; docs/pq.md has the figures an RA that batches needs)."""
    from kipuka import cmc
    from kipuka.cmc import CmsSigner
    max_body = 65536
    sans = [x509.DNSName(f"host-{i}.{unique()}.example.com") for i in range(20)]
    _, csr_der = make_csr(f"{unique()}.example.com", new_key("ml-dsa-87"), sans=sans)
    assert len(b64(csr_der)) < max_body // 4

    holder_key, holder, _ = _enroll(srv, "pq", "ml-dsa-87")
    chain = _cacerts(srv, "pq")
    assert sum(len(c.public_bytes(serialization.Encoding.DER)) for c in [holder, *chain]) < 20000
    new = new_key("ml-dsa-87")
    b = _builder()
    b.add_crm(cmc.build_crmf_request(new, cert_req_id=9, subject=holder.subject, extensions=[
        x509.Extension(x509.SubjectAlternativeName.oid, False, x509.SubjectAlternativeName(sans))]))
    message = b.sign(CmsSigner(holder_key, holder, chain=tuple(chain)))
    body = b64(message)
    assert len(body) < max_body * 3 // 4, len(body)
    r = srv.post("fullcmc", body, label="pq", headers=CMC_REQUEST)
    assert r.status_code == 400, r.text[:200]  # twenty SANs (max_sans 10): refused as policy, not as size
    b = _builder()
    b.add_crm(cmc.build_crmf_request(new, cert_req_id=9, subject=holder.subject))
    parsed = _cmc(srv, b.sign(CmsSigner(holder_key, holder, chain=tuple(chain))))
    assert pq.key_type(_issued(parsed, new).public_key()) == "ml-dsa-87"
    assert len(parsed.der) < max_body  # the response: the new certificate, the chain, an ML-DSA-65 signature

    # the headers a PQ client sends are the usual ones: nothing post-quantum travels in a header line
    r = srv.get("cacerts", label="pq")
    assert len(r.content) < max_body // 2 and int(r.headers["Content-Length"]) == len(r.content)


def test_ocsp_request_signed_with_ml_dsa_87_is_answered(srv):
    """A relying party may sign its OCSP request (RFC 6960 §4.1.1) and attach its certificate: with
    ML-DSA-87 that is ~11 kB, which the responder must still read (its limit was 8 kB)."""
    from kipuka.cmc import der
    key, cert, _ = _enroll(srv, "pq", "ml-dsa-87")
    issuing = next(c for c in _cacerts(srv, "pq") if c.subject == cert.issuer)
    unsigned = ocsp.OCSPRequestBuilder().add_certificate(cert, issuing, hashes.SHA256()).build()
    tbs = der.children(unsigned.public_bytes(serialization.Encoding.DER))[0]
    signature = der.seq(der.algorithm(pq.ID_ML_DSA_87), der.bit_string(key.sign(tbs)),
                        der.explicit(0, der.seq(cert.public_bytes(serialization.Encoding.DER))))
    body = der.seq(tbs, der.explicit(0, signature))
    assert len(body) > 8192  # the old limit
    r = requests.post(public_url(srv, "/ocsp/pq"), data=body, headers={"Content-Type": "application/ocsp-request"},
                      timeout=10)
    resp = ocsp.load_der_ocsp_response(r.content)
    assert resp.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
    assert resp.certificate_status == ocsp.OCSPCertStatus.GOOD


# --- the client --------------------------------------------------------------------------------

def test_kipuka_est_enrolls_with_key_type_ml_dsa_65(srv, tmp_path):
    import subprocess
    import sys
    entity = unique()
    otp = srv.otp(entity, "--label", "pq")
    out = subprocess.run([sys.executable, "-m", "kipuka.client", "enroll", "-s", f"https://localhost:{srv.port}",
                          "-l", "pq", "--trust", srv.ca_bundle, "-u", entity, "--otp", otp, "--cn",
                          f"{entity}.example.com", "--key-type", "ml-dsa-65", "--out-cert", str(tmp_path / "c.pem"),
                          "--out-key", str(tmp_path / "k.pem"), "-q"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    cert = x509.load_pem_x509_certificate((tmp_path / "c.pem").read_bytes())
    key = serialization.load_pem_private_key((tmp_path / "k.pem").read_bytes(), None)
    assert pq.key_type(key) == "ml-dsa-65" and cert.public_key() == key.public_key()


def test_client_reads_ml_dsa_key_types_from_csrattrs(srv):
    from kipuka.client import EstClient
    with EstClient(f"https://localhost:{srv.port}", "pq", trust=srv.ca_bundle) as client:
        attrs = client.csrattrs()
    assert {"ml-dsa-44", "ml-dsa-65", "ml-dsa-87"} <= set(attrs.key_types())
    assert attrs.key_type("ml-dsa-87") == "ml-dsa-87"  # what the server accepts is what the client keeps


def test_rfc9908_template_names_the_ml_dsa_key_without_parameters(srv):
    from kipuka.client import EstClient
    with EstClient(f"https://localhost:{srv.port}", "pq-template", trust=srv.ca_bundle) as client:
        attrs = client.csrattrs()
    assert attrs.template is not None and attrs.template.key_type == "ml-dsa-87"
    assert attrs.key_type("ec-p256") == "ml-dsa-87"  # RFC 9908 §4: a client that reads the template follows it
    # subjectPKInfo.algorithm = SEQUENCE { id-ml-dsa-87 } and nothing else
    assert bytes.fromhex("300b0609608648016503040313") in attrs.der


# --- the client: renewing an ML-DSA certificate without ML-DSA in the TLS stack ----------------------
# Python's ssl (system OpenSSL 3.0) cannot present an ML-DSA client certificate, so kipuka-est renews
# an ML-DSA certificate by a /fullcmc request signed with the certificate's key (docs/pq.md).

def _kipuka_est(*args: str):
    import subprocess
    import sys
    return subprocess.run([sys.executable, "-m", "kipuka.client", *args], capture_output=True, text=True, timeout=120)


def test_kipuka_est_renew_renews_an_ml_dsa_certificate_by_a_holder_signed_fullcmc_request(srv, tmp_path):
    entity = unique()
    crt, key = tmp_path / "dev.crt", tmp_path / "dev.key"
    first = _kipuka_est("enroll", "-s", f"https://localhost:{srv.port}", "--label", "pq", "--trust", srv.ca_bundle,
                        "--user", entity, "--otp", srv.otp(entity, "--label", "pq"), "--cn", f"{entity}.example.com",
                        "--key-type", "ml-dsa-65", "--out-cert", str(crt), "--out-key", str(key))
    assert first.returncode == 0, first.stderr
    old = x509.load_pem_x509_certificate(crt.read_bytes())
    assert pq.key_type(old.public_key()) == "ml-dsa-65"
    renewed = _kipuka_est("renew", "-s", f"https://localhost:{srv.port}", "--label", "pq", "--trust", srv.ca_bundle,
                          "--cert", str(crt), "--key", str(key), "--force", "--rekey")
    assert renewed.returncode == 0, renewed.stderr
    assert "/fullcmc" in renewed.stderr
    new = x509.load_pem_x509_certificate(crt.read_bytes())
    assert new.serial_number != old.serial_number and new.subject == old.subject
    assert pq.key_type(new.public_key()) == "ml-dsa-65" and new.public_key() != old.public_key()
    assert serialization.load_pem_private_key(key.read_bytes(), None).public_key() == new.public_key()
    # the server recorded it as a re-enrollment authenticated by the old certificate's signature
    record = admin_call(srv, "GET", f"/admin/certs/{new.serial_number:x}", srv.token).json()
    assert record["auth"] == "cmc-cert", record


def test_agent_keeps_an_ml_dsa_certificate_fresh(srv, tmp_path):
    entity = unique()
    (tmp_path / "dev.otp").write_text(srv.otp(entity, "--label", "pq") + "\n")
    crt, key = tmp_path / "dev.crt", tmp_path / "dev.key"
    (tmp_path / "agent.toml").write_text(f"""state_dir = "{tmp_path / 'state'}"

[defaults]
server = "https://localhost:{srv.port}"
trust = "{srv.ca_bundle}"
jitter = "0%"
timeout = "10s"

[certificates.dev]
label = "pq"
user = "{entity}"
otp_file = "{tmp_path / 'dev.otp'}"
common_name = "{entity}.example.com"
key_type = "ml-dsa-65"
rotate_key = true
cert = "{crt}"
key = "{key}"
""")
    enrolled = _kipuka_est("agent", "-c", str(tmp_path / "agent.toml"), "--once")
    assert enrolled.returncode == 0, enrolled.stderr
    first = x509.load_pem_x509_certificate(crt.read_bytes())
    assert pq.key_type(first.public_key()) == "ml-dsa-65"
    renewed = _kipuka_est("agent", "-c", str(tmp_path / "agent.toml"), "--once", "--force")
    assert renewed.returncode == 0 and "renewed serial" in renewed.stderr, renewed.stderr
    second = x509.load_pem_x509_certificate(crt.read_bytes())
    assert second.serial_number != first.serial_number and second.subject == first.subject
    assert pq.key_type(second.public_key()) == "ml-dsa-65" and second.public_key() != first.public_key()
    assert serialization.load_pem_private_key(key.read_bytes(), None).public_key() == second.public_key()

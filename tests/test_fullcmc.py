"""POST /fullcmc (RFC 7030 4.3, RFC 5272/6402) against a real server over TLS.

One server for the module, with two labels that turn fullcmc on (`cmc`, and
`cmc-approval` with require_approval) and an RA CA of the test's own as their
ra_anchors; the unlabeled path keeps fullcmc off. Every Full PKI Response the
server signs is checked with `openssl cms -verify` as well as parsed.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kipuka import cmc
from kipuka.client import EstClient
from kipuka.cmc import CMCFailInfo, CMCStatus, CmsSigner, der, oids
from kipuka.config import ConfigError, load_config
from tests import der_strict
from tests.helpers import (admin_call, admin_token, b64, enroll_identity, make_server, make_test_ca, new_key,
                           public_url, run_cli, sign_certificate, unique, write_identity)

CMC_REQUEST = {"Content-Type": "application/pkcs7-mime; smime-type=CMC-request"}
CMC_RESPONSE = "application/pkcs7-mime; smime-type=CMC-response"
CMC_RA = x509.ObjectIdentifier("1.3.6.1.5.5.7.3.28")
CMC_CA = x509.ObjectIdentifier("1.3.6.1.5.5.7.3.27")
LABELS = """
[labels.cmc]
fullcmc = true
ra_anchors = ["cmc-ra-ca.crt"]

[labels.cmc-approval]
fullcmc = true
require_approval = true
ra_anchors = ["cmc-ra-ca.crt"]

[labels.cmc-linked]
fullcmc = true
require_linking = true
ra_anchors = ["cmc-ra-ca.crt"]
"""


@dataclass
class Party:
    key: object
    cert: x509.Certificate
    cert_path: str
    key_path: str

    def signer(self, sid: str = "issuerAndSerialNumber") -> CmsSigner:
        return CmsSigner(self.key, self.cert, sid=sid)


@dataclass
class Env:
    srv: object
    ra: Party
    stranger: Party                  # id-kp-cmcRA, but from a CA no label trusts
    ca_cert: x509.Certificate        # the issuing CA of labels cmc and cmc-approval
    chain: str                       # PEM: issuing CA + root


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("fullcmc")
    srv = make_server(root, append=LABELS)
    ra_ca_crt, ra_ca_key = make_test_ca(srv.dir, "cmc-ra-ca")
    other_crt, other_key = make_test_ca(root, "unknown-ra-ca")
    ra = _party(root, "ra-agent", ra_ca_crt, ra_ca_key, [CMC_RA])
    stranger = _party(root, "stranger-ra", other_crt, other_key, [CMC_RA])
    srv.start()
    ca_cert = x509.load_pem_x509_certificate((srv.dir / "ca" / "default.pem").read_bytes())
    yield Env(srv, ra, stranger, ca_cert, srv.ca_bundle)
    srv.stop()


def _party(directory: Path, name: str, issuer_crt: Path, issuer_key: Path, ekus: list) -> Party:
    key = new_key()
    cert = sign_certificate(issuer_crt, issuer_key, key.public_key(), name, ekus=ekus)
    crt, k = write_identity(directory, name, key, cert)
    return Party(key, cert, crt, k)


# --- helpers ------------------------------------------------------------------------------

def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _csr(key, cn: str, *, ski: bool = False, sans: list[str] | None = None) -> x509.CertificateSigningRequest:
    b = x509.CertificateSigningRequestBuilder().subject_name(_name(cn))
    if ski:
        b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(s) for s in sans]), critical=False)
    return b.sign(key, hashes.SHA256())


def _self_signer(key) -> CmsSigner:
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key()).digest
    return CmsSigner(key, None, sid="subjectKeyIdentifier", ski=ski)


def _builder(*, nonce: bool = True, txid: bool = True) -> cmc.PKIDataBuilder:
    b = cmc.PKIDataBuilder()
    if txid:
        b.transaction_id()
    if nonce:
        b.sender_nonce()
    return b


def post(env: Env, body: bytes, *, label: str | None = "cmc", auth=None, cert=None, headers=None,
         raw: bool = False) -> requests.Response:
    return env.srv.post("fullcmc", body if raw else b64(body), label=label, auth=auth, cert=cert,
                        headers=CMC_REQUEST if headers is None else headers)


def openssl_verify(env: Env, resp_der: bytes, *extra: str) -> subprocess.CompletedProcess:
    path = Path(env.srv.dir) / f"resp-{os.urandom(4).hex()}.der"
    path.write_bytes(resp_der)
    return subprocess.run(["openssl", "cms", "-verify", "-inform", "DER", "-in", str(path), "-CAfile", env.chain,
                           "-binary", "-out", "/dev/null", *extra], capture_output=True, timeout=30)


def answer(env: Env, r: requests.Response, status: int = 200, *openssl_extra: str) -> cmc.SignedPKIResponse:
    """The wire form RFC 7030 / 8951 asks for, an openssl-verified signature, then the parsed response."""
    assert r.status_code == status, (r.status_code, r.headers.get("Content-Type"), r.content[:300])
    assert r.headers["Content-Type"] == CMC_RESPONSE
    assert r.headers["Content-Transfer-Encoding"] == "base64"
    assert int(r.headers["Content-Length"]) == len(r.content)
    lines = r.content.split(b"\n")
    assert lines[-1] == b"" and all(len(line) <= 64 for line in lines) and b"\r" not in r.content
    resp_der = base64.b64decode(r.content)
    der_strict.assert_der_signed_data(resp_der, "Full PKI Response")  # DER down to the PKIResponse
    p = openssl_verify(env, resp_der, *openssl_extra)
    assert p.returncode == 0, p.stderr.decode()
    parsed = cmc.parse_pki_response(resp_der)
    assert parsed.signers[0].certificate == env.ca_cert
    return parsed


def statuses(parsed: cmc.SignedPKIResponse) -> dict:
    return {info.body_list[0]: info for info in parsed.response.status_info_v2()}


def failure(env: Env, r: requests.Response, status: int, fail_info: CMCFailInfo | None,
            cmc_status: CMCStatus = CMCStatus.failed) -> cmc.StatusInfoV2:
    (info,) = answer(env, r, status).response.status_info_v2()
    assert info.status == cmc_status, info
    assert info.fail_info == fail_info, info
    return info


def issued_for(parsed: cmc.SignedPKIResponse, key) -> x509.Certificate:
    found = [c for c in parsed.certificates if c.public_key() == key.public_key()]
    assert len(found) == 1
    return found[0]


def ra_request(env: Env, cn: str | None = None, **kw):  # type: ignore[no-untyped-def]
    """An RA-signed PKIData with one PKCS#10 request: (message, device key, bodyPartID, builder)."""
    key = new_key()
    b = _builder()
    bpid = b.add_tcr(_csr(key, cn or f"{unique()}.example.com"))
    return b.sign(env.ra.signer(**kw)), key, bpid, b


def _device(env: Env, tmp_path: Path) -> Party:
    crt, k, cert = enroll_identity(env.srv, tmp_path, label="cmc")
    return Party(serialization.load_pem_private_key(Path(k).read_bytes(), None), cert, crt, k)


# --- round trips --------------------------------------------------------------------------

def test_pkcs10_request_signed_by_an_ra_for_a_device(env):
    key, entity = new_key(), unique()
    b = cmc.PKIDataBuilder()
    txid = b.transaction_id()
    nonce = b.sender_nonce()
    b.identification(entity)
    b.data_return(b"opaque to the server")
    bpid = b.add_tcr(_csr(key, f"{entity}.example.com", sans=[f"{entity}.example.com"]))
    parsed = answer(env, post(env, b.sign(env.ra.signer())))
    info = statuses(parsed)[bpid]
    assert info.status == CMCStatus.success and info.fail_info is None
    cert = issued_for(parsed, key)
    assert cert.subject == _name(f"{entity}.example.com") and cert.issuer == env.ca_cert.subject
    resp = parsed.response
    assert resp.transaction_id() == txid and resp.recipient_nonce() == nonce
    assert resp.data_return() == b"opaque to the server"
    assert resp.sender_nonce() is not None and resp.sender_nonce() != nonce
    listed = env.srv.cli("certs", "list", "--entity", entity).stdout
    assert format(cert.serial_number, "x") in listed


def test_ra_requests_still_meet_the_label_policy_and_confirm_cert_acceptance(env):
    from cryptography.hazmat.primitives.asymmetric import ec

    b = _builder()
    weak = b.add_tcr(_csr(ec.generate_private_key(ec.SECP521R1()), f"{unique()}.example.com"))  # not in key_types
    wild = b.add_tcr(_csr(new_key(), f"{unique()}.example.com", sans=["*.example.com"]))
    good_key = new_key()
    good = b.add_tcr(_csr(good_key, f"{unique()}.example.com"))
    parsed = answer(env, post(env, b.sign(env.ra.signer())))   # one body part served: 200
    infos = statuses(parsed)
    assert infos[weak].fail_info == CMCFailInfo.badRequest and "ec-p521" in infos[weak].status_string
    assert infos[wild].fail_info == CMCFailInfo.badRequest and "wildcard" in infos[wild].status_string
    assert infos[good].status == CMCStatus.success
    cert = issued_for(parsed, good_key)
    b = _builder()
    ok = b.confirm_cert_acceptance(cert.issuer, cert.serial_number)
    unknown = b.confirm_cert_acceptance(cert.issuer, 0xBADC0FFEE)
    infos = statuses(answer(env, post(env, b.sign(env.ra.signer()))))
    assert infos[ok].status == CMCStatus.success
    assert infos[unknown].fail_info == CMCFailInfo.badCertId


def test_crmf_request_with_pop_signature_and_ski_signer_id(env):
    key = new_key("ec-p384")
    entity = unique()
    msg = cmc.build_crmf_request(key, cert_req_id=41, subject=_name(f"{entity}.example.com"), extensions=[
        x509.Extension(x509.SubjectAlternativeName.oid, False,
                       x509.SubjectAlternativeName([x509.DNSName(f"{entity}.example.com")]))])
    b = _builder()
    assert b.add_crm(msg) == 41
    parsed = answer(env, post(env, b.sign(env.ra.signer("subjectKeyIdentifier"))))
    assert statuses(parsed)[41].status == CMCStatus.success
    cert = issued_for(parsed, key)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [f"{entity}.example.com"]


def test_crmf_without_pop_from_an_ra_is_pop_required_but_ra_verified_stands(env):
    key = new_key()
    b = _builder()
    bpid = b.add_crm(cmc.build_crmf_request(key, cert_req_id=5, subject=_name(f"{unique()}.example.com"), pop=None))
    failure(env, post(env, b.sign(env.ra.signer())), 400, CMCFailInfo.popRequired)
    b = _builder()
    b.add_crm(cmc.build_crmf_request(key, cert_req_id=5, subject=_name(f"{unique()}.example.com"), pop="raVerified"))
    parsed = answer(env, post(env, b.sign(env.ra.signer())))
    assert statuses(parsed)[bpid].status == CMCStatus.success


def test_self_signed_pkcs10_with_otp_basic_and_identity_proof(env):
    entity = unique()
    otp = env.srv.otp(entity, "--label", "cmc")
    key = new_key()
    b = _builder()
    b.identification(entity)
    bpid = b.add_tcr(_csr(key, f"{entity}.example.com", ski=True))
    b.identity_proof_v2(otp)
    parsed = answer(env, post(env, b.sign(_self_signer(key)), auth=(entity, otp)))
    assert statuses(parsed)[bpid].status == CMCStatus.success
    issued_for(parsed, key)
    # The OTP was spent with the certificate: a new request with it is refused (401, badIdentity).
    key2 = new_key()
    b = _builder()
    b.add_tcr(_csr(key2, f"{entity}.example.com", ski=True))
    r = post(env, b.sign(_self_signer(key2)), auth=(entity, otp))
    (info,) = answer(env, r, 401).response.status_info_v2()
    assert info.fail_info == CMCFailInfo.badIdentity and "OTP already used" in info.status_string
    assert r.headers["WWW-Authenticate"] == 'Basic realm="est"'


def test_self_signed_crmf_with_otp(env):
    entity = unique()
    otp = env.srv.otp(entity, "--label", "cmc")
    key = new_key()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    b = _builder()
    bpid = b.add_crm(cmc.build_crmf_request(key, cert_req_id=3, subject=_name(f"{entity}.example.com"),
                                            extensions=[x509.Extension(ski.oid, False, ski)]))
    parsed = answer(env, post(env, b.sign(_self_signer(key)), auth=(entity, otp)))
    assert statuses(parsed)[bpid].status == CMCStatus.success
    issued_for(parsed, key)


def test_self_signed_needs_a_credential_and_a_matching_identity_proof(env):
    entity = unique()
    otp = env.srv.otp(entity, "--label", "cmc")
    key = new_key()

    def message(secret: str | None = None, ident: str | None = None) -> bytes:
        b = _builder()
        if ident:
            b.identification(ident)
        b.add_tcr(_csr(key, f"{entity}.example.com", ski=True))
        if secret:
            b.identity_proof_v2(secret)
        return b.sign(_self_signer(key))

    failure(env, post(env, message()), 401, CMCFailInfo.badIdentity)
    failure(env, post(env, message("not-the-otp"), auth=(entity, otp)), 401, CMCFailInfo.badIdentity)
    failure(env, post(env, message(otp, ident="someone-else"), auth=(entity, otp)), 401, CMCFailInfo.badIdentity)
    failure(env, post(env, message(otp), auth=(entity, "wrong")), 401, CMCFailInfo.badIdentity)
    # names outside what the entity may ask for: 403, badRequest
    b = _builder()
    b.add_tcr(_csr(key, "another-device.example.com", ski=True))
    failure(env, post(env, b.sign(_self_signer(key)), auth=(entity, otp)), 403, CMCFailInfo.badRequest)
    # the OTP is still unspent after all those refusals
    assert statuses(answer(env, post(env, message(otp), auth=(entity, otp))))


def test_batch_of_three_nested_requests_signed_by_the_ra(env):
    keys, inner = [], []
    for _ in range(3):
        key = new_key()
        b = _builder()
        b.add_tcr(_csr(key, f"{unique()}.example.com", ski=True))
        inner.append(b.sign(_self_signer(key)))
        keys.append(key)
    outer = _builder()
    ids = [outer.add_content(m) for m in inner]
    outer.batch_requests(ids)
    parsed = answer(env, post(env, outer.sign(env.ra.signer())))
    infos = statuses(parsed)
    assert [infos[i].status for i in ids] == [CMCStatus.success] * 3
    names = parsed.response.batch_responses()
    assert len(names) == 3
    nested = {c.body_part_id: c.content_info for c in parsed.response.cms_sequence}
    for key, bpid in zip(keys, names):
        p = openssl_verify(env, nested[bpid])
        assert p.returncode == 0, p.stderr.decode()
        inner_resp = cmc.parse_pki_response(nested[bpid])
        assert [i.status for i in inner_resp.response.status_info_v2()] == [CMCStatus.success]
        assert inner_resp.response.recipient_nonce() is not None
        issued_for(inner_resp, key)
        issued_for(parsed, key)


def test_batch_from_a_non_ra_is_refused_and_a_bad_nested_request_fails_alone(env, tmp_path):
    key = new_key()
    b = _builder()
    b.add_tcr(_csr(key, f"{unique()}.example.com", ski=True))
    good = b.sign(_self_signer(key))
    broken = bytearray(good)
    broken[-1] ^= 1
    outer = _builder()
    ids = [outer.add_content(good), outer.add_content(bytes(broken))]
    outer.batch_requests(ids)
    parsed = answer(env, post(env, outer.sign(env.ra.signer())))
    infos = statuses(parsed)
    assert infos[ids[0]].status == CMCStatus.success
    assert infos[ids[1]].status == CMCStatus.failed and infos[ids[1]].fail_info == CMCFailInfo.badMessageCheck
    # a device certificate may not batch
    device = _device(env, tmp_path)
    outer = _builder()
    outer.batch_requests([outer.add_content(good)])
    failure(env, post(env, outer.sign(device.signer())), 403, CMCFailInfo.badRequest)


def _revoke(env: Env, signer: CmsSigner, serial: int, reason=x509.ReasonFlags.key_compromise) -> tuple[bytes, int]:
    b = _builder()
    bpid = b.revoke_request(env.ca_cert.subject, serial, reason)
    return b.sign(signer), bpid


def test_ra_revokes_a_certificate_store_crl_and_audit_follow(env, tmp_path):
    device = _device(env, tmp_path)
    serial = device.cert.serial_number
    msg, bpid = _revoke(env, env.ra.signer(), serial)
    parsed = answer(env, post(env, msg))
    assert statuses(parsed)[bpid].status == CMCStatus.success
    # the certificate no longer authenticates ...
    cn = device.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    r = env.srv.post("simplereenroll", b64(_csr(device.key, cn).public_bytes(serialization.Encoding.DER)),
                     label="cmc", cert=(device.cert_path, device.key_path))
    assert r.status_code == 401 and "revoked" in r.text
    # ... and it is on the CRL
    crl = x509.load_der_x509_crl(requests.get(public_url(env.srv, "/crl/default.crl"), timeout=10).content)
    entry = crl.get_revoked_certificate_by_serial_number(serial)
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == x509.ReasonFlags.key_compromise
    audit = env.srv.cli("audit", "list", "--limit", "200").stdout
    hexserial = format(serial, "x")
    assert re.search(rf"\tcert\.revoke\tsuccess\t.*\t{hexserial}\t", audit)
    assert re.search(rf"\tfullcmc\.revoke\tsuccess\tcmc\t.*\t{hexserial}\t", audit)
    # revoking it again is answered as done
    msg, bpid = _revoke(env, env.ra.signer(), serial)
    assert "already revoked" in statuses(answer(env, post(env, msg)))[bpid].status_string


def test_holder_revokes_only_its_own_certificate(env, tmp_path):
    device, other = _device(env, tmp_path), _device(env, tmp_path)
    msg, _ = _revoke(env, device.signer(), other.cert.serial_number)
    failure(env, post(env, msg), 403, CMCFailInfo.badRequest)
    msg, _ = _revoke(env, env.ra.signer(), 0x1234567)
    failure(env, post(env, msg), 400, CMCFailInfo.badCertId)
    msg, bpid = _revoke(env, device.signer(), device.cert.serial_number, x509.ReasonFlags.superseded)
    assert statuses(answer(env, post(env, msg)))[bpid].status == CMCStatus.success
    # a revocation needs a senderNonce, and a revoked signer is no signer at all
    b = _builder(nonce=False)
    b.revoke_request(env.ca_cert.subject, other.cert.serial_number)
    failure(env, post(env, b.sign(env.ra.signer())), 400, CMCFailInfo.badRequest)
    msg, _ = _revoke(env, device.signer(), device.cert.serial_number)
    failure(env, post(env, msg), 401, CMCFailInfo.badIdentity)


def test_holder_renews_its_own_names_only(env, tmp_path):
    device = _device(env, tmp_path)
    cn = device.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    key = new_key()
    b = _builder()
    bpid = b.add_tcr(_csr(key, cn))
    parsed = answer(env, post(env, b.sign(device.signer())))
    assert statuses(parsed)[bpid].status == CMCStatus.success
    assert issued_for(parsed, key).subject == device.cert.subject
    b = _builder()
    b.add_tcr(_csr(new_key(), "someone-else.example.com"))
    failure(env, post(env, b.sign(device.signer())), 403, CMCFailInfo.badRequest)


def test_self_signed_with_a_tls_client_certificate_of_kipuka(env, tmp_path):
    device = _device(env, tmp_path)
    cn = device.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    key = new_key()
    b = _builder()
    bpid = b.add_tcr(_csr(key, cn, ski=True))
    parsed = answer(env, post(env, b.sign(_self_signer(key)), cert=(device.cert_path, device.key_path)))
    assert statuses(parsed)[bpid].status == CMCStatus.success


def test_pending_then_query_pending_after_admin_approval(env):
    token = admin_token(env.srv)
    key, crmf_key = new_key(), new_key()
    b = cmc.PKIDataBuilder()
    txid = b.transaction_id()
    b.sender_nonce()
    bpid = b.add_tcr(_csr(key, f"{unique()}.example.com"))
    crm_id = b.add_crm(cmc.build_crmf_request(crmf_key, cert_req_id=99, subject=_name(f"{unique()}.example.com")))
    parsed = answer(env, post(env, b.sign(env.ra.signer()), label="cmc-approval"))
    infos = statuses(parsed)
    assert infos[bpid].status == CMCStatus.pending and infos[crm_id].status == CMCStatus.pending
    assert infos[bpid].pend_time > dt.datetime.now(dt.timezone.utc)
    assert not [c for c in parsed.certificates if c.public_key() == key.public_key()]

    def query(pend_token: bytes, status: int = 200) -> cmc.SignedPKIResponse:
        q = cmc.PKIDataBuilder()
        q.transaction_id(txid)   # the same transaction continues (RFC 5272 6.6)
        q.sender_nonce()
        q_id = q.query_pending(pend_token)
        resp = answer(env, post(env, q.sign(env.ra.signer()), label="cmc-approval"), status)
        return resp, statuses(resp)[q_id]

    _, still = query(infos[bpid].pend_token)
    assert still.status == CMCStatus.pending and still.pend_token == infos[bpid].pend_token
    for info in (infos[bpid], infos[crm_id]):
        request_id = int(info.pend_token.decode().rpartition("/")[2])
        r = admin_call(env.srv, "POST", f"/admin/requests/{request_id}/approve", token)
        assert r.status_code == 200, r.text
        assert r.json()["request"]["op"] == "fullcmc"
    for info, k in ((infos[bpid], key), (infos[crm_id], crmf_key)):
        resp, done = query(info.pend_token)
        assert done.status == CMCStatus.success
        issued_for(resp, k)
    # a pendToken of this server that names no request is refused
    resp, missing = query(b"kipuka-pending/999999", 400)
    assert missing.status == CMCStatus.failed and missing.fail_info == CMCFailInfo.badRequest


def test_request_signed_by_openssl_cms_sign_is_accepted_raw_der_too(env, tmp_path):
    key = new_key()
    b = _builder()
    bpid = b.add_tcr(_csr(key, f"{unique()}.example.com"))
    src = tmp_path / "pkidata.der"
    src.write_bytes(b.build())
    signed = subprocess.run(["openssl", "cms", "-sign", "-in", str(src), "-signer", env.ra.cert_path, "-inkey",
                             env.ra.key_path, "-econtent_type", oids.ID_CCT_PKI_DATA, "-nodetach", "-binary",
                             "-outform", "DER"], capture_output=True, check=True, timeout=30).stdout
    parsed = answer(env, post(env, signed, raw=True))
    assert statuses(parsed)[bpid].status == CMCStatus.success
    issued_for(parsed, key)
    # without -econtent_type openssl signs id-data: not a PKIData
    plain = subprocess.run(["openssl", "cms", "-sign", "-in", str(src), "-signer", env.ra.cert_path, "-inkey",
                            env.ra.key_path, "-nodetach", "-binary", "-outform", "DER"],
                           capture_output=True, check=True, timeout=30).stdout
    failure(env, post(env, plain), 400, CMCFailInfo.badRequest)
    # -nocerts: no certificate matches the signer identifier
    nocerts = subprocess.run(["openssl", "cms", "-sign", "-in", str(src), "-signer", env.ra.cert_path, "-inkey",
                              env.ra.key_path, "-econtent_type", oids.ID_CCT_PKI_DATA, "-nodetach", "-binary",
                              "-nocerts", "-outform", "DER"], capture_output=True, check=True, timeout=30).stdout
    failure(env, post(env, nocerts), 400, CMCFailInfo.badCertId)


def test_client_fullcmc_round_trips(env):
    msg, key, bpid, _b = ra_request(env)
    with EstClient(f"https://localhost:{env.srv.port}", "cmc", trust=env.chain) as client:
        result = client.fullcmc(msg)
        assert result.ok and result.status == 200
        assert key.public_key() in [c.public_key() for c in result.certificates]
        assert statuses(result.parse())[bpid].status == CMCStatus.success
        refused = client.fullcmc(msg)   # the same message again: a replay, answered with a CMC failure
        assert refused.status == 400 and not refused.ok
        (info,) = refused.parse().response.status_info_v2()
        assert info.fail_info == CMCFailInfo.badRequest and "replay" in info.status_string


# --- errors -------------------------------------------------------------------------------

def test_tampered_signature_is_bad_message_check(env):
    msg, _, _, _ = ra_request(env)
    failure(env, post(env, msg[:-1] + bytes([msg[-1] ^ 0x01])), 400, CMCFailInfo.badMessageCheck)


def test_unknown_signer_is_bad_identity(env):
    b = _builder()
    b.add_tcr(_csr(new_key(), f"{unique()}.example.com"))
    info = failure(env, post(env, b.sign(env.stranger.signer())), 401, CMCFailInfo.badIdentity)
    assert info.body_list == (0,)
    # audited exactly once, as every refused request
    rows = [line.split("\t") for line in env.srv.cli("audit", "list", "--limit", "50").stdout.splitlines()]
    mine = [r for r in rows if r[4] == env.stranger.cert.subject.rfc4514_string()]
    assert len(mine) == 1 and mine[0][1:4] == ["fullcmc", "rejected", "cmc"] and "badIdentity" in mine[0][7]


def test_unrecognised_control_fails_the_whole_request_naming_it(env):
    b = _builder()
    b.add_tcr(_csr(new_key(), f"{unique()}.example.com"))
    bad = b.control("1.2.3.4.5.6", [der.null()])
    info = failure(env, post(env, b.sign(env.ra.signer())), 400, CMCFailInfo.badRequest)
    assert info.body_list == (bad,)
    b = _builder()
    b.add_tcr(_csr(new_key(), f"{unique()}.example.com"))
    unsupported = b.control(oids.ID_CMC_GET_CRL, [der.seq(_name("x").public_bytes())])
    info = failure(env, post(env, b.sign(env.ra.signer())), 400, None, CMCStatus.noSupport)
    assert info.body_list == (unsupported,)


def test_other_request_format_is_no_support(env):
    b = _builder()
    orm = b.add_orm("1.2.3.4", der.null())
    parsed = answer(env, post(env, b.sign(env.ra.signer())), 400)
    assert statuses(parsed)[orm].status == CMCStatus.noSupport


def test_replayed_nonce_and_transaction_id_are_refused(env):
    msg, _, _, _ = ra_request(env)
    answer(env, post(env, msg))
    info = failure(env, post(env, msg), 400, CMCFailInfo.badRequest)
    assert "replay" in info.status_string
    b = cmc.PKIDataBuilder()
    b.transaction_id(4711)
    nonce = b.sender_nonce()
    b.add_tcr(_csr(new_key(), f"{unique()}.example.com"))
    answer(env, post(env, b.sign(env.ra.signer())))
    same_txid = cmc.PKIDataBuilder()
    same_txid.transaction_id(4711)
    same_txid.sender_nonce()
    same_txid.add_tcr(_csr(new_key(), f"{unique()}.example.com"))
    info = failure(env, post(env, same_txid.sign(env.ra.signer())), 400, CMCFailInfo.badRequest)
    assert "transactionId" in info.status_string
    same_nonce = cmc.PKIDataBuilder()
    same_nonce.transaction_id()
    same_nonce.sender_nonce(nonce)
    same_nonce.add_tcr(_csr(new_key(), f"{unique()}.example.com"))
    info = failure(env, post(env, same_nonce.sign(env.ra.signer())), 400, CMCFailInfo.badRequest)
    assert "senderNonce" in info.status_string
    # the transaction id is the RA's: another signer may use the same number
    key = new_key()
    entity = unique()
    otp = env.srv.otp(entity, "--label", "cmc")
    other = cmc.PKIDataBuilder()
    other.transaction_id(4711)
    other.add_tcr(_csr(key, f"{entity}.example.com", ski=True))
    answer(env, post(env, other.sign(_self_signer(key)), auth=(entity, otp)))


@pytest.mark.parametrize("ctype", ["application/pkcs10", "application/pkcs7-mime; smime-type=certs-only", None])
def test_wrong_content_type_is_a_cmc_bad_request(env, ctype):
    msg, _, _, _ = ra_request(env)
    headers = {"Content-Type": ctype} if ctype else {"Content-Type": ""}
    info = failure(env, post(env, msg, headers=headers), 400, CMCFailInfo.badRequest)
    assert "Content-Type" in info.status_string or "smime-type" in info.status_string


def test_content_type_without_smime_type_and_pem_armour_are_accepted(env):
    msg, key, bpid, _ = ra_request(env)
    pem = b"-----BEGIN CMS-----\n" + b64(msg) + b"-----END CMS-----\n"
    parsed = answer(env, post(env, pem, raw=True, headers={"Content-Type": "application/pkcs7-mime"}))
    assert statuses(parsed)[bpid].status == CMCStatus.success


def test_fullcmc_disabled_is_a_plain_404(env):
    msg, _, _, _ = ra_request(env)
    r = post(env, msg, label=None)
    assert r.status_code == 404 and r.headers["Content-Type"].startswith("text/plain")
    assert "fullcmc is not enabled" in r.text


def test_body_over_max_body_is_413_with_a_cmc_response(env):
    r = post(env, b"\x30\x82" + os.urandom(70_000), raw=True)
    failure(env, r, 413, CMCFailInfo.badRequest)


# --- hostile input over HTTP --------------------------------------------------------------

@pytest.fixture(scope="module")
def valid_message(env) -> bytes:
    return ra_request(env)[0]


def _tlv(tag: int, content: bytes) -> bytes:
    return der.tlv(tag, content)


_der_trees = st.recursive(
    st.builds(_tlv, st.sampled_from([0x02, 0x04, 0x05, 0x06, 0x0C, 0x80, 0x81]), st.binary(max_size=40)),
    lambda children: st.builds(lambda tag, parts: _tlv(tag, b"".join(parts)),
                               st.sampled_from([0x30, 0x31, 0xA0, 0xA1, 0xA2]), st.lists(children, max_size=5)),
    max_leaves=40)


def _hostile(valid: bytes):  # type: ignore[no-untyped-def]
    return st.one_of(
        st.binary(min_size=1, max_size=3000),
        st.integers(1, len(valid) - 1).map(lambda n: valid[:n]),
        _der_trees,
        st.builds(lambda t: der.seq(der.oid(oids.ID_SIGNED_DATA), der.explicit(0, t)), _der_trees),
        st.integers(60, 3000).map(lambda n: b"\x30\x80" * n + b"\x00\x00" * n),
        st.integers(60, 3000).map(lambda n: b"".join([b"\x30\x82" + (4 * (n - i)).to_bytes(2, "big")
                                                      for i in range(n)])),
    )


def test_hostile_bodies_get_400_with_a_cmc_failure_never_500(env, valid_message):
    session = requests.Session()

    @settings(max_examples=100, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(body=_hostile(valid_message), encode=st.booleans())
    def run(body: bytes, encode: bool) -> None:
        r = session.post(env.srv.url("fullcmc", "cmc"), data=b64(body) if encode else body, headers=CMC_REQUEST,
                         verify=env.chain, timeout=30)
        assert r.status_code == 400, (r.status_code, body[:64])
        assert r.headers["Content-Type"] == CMC_RESPONSE
        (info,) = cmc.parse_pki_response(base64.b64decode(r.content)).response.status_info_v2()
        assert info.status == CMCStatus.failed and info.fail_info is not None

    run()
    session.close()


def test_oversized_pki_data_is_400_bad_request(env):
    many = cmc.build_pki_data([cmc.Control(i, "1.2.3", (der.null(),)) for i in range(1, 4101)])  # 20,500 TLVs
    signed = cmc.sign_pki_data(many, env.ra.signer())
    assert len(signed) < 65536
    info = failure(env, post(env, signed, raw=True), 400, CMCFailInfo.badRequest)
    assert "too many" in info.status_string
    deep = b"\x30\x80" * 200 + b"\x00\x00" * 200
    failure(env, post(env, deep), 400, CMCFailInfo.badRequest)


# --- configuration ------------------------------------------------------------------------

def test_cmc_signer_signs_responses_when_configured(tmp_path):
    srv = make_server(tmp_path, replacements={
        r'^(pending_ttl = "7d".*)$': '\\1\nfullcmc = true\ncmc_signer_cert = "cmc-signer.pem"\n'
                                      'cmc_signer_key = "cmc-signer.key"'}, append=LABELS)
    make_test_ca(srv.dir, "cmc-ra-ca")
    signer_key = new_key()
    signer = sign_certificate(srv.dir / "ca" / "default.pem", srv.dir / "private" / "default.key",
                              signer_key.public_key(), "kipuka CMC signer", ekus=[CMC_CA])
    write_identity(srv.dir, "cmc-signer", signer_key, signer)
    (srv.dir / "cmc-signer.pem").write_bytes(
        signer.public_bytes(serialization.Encoding.PEM) + (srv.dir / "ca" / "default.pem").read_bytes())
    srv.start()
    try:
        ra = _party(tmp_path, "ra2", srv.dir / "cmc-ra-ca.crt", srv.dir / "cmc-ra-ca.key", [CMC_RA])
        key = new_key()
        b = _builder()
        bpid = b.add_tcr(_csr(key, f"{unique()}.example.com"))
        env = Env(srv, ra, ra, signer, srv.ca_bundle)
        r = post(env, b.sign(ra.signer()))
        parsed = answer(env, r, 200, "-purpose", "any")
        assert statuses(parsed)[bpid].status == CMCStatus.success
        assert openssl_verify(env, base64.b64decode(r.content)).returncode != 0  # cmcCA EKU: not S/MIME signing
        # [est] fullcmc = true turns it on for the unlabeled path too (whose policy trusts no RA)
        r = post(env, b.sign(ra.signer()), label=None)
        assert answer(env, r, 401, "-purpose", "any").response.status_info_v2()[0].fail_info == \
            CMCFailInfo.badIdentity
    finally:
        srv.stop()


def test_config_refuses_cmc_ra_eku_in_issued_certificates(tmp_path):
    d = tmp_path / "k"
    run_cli("init", str(d))
    cfg = d / "kipuka.toml"
    cfg.write_text(cfg.read_text() + '\n[labels.bad]\nekus = ["clientAuth", "1.3.6.1.5.5.7.3.28"]\n')
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    assert err.value.key == "labels.bad.ekus" and "cmcRA" in err.value.message


def _linked_csr(key, cn: str, password: bytes | None) -> x509.CertificateSigningRequest:
    b = x509.CertificateSigningRequestBuilder().subject_name(_name(cn)).add_extension(
        x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    if password is not None:
        b = b.add_attribute(x509.oid.AttributeOID.CHALLENGE_PASSWORD, password)
    return b.sign(key, hashes.SHA256())


def _self_signed_on(env: Env, entity: str, otp: str, password_of) -> tuple[int, bytes, int]:
    """A self-signed PKCS#10 request sent on a TLS 1.2 connection whose tls-unique it may carry."""
    import socket
    import ssl

    ctx = ssl.create_default_context(cafile=env.chain)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection(("127.0.0.1", env.srv.port)) as raw, \
            ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        key = new_key()
        b = _builder()
        b.identification(entity)
        bpid = b.add_tcr(_linked_csr(key, f"{entity}.example.com", password_of(tls.get_channel_binding("tls-unique"))))
        b.identity_proof_v2(otp)
        body = b64(b.sign(_self_signer(key)))
        auth = base64.b64encode(f"{entity}:{otp}".encode()).decode()
        tls.sendall((f"POST /.well-known/est/cmc-linked/fullcmc HTTP/1.1\r\nHost: localhost\r\n"
                     f"Content-Type: application/pkcs7-mime; smime-type=CMC-request\r\nConnection: close\r\n"
                     f"Authorization: Basic {auth}\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body)
        reply = b""
        while chunk := tls.recv(65536):
            reply += chunk
    head, _, payload = reply.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), base64.b64decode(payload), bpid


def test_linking_on_a_label_that_requires_it_is_checked_and_pop_failed_otherwise(env):
    """RFC 7030 §3.5: a Full PKI Request's PKCS#10 carries the TLS session's tls-unique in
    challengePassword; without it, or with another session's, the request fails with popFailed."""
    for password_of, expected in ((lambda binding: base64.b64encode(binding), CMCStatus.success),
                                  (lambda binding: None, CMCStatus.failed),
                                  (lambda binding: base64.b64encode(bytes(len(binding))), CMCStatus.failed)):
        entity = unique()
        otp = env.srv.otp(entity, "--label", "cmc-linked")
        status, der_response, bpid = _self_signed_on(env, entity, otp, password_of)
        parsed = cmc.parse_pki_response(der_response)
        info = statuses(parsed)[bpid]
        assert info.status == expected, (status, info)
        if expected == CMCStatus.failed:
            assert status == 400 and info.fail_info == CMCFailInfo.popFailed, (status, info)
            assert "TLS session" in info.status_string or "channel binding" in info.status_string


def test_an_ra_is_not_asked_to_link_its_requests(env):
    message, key, bpid, _ = ra_request(env)
    parsed = answer(env, post(env, message, label="cmc-linked"))
    assert statuses(parsed)[bpid].status == CMCStatus.success
    issued_for(parsed, key)

"""kipuka.cmc: Full CMC codec (RFC 5272 / 6402), with OpenSSL as the independent party.

A CA, an RA agent certificate (EKU id-kp-cmcRA) and a CMC signing certificate
(EKU id-kp-cmcCA) are made with cryptography. Requests built by kipuka.cmc are
parsed back; PKIData signed by `openssl cms -sign` is accepted; every response
kipuka.cmc signs is verified by `openssl cms -verify`.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import hmac
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kipuka import cmc
from kipuka.cmc import cms, der, oids
from kipuka.cmc.errors import CMCFailInfo, CmcError, CMCStatus

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")

NOW = dt.datetime.now(dt.timezone.utc)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "kipuka test"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject: str, key, issuer_cert, issuer_key, *, ca: bool = False, eku: list[str] | None = None,
          ski: bool = True) -> x509.Certificate:
    b = (x509.CertificateBuilder().subject_name(_name(subject))
         .issuer_name(issuer_cert.subject if issuer_cert is not None else _name(subject))
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(NOW - dt.timedelta(days=1)).not_valid_after(NOW + dt.timedelta(days=30))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        b = b.add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), True)
    else:
        b = b.add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), True)
    if eku:
        b = b.add_extension(x509.ExtendedKeyUsage([x509.ObjectIdentifier(o) for o in eku]), critical=False)
    if ski:
        b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    return b.sign(issuer_key if issuer_key is not None else key, hashes.SHA256())


@dataclass
class Party:
    key: object
    cert: x509.Certificate
    pem: Path
    key_pem: Path


@dataclass
class Pki:
    dir: Path
    ca: Party
    ra: Party          # EC P-256, EKU id-kp-cmcRA
    ra_rsa: Party      # RSA-2048, EKU id-kp-cmcRA
    cmc_ca: Party      # EC P-384, EKU id-kp-cmcCA: signs responses
    client: Party      # EC P-256 end entity, no EKU


def _write(directory: Path, name: str, key, cert) -> Party:
    pem = directory / f"{name}.pem"
    key_pem = directory / f"{name}.key"
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return Party(key, cert, pem, key_pem)


@functools.lru_cache(maxsize=1)
def _pki_material():
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _cert("Test CA", ca_key, None, None, ca=True)
    ra_key = ec.generate_private_key(ec.SECP256R1())
    ra_rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cmc_ca_key = ec.generate_private_key(ec.SECP384R1())
    client_key = ec.generate_private_key(ec.SECP256R1())
    return {
        "ca": (ca_key, ca_cert),
        "ra": (ra_key, _cert("RA agent", ra_key, ca_cert, ca_key, eku=[oids.ID_KP_CMC_RA])),
        "ra_rsa": (ra_rsa_key, _cert("RA agent RSA", ra_rsa_key, ca_cert, ca_key, eku=[oids.ID_KP_CMC_RA])),
        "cmc_ca": (cmc_ca_key, _cert("CMC signer", cmc_ca_key, ca_cert, ca_key, eku=[oids.ID_KP_CMC_CA])),
        "client": (client_key, _cert("client 1", client_key, ca_cert, ca_key)),
    }


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("cmc")
    m = _pki_material()
    return Pki(d, *(_write(d, name, *m[name]) for name in ("ca", "ra", "ra_rsa", "cmc_ca", "client")))


def _csr(key, cn: str = "device 1", *, ski: bool = False) -> x509.CertificateSigningRequest:
    b = x509.CertificateSigningRequestBuilder().subject_name(_name(cn))
    if ski:
        b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    return b.sign(key, hashes.SHA256())


def _openssl(*args: str, input: bytes | None = None, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["openssl", *args], input=input, capture_output=True, check=check, timeout=60)


def _openssl_verify(pki: Pki, resp: bytes, *extra: str) -> subprocess.CompletedProcess:
    path = pki.dir / f"resp-{os.urandom(4).hex()}.der"
    path.write_bytes(resp)
    return _openssl("cms", "-verify", "-inform", "DER", "-in", str(path), "-CAfile", str(pki.ca.pem), "-binary",
                    "-out", "/dev/null", *extra, check=False)


def _openssl_sign(pki: Pki, pkidata: bytes, signer: Party, *extra: str, econtent_type: str = oids.ID_CCT_PKI_DATA,
                  detach: bool = False) -> bytes:
    src = pki.dir / f"pkidata-{os.urandom(4).hex()}.der"
    src.write_bytes(pkidata)
    args = ["cms", "-sign", "-binary", "-outform", "DER", "-signer", str(signer.pem), "-inkey", str(signer.key_pem),
            "-in", str(src)]
    if not detach:
        args.append("-nodetach")
    if econtent_type:
        args += ["-econtent_type", econtent_type]
    return _openssl(*args, *extra).stdout


def _expect(fail_info: CMCFailInfo, fn, *args, **kw) -> CmcError:
    with pytest.raises(CmcError) as info:
        fn(*args, **kw)
    assert info.value.fail_info == fail_info, info.value
    return info.value


def _simple_request(pki: Pki, signer: cms.CmsSigner | None = None) -> tuple[bytes, bytes, int]:
    b = cmc.PKIDataBuilder()
    bpid = b.add_tcr(_csr(ec.generate_private_key(ec.SECP256R1())))
    b.transaction_id(12345)
    b.sender_nonce(b"n" * 16)
    pkidata = b.build()
    return cmc.sign_pki_data(pkidata, signer or cms.CmsSigner(pki.ra.key, pki.ra.cert)), pkidata, bpid


# ============================================================================ requests: round trips

def test_tcr_round_trip_signed_by_ra(pki: Pki) -> None:
    dev = ec.generate_private_key(ec.SECP256R1())
    csr = _csr(dev)
    b = cmc.PKIDataBuilder()
    bpid = b.add_tcr(csr)
    tid = b.transaction_id()
    nonce = b.sender_nonce()
    req = b.sign(cms.CmsSigner(pki.ra.key, pki.ra.cert))

    parsed = cmc.parse_cmc_request(req)
    assert parsed.depth == 1 and not parsed.self_signed
    (signer,) = parsed.signers
    assert signer.certificate == pki.ra.cert and signer.sid.kind == "issuerAndSerialNumber"
    assert cmc.has_cmc_ra_eku(signer.certificate)
    assert signer.signing_time is not None and abs(signer.signing_time - dt.datetime.now(dt.timezone.utc)) < dt.timedelta(minutes=10)
    (r,) = parsed.requests
    assert isinstance(r, cmc.CertificationRequest) and r.kind == "tcr" and r.body_part_id == bpid
    assert r.csr.subject == csr.subject and r.der == csr.public_bytes(serialization.Encoding.DER)
    assert r.pop.verified and r.pop.method == "signature"
    assert r.public_key_der == cms.spki_der(dev.public_key())
    pd = parsed.pki_data
    assert pd.transaction_id() == tid and pd.sender_nonce() == nonce and pd.recipient_nonce() is None
    assert pd.unrecognised_controls() == [] and pd.revoke_requests() == []
    assert set(parsed.certificates) == {pki.ra.cert}


@pytest.mark.parametrize("kind", ["ec", "rsa", "rsa-pss", "p384"])
def test_crm_round_trip_with_pop_signature(pki: Pki, kind: str) -> None:
    key = (rsa.generate_private_key(public_exponent=65537, key_size=2048) if kind.startswith("rsa")
           else ec.generate_private_key(ec.SECP384R1() if kind == "p384" else ec.SECP256R1()))
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    san = x509.SubjectAlternativeName([x509.DNSName("dev.example")])
    msg = cmc.build_crmf_request(key, cert_req_id=42, subject=_name("crmf device"),
                                 extensions=[x509.Extension(ski.oid, False, ski), x509.Extension(san.oid, True, san)],
                                 rsa_pss=kind == "rsa-pss")
    b = cmc.PKIDataBuilder()
    assert b.add_crm(msg) == 42
    parsed = cmc.parse_cmc_request(b.sign(cms.CmsSigner(pki.ra.key, pki.ra.cert)))
    (r,) = parsed.requests
    assert isinstance(r, cmc.CrmfRequest) and r.kind == "crm" and r.cert_req_id == r.body_part_id == 42
    assert r.subject == _name("crmf device")
    assert r.public_key_der == cms.spki_der(key.public_key())
    assert r.subject_key_identifier == ski.digest
    assert [(e.oid, e.critical) for e in r.extensions] == [(ski.oid.dotted_string, False),
                                                           (san.oid.dotted_string, True)]
    assert r.extension(san.oid.dotted_string).value == san.public_bytes()
    assert r.pop == cmc.Pop("signature", True, r.pop.algorithm, None)
    assert r.pop.algorithm == (oids.RSASSA_PSS if kind == "rsa-pss" else oids.SHA256_WITH_RSA if kind == "rsa"
                               else oids.ECDSA_SHA384 if kind == "p384" else oids.ECDSA_SHA256)
    r.pop.require(r.body_part_id)


def test_crm_pop_over_poposk_input(pki: Pki) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    msg = cmc.build_crmf_request(key, cert_req_id=3, subject=None, poposk_sender=_name("sender"))
    b = cmc.PKIDataBuilder()
    b.add_crm(msg)
    (r,) = cmc.parse_cmc_request(b.sign(cms.CmsSigner(pki.ra.key, pki.ra.cert))).requests
    assert r.subject is None and r.pop.verified and r.public_key_der == cms.spki_der(key.public_key())


def test_crm_bad_or_missing_pop_is_reported_per_request(pki: Pki) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    good = cmc.build_crmf_request(key, cert_req_id=1, subject=_name("a"))
    tampered = good[:-1] + bytes([good[-1] ^ 0x01])   # last byte of the POP signature
    ra_verified = cmc.build_crmf_request(key, cert_req_id=2, subject=_name("b"), pop="raVerified")
    no_pop = cmc.build_crmf_request(key, cert_req_id=3, subject=_name("c"), pop=None)
    b = cmc.PKIDataBuilder()
    for m in (tampered, ra_verified, no_pop):
        b.add_crm(m)
    parsed = cmc.parse_cmc_request(b.sign(cms.CmsSigner(pki.ra.key, pki.ra.cert)))
    pops = {r.body_part_id: r.pop for r in parsed.requests}
    assert pops[1].method == "signature" and not pops[1].verified
    assert pops[2].method == "raVerified" and not pops[2].verified
    assert pops[3].method == "none"
    assert _expect_raise(pops[1], 1).fail_info == CMCFailInfo.popFailed
    assert _expect_raise(pops[2], 2).fail_info == CMCFailInfo.popRequired
    assert _expect_raise(pops[3], 3).body_part_ids == (3,)


def _expect_raise(pop: cmc.Pop, bpid: int) -> CmcError:
    with pytest.raises(CmcError) as info:
        pop.require(bpid)
    return info.value


def test_tcr_with_bad_signature_is_reported_not_fatal(pki: Pki) -> None:
    csr_der = bytearray(_csr(ec.generate_private_key(ec.SECP256R1())).public_bytes(serialization.Encoding.DER))
    csr_der[-1] ^= 0x01
    b = cmc.PKIDataBuilder()
    b.add_tcr(bytes(csr_der))
    (r,) = cmc.parse_cmc_request(b.sign(cms.CmsSigner(pki.ra.key, pki.ra.cert))).requests
    assert r.pop.method == "signature" and not r.pop.verified


def test_revoke_request_round_trip(pki: Pki) -> None:
    b = cmc.PKIDataBuilder()
    inv = dt.datetime(2025, 5, 4, 3, 2, 1, tzinfo=dt.timezone.utc)
    b1 = b.revoke_request(pki.ca.cert.subject, 0x1234567890ABCDEF, x509.ReasonFlags.key_compromise,
                          invalidity_date=inv, passphrase=b"open sesame", comment="lost laptop \u00e9")
    b2 = b.revoke_request(pki.ca.cert.subject, 7)
    parsed = cmc.parse_cmc_request(b.sign(cms.CmsSigner(pki.ra.key, pki.ra.cert)))
    r1, r2 = parsed.pki_data.revoke_requests()
    assert (r1.body_part_id, r1.issuer, r1.serial_number, r1.reason_flag, r1.invalidity_date, r1.passphrase,
            r1.comment) == (b1, pki.ca.cert.subject, 0x1234567890ABCDEF, x509.ReasonFlags.key_compromise, inv,
                            b"open sesame", "lost laptop \u00e9")
    assert (r2.body_part_id, r2.serial_number, r2.reason, r2.invalidity_date, r2.passphrase, r2.comment) == \
        (b2, 7, 0, None, None, None)
    assert parsed.requests == ()


def test_query_pending_confirm_reginfo_datareturn_changesubject(pki: Pki) -> None:
    b = cmc.PKIDataBuilder()
    b.query_pending(b"\x01pend-token")
    b.confirm_cert_acceptance(pki.ca.cert.subject, 99)
    b.reg_info(b"ri-1")
    b.reg_info(b"ri-2")
    b.data_return(b"opaque")
    san = x509.SubjectAlternativeName([x509.DNSName("new.example")])
    b.change_subject_name(_name("new name"), san)
    b.control("1.2.3.4.5", [der.utf8("not a CMC control")])
    b.add_orm("1.2.3.9", der.octets(b"other request"))
    b.add_other_msg("1.2.3.10", der.null())
    pd = cmc.parse_cmc_request(b.sign(cms.CmsSigner(pki.ra.key, pki.ra.cert))).pki_data
    assert pd.query_pending() == b"\x01pend-token"
    (cid,) = pd.confirm_cert_acceptance()
    assert cid.issuer == pki.ca.cert.subject and cid.serial_number == 99
    assert pd.reg_info() == [b"ri-1", b"ri-2"]
    assert pd.data_return() == b"opaque"
    csn = pd.change_subject_name()
    assert csn.subject == _name("new name") and csn.subject_alt_der == san.public_bytes()
    (unknown,) = pd.unrecognised_controls()
    assert unknown.attr_type == "1.2.3.4.5" and unknown.values == (der.utf8("not a CMC control"),)
    (orm,) = pd.requests
    assert isinstance(orm, cmc.OtherRequest) and orm.message_type == "1.2.3.9"
    (other,) = pd.other_msgs
    assert (other.msg_type, other.value) == ("1.2.3.10", der.null())


@pytest.mark.parametrize("with_identification", [False, True])
@pytest.mark.parametrize("algs", [("sha256", "sha256"), ("sha512", "sha384"), ("sha1", "sha1")])
def test_identity_proof_v2(pki: Pki, with_identification: bool, algs: tuple[str, str]) -> None:
    b = cmc.PKIDataBuilder()
    b.add_tcr(_csr(ec.generate_private_key(ec.SECP256R1())))
    if with_identification:
        b.identification("device-7")
    ip_id = b.identity_proof_v2("correct horse battery", hash_name=algs[0], mac_hash_name=algs[1])
    parsed = cmc.parse_cmc_request(b.sign(cms.CmsSigner(pki.ra.key, pki.ra.cert)))
    pd = parsed.pki_data
    proof = pd.identity_proof_v2()
    assert proof.body_part_id == ip_id
    pd.verify_identity_proof("correct horse battery")
    pd.verify_identity_proof(b"correct horse battery")
    err = _expect(CMCFailInfo.badIdentity, pd.verify_identity_proof, "wrong secret")
    assert err.body_part_ids == (ip_id,)
    # independent recomputation over the reqSequence bytes as they sit in the PKIData (RFC 5272 §6.2.1)
    req_sequence = der.children(pd.der)[1]
    assert req_sequence == pd.req_sequence_der
    material = b"correct horse battery" + (b"device-7" if with_identification else b"")
    key = hashlib.new(algs[0], material).digest()
    assert proof.witness == hmac.new(key, req_sequence, algs[1]).digest()


def test_identity_proof_v1_and_missing(pki: Pki) -> None:
    b = cmc.PKIDataBuilder()
    b.add_tcr(_csr(ec.generate_private_key(ec.SECP256R1())))
    b.identity_proof("s3cret")
    pd = cmc.parse_cmc_request(b.sign(cms.CmsSigner(pki.ra.key, pki.ra.cert))).pki_data
    assert pd.has_identity_proof()
    pd.verify_identity_proof("s3cret")
    _expect(CMCFailInfo.badIdentity, pd.verify_identity_proof, "other")
    req, _pkidata, _ = _simple_request(pki)
    plain = cmc.parse_cmc_request(req).pki_data
    assert not plain.has_identity_proof()
    _expect(CMCFailInfo.badIdentity, plain.verify_identity_proof, "s3cret")


def test_identity_proof_v2_tampered_request_fails(pki: Pki) -> None:
    b = cmc.PKIDataBuilder()
    b.add_tcr(_csr(ec.generate_private_key(ec.SECP256R1())))
    b.identity_proof_v2("secret")
    pkidata = b.build()
    # an RA that swaps the request for another (and re-signs) cannot keep the witness valid
    other = cmc.PKIDataBuilder()
    other.add_tcr(_csr(ec.generate_private_key(ec.SECP256R1())))
    witness_control = cmc.parse_cmc_request(cmc.sign_pki_data(pkidata, cms.CmsSigner(pki.ra.key, pki.ra.cert))
                                            ).pki_data.controls_of(oids.ID_CMC_IDENTITY_PROOF_V2)[0]
    forged = cmc.build_pki_data([witness_control], [der.children(der.children(other.build())[1])[0]])
    pd = cmc.parse_cmc_request(cmc.sign_pki_data(forged, cms.CmsSigner(pki.ra.key, pki.ra.cert))).pki_data
    _expect(CMCFailInfo.badIdentity, pd.verify_identity_proof, "secret")


@pytest.mark.parametrize("signer_kind", ["ec-ski", "rsa", "rsa-pss", "p384", "ed25519"])
def test_signer_kinds(pki: Pki, signer_kind: str) -> None:
    if signer_kind == "ec-ski":
        signer = cms.CmsSigner(pki.ra.key, pki.ra.cert, sid="subjectKeyIdentifier")
    elif signer_kind.startswith("rsa"):
        signer = cms.CmsSigner(pki.ra_rsa.key, pki.ra_rsa.cert, rsa_pss=signer_kind == "rsa-pss")
    elif signer_kind == "p384":
        signer = cms.CmsSigner(pki.cmc_ca.key, pki.cmc_ca.cert)
    else:
        from cryptography.hazmat.primitives.asymmetric import ed25519
        k = ed25519.Ed25519PrivateKey.generate()
        signer = cms.CmsSigner(k, _cert("ed signer", k, pki.ca.cert, pki.ca.key, eku=[oids.ID_KP_CMC_RA]))
    req, _, _ = _simple_request(pki, signer)
    (s,) = cmc.parse_cmc_request(req).signers
    assert s.certificate == signer.certificate
    assert s.sid.kind == signer.sid


@pytest.mark.parametrize("kind", ["tcr", "crm"])
def test_self_signed_pki_data(pki: Pki, kind: str) -> None:
    """RFC 5272 §3.2: signed with the key of its own request, sid = that request's SKI extension."""
    key = ec.generate_private_key(ec.SECP256R1())
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    b = cmc.PKIDataBuilder()
    if kind == "tcr":
        bpid = b.add_tcr(_csr(key, ski=True))
    else:
        bpid = b.add_crm(cmc.build_crmf_request(key, cert_req_id=5, subject=_name("self"),
                                                extensions=[x509.Extension(ski.oid, False, ski)]))
    b.transaction_id(1)
    signer = cms.CmsSigner(key, None, sid="subjectKeyIdentifier", ski=ski.digest)
    parsed = cmc.parse_cmc_request(b.sign(signer))
    assert parsed.self_signed and parsed.certificates == ()
    (s,) = parsed.signers
    assert s.certificate is None and s.request_body_part_id == bpid
    assert s.sid.subject_key_identifier == ski.digest and cms.same_key(s.public_key, key.public_key())

    # a second SignerInfo is not allowed when a request key signs
    two = cmc.sign_pki_data(b.build(), [signer, cms.CmsSigner(pki.ra.key, pki.ra.cert)])
    _expect(CMCFailInfo.badRequest, cmc.parse_cmc_request, two)
    # a request key whose request declares no SKI cannot be found: badCertId
    b2 = cmc.PKIDataBuilder()
    b2.add_tcr(_csr(key, ski=False))
    _expect(CMCFailInfo.badCertId, cmc.parse_cmc_request, b2.sign(signer))


def _batch(pki: Pki, inner: list[bytes], signer: cms.CmsSigner | None = None) -> bytes:
    b = cmc.PKIDataBuilder()
    ids = [b.add_content(x) for x in inner]
    b.batch_requests(ids)
    b.transaction_id(77)
    return b.sign(signer or cms.CmsSigner(pki.ra.key, pki.ra.cert))


def test_batch_requests_nest_verified_pki_data(pki: Pki) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    c1 = cmc.PKIDataBuilder()
    c1.add_tcr(_csr(key, ski=True))
    client1 = c1.sign(cms.CmsSigner(key, None, sid="subjectKeyIdentifier", ski=ski.digest))
    client2, _, c2_bpid = _simple_request(pki, cms.CmsSigner(pki.client.key, pki.client.cert))
    broken = bytearray(client2)
    broken[-1] ^= 0x01  # its signature no longer verifies
    outer = cmc.parse_cmc_request(_batch(pki, [client1, client2, bytes(broken)]))
    assert outer.pki_data.batch_requests() == [1, 2, 3]
    first, second, third = outer.pki_data.batch_contents()
    assert first.nested.self_signed and first.nested.depth == 2
    assert second.nested.signers[0].certificate == pki.client.cert
    assert second.nested.requests[0].body_part_id == c2_bpid
    assert third.nested is None and third.error.fail_info == CMCFailInfo.badMessageCheck
    assert third.error.body_part_ids[0] == 3


def test_batch_nesting_depth_is_bounded(pki: Pki) -> None:
    msg, _, _ = _simple_request(pki)
    for _ in range(4):          # depth 5 in all
        msg = _batch(pki, [msg])
    err = _expect(CMCFailInfo.badRequest, cmc.parse_cmc_request, msg)
    assert isinstance(err, cmc.CmcLimitError) and "deep" in err.reason
    parsed = cmc.parse_cmc_request(msg, max_depth=5)
    inner = parsed
    for _ in range(4):
        inner = inner.pki_data.batch_contents()[0].nested
    assert inner.depth == 5 and inner.requests[0].kind == "tcr"
    _expect(CMCFailInfo.badRequest, cmc.parse_cmc_request, msg, max_depth=5, max_messages=4)


def test_batch_reference_to_missing_body_part(pki: Pki) -> None:
    b = cmc.PKIDataBuilder()
    b.batch_requests([9])
    pd = cmc.parse_cmc_request(b.sign(cms.CmsSigner(pki.ra.key, pki.ra.cert))).pki_data
    assert _expect(CMCFailInfo.badRequest, pd.batch_contents).body_part_ids == (9,)


def test_duplicate_body_part_ids_rejected(pki: Pki) -> None:
    csr = _csr(ec.generate_private_key(ec.SECP256R1()))
    pkidata = cmc.build_pki_data([cmc.transaction_id_control(1, 5)], [cmc.tcr(1, csr)])
    err = _expect(CMCFailInfo.badRequest, cmc.parse_cmc_request,
                  cmc.sign_pki_data(pkidata, cms.CmsSigner(pki.ra.key, pki.ra.cert)))
    assert err.body_part_ids == (1,)


def test_repeated_singleton_control_rejected(pki: Pki) -> None:
    pkidata = cmc.build_pki_data([cmc.transaction_id_control(1, 5), cmc.transaction_id_control(2, 6)])
    err = _expect(CMCFailInfo.badRequest, cmc.parse_cmc_request,
                  cmc.sign_pki_data(pkidata, cms.CmsSigner(pki.ra.key, pki.ra.cert)))
    assert err.body_part_ids == (1, 2)


def test_malformed_control_value_names_its_body_part(pki: Pki) -> None:
    pkidata = cmc.build_pki_data([cmc.Control(4, oids.ID_CMC_TRANSACTION_ID, (der.octets(b"x"),))])
    err = _expect(CMCFailInfo.badRequest, cmc.parse_cmc_request,
                  cmc.sign_pki_data(pkidata, cms.CmsSigner(pki.ra.key, pki.ra.cert)))
    assert err.body_part_ids == (4,)


# ============================================================================ requests signed by OpenSSL

@pytest.mark.parametrize("variant", ["ec", "ec-keyid", "rsa", "rsa-pss", "sha384", "stream"])
def test_openssl_signed_pki_data_is_accepted(pki: Pki, variant: str) -> None:
    b = cmc.PKIDataBuilder()
    bpid = b.add_tcr(_csr(ec.generate_private_key(ec.SECP256R1())))
    b.transaction_id(4242)
    pkidata = b.build()
    signer = pki.ra_rsa if variant.startswith("rsa") else pki.ra
    extra = {"ec-keyid": ["-keyid"], "rsa-pss": ["-keyopt", "rsa_padding_mode:pss"], "sha384": ["-md", "sha384"],
             "stream": ["-stream"]}.get(variant, [])
    msg = _openssl_sign(pki, pkidata, signer, *extra)
    if variant == "stream":
        assert b"\x80" in msg[:8]  # indefinite-length BER, as OpenSSL streams it
    parsed = cmc.parse_cmc_request(msg)
    (s,) = parsed.signers
    assert s.certificate == signer.cert
    assert s.sid.kind == ("subjectKeyIdentifier" if variant == "ec-keyid" else "issuerAndSerialNumber")
    if variant == "rsa-pss":
        assert s.signature_algorithm == oids.RSASSA_PSS
    if variant == "sha384":
        assert s.digest_algorithm == oids.ID_SHA384
    assert parsed.pki_data.der == pkidata
    assert parsed.requests[0].body_part_id == bpid and parsed.pki_data.transaction_id() == 4242


def _indefinite(data: bytes) -> bytes:
    """BER: every constructed element re-encoded with an indefinite length (single-byte tags only)."""
    out, pos = b"", 0
    while pos < len(data):
        first, lb = data[pos], data[pos + 1]
        head, n = (2, lb) if lb < 0x80 else (2 + (lb & 0x7F), int.from_bytes(data[pos + 2:pos + 2 + (lb & 0x7F)], "big"))
        content = data[pos + head:pos + head + n]
        out += bytes([first]) + b"\x80" + _indefinite(content) + b"\x00\x00" if first & 0x20 else \
            data[pos:pos + head + n]
        pos += head + n
    return out


def test_indefinite_length_ber_is_accepted(pki: Pki) -> None:
    req, pkidata, bpid = _simple_request(pki)
    ber = _indefinite(req)
    assert len(ber) > len(req) and der.definite(ber) == req
    parsed = cmc.parse_cmc_request(ber)
    assert parsed.pki_data.der == pkidata and parsed.requests[0].body_part_id == bpid


def test_openssl_signed_with_sha1_is_bad_alg(pki: Pki) -> None:
    _, pkidata, _ = _simple_request(pki)
    _expect(CMCFailInfo.badAlg, cmc.parse_cmc_request, _openssl_sign(pki, pkidata, pki.ra, "-md", "sha1"))


def test_openssl_without_certificates_is_bad_cert_id(pki: Pki) -> None:
    """An unknown signer: no certificate in the set matches the sid (failInfo badCertId, RFC 5272 §6.1.4)."""
    _, pkidata, _ = _simple_request(pki)
    err = _expect(CMCFailInfo.badCertId, cmc.parse_cmc_request, _openssl_sign(pki, pkidata, pki.ra, "-nocerts"))
    assert "signer identifier" in err.reason


def test_openssl_id_data_and_detached_are_bad_request(pki: Pki) -> None:
    _, pkidata, _ = _simple_request(pki)
    _expect(CMCFailInfo.badRequest, cmc.parse_cmc_request, _openssl_sign(pki, pkidata, pki.ra, econtent_type=""))
    _expect(CMCFailInfo.badRequest, cmc.parse_cmc_request, _openssl_sign(pki, pkidata, pki.ra, detach=True))


# ============================================================================ requests: negative

def test_tampered_signature_is_bad_message_check(pki: Pki) -> None:
    req, _, _ = _simple_request(pki)
    bad = req[:-1] + bytes([req[-1] ^ 0x01])  # the last octet of the SignerInfo signature
    _expect(CMCFailInfo.badMessageCheck, cmc.parse_cmc_request, bad)


def test_message_digest_mismatch_is_bad_message_check(pki: Pki) -> None:
    req, _, _ = _simple_request(pki)
    i = req.index(b"n" * 16)   # the senderNonce inside eContent
    bad = req[:i] + b"m" + req[i + 1:]
    err = _expect(CMCFailInfo.badMessageCheck, cmc.parse_cmc_request, bad)
    assert "message-digest" in err.reason


def test_wrong_econtent_type_is_bad_request(pki: Pki) -> None:
    _, pkidata, _ = _simple_request(pki)
    signer = cms.CmsSigner(pki.ra.key, pki.ra.cert)
    for ctype in (oids.ID_DATA, oids.ID_CCT_PKI_RESPONSE):
        err = _expect(CMCFailInfo.badRequest, cmc.parse_cmc_request, cms.signed_data(ctype, pkidata, [signer]))
        assert "eContentType" in err.reason


def test_content_type_attribute_mismatch_is_bad_message_check(pki: Pki) -> None:
    _, pkidata, _ = _simple_request(pki)
    signed = cms.signed_data(oids.ID_CCT_PKI_RESPONSE, pkidata, [cms.CmsSigner(pki.ra.key, pki.ra.cert)])
    # rewrite eContentType only (its first occurrence); the signed content-type attribute keeps PKIResponse
    resp_oid, data_oid = der.oid(oids.ID_CCT_PKI_RESPONSE), der.oid(oids.ID_CCT_PKI_DATA)
    forged = signed.replace(resp_oid, data_oid, 1)
    err = _expect(CMCFailInfo.badMessageCheck, cmc.parse_cmc_request, forged)
    assert "content-type" in err.reason


def test_not_signed_data_is_bad_request(pki: Pki) -> None:
    _, pkidata, _ = _simple_request(pki)
    unsigned = der.seq(der.oid(oids.ID_CCT_PKI_DATA), der.explicit(0, pkidata))
    _expect(CMCFailInfo.badRequest, cmc.parse_cmc_request, unsigned)
    auth = der.seq(der.oid(oids.ID_CT_AUTH_DATA), der.explicit(0, der.seq(der.integer(0))))
    assert "AuthenticatedData" in _expect(CMCFailInfo.badRequest, cmc.parse_cmc_request, auth).reason


def test_truncated_every_prefix_is_bad_request(pki: Pki) -> None:
    req, _, _ = _simple_request(pki)
    for n in list(range(0, 64)) + list(range(64, len(req), 7)):
        _expect(CMCFailInfo.badRequest, cmc.parse_cmc_request, req[:n])


def test_trailing_garbage_random_bytes_and_non_bytes(pki: Pki) -> None:
    req, _, _ = _simple_request(pki)
    _expect(CMCFailInfo.badRequest, cmc.parse_cmc_request, req + b"\x00")
    _expect(CMCFailInfo.badRequest, cmc.parse_cmc_request, os.urandom(500))
    _expect(CMCFailInfo.badRequest, cmc.parse_cmc_request, b"")
    _expect(CMCFailInfo.badRequest, cmc.parse_cmc_request, "not bytes")  # type: ignore[arg-type]
    _expect(CMCFailInfo.badRequest, cmc.parse_cmc_request, b"-----BEGIN CMS-----\n")


def test_deep_tlv_nesting_is_bad_request() -> None:
    deep = b"\x05\x00"
    for _ in range(2000):
        deep = der.seq(deep)
    err = _expect(CMCFailInfo.badRequest, cmc.parse_cmc_request, deep)
    assert "deep" in err.reason
    indefinite = b"\x30\x80" * 5000 + b"\x00\x00" * 5000
    _expect(CMCFailInfo.badRequest, cmc.parse_cmc_request, indefinite)


def test_oversized_and_too_many_elements_are_bad_request(pki: Pki) -> None:
    req, _, _ = _simple_request(pki)
    err = _expect(CMCFailInfo.badRequest, cmc.parse_cmc_request, req, max_size=len(req) - 1)
    assert isinstance(err, cmc.CmcLimitError)
    _expect(CMCFailInfo.badRequest, cmc.parse_cmc_request, b"\x30" + b"\x84\x7f\xff\xff\xff" + b"\x00" * 10)
    many = cmc.build_pki_data([cmc.Control(i, "1.2.3", (der.null(),)) for i in range(1, 4101)])  # 5 TLVs each
    signed = cmc.sign_pki_data(many, cms.CmsSigner(pki.ra.key, pki.ra.cert))
    assert "too many" in _expect(CMCFailInfo.badRequest, cmc.parse_cmc_request, signed).reason
    assert len(cmc.parse_cmc_request(signed, max_elements=30_000).controls) == 4100


# ============================================================================ responses

def _response_controls(request: cmc.PKIData, ids: cmc.BodyPartIds, bpid: int) -> list[cmc.Control]:
    return [
        cmc.status_info_v2(ids.next(), CMCStatus.success, [bpid], status_string="issued"),
        cmc.status_info_v2(ids.next(), CMCStatus.failed, [(3, 4)], fail_info=CMCFailInfo.popFailed),
        cmc.status_info_v2(ids.next(), CMCStatus.pending, [0], pend_token=b"tok",
                           pend_time=dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)),
        cmc.status_info_v2(ids.next(), CMCStatus.noSupport, [bpid], extended_fail_info=("1.2.3.4", der.null())),
        cmc.status_info_v2(ids.next(), CMCStatus.confirmRequired, [bpid]),
        cmc.status_info_v2(ids.next(), CMCStatus.popRequired, [bpid]),
        cmc.status_info_v2(ids.next(), CMCStatus.partial, [bpid, 9]),
        *cmc.echo_controls(request, ids),
    ]


@pytest.mark.parametrize("signer_kind", ["ca", "cmc-ca-p384", "ra-rsa", "ra-rsa-pss", "ski"])
def test_pki_response_is_verified_by_openssl(pki: Pki, signer_kind: str) -> None:
    req, _, bpid = _simple_request(pki)
    request = cmc.parse_cmc_request(req).pki_data
    issued_key = ec.generate_private_key(ec.SECP256R1())
    issued = _cert("issued device", issued_key, pki.ca.cert, pki.ca.key)
    ids = cmc.BodyPartIds()
    controls = _response_controls(request, ids, bpid)
    party = {"ca": pki.ca, "cmc-ca-p384": pki.cmc_ca, "ra-rsa": pki.ra_rsa, "ra-rsa-pss": pki.ra_rsa,
             "ski": pki.ra}[signer_kind]
    chain = [] if party is pki.ca else [pki.ca.cert]
    resp = cmc.build_pki_response(controls, [], [issued], party.key, party.cert, chain,
                                  rsa_pss=signer_kind == "ra-rsa-pss",
                                  sid="subjectKeyIdentifier" if signer_kind == "ski" else "issuerAndSerialNumber")

    # the exact command: the CA signs with a certificate that has no EKU
    extra = () if party is pki.ca else ("-purpose", "any")
    p = _openssl_verify(pki, resp, *extra)
    assert p.returncode == 0, p.stderr.decode()
    if party is not pki.ca:
        # OpenSSL's default purpose for cms -verify is S/MIME signing, which an EKU of cmcCA/cmcRA fails
        assert _openssl_verify(pki, resp).returncode != 0
    # ... and OpenSSL really checks the signature
    assert _openssl_verify(pki, resp[:-1] + bytes([resp[-1] ^ 1]), *extra).returncode != 0

    parsed = cmc.parse_pki_response(resp)
    assert issued in parsed.certificates and party.cert in parsed.certificates
    assert parsed.signers[0].certificate == party.cert
    infos = parsed.response.status_info_v2()
    assert [i.status for i in infos] == [CMCStatus.success, CMCStatus.failed, CMCStatus.pending, CMCStatus.noSupport,
                                         CMCStatus.confirmRequired, CMCStatus.popRequired, CMCStatus.partial]
    assert infos[0].body_list == (bpid,) and infos[0].status_string == "issued"
    assert infos[1].body_list == ((3, 4),) and infos[1].fail_info == CMCFailInfo.popFailed
    assert infos[2].pend_token == b"tok" and infos[2].pend_time == dt.datetime(2030, 1, 2, 3, 4, 5,
                                                                                tzinfo=dt.timezone.utc)
    assert infos[3].extended_fail_info == ("1.2.3.4", der.null())
    assert infos[6].body_list == (bpid, 9)
    r = parsed.response
    assert r.transaction_id() == 12345 and r.recipient_nonce() == b"n" * 16
    assert r.sender_nonce() is not None and len(r.sender_nonce()) == 16


def test_failure_response_from_cmc_error(pki: Pki) -> None:
    req, _, _ = _simple_request(pki)
    bad = req[:-1] + bytes([req[-1] ^ 0x01])
    with pytest.raises(CmcError) as info:
        cmc.parse_cmc_request(bad)
    resp = cmc.build_failure_response(info.value, cms.CmsSigner(pki.ca.key, pki.ca.cert))
    assert _openssl_verify(pki, resp).returncode == 0
    (status,) = cmc.parse_pki_response(resp).response.status_info_v2()
    assert status.status == CMCStatus.failed and status.fail_info == CMCFailInfo.badMessageCheck
    assert status.body_list == (0,) and status.status_string == info.value.reason


def test_response_with_nested_cms_and_batch_responses(pki: Pki) -> None:
    inner = cmc.build_pki_response([cmc.status_info_v2(1, CMCStatus.success, [1])], signer=cms.CmsSigner(
        pki.ca.key, pki.ca.cert))
    resp = cmc.build_pki_response([cmc.batch_responses_control(1, [2])], [(2, inner)], [], pki.ca.key, pki.ca.cert)
    assert _openssl_verify(pki, resp).returncode == 0
    parsed = cmc.parse_pki_response(resp)
    assert parsed.response.batch_responses() == [2]
    (item,) = parsed.response.cms_sequence
    assert item.body_part_id == 2 and item.content_info == inner
    assert cmc.parse_pki_response(item.content_info).response.status_info_v2()[0].status == CMCStatus.success


def test_response_builders_reject_misuse(pki: Pki) -> None:
    with pytest.raises(ValueError):
        cmc.status_info_v2(1, CMCStatus.failed, [])
    with pytest.raises(ValueError):
        cmc.status_info_v2(1, CMCStatus.failed, [1], fail_info=CMCFailInfo.badAlg, pend_token=b"x",
                           pend_time=NOW)
    with pytest.raises(ValueError):
        cmc.encode_pki_response([cmc.transaction_id_control(1, 1), cmc.sender_nonce_control(1, b"x")])
    with pytest.raises(ValueError):
        cms.CmsSigner(pki.ra.key, pki.ca.cert)   # the certificate is not the key's
    ids = cmc.BodyPartIds()
    assert ids.claim(5) == 5 and [ids.next() for _ in range(5)] == [1, 2, 3, 4, 6]
    with pytest.raises(ValueError):
        ids.claim(5)
    with pytest.raises(ValueError):
        ids.claim(0)


def test_parse_response_rejects_a_request(pki: Pki) -> None:
    req, _, _ = _simple_request(pki)
    _expect(CMCFailInfo.badRequest, cmc.parse_pki_response, req)
    resp = cmc.build_pki_response([], [], [], pki.ca.key, pki.ca.cert)
    _expect(CMCFailInfo.badRequest, cmc.parse_cmc_request, resp)


# ============================================================================ fuzzing

@functools.lru_cache(maxsize=1)
def _fuzz_corpus() -> tuple[bytes, ...]:
    m = _pki_material()
    ra_key, ra_cert = m["ra"]
    key = ec.generate_private_key(ec.SECP256R1())
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    b = cmc.PKIDataBuilder()
    b.add_tcr(_csr(key, ski=True))
    b.add_crm(cmc.build_crmf_request(key, cert_req_id=9, subject=_name("f"),
                                     extensions=[x509.Extension(ski.oid, False, ski)]))
    b.transaction_id(5)
    b.sender_nonce()
    b.identification("x")
    b.identity_proof_v2("s")
    b.revoke_request(ra_cert.issuer, 3, comment="c")
    plain = b.sign(cms.CmsSigner(ra_key, ra_cert))
    self_signed = b.sign(cms.CmsSigner(key, None, sid="subjectKeyIdentifier", ski=ski.digest))
    outer = cmc.PKIDataBuilder()
    outer.batch_requests([outer.add_content(self_signed)])
    batch = outer.sign(cms.CmsSigner(ra_key, ra_cert))
    return plain, self_signed, batch


def _only_cmc_errors(data: bytes) -> None:
    try:
        cmc.parse_cmc_request(data)
    except CmcError:
        pass


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096))
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    _only_cmc_errors(data)
    try:
        cmc.parse_pki_response(data)
    except CmcError:
        pass


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_mutated_valid_requests(data: st.DataObject) -> None:
    corpus = _fuzz_corpus()
    msg = bytearray(corpus[data.draw(st.integers(0, len(corpus) - 1))])
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "length"]))
        pos = data.draw(st.integers(0, max(0, len(msg) - 1)))
        if op == "flip" and msg:
            msg[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "set" and msg:
            msg[pos] = data.draw(st.sampled_from([0x00, 0x80, 0x81, 0x84, 0xFF, 0x30, 0xA0, 0x04, 0x02]))
        elif op == "insert":
            msg[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and msg:
            del msg[pos:pos + data.draw(st.integers(1, 8))]
        elif op == "truncate":
            del msg[pos:]
        elif op == "length" and msg:
            msg[pos] = data.draw(st.integers(0x80, 0x84))
    _only_cmc_errors(bytes(msg))


def test_fuzz_corpus_is_valid() -> None:
    plain, self_signed, batch = _fuzz_corpus()
    assert not cmc.parse_cmc_request(plain).self_signed
    assert cmc.parse_cmc_request(self_signed).self_signed
    assert cmc.parse_cmc_request(batch).pki_data.batch_contents()[0].nested.self_signed


# ============================================================================ Bouncy Castle, a second independent party

BC_JARS = [Path("/usr/share/java") / j for j in ("bcprov.jar", "bcpkix.jar", "bcutil.jar")]
BC_SOURCE = r"""
import java.math.BigInteger;
import java.nio.file.*;
import java.security.*;
import java.security.spec.*;
import java.util.*;
import org.bouncycastle.asn1.*;
import org.bouncycastle.asn1.cmc.*;
import org.bouncycastle.asn1.crmf.CertReqMsg;
import org.bouncycastle.asn1.x500.X500Name;
import org.bouncycastle.asn1.x509.SubjectPublicKeyInfo;
import org.bouncycastle.cert.*;
import org.bouncycastle.cert.crmf.*;
import org.bouncycastle.cert.crmf.jcajce.*;
import org.bouncycastle.cert.jcajce.*;
import org.bouncycastle.cms.*;
import org.bouncycastle.cms.jcajce.*;
import org.bouncycastle.jce.provider.BouncyCastleProvider;
import org.bouncycastle.operator.ContentSigner;
import org.bouncycastle.operator.jcajce.*;
import org.bouncycastle.pkcs.PKCS10CertificationRequest;
import org.bouncycastle.pkcs.jcajce.JcaPKCS10CertificationRequestBuilder;
import org.bouncycastle.util.Store;

public class BcCmc {
    static CMSSignedData verify(byte[] der) throws Exception {
        CMSSignedData sd = new CMSSignedData(der);
        Store<X509CertificateHolder> certs = sd.getCertificates();
        for (SignerInformation si : sd.getSignerInfos().getSigners()) {
            X509CertificateHolder c = (X509CertificateHolder) certs.getMatches(si.getSID()).iterator().next();
            System.out.println("signer-verified " + si.verify(new JcaSimpleSignerInfoVerifierBuilder().setProvider("BC").build(c)));
        }
        System.out.println("econtent-type " + sd.getSignedContentTypeOID());
        return sd;
    }
    static PublicKey key(SubjectPublicKeyInfo spki) throws Exception {
        String alg = spki.getAlgorithm().getAlgorithm().getId().equals("1.2.840.10045.2.1") ? "EC" : "RSA";
        return KeyFactory.getInstance(alg, "BC").generatePublic(new X509EncodedKeySpec(spki.getEncoded()));
    }
    public static void main(String[] a) throws Exception {
        Security.addProvider(new BouncyCastleProvider());
        if (a[0].equals("check-request")) {
            PKIData pd = PKIData.getInstance(verify(Files.readAllBytes(Paths.get(a[1]))).getSignedContent().getContent());
            for (TaggedAttribute ta : pd.getControlSequence()) {
                if (ta.getAttrType().equals(CMCObjectIdentifiers.id_cmc_revokeRequest)) {
                    RevokeRequest rr = RevokeRequest.getInstance(ta.getAttrValues().getObjectAt(0));
                    System.out.println("revoke " + rr.getSerialNumber() + " " + rr.getReason().getValue() + " " + rr.getComment());
                } else if (ta.getAttrType().equals(CMCObjectIdentifiers.id_cmc_identityProofV2)) {
                    IdentityProofV2 ip = IdentityProofV2.getInstance(ta.getAttrValues().getObjectAt(0));
                    System.out.println("identityProofV2 " + ip.getProofAlgID().getAlgorithm() + " " + ip.getMacAlgId().getAlgorithm());
                }
            }
            for (TaggedRequest tr : pd.getReqSequence()) {
                if (tr.getTagNo() == TaggedRequest.CRM) {
                    CertificateRequestMessage m = new CertificateRequestMessage(CertReqMsg.getInstance(tr.getValue()));
                    SubjectPublicKeyInfo spki = m.getCertTemplate().getPublicKey();
                    System.out.println("crm " + m.toASN1Structure().getCertReq().getCertReqId().getValue() + " pop "
                        + m.isValidSigningKeyPOP(new JcaContentVerifierProviderBuilder().setProvider("BC").build(key(spki))));
                } else if (tr.getTagNo() == TaggedRequest.TCR) {
                    ASN1Sequence s = ASN1Sequence.getInstance(tr.getValue());
                    PKCS10CertificationRequest p10 = new PKCS10CertificationRequest(
                        org.bouncycastle.asn1.pkcs.CertificationRequest.getInstance(s.getObjectAt(1)));
                    System.out.println("tcr " + BodyPartID.getInstance(s.getObjectAt(0)).getID() + " pop " + p10.isSignatureValid(
                        new JcaContentVerifierProviderBuilder().setProvider("BC").build(p10.getSubjectPublicKeyInfo())));
                }
            }
        } else if (a[0].equals("check-response")) {
            PKIResponse pr = PKIResponse.getInstance(verify(Files.readAllBytes(Paths.get(a[1]))).getSignedContent().getContent());
            for (int i = 0; i < pr.getControlSequence().size(); i++) {
                TaggedAttribute ta = TaggedAttribute.getInstance(pr.getControlSequence().getObjectAt(i));
                if (!ta.getAttrType().equals(CMCObjectIdentifiers.id_cmc_statusInfoV2)) continue;
                CMCStatusInfoV2 s = CMCStatusInfoV2.getInstance(ta.getAttrValues().getObjectAt(0));
                OtherStatusInfo o = s.getOtherStatusInfo();
                String other = o == null ? "none" : o.isFailInfo() ? "failInfo" : o.isPendingInfo() ? "pendInfo" : "extendedFailInfo";
                System.out.println("status " + s.getcMCStatus().toASN1Primitive() + " " + other + " " + s.getStatusStringUTF8());
            }
        } else {
            KeyPairGenerator g = KeyPairGenerator.getInstance("EC", "BC");
            g.initialize(new ECGenParameterSpec("secp256r1"));
            KeyPair signer = g.generateKeyPair(), dev = g.generateKeyPair();
            X500Name sn = new X500Name("CN=BC signer");
            ContentSigner cs = new JcaContentSignerBuilder("SHA256withECDSA").setProvider("BC").build(signer.getPrivate());
            ContentSigner ds = new JcaContentSignerBuilder("SHA256withECDSA").setProvider("BC").build(dev.getPrivate());
            X509CertificateHolder cert = new JcaX509v3CertificateBuilder(sn, BigInteger.valueOf(7),
                new Date(System.currentTimeMillis() - 86400000L), new Date(System.currentTimeMillis() + 86400000L),
                sn, signer.getPublic()).build(cs);
            JcaCertificateRequestMessageBuilder crmf = new JcaCertificateRequestMessageBuilder(BigInteger.valueOf(5));
            crmf.setSubject(new X500Name("CN=bc crmf")).setPublicKey(SubjectPublicKeyInfo.getInstance(dev.getPublic().getEncoded()));
            crmf.setProofOfPossessionSigningKeySigner(ds);
            PKCS10CertificationRequest p10 = new JcaPKCS10CertificationRequestBuilder(new X500Name("CN=bc p10"), dev.getPublic()).build(ds);
            TaggedRequest t1 = new TaggedRequest(new TaggedCertificationRequest(new BodyPartID(1),
                org.bouncycastle.asn1.cmc.CertificationRequest.getInstance(p10.toASN1Structure().toASN1Primitive())));
            TaggedRequest t2 = new TaggedRequest(crmf.build().toASN1Structure());
            TaggedAttribute tid = new TaggedAttribute(new BodyPartID(2), CMCObjectIdentifiers.id_cmc_transactionId, new DERSet(new ASN1Integer(99)));
            PKIData pd = new PKIData(new TaggedAttribute[]{tid}, new TaggedRequest[]{t1, t2}, new TaggedContentInfo[0], new OtherMsg[0]);
            CMSSignedDataGenerator gen = new CMSSignedDataGenerator();
            gen.addSignerInfoGenerator(new JcaSignerInfoGeneratorBuilder(new JcaDigestCalculatorProviderBuilder().setProvider("BC").build()).build(cs, cert));
            gen.addCertificate(cert);
            Files.write(Paths.get(a[1]), gen.generate(new CMSProcessableByteArray(CMCObjectIdentifiers.id_cct_PKIData, pd.getEncoded()), true).getEncoded());
        }
    }
}
"""


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("javac") is None or not all(j.exists() for j in BC_JARS),
                    reason="needs a JDK and Debian's libbcpkix-java")
def test_bouncy_castle_interop(pki: Pki, tmp_path: Path) -> None:
    """Bouncy Castle verifies our requests (CMS signature, CRMF POP, PKCS#10) and responses; we parse its request."""
    cp = ":".join(str(j) for j in BC_JARS)
    (tmp_path / "BcCmc.java").write_text(BC_SOURCE)
    subprocess.run(["javac", "-nowarn", "-cp", cp, "-d", str(tmp_path), str(tmp_path / "BcCmc.java")], check=True,
                   capture_output=True, timeout=120)

    def bc(*args: str) -> list[str]:
        p = subprocess.run(["java", "-cp", f"{tmp_path}:{cp}", "BcCmc", *args], capture_output=True, text=True,
                           timeout=120)
        assert p.returncode == 0, p.stderr
        return p.stdout.splitlines()

    b = cmc.PKIDataBuilder()
    key = ec.generate_private_key(ec.SECP256R1())
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    tcr_id = b.add_tcr(_csr(key))
    b.add_crm(cmc.build_crmf_request(key, cert_req_id=11, subject=_name("crmf ec")))
    b.add_crm(cmc.build_crmf_request(rsa_key, cert_req_id=12, subject=_name("crmf rsa")))
    b.add_crm(cmc.build_crmf_request(key, cert_req_id=13, subject=None, poposk_sender=_name("sender")))
    b.identity_proof_v2("x")
    b.revoke_request(pki.ca.cert.subject, 77, x509.ReasonFlags.superseded, comment="bye")
    (tmp_path / "req.der").write_bytes(b.sign(cms.CmsSigner(pki.ra.key, pki.ra.cert)))
    assert bc("check-request", str(tmp_path / "req.der")) == [
        "signer-verified true", f"econtent-type {oids.ID_CCT_PKI_DATA}", "revoke 77 4 bye",
        f"identityProofV2 {oids.ID_SHA256} {oids.ID_HMAC_SHA256}",
        f"tcr {tcr_id} pop true", "crm 11 pop true", "crm 12 pop true", "crm 13 pop true"]

    ids = cmc.BodyPartIds()
    controls = [cmc.status_info_v2(ids.next(), CMCStatus.success, [1]),
                cmc.status_info_v2(ids.next(), CMCStatus.failed, [2], fail_info=CMCFailInfo.popFailed,
                                   status_string="nope"),
                cmc.status_info_v2(ids.next(), CMCStatus.pending, [0], pend_token=b"t", pend_time=NOW),
                cmc.status_info_v2(ids.next(), CMCStatus.noSupport, [4], extended_fail_info=("1.2.3", der.null()))]
    for signer in (cms.CmsSigner(pki.ca.key, pki.ca.cert), cms.CmsSigner(pki.ra_rsa.key, pki.ra_rsa.cert, rsa_pss=True)):
        (tmp_path / "resp.der").write_bytes(cmc.build_pki_response(controls, signer=signer))
        assert bc("check-response", str(tmp_path / "resp.der")) == [
            "signer-verified true", f"econtent-type {oids.ID_CCT_PKI_RESPONSE}", "status 0 none null",
            "status 2 failInfo nope", "status 3 pendInfo null", "status 4 extendedFailInfo null"]

    bc("make-request", str(tmp_path / "bc.der"))
    parsed = cmc.parse_cmc_request((tmp_path / "bc.der").read_bytes())
    assert [(r.kind, r.body_part_id, r.pop.verified) for r in parsed.requests] == [("tcr", 1, True), ("crm", 5, True)]
    assert parsed.pki_data.transaction_id() == 99 and parsed.signers[0].certificate.subject.rfc4514_string() == \
        "CN=BC signer"

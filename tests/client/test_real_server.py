"""The EST client library against a real `kipuka serve` (the shared demo deployment)."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from kipuka.client import (BadRequest, BootstrapError, CsrSpec, EstClient, Forbidden, NotFound,
                           TlsError, Unauthorized, generate_key)
from kipuka.client.verify import fingerprint, is_issued_by
from tests.client.conftest import root_fingerprint
from tests.helpers import unique

LABELS = [None, "iot-fleet", "corp-devices"]


@pytest.fixture
def otp_client(otp_pool, est):
    """An EstClient with the shared multi-use OTP: (entity, client)."""
    def make(label=None, **kwargs):
        entity, otp = otp_pool
        return entity, est(label, auth=(entity, otp), **kwargs)
    return make


def _issuing_ca(server, label):
    ca_id = label or "default"
    return x509.load_pem_x509_certificate((server.dir / "ca" / f"{ca_id}.pem").read_bytes())


# --- cacerts, csrattrs, bootstrap -------------------------------------------------------------

@pytest.mark.parametrize("label", LABELS)
def test_cacerts_returns_the_labels_issuing_ca_and_the_root(server, est, label):
    certs = est(label).cacerts()
    subjects = {c.subject for c in certs}
    assert _issuing_ca(server, label).subject in subjects
    assert any(c.subject == c.issuer for c in certs)


def test_csrattrs_are_decoded(est):
    attrs = est().csrattrs()
    assert "ec-p256" in attrs.key_types() and "rsa" in attrs.key_types()
    assert attrs.key_type() == "ec-p256"
    assert "2.5.29.17" in attrs.extension_requests


def test_csrattrs_of_iot_fleet_name_ec_only(est):
    attrs = est("iot-fleet").csrattrs()
    assert set(attrs.key_types()) == {"ec-p256", "ec-p384"}
    assert attrs.key_type("rsa2048") in ("ec-p256", "ec-p384")


def test_bootstrap_with_the_right_fingerprint_makes_the_ca_the_trust_anchor(server):
    with EstClient(f"https://localhost:{server.port}", fingerprint=root_fingerprint(server)) as client:
        certs = client.cacerts()
        assert fingerprint(certs[0]) in {fingerprint(c) for c in client.trust_anchors}
        assert client.csrattrs().key_types()  # the next request runs on a verified connection


def test_bootstrap_with_the_issuing_ca_fingerprint_works_too(server):
    fp = fingerprint(_issuing_ca(server, "iot-fleet"))
    with EstClient(f"https://localhost:{server.port}/.well-known/est/iot-fleet", fingerprint=fp) as client:
        anchors = client.bootstrap()
        assert {c.subject.rfc4514_string() for c in anchors} >= {_issuing_ca(server, "iot-fleet").subject.rfc4514_string()}


def test_bootstrap_with_a_wrong_fingerprint_is_refused(server):
    with EstClient(f"https://localhost:{server.port}", fingerprint="ab" * 32) as client:
        with pytest.raises(BootstrapError, match="no certificate in /cacerts has SHA-256 fingerprint abab"):
            client.cacerts()
        assert client.trust_anchors is None


def test_bootstrap_without_a_fingerprint_is_refused(server):
    with EstClient(f"https://localhost:{server.port}") as client:
        with pytest.raises(BootstrapError, match="refusing to fetch /cacerts over an unauthenticated"):
            client.bootstrap()


def test_without_trust_anchors_the_server_is_not_trusted(server):
    with EstClient(f"https://localhost:{server.port}") as client:
        with pytest.raises(TlsError, match="not trusted.*--fingerprint"):
            client.cacerts()


def test_a_pinned_fingerprint_must_be_in_the_answer_even_with_trust_anchors(server, est):
    assert est(fingerprint=root_fingerprint(server)).cacerts()
    with pytest.raises(BootstrapError):
        est(fingerprint="cd" * 32).cacerts()


# --- simpleenroll ------------------------------------------------------------------------------

@pytest.mark.parametrize("label", LABELS)
def test_simpleenroll_with_otp_on_each_label(server, est, label, otp_client):
    entity, client = otp_client(label)
    key = generate_key("ec-p256")
    issued = client.simpleenroll(CsrSpec.for_names(key, f"{entity}.example.com"))
    assert issued.certificate.public_key() == key.public_key()
    assert is_issued_by(issued.certificate, _issuing_ca(server, label))
    assert issued.chain[0].subject == _issuing_ca(server, label).subject
    assert issued.chain[-1].subject == issued.chain[-1].issuer  # up to the root


def test_simpleenroll_answering_the_401_challenge_like_libest(server, est, otp_client):
    progress: list[str] = []
    entity, client = otp_client(auth_mode="challenge", on_progress=progress.append)
    issued = client.simpleenroll(CsrSpec.for_names(generate_key(), f"{entity}.example.com"))
    assert issued.certificate.subject.rfc4514_string() == f"CN={entity}.example.com"
    assert any("401 challenge" in p for p in progress)


def test_simpleenroll_with_a_ready_made_pem_csr(server, est, otp_client):
    entity, client = otp_client()
    key = generate_key("rsa2048")
    csr = CsrSpec.for_names(key, f"{entity}.example.com").build().public_bytes(serialization.Encoding.PEM)
    assert client.simpleenroll(csr).certificate.public_key() == key.public_key()


def test_simpleenroll_with_mtls_for_own_names(server, est, otp_client):
    entity, client = otp_client()
    key = generate_key()
    first = client.simpleenroll(CsrSpec.for_names(key, f"{entity}.example.com")).certificate
    again = est(client_cert=(first, key)).simpleenroll(CsrSpec.like_certificate(generate_key(), first))
    assert again.certificate.subject == first.subject
    assert again.certificate.serial_number != first.serial_number


def test_channel_binding_puts_tls_unique_into_challenge_password(server, est, otp_client):
    entity, client = otp_client(channel_binding=True)
    issued = client.simpleenroll(CsrSpec.for_names(generate_key(), f"{entity}.example.com"))
    assert issued.certificate.subject.rfc4514_string() == f"CN={entity}.example.com"


# --- simplereenroll ----------------------------------------------------------------------------

@pytest.mark.parametrize("label", ["corp-devices", None])
def test_simplereenroll_with_mtls_renews_and_rekeys(server, est, label, otp_client):
    entity, client = otp_client(label)
    key = generate_key()
    first = client.simpleenroll(CsrSpec.for_names(key, f"{entity}.example.com")).certificate
    renewer = est(label, client_cert=(first, key))
    same_key = renewer.simplereenroll(CsrSpec.like_certificate(key, first)).certificate
    new_key = generate_key()
    rekeyed = renewer.simplereenroll(CsrSpec.like_certificate(new_key, first)).certificate
    assert same_key.public_key() == key.public_key() and rekeyed.public_key() == new_key.public_key()
    assert same_key.subject == rekeyed.subject == first.subject


# --- typed errors for each status class --------------------------------------------------------

def test_400_bad_csr_signature(server, est, otp_client):
    entity, client = otp_client()
    der = bytearray(CsrSpec.for_names(generate_key(), f"{entity}.example.com").build()
                    .public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0x01  # the signature no longer verifies
    with pytest.raises(BadRequest) as err:
        client.simpleenroll(bytes(der))
    assert err.value.status == 400 and "signature" in err.value.reason


def test_400_key_type_refused_by_the_label_policy(server, est, otp_client):
    entity, client = otp_client("iot-fleet")
    with pytest.raises(BadRequest, match="key type"):
        client.simpleenroll(CsrSpec.for_names(generate_key("rsa2048"), f"{entity}.example.com"))


def test_401_wrong_otp_carries_the_reason_and_challenge(server, est):
    entity = unique()  # its own entity: the failure counts toward a lockout of that entity only
    client = est(auth=(entity, "not-the-otp"))
    with pytest.raises(Unauthorized) as err:
        client.simpleenroll(CsrSpec.for_names(generate_key(), f"{entity}.example.com"))
    assert err.value.status == 401
    assert err.value.reason == "invalid entity id or OTP"
    assert err.value.challenge.lower().startswith("basic")


def test_401_single_use_otp_is_consumed(server, est):
    entity = unique()
    client = est(auth=(entity, server.otp(entity)))
    client.simpleenroll(CsrSpec.for_names(generate_key(), f"{entity}.example.com"))
    with pytest.raises(Unauthorized, match="OTP already used"):
        client.simpleenroll(CsrSpec.for_names(generate_key(), f"{entity}.example.com"))


def test_401_without_any_credential(est):
    with pytest.raises(Unauthorized) as err:
        est().simpleenroll(CsrSpec.for_names(generate_key(), "nobody.example.com"))
    assert err.value.status == 401


def test_403_reenroll_with_another_subject(server, est, otp_client):
    entity, client = otp_client()
    key = generate_key()
    cert = client.simpleenroll(CsrSpec.for_names(key, f"{entity}.example.com")).certificate
    with pytest.raises(Forbidden) as err:
        est(client_cert=(cert, key)).simplereenroll(CsrSpec.for_names(key, "someone-else.example.com"))
    assert err.value.status == 403 and "differs" in err.value.reason


def test_404_unknown_label(est):
    with pytest.raises(NotFound) as err:
        est("no-such-label").cacerts()
    assert err.value.status == 404 and "no-such-label" in err.value.reason


def test_serverkeygen_and_fullcmc_while_off_are_404(server, est, otp_client):
    entity, client = otp_client()
    with pytest.raises(NotFound) as err:  # off in the demo deployment: a plain 404 with the reason
        client.serverkeygen(CsrSpec.for_names(generate_key(), f"{entity}.example.com"))
    assert err.value.status == 404 and "serverkeygen) is not enabled" in err.value.reason
    with pytest.raises(NotFound, match="fullcmc is not enabled"):   # off by default: a plain 404
        client.fullcmc(b"\x30\x03\x02\x01\x00")


def test_ed25519_key_is_refused_by_the_default_policy(server, est, otp_client):
    entity, client = otp_client()
    with pytest.raises(BadRequest, match="ed25519"):
        client.simpleenroll(CsrSpec(ed25519.Ed25519PrivateKey.generate(),
                                    x509.Name.from_rfc4514_string(f"CN={entity}.example.com")))



def test_pending_approval_202_is_polled_within_the_bounded_wait(tmp_path):
    """The server's approval hold answers 202 + Retry-After; nobody approves, so the wait ends."""
    import re
    from kipuka.client import PendingTimeout
    from tests.helpers import make_server
    srv = make_server(tmp_path)
    text = srv.config.read_text()  # [est] retry_after = 2 s, whether the template lists it or not
    if re.search(r"^retry_after\s*=", text, re.M):
        text = re.sub(r"^retry_after\s*=.*$", "retry_after = 2", text, count=1, flags=re.M)
    else:
        text = text.replace("[est]\n", "[est]\nretry_after = 2\n", 1)
    srv.config.write_text(text + "require_approval = true\n")  # appended to the last table: corp-devices
    srv.start()
    try:
        entity = unique()
        now, slept, progress = [0.0], [], []

        def sleep(seconds):
            slept.append(seconds)
            now[0] += seconds
        with EstClient(f"https://localhost:{srv.port}", "corp-devices", trust=srv.ca_bundle,
                       auth=(entity, srv.otp(entity, "--label", "corp-devices")), max_wait=7,
                       sleep=sleep, clock=lambda: now[0], on_progress=progress.append) as client:
            with pytest.raises(PendingTimeout) as err:
                client.simpleenroll(CsrSpec.for_names(generate_key(), f"{entity}.example.com"))
    finally:
        srv.stop()
    assert slept == [2, 2, 2] and err.value.retry_after == 2
    assert sum("202 pending" in p for p in progress) == 3


# --- /serverkeygen (a server with it on: tests/test_serverkeygen.py's labels) -------------------

def test_serverkeygen_every_delivery_with_the_client_library(keygen_server, tmp_path):
    from kipuka.client import CSR_KEY, PKCS8, AsymmetricDecryptKey, SymmetricDecryptKey
    from tests.test_serverkeygen import KEK, KEK_ID

    srv, entity, otp = keygen_server
    spki = lambda k: k.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)

    def client(label, **kwargs):
        return EstClient(f"https://localhost:{srv.port}", label, trust=srv.ca_bundle, **kwargs)

    def spec(key=None):
        return CsrSpec.for_names(key or generate_key(), f"{entity}.example.com")

    with client("keygen", auth=(entity, otp)) as c:
        csr_key = c.serverkeygen(spec(), delivery=CSR_KEY)
        assert csr_key.encrypted and csr_key.signed and "server-generated-key" in csr_key.key_media_type
        symmetric = c.serverkeygen(spec(), delivery=SymmetricDecryptKey(KEK_ID, KEK))
        assert symmetric.encrypted and symmetric.signed
        rsa = c.serverkeygen(spec(generate_key("rsa2048")), delivery=CSR_KEY)
        assert rsa.private_key.key_size == 2048
        device_key = generate_key()
        device = c.simpleenroll(spec(device_key)).certificate
        # this label encrypts to the CSR's key whatever is asked: the client opens it with that key
        # (the certificate is issued by then: failing would throw the key away)
        asked_plain = c.serverkeygen(spec(), delivery=PKCS8)
        assert asked_plain.encrypted and spki(asked_plain.private_key.public_key()) == \
            spki(asked_plain.certificate.public_key())
    ski = device.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    with client("keygen", client_cert=(device, device_key)) as c:
        asymmetric = c.serverkeygen(spec(device_key), delivery=AsymmetricDecryptKey(ski, device_key))
        assert asymmetric.encrypted and asymmetric.key_signer.subject == asymmetric.chain[0].subject
    with client("keygen-pkcs8", auth=(entity, otp)) as c:
        plain = c.serverkeygen(spec(), delivery=PKCS8)
        assert plain.key_media_type == "application/pkcs8" and not plain.encrypted
    for result in (csr_key, symmetric, rsa, asymmetric, plain):
        assert spki(result.private_key.public_key()) == spki(result.certificate.public_key())
        assert result.certificate.subject.rfc4514_string() == f"CN={entity}.example.com"


def test_serverkeygen_errors_reach_the_client_with_their_reason(keygen_server):
    from kipuka.client import SymmetricDecryptKey

    srv, entity, otp = keygen_server
    with EstClient(f"https://localhost:{srv.port}", "keygen", trust=srv.ca_bundle, auth=(entity, otp)) as c:
        with pytest.raises(BadRequest, match="names no pre-shared key"):
            c.serverkeygen(CsrSpec.for_names(generate_key(), f"{entity}.example.com"),
                           delivery=SymmetricDecryptKey(b"unknown", bytes(32)))
    with EstClient(f"https://localhost:{srv.port}", "keygen", trust=srv.ca_bundle, auth=(entity, "wrong")) as c:
        with pytest.raises(Unauthorized, match="invalid entity id or OTP"):
            c.serverkeygen(CsrSpec.for_names(generate_key(), f"{entity}.example.com"))

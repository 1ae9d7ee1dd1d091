"""The Dogtag PKI back end against a Dogtag-compatible HTTPS test server (tests/dogtag_server.py).

No live Dogtag runs here: the test server follows Dogtag 11.x's published REST
documentation (each body's source is named there). Two layers:

* the back end on its own (asyncio): enrollment, Dogtag's pending queue, agent
  approval and rejection, revocation, KRA keygen, replica failover, config errors;
* end to end through `kipuka serve` with requests (real TLS both ways): simpleenroll
  forwarded to Dogtag, 202 + Retry-After until a Dogtag agent approves, revocation
  through kipuka's admin API, /serverkeygen from the KRA, and failover between two
  Dogtag replicas when one answers 500 or never answers.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import time
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from kipuka import keydelivery as kd
from kipuka.ca.base import IssuancePending, IssuanceRejected, IssueRequest
from kipuka.ca.dogtag import DogtagCA
from kipuka.ca.registry import build_ca
from kipuka.cmc import CmsSigner, PKIDataBuilder, parse_pki_response, sign_pki_data
from kipuka.config import CAConfig, ConfigError
from kipuka.errors import InternalError, NotFound, NotImplementedYet, Unavailable
from tests.dogtag_server import DogtagTestServer
from tests.helpers import (CERTS_ONLY, admin_call, admin_token, b64, certs_from, certs_in_body, certs_in_der, make_csr,
                           make_server, unique)

SPKI = serialization.PublicFormat.SubjectPublicKeyInfo
DER = serialization.Encoding.DER
CMC_REQUEST = {"Content-Type": "application/pkcs7-mime; smime-type=CMC-request"}
POOLS = ("500", "hang", "down")


@pytest.fixture(scope="module")
def dogtag(tmp_path_factory: pytest.TempPathFactory):
    """One Dogtag CA (+KRA) served by two replicas on loopback, in a thread of this process."""
    srv = DogtagTestServer(tmp_path_factory.mktemp("dogtag"), ports=(0, 0)).start()
    yield srv
    srv.stop()


@pytest.fixture(autouse=True)
def healthy(dogtag):
    for replica in dogtag.replicas:
        replica.fault = None
    dogtag.state.kra_running = True
    yield


def options(dogtag, **extra) -> dict:
    d = dogtag.state.directory
    return {"url": dogtag.urls[0], "agent_cert": str(d / "agent.pem"), "agent_key": str(d / "agent.key"),
            "ca_bundle": str(d / "root.pem"), "profile": "caAgentServerCert", "approval_timeout": "300ms",
            **extra}


def backend(dogtag, **extra):
    return build_ca(CAConfig(id="dogtag", type="dogtag", options=options(dogtag, **extra), base=Path("/")))


def request_for(label: str = "", cn: str | None = "device.example.com", key=None) -> IssueRequest:
    _, der = make_csr(cn, key)
    csr = x509.load_der_x509_csr(der)
    return IssueRequest(csr.subject, csr.public_key(), None, (), dt.timedelta(days=30), csr_der=der, label=label)


def run(coro_fn):
    """Run one scenario on a fresh event loop, closing the back end's HTTP sessions after it."""
    async def main():
        cas = []
        try:
            return await coro_fn(cas)
        finally:
            for ca in cas:
                for replica in getattr(ca, "replicas", None) or [ca]:
                    inner = getattr(replica, "ca", replica)
                    await inner.close()
    return asyncio.run(main())


def agent(dogtag, method: str, path: str, *, cert: str = "agent", url: str | None = None, **kwargs):
    """A Dogtag agent (or another user) at the REST API, as `pki` or curl would be."""
    d = dogtag.state.directory
    return requests.request(method, (url or dogtag.urls[0]) + path, cert=(str(d / f"{cert}.pem"), str(d / f"{cert}.key")),
                            verify=str(d / "root.pem"), timeout=10, headers={"Accept": "application/json"}, **kwargs)


def agent_decides(dogtag, request_id: str, action: str) -> None:
    review = agent(dogtag, "GET", f"/ca/rest/agent/certrequests/{request_id}")
    assert review.status_code == 200, review.text
    r = agent(dogtag, "POST", f"/ca/rest/agent/certrequests/{request_id}/{action}", json=review.json())
    assert r.status_code == 204, r.text


def dogtag_status(dogtag, serial: int) -> dict:
    r = requests.get(f"{dogtag.urls[1]}/ca/rest/certs/{serial:#x}", verify=str(dogtag.state.directory / "root.pem"),
                     headers={"Accept": "application/json"}, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


# --- the back end on its own ---------------------------------------------------------------------

def test_enrollment_on_an_auto_approving_profile(dogtag):
    req = request_for("iot")

    async def scenario(cas):
        ca = backend(dogtag)
        cas.append(ca)
        assert ca.forwards_requests and not ca.signs_revocation
        assert await ca.health() == "ok"
        return ca, (await ca.issue(req)).certificate

    ca, cert = run(scenario)
    chain = ca.ca_certificates()
    assert [c.subject.rfc4514_string() for c in chain] == ["CN=CA Signing Certificate,O=EXAMPLE",
                                                           "CN=Dogtag test Root CA,O=EXAMPLE"]
    cert.verify_directly_issued_by(chain[0])
    assert cert.public_key() == req.public_key and ca.is_issuer_of(cert)
    assert dogtag_status(dogtag, cert.serial_number)["Status"] == "VALID"


def test_pending_at_dogtag_until_an_agent_approves(dogtag):
    req = request_for("corp")

    async def scenario(cas):
        ca = backend(dogtag, profiles={"corp": "caServerCert"}, approve=False)
        cas.append(ca)
        started = time.monotonic()
        with pytest.raises(IssuancePending) as held:
            await ca.issue(req)
        assert 0.3 <= time.monotonic() - started < 5  # polled for approval_timeout, then let go
        assert held.value.retry_after == 10
        with pytest.raises(IssuancePending):
            await ca.collect(held.value.ref, req)
        await asyncio.to_thread(agent_decides, dogtag, held.value.ref, "approve")
        return held.value.ref, (await ca.collect(held.value.ref, req)).certificate

    ref, cert = run(scenario)
    assert ref in {str(i) for i in dogtag.state.requests}
    assert cert.public_key() == req.public_key
    assert dogtag.state.requests[int(ref)].serial == cert.serial_number


def test_kipuka_approves_as_agent_when_told_to(dogtag):
    req = request_for("corp")

    async def scenario(cas):
        ca = backend(dogtag, profiles={"corp": "caServerCert"}, approve=True)
        cas.append(ca)
        return (await ca.issue(req)).certificate

    cert = run(scenario)
    assert dogtag_status(dogtag, cert.serial_number)["Status"] == "VALID"


def test_agent_rejection_and_cancellation_are_403(dogtag):
    async def scenario(cas):
        ca = backend(dogtag, profile="caServerCert", approve=False, approval_timeout=0)
        cas.append(ca)
        outcomes = []
        for action in ("reject", "cancel"):
            req = request_for()
            with pytest.raises(IssuancePending) as held:
                await ca.issue(req)
            await asyncio.to_thread(agent_decides, dogtag, held.value.ref, action)
            with pytest.raises(IssuanceRejected) as refused:
                await ca.collect(held.value.ref, req)
            outcomes.append((refused.value.status, refused.value.reason))
        with pytest.raises(IssuanceRejected):
            await ca.collect("999999", request_for())  # an id Dogtag never gave out
        return outcomes

    (s1, r1), (s2, r2) = run(scenario)
    assert (s1, s2) == (403, 403) and "rejected" in r1 and "canceled" in r2


def test_dogtag_refusals_map_to_400_and_403(dogtag):
    async def scenario(cas):
        ca = backend(dogtag)
        cas.append(ca)
        with pytest.raises(IssuanceRejected) as no_cn:  # the profile's subject constraint: status "rejected"
            await ca.issue(request_for(cn=None))
        weak = rsa.generate_private_key(65537, 1024)
        with pytest.raises(IssuanceRejected) as bad:  # a 400 BadRequestException from the REST API
            await ca.issue(request_for(key=weak))
        unknown = backend(dogtag, profile="noSuchProfile")
        cas.append(unknown)
        with pytest.raises(InternalError) as no_profile:  # a configuration error, not the requester's
            await unknown.issue(request_for())
        return no_cn.value, bad.value, no_profile.value

    no_cn, bad, no_profile = run(scenario)
    assert no_cn.status == 403 and "Subject Name Not Found" in no_cn.reason
    assert bad.status == 400 and "key" in bad.reason.lower()
    assert "noSuchProfile" in no_profile.reason and not no_profile.retryable


def test_revocation_reaches_dogtag(dogtag):
    async def scenario(cas):
        ca = backend(dogtag)
        cas.append(ca)
        cert = (await ca.issue(request_for())).certificate
        await ca.revoke(cert.serial_number, x509.ReasonFlags.key_compromise)
        await ca.revoke(cert.serial_number, x509.ReasonFlags.key_compromise)  # again: already done, no error
        with pytest.raises(NotFound):
            await ca.revoke(0x7FFFFFFF, x509.ReasonFlags.superseded)
        with pytest.raises(NotImplementedYet, match="Dogtag publishes its own CRL"):
            await ca.sign_crl([], 1, dt.datetime.now(dt.timezone.utc), dt.datetime.now(dt.timezone.utc))
        return cert

    cert = run(scenario)
    data = dogtag_status(dogtag, cert.serial_number)
    assert data["Status"] == "REVOKED" and data["RevocationReason"] == "Key_Compromise"


def test_revocation_needs_an_agent_certificate(dogtag):
    """Dogtag refuses a non-agent: the back end must not claim the revocation happened."""
    d = dogtag.state.directory

    async def scenario(cas):
        ca = backend(dogtag)
        cas.append(ca)
        cert = (await ca.issue(request_for())).certificate
        other = backend(dogtag, agent_cert=str(d / "other.pem"), agent_key=str(d / "other.key"))
        cas.append(other)
        with pytest.raises(Exception) as refused:
            await other.revoke(cert.serial_number, x509.ReasonFlags.superseded)
        return cert, refused.value

    cert, refused = run(scenario)
    assert "Authorization" in str(refused) or "403" in str(refused)
    assert dogtag_status(dogtag, cert.serial_number)["Status"] == "VALID"


def test_kra_generates_and_archives_the_key(dogtag):
    req = request_for(cn="keygen.example.com")

    async def scenario(cas):
        ca = backend(dogtag, kra_url=dogtag.urls[0], keygen_profile="caServerKeygen_AgentUserCert")
        cas.append(ca)
        assert ca.archives_keys and await ca.health() == "ok"
        issued, pkcs8 = await ca.issue_with_archived_key(req, "ec-p256")
        rsa_issued, _ = await ca.issue_with_archived_key(req, "rsa2048")
        manual = backend(dogtag, kra_url=dogtag.urls[0])  # the stock caServerKeygen_UserCert waits for an agent
        cas.append(manual)
        with pytest.raises(InternalError, match="must approve automatically"):
            await manual.issue_with_archived_key(req, "ec-p256")
        dogtag.state.kra_running = False
        down = await ca.health()
        with pytest.raises(IssuanceRejected, match="KRA"):
            await ca.issue_with_archived_key(req, "ec-p256")
        return issued.certificate, pkcs8, rsa_issued.certificate, down

    cert, pkcs8, rsa_cert, down = run(scenario)
    key = serialization.load_der_private_key(pkcs8, None)
    assert key.public_key() == cert.public_key() and cert.subject.rfc4514_string() == "CN=keygen.example.com"
    assert isinstance(rsa_cert.public_key(), rsa.RSAPublicKey) and rsa_cert.public_key().key_size == 2048
    archived = agent(dogtag, "GET", "/kra/rest/agent/keys").json()["entries"]
    assert base64.b64encode(cert.public_key().public_bytes(DER, SPKI)).decode() in {k["publicKey"] for k in archived}
    assert "KRA" in down and "starting" in down


def test_failover_between_replicas_on_500_and_timeout(dogtag):
    first, second = dogtag.replicas

    async def scenario(cas):
        pool = backend(dogtag, replicas=[{"url": dogtag.urls[0]}, {"url": dogtag.urls[1]}], timeout="1s",
                       health_interval="60s")
        cas.append(pool)
        results = {}
        first.fault = "500"
        hits = second.hits
        results["500"] = (await pool.issue(request_for())).certificate
        assert second.hits > hits
        results["health"] = await pool.health()
        first.fault = "hang"
        pool.replicas[0].down = None  # as if the health check had seen it come back
        started = time.monotonic()
        results["hang"] = (await pool.issue(request_for())).certificate
        results["hang_seconds"] = time.monotonic() - started
        second.fault = "500"
        with pytest.raises(Unavailable) as none_left:
            await pool.issue(request_for())
        results["none"] = none_left.value
        return results

    r = run(scenario)
    first.fault = second.fault = None
    for cert in (r["500"], r["hang"]):
        assert dogtag_status(dogtag, cert.serial_number)["Status"] == "VALID"
    assert r["health"].startswith("degraded") and "500" in r["health"]
    assert 0.9 <= r["hang_seconds"] < 5
    assert r["none"].retry_after >= 1 and "no replica" in r["none"].reason


def test_health_is_a_real_call(dogtag, tmp_path):
    other = DogtagTestServer(tmp_path / "other").start()  # a Dogtag with another CA certificate
    try:
        async def scenario(cas):
            o, chain = other.state.directory, str(dogtag.state.directory / "chain.pem")
            untrusted = backend(dogtag, chain=chain, url=other.urls[0])
            cas.append(untrusted)
            assert "CERTIFICATE_VERIFY_FAILED" in await untrusted.health()  # ca_bundle is enforced
            ca = backend(dogtag, chain=chain, url=other.urls[0], ca_bundle=str(o / "root.pem"),
                         agent_cert=str(o / "agent.pem"), agent_key=str(o / "agent.key"))
            cas.append(ca)
            wrong = await ca.health()
            other.stop_replica(0)
            gone = await ca.health()
            return wrong, gone

        wrong, gone = run(scenario)
    finally:
        other.stop()
    assert "different CA certificate" in wrong
    assert gone.startswith("Dogtag at ") and gone != "ok"


@pytest.mark.parametrize("change, key, text", [
    ({"url": None}, "url", "required"),
    ({"url": "http://127.0.0.1:8080"}, "url", "https://"),
    ({"agent_key_password": "secret"}, "agent_key_password", "never put a password"),
    ({"agent_key": "/no/such/file.key"}, "agent_key", "no such file"),
    ({"profiles": {"corp": 3}}, "profiles", "label ="),
    ({"approve": "yes"}, "approve", "true or false"),
    ({"approval_timeout": "soon"}, "approval_timeout", "duration"),
    ({"colour": "blue"}, "colour", "unknown key"),
    ({"agent_key_password_env": "KIPUKA_TEST_NOT_SET"}, "agent_key_password_env", "not set"),
])
def test_configuration_errors_name_the_key(dogtag, change, key, text):
    opts = {k: v for k, v in {**options(dogtag), **change}.items() if v is not None}
    with pytest.raises(ConfigError) as err:
        DogtagCA.from_config(CAConfig(id="dt", type="dogtag", options=opts, base=Path("/")))
    assert err.value.key == f"ca.dt.{key}" and text in err.value.message


def test_unreachable_dogtag_at_start_names_the_chain_option(tmp_path, dogtag):
    with pytest.raises(ConfigError) as err:
        backend(dogtag, url="https://127.0.0.1:1")
    assert err.value.key == "ca.dogtag.url" and "chain =" in err.value.message


# --- end to end through `kipuka serve` ------------------------------------------------------------

@pytest.fixture(scope="module")
def kipuka(dogtag, tmp_path_factory):
    d = dogtag.state.directory
    common = (f'agent_cert = "{d / "agent.pem"}"\nagent_key = "{d / "agent.key"}"\n'
              f'ca_bundle = "{d / "root.pem"}"\n')
    # one pool per failover scenario, so that each starts with both replicas healthy
    pools = "".join(f"""
[ca.dogpool-{name}]
type = "dogtag"
{common}profile = "caAgentServerCert"
timeout = "1s"
health_interval = "60s"
retry_after = 6
replicas = [ {{ url = "{dogtag.urls[0]}" }}, {{ url = "{dogtag.urls[1]}" }} ]
""" for name in POOLS)
    pool_labels = "".join(f'\n[labels.dt-pool-{name}]\nca = "dogpool-{name}"\n' for name in POOLS)
    srv = make_server(tmp_path_factory.mktemp("kipuka-dogtag"), append=f"""
[ca.dogtag]
type = "dogtag"
url = "{dogtag.urls[0]}"
{common}profile = "caAgentServerCert"
profiles = {{ dt-held = "caServerCert" }}
approve = false
approval_timeout = "200ms"
retry_after = 4
kra_url = "{dogtag.urls[0]}"
keygen_profile = "caServerKeygen_AgentUserCert"

{pools}
[labels.dt]
ca = "dogtag"

[labels.dt-held]
ca = "dogtag"

[labels.dt-keygen]
ca = "dogtag"
serverkeygen = true
serverkeygen_deliveries = ["pkcs8"]

[labels.dt-cmc]
ca = "dogtag"
fullcmc = true

{pool_labels}""").start()
    srv.token = admin_token(srv)
    yield srv
    srv.stop()


def enroll(srv, label: str, key=None, entity: str | None = None, otp: str | None = None):
    entity = entity or unique()
    otp = otp or srv.otp(entity, "--label", label)
    key, der = make_csr(f"{entity}.example.com", key)
    return srv.post("simpleenroll", b64(der), label=label, auth=(entity, otp)), (entity, otp, key)


def test_simpleenroll_is_forwarded_to_dogtag(kipuka, dogtag):
    cacerts = requests.get(kipuka.url("cacerts", "dt"), verify=kipuka.ca_bundle, timeout=10)
    chain = certs_in_body(cacerts.content)
    assert dogtag.state.ca_cert in chain
    r, (_, _, key) = enroll(kipuka, "dt")
    cert = certs_from(r)[0]
    cert.verify_directly_issued_by(dogtag.state.ca_cert)
    assert cert.public_key() == key.public_key()
    assert dogtag_status(dogtag, cert.serial_number)["Status"] == "VALID"


def test_pending_at_dogtag_is_202_until_a_dogtag_agent_approves(kipuka, dogtag):
    before = set(dogtag.state.pending())
    r, (entity, otp, key) = enroll(kipuka, "dt-held")
    assert r.status_code == 202, r.text
    assert r.headers["Retry-After"] == "4"
    (held,) = set(dogtag.state.pending()) - before  # the request waits in Dogtag's agent queue
    again, _ = enroll(kipuka, "dt-held", key, entity, otp)
    assert again.status_code == 202
    assert set(dogtag.state.pending()) - before == {held}, "the retry asked Dogtag again, it did not resubmit"
    agent_decides(dogtag, str(held), "approve")
    done, _ = enroll(kipuka, "dt-held", key, entity, otp)
    cert = certs_from(done)[0]
    assert cert.public_key() == key.public_key()
    assert dogtag.state.requests[held].serial == cert.serial_number


def test_rejection_by_a_dogtag_agent_is_403(kipuka, dogtag):
    before = set(dogtag.state.pending())
    r, (entity, otp, key) = enroll(kipuka, "dt-held")
    assert r.status_code == 202
    (held,) = set(dogtag.state.pending()) - before
    agent_decides(dogtag, str(held), "reject")
    refused, _ = enroll(kipuka, "dt-held", key, entity, otp)
    assert refused.status_code == 403 and "rejected" in refused.text


def test_admin_revocation_reaches_dogtag(kipuka, dogtag):
    r, _ = enroll(kipuka, "dt")
    cert = certs_from(r)[0]
    rv = admin_call(kipuka, "POST", f"/admin/certs/{cert.serial_number:x}/revoke", kipuka.token,
                    json_body={"reason": "keyCompromise"})
    assert rv.status_code in (200, 204), rv.text
    data = dogtag_status(dogtag, cert.serial_number)
    assert data["Status"] == "REVOKED" and data["RevocationReason"] == "Key_Compromise"


def test_serverkeygen_key_comes_from_dogtags_kra(kipuka, dogtag):
    entity = unique()
    otp = kipuka.otp(entity, "--label", "dt-keygen")
    _, der = make_csr(f"{entity}.example.com")
    r = kipuka.post("serverkeygen", b64(der), label="dt-keygen", auth=(entity, otp))
    assert r.status_code == 200, r.text
    parts = dict(kd.parse_multipart_mixed(r.headers["Content-Type"], r.content))
    cert = certs_in_der(parts[CERTS_ONLY])[0]
    key = serialization.load_der_private_key(parts["application/pkcs8"], None)
    assert key.public_key() == cert.public_key()
    archived = agent(dogtag, "GET", "/kra/rest/agent/keys").json()["entries"]
    assert base64.b64encode(cert.public_key().public_bytes(DER, SPKI)).decode() in {k["publicKey"] for k in archived}


def test_fullcmc_is_forwarded_to_dogtags_cmc_profile(kipuka, dogtag):
    d = dogtag.state.directory

    def submit(signer: str, csr_der: bytes):
        key = serialization.load_pem_private_key((d / f"{signer}.key").read_bytes(), None)
        cert = x509.load_pem_x509_certificate((d / f"{signer}.pem").read_bytes())
        builder = PKIDataBuilder()
        txid = builder.transaction_id()
        bpid = builder.add_tcr(csr_der)
        body = sign_pki_data(builder.build(), CmsSigner(key, cert))
        r = kipuka.post("fullcmc", b64(body), label="dt-cmc", headers=CMC_REQUEST)
        assert r.status_code == 200, r.text
        resp = parse_pki_response(base64.b64decode(r.content))
        assert resp.signers[0].certificate == dogtag.state.ca_cert  # Dogtag's answer, relayed as it came
        assert resp.response.transaction_id() == txid
        return bpid, resp

    device, csr_der = make_csr(f"{unique()}.example.com")
    bpid, resp = submit("agent", csr_der)  # an RA agent's signed request, as Dogtag's CMCAuth wants
    (status,) = resp.response.status_info_v2()
    assert status.status.name == "success" and list(status.body_list) == [bpid]
    (cert,) = [c for c in resp.certificates if c.public_key() == device.public_key()]
    cert.verify_directly_issued_by(dogtag.state.ca_cert)
    assert dogtag_status(dogtag, cert.serial_number)["Status"] == "VALID"
    _, refused = submit("other", make_csr(f"{unique()}.example.com")[1])  # signed by a non-agent
    (status,) = refused.response.status_info_v2()
    assert status.status.name == "failed" and "agent" in (status.status_string or "")


@pytest.mark.parametrize("fault", ["500", "hang"])
def test_failover_between_two_dogtag_replicas(kipuka, dogtag, fault):
    """Each fault has a pool of its own, so replica 1 starts healthy and is really tried first."""
    first = dogtag.replicas[0]
    first.fault = fault
    hits = first.hits
    r, (_, _, key) = enroll(kipuka, f"dt-pool-{fault}")
    cert = certs_from(r)[0]
    assert first.hits > hits, "replica 1 was tried first"
    assert cert.public_key() == key.public_key()
    first.fault = None
    assert dogtag_status(dogtag, cert.serial_number)["Status"] == "VALID"


def test_every_dogtag_replica_down_is_503_with_retry_after(kipuka, dogtag):
    for replica in dogtag.replicas:
        replica.fault = "500"
    r, _ = enroll(kipuka, "dt-pool-down")
    assert r.status_code == 503, r.text
    assert r.headers["Retry-After"] == "6"

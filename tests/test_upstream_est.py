"""Upstream EST (RA mode): kipuka as an RA forwarding enrollments to another kipuka as the CA.

Two real servers for the whole module: the upstream (the CA, trusting the RA's
certificate, which carries id-kp-cmcRA, through `ra_anchors`) and the RA, whose
labels are backed by `type = "est"` CAs pointing at the upstream's labels, at a
port where nothing listens, or at both as a replica pool.
"""

from __future__ import annotations

import concurrent.futures
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.helpers import (Server, admin_call, admin_token, b64, certs_from, certs_in_body, db_execute, edit_config,
                           free_port, fresh_database_url, make_csr, make_server, make_test_ca, new_key, ordered_chain,
                           sign_certificate, unique, write_identity)

CMC_RA = x509.ObjectIdentifier("1.3.6.1.5.5.7.3.28")


def _pem(certs: list[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def _est_ca(name: str, url: str, *, ca_bundle: Path, identity: tuple[str, str] | None = None, extra: str = "") -> str:
    lines = [f"[ca.{name}]", 'type = "est"', f'url = "{url}"', f'ca_bundle = "{ca_bundle}"']
    if identity:
        lines += [f'ra_cert = "{identity[0]}"', f'ra_key = "{identity[1]}"']
    return "\n" + "\n".join(lines) + "\n" + extra


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    root = tmp_path_factory.mktemp("upstream-est")
    dead = f"https://localhost:{free_port()}"  # nothing listens there
    hung_socket = socket.create_server(("127.0.0.1", 0), backlog=64)  # accepts TCP, never answers
    hung = f"https://localhost:{hung_socket.getsockname()[1]}"
    # The RA's identity: a certificate with id-kp-cmcRA from a CA of its operator's own.
    ra_ca_crt, ra_ca_key = make_test_ca(root, "RA operator CA")
    ra_key = new_key()
    ra_cert = sign_certificate(ra_ca_crt, ra_ca_key, ra_key.public_key(), "kipuka RA",
                               ekus=[CMC_RA, ExtendedKeyUsageOID.CLIENT_AUTH])
    identity = write_identity(root, "ra", ra_key, ra_cert)
    other_crt, _ = make_test_ca(root, "Unrelated CA")  # the pinned chain of an upstream that is down

    # The upstream CA: trusts the RA CA for TLS client certificates and as an RA anchor.
    up = make_server(root, replacements={
        r"^csrattrs = true.*$": f'csrattrs = true\nra_anchors = ["{ra_ca_crt}"]',
        r'^retry_after = "60s".*$': 'retry_after = "7s"'}, append="""
[labels.held]
require_approval = true

[labels.strict]
key_types = ["ec-p384"]

[labels.no-ra]
ra_anchors = []

[labels.basic]
otp_name_rule = "any"

[labels.cmc]
fullcmc = true

[labels.dead-end]
ca = "dead-end"

[labels.renaming]
subject_fixed = ["O=Upstream Corp"]
""" + _est_ca("dead-end", dead, ca_bundle=other_crt, identity=identity,
              extra=f'chain = "{other_crt}"\nretry_after = 42\n'))
    with open(up.dir / "tls" / "client-ca.pem", "ab") as fh:
        fh.write(ra_ca_crt.read_bytes())
    # A second replica of the same CA (its files copied; its own port, database and no side listeners),
    # started by the failover test itself.
    twin = Server(root / "twin", free_port())
    shutil.copytree(up.dir, twin.dir)
    edit_config(twin.config, {r'^listen = "127\.0\.0\.1:\d+"(.*)$': r'listen = ""\1'})
    if (database := fresh_database_url()) is not None:  # PostgreSQL runs of the suite
        edit_config(twin.config, {r'^url = "postgres[^"]*"': f'url = "{database}"'})
    up.start()
    up_chain = ordered_chain(x509.load_pem_x509_certificates(Path(up.ca_bundle).read_bytes()))
    (root / "upstream-chain.pem").write_bytes(_pem(up_chain))

    # Basic credentials of the RA at the upstream: an OTP of many uses, from a file.
    (root / "ra-basic.otp").write_text(up.otp("ra-basic", "--uses", "50", "--label", "basic") + "\n")
    (root / "wrong.pw").write_text("not-the-otp\n")

    live = f"https://localhost:{up.port}"
    anchors = up.dir / "ca" / "root.pem"
    ra_cas = "".join([
        _est_ca("up", live, ca_bundle=anchors, identity=identity),
        _est_ca("up-held", live, ca_bundle=anchors, identity=identity, extra='label = "held"\n'),
        _est_ca("up-strict", live, ca_bundle=anchors, identity=identity, extra='label = "strict"\n'),
        _est_ca("up-no-ra", live, ca_bundle=anchors, identity=identity, extra='label = "no-ra"\n'),
        _est_ca("up-cmc", live, ca_bundle=anchors, identity=identity, extra='label = "cmc"\nrevoke = "fullcmc"\n'),
        _est_ca("up-renaming", live, ca_bundle=anchors, identity=identity, extra='label = "renaming"\n'),
        _est_ca("up-dead-end", live, ca_bundle=anchors, identity=identity, extra='label = "dead-end"\n'),
        _est_ca("up-basic", live, ca_bundle=anchors, extra=f'label = "basic"\nusername = "ra-basic"\n'
                                                              f'password_file = "{root / "ra-basic.otp"}"\n'),
        _est_ca("up-bad-password", live, ca_bundle=anchors, extra=f'label = "basic"\nusername = "ra-basic"\n'
                                                                  f'password_file = "{root / "wrong.pw"}"\n'),
        _est_ca("up-down", dead, ca_bundle=anchors, identity=identity,
                extra=f'chain = "{root / "upstream-chain.pem"}"\nretry_after = 3\n'),
        _est_ca("up-failover", live, ca_bundle=anchors, identity=identity,
                extra=f'chain = "{root / "upstream-chain.pem"}"\nhealth_interval = "1s"\n'
                      f'replicas = [ {{ url = "https://localhost:{twin.port}" }}, {{ url = "{live}" }} ]\n'),
        _est_ca("up-hung", hung, ca_bundle=anchors, identity=identity,
                extra=f'chain = "{root / "upstream-chain.pem"}"\ntimeout = "1s"\nretry_after = 4\n'),
        _est_ca("up-hung-pool", live, ca_bundle=anchors, identity=identity,
                extra=f'chain = "{root / "upstream-chain.pem"}"\ntimeout = "1s"\n'
                      f'replicas = [ {{ url = "{hung}" }}, {{ url = "{live}" }} ]\n'),
        _est_ca("up-pool", live, ca_bundle=anchors, identity=identity,
                extra=f'chain = "{root / "upstream-chain.pem"}"\n'
                      f'replicas = [ {{ url = "{dead}" }}, {{ url = "{live}" }} ]\n'),
    ])
    ra_labels = "".join(f"\n[labels.{name}]\nca = \"{ca}\"\n" for name, ca in [
        ("via", "up"), ("held", "up-held"), ("strict", "up-strict"), ("no-ra", "up-no-ra"),
        ("dead-end", "up-dead-end"), ("basic", "up-basic"), ("bad-password", "up-bad-password"),
        ("down", "up-down"), ("pool", "up-pool"), ("revoking", "up-cmc"), ("failover", "up-failover"),
        ("hung", "up-hung"), ("hung-pool", "up-hung-pool"), ("renaming", "up-renaming")])
    ra_labels += '\n[labels.held-twice]\nca = "up-held"\nrequire_approval = true\n'
    ra = make_server(root, append=ra_cas + ra_labels + '\n[labels.keygen]\nca = "up"\nserverkeygen = true\n'
                   'serverkeygen_deliveries = ["csr-key", "asymmetric", "symmetric"]\n')
    # Devices holding upstream-issued certificates re-enroll at the RA over mTLS.
    with open(ra.dir / "tls" / "client-ca.pem", "ab") as fh:
        fh.write(_pem(up_chain))
    ra.start()
    yield SimpleNamespace(up=up, ra=ra, twin=twin, up_chain=up_chain, identity=identity, root=root,
                          up_token=admin_token(up), ra_token=admin_token(ra))
    ra.stop()
    twin.stop()
    up.stop()
    hung_socket.close()


def _enroll_at_ra(ra, label: str, key=None, entity: str | None = None):
    entity = entity or unique()
    otp = ra.otp(entity, "--label", label)
    key = key or new_key()
    _, der = make_csr(f"{entity}.example.com", key)
    return entity, otp, key, ra.post("simpleenroll", b64(der), label=label, auth=(entity, otp))


def _upstream_certs(r) -> list[x509.Certificate]:
    assert r.status_code == 200, r.text
    return certs_in_body(r.content)


# --- enrollment through the RA ------------------------------------------------------------

def test_curl_enrolls_at_the_ra_and_gets_a_certificate_from_the_upstream_ca(chain, tmp_path):
    ra, up = chain.ra, chain.up
    entity = unique()
    otp = ra.otp(entity, "--label", "via")
    key, der = make_csr(f"{entity}.example.com")
    (tmp_path / "csr.b64").write_bytes(b64(der))
    out = tmp_path / "enrolled.p7b"
    curl = subprocess.run(["curl", "-sS", "-o", str(out), "-w", "%{http_code}", "--cacert", ra.ca_bundle,
                           "-u", f"{entity}:{otp}", "-H", "Content-Type: application/pkcs10",
                           "--data-binary", f"@{tmp_path / 'csr.b64'}", ra.url("simpleenroll", "via")],
                          capture_output=True, text=True, timeout=30)
    assert curl.stdout == "200", curl.stderr + out.read_text(errors="replace")
    subprocess.run(f"base64 -d {out} | openssl pkcs7 -inform DER -print_certs -out {tmp_path / 'device.crt'}",
                   shell=True, check=True, timeout=30)
    # openssl verifies it against the upstream's CA chain, not the RA's own CAs.
    verify = subprocess.run(["openssl", "verify", "-CAfile", up.ca_bundle, str(tmp_path / "device.crt")],
                            capture_output=True, text=True, timeout=30)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    cert = x509.load_pem_x509_certificate((tmp_path / "device.crt").read_bytes())
    assert cert.public_key() == key.public_key()
    assert cert.subject.rfc4514_string() == f"CN={entity}.example.com"
    assert cert.issuer == chain.up_chain[0].subject
    serial = f"{cert.serial_number:x}"
    # Both servers recorded it: the RA for its requester, the upstream for the RA.
    assert serial in ra.cli("certs", "list", "--entity", entity).stdout.lower()
    assert serial in up.cli("certs", "list").stdout.lower()
    # The OTP was spent at the RA.
    again = ra.post("simpleenroll", b64(make_csr(f"{entity}.example.com", new_key())[1]), label="via",
                    auth=(entity, otp))
    assert again.status_code == 401


def test_a_retry_after_a_lost_response_gets_the_certificate_the_upstream_renamed(chain):
    """The upstream's profile adds O= to every subject. A device whose response was lost retries with
    the same single-use OTP, key and CSR: it gets that certificate again, not a 401 for other names."""
    entity, otp, key, r = _enroll_at_ra(chain.ra, "renaming")
    [first] = [c for c in _upstream_certs(r) if c.public_key() == key.public_key()]
    assert first.subject.rfc4514_string() == f"CN={entity}.example.com,O=Upstream Corp"
    _, der = make_csr(f"{entity}.example.com", key)
    again = chain.ra.post("simpleenroll", b64(der), label="renaming", auth=(entity, otp))
    assert again.status_code == 200, again.text
    assert [c.serial_number for c in certs_in_body(again.content) if c.public_key() == key.public_key()] == \
        [first.serial_number]
    # other names (a SAN added): a new request, and the OTP is spent
    _, other = make_csr(f"{entity}.example.com", key, sans=[x509.DNSName(f"{entity}.example.com")])
    refused = chain.ra.post("simpleenroll", b64(other), label="renaming", auth=(entity, otp))
    assert refused.status_code == 401 and "OTP already used" in refused.text


def test_ra_cacerts_is_the_upstreams_cacerts(chain):
    ra, up = chain.ra, chain.up
    mine, theirs = ra.get("cacerts", label="via"), up.get("cacerts")
    assert _upstream_certs(mine) == _upstream_certs(theirs)  # the same bytes, in the same (DER) order
    assert ordered_chain(_upstream_certs(mine)) == chain.up_chain
    # The RA's own labels keep their own CA.
    assert ordered_chain(_upstream_certs(ra.get("cacerts")))[0] != chain.up_chain[0]


def test_reenroll_at_the_ra_with_an_upstream_certificate(chain, tmp_path):
    ra = chain.ra
    entity, _, key, r = _enroll_at_ra(ra, "via")
    first = certs_from(r)[0]
    crt, k = write_identity(tmp_path, entity, key, first)
    new = new_key()
    r = ra.post("simplereenroll", b64(make_csr(f"{entity}.example.com", new)[1]), label="via", cert=(crt, k))
    renewed = certs_from(r)[0]
    assert renewed.public_key() == new.public_key()
    assert renewed.issuer == first.issuer and renewed.serial_number != first.serial_number


def test_serverkeygen_through_the_ra(chain):
    ra = chain.ra
    entity = unique()
    otp = ra.otp(entity, "--label", "keygen")
    throwaway, der = make_csr(f"{entity}.example.com")
    r = ra.post("serverkeygen", b64(der), label="keygen", auth=(entity, otp))
    assert r.status_code == 200, r.text
    from kipuka.client import wire
    from kipuka.client.cms import open_server_generated_key
    parts = wire.multipart(r.content, wire.parse_media_type(r.headers["Content-Type"]))
    cert_part = next(p for p in parts if "certs-only" in p.headers.get("content-type", ""))
    key_part = next(p for p in parts if p is not cert_part)
    cert = wire.certificates(cert_part.body, "cert")[0]
    opened = open_server_generated_key(wire.decode_body(key_part.body, "key"), private_key=throwaway)
    assert opened.private_key.public_key() == cert.public_key()
    assert cert.issuer == chain.up_chain[0].subject
    # The RA made the key, so the RA's certificate signs the key package.
    assert opened.signed and opened.signer == x509.load_pem_x509_certificate(Path(chain.identity[0]).read_bytes())


def test_ra_with_basic_credentials_at_the_upstream(chain):
    entity, _, key, r = _enroll_at_ra(chain.ra, "basic")
    cert = certs_from(r)[0]
    assert cert.public_key() == key.public_key() and cert.issuer == chain.up_chain[0].subject


def test_revocation_at_the_ra_reaches_the_upstream_through_fullcmc(chain):
    ra, up = chain.ra, chain.up
    _, _, _, r = _enroll_at_ra(ra, "revoking")
    serial = f"{certs_from(r)[0].serial_number:x}"
    assert admin_call(up, "GET", f"/admin/certs/{serial}", chain.up_token).json()["revoked_at"] is None
    done = admin_call(ra, "POST", f"/admin/certs/{serial}/revoke", chain.ra_token,
                      json_body={"reason": "keyCompromise"})
    assert done.status_code == 200, done.text
    at_upstream = admin_call(up, "GET", f"/admin/certs/{serial}", chain.up_token).json()
    assert at_upstream["revoked_at"] and at_upstream["revocation_reason"] == "keyCompromise"
    # The same from the command line.
    _, _, _, r = _enroll_at_ra(ra, "revoking")
    serial = f"{certs_from(r)[0].serial_number:x}"
    cli = ra.cli("certs", "revoke", serial, "--reason", "superseded")
    assert cli.returncode == 0 and "Unclosed" not in cli.stderr, cli.stderr
    assert admin_call(up, "GET", f"/admin/certs/{serial}", chain.up_token).json()["revocation_reason"] == \
        "superseded"
    # Without `revoke`, the RA records the revocation alone (the upstream is not told).
    _, _, _, r = _enroll_at_ra(ra, "via")
    serial = f"{certs_from(r)[0].serial_number:x}"
    assert admin_call(ra, "POST", f"/admin/certs/{serial}/revoke", chain.ra_token).status_code == 200
    assert admin_call(up, "GET", f"/admin/certs/{serial}", chain.up_token).json()["revoked_at"] is None


# --- the upstream holds the request: 202 relayed -------------------------------------------

def _pending_at_upstream(up, token: str, cn: str) -> int:
    items = admin_call(up, "GET", "/admin/requests", token).json()["items"]
    return next(i["id"] for i in items if i["subject"] == f"CN={cn}" and i["status"] == "pending")


def test_upstream_approval_is_relayed_as_202_then_200(chain):
    ra, up = chain.ra, chain.up
    entity, otp, key, r = _enroll_at_ra(ra, "held")
    assert r.status_code == 202, r.text
    assert r.headers["Retry-After"] == "7"  # the upstream's own
    again = ra.post("simpleenroll", b64(make_csr(f"{entity}.example.com", key)[1]), label="held", auth=(entity, otp))
    assert again.status_code == 202 and again.headers["Retry-After"] == "7"
    token = chain.up_token
    pid = _pending_at_upstream(up, token, f"{entity}.example.com")
    approved = admin_call(up, "POST", f"/admin/requests/{pid}/approve", token)
    assert approved.status_code == 200, approved.text
    serial = approved.json()["certificate"]["serial"]
    done = ra.post("simpleenroll", b64(make_csr(f"{entity}.example.com", key)[1]), label="held", auth=(entity, otp))
    cert = certs_from(done)[0]
    assert int(serial, 16) == cert.serial_number and cert.public_key() == key.public_key()
    # Asked again, the RA hands out the same certificate (it recorded it once).
    assert certs_from(ra.post("simpleenroll", b64(make_csr(f"{entity}.example.com", key)[1]), label="held",
                              auth=(entity, otp)))[0] == cert
    assert len(ra.cli("certs", "list", "--entity", entity).stdout.strip().splitlines()) == 1


def test_approval_at_the_ra_then_at_the_upstream(chain):
    ra, up = chain.ra, chain.up
    entity, otp, key, r = _enroll_at_ra(ra, "held-twice")
    assert r.status_code == 202 and r.headers["Retry-After"] == "60"  # the RA's own officer first
    upstream_items = admin_call(up, "GET", "/admin/requests", chain.up_token).json()["items"]
    assert all(i["subject"] != f"CN={entity}.example.com" for i in upstream_items)  # nothing forwarded yet
    mine = admin_call(ra, "GET", "/admin/requests", chain.ra_token).json()["items"]
    rid = next(i["id"] for i in mine if i["entity"] == entity)
    approved = admin_call(ra, "POST", f"/admin/requests/{rid}/approve", chain.ra_token)
    assert approved.status_code == 202 and approved.json()["ca_ref"], approved.text  # forwarded, held upstream
    retry = ra.post("simpleenroll", b64(make_csr(f"{entity}.example.com", key)[1]), label="held-twice",
                    auth=(entity, otp))
    assert retry.status_code == 202 and retry.headers["Retry-After"] == "7"  # now the upstream's
    pid = _pending_at_upstream(up, chain.up_token, f"{entity}.example.com")
    assert admin_call(up, "POST", f"/admin/requests/{pid}/approve", chain.up_token).status_code == 200
    done = ra.post("simpleenroll", b64(make_csr(f"{entity}.example.com", key)[1]), label="held-twice",
                   auth=(entity, otp))
    assert certs_from(done)[0].public_key() == key.public_key()


def test_upstream_rejection_is_relayed_as_403_with_its_reason(chain):
    ra, up = chain.ra, chain.up
    entity, otp, key, r = _enroll_at_ra(ra, "held")
    assert r.status_code == 202
    token = chain.up_token
    pid = _pending_at_upstream(up, token, f"{entity}.example.com")
    assert admin_call(up, "POST", f"/admin/requests/{pid}/reject", token,
                      json_body={"reason": "unknown device serial"}).status_code == 200
    denied = ra.post("simpleenroll", b64(make_csr(f"{entity}.example.com", key)[1]), label="held",
                     auth=(entity, otp))
    assert denied.status_code == 403 and "unknown device serial" in denied.text


# --- errors mapped --------------------------------------------------------------------------

def test_csr_the_upstream_refuses_is_400_with_its_reason(chain):
    _, _, _, r = _enroll_at_ra(chain.ra, "strict")  # P-256; the upstream's label takes P-384 only
    assert r.status_code == 400
    assert r.headers["Content-Type"].startswith("text/plain")
    assert r.text.startswith("the CA refused the request: ") and "key" in r.text.lower()


def test_upstream_that_does_not_accept_the_ra_is_403(chain):
    _, _, _, r = _enroll_at_ra(chain.ra, "no-ra")
    assert r.status_code == 403 and "not authorized to enroll on this label" in r.text


def test_rejected_ra_credentials_are_a_500_for_the_operator_not_a_401(chain):
    _, _, _, r = _enroll_at_ra(chain.ra, "bad-password")
    assert r.status_code == 500
    assert "did not accept this RA's credentials" in r.text


def test_upstream_down_is_503_with_retry_after(chain):
    _, _, _, r = _enroll_at_ra(chain.ra, "down")
    assert r.status_code == 503 and r.headers["Retry-After"] == "3"
    assert "unreachable" in r.text


def test_upstreams_503_is_relayed_with_its_retry_after(chain):
    # RA -> upstream label dead-end -> a third hop that is down: the upstream answers 503, Retry-After 42.
    _, _, _, r = _enroll_at_ra(chain.ra, "dead-end")
    assert r.status_code == 503 and r.headers["Retry-After"] == "42"


def test_hung_upstream_is_503_after_the_timeout_then_at_once(chain):
    ra, entity = chain.ra, unique()
    otp = ra.otp(entity, "--label", "hung", "--uses", "2")
    took = []
    for _ in range(2):
        started = time.monotonic()
        r = ra.post("simpleenroll", b64(make_csr(f"{entity}.example.com")[1]), label="hung", auth=(entity, otp))
        took.append(time.monotonic() - started)
        assert r.status_code == 503 and r.headers["Retry-After"] == "4" and "no answer within 1s" in r.text
    assert took[0] >= 1.0 and took[1] < 0.5, took  # the second does not wait for the hung upstream again


def test_hung_replica_costs_one_timeout_then_the_live_one_serves(chain):
    ra, entity = chain.ra, unique()
    otp = ra.otp(entity, "--label", "hung-pool", "--uses", "5")
    started = time.monotonic()
    for _ in range(5):
        key, der = make_csr(f"{entity}.example.com")
        cert = certs_from(ra.post("simpleenroll", b64(der), label="hung-pool", auth=(entity, otp)))[0]
        assert cert.public_key() == key.public_key()
    assert time.monotonic() - started < 2 * 1.0 + 1.5  # not 5 timeouts


def test_dead_replica_fails_over_to_the_live_one(chain):
    ra, entity = chain.ra, unique()
    otp = ra.otp(entity, "--label", "pool", "--uses", "3")
    for _ in range(3):  # active-passive: the dead first replica is tried, then skipped
        key, der = make_csr(f"{entity}.example.com")
        cert = certs_from(ra.post("simpleenroll", b64(der), label="pool", auth=(entity, otp)))[0]
        assert cert.public_key() == key.public_key() and cert.issuer == chain.up_chain[0].subject
    health = admin_call(ra, "GET", "/admin/health", chain.ra_token).json()
    components = health["components"]
    assert components["ca:up"]["status"] == "ok"  # a real GET /cacerts to the upstream
    assert components["ca:up-pool"]["status"] == "degraded"
    pool = components["ca:up-pool"]["detail"]
    assert "replica 1" in pool and "Connection refused" in pool
    assert components["ca:up-down"]["status"] == "down" and "unreachable" in components["ca:up-down"]["detail"]


def test_sighup_fetches_the_upstreams_cacerts_again_and_keeps_forwarding(chain):
    ra = chain.ra
    assert certs_from(_enroll_at_ra(ra, "via")[3])  # the worker has connections to the upstream now
    before = ra.log.read_text().count("configuration reloaded")
    ra.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 30
    while ra.log.read_text().count("configuration reloaded") == before:
        assert time.monotonic() < deadline, ra.log.read_text()[-2000:]
        time.sleep(0.1)
    entity, _, key, r = _enroll_at_ra(ra, "via")
    assert certs_from(r)[0].public_key() == key.public_key()
    assert "Unclosed" not in ra.log.read_text()  # the old CA's connections were closed


def test_replica_killed_during_a_load_run(chain):
    """300 enrollments through the RA, 8 at a time; the active upstream replica is killed (SIGKILL) a
    third of the way in. Each gets 200 (from whichever replica) or 503 + Retry-After, never a 500."""
    ra, twin = chain.ra, chain.twin
    twin.start()
    deadline = time.monotonic() + 20  # the pool's health check (every second) finds the twin up
    while admin_call(ra, "GET", "/admin/health", chain.ra_token).json()["components"]["ca:up-failover"][
            "status"] != "ok":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    twin_before = db_execute(twin, "SELECT count(*) FROM certificates")[0][0]
    up_before = db_execute(chain.up, "SELECT count(*) FROM certificates")[0][0]
    entity, total = unique(), 300
    otp = ra.otp(entity, "--label", "failover", "--uses", str(total))
    done: list[int] = []

    def enroll(_: int):
        key, der = make_csr(f"{entity}.example.com")
        r = ra.post("simpleenroll", b64(der), label="failover", auth=(entity, otp))
        done.append(r.status_code)
        if r.status_code == 503:
            assert int(r.headers["Retry-After"]) > 0
            return None
        return certs_from(r)[0], key

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(enroll, i) for i in range(total)]
        while len(done) < total // 3:
            time.sleep(0.01)
        twin.stop(signal.SIGKILL)
        results = [f.result() for f in futures]
    assert set(done) <= {200, 503}, sorted(set(done))
    issued = [r for r in results if r is not None]
    assert len(issued) >= total * 0.9, f"{len(issued)} of {total} issued"
    assert all(cert.public_key() == key.public_key() for cert, key in issued)
    serials = {cert.serial_number for cert, _ in issued}
    assert len(serials) == len(issued)
    by_twin = db_execute(twin, "SELECT count(*) FROM certificates")[0][0] - twin_before
    by_up = db_execute(chain.up, "SELECT count(*) FROM certificates")[0][0] - up_before
    assert by_twin >= total // 3 - 8 and by_up > 0  # both replicas served
    # Each certificate the RA handed out is recorded once at the RA; the upstreams may hold one more for
    # a request killed after its commit and before its answer (at most the 8 in flight).
    rows, keys = db_execute(ra, "SELECT count(*), count(DISTINCT pubkey_sha256) FROM certificates "
                                "WHERE entity = :e", {"e": entity})[0]
    assert rows == keys == len(issued)
    assert len(issued) <= by_twin + by_up <= len(issued) + 8


# --- configuration -----------------------------------------------------------------------

def _build(tmp_path, **options):
    from kipuka.ca.registry import build_ca
    from kipuka.config import CAConfig
    return build_ca(CAConfig(id="x", type="est", options=options, base=tmp_path))


def test_configuration_errors_name_the_key(chain, tmp_path):
    from kipuka.config import ConfigError
    live, anchors = f"https://localhost:{chain.up.port}", str(chain.up.dir / "ca" / "root.pem")
    crt, key = chain.identity
    stranger_ca, stranger_ca_key = make_test_ca(tmp_path, "CA the upstream does not know")
    stranger_key = new_key()
    stranger = write_identity(tmp_path, "stranger", stranger_key, sign_certificate(
        stranger_ca, stranger_ca_key, stranger_key.public_key(), "RA nobody trusts", ekus=[CMC_RA]))
    cases = [
        (dict(url=live, ra_cert=crt, ra_key=key, password="x"), "ca.x.password", "password_env"),
        (dict(url=f"http://localhost:{chain.up.port}", ra_cert=crt, ra_key=key), "ca.x.url", "https"),
        (dict(url=live, ca_bundle=anchors), "ca.x.ra_cert", "authenticate"),
        (dict(url=live, ra_cert=crt), "ca.x.ra_key", "go together"),
        (dict(url=live, ra_cert=crt, ra_key=key, label="no/such"), "ca.x.label", "EST label"),
        (dict(url=live, ra_cert=crt, ra_key=key, username="u"), "ca.x.password_env", "exactly one"),
        (dict(url=live, ra_cert=crt, ra_key=key, colour="blue"), "ca.x.colour", "unknown key"),
        # An untrusted upstream TLS certificate (system CAs only) and no fallback chain.
        (dict(url=live, ra_cert=crt, ra_key=key), "ca.x.url", "not trusted"),
        (dict(url=f"https://localhost:{free_port()}", ca_bundle=anchors, ra_cert=crt, ra_key=key), "ca.x.url",
         "set `chain`"),
        # The upstream drops the TLS connection of an RA certificate it does not trust.
        (dict(url=live, ca_bundle=anchors, ra_cert=stranger[0], ra_key=stranger[1]), "ca.x.ra_cert",
         "refuses this RA certificate"),
        # A pinned chain that is not the upstream's.
        (dict(url=live, ca_bundle=anchors, ra_cert=crt, ra_key=key, chain=crt), "ca.x.chain", "does not hold"),
    ]
    for options, key_name, words in cases:
        with pytest.raises(ConfigError) as err:
            _build(tmp_path, **options)
        assert err.value.key == key_name, (options, err.value)
        assert words in err.value.message, (options, err.value)


def test_issue_in_process_relays_the_upstream(chain, tmp_path):
    """The back end alone, as a pool would call it: issue(), describe(), health(), no CRL signing."""
    import asyncio
    import datetime as dt

    from kipuka.ca.base import IssuanceRejected, IssueRequest
    from kipuka.errors import NotImplementedYet
    ca = _build(tmp_path, url=f"https://localhost:{chain.up.port}", ca_bundle=str(chain.up.dir / "ca" / "root.pem"),
                ra_cert=chain.identity[0], ra_key=chain.identity[1], label_map={"p384-only": "strict"})
    key, der = make_csr("anything.example.com")
    csr = x509.load_der_x509_csr(der)
    req = IssueRequest(subject=csr.subject, public_key=key.public_key(), san=None, ekus=(),
                       validity=dt.timedelta(days=1), csr_der=der, label="some-label")

    async def run():
        issued = await ca.issue(req)
        assert ca.is_issuer_of(issued.certificate) and issued.certificate.public_key() == key.public_key()
        with pytest.raises(IssuanceRejected) as refused:
            await ca.issue(IssueRequest(**{**req.__dict__, "label": "p384-only"}))
        assert refused.value.status == 400
        assert await ca.health() == "ok"
        with pytest.raises(NotImplementedYet):
            await ca.sign_crl([], 1, dt.datetime.now(dt.timezone.utc), dt.datetime.now(dt.timezone.utc))
        await ca.aclose()

    asyncio.run(run())
    assert ca.forwards_requests and not ca.signs_revocation
    assert ca.ca_certificates() == chain.up_chain
    assert f"localhost:{chain.up.port}" in ca.describe()


def test_chain_order_comes_from_signatures_not_from_the_upstreams_order(chain):
    """A PKCS#7 set has no order (DER sorts it): the issuing CA is found by who signed whom."""
    from kipuka.ca.upstream_est_chain import CacertsError, order_chain
    issuing, root = chain.up_chain
    assert order_chain([root, issuing]) == [issuing, root]
    assert order_chain([issuing, root]) == [issuing, root]
    assert order_chain([root]) == [root]
    assert order_chain([issuing]) == [issuing]  # no root sent: what there is
    assert order_chain([root, issuing], issuing=root) == [root, issuing]  # a pin decides
    with pytest.raises(CacertsError):
        order_chain([root], issuing=issuing)

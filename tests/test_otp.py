"""OTP authentication rules (HTTP Basic entity-id:otp)."""

import signal
import subprocess
import time

from tests.helpers import b64, certs_from, db_execute, make_csr, new_key, unique


def _enroll(server, entity, otp, key=None, label=None, cn=None):
    key, der = make_csr(cn or f"{entity}.example.com", key)
    return key, server.post("simpleenroll", b64(der), auth=(entity, otp), label=label)


def test_otp_create_prints_only_the_otp_on_stdout(server):
    out = server.cli("otp", "create", unique())
    secret = out.stdout.strip()
    assert out.stdout == secret + "\n"
    assert len(secret) >= 22  # 128 bits in URL-safe base64
    assert "OTP" in out.stderr


def test_otps_have_at_least_128_random_bits_and_differ(server):
    secrets = {server.otp(unique()) for _ in range(3)}
    assert len(secrets) == 3
    import base64
    for s in secrets:
        assert len(base64.urlsafe_b64decode(s + "==")) >= 16


def test_otp_is_stored_only_as_a_keyed_hash(server):
    entity = unique()
    secret = server.otp(entity)
    for name in ("kipuka.db", "kipuka.db-wal"):  # the raw SQLite files, when SQLite is the store
        if (server.dir / name).exists():
            assert secret.encode() not in (server.dir / name).read_bytes()
    rows = db_execute(server, "SELECT digest, entity FROM otps WHERE entity = :e", {"e": entity})
    (digest, _), = rows
    assert len(bytes(digest)) == 32 and secret.encode() not in bytes(digest)


def test_wrong_otp_is_401(server):
    entity = unique()
    server.otp(entity)
    _, r = _enroll(server, entity, "wrong-otp-value")
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == 'Basic realm="est"'
    assert "invalid entity id or OTP" in r.text


def test_unknown_entity_is_401(server):
    _, r = _enroll(server, unique("nobody"), "a7f3b9c2d1e4")
    assert r.status_code == 401


def test_reused_single_use_otp_is_401(server):
    entity = unique()
    otp = server.otp(entity)
    _, first = _enroll(server, entity, otp)
    assert first.status_code == 200
    _, second = _enroll(server, entity, otp)  # a new key: not a lost-response retry
    assert second.status_code == 401 and "already used" in second.text


def test_expired_otp_is_401(server):
    entity = unique()
    otp = server.otp(entity, "--ttl", "1s")
    time.sleep(1.5)
    _, r = _enroll(server, entity, otp)
    assert r.status_code == 401 and "expired" in r.text
    (listed,) = server.cli("otp", "list", "--entity", entity).stdout.splitlines()  # as the admin API says it
    assert listed.endswith("\texpired") and "\t(unlabeled)\t" in listed, listed


def test_multi_use_otp_gives_exactly_its_uses(server):
    entity = unique()
    otp = server.otp(entity, "--uses", "2")
    assert [_enroll(server, entity, otp)[1].status_code for _ in range(3)] == [200, 200, 401]


def test_otp_bound_to_a_label_only_works_on_that_label(server):
    entity = unique()
    otp = server.otp(entity, "--label", "iot-fleet")
    _, elsewhere = _enroll(server, entity, otp, label="corp-devices")
    assert elsewhere.status_code == 401
    _, unlabeled = _enroll(server, entity, otp)
    assert unlabeled.status_code == 401
    _, right = _enroll(server, entity, otp, label="iot-fleet")
    assert right.status_code == 200


def test_otp_for_unknown_label_is_refused_by_the_cli(server):
    out = server.cli("otp", "create", unique(), "--label", "nope", check=False)
    assert out.returncode != 0 and "unknown EST label" in out.stderr


def test_revoked_otp_is_401(server):
    entity = unique()
    otp = server.otp(entity)
    listing = server.cli("otp", "list", "--entity", entity).stdout.split("\t")
    server.cli("otp", "revoke", listing[0])
    _, r = _enroll(server, entity, otp)
    assert r.status_code == 401


def test_bad_csr_does_not_burn_the_otp(server):
    entity = unique()
    otp = server.otp(entity)
    r = server.post("simpleenroll", b64(b"\x30\x00"), auth=(entity, otp))
    assert r.status_code == 400
    _, ok = _enroll(server, entity, otp)
    assert ok.status_code == 200


def test_name_outside_the_entity_binding_is_403_and_keeps_the_otp(server):
    entity = unique()
    otp = server.otp(entity)
    _, r = _enroll(server, entity, otp, cn="someone-else.example.com")
    assert r.status_code == 403 and "not allowed for entity" in r.text
    _, ok = _enroll(server, entity, otp)
    assert ok.status_code == 200


def test_lost_response_retry_with_same_key_gets_the_same_certificate(server):
    entity = unique()
    otp = server.otp(entity)
    key = new_key()
    _, first = _enroll(server, entity, otp, key)
    _, retry = _enroll(server, entity, otp, key)
    assert retry.status_code == 200
    assert certs_from(retry)[0].serial_number == certs_from(first)[0].serial_number
    listing = server.cli("certs", "list", "--entity", entity).stdout.strip().splitlines()
    assert len(listing) == 1


def test_lost_response_retry_needs_the_right_otp(server):
    entity = unique()
    otp = server.otp(entity)
    key = new_key()
    _enroll(server, entity, otp, key)
    _, r = _enroll(server, entity, "not-the-otp", key)
    assert r.status_code == 401


def test_repeated_failures_lock_out_the_entity_from_that_address_only(fresh_server):
    srv = fresh_server(replacements={r"^max_failures = 5": "max_failures = 3"})
    entity = unique()
    otp = srv.otp(entity)
    for _ in range(3):
        assert _enroll(srv, entity, "wrong")[1].status_code == 401
    _, locked = _enroll(srv, entity, otp)  # the right OTP, from the locked-out address
    assert locked.status_code == 401 and "locked" in locked.text
    # The same entity from another client address is not locked out: a stranger
    # guessing from elsewhere cannot lock the device out.
    key, der = make_csr(f"{entity}.example.com")
    body = srv.dir / "csr.b64"
    body.write_bytes(b64(der))
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--interface", "127.0.0.2",
                          "--cacert", srv.ca_bundle, "-u", f"{entity}:{otp}", "-H", "Content-Type: application/pkcs10",
                          "--data-binary", f"@{body}", "--resolve", f"localhost:{srv.port}:127.0.0.1",
                          srv.url("simpleenroll")], capture_output=True, text=True, timeout=30)
    assert out.stdout == "200"


def test_rotating_the_hash_key_keeps_outstanding_otps_valid(fresh_server):
    srv = fresh_server()
    old_entity, new_entity = unique(), unique()
    old = srv.otp(old_entity)
    srv.cli("otp", "rotate-key")
    assert len((srv.dir / "private" / "otp-hmac.keys").read_text().strip().splitlines()) == 2
    srv.proc.send_signal(signal.SIGHUP)
    time.sleep(1)
    new = srv.otp(new_entity)
    assert _enroll(srv, old_entity, old)[1].status_code == 200
    assert _enroll(srv, new_entity, new)[1].status_code == 200


def test_otp_key_file_is_private(server):
    assert (server.dir / "private" / "otp-hmac.keys").stat().st_mode & 0o777 == 0o600


def test_every_otp_event_is_audited(server):
    entity = unique()
    otp = server.otp(entity)
    _enroll(server, entity, "wrong")
    _enroll(server, entity, otp)
    lines = [l for l in server.cli("audit", "list", "--limit", "200").stdout.splitlines() if f"\t{entity}\t" in l]
    events = {(l.split("\t")[1], l.split("\t")[2]) for l in lines}
    assert {("otp.create", "success"), ("enroll", "rejected"), ("enroll", "success")} <= events
    assert all(otp not in l for l in lines)


def test_a_failed_attempt_is_audited_once(server):
    entity = unique()
    server.otp(entity)
    _enroll(server, entity, "wrong")
    lines = [l for l in server.cli("audit", "list", "--limit", "300").stdout.splitlines()
             if f"\t{entity}\t" in l and "\trejected\t" in l]
    assert len(lines) == 1

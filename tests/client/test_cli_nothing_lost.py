"""`kipuka-est` loses nothing on ordinary failures: a request held past --max-wait keeps its key and is
resumed, output paths are checked before anything is sent (no OTP spent for nothing), and renew --rekey
installs key and certificate as a pair, finishing an install a crash interrupted."""

from __future__ import annotations

import json
import os
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from kipuka.client import CsrSpec, EstClient, generate_key
from kipuka.client.cli import main
from kipuka.client.enrollment import server_id
from kipuka.client.files import write_key
from kipuka.client.install import pair_matches
from kipuka.client.pending import PendingFile, PendingRequest
from tests.client.agent_util import pending_requests
from tests.helpers import admin_call, admin_token, unique


@pytest.fixture(scope="module")
def server(agent_srv):
    return agent_srv


@pytest.fixture
def run(server, capsys):
    def invoke(*args: str) -> tuple[int, str, str]:
        code = main([args[0], "-s", f"https://localhost:{server.port}", "--trust", server.ca_bundle, *args[1:]])
        out, err = capsys.readouterr()
        return code, out, err
    return invoke


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_enroll_held_past_max_wait_keeps_its_key_and_a_rerun_resumes_the_same_request(server, run, tmp_path):
    token = admin_token(server)
    entity = unique("held")
    otp = server.otp(entity, "--label", "held")  # single use: a second use would be refused
    crt, key = tmp_path / "dev.crt", tmp_path / "dev.key"
    args = ("enroll", "-l", "held", "-u", entity, "--otp", otp, "--cn", f"{entity}.example.com",
            "--out-cert", str(crt), "--out-key", str(key), "--max-wait", "0")
    code, out, err = run(*args)
    assert code == 7 and "rerun to resume" in err
    kept = tmp_path / "dev.key.pending"
    assert _mode(kept) == 0o600 and not crt.exists() and not key.exists()
    kept_key = serialization.load_pem_private_key(json.loads(kept.read_text())["key"].encode(), None)
    code, out, err = run(*args)
    assert code == 7 and "resuming the simpleenroll request" in err
    assert len(pending_requests(server, token, entity)) == 1  # the same request, not a second one
    [held] = pending_requests(server, token, entity)
    assert admin_call(server, "POST", f"/admin/requests/{held['id']}/approve", token).status_code == 200
    code, out, err = run(*args)
    assert code == 0, err
    cert = x509.load_pem_x509_certificate(crt.read_bytes())
    assert cert.public_key() == kept_key.public_key() and pair_matches(str(crt), str(key))
    assert _mode(key) == 0o600 and not kept.exists()


def test_enroll_new_request_discards_a_kept_one(server, run, tmp_path):
    entity = unique("again")
    otp = server.otp(entity, "--uses", "2", "--label", "held")
    args = ("enroll", "-l", "held", "-u", entity, "--otp", otp, "--cn", f"{entity}.example.com",
            "--out-cert", str(tmp_path / "c"), "--out-key", str(tmp_path / "k"), "--max-wait", "0")
    assert run(*args)[0] == 7
    first = json.loads((tmp_path / "k.pending").read_text())["key"]
    code, out, err = run(*args, "--new-request")
    assert code == 7 and "discarding the pending request" in err
    assert json.loads((tmp_path / "k.pending").read_text())["key"] != first


def test_output_paths_are_checked_before_anything_is_sent_so_no_otp_is_spent(server, run, tmp_path):
    entity = unique("paths")
    otp = server.otp(entity)  # single use
    base = ("enroll", "-u", entity, "--otp", otp, "--cn", f"{entity}.example.com")
    code, out, err = run(*base, "--out-cert", str(tmp_path / "missing" / "c.pem"), "--out-key", str(tmp_path / "k"))
    assert code == 1 and "directory" in err and "does not exist" in err
    (tmp_path / "a-dir").mkdir()
    code, out, err = run(*base, "--out-cert", str(tmp_path / "c.pem"), "--out-key", str(tmp_path / "a-dir"))
    assert code == 1 and "is a directory" in err
    code, out, err = run(*base, "--out-cert", str(tmp_path / "c.pem"), "--out-key", str(tmp_path / "k.pem"),
                         "--chain", str(tmp_path / "nope" / "chain.pem"))
    assert code == 1 and "chain" in err
    assert not (tmp_path / "k.pem.pending").exists()
    code, out, err = run(*base, "--out-cert", str(tmp_path / "c.pem"), "--out-key", str(tmp_path / "k.pem"))
    assert code == 0, err  # the OTP was never sent before


def test_renew_rekey_installs_the_pair_and_leaves_no_journal(server, run, tmp_path):
    crt, key = _enrolled(server, run, tmp_path)
    old_key = key.read_bytes()
    code, out, err = run("renew", "--cert", str(crt), "--key", str(key), "--force", "--rekey")
    assert code == 0, err
    assert key.read_bytes() != old_key and pair_matches(str(crt), str(key))
    assert not (tmp_path / "dev.key.pending").exists() and _mode(key) == 0o600


def test_renew_finishes_a_rekey_that_a_crash_left_between_the_key_and_the_certificate(server, run, tmp_path):
    crt, key = _enrolled(server, run, tmp_path)
    old_cert = x509.load_pem_x509_certificate(crt.read_bytes())
    new_key = generate_key()
    # what renew --rekey had done when it was killed: the new pair committed to the journal, the key
    # file replaced, the certificate file not yet
    with EstClient(f"https://localhost:{server.port}", trust=server.ca_bundle, client_cert=(str(crt), str(key))) as est:
        issued = est.simplereenroll(CsrSpec.like_certificate(new_key, old_cert))
        request = PendingRequest.new("simplereenroll", server_id(est), CsrSpec.like_certificate(new_key, old_cert))
    request.issued = [issued.certificate, *issued.chain]
    PendingFile(str(key) + ".pending").save(request)
    write_key(key, new_key)
    assert not pair_matches(str(crt), str(key))
    code, out, err = run("renew", "--cert", str(crt), "--key", str(key), "--if-expiring-within", "1d")
    assert code == 0 and "finished the renewal that an earlier run left half done" in err
    assert x509.load_pem_x509_certificate(crt.read_bytes()) == issued.certificate
    assert pair_matches(str(crt), str(key)) and not (tmp_path / "dev.key.pending").exists()


def test_renew_resumes_a_rekey_killed_before_the_answer_with_the_key_it_made(server, run, tmp_path):
    crt, key = _enrolled(server, run, tmp_path)
    old_cert = x509.load_pem_x509_certificate(crt.read_bytes())
    made = generate_key()
    with EstClient(f"https://localhost:{server.port}", trust=server.ca_bundle) as est:
        PendingFile(str(key) + ".pending").save(
            PendingRequest.new("simplereenroll", server_id(est), CsrSpec.like_certificate(made, old_cert)))
    code, out, err = run("renew", "--cert", str(crt), "--key", str(key), "--if-expiring-within", "1d")
    assert code == 0 and "resuming the simplereenroll request" in err, err
    assert x509.load_pem_x509_certificate(crt.read_bytes()).public_key() == made.public_key()
    assert pair_matches(str(crt), str(key))


def _enrolled(server, run, tmp_path):
    entity = unique("pair")
    crt, key = tmp_path / "dev.crt", tmp_path / "dev.key"
    code, out, err = run("enroll", "-u", entity, "--otp", server.otp(entity), "--cn", f"{entity}.example.com",
                         "--out-cert", str(crt), "--out-key", str(key))
    assert code == 0, err
    return crt, key

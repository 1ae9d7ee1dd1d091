"""`kipuka-est` against a real `kipuka serve`: files, permissions, renew, exit codes, --json."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from kipuka.client.cli import main
from tests.client.conftest import root_fingerprint
from tests.helpers import unique


@pytest.fixture
def run(server, capsys, monkeypatch):
    """Run `kipuka-est` in-process; returns (exit code, stdout, stderr)."""
    monkeypatch.setenv("KIPUKA_EST_SERVER", f"https://localhost:{server.port}")
    monkeypatch.delenv("KIPUKA_EST_OTP", raising=False)
    monkeypatch.delenv("KIPUKA_EST_USER", raising=False)

    def invoke(*args: str, trust: bool = True):
        extra = ["--trust", server.ca_bundle] if trust else []
        code = main([args[0], *extra, *args[1:]])
        out, err = capsys.readouterr()
        return code, out, err
    return invoke


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _cert(path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(open(path, "rb").read())


def _enroll(otp_pool, run, tmp_path, label=None, *extra: str):
    entity, otp = otp_pool
    name = unique("files")
    crt, key = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    args = ["enroll", "-u", entity, "--otp", otp, "--cn", f"{entity}.example.com",
            "--out-cert", str(crt), "--out-key", str(key), *extra]
    if label:
        args += ["--label", label]
    code, out, err = run(*args)
    assert code == 0, err
    return entity, crt, key, out, err


def test_cacerts_prints_pem_and_writes_a_file(server, run, tmp_path):
    code, out, err = run("cacerts")
    assert code == 0 and out.count("BEGIN CERTIFICATE") == 2
    code, out, err = run("cacerts", "--label", "iot-fleet", "--out", str(tmp_path / "ca.pem"), "--json")
    doc = json.loads(out)
    assert code == 0 and doc["ok"] and len(doc["certificates"]) == 2
    assert any("iot-fleet" in c["subject"] for c in doc["certificates"])
    assert (tmp_path / "ca.pem").read_bytes().count(b"BEGIN CERTIFICATE") == 2


def test_cacerts_bootstrap_with_fingerprint(server, run, tmp_path):
    out_file = tmp_path / "boot.pem"
    code, out, err = run("cacerts", "--fingerprint", root_fingerprint(server), "--out", str(out_file), trust=False)
    assert code == 0, err
    assert "bootstrap: fingerprint matches" in err
    assert out_file.read_bytes().count(b"BEGIN CERTIFICATE") == 2


def test_cacerts_bootstrap_with_wrong_fingerprint_exits_8_and_writes_nothing(server, run, tmp_path):
    out_file = tmp_path / "boot.pem"
    code, out, err = run("cacerts", "--fingerprint", "00" * 32, "--out", str(out_file), "--json", trust=False)
    assert code == 8
    assert not out_file.exists()
    assert json.loads(out) == {"ok": False, "error": "BootstrapError", "reason": json.loads(out)["reason"]}
    assert err.count("\n") == 2 and err.splitlines()[-1].startswith("kipuka-est: error: no certificate")


def test_cacerts_without_trust_or_fingerprint_exits_9_tls_trust_with_advice(run):
    code, out, err = run("cacerts", trust=False)
    assert code == 9
    assert "--fingerprint" in err and err.count("\n") == 1


def test_csrattrs_prints_key_types_curves_sizes_and_extensions_by_name(run):
    code, out, err = run("csrattrs", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["key_type"] == "ec-p256" and "1.2.840.10045.2.1" in doc["csrattrs"]["attributes"]
    assert set(doc["key_types"]) == {"EC P-256", "EC P-384", "RSA (at least 2048 bits)"}
    code, out, err = run("csrattrs")
    lines = out.splitlines()
    assert lines[0].startswith("key types: ") and "EC P-256" in lines[0] and "RSA (at least 2048 bits)" in lines[0]
    assert "signature algorithms: ecdsa-with-SHA256, sha256WithRSAEncryption" in lines
    assert "extensions to include: subjectAltName" in lines
    assert "1.2.840" not in out and "2.5.29" not in out  # no raw OIDs for what has a name


@pytest.mark.parametrize("label", [None, "iot-fleet", "corp-devices"])
def test_enroll_makes_the_key_and_writes_files_with_safe_modes(server, run, tmp_path, label, otp_pool):
    old = os.umask(0o022)
    try:
        entity, crt, key, out, err = _enroll(otp_pool, run, tmp_path, label, "--chain", str(tmp_path / "chain.pem"),
                                             "--json")
    finally:
        os.umask(old)
    doc = json.loads(out)
    assert doc["ok"] and doc["subject"] == f"CN={entity}.example.com"
    assert _mode(key) == 0o600 and _mode(crt) == 0o644
    private = serialization.load_pem_private_key(key.read_bytes(), None)
    assert _cert(crt).public_key() == private.public_key()
    assert (label or "default") in doc["issuer"]
    assert (tmp_path / "chain.pem").read_bytes().count(b"BEGIN CERTIFICATE") == 2
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    assert "enrolled CN=" in err


def test_enroll_replaces_an_existing_world_readable_key_file_with_a_0600_one(server, run, tmp_path, otp_pool):
    entity, otp = otp_pool
    key = tmp_path / "dev.key"
    key.write_text("old")
    os.chmod(key, 0o644)
    code, out, err = run("enroll", "-u", entity, "--otp", otp, "--cn", f"{entity}.example.com",
                         "--out-cert", str(tmp_path / "dev.crt"), "--out-key", str(key), "--key-type", "ec-p384")
    assert code == 0, err
    assert _mode(key) == 0o600 and b"PRIVATE KEY" in key.read_bytes()


def test_enroll_with_otp_file_and_auth_after_challenge(server, run, tmp_path, otp_pool):
    entity, otp = otp_pool
    (tmp_path / "otp").write_text(otp + "\n")
    code, out, err = run("enroll", "-u", entity, "--otp-file", str(tmp_path / "otp"), "--auth-after-challenge",
                         "--cn", f"{entity}.example.com", "--out-cert", str(tmp_path / "c.pem"),
                         "--out-key", str(tmp_path / "k.pem"))
    assert code == 0, err
    assert "401 challenge, sending credentials" in err


def test_enroll_with_wrong_otp_exits_4_with_the_servers_reason(server, run, tmp_path):
    entity = unique()  # not the pool's entity: failures count toward that entity's lockout
    code, out, err = run("enroll", "-u", entity, "--otp", "wrong", "--cn", f"{entity}.example.com",
                         "--out-cert", str(tmp_path / "c.pem"), "--out-key", str(tmp_path / "k.pem"), "--json")
    assert code == 4
    assert err.strip().splitlines()[-1] == "kipuka-est: error: 401: invalid entity id or OTP"
    assert json.loads(out) == {"ok": False, "error": "Unauthorized", "status": 401,
                               "reason": "invalid entity id or OTP"}
    assert not (tmp_path / "c.pem").exists() and not (tmp_path / "k.pem").exists()


def test_enroll_on_unknown_label_exits_4(server, run, tmp_path):
    code, out, err = run("enroll", "-u", "x", "--otp", "y", "--label", "nope", "--cn", "x.example.com",
                         "--key-type", "ec-p256", "--out-cert", str(tmp_path / "c"), "--out-key", str(tmp_path / "k"))
    assert code == 4 and "404: unknown EST label 'nope'" in err


def test_reenroll_with_rekey(server, run, tmp_path, otp_pool):
    entity, crt, key, _, _ = _enroll(otp_pool, run, tmp_path)
    code, out, err = run("reenroll", "--cert", str(crt), "--key", str(key), "--rekey",
                         "--out-cert", str(tmp_path / "new.crt"), "--out-key", str(tmp_path / "new.key"), "--json")
    assert code == 0, err
    new = _cert(tmp_path / "new.crt")
    assert new.subject == _cert(crt).subject and new.public_key() != _cert(crt).public_key()
    assert _mode(tmp_path / "new.key") == 0o600


def test_serverkeygen_writes_the_certificate_and_the_server_generated_key(keygen_server, capsys, monkeypatch,
                                                                          tmp_path):
    srv, entity, otp = keygen_server
    monkeypatch.setenv("KIPUKA_EST_SERVER", f"https://localhost:{srv.port}")
    for label, delivery in (("keygen", "csr-key"), ("keygen-pkcs8", "pkcs8")):
        crt, key = tmp_path / f"{label}.crt", tmp_path / f"{label}.key"
        code = main(["serverkeygen", "--trust", srv.ca_bundle, "--label", label, "-u", entity, "--otp", otp,
                     "--cn", f"{entity}.example.com", "--delivery", delivery, "--out-cert", str(crt),
                     "--out-key", str(key), "--json"])
        out, err = capsys.readouterr()
        assert code == 0, err
        doc = json.loads(out)
        assert doc["key_encrypted"] is (delivery == "csr-key")
        assert _mode(key) == 0o600
        private = serialization.load_pem_private_key(key.read_bytes(), None)
        spki = serialization.PublicFormat.SubjectPublicKeyInfo
        assert private.public_key().public_bytes(serialization.Encoding.DER, spki) == \
            _cert(crt).public_key().public_bytes(serialization.Encoding.DER, spki)


def test_serverkeygen_while_off_exits_4_with_the_404_reason(server, run, tmp_path, otp_pool):
    entity, otp = otp_pool
    code, out, err = run("serverkeygen", "-u", entity, "--otp", otp, "--cn", f"{entity}.example.com",
                         "--out-cert", str(tmp_path / "c"), "--out-key", str(tmp_path / "k"))
    assert code == 4
    assert "404: server-side key generation (serverkeygen) is not enabled" in err


def test_renew_not_due_exits_10_when_the_window_is_shorter_than_the_remaining_validity(server, run, tmp_path, otp_pool):
    _, crt, key, _, _ = _enroll(otp_pool, run, tmp_path)
    before = crt.read_bytes()
    code, out, err = run("renew", "--cert", str(crt), "--key", str(key), "--if-expiring-within", "30d", "--json")
    doc = json.loads(out)
    assert code == 10 and doc["renewed"] is False and doc["remaining_seconds"] > 360 * 86400
    assert crt.read_bytes() == before
    assert "not due" in err


def test_renew_when_due_replaces_the_certificate_in_place(server, run, tmp_path, otp_pool):
    _, crt, key, _, _ = _enroll(otp_pool, run, tmp_path)
    old = _cert(crt)
    key_before = key.read_bytes()
    code, out, err = run("renew", "--cert", str(crt), "--key", str(key), "--if-expiring-within", "400d", "--json")
    doc = json.loads(out)
    assert code == 0, err
    assert doc["renewed"] is True and doc["previous_serial"] == format(old.serial_number, "x")
    new = _cert(crt)
    assert new.serial_number != old.serial_number and new.subject == old.subject
    assert key.read_bytes() == key_before  # without --rekey the key stays
    assert _mode(crt) == 0o644


def test_renew_keeps_a_fullchain_file_a_fullchain(server, run, tmp_path, otp_pool):
    _, crt, key, _, _ = _enroll(otp_pool, run, tmp_path, None, "--chain", str(tmp_path / "chain.pem"))
    issuing = x509.load_pem_x509_certificates((tmp_path / "chain.pem").read_bytes())[0]
    crt.write_bytes(crt.read_bytes() + (tmp_path / "chain.pem").read_bytes())
    code, out, err = run("renew", "--cert", str(crt), "--key", str(key), "--force")
    assert code == 0, err
    renewed = x509.load_pem_x509_certificates(crt.read_bytes())
    assert [c.subject for c in renewed] == [renewed[0].subject, issuing.subject]  # leaf + issuing CA, no root


def test_renew_with_rekey_on_iot_fleet(server, run, tmp_path, otp_pool):
    _, crt, key, _, _ = _enroll(otp_pool, run, tmp_path, "iot-fleet")
    old_key = key.read_bytes()
    # iot-fleet issues 90-day certificates: a 100-day window is due, a 60-day one is not
    code, out, err = run("renew", "--label", "iot-fleet", "--cert", str(crt), "--key", str(key),
                         "--if-expiring-within", "60d")
    assert code == 10 and "not due" in err
    code, out, err = run("renew", "--label", "iot-fleet", "--cert", str(crt), "--key", str(key),
                         "--if-expiring-within", "100d", "--rekey")
    assert code == 0, err
    assert key.read_bytes() != old_key and _mode(key) == 0o600
    private = serialization.load_pem_private_key(key.read_bytes(), None)
    assert _cert(crt).public_key() == private.public_key()


def test_renew_with_a_key_that_is_not_the_certificates_fails_before_any_request(server, run, tmp_path, otp_pool):
    _, crt, _, _, _ = _enroll(otp_pool, run, tmp_path)
    _, _, other_key, _, _ = _enroll(otp_pool, run, tmp_path)
    code, out, err = run("renew", "--cert", str(crt), "--key", str(other_key), "--force")
    assert code == 1 and "is not the key of" in err


def test_usage_errors(run, tmp_path):
    with pytest.raises(SystemExit) as exc:
        run("renew", "--if-expiring-within")
    assert exc.value.code == 2
    code, out, err = run("renew", "--cert", str(tmp_path / "missing.crt"), "--key", str(tmp_path / "k"))
    assert code == 1 and "cannot read" in err


def test_the_module_runs_as_a_command(server):
    proc = subprocess.run([sys.executable, "-m", "kipuka.client", "cacerts", "--server",
                           f"https://localhost:{server.port}", "--trust", server.ca_bundle, "--json", "-q"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["ok"] is True and proc.stderr == ""


# --- UX: version, help, exit codes, pipes --------------------------------------------------------

def test_version(capsys):
    from kipuka import __version__
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"kipuka-est {__version__}"


@pytest.mark.parametrize("command, present, absent", [
    ("cacerts", ["--fingerprint", "--out"], ["--otp", "--cert", "--max-wait", "--cn", "--rekey", "KIPUKA_EST_OTP"]),
    ("csrattrs", ["--otp", "--cert"], ["--max-wait", "--cn", "--out-cert"]),
    ("enroll", ["--otp-file", "--cert", "--cn", "--max-wait", "--channel-binding", "--new-request"], ["--rekey"]),
    ("reenroll", ["--rekey", "--cert"], ["--otp", "--cn", "--delivery"]),
    ("renew", ["--if-expiring-within", "--rekey", "--cert"], ["--otp", "--cn", "--out-cert", "--delivery"]),
    ("serverkeygen", ["--delivery", "--otp"], ["--rekey", "--new-request"]),
    ("agent", ["--once", "--status", "KIPUKA_EST_AGENT_CONFIG"], ["--otp", "--cert", "--trust"]),
])
def test_each_command_help_shows_its_own_options_examples_environment_and_exit_codes(capsys, command, present,
                                                                                      absent):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = capsys.readouterr().out
    assert "examples:" in text and "exit codes:" in text and "environment:" in text
    assert "9   TLS failed" in text and "3   server unreachable" in text
    usage = text.split("\n\n", 1)[0]  # argparse's usage lists every option the command takes
    for option in present:
        assert option in (usage if option.startswith("--") else text), option
    for option in absent:
        assert option not in (usage if option.startswith("--") else text), option


def test_an_unreachable_server_exits_3_and_an_untrusted_one_9(server, run):
    from tests.helpers import free_port
    code, out, err = run("cacerts", "--server", f"https://localhost:{free_port()}")
    assert code == 3 and "cannot connect" in err
    code, out, err = run("cacerts", trust=False)
    assert code == 9 and "not trusted" in err


def test_a_closed_stdout_ends_quietly_without_a_traceback(server):
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first byte, as with `| head -0`
    proc = subprocess.run([sys.executable, "-m", "kipuka.client", "cacerts", "--server",
                           f"https://localhost:{server.port}", "--trust", server.ca_bundle],
                          stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60)
    os.close(write_end)
    assert proc.returncode == 141 and "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr


def test_serverkeygen_asked_for_pkcs8_on_a_csr_key_label_opens_the_key_with_the_csr_key(keygen_server, capsys,
                                                                                        monkeypatch, tmp_path):
    srv, entity, otp = keygen_server
    crt, key = tmp_path / "c.pem", tmp_path / "k.pem"
    code = main(["serverkeygen", "-s", f"https://localhost:{srv.port}", "--trust", srv.ca_bundle, "--label", "keygen",
                 "-u", entity, "--otp", otp, "--cn", f"{entity}.example.com", "--delivery", "pkcs8",
                 "--out-cert", str(crt), "--out-key", str(key), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads(out)["key_encrypted"] is True and "encrypted the key to the CSR's key anyway" in err
    from kipuka.client.install import pair_matches
    assert pair_matches(str(crt), str(key)) and _mode(key) == 0o600

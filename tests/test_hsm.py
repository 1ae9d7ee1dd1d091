"""PKCS#11 CAs on SoftHSM2: a key generated in the token, enrollment signed by it, session
exhaustion (503 + Retry-After), a token that goes away (500) and comes back (no restart)."""

from __future__ import annotations

import subprocess
import threading
import time
import tomllib
from pathlib import Path

import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.helpers import (KIPUKA, admin_call, admin_token, b64, certs_from, certs_in_body, enroll_identity, make_csr,
                           ordered_chain, public_url, run_cli, unique)
from tests.softhsm import PIN_ENV, softhsm  # noqa: F401  (fixture)

HSM_LABEL = "iot-fleet"
TOKEN = "kipuka"


def hsm_server(fresh_server, softhsm, **kwargs):  # noqa: F811
    softhsm.init_token(TOKEN)
    return fresh_server(init_args=("--hsm", "--hsm-token", TOKEN), **kwargs)


def chain_of(server, label: str) -> list[x509.Certificate]:
    r = server.get("cacerts", label=label)
    assert r.status_code == 200, r.text
    return ordered_chain(certs_in_body(r.content))


def openssl_verify(tmp: Path, leaf: x509.Certificate, chain: list[x509.Certificate]) -> None:
    roots = [c for c in chain if c.issuer == c.subject]
    intermediates = [c for c in chain if c.issuer != c.subject]
    pem = lambda certs: b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)  # noqa: E731
    (tmp / "root.pem").write_bytes(pem(roots))
    (tmp / "inter.pem").write_bytes(pem(intermediates))
    (tmp / "leaf.pem").write_bytes(pem([leaf]))
    out = subprocess.run(["openssl", "verify", "-CAfile", str(tmp / "root.pem"), "-untrusted", str(tmp / "inter.pem"),
                          str(tmp / "leaf.pem")], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip().endswith("OK"), out.stdout + out.stderr


def try_enroll(server, label: str | None = HSM_LABEL) -> requests.Response:
    entity = unique()
    otp = server.otp(entity, *(["--label", label] if label else []))
    _, der = make_csr(f"{entity}.example.com")
    return server.post("simpleenroll", b64(der), label=label, auth=(entity, otp))


def health(server, token: str) -> dict:
    r = admin_call(server, "GET", "/admin/health", token)
    assert r.status_code == 200, r.text
    return r.json()


def test_init_hsm_generates_key_in_token_and_enrolls(fresh_server, softhsm, tmp_path):  # noqa: F811
    server = hsm_server(fresh_server, softhsm)
    config = tomllib.loads(server.config.read_text())
    table = config["ca"][HSM_LABEL]
    # One label per back-end type: the default CA stays a software key.
    assert table["type"] == "pkcs11" and config["ca"]["default"]["type"] == "local"
    assert table["pin_env"] == PIN_ENV and "pin" not in table and "key" not in table
    assert not (server.dir / "private" / f"{HSM_LABEL}.key").exists()
    objects = softhsm.objects(TOKEN)
    assert f"kipuka-{HSM_LABEL}" in objects and "Private Key Object; EC" in objects
    assert "sensitive" in objects and "extractable" not in objects.replace("never extractable", "")

    _, _, cert = enroll_identity(server, tmp_path, label=HSM_LABEL)
    chain = chain_of(server, HSM_LABEL)
    assert cert.issuer == chain[0].subject and "(HSM)" in chain[0].subject.rfc4514_string()
    cert.verify_directly_issued_by(chain[0])
    openssl_verify(tmp_path, cert, chain)

    # Labels mix back ends: the software CA of the unlabeled path serves beside it.
    _, _, soft = enroll_identity(server, tmp_path)
    assert soft.issuer != cert.issuer

    token = admin_token(server)
    report = health(server, token)
    assert report["components"][f"ca:{HSM_LABEL}"] == {"status": "ok", "detail": ""}, report

    # A CRL signed through the token by the CLI (its own process opens the module).
    out = subprocess.run([*KIPUKA, "crl", "publish", HSM_LABEL, "-c", str(server.config)],
                         capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    crl = x509.load_der_x509_crl(out.stdout)
    assert crl.is_signature_valid(chain[0].public_key())


def test_pin_never_inline_and_must_be_set(fresh_server, softhsm, monkeypatch):  # noqa: F811
    server = hsm_server(fresh_server, softhsm)
    server.stop()
    ok = run_cli("config", "check", "-c", str(server.config), check=False)
    assert ok.returncode == 0, ok.stderr
    monkeypatch.delenv(PIN_ENV)
    missing = run_cli("config", "check", "-c", str(server.config), check=False)
    assert missing.returncode == 2 and f"ca.{HSM_LABEL}.pin_env" in missing.stderr and PIN_ENV in missing.stderr
    text = server.config.read_text()
    server.config.write_text(text.replace(f'pin_env = "{PIN_ENV}"', 'pin = "1234"'))
    inline = run_cli("config", "check", "-c", str(server.config), check=False)
    assert inline.returncode == 2 and "never put a PIN in the file" in inline.stderr
    pin_file = server.dir / "private" / "hsm.pin"
    pin_file.write_text(softhsm_pin() + "\n")
    server.config.write_text(text.replace(f'pin_env = "{PIN_ENV}"', 'pin_file = "private/hsm.pin"'))
    from_file = run_cli("config", "check", "-c", str(server.config), check=False)
    assert from_file.returncode == 0, from_file.stderr


def softhsm_pin() -> str:
    from tests.softhsm import PIN
    return PIN


def test_sessions_exhausted_gives_503_with_retry_after(fresh_server, softhsm):  # noqa: F811
    # One session, held 1.5 s by each signature (a slow HSM); waiting longer than 200 ms is refused.
    server = hsm_server(fresh_server, softhsm, replacements={
        r"^sessions = 4.*$": "sessions = 1",
        r'^session_timeout = "2s".*$': 'session_timeout = "200ms"\ndebug_sign_delay = "1500ms"',
        r"^retry_after = 2 .*$": "retry_after = 7",
    })
    prepared = []
    for _ in range(4):
        entity = unique()
        otp = server.otp(entity, "--label", HSM_LABEL)
        prepared.append((entity, otp, make_csr(f"{entity}.example.com")[1]))
    server.ca_bundle  # noqa: B018  (fetch the chain before the burst)
    # At start-up the CRL job signs each CA's first CRL, holding the one session for 1.5 s; a burst
    # landing then is refused whole. Wait until that CRL exists (it is not due again for minutes).
    deadline = time.monotonic() + 30
    while requests.get(public_url(server, f"/crl/{HSM_LABEL}.crl"), timeout=10).status_code != 200:
        assert time.monotonic() < deadline, "the HSM CA's first CRL never appeared"
        time.sleep(0.3)
    results: list[requests.Response] = []
    barrier = threading.Barrier(len(prepared))

    def go(entity: str, otp: str, der: bytes) -> None:
        barrier.wait()
        results.append(server.post("simpleenroll", b64(der), label=HSM_LABEL, auth=(entity, otp)))

    threads = [threading.Thread(target=go, args=p) for p in prepared]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    codes = sorted(r.status_code for r in results)
    assert codes.count(200) >= 1 and codes.count(503) >= 2 and set(codes) <= {200, 503}, codes
    for r in results:
        if r.status_code == 503:
            assert r.headers["Retry-After"] == "7"
            assert "HSM sessions busy" in r.text


def test_token_removed_gives_500_then_recovers_without_restart(fresh_server, softhsm, tmp_path):  # noqa: F811
    server = hsm_server(fresh_server, softhsm, replacements={r'^reconnect_interval = "1s".*$':
                                                             'reconnect_interval = "300ms"'})
    token = admin_token(server)
    assert try_enroll(server).status_code == 200
    pid = server.proc.pid

    softhsm.remove(TOKEN)
    r = try_enroll(server)
    assert r.status_code == 500 and "HSM unreachable" in r.text, (r.status_code, r.text)
    assert "Retry-After" not in r.headers
    report = health(server, token)
    component = report["components"][f"ca:{HSM_LABEL}"]
    assert component["status"] == "down" and "HSM unreachable" in component["detail"], report
    assert report["status"] == "degraded"
    assert try_enroll(server, label=None).status_code == 200  # the software CA is unaffected
    assert try_enroll(server).status_code == 500

    softhsm.restore(TOKEN)
    deadline = time.monotonic() + 20
    while True:
        r = try_enroll(server)
        if r.status_code == 200 or time.monotonic() > deadline:
            break
        assert r.status_code == 500, r.text
        time.sleep(0.3)
    assert r.status_code == 200, r.text
    leaf = certs_from(r)[0]
    leaf.verify_directly_issued_by(chain_of(server, HSM_LABEL)[0])
    assert server.proc.pid == pid and server.proc.poll() is None  # no restart
    assert health(server, token)["components"][f"ca:{HSM_LABEL}"]["status"] == "ok"


def test_each_forked_worker_opens_the_module_itself(fresh_server, softhsm, tmp_path):  # noqa: F811
    # Two workers: the supervisor never builds a CA; each worker initialises the module after the fork.
    server = hsm_server(fresh_server, softhsm, replacements={r"^workers = 1 .*$": "workers = 2"})
    for _ in range(6):
        r = try_enroll(server)
        assert r.status_code == 200, r.text
    log = server.log.read_text()
    assert "re-initialising" not in log  # no worker inherited an initialised module

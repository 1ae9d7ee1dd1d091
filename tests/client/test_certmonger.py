"""`kipuka-est certmonger-submit`: certmonger's external CA helper, driven by Debian's certmonger and
directly, with the environment certmonger sets (its doc/submit.txt).

certmonger runs here without any D-Bus bus: `certmonger -n -L -P SOCKET` listens on a private socket
only, `getcert` reaches it through CERTMONGER_PVT_ADDRESS, and CERTMONGER_REQUESTS_DIR /
CERTMONGER_CAS_DIR / CERTMONGER_TMPDIR keep its state in a directory of the test's own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from kipuka.client.csr import CsrSpec, generate_key
from kipuka.client.install import pair_matches
from tests.client.agent_util import pending_requests
from tests.client.conftest import root_fingerprint
from tests.helpers import admin_call, admin_token, free_port, make_test_ca, unique

HELPER = str(Path(sys.executable).parent / "kipuka-est")
needs_certmonger = pytest.mark.skipif(not (shutil.which("certmonger") and shutil.which("getcert")),
                                      reason="certmonger is not installed (Debian: apt-get install certmonger)")


@pytest.fixture(scope="module")
def server(agent_srv):
    return agent_srv


def helper_args(server, entity: str | None = None, otp_file: Path | None = None, cert: Path | None = None,
                key: Path | None = None, *extra: str) -> list[str]:
    args = ["certmonger-submit", "-s", f"https://localhost:{server.port}", "--fingerprint", root_fingerprint(server)]
    if entity:
        args += ["-u", entity, "--otp-file", str(otp_file)]
    if cert:
        args += ["--cert", str(cert), "--key", str(key)]
    return args + list(extra)


# --- certmonger itself ---------------------------------------------------------------------------

class Certmonger:
    """A certmonger daemon of the test's own, on a private socket, with its state in `home`."""

    def __init__(self, home: Path) -> None:
        self.home = home
        for d in ("requests", "cas", "tmp", "local"):
            (home / d).mkdir()
        self.env = {**os.environ, "CERTMONGER_REQUESTS_DIR": str(home / "requests"),
                    "CERTMONGER_CAS_DIR": str(home / "cas"), "CERTMONGER_TMPDIR": str(home / "tmp"),
                    "CERTMONGER_LOCAL_CA_DIR": str(home / "local"), "CERTMONGER_CONFIG_DIR": str(home),
                    "CERTMONGER_PVT_ADDRESS": f"unix:path={home / 'sock'}"}
        self.log = home / "certmonger.log"
        self.proc = subprocess.Popen(["certmonger", "-n", "-L", "-P", str(home / "sock"), "-d", "2"],
                                     env=self.env, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while not (home / "sock").exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"certmonger did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.1)

    def getcert(self, *args: str) -> str:
        done = subprocess.run(["getcert", *args], env=self.env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def wait_status(self, cert: Path, status: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        listing = ""
        while time.monotonic() < deadline:
            listing = self.getcert("list", "-f", str(cert))
            if f"status: {status}" in listing:
                return listing
            time.sleep(0.3)
        raise AssertionError(f"certmonger never reached {status}:\n{listing}\n{self.log.read_text()[-3000:]}")

    def ca_file(self, name: str) -> str:
        """What certmonger stored of a CA: what IDENTIFY and FETCH-ROOTS told it (it fetches at once, but
        in the background)."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for path in (self.home / "cas").iterdir():
                text = path.read_text()
                if f"id={name}\n" in text and "ca_root_certs=" in text:
                    return text
            time.sleep(0.2)
        raise AssertionError(f"certmonger has no roots for {name}: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def certmonger():
    if not (shutil.which("certmonger") and shutil.which("getcert")):
        pytest.skip("certmonger is not installed (Debian: apt-get install certmonger)")
    home = Path(tempfile.mkdtemp(prefix="cm-", dir="/tmp"))  # a short path: unix socket names are short
    cm = Certmonger(home)
    yield cm
    cm.stop()
    shutil.rmtree(home, ignore_errors=True)


def _serial(path: Path) -> int | None:
    """The serial in the file, or None while certmonger is writing it (it writes in place)."""
    try:
        return x509.load_pem_x509_certificate(path.read_bytes()).serial_number
    except (OSError, ValueError):
        return None


@needs_certmonger
def test_getcert_request_enrolls_with_the_otp_and_renews_and_rekeys_over_mtls(server, certmonger, tmp_path):
    entity = unique("cm")
    otp_file = tmp_path / "otp"
    otp_file.write_text(server.otp(entity))  # single use: renewals must go over mTLS
    crt, key = tmp_path / "web.crt", tmp_path / "web.key"
    helper = " ".join([HELPER, *helper_args(server, entity, otp_file, crt, key)])
    certmonger.getcert("add-ca", "-c", f"kipuka-{entity}", "-e", helper)
    assert "ca_root_certs=kipuka demo Root CA" in certmonger.ca_file(f"kipuka-{entity}")  # FETCH-ROOTS
    certmonger.getcert("request", "-c", f"kipuka-{entity}", "-f", str(crt), "-k", str(key), "-G", "EC", "-g", "256",
                       "-N", f"CN={entity}.example.com", "-D", f"{entity}.example.com")
    listing = certmonger.wait_status(crt, "MONITORING")
    assert f"subject: CN={entity}.example.com" in listing and "kipuka demo default Issuing CA" in listing
    first = _serial(crt)
    assert pair_matches(str(crt), str(key))
    certmonger.getcert("resubmit", "-f", str(crt))   # a renewal, same key
    _wait_serial_change(certmonger, crt, first)
    second = _serial(crt)
    old_key = key.read_bytes()
    certmonger.getcert("rekey", "-f", str(crt))      # a renewal with a new key
    _wait_serial_change(certmonger, crt, second)
    assert key.read_bytes() != old_key and pair_matches(str(crt), str(key))
    issued = [line for line in server.cli("certs", "list").stdout.splitlines() if f"CN={entity}.example.com" in line]
    assert len(issued) == 3  # enrolled once with the OTP, then twice over mTLS


def _wait_serial_change(certmonger: Certmonger, crt: Path, old: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _serial(crt) not in (old, None) and "status: MONITORING" in certmonger.getcert("list", "-f", str(crt)):
            return
        time.sleep(0.3)
    raise AssertionError(f"no new certificate in {crt}:\n{certmonger.log.read_text()[-3000:]}")


@needs_certmonger
def test_getcert_request_on_a_held_label_waits_until_an_officer_approves(server, certmonger, tmp_path):
    token = admin_token(server)
    entity = unique("cmheld")
    otp_file = tmp_path / "otp"
    otp_file.write_text(server.otp(entity, "--label", "held"))
    crt, key = tmp_path / "held.crt", tmp_path / "held.key"
    certmonger.getcert("add-ca", "-c", f"kipuka-{entity}", "-e",
                       " ".join([HELPER, *helper_args(server, entity, otp_file, crt, key)]))
    certmonger.getcert("request", "-c", f"kipuka-{entity}", "-T", "held", "-f", str(crt), "-k", str(key),
                       "-G", "EC", "-g", "256", "-N", f"CN={entity}.example.com")
    deadline = time.monotonic() + 60
    while not pending_requests(server, token, entity):
        assert time.monotonic() < deadline, certmonger.log.read_text()[-3000:]
        time.sleep(0.3)
    assert not crt.exists()
    [held] = pending_requests(server, token, entity)
    assert admin_call(server, "POST", f"/admin/requests/{held['id']}/approve", token).status_code == 200
    listing = certmonger.wait_status(crt, "MONITORING")
    assert f"subject: CN={entity}.example.com" in listing and pair_matches(str(crt), str(key))
    assert len(pending_requests(server, token, entity)) == 0  # one request, held, then issued


# --- the helper alone, with the environment certmonger would set -------------------------------

def run_helper(operation: str, args: list[str], **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CERTMONGER_", "KIPUKA_EST_"))}
    return subprocess.run([HELPER, *args], env={**clean, "CERTMONGER_OPERATION": operation, **env},
                          capture_output=True, text=True, timeout=60)


def csr_pem(name: str, key=None) -> str:
    spec = CsrSpec.for_names(key or generate_key(), name, [f"dns:{name}"])
    return spec.build().public_bytes(serialization.Encoding.PEM).decode()


def test_helper_identify_fetch_roots_and_requirements(server):
    args = helper_args(server)
    ident = run_helper("IDENTIFY", args)
    assert ident.returncode == 0 and ident.stdout.startswith("kipuka-est ")
    roots = run_helper("FETCH-ROOTS", args)
    assert roots.returncode == 0
    nickname, pem = roots.stdout.split("\n", 1)
    assert nickname == "kipuka demo Root CA"
    assert x509.load_pem_x509_certificate(pem.encode()).subject.rfc4514_string().startswith("CN=kipuka demo Root CA")
    new = run_helper("GET-NEW-REQUEST-REQUIREMENTS", args)
    assert new.returncode == 0 and new.stdout.split() == ["CERTMONGER_REQ_SUBJECT"]
    assert run_helper("GET-RENEW-REQUEST-REQUIREMENTS", args).stdout == ""
    assert run_helper("FETCH-SCEP-CA-CAPS", args).returncode == 6
    assert run_helper("SOMETHING-NEW", args).returncode == 6


def test_helper_submit_issues_with_the_otp_then_renews_over_mtls_with_the_files(server, tmp_path):
    entity = unique("cmh")
    otp_file = tmp_path / "otp"
    otp_file.write_text(server.otp(entity))
    key = generate_key()
    crt, key_file = tmp_path / "c.pem", tmp_path / "k.pem"
    args = helper_args(server, entity, otp_file, crt, key_file)
    done = run_helper("SUBMIT", args, CERTMONGER_CSR=csr_pem(f"{entity}.example.com", key))
    assert done.returncode == 0, done.stdout + done.stderr
    issued = x509.load_pem_x509_certificate(done.stdout.encode())
    assert issued.public_key() == key.public_key()
    # certmonger saves it; the next SUBMIT (a renewal) authenticates with it: the spent OTP is not sent
    crt.write_text(done.stdout)
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    new_key = generate_key()
    renewed = run_helper("SUBMIT", args, CERTMONGER_CSR=csr_pem(f"{entity}.example.com", new_key),
                         CERTMONGER_CERTIFICATE=done.stdout)
    assert renewed.returncode == 0, renewed.stdout
    cert = x509.load_pem_x509_certificate(renewed.stdout.encode())
    assert cert.public_key() == new_key.public_key() and cert.serial_number != issued.serial_number
    # without the files, the OTP is tried again, and the server says it is spent: rejected (2)
    again = run_helper("SUBMIT", helper_args(server, entity, otp_file),
                       CERTMONGER_CSR=csr_pem(f"{entity}.example.com"))
    assert again.returncode == 2 and again.stdout.strip()


def test_helper_submit_then_poll_a_held_request_with_certmongers_cookie(server, tmp_path):
    token = admin_token(server)
    entity = unique("cmpoll")
    otp_file = tmp_path / "otp"
    otp_file.write_text(server.otp(entity, "--label", "held"))
    csr = csr_pem(f"{entity}.example.com")
    args = helper_args(server, entity, otp_file)
    first = run_helper("SUBMIT", args, CERTMONGER_CSR=csr, CERTMONGER_CA_PROFILE="held")
    assert first.returncode == 5 and first.stdout.split("\n")[:2] == ["2", "simpleenroll"]
    polled = run_helper("POLL", args, CERTMONGER_CSR=csr, CERTMONGER_CA_PROFILE="held", CERTMONGER_CA_COOKIE="simpleenroll")
    assert polled.returncode == 5
    [held] = pending_requests(server, token, entity)
    admin_call(server, "POST", f"/admin/requests/{held['id']}/approve", token)
    done = run_helper("POLL", args, CERTMONGER_CSR=csr, CERTMONGER_CA_PROFILE="held", CERTMONGER_CA_COOKIE="simpleenroll")
    assert done.returncode == 0 and "BEGIN CERTIFICATE" in done.stdout


def test_helper_exit_codes_for_what_certmonger_must_do_next(server, tmp_path):
    entity = unique("cmerr")
    csr = csr_pem(f"{entity}.example.com")
    (tmp_path / "otp").write_text("not-the-otp")
    rejected = run_helper("SUBMIT", helper_args(server, entity, tmp_path / "otp"), CERTMONGER_CSR=csr)
    assert rejected.returncode == 2 and "invalid entity id or OTP" in rejected.stdout
    gone = run_helper("SUBMIT", ["certmonger-submit", "-s", f"https://localhost:{free_port()}", "--fingerprint",
                                 root_fingerprint(server), "-u", entity, "--otp-file", str(tmp_path / "otp")],
                      CERTMONGER_CSR=csr)
    assert gone.returncode == 3 and "cannot connect" in gone.stdout
    other_ca, _ = make_test_ca(tmp_path, "Not The CA")
    untrusted = run_helper("SUBMIT", ["certmonger-submit", "-s", f"https://localhost:{server.port}", "--trust",
                                      str(other_ca), "-u", entity, "--otp-file", str(tmp_path / "otp")],
                           CERTMONGER_CSR=csr)
    assert untrusted.returncode == 4 and "not trusted" in untrusted.stdout
    no_csr = run_helper("SUBMIT", helper_args(server, entity, tmp_path / "otp"))
    assert no_csr.returncode == 4 and "CERTMONGER_CSR" in no_csr.stdout
    unknown_label = run_helper("SUBMIT", helper_args(server, entity, tmp_path / "otp"), CERTMONGER_CSR=csr,
                               CERTMONGER_CA_PROFILE="no-such-label")
    assert unknown_label.returncode == 4 and "unknown EST label" in unknown_label.stdout

"""`kipuka init` with one label per back-end type: local, pkcs11, dogtag and est in one file.

One deployment is made by `kipuka init` with --dogtag-url (the Dogtag-compatible test
server, tests/dogtag_server.py), --upstream-url (a second, real kipuka as the upstream
CA, trusting the RA's id-kp-cmcRA certificate) and, when SoftHSM2 is installed, --hsm.
`kipuka serve` runs on the generated file unchanged, and a device enrolls with an OTP on
each label; each certificate must come from the CA its label's back end names. Also:
the default file shows the Dogtag and EST tables as commented examples and still loads,
and bad options are refused before anything is written, naming the option.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import stat
import tomllib
from pathlib import Path
from types import SimpleNamespace

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from kipuka.ca.dogtag import OPTION_KEYS as DOGTAG_KEYS
from kipuka.ca.upstream_est_settings import OPTION_KEYS as EST_KEYS
from kipuka.cli.main import main as kipuka_main
from kipuka.config import load_config
from tests.dogtag_server import DogtagTestServer
from tests.helpers import (Server, b64, certs_from, certs_in_body, free_port, make_csr, make_server, make_test_ca,
                           new_key, run_cli, sign_certificate, unique, write_identity)
from tests.softhsm import MODULE_CANDIDATES, PIN, PIN_ENV, SoftHSM

CMC_RA = x509.ObjectIdentifier("1.3.6.1.5.5.7.3.28")
HSM_TOKEN = "kipuka-mixed"


def softhsm_available() -> bool:
    return (shutil.which("softhsm2-util") is not None and any(os.path.exists(m) for m in MODULE_CANDIDATES)
            and importlib.util.find_spec("pkcs11") is not None)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """The upstream kipuka, the Dogtag test server, and the RA deployment `kipuka init` made for both."""
    root = tmp_path_factory.mktemp("init-backends")
    dogtag = DogtagTestServer(root / "dogtag").start()
    # The RA's identity at the upstream: id-kp-cmcRA, from a CA of its operator's own.
    ra_ca_crt, ra_ca_key = make_test_ca(root, "RA operator CA")
    ra_key = new_key()
    ra_cert = sign_certificate(ra_ca_crt, ra_ca_key, ra_key.public_key(), "kipuka RA",
                               ekus=[CMC_RA, ExtendedKeyUsageOID.CLIENT_AUTH])
    ra_identity = write_identity(root, "ra", ra_key, ra_cert)
    up = make_server(root, replacements={r"^csrattrs = true.*$": f'csrattrs = true\nra_anchors = ["{ra_ca_crt}"]'})
    with open(up.dir / "tls" / "client-ca.pem", "ab") as fh:
        fh.write(ra_ca_crt.read_bytes())
    up.start()
    with pytest.MonkeyPatch.context() as mp:
        hsm_args: list[str] = []
        if softhsm_available():
            hsm = SoftHSM(root / "softhsm")
            mp.setenv("SOFTHSM2_CONF", str(hsm.conf))
            mp.setenv(PIN_ENV, PIN)
            hsm.init_token(HSM_TOKEN)
            hsm_args = ["--hsm", "--hsm-token", HSM_TOKEN]
        d = root / "mixed"
        port, admin_port, public_port = free_port(), free_port(), free_port()
        dt = dogtag.state.directory
        init = run_cli("init", str(d), "--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin_port}",
                       "--revocation-listen", f"127.0.0.1:{public_port}",
                       "--dogtag-url", dogtag.urls[0], "--dogtag-agent-cert", str(dt / "agent.pem"),
                       "--dogtag-agent-key", str(dt / "agent.key"), "--dogtag-ca-bundle", str(dt / "root.pem"),
                       "--dogtag-chain", str(dt / "chain.pem"),
                       "--upstream-url", f"https://localhost:{up.port}", "--upstream-label", "corp-devices",
                       "--upstream-ca-bundle", str(up.dir / "ca" / "root.pem"),
                       "--upstream-ra-cert", ra_identity[0], "--upstream-ra-key", ra_identity[1], *hsm_args)
        generated = (d / "kipuka.toml").read_text()
        ra = Server(d, port)
        ra.admin_port, ra.public_port = admin_port, public_port
        ra.start()  # on the generated file as it is
        try:
            yield SimpleNamespace(ra=ra, up=up, dogtag=dogtag, hsm=bool(hsm_args), init=init, generated=generated,
                                  root=root)
        finally:
            ra.stop()
            up.stop()
            dogtag.stop()


def _pem(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificates(path.read_bytes())[0]


def _label_type(config: dict, label: str | None) -> str:
    ca = config["labels"][label]["ca"] if label else config["est"]["default_ca"]
    return config["ca"][ca]["type"]


# label -> (back-end type, the issuing CA a certificate on it must come from)
LABELS = {
    None: ("local", lambda m: _pem(m.ra.dir / "ca" / "default.pem")),
    "corp-devices": ("local", lambda m: _pem(m.ra.dir / "ca" / "corp-devices.pem")),
    "iot-fleet": ("pkcs11", lambda m: _pem(m.ra.dir / "ca" / "iot-fleet.pem")),
    "corp-dogtag": ("dogtag", lambda m: m.dogtag.state.ca_cert),
    "corp-upstream": ("est", lambda m: _pem(m.up.dir / "ca" / "corp-devices.pem")),
}


def test_one_generated_config_has_one_label_per_backend_type(mixed):
    config = tomllib.loads(mixed.generated)
    types = {label: _label_type(config, label) for label in LABELS}
    expected = {label: kind for label, (kind, _) in LABELS.items()}
    if not mixed.hsm:
        expected["iot-fleet"] = "local"
    assert types == expected
    assert config["ca"]["dogtag"]["url"] == mixed.dogtag.urls[0]
    assert config["ca"]["dogtag"]["chain"] == "dogtag/chain.pem"
    assert config["ca"]["upstream"] == {
        "type": "est", "url": f"https://localhost:{mixed.up.port}", "label": "corp-devices",
        "ca_bundle": "upstream/ca-bundle.pem", "ra_cert": "upstream/ra.pem", "ra_key": "private/upstream-ra.key"}
    # Both types were configured: neither is left as a commented example.
    assert "EXAMPLE" not in mixed.generated and "# [ca." not in mixed.generated
    # The files given were copied in; keys stay owner-only in private/, nothing secret is served.
    d = mixed.ra.dir
    for key in ("dogtag-agent.key", "upstream-ra.key"):
        assert stat.S_IMODE((d / "private" / key).stat().st_mode) == 0o600
    assert (d / "dogtag" / "agent.pem").read_bytes() == (mixed.dogtag.state.directory / "agent.pem").read_bytes()
    assert not any(b"PRIVATE KEY" in p.read_bytes() for sub in ("dogtag", "upstream") for p in (d / sub).iterdir())
    # Dogtag's chain, given with --dogtag-chain, is what corp-dogtag serves, and trusted for re-enrollment.
    served = certs_in_body(mixed.ra.get("cacerts", label="corp-dogtag").content)
    assert sorted(served, key=str) == sorted([mixed.dogtag.state.ca_cert, mixed.dogtag.state.root], key=str)
    assert mixed.dogtag.state.ca_cert in x509.load_pem_x509_certificates((d / "tls" / "client-ca.pem").read_bytes())


@pytest.mark.parametrize("label", list(LABELS), ids=[label or "unlabeled" for label in LABELS])
def test_enroll_once_on_each_label(mixed, label):
    kind, expected_ca = LABELS[label]
    if kind == "pkcs11" and not mixed.hsm:
        pytest.skip("SoftHSM2 (softhsm2-util, python-pkcs11) is not installed: iot-fleet stays a local key")
    ra = mixed.ra
    entity = unique()
    otp = ra.otp(entity, *(["--label", label] if label else []))
    key, der = make_csr(f"{entity}.example.com")
    cert = certs_from(ra.post("simpleenroll", b64(der), label=label, auth=(entity, otp)))[0]
    issuer = expected_ca(mixed)
    assert cert.public_key() == key.public_key()
    assert cert.issuer == issuer.subject
    cert.verify_directly_issued_by(issuer)
    if kind == "pkcs11":
        assert "(HSM)" in issuer.subject.rfc4514_string()
    if kind == "dogtag":  # Dogtag's repository holds it
        assert mixed.dogtag.state.certs[cert.serial_number].status == "VALID"
    if kind == "est":
        # Upstream and RA are both `kipuka init` demos, with the same CA names: only the signature tells.
        with pytest.raises(InvalidSignature):
            cert.verify_directly_issued_by(_pem(ra.dir / "ca" / "corp-devices.pem"))
        assert f"{cert.serial_number:x}" in mixed.up.cli("certs", "list").stdout.lower()
    # No other label's CA signed it.
    for other, (_, other_ca) in LABELS.items():
        if other != label and other_ca(mixed).public_key() != issuer.public_key():
            with pytest.raises((InvalidSignature, ValueError, TypeError)):
                cert.verify_directly_issued_by(other_ca(mixed))


# --- the default file, and option checks -----------------------------------------------------

def _example(text: str, table: str) -> dict:
    """The commented-out example starting at `# [table]`, uncommented, as TOML."""
    lines = text.splitlines()
    start = lines.index(f"# [{table}]")
    block = []
    for line in lines[start:]:
        if not line.startswith("#"):
            break
        block.append(line[2:] if line.startswith("# ") else "")
    return tomllib.loads("\n".join(block))


def test_default_init_shows_commented_examples_and_still_loads(tmp_path):
    run_cli("init", str(tmp_path / "d"))
    path = tmp_path / "d" / "kipuka.toml"
    text = path.read_text()
    config = load_config(path)
    assert set(config.cas) == {"default", "iot-fleet", "corp-devices"}
    assert {c.type for c in config.cas.values()} == {"local"}
    assert set(config.labels) >= {"iot-fleet", "corp-devices"} and "corp-dogtag" not in config.labels
    for option in ("--dogtag-url", "--dogtag-agent-cert", "--dogtag-agent-key", "--upstream-url",
                   "--upstream-ra-cert", "--upstream-ra-key", "--upstream-password-env", "docs/dogtag.md",
                   "docs/upstream-est.md", "kipuka init --hsm"):
        assert option in text
    assert text.count("EXAMPLE, commented out and not in use") == 2
    # Uncommented, each example is a table of its back end's own keys, with a label using it.
    dogtag, est = _example(text, "ca.dogtag"), _example(text, "ca.upstream")
    assert dogtag["ca"]["dogtag"]["type"] == "dogtag" and set(dogtag["ca"]["dogtag"]) - {"type"} <= DOGTAG_KEYS
    assert dogtag["labels"]["corp-dogtag"]["ca"] == "dogtag"
    assert est["ca"]["upstream"]["type"] == "est" and set(est["ca"]["upstream"]) - {"type"} <= EST_KEYS
    assert est["labels"]["corp-upstream"]["ca"] == "upstream"
    assert run_cli("config", "check", "-c", str(path)).returncode == 0


def test_upstream_with_basic_credentials_and_a_pinned_chain(mixed, tmp_path):
    """Only --upstream-*: the Dogtag example stays; the password file and chain are copied; config check passes."""
    up = mixed.up
    password = tmp_path / "upstream.pw"
    password.write_text("s3cret-for-the-upstream\n")
    chain = tmp_path / "chain.pem"
    chain.write_bytes((up.dir / "ca" / "default.pem").read_bytes() + (up.dir / "ca" / "root.pem").read_bytes())
    d = tmp_path / "d"
    run_cli("init", str(d), "--upstream-url", f"https://localhost:{up.port}/.well-known/est/",
            "--upstream-ca-bundle", str(up.dir / "ca" / "root.pem"), "--upstream-username", "ra-basic",
            "--upstream-password-file", str(password), "--upstream-chain", str(chain))
    text = (d / "kipuka.toml").read_text()
    table = tomllib.loads(text)["ca"]["upstream"]
    assert table["url"] == f"https://localhost:{up.port}/.well-known/est"
    assert table["username"] == "ra-basic" and table["password_file"] == "private/upstream.pw"
    assert "password" not in table and "ra_cert" not in table and "s3cret" not in text
    assert stat.S_IMODE((d / "private" / "upstream.pw").stat().st_mode) == 0o600
    assert table["chain"] == "upstream/chain.pem" and (d / "upstream" / "chain.pem").read_bytes() == chain.read_bytes()
    # Devices re-enrolling with the upstream's certificates are trusted for mTLS.
    anchors = x509.load_pem_x509_certificates((d / "tls" / "client-ca.pem").read_bytes())
    assert _pem(up.dir / "ca" / "default.pem") in anchors
    assert "# [ca.dogtag]" in text and "# [ca.upstream]" not in text
    check = run_cli("config", "check", "-c", str(d / "kipuka.toml"), check=False)
    assert check.returncode == 0, check.stderr


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("init-options")
    crt, key = make_test_ca(d, "agent")
    other_crt, other_key = make_test_ca(d, "other")
    encrypted = d / "encrypted.key"
    encrypted.write_bytes(serialization.load_pem_private_key(key.read_bytes(), None).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"password")))
    return SimpleNamespace(crt=str(crt), key=str(key), other_key=str(other_key), encrypted=str(encrypted),
                           missing=str(d / "missing.pem"))


DOGTAG = ["--dogtag-url", "https://dogtag.example.com:8443"]


BAD_OPTIONS = [
    (lambda f: ["--dogtag-url", "http://dogtag.example.com:8443", "--dogtag-agent-cert", f.crt,
                "--dogtag-agent-key", f.key], "--dogtag-url", "https://"),
    (lambda f: ["--dogtag-url", "https://dogtag.example.com:8443/ca", "--dogtag-agent-cert", f.crt,
                "--dogtag-agent-key", f.key], "--dogtag-url", "no path"),
    (lambda f: ["--dogtag-url", "https://dogtag.example.com:99999", "--dogtag-agent-cert", f.crt,
                "--dogtag-agent-key", f.key], "--dogtag-url", "65535"),
    (lambda f: DOGTAG + ["--dogtag-agent-key", f.key], "--dogtag-agent-cert", "agent"),
    (lambda f: DOGTAG + ["--dogtag-agent-cert", f.missing, "--dogtag-agent-key", f.key], "--dogtag-agent-cert",
     "no such file"),
    (lambda f: DOGTAG + ["--dogtag-agent-cert", f.key, "--dogtag-agent-key", f.key], "--dogtag-agent-cert",
     "no PEM certificate"),
    (lambda f: DOGTAG + ["--dogtag-agent-cert", f.crt, "--dogtag-agent-key", f.other_key], "--dogtag-agent-key",
     "is not the key of"),
    (lambda f: DOGTAG + ["--dogtag-agent-cert", f.crt, "--dogtag-agent-key", f.encrypted], "--dogtag-agent-key",
     "encrypted"),
    (lambda f: DOGTAG + ["--dogtag-agent-cert", f.crt, "--dogtag-agent-key", f.key, "--dogtag-ca-bundle", f.key],
     "--dogtag-ca-bundle", "no PEM certificate"),
    (lambda f: ["--dogtag-profile", "caServerCert"], "--dogtag-profile", "needs --dogtag-url"),
    (lambda f: ["--upstream-url", "https://est.example.com:9443"], "--upstream-url", "credentials"),
    (lambda f: ["--upstream-url", "https://ra:pw@est.example.com:9443", "--upstream-ra-cert", f.crt,
                "--upstream-ra-key", f.key], "--upstream-url", "without credentials"),
    (lambda f: ["--upstream-url", "https://est.example.com:9443/.well-known/est/corp", "--upstream-ra-cert", f.crt,
                "--upstream-ra-key", f.key], "--upstream-url", "no path"),
    (lambda f: ["--upstream-url", "https://est.example.com:9443", "--upstream-username", "ra"],
     "--upstream-username", "exactly one of"),
    (lambda f: ["--upstream-url", "https://est.example.com:9443", "--upstream-ra-cert", f.crt],
     "--upstream-ra-key", "go together"),
    (lambda f: ["--upstream-url", "https://est.example.com:9443", "--upstream-ra-cert", f.crt,
                "--upstream-ra-key", f.key, "--upstream-label", "corp/devices"], "--upstream-label", "EST label"),
    (lambda f: ["--upstream-url", "https://est.example.com:9443", "--upstream-username", "ra",
                "--upstream-password-env", "NOT A NAME"], "--upstream-password-env", "environment variable"),
    (lambda f: ["--upstream-ca-bundle", f.crt], "--upstream-ca-bundle", "needs --upstream-url"),
]


@pytest.mark.parametrize("args,option,reason", BAD_OPTIONS, ids=[f"{o} {r}" for _, o, r in BAD_OPTIONS])
def test_bad_backend_options_are_refused_before_anything_is_written(tmp_path, files, capsys, args, option, reason):
    target = tmp_path / "d"
    assert kipuka_main(["init", str(target), *args(files)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("kipuka: ") and option in err and reason in err, err
    assert not target.exists()


def test_ra_certificate_without_cmc_ra_is_accepted_with_a_warning(tmp_path, files, capsys):
    target = tmp_path / "d"
    assert kipuka_main(["init", str(target), "--upstream-url", "https://est.example.com:9443",
                        "--upstream-ra-cert", files.crt, "--upstream-ra-key", files.key]) == 0
    err = capsys.readouterr().err
    assert re.search(r"warning: --upstream-ra-cert .* carries no id-kp-cmcRA", err), err
    assert tomllib.loads((target / "kipuka.toml").read_text())["ca"]["upstream"]["ra_cert"] == "upstream/ra.pem"

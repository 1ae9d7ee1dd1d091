"""`kipuka init` output and `kipuka config check`."""

import stat
import tomllib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.helpers import edit_config, run_cli


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    d = tmp_path_factory.mktemp("init") / "demo"
    run_cli("init", str(d))
    return d


def test_init_makes_a_root_and_one_issuing_ca_per_label(deployment):
    root = x509.load_pem_x509_certificate((deployment / "ca" / "root.pem").read_bytes())
    for ca_id in ("default", "iot-fleet", "corp-devices"):
        ca = x509.load_pem_x509_certificate((deployment / "ca" / f"{ca_id}.pem").read_bytes())
        ca.verify_directly_issued_by(root)
        assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey) and ca.public_key().curve.name == "secp256r1"


def test_init_tls_certificate_covers_localhost_and_chains_to_default_root(deployment):
    chain = x509.load_pem_x509_certificates((deployment / "tls" / "server.pem").read_bytes())
    san = chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert "127.0.0.1" in {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    default = x509.load_pem_x509_certificate((deployment / "ca" / "default.pem").read_bytes())
    chain[0].verify_directly_issued_by(default)


def test_init_client_ca_bundle_has_issuing_cas_and_root(deployment):
    bundle = x509.load_pem_x509_certificates((deployment / "tls" / "client-ca.pem").read_bytes())
    names = {c.subject.rfc4514_string() for c in bundle}
    assert len(bundle) == 4 and any("Root CA" in n for n in names)


def test_init_keeps_private_keys_apart_and_owner_only(deployment):
    private = deployment / "private"
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
    keys = list(private.iterdir())
    assert {p.name for p in keys} >= {"root.key", "default.key", "iot-fleet.key", "corp-devices.key",
                                      "tls-server.key", "otp-hmac.keys"}
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in keys)
    served = list((deployment / "ca").iterdir()) + list((deployment / "tls").iterdir())
    assert not any(b"PRIVATE KEY" in p.read_bytes() for p in served)


def test_init_config_has_default_ca_and_two_labels(deployment):
    data = tomllib.loads((deployment / "kipuka.toml").read_text())
    assert set(data["labels"]) == {"iot-fleet", "corp-devices"}
    assert data["labels"]["iot-fleet"]["ca"] == "iot-fleet"
    assert "#" in (deployment / "kipuka.toml").read_text()  # commented


@pytest.mark.parametrize("key_type,check", [
    ("rsa2048", lambda k: isinstance(k, rsa.RSAPublicKey) and k.key_size == 2048),
    ("ec-p384", lambda k: isinstance(k, ec.EllipticCurvePublicKey) and k.curve.name == "secp384r1"),
])
def test_init_key_types(tmp_path, key_type, check):
    run_cli("init", str(tmp_path / "d"), "--key-type", key_type)
    assert check(x509.load_pem_x509_certificate((tmp_path / "d" / "ca" / "default.pem").read_bytes()).public_key())
    assert run_cli("config", "check", "-c", str(tmp_path / "d" / "kipuka.toml")).returncode == 0


def test_init_refuses_to_overwrite(deployment):
    out = run_cli("init", str(deployment), check=False)
    assert out.returncode != 0 and "already exists" in out.stderr


def test_config_check_accepts_the_demo(deployment):
    out = run_cli("config", "check", "-c", str(deployment / "kipuka.toml"))
    assert "OK" in out.stderr


def _broken(tmp_path, **edits):
    d = tmp_path / "d"
    run_cli("init", str(d))
    edit_config(d / "kipuka.toml", **edits)
    return run_cli("config", "check", "-c", str(d / "kipuka.toml"), check=False), (d / "kipuka.toml").read_text()


def _line_of(text: str, fragment: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if fragment in line)


def test_config_check_names_the_bad_key_and_its_line(tmp_path):
    out, text = _broken(tmp_path, replacements={r"^validity_days = 90$": "validity_days = \"ninety\""})
    assert out.returncode == 2
    assert "labels.iot-fleet.validity_days" in out.stderr
    line = _line_of(text, '"ninety"')
    assert f"line {line}" in out.stderr


def test_config_check_names_an_unknown_key(tmp_path):
    out, text = _broken(tmp_path, replacements={r"^max_body = 65536": "max_bodyy = 65536"})
    assert "server.max_bodyy" in out.stderr and "unknown key" in out.stderr
    assert f"line {_line_of(text, 'max_bodyy')}" in out.stderr


def test_label_named_like_an_operation_is_a_configuration_error(tmp_path):
    out, _ = _broken(tmp_path, append='\n[labels.simpleenroll]\nca = "default"\n')
    assert out.returncode == 2 and "labels.simpleenroll" in out.stderr and "operation" in out.stderr


def test_label_with_unknown_ca_is_a_configuration_error(tmp_path):
    out, _ = _broken(tmp_path, replacements={r'^ca = "iot-fleet"$': 'ca = "nope"'})
    assert "labels.iot-fleet.ca" in out.stderr


def test_unknown_key_type_is_a_configuration_error(tmp_path):
    out, _ = _broken(tmp_path, replacements={r'^key_types = \["ec-p256", "ec-p384"\]$': 'key_types = ["dsa"]'})
    assert "labels.iot-fleet.key_types" in out.stderr and "dsa" in out.stderr


def test_a_validity_shorter_than_a_minute_is_a_configuration_error(tmp_path):
    out, _ = _broken(tmp_path, replacements={r"^validity_days = 90$": 'validity = "30s"'})
    assert out.returncode == 2 and "labels.iot-fleet.validity" in out.stderr and "1m" in out.stderr


def test_invalid_toml_reports_the_line(tmp_path):
    out, _ = _broken(tmp_path, append="\nthis is not toml\n")
    assert out.returncode == 2 and "line" in out.stderr


def test_serve_refuses_a_bad_configuration(tmp_path):
    d = tmp_path / "d"
    run_cli("init", str(d))
    edit_config(d / "kipuka.toml", append='\n[labels.cacerts]\n')
    out = run_cli("serve", "-c", str(d / "kipuka.toml"), "--listen", "127.0.0.1:1", check=False)
    assert out.returncode == 2 and "labels.cacerts" in out.stderr


def test_db_status_reports_the_schema_version(deployment):
    run_cli("db", "migrate", "-c", str(deployment / "kipuka.toml"))
    out = run_cli("db", "status", "-c", str(deployment / "kipuka.toml"))
    from kipuka.store.migrations import LATEST
    assert out.stdout.startswith(f"schema version {LATEST} (latest {LATEST})")


# --- issue #16: admin access by any device certificate, and the new policy keys ------------------

ADMIN_CA_ON = {r'^# client_ca = "tls/admin-ca.pem".*$': 'client_ca = "tls/client-ca.pem"'}


def test_admin_client_ca_with_empty_subjects_is_a_configuration_error(tmp_path):
    out, text = _broken(tmp_path, replacements=ADMIN_CA_ON)
    assert out.returncode == 2 and "admin.subjects" in out.stderr and "every" in out.stderr
    assert f"line {_line_of(text, 'subjects = []')}" in out.stderr
    served = run_cli("serve", "-c", str(tmp_path / "d" / "kipuka.toml"), "--listen", "127.0.0.1:1", check=False)
    assert served.returncode == 2 and "admin.subjects" in served.stderr


def test_admin_client_ca_with_explicit_subjects_is_accepted(tmp_path):
    d = tmp_path / "d"
    run_cli("init", str(d))
    edit_config(d / "kipuka.toml", {**ADMIN_CA_ON, r"^subjects = \[\].*$": 'subjects = ["CN=ops.example.com"]'})
    assert "OK" in run_cli("config", "check", "-c", str(d / "kipuka.toml")).stderr


def test_any_admin_subject_needs_a_ca_of_admins_alone(tmp_path):
    from tests.helpers import make_test_ca
    d = tmp_path / "d"
    run_cli("init", str(d))
    star = {r"^subjects = \[\].*$": 'subjects = ["*"]'}
    edit_config(d / "kipuka.toml", {**ADMIN_CA_ON, **star})  # the device bundle: every device an admin
    out = run_cli("config", "check", "-c", str(d / "kipuka.toml"), check=False)
    assert out.returncode == 2 and "admin.subjects" in out.stderr and "every device" in out.stderr
    served = run_cli("serve", "-c", str(d / "kipuka.toml"), "--listen", "127.0.0.1:1", check=False)
    assert served.returncode != 0 and "every device" in served.stderr
    admin_ca, _ = make_test_ca(d / "tls", "admin-ca")
    edit_config(d / "kipuka.toml", {r'^client_ca = "tls/client-ca.pem"\nsubjects': f'client_ca = "tls/{admin_ca.name}"\nsubjects'})
    assert "OK" in run_cli("config", "check", "-c", str(d / "kipuka.toml")).stderr


def test_init_suggests_a_separate_admin_ca_and_sets_the_demo_domain(deployment):
    text = (deployment / "kipuka.toml").read_text()
    assert '# client_ca = "tls/admin-ca.pem"' in text and "never\n# tls/client-ca.pem" in text
    policy = tomllib.loads(text)["policy"]
    assert policy["dns_suffixes"] == ["example.com"] and policy["max_sans"] == 10
    assert policy["subject_attributes"] == ["CN"] and policy["subject_unlisted"] == "refuse"


@pytest.mark.parametrize("edit, key", [
    ('dns_suffixes = ["*", "example.com"]', "policy.dns_suffixes"),
    ('dns_suffixes = ["exa mple.com"]', "policy.dns_suffixes"),
    ("max_sans = -1", "policy.max_sans"),
    ('subject_attributes = ["CN", "nickname"]', "policy.subject_attributes"),
    ('subject_unlisted = "ignore"', "policy.subject_unlisted"),
    ('mtls_enroll_cas = ["nope"]', "policy.mtls_enroll_cas"),
    ('subject_fixed = ["O"]', "policy.subject_fixed"),
])
def test_new_policy_keys_are_checked(tmp_path, edit, key):
    name = edit.split(" ", 1)[0]
    if name in ("mtls_enroll_cas", "subject_fixed"):  # not set in the generated file: added under [policy]
        out, _ = _broken(tmp_path, replacements={r"^max_sans = 10.*$": f"max_sans = 10\n{edit}"})
    else:
        out, _ = _broken(tmp_path, replacements={rf"^{name} = .*$": edit})
    assert out.returncode == 2 and key in out.stderr, out.stderr


def test_a_label_named_any_is_a_configuration_error(tmp_path):
    out, _ = _broken(tmp_path, append='\n[labels.any]\nca = "default"\n')
    assert out.returncode == 2 and "labels.any" in out.stderr and "reserved" in out.stderr

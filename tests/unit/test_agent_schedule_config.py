"""The agent's arithmetic and configuration, without a server: thresholds, jitter, back-off, agent.toml."""

import datetime as dt
import random

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from kipuka.client.agent.config import ConfigError, parse
from kipuka.client.agent.schedule import Threshold, backoff, renewal_time
from kipuka.client.csr import generate_key

NOW = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)


def _cert(days: float = 90, serial: int = 1234) -> x509.Certificate:
    key = generate_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "t")])
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(serial).not_valid_before(NOW).not_valid_after(NOW + dt.timedelta(days=days))
            .sign(key, hashes.SHA256()))


def test_a_threshold_is_a_share_of_the_lifetime_or_a_duration():
    cert = _cert(90)
    assert Threshold.parse("33%").of(cert) == pytest.approx(0.33 * 90 * 86400)
    assert Threshold.parse("7d").of(cert) == 7 * 86400
    assert Threshold.parse("12", bare_unit="d").of(cert) == 12 * 86400
    for bad in ("soon", "150%", "-3%", True):
        with pytest.raises(ValueError):
            Threshold.parse(bad)


def test_renewal_time_is_the_threshold_before_expiry_moved_earlier_by_a_jitter_fixed_per_certificate():
    cert = _cert(100)
    base = renewal_time(cert, Threshold.parse("10d"), Threshold.parse("0%"), "a")
    assert base == cert.not_valid_after_utc - dt.timedelta(days=10)
    jittered = renewal_time(cert, Threshold.parse("10d"), Threshold.parse("5d"), "a")
    assert base - dt.timedelta(days=5) <= jittered <= base
    assert jittered == renewal_time(cert, Threshold.parse("10d"), Threshold.parse("5d"), "a")  # every run alike
    others = {renewal_time(_cert(100, serial=s), Threshold.parse("10d"), Threshold.parse("5d"), "a")
              for s in range(1, 20)}
    assert len(others) > 10  # a fleet spreads out
    assert renewal_time(cert, Threshold.parse("100%"), Threshold.parse("50%"), "a") == cert.not_valid_before_utc


def test_backoff_doubles_up_to_its_cap_and_is_never_under_a_second():
    rng = random.Random(1)
    delays = [backoff(n, 10, 300, rng) for n in range(1, 10)]
    assert all(7.5 <= d <= 300 for d in delays) and max(delays) <= 300
    assert delays[0] <= 10 and 15 <= delays[1] <= 20 and delays[-1] >= 225
    assert backoff(1, 0.1, 1) == 1.0


def _config(**entry):
    base = {"server": "https://est.example.com", "fingerprint": "ab" * 32, "cert": "c.pem", "key": "k.pem",
            "common_name": "dev.example.com"}
    return {"state_dir": "state", "certificates": {"dev": {**base, **entry}}}


def test_agent_toml_defaults_relative_paths_and_values():
    data = _config(key_mode="0640", post_renew="systemctl reload x", renew_before="7d")
    data["defaults"] = {"jitter": "1h", "rotate_key": False}
    cfg = parse(data, "/etc/kipuka-est/agent.toml")
    c = cfg.certificates[0]
    assert cfg.state_dir == "/etc/kipuka-est/state" and c.cert == "/etc/kipuka-est/c.pem"
    assert c.key_mode == 0o640 and c.cert_mode == 0o644 and c.rotate_key is False
    assert c.jitter == Threshold(seconds=3600) and c.renew_before == Threshold(seconds=7 * 86400)
    assert c.post_renew == "systemctl reload x" and cfg.status_file == "/etc/kipuka-est/state/status.json"
    assert parse(_config(post_renew=["a", "b"]), "/x/a.toml").certificates[0].post_renew == ("a", "b")


@pytest.mark.parametrize("change, message", [
    ({"fingerprint": None}, "give trust"),
    ({"renew_before": "soon"}, "certificates.dev.renew_before"),
    ({"key_mode": "rw"}, "certificates.dev.key_mode"),
    ({"owner": "no-such-user-here"}, "no user"),
    ({"otp_file": "otp"}, "otp_file needs user"),
    ({"bootstrap_cert": "b.pem"}, "bootstrap_cert and bootstrap_key go together"),
    ({"key_type": "dsa"}, "certificates.dev.key_type"),
    ({"colour": "blue"}, "certificates.dev.colour: unknown key"),
    ({"retry_initial": "2h", "retry_max": "1h"}, "retry_max"),
])
def test_agent_toml_errors_name_the_key(change, message):
    data = _config(**{k: v for k, v in change.items() if v is not None})
    for k, v in change.items():
        if v is None:
            del data["certificates"]["dev"][k]
    with pytest.raises(ConfigError, match=message):
        parse(data, "/etc/kipuka-est/agent.toml")


def test_two_entries_cannot_share_a_file():
    data = _config()
    data["certificates"]["other"] = dict(data["certificates"]["dev"])
    with pytest.raises(ConfigError, match="also used by"):
        parse(data, "/a/agent.toml")

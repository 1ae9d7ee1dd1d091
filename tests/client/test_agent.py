"""`kipuka-est agent` as a service against a real `kipuka serve`: renewal at the threshold, key rotation,
the post-renew hook, monitoring output, and a server outage ridden out.

Certificates here live two minutes (label `short`), so thresholds of 100 s or 25% of the lifetime
come due some twenty seconds after issuance. The tests wait for what the agent writes to disk and
compare certificate dates, which the server sets; they time nothing themselves.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import stat

import pytest

from tests.client.agent_util import (certificate, entry, matches, run_agent, start_agent, status,
                                     stop_agent, wait_for, write_config)
from tests.helpers import unique

BACKDATE = dt.timedelta(minutes=5)  # kipuka backdates notBefore by five minutes (docs/configuration.md)


@pytest.fixture(scope="module")
def server(agent_srv):
    return agent_srv


def test_agent_enrolls_once_with_the_otp_then_renews_each_certificate_at_its_threshold(server, tmp_path):
    hook_log = tmp_path / "hook.log"
    rotating, keeping = unique("rot"), unique("keep")
    e_rot = entry(tmp_path, "rot", rotating, server.otp(rotating, "--label", "short"), label="short", renew_before="100s",
                  rotate_key=True, post_renew=f"env | grep ^KIPUKA_EST_ | sort >> {hook_log}; echo --- >> {hook_log}",
                  chain=str(tmp_path / "rot-chain.pem"), key_mode="0640")
    e_keep = entry(tmp_path, "keep", keeping, server.otp(keeping, "--label", "short"), label="short", renew_before="25%",
                   rotate_key=False, post_renew=["touch", str(tmp_path / "keep.reloaded")])
    config = write_config(tmp_path / "agent.toml", server, {"rot": e_rot, "keep": e_keep},
                          prometheus_textfile=str(tmp_path / "kipuka-est.prom"))
    log = tmp_path / "agent.log"
    agent = start_agent(config, log)
    try:
        first = wait_for("both enrolled", lambda: all(certificate(e["cert"]) for e in (e_rot, e_keep)) and
                         {n: certificate(e["cert"]) for n, e in (("rot", e_rot), ("keep", e_keep))}, log=log)
        keys = {n: open(e["key"], "rb").read() for n, e in (("rot", e_rot), ("keep", e_keep))}
        renewed = wait_for("both renewed", lambda: all(
            (c := certificate(e["cert"])) is not None and c.serial_number != first[n].serial_number
            for n, e in (("rot", e_rot), ("keep", e_keep))) and
            {n: certificate(e["cert"]) for n, e in (("rot", e_rot), ("keep", e_keep))}, timeout=90, log=log)
        agent.send_signal(signal.SIGHUP)  # re-reads agent.toml, keeps running
        wait_for("the configuration reloaded", lambda: "configuration reloaded: 2 certificate(s)" in log.read_text(),
                 log=log)
        assert agent.poll() is None
    finally:
        assert stop_agent(agent) == 0
    # each renewal came at its threshold, not before: the new certificate was issued (notBefore + the
    # server's backdate) once less than the threshold remained on the old one
    rot_due = first["rot"].not_valid_after_utc - dt.timedelta(seconds=100)
    lifetime = first["keep"].not_valid_after_utc - first["keep"].not_valid_before_utc
    keep_due = first["keep"].not_valid_after_utc - lifetime * 0.25
    assert renewed["rot"].not_valid_before_utc + BACKDATE >= rot_due - dt.timedelta(seconds=1)
    assert renewed["keep"].not_valid_before_utc + BACKDATE >= keep_due - dt.timedelta(seconds=1)
    # rotate_key = true made a new key; false kept it; both pairs match
    assert open(e_rot["key"], "rb").read() != keys["rot"] and open(e_keep["key"], "rb").read() == keys["keep"]
    assert matches(e_rot) and matches(e_keep)
    assert stat.S_IMODE(os.stat(e_rot["key"]).st_mode) == 0o640 and stat.S_IMODE(os.stat(e_keep["key"]).st_mode) == 0o600
    # the hook ran after each install, with what it needs in its environment
    runs = [dict(line.split("=", 1) for line in block.strip().splitlines())
            for block in hook_log.read_text().split("---") if block.strip()]
    assert [r["KIPUKA_EST_ACTION"] for r in runs[:2]] == ["enrolled", "renewed"]
    assert runs[0]["KIPUKA_EST_NAME"] == "rot" and runs[0]["KIPUKA_EST_CERT"] == e_rot["cert"]
    assert runs[0]["KIPUKA_EST_SERIAL"] == format(first["rot"].serial_number, "x")
    assert runs[1]["KIPUKA_EST_SERIAL"] != runs[0]["KIPUKA_EST_SERIAL"]
    assert (tmp_path / "keep.reloaded").exists()
    assert open(tmp_path / "rot-chain.pem").read().count("BEGIN CERTIFICATE") == 2  # issuing CA and root
    # the OTPs were single-use: renewals went over mTLS, and the OTP is remembered as spent
    state = json.loads((tmp_path / "state" / "rot.json").read_text())
    assert state["otp_spent"] and state["failures"] == 0 and state["last_result"] == "renewed"
    assert "otp" not in json.dumps(state).replace("otp_spent", "")


def test_agent_status_file_and_prometheus_textfile_say_expiry_and_last_attempt(server, tmp_path):
    entity = unique("mon")
    owners = {"owner": "65534", "group": "65534"} if os.geteuid() == 0 else {}  # chown needs root
    e = entry(tmp_path, "mon", entity, server.otp(entity), renew_before="30d", **owners)
    config = write_config(tmp_path / "agent.toml", server, {"mon": e},
                          prometheus_textfile=str(tmp_path / "kipuka-est.prom"))
    assert run_agent(config, "--once").returncode == 0
    if owners:
        assert (os.stat(e["key"]).st_uid, os.stat(e["cert"]).st_gid) == (65534, 65534)
    doc = status(config)["mon"]
    cert = certificate(e["cert"])
    assert doc["not_after"] == cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert doc["last_result"] == "enrolled" and doc["last_attempt"] and doc["renew_at"] < doc["not_after"]
    prom = _samples((tmp_path / "kipuka-est.prom").read_text())
    assert prom['kipuka_est_certificate_not_after_timestamp_seconds{name="mon"}'] == cert.not_valid_after_utc.timestamp()
    assert prom['kipuka_est_last_attempt_timestamp_seconds{name="mon"}'] > 0
    assert prom['kipuka_est_last_result{name="mon",result="enrolled"}'] == 1
    assert prom['kipuka_est_last_result{name="mon",result="failed"}'] == 0
    assert prom['kipuka_est_consecutive_failures{name="mon"}'] == 0
    # --status reads it all back without the network; --json for machines
    shown = run_agent(config, "--status", "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["certificates"][0]["serial"] == format(cert.serial_number, "x")
    assert "mon: serial" in run_agent(config, "--status").stdout


def test_agent_once_exit_codes_tell_renewed_not_due_and_each_failure_apart(server, tmp_path):
    from tests.helpers import make_test_ca
    entity = unique("codes")
    e = entry(tmp_path, "dev", entity, server.otp(entity, "--uses", "1"), renew_before="30d")
    config = write_config(tmp_path / "agent.toml", server, {"dev": e})
    enrolled = run_agent(config, "--once", "--json")
    assert enrolled.returncode == 0 and json.loads(enrolled.stdout)["certificates"][0]["action"] == "enrolled"
    not_due = run_agent(config, "--once", "--json")
    doc = json.loads(not_due.stdout)
    assert not_due.returncode == 10 and doc["ok"] and doc["certificates"][0]["action"] == "not_due"
    forced = run_agent(config, "--once", "--force")
    assert forced.returncode == 0 and "renewed serial" in forced.stderr
    # a server that is not there: 3; a server whose certificate is not trusted: 9
    other_ca, _ = make_test_ca(tmp_path, "Some Other CA")
    for name, override, code in (("gone", {"server": "https://localhost:1"}, 3),
                                 ("untrusted", {"trust": str(other_ca)}, 9)):
        who = unique(name)
        bad = write_config(tmp_path / f"{name}.toml", server,
                           {name: entry(tmp_path, name, who, "unused-otp", **override)})
        done = run_agent(bad, "--once", "--json")
        doc = json.loads(done.stdout)
        assert done.returncode == code and not doc["ok"], done.stderr
        assert doc["certificates"][0]["action"] == "failed" and doc["certificates"][0]["failures"] == 1
        # until the back-off passes, a timer's --once does not try again and reports the same failure
        assert run_agent(bad, "--once").returncode == code


def test_agent_enrolls_once_with_a_bootstrap_certificate_then_renews_with_its_own(server, tmp_path):
    from tests.helpers import new_key, sign_certificate, write_identity
    key = new_key()
    idevid = sign_certificate(server.dir / "Acme IDevID CA.crt", server.dir / "Acme IDevID CA.key", key.public_key(),
                              "SN-0042")
    crt, k = write_identity(tmp_path, "idevid", key, idevid)
    name = unique("sensor")
    e = {"cert": str(tmp_path / "op.crt"), "key": str(tmp_path / "op.key"), "label": "idevid",
         "common_name": f"{name}.example.com", "bootstrap_cert": crt, "bootstrap_key": k}
    config = write_config(tmp_path / "agent.toml", server, {"op": e})
    done = run_agent(config, "--once")
    assert done.returncode == 0, done.stderr
    assert certificate(e["cert"]).subject.rfc4514_string() == f"CN={name}.example.com" and matches(e)
    state = json.loads((tmp_path / "state" / "op.json").read_text())
    assert state["bootstrap_cert_spent"]
    renewed = run_agent(config, "--once", "--force")  # over mTLS with the operational certificate
    assert renewed.returncode == 0 and "renewed serial" in renewed.stderr, renewed.stderr
    # the bootstrap certificate was for one enrollment: with the operational one gone, the agent says so
    os.unlink(e["cert"])
    lost = run_agent(config, "--once")
    assert lost.returncode == 1 and "no unused bootstrap credential" in lost.stderr


def test_agent_bootstraps_trust_again_when_the_kept_ca_certificates_no_longer_fit(server, tmp_path):
    from tests.helpers import make_test_ca
    entity = unique("roll")
    e = entry(tmp_path, "dev", entity, server.otp(entity), renew_before="30d")
    config = write_config(tmp_path / "agent.toml", server, {"dev": e})
    assert run_agent(config, "--once").returncode == 0
    kept = tmp_path / "state" / "dev.trust.pem"
    other, _ = make_test_ca(tmp_path, "Another Root")  # as after a CA rollover the device missed
    kept.write_bytes(other.read_bytes())
    assert run_agent(config, "--once", "--force").returncode == 9
    again = run_agent(config, "--once", "--force")
    assert again.returncode == 0 and "fingerprint matches" in again.stderr, again.stderr
    assert kept.read_bytes() != other.read_bytes()


def test_agent_configuration_errors_name_the_key(server, tmp_path):
    config = write_config(tmp_path / "agent.toml", server, {"dev": {"cert": "a.crt", "key": "a.key",
                                                                     "common_name": "x", "renew_before": "soon"}})
    done = run_agent(config, "--once")
    assert done.returncode == 1 and "certificates.dev.renew_before" in done.stderr
    config.write_text(config.read_text().replace('renew_before = "soon"', 'renew_befor = "10%"'))
    done = run_agent(config, "--once")
    assert done.returncode == 1 and "certificates.dev.renew_befor: unknown key" in done.stderr


def _samples(text: str) -> dict[str, float]:
    """Prometheus text format: sample name with labels -> value."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out

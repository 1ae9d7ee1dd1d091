"""`kipuka-est agent` when things go wrong: a request held for approval across a restart, kill -9 at
any moment, a server that goes away. Nothing is lost: not the key of a held request, not a single-use
OTP, not the pairing of a key with its certificate.
"""

from __future__ import annotations

import json
import os
import random
import signal
import stat
import subprocess
import time

import pytest
from cryptography.hazmat.primitives import serialization

from tests.client.agent_util import (KIPUKA_EST, agent_server, certificate, entry, matches, pending_requests,
                                     run_agent, start_agent, status, stop_agent, wait_for, write_config)
from tests.helpers import admin_call, admin_token, unique


@pytest.fixture(scope="module")
def server(agent_srv):
    return agent_srv


def test_agent_resumes_a_held_request_after_kill_9_with_the_same_key_and_one_otp_use(server, tmp_path):
    token = admin_token(server)
    entity = unique("held")
    e = entry(tmp_path, "dev", entity, server.otp(entity, "--label", "held"), label="held")  # a single-use OTP
    config = write_config(tmp_path / "agent.toml", server, {"dev": e})
    log = tmp_path / "agent.log"
    agent = start_agent(config, log)
    wait_for("the request held (202)", lambda: (s := status(config).get("dev")) and s["last_result"] == "pending",
             log=log)
    journal = tmp_path / "state" / "dev.pending"
    assert stat.S_IMODE(os.stat(journal).st_mode) == 0o600
    kept_key = serialization.load_pem_private_key(json.loads(journal.read_text())["key"].encode(), None)
    stop_agent(agent, signal.SIGKILL)
    assert len(pending_requests(server, token, entity)) == 1
    agent = start_agent(config, log)
    try:
        wait_for("a poll after the restart", lambda: log.read_text().count("held by the server (202)") >= 2, log=log)
        assert len(pending_requests(server, token, entity)) == 1  # the same request, not a second one
        [held] = pending_requests(server, token, entity)
        assert admin_call(server, "POST", f"/admin/requests/{held['id']}/approve", token).status_code == 200
        cert = wait_for("the certificate after approval", lambda: certificate(e["cert"]), log=log)
    finally:
        assert stop_agent(agent) == 0
    assert cert.public_key() == kept_key.public_key() and matches(e)
    assert not journal.exists()
    assert len(server.cli("certs", "list", "--entity", entity).stdout.strip().splitlines()) == 1
    assert status(config)["dev"]["last_result"] == "enrolled"


def test_kill_9_at_any_moment_never_leaves_a_key_that_does_not_match_its_certificate(server, tmp_path):
    entity = unique("kill")
    e = entry(tmp_path, "dev", entity, server.otp(entity, "--label", "short"), label="short", rotate_key=True, renew_before="1s")
    config = write_config(tmp_path / "agent.toml", server, {"dev": e})
    assert run_agent(config, "--once").returncode == 0
    # how long a whole forced renewal takes on this machine now: the kills are spread over all of it
    started = time.monotonic()
    assert run_agent(config, "--once", "--force").returncode == 0
    whole = time.monotonic() - started
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    killed = 0
    for _ in range(12):
        proc = subprocess.Popen([*KIPUKA_EST, "agent", "-c", str(config), "--once", "--force", "-q"])
        try:
            proc.wait(timeout=rng.uniform(0.05, whole))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            killed += 1
        if not matches(e):
            # killed between the two renames: the journal holds the whole new pair and the next run
            # finishes the install before anything else
            assert json.loads((tmp_path / "state" / "dev.pending").read_text())["issued"], seed
            done = run_agent(config, "--once")
            assert done.returncode == 0 and "finished installing" in done.stderr, (seed, done.stderr)
        assert matches(e), f"seed {seed}"
    final = run_agent(config, "--once", "--force")
    assert final.returncode == 0 and matches(e), final.stderr
    assert killed, f"every run finished before its kill (seed {seed})"


def test_agent_rides_out_a_server_that_is_down_for_a_while_enrolling_and_renewing_when_it_returns(tmp_path):
    srv = agent_server(tmp_path)  # made, not started: the agent starts during an outage
    entity = unique("outage")
    e = entry(tmp_path, "dev", entity, srv.otp(entity, "--uses", "1", "--label", "short"), label="short", renew_before="115s")
    config = write_config(tmp_path / "agent.toml", srv, {"dev": e}, check_interval="2s")
    log = tmp_path / "agent.log"
    agent = start_agent(config, log)
    try:
        down = wait_for("two failed attempts", lambda: (s := status(config).get("dev")) and s["failures"] >= 2 and s,
                        log=log)
        assert down["last_exit_code"] == 3 and down["next_attempt"] and not down["pending"]
        assert agent.poll() is None  # still running: an outage is not a reason to stop
        srv.start()
        first = wait_for("enrollment once the server is back", lambda: certificate(e["cert"]), log=log)
        srv.stop()  # down again, across the renewal time (5 s after issuance)
        wait_for("a failed renewal", lambda: (s := status(config).get("dev")) and s["failures"] >= 1, log=log)
        assert certificate(e["cert"]).serial_number == first.serial_number and matches(e)
        srv.start()
        wait_for("renewal once the server is back",
                 lambda: (c := certificate(e["cert"])) and c.serial_number != first.serial_number, log=log)
    finally:
        assert stop_agent(agent) == 0
        srv.stop()
    assert matches(e) and status(config)["dev"]["failures"] == 0
    assert "cannot connect" in log.read_text()

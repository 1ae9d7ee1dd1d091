"""The systemd units of packaging/ for the agent: valid for systemd, and saying what docs/client.md says."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGING = Path(__file__).resolve().parents[2] / "packaging"
UNITS = ("kipuka-est-agent.service", "kipuka-est-renew.service", "kipuka-est-renew.timer")


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
def test_the_agent_units_pass_systemd_analyze_verify(tmp_path):
    kipuka_est = str(Path(sys.executable).parent / "kipuka-est")
    for name in UNITS:  # the units name /opt/kipuka; verify wants the command to exist
        (tmp_path / name).write_text((PACKAGING / name).read_text().replace("/opt/kipuka/bin/kipuka-est", kipuka_est))
    done = subprocess.run(["systemd-analyze", "verify", *(str(tmp_path / n) for n in UNITS)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_the_timer_pass_counts_not_due_and_pending_as_success():
    service = (PACKAGING / "kipuka-est-renew.service").read_text()
    assert "ExecStart=/opt/kipuka/bin/kipuka-est agent --once" in service
    assert "SuccessExitStatus=7 10" in service
    assert "Type=oneshot" in service
    agent = (PACKAGING / "kipuka-est-agent.service").read_text()
    assert "ExecStart=/opt/kipuka/bin/kipuka-est agent\n" in agent and "ExecReload=/bin/kill -HUP $MAINPID" in agent

"""Driving `kipuka-est agent` as a device owner would: a config file, the command, its state on disk.

The server side is a real `kipuka serve` with two labels added for these tests:
`short` issues certificates valid for two minutes (so renewal thresholds come
within seconds), `held` holds every enrollment for approval (202 + Retry-After 2 s).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from cryptography import x509

from kipuka.client.install import pair_matches
from tests.client.conftest import root_fingerprint
from tests.helpers import admin_call, make_server, make_test_ca

AGENT_LABELS = """
[labels.short]
ca = "default"
validity = "2m"

[labels.held]
ca = "default"
require_approval = true
"""
RETRY_AFTER = {r'^retry_after = "60s".*$': 'retry_after = "2s"'}
KIPUKA_EST = [sys.executable, "-m", "kipuka.client"]


def agent_server(root: Path):
    """Made, not started. Also a label `idevid` whose bootstrap anchor is a manufacturer CA of the
    test's own (`srv.dir / "Acme IDevID CA.crt"` and `.key`), trusted for TLS client certificates."""
    srv = make_server(root, replacements=RETRY_AFTER, append=AGENT_LABELS)
    ca_crt, _ = make_test_ca(srv.dir, "Acme IDevID CA")
    with open(srv.config, "a") as fh:
        fh.write(f'\n[labels.idevid]\nca = "default"\nbootstrap_anchors = ["{ca_crt}"]\n')
    with open(srv.dir / "tls" / "client-ca.pem", "ab") as fh:
        fh.write(ca_crt.read_bytes())
    return srv


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(str(value))


def write_config(path: Path, server, certificates: dict[str, dict], **top) -> Path:
    """An agent.toml: [defaults] pointing at `server` (fingerprint bootstrap), one table per certificate."""
    lines = [f"{k} = {toml_value(v)}" for k, v in {"state_dir": str(path.parent / "state"), **top}.items()]
    defaults = {"server": f"https://localhost:{server.port}", "fingerprint": root_fingerprint(server),
                "jitter": "0%", "retry_initial": "1s", "retry_max": "2s", "timeout": "5s"}
    lines += ["", "[defaults]"] + [f"{k} = {toml_value(v)}" for k, v in defaults.items()]
    for name, entry in certificates.items():
        lines += ["", f"[certificates.{name}]"] + [f"{k} = {toml_value(v)}" for k, v in entry.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def entry(directory: Path, name: str, entity: str, otp: str, **extra) -> dict:
    """A certificate entry enrolling `entity` with `otp` (written to a file, as a device would keep it)."""
    (directory / f"{name}.otp").write_text(otp + "\n")
    return {"cert": str(directory / f"{name}.crt"), "key": str(directory / f"{name}.key"), "user": entity,
            "common_name": f"{entity}.example.com", "otp_file": str(directory / f"{name}.otp"), **extra}


def run_agent(config: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*KIPUKA_EST, "agent", "-c", str(config), *args], capture_output=True, text=True,
                          timeout=timeout)


def start_agent(config: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen([*KIPUKA_EST, "agent", "-c", str(config)], stdout=subprocess.DEVNULL,
                            stderr=open(log, "ab"))


def stop_agent(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
    return proc.wait(timeout=30)


def wait_for(what: str, check: Callable[[], object], timeout: float = 60, log: Path | None = None):
    """Poll `check` until it returns something true; fail with the agent's log when it never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    tail = log.read_text()[-3000:] if log is not None and log.exists() else ""
    raise AssertionError(f"timed out waiting for {what}\n{tail}")


def status(config: Path) -> dict[str, dict]:
    path = config.parent / "state" / "status.json"
    try:
        return {d["name"]: d for d in json.loads(path.read_text())["certificates"]}
    except (OSError, ValueError):
        return {}


def certificate(path: str | os.PathLike) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificates(Path(path).read_bytes())[0]
    except (OSError, ValueError):
        return None


def matches(e: dict) -> bool:
    return pair_matches(e["cert"], e["key"])


def pending_requests(server, token: str, entity: str) -> list[dict]:
    items = admin_call(server, "GET", "/admin/requests", token).json()["items"]
    return [r for r in items if r["entity"] == entity and r["status"] == "pending"]

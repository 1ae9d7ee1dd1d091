"""Floors (`run.py --floor`): what the stack under kipuka reaches without kipuka's work.

  floor_server.py   the same aiohttp/uvloop/TLS listener on the same deployment's TLS files,
                    answering every request with a canned body, driven by estload;
  OpenSSL           s_server -Verify against s_time -new with a client certificate: mutual-TLS
                    handshakes with no Python on either side.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

from deploy import Deployment, Node, free_port
from machine import HERE, cpu_seconds


class FloorServer:
    """benchmarks/floor_server.py on a deployment's folder, with the deployment's node API (estload needs
    .nodes, .ca_file, .workers(), .database_url)."""

    def __init__(self, dep: Deployment, workers: int) -> None:
        self.dep, self.count = dep, workers
        self.ca_file, self.database_url = dep.ca_file, None
        self.nodes = [Node(dep.config, free_port(), dep.dir / "floor.log")]

    def start(self) -> None:
        node = self.nodes[0]
        node.proc = subprocess.Popen([sys.executable, str(HERE / "floor_server.py"), "-c", str(self.dep.config),
                                      "--listen", f"127.0.0.1:{node.port}", "--workers", str(self.count)],
                                     stdout=open(node.log, "ab"), stderr=subprocess.STDOUT, env=self.dep.env())
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(node.workers()) < self.count + (self.count == 1):
            time.sleep(0.1)
        time.sleep(1.5)

    def workers(self) -> list[int]:
        return self.nodes[0].workers()

    def stop(self) -> None:
        proc = self.nodes[0].proc
        if proc and proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=60)


def tls_floor(dep: Deployment, device_dir: Path, seconds: float) -> dict:
    """Full mutual-TLS handshakes between OpenSSL's own s_server and s_time."""
    port = free_port()
    crt, key = sorted(device_dir.glob("*.crt"))[0], sorted(device_dir.glob("*.key"))[0]
    srv = subprocess.Popen(["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", str(dep.dir / "tls/server.pem"),
                            "-key", str(dep.dir / "private/tls-server.key"), "-Verify", "2", "-CAfile",
                            str(dep.dir / "tls/client-ca.pem"), "-www", "-quiet", "-naccept", "1000000"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1)
        out = {}
        for version in ("-tls1_3", "-tls1_2"):
            s0, t0 = cpu_seconds([srv.pid]), time.monotonic()
            r = subprocess.run(["openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-new", "-time", str(int(seconds)),
                                "-cert", str(crt), "-key", str(key), version], capture_output=True, text=True)
            s1, t1 = cpu_seconds([srv.pid]), time.monotonic()
            m = re.search(r"(\d+) connections in ([\d.]+)s; ([\d.]+) connections/user sec", r.stdout)
            if not m:
                continue
            n, user = int(m.group(1)), float(m.group(2))
            out[version[1:]] = {"handshakes": n, "per_s": round(n / (t1 - t0), 1),
                                "server_cpu_ms": round(1000 * (s1 - s0) / n, 2), "client_cpu_ms": round(1000 * user / n, 2)}
        return out
    finally:
        srv.terminate()
        srv.wait()

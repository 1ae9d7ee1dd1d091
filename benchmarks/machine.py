"""The machine under the benchmark: what it is, and where its CPU time goes during a run.

This box is small and shared (other jobs, PostgreSQL serving them too), so every
measurement records what the server, the load generator, the database backends
and everything else used, and can first wait for the machine to be quiet.
"""

from __future__ import annotations

import os
import platform
import re
import resource
import sqlite3
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def git(*args: str, repo: Path = REPO) -> str:
    r = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    return r.stdout.strip()


def machine_info() -> dict:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    openssl = subprocess.run(["openssl", "version"], capture_output=True, text=True).stdout.strip()
    wrk = subprocess.run(["sh", "-c", "wrk -v 2>&1 | head -1"], capture_output=True, text=True).stdout.strip()

    def pkg_version(name: str) -> str:
        try:
            from importlib.metadata import version
            return version(name)
        except Exception:
            return "?"

    dirty = " (with uncommitted changes)" if git("status", "--porcelain", "--", "src") else ""
    return {
        "git": git("rev-parse", "--short", "HEAD") + dirty,
        "nproc": os.cpu_count(), "cpu": cpu, "ram_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(), "python": platform.python_version(),
        "python_ssl": ssl.OPENSSL_VERSION, "openssl_cli": openssl, "wrk": wrk or "not installed",
        "packages": {p: pkg_version(p) for p in ("kipuka", "aiohttp", "uvloop", "cryptography", "SQLAlchemy",
                                                 "psycopg")},
        "sqlite": sqlite3.sqlite_version,
    }


# --- CPU accounting ---------------------------------------------------------------------

def cpu_seconds(pids: list[int]) -> float:
    """user + system CPU of the given processes, all threads."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except OSError:
            pass
    return total


def cpu_by_pid(pids: list[int]) -> dict[int, float]:
    return {pid: cpu_seconds([pid]) for pid in pids}


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine from /proc/stat."""
    parts = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = parts[3] + parts[4]
    return sum(parts) - idle, sum(parts)


def children_cpu() -> float:
    """CPU of this process's children that have been waited for (the load generators)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def wait_quiet(max_wait: float, threshold: float = 10.0) -> tuple[float, float]:
    """Wait (up to max_wait s) until the machine is under `threshold` % busy for 2 s in a row.

    A cell started while something else burns CPU measures that instead.
    Returns (seconds waited, last busy %)."""
    start = time.monotonic()
    quiet = 0
    pct = 100.0
    while True:
        b0, a0 = machine_busy()
        time.sleep(1)
        b1, a1 = machine_busy()
        pct = 100 * (b1 - b0) / max(1, a1 - a0)
        quiet = quiet + 1 if pct < threshold else 0
        waited = time.monotonic() - start
        if quiet >= 2 or waited >= max_wait:
            return waited, pct


@dataclass
class Meter:
    """CPU used between start() and stop(): server processes, database backends, load generators, the rest.

    `server` and `database` are called at both ends (the PostgreSQL backends of a
    pool may come and go); a PID first seen at the end counts with all its CPU.
    Load generators are children of this process: their CPU is read from
    RUSAGE_CHILDREN once they have been waited for."""
    server: Callable[[], list[int]]
    database: Callable[[], list[int]] = lambda: []
    _t: dict = field(default_factory=dict)

    def start(self) -> None:
        self._t = {"server": cpu_by_pid(self.server()), "db": cpu_by_pid(self.database()),
                   "children": children_cpu(), "busy": machine_busy(), "t": time.monotonic()}

    def stop(self, responses: int, client_cpu_s: float | None = None) -> dict:
        """Figures in % of one core (200 = both cores of a 2-core box) and ms per response."""
        t0 = self._t
        server1, db1 = cpu_by_pid(self.server()), cpu_by_pid(self.database())
        children1, busy1, t1 = children_cpu(), machine_busy(), time.monotonic()
        wall = max(1e-6, t1 - t0["t"])
        server = sum(c - t0["server"].get(p, 0.0) for p, c in server1.items())
        db = sum(c - t0["db"].get(p, 0.0) for p, c in db1.items())
        client = children1 - t0["children"] if client_cpu_s is None else client_cpu_s
        busy_pct = 100 * (busy1[0] - t0["busy"][0]) / max(1, busy1[1] - t0["busy"][1])
        n = max(1, responses)
        ncpu = os.cpu_count() or 1
        out = {"server_cpu_pct": round(100 * server / wall, 1), "server_cpu_ms_per_req": round(1000 * server / n, 3),
               "db_cpu_pct": round(100 * db / wall, 1), "db_cpu_ms_per_req": round(1000 * db / n, 3),
               "client_cpu_pct": round(100 * client / wall, 1), "machine_busy_pct": round(busy_pct, 1)}
        # anything but the server, its database backends and the load generator (other jobs on a shared box)
        out["other_cpu_pct"] = max(0.0, round(busy_pct * ncpu - out["server_cpu_pct"] - out["db_cpu_pct"]
                                              - out["client_cpu_pct"], 1))
        return out


# --- listening sockets ------------------------------------------------------------------

def foreign_listeners(port: int, pids: list[int]) -> set[int]:
    """PIDs other than `pids` that listen on TCP `port` (from `ss -ltnp`).

    kipuka's workers bind with SO_REUSEPORT, so a second server of the same user on
    the same port (another job on a shared box) binds silently and takes part of
    the connections: its answers (401s for OTPs it does not know) would be counted
    as ours."""
    r = subprocess.run(["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True)
    holders = {int(p) for p in re.findall(r"pid=(\d+)", r.stdout)}
    return holders - set(pids)


def combine(results: list[dict]) -> dict:
    """One result from the load generators of several nodes run at once: rates and counts add up,
    latency percentiles are the worst node's (a bound, not the percentile of the union)."""
    if len(results) == 1:
        return results[0]
    out = dict(results[0])
    for key in ("rps", "completed", "ok", "errors", "total_responses", "total_ok", "total_errors", "handshakes",
                "non_2xx"):
        if key in out:
            out[key] = round(sum(r.get(key, 0) for r in results), 1)
    for key in ("p50_ms", "p90_ms", "p99_ms", "max_ms", "mean_ms", "window_s", "wall_s"):
        if key in out:
            out[key] = max(r.get(key, 0) for r in results)
    detail: dict = {}
    for r in results:
        for k, v in r.get("error_detail", {}).items():
            detail[k] = detail.get(k, 0) + v
    out["error_detail"] = detail
    if "socket_errors" in out:
        out["socket_errors"] = {k: sum(r["socket_errors"][k] for r in results) for k in out["socket_errors"]}
    out["clients"] = sum(r.get("clients", 0) for r in results)
    out["nodes"] = len(results)
    return out

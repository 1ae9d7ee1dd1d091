"""The OTP mode: the bootstrap every device starts with, /simpleenroll with HTTP Basic entity:OTP, driven by wrk.

The setup is the one issue #17 measures (wrk/README in benchmarks/README.md):
  wrk/make_csrs.py 48000 load FILE 60    48,000 distinct P-256 CSRs, line i for entity load<i mod 60>
                                          (CN=load<k>.example.com, what [policy] otp_name_rule = "prefix" allows);
                                          made once and cached in benchmarks/results/cache/
  60 OTPs load0 ... load59, 1,000 uses each, made in bulk through POST /admin/otp
  creds.txt                               one `entity:otp` line each, in that order
  CSR_FILE=... CRED_FILE=creds.txt wrk -t1 -c32 -d10s --latency -s wrk/enroll_many.lua URL
  and with WRK_CLOSE=1 (a new TLS connection per request), 8 connections.

Each wrk run gets a fresh set of 60 OTPs, and the previous set is revoked: enroll_many.lua starts
at the first CSR every time, and the same CSR with the same OTP again would be a cheap re-delivery
([otp] recovery_window) instead of an enrollment. A warm-up run, if any, posts CSRs from the end of
the file.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from deploy import Deployment, backend_pids
from machine import HERE, Meter, combine, log

WRK_DIR = HERE / "wrk"
CACHE = HERE / "results" / "cache"  # git-ignored with results/
ENTITIES, PREFIX, USES = 60, "load", 1000
UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def need_wrk() -> None:
    if not shutil.which("wrk"):
        sys.exit("the OTP modes need wrk: apt-get install wrk")


def csr_file(count: int) -> Path:
    """`make_csrs.py COUNT load FILE 60`, cached between runs (48,000 CSRs take a while)."""
    count -= count % ENTITIES  # whole rounds of the 60 entities
    path = CACHE / f"csrs-{PREFIX}-{count}-{ENTITIES}.txt"
    if path.exists() and sum(1 for _ in path.open()) == count:
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    log(f"making {count} CSRs with wrk/make_csrs.py (once; cached in {path})")
    part = path.with_suffix(".part")
    subprocess.run([sys.executable, str(WRK_DIR / "make_csrs.py"), str(count), PREFIX, str(part), str(ENTITIES)],
                   check=True)
    part.rename(path)
    return path


def slices(csrs: Path, parts: int, tail: int, out: Path) -> tuple[list[Path], list[Path]]:
    """The CSR file cut into `parts` (one per node, so that no two nodes post the same CSR with the same
    OTP), and its last `tail` lines cut the same way for the warm-up; every cut on a multiple of 60, so
    that line i still belongs to entity load<i mod 60>."""
    lines = csrs.read_text().splitlines(keepends=True)

    def cut(chunk: list[str], name: str) -> list[Path]:
        size = len(chunk) // parts // ENTITIES * ENTITIES
        files = []
        for i in range(parts):
            f = out / f"csrs-{name}-{i + 1}.txt"
            f.write_text("".join(chunk[i * size:(i + 1) * size]))
            files.append(f)
        return files

    tail -= tail % ENTITIES
    return ([csrs] if parts == 1 else cut(lines, "node")), cut(lines[len(lines) - tail:], "warmup")


class Credentials:
    """The current set of 60 OTPs of a deployment and its creds file."""

    def __init__(self, dep: Deployment, out: Path, label: str | None) -> None:
        self.dep, self.path, self.label, self.ids = dep, out / "creds.txt", label, []  # type: ignore[var-annotated]

    def renew(self) -> Path:
        """Revoke the previous set (so that OTP checks hash one candidate per entity, as in the first run)
        and make a new one."""
        if self.ids:
            self.dep.revoke_otps(self.ids)
        items = self.dep.create_otps([f"{PREFIX}{i}" for i in range(ENTITIES)], uses=USES, label=self.label)
        self.ids = [o["id"] for o in items]
        self.path.write_text("".join(f"{o['entity']}:{o['otp']}\n" for o in items))
        return self.path


def wrk_cmd(url: str, connections: int, seconds: float) -> list[str]:
    return ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
            "-s", str(WRK_DIR / "enroll_many.lua"), url]


def wrk_env(csrs: Path, creds: Path, close: bool) -> dict[str, str]:
    env = {**os.environ, "CSR_FILE": str(csrs), "CRED_FILE": str(creds)}
    if close:
        env["WRK_CLOSE"] = "1"
    return env


def _ms(value: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", value)
    if not m:
        raise ValueError(f"wrk latency {value!r}")
    return float(m.group(1)) * UNITS[m.group(2)]


def parse_wrk(text: str) -> dict:
    """wrk --latency output as the result dict estload prints (rps counts 2xx answers only)."""
    def find(pattern: str, default: str | None = None) -> str:
        m = re.search(pattern, text, re.M)
        if m:
            return m.group(1)
        if default is None:
            raise ValueError(f"wrk output without {pattern!r}:\n{text}")
        return default

    completed = int(find(r"^\s*(\d+) requests in"))
    window = _ms(find(r"^\s*\d+ requests in ([\d.]+\w+),")) / 1000
    non2xx = int(find(r"Non-2xx or 3xx responses: (\d+)", "0"))
    sock = dict.fromkeys(("connect", "read", "write", "timeout"), 0)
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        sock = dict(zip(sock, map(int, m.groups())))
    lat = re.search(r"^\s*Latency\s+(\S+)\s+(\S+)\s+(\S+)", text, re.M)
    pct = {int(p): _ms(v) for p, v in re.findall(r"^\s*(50|75|90|99)%\s+(\S+)", text, re.M)}
    ok = completed - non2xx
    detail = {k: v for k, v in {"non_2xx": non2xx, **sock}.items() if v}
    return {"completed": completed, "ok": ok, "rps": round(ok / window, 1) if window else 0.0,
            "wrk_requests_per_s": float(find(r"^Requests/sec:\s+([\d.]+)", "0")),
            "p50_ms": pct.get(50, 0.0), "p90_ms": pct.get(90, 0.0), "p99_ms": pct.get(99, 0.0),
            "max_ms": _ms(lat.group(3)) if lat else 0.0, "mean_ms": _ms(lat.group(1)) if lat else 0.0,
            "errors": non2xx + sum(sock.values()), "error_detail": detail, "non_2xx": non2xx, "socket_errors": sock,
            "window_s": round(window, 3), "total_responses": completed, "total_ok": ok}


def access_statuses(logs: list[Path], offsets: list[int]) -> dict[str, int]:
    """HTTP statuses in the servers' access logs after `offsets`: what wrk's non-2xx count was made of."""
    counts: dict[str, int] = {}
    for path, start in zip(logs, offsets):
        with path.open("rb") as fh:
            fh.seek(start)
            for line in fh:
                m = re.search(rb'"status": (\d+)', line)
                if m and b'"kipuka.access"' in line:
                    counts[m.group(1).decode()] = counts.get(m.group(1).decode(), 0) + 1
    return counts


def run_wrk(dep: Deployment, csrs: list[Path], creds: Path, mode: str, connections: int, seconds: float,
            out: Path, label: str | None = None) -> dict:
    """One wrk per node at once (connections split evenly), with the CPU of everything measured."""
    close = mode == "otp-close"
    per_node = max(1, connections // len(dep.nodes))
    cmds = [wrk_cmd(dep.url(n, label), per_node, seconds) for n in dep.nodes]
    offsets = [n.log.stat().st_size for n in dep.nodes]
    meter = Meter(dep.workers, lambda: backend_pids(dep.database_url))
    meter.start()
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=wrk_env(f, creds, close)) for c, f in zip(cmds, csrs)]
    outputs = [p.communicate(timeout=seconds + 120)[0] for p in procs]
    out.write_text("\n\n".join(" ".join(c) + "\n\n" + o for c, o in zip(cmds, outputs)))
    if any(p.returncode != 0 for p in procs):
        sys.exit("wrk failed:\n" + "\n".join(outputs)[-3000:])
    parsed = []
    for o in outputs:
        r = parse_wrk(o)
        r.update({"mode": mode, "clients": per_node, "threads": 1, "wall_s": r["window_s"]})
        parsed.append(r)
    result = combine(parsed)
    result.update(meter.stop(result["total_responses"]))
    result["server_statuses"] = access_statuses([n.log for n in dep.nodes], offsets)
    for o in outputs:
        print(o.rstrip(), flush=True)
    return result

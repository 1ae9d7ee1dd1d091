#!/usr/bin/env python3
"""Benchmark POST /.well-known/est/simpleenroll over mTLS against a demo kipuka server.

    .venv/bin/python benchmarks/run.py            # full matrix, ~3 minutes
    .venv/bin/python benchmarks/run.py --quick    # 3 s cells, no profile

What it does, all on 127.0.0.1:
  1. compiles the C load generator (benchmarks/loadgen/estload.c -> estload);
  2. `kipuka init` into a temporary folder, sets `[server] workers = 2`, starts
     `kipuka serve` on a free loopback port;
  3. enrolls --devices device certificates, each with its own OTP (HTTP Basic),
     and writes, per device, its certificate, key and a CSR body for the timed
     run: base64 DER, subject CN=<entity>.example.com and no SAN, exactly the
     names of the client certificate (a kipuka-issued certificate may only ask
     for its own names again), signed with the device key;
  4. runs estload for every mode (keepalive, handshake) x clients (8, 32, 64):
     --warmup seconds unmeasured, then --duration seconds measured;
  5. runs py-spy against one worker during an extra keep-alive run (and a
     handshake run) and summarises the profile by own and total time;
  6. stops the server and checks the database: one certificate row per 200
     response (the device enrollments included), and the audit trail.

Results go to benchmarks/results/<timestamp>/ (git-ignored): results.json,
results.md (the tables for docs/benchmarks.md), loadgen outputs, profiles.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import datetime as dt
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
LOADGEN_SRC = HERE / "loadgen" / "estload.c"
LOADGEN = HERE / "loadgen" / "estload"
PY = sys.executable
KIPUKA = [PY, "-m", "kipuka"]
EST = "/.well-known/est"

sys.path.insert(0, str(HERE))
from profile_summary import summarize  # noqa: E402


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- build and machine ------------------------------------------------------------------

def build_loadgen() -> None:
    if LOADGEN.exists() and LOADGEN.stat().st_mtime >= LOADGEN_SRC.stat().st_mtime:
        return
    cc = os.environ.get("CC", "gcc")
    cmd = [cc, "-O2", "-Wall", "-o", str(LOADGEN), str(LOADGEN_SRC), "-lssl", "-lcrypto", "-lpthread"]
    log("compiling " + " ".join(cmd))
    try:
        subprocess.run(cmd, check=True)
    except (FileNotFoundError, subprocess.CalledProcessError):
        sys.exit("cannot compile the load generator: install gcc and libssl-dev (apt-get install gcc libssl-dev)")


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

    def pkg_version(name: str) -> str:
        try:
            from importlib.metadata import version
            return version(name)
        except Exception:
            return "?"

    def git(*a: str) -> str:
        r = subprocess.run(["git", "-C", str(REPO), *a], capture_output=True, text=True)
        return r.stdout.strip()

    return {
        "git": git("rev-parse", "--short", "HEAD") + (" (with uncommitted changes)" if git("status", "--porcelain",
                                                                                          "--", "src") else ""),
        "nproc": os.cpu_count(), "cpu": cpu, "ram_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(), "python": platform.python_version(),
        "python_ssl": ssl.OPENSSL_VERSION, "openssl_cli": openssl,
        "packages": {p: pkg_version(p) for p in ("kipuka", "aiohttp", "uvloop", "cryptography", "SQLAlchemy")},
        "sqlite": sqlite3.sqlite_version,
    }


# --- server -----------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(*args: str) -> str:
    return subprocess.run([*KIPUKA, *args], check=True, capture_output=True, text=True, timeout=120).stdout


class Server:
    def __init__(self, root: Path, workers: int) -> None:
        self.dir = root / "server"
        cli("init", str(self.dir))
        self.config = self.dir / "kipuka.toml"
        text = self.config.read_text()
        text, n = re.subn(r"^workers = 1\b", f"workers = {workers}", text, flags=re.M)
        if n != 1:
            sys.exit("could not find the `workers = 1` line in the generated kipuka.toml")
        # Only the EST listener, on its free loopback port: the admin API and the CRL/OCSP
        # listener (fixed ports in the demo configuration) are switched off if present.
        for table in ("admin", "revocation"):
            text = re.sub(rf'(^\[{table}\][^\[]*?^listen = )"[^"]*"', r'\1""', text, count=1, flags=re.M | re.S)
        self.config.write_text(text)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.log = self.dir / "serve.log"

    def start(self) -> None:
        self.proc = subprocess.Popen([*KIPUKA, "serve", "-c", str(self.config), "--listen", f"127.0.0.1:{self.port}"],
                                     stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.exit("kipuka serve exited:\n" + self.log.read_text()[-2000:])
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    break
            except OSError:
                time.sleep(0.1)
        else:
            sys.exit("kipuka serve did not start listening")
        # every worker binds its own SO_REUSEPORT socket: wait until all of them are up
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self.log.read_text().count("serving EST on") < len(self.workers()) or \
                not self.workers():
            time.sleep(0.1)
        time.sleep(0.5)

    def workers(self) -> list[int]:
        """PIDs of the worker processes (the serve process itself with workers = 1)."""
        assert self.proc is not None
        kids: list[int] = []
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            try:
                kids += [int(p) for p in (task / "children").read_text().split()]
            except OSError:
                pass
        return kids or [self.proc.pid]

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class FloorServer(Server):
    """benchmarks/floor_server.py on the same deployment: kipuka's listener stack, no kipuka work."""

    def __init__(self, server: Server, workers: int) -> None:
        self.dir, self.config, self.port = server.dir, server.config, free_port()
        self.proc = None
        self.log = self.dir / "floor.log"
        self.count = workers

    def start(self) -> None:
        self.proc = subprocess.Popen([PY, str(HERE / "floor_server.py"), "-c", str(self.config), "--listen",
                                      f"127.0.0.1:{self.port}", "--workers", str(self.count)],
                                     stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(self.workers()) < self.count + (self.count == 1):
            time.sleep(0.1)
        time.sleep(1.5)


def tls_floor(server: Server, device_dir: Path, seconds: float) -> dict:
    """Full mutual-TLS handshakes between OpenSSL's own s_server and s_time: no Python on either side."""
    port = free_port()
    crt, key = sorted(device_dir.glob("*.crt"))[0], sorted(device_dir.glob("*.key"))[0]
    srv = subprocess.Popen(["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", str(server.dir / "tls/server.pem"),
                            "-key", str(server.dir / "private/tls-server.key"), "-Verify", "2", "-CAfile",
                            str(server.dir / "tls/client-ca.pem"), "-www", "-quiet", "-naccept", "1000000"],
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


def wait_quiet(max_wait: float, threshold: float = 10.0) -> tuple[float, float]:
    """Wait (up to max_wait s) until the machine is under `threshold` % busy for 2 s in a row.

    The box is small and may be shared; a cell started while something else burns
    CPU measures that instead. Returns (seconds waited, last busy %)."""
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


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine from /proc/stat."""
    parts = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = parts[3] + parts[4]
    return sum(parts) - idle, sum(parts)


# --- devices ----------------------------------------------------------------------------

def b64_body(der: bytes) -> bytes:
    text = base64.b64encode(der)
    return b"\n".join(text[i:i + 64] for i in range(0, len(text), 64)) + b"\n"


def csr_for(cn: str, key: ec.EllipticCurvePrivateKey) -> bytes:
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.DER)


def https(server: Server, ca_file: Path, cert: tuple[str, str] | None = None) -> http.client.HTTPSConnection:
    ctx = ssl.create_default_context(cafile=str(ca_file))
    if cert:
        ctx.load_cert_chain(*cert)
    return http.client.HTTPSConnection("localhost", server.port, context=ctx, timeout=30)


def enroll_devices(server: Server, out: Path, count: int, ca_file: Path) -> Path:
    """Enroll `count` devices with one OTP each; write their identities and the manifest for estload."""
    out.mkdir(parents=True, exist_ok=True)
    entities = [f"bench-{i:04d}" for i in range(count)]
    log(f"creating {count} OTPs with `kipuka otp create`")
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        otps = list(pool.map(lambda e: cli("otp", "create", "-c", str(server.config), e).strip(), entities))

    def enroll(entity: str, otp: str) -> str:
        key = ec.generate_private_key(ec.SECP256R1())
        cn = f"{entity}.example.com"
        conn = https(server, ca_file)
        auth = base64.b64encode(f"{entity}:{otp}".encode()).decode()
        conn.request("POST", f"{EST}/simpleenroll", body=b64_body(csr_for(cn, key)),
                     headers={"Content-Type": "application/pkcs10", "Authorization": f"Basic {auth}"})
        r = conn.getresponse()
        body = r.read()
        conn.close()
        if r.status != 200:
            raise RuntimeError(f"OTP enrollment of {entity} failed: {r.status} {body[:200]!r}")
        cert = pkcs7.load_der_pkcs7_certificates(base64.b64decode(body))[0]
        assert cert.subject.rfc4514_string() == f"CN={cn}"
        crt, k, csr = out / f"{entity}.crt", out / f"{entity}.key", out / f"{entity}.csr.b64"
        crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        k.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
        # The timed requests: the same subject as the certificate, no SAN, the device key.
        csr.write_bytes(b64_body(csr_for(cn, key)))
        return f"{crt} {k} {csr}"

    log(f"enrolling {count} devices with their OTPs")
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        lines = list(pool.map(enroll, entities, otps))
    manifest = out / "manifest.txt"
    manifest.write_text("\n".join(lines) + "\n")

    # One mTLS enrollment from Python, to fail early with a readable reason.
    crt, k, csr = lines[0].split()
    conn = https(server, ca_file, cert=(crt, k))
    conn.request("POST", f"{EST}/simpleenroll", body=Path(csr).read_bytes(),
                 headers={"Content-Type": "application/pkcs10"})
    r = conn.getresponse()
    body = r.read()
    conn.close()
    if r.status != 200:
        sys.exit(f"mTLS simpleenroll check failed: {r.status} {body[:300]!r}")
    return manifest


# --- load -------------------------------------------------------------------------------

def run_loadgen(server: Server, manifest: Path, ca_file: Path, mode: str, clients: int, duration: float,
                warmup: float, out: Path, threads: int, verify: bool, count: int = 0, quiet_wait: float = 0) -> dict:
    cmd = [str(LOADGEN), "-a", "127.0.0.1", "-p", str(server.port), "-i", str(manifest), "-m", mode,
           "-c", str(clients), "-t", str(threads)]
    cmd += ["-n", str(count)] if count else ["-d", str(duration), "-w", str(warmup)]
    if verify:
        cmd += ["-C", str(ca_file)]
    waited, before = wait_quiet(quiet_wait) if quiet_wait > 0 else (0.0, -1.0)
    workers = server.workers()
    cpu0, (busy0, all0), t0 = cpu_seconds(workers), machine_busy(), time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + warmup + 120)
    cpu1, (busy1, all1), t1 = cpu_seconds(workers), machine_busy(), time.monotonic()
    out.write_text(" ".join(cmd) + "\n\n" + proc.stdout + proc.stderr)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        sys.exit(f"estload failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    result = json.loads(line[len("RESULT "):])
    ncpu = os.cpu_count() or 1
    result["server_cpu_pct"] = round(100 * (cpu1 - cpu0) / (t1 - t0), 1)  # of one core; 200 = both cores
    result["machine_busy_pct"] = round(100 * (busy1 - busy0) / max(1, all1 - all0), 1)  # of all cores
    # CPU burnt by anything but the server and estload (other jobs on a shared box), in % of one core
    result["other_cpu_pct"] = max(0.0, round(result["machine_busy_pct"] * ncpu - result["server_cpu_pct"]
                                             - result["client_cpu_pct"], 1))
    result["server_cpu_ms_per_req"] = round(1000 * (cpu1 - cpu0) / max(1, result["total_responses"]), 3)
    result["quiet_wait_s"], result["busy_before_pct"] = round(waited, 1), round(before, 1)
    print("\n".join(x for x in proc.stdout.splitlines() if not x.startswith("RESULT ")), flush=True)
    print(f"  server CPU {result['server_cpu_pct']}% of one core ({result['server_cpu_ms_per_req']} ms per "
          f"request); other processes {result['other_cpu_pct']}% of one core", flush=True)
    return result


def profile_run(server: Server, manifest: Path, ca_file: Path, mode: str, clients: int, seconds: float,
                out: Path, threads: int, verify: bool) -> dict:
    """A load run with py-spy sampling one worker; returns the load result and the profile summary."""
    pyspy = str(Path(PY).parent / "py-spy")
    if not Path(pyspy).exists():
        log("installing py-spy into this Python environment (pip install py-spy)")
        subprocess.run([PY, "-m", "pip", "install", "-q", "py-spy"], check=False)
    if not Path(pyspy).exists():
        pyspy = shutil.which("py-spy") or ""
    if not pyspy:
        log("py-spy is not available; no profile (pip install py-spy)")
        return {}
    pid = server.workers()[0]
    raw = out / f"profile-{mode}-{clients}.txt"
    svg = out / f"profile-{mode}-{clients}.svg"
    log(f"profiling worker {pid} during a {mode} run with {clients} clients")
    # Start sampling after the warm-up (1 s) and stop before the end of the run.
    cmd = [str(LOADGEN), "-a", "127.0.0.1", "-p", str(server.port), "-i", str(manifest), "-m", mode,
           "-c", str(clients), "-t", str(threads), "-d", str(seconds + 2), "-w", "1"]
    if verify:
        cmd += ["-C", str(ca_file)]
    load = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(1.5)
    spy = [pyspy, "record", "--pid", str(pid), "--rate", "250", "--duration", str(int(seconds)), "--threads",
           "--nonblocking"]
    r1 = subprocess.run(spy + ["--format", "raw", "-o", str(raw)], capture_output=True, text=True)
    stdout, _ = load.communicate(timeout=seconds + 120)
    (out / f"profile-{mode}-{clients}.loadgen.txt").write_text(" ".join(cmd) + "\n\n" + stdout)
    if r1.returncode != 0 or not raw.exists():
        log(f"py-spy failed: {r1.stderr.strip()[-500:]}")
        return {}
    _flamegraph(raw, svg)  # from the same samples
    summary = summarize(raw, top=25)
    (out / f"profile-{mode}-{clients}.summary.txt").write_text(summary["text"])
    print(summary["text"], flush=True)
    line = next((x for x in stdout.splitlines() if x.startswith("RESULT ")), None)
    return {"mode": mode, "clients": clients, "worker_pid": pid, "raw": raw.name, "svg": svg.name if svg.exists() else None,
            "load": json.loads(line[7:]) if line else None, "summary": summary}


def _flamegraph(raw: Path, svg: Path) -> None:
    """An SVG flame graph from py-spy's collapsed stacks, if flamegraph.pl (Debian: flamegraph) is there."""
    tool = shutil.which("flamegraph.pl") or shutil.which("flamegraph")
    if not tool:
        return
    with open(svg, "wb") as fh:
        subprocess.run([tool, str(raw)], stdout=fh, stderr=subprocess.DEVNULL)


# --- database ---------------------------------------------------------------------------

def check_database(server: Server, expected_certs: int) -> dict:
    listed = cli("certs", "list", "-c", str(server.config), "--limit", "10000000")
    rows_cli = sum(1 for line in listed.splitlines() if line.strip())
    db = server.dir / "kipuka.db"
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    certs = con.execute("SELECT count(*) FROM certificates").fetchone()[0]
    by_auth = dict(con.execute("SELECT auth, count(*) FROM certificates GROUP BY auth").fetchall())
    distinct = con.execute("SELECT count(DISTINCT serial), count(DISTINCT fingerprint_sha256) FROM certificates").fetchone()
    audit = {f"{e}/{o}": n for e, o, n in con.execute(
        "SELECT event, outcome, count(*) FROM audit GROUP BY event, outcome ORDER BY event, outcome").fetchall()}
    otps = con.execute("SELECT count(*), sum(uses_left) FROM otps").fetchone()
    integrity = con.execute("PRAGMA integrity_check").fetchone()[0]
    page_count = con.execute("PRAGMA page_count").fetchone()[0]
    page_size = con.execute("PRAGMA page_size").fetchone()[0]
    con.close()
    sizes = {p.name: p.stat().st_size for p in server.dir.glob("kipuka.db*")}
    ok = rows_cli == certs == expected_certs and audit.get("enroll/success", 0) == certs \
        and distinct[0] == distinct[1] == certs and integrity == "ok"
    return {"expected_certificates": expected_certs, "certs_list_rows": rows_cli, "certificates_rows": certs,
            "by_auth": by_auth, "distinct_serials": distinct[0], "distinct_fingerprints": distinct[1],
            "audit": audit, "otps": otps[0], "otp_uses_left": otps[1], "integrity_check": integrity,
            "files": sizes, "db_bytes": page_count * page_size, "consistent": ok}


# --- report -----------------------------------------------------------------------------

def markdown(results: list[dict]) -> str:
    lines = ["| mode | clients | enrollments/s | p50 ms | p99 ms | max ms | errors | server CPU (ms/req) "
             "| estload CPU | other CPU |",
             "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|"]
    for r in results:
        errs = "0" if not r["errors"] else ", ".join(f"{k}={v}" for k, v in r["error_detail"].items())
        lines.append(f"| {r['mode']} | {r['clients']} | {r['rps']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
                     f"{r['max_ms']:.1f} | {errs} | {r['server_cpu_pct']:.0f}% ({r['server_cpu_ms_per_req']:.2f}) | "
                     f"{r['client_cpu_pct']:.0f}% | {r['other_cpu_pct']:.0f}% |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modes", default="keepalive,handshake")
    ap.add_argument("--clients", default="8,32,64")
    ap.add_argument("--duration", type=float, default=10.0, help="measured seconds per cell (default 10)")
    ap.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each cell (default 2)")
    ap.add_argument("--devices", type=int, default=128, help="enrolled device identities (default 128)")
    ap.add_argument("--workers", type=int, default=2, help="[server] workers (default 2)")
    ap.add_argument("--threads", type=int, default=1, help="estload threads (default 1)")
    ap.add_argument("--verify", action="store_true",
                    help="estload verifies the server certificate (costs the client ~1 ms per handshake)")
    ap.add_argument("--quiet-wait", type=float, default=180.0,
                    help="before each cell, wait up to this many seconds for the machine to be idle (default 180; 0: no)")
    ap.add_argument("--profile-seconds", type=float, default=10.0)
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--floor", action="store_true",
                    help="also measure benchmarks/floor_server.py (same TLS/HTTP stack, no kipuka work) "
                         "and OpenSSL's s_server/s_time handshakes")
    ap.add_argument("--nice", type=int, default=0,
                    help="run the server and estload at this nice value (e.g. -10 on a box shared with other jobs; "
                         "negative values need root)")
    ap.add_argument("--quick", action="store_true", help="3 s cells, 1 s warm-up, 64 devices, no profile, no waiting")
    ap.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results/<time>)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary server folder")
    args = ap.parse_args()
    if args.quick:
        args.duration, args.warmup, args.devices, args.no_profile, args.quiet_wait = 3.0, 1.0, 64, True, 0
    modes = args.modes.split(",")
    clients = [int(c) for c in args.clients.split(",")]
    out = args.out or HERE / "results" / dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)

    if args.nice:
        os.nice(args.nice)  # inherited by kipuka serve, its workers and estload
    build_loadgen()
    info = machine_info()
    info["nice"] = os.nice(0)
    log(f"machine: {info['nproc']} cores, {info['cpu']}, {info['ram_gib']} GiB, Python {info['python']}, "
        f"{info['python_ssl']}, kernel {info['kernel']}; kipuka {info['git']}")
    root = Path(tempfile.mkdtemp(prefix="kipuka-bench-"))
    server = Server(root, args.workers)
    results: list[dict] = []
    floor: list[dict] = []
    tls: dict = {}
    profiles: list[dict] = []
    ok_total = 0
    devices = root / "devices"
    try:
        server.start()
        log(f"kipuka serve on 127.0.0.1:{server.port}, workers {server.workers()}; state in {server.dir}")
        ca_file = server.dir / "ca" / "root.pem"  # the TLS certificate chains to it
        manifest = enroll_devices(server, devices, args.devices, ca_file)
        ok_total += args.devices + 1  # OTP enrollments + the Python mTLS check
        smoke = run_loadgen(server, manifest, ca_file, "keepalive", 4, 0, 0, out / "smoke.txt", 1, True, count=200)
        ok_total += smoke["total_ok"]
        if smoke["ok"] != 200:
            sys.exit(f"smoke run failed: {smoke}")
        for mode in modes:
            for c in clients:
                log(f"{mode}, {c} clients: {args.warmup:g} s warm-up + {args.duration:g} s")
                r = run_loadgen(server, manifest, ca_file, mode, c, args.duration, args.warmup,
                                out / f"load-{mode}-{c}.txt", args.threads, args.verify, quiet_wait=args.quiet_wait)
                ok_total += r["total_ok"]
                results.append(r)
        if not args.no_profile:
            for mode, c in (("keepalive", 32), ("handshake", 32)):
                if mode in modes:
                    if args.quiet_wait:
                        wait_quiet(args.quiet_wait)
                    p = profile_run(server, manifest, ca_file, mode, c, args.profile_seconds, out, args.threads,
                                    args.verify)
                    if p:
                        ok_total += (p.get("load") or {}).get("total_ok", 0)
                        profiles.append(p)
    finally:
        server.stop()
    db = check_database(server, ok_total)
    log("database: " + json.dumps(db))
    if args.floor:
        fs = FloorServer(server, args.workers)
        try:
            fs.start()
            for mode in modes:
                log(f"floor server, {mode}, 32 clients")
                floor.append(run_loadgen(fs, manifest, ca_file, mode, 32, args.duration, args.warmup,
                                         out / f"floor-{mode}-32.txt", args.threads, args.verify,
                                         quiet_wait=args.quiet_wait))
        finally:
            fs.stop()
        log("OpenSSL s_server/s_time mutual-TLS handshakes")
        tls = tls_floor(server, devices, 5)
        log("tls floor: " + json.dumps(tls))
    table = markdown(results)
    (out / "results.md").write_text(table + ("\nFloor (floor_server.py, 32 clients):\n\n" + markdown(floor) if floor else "")
                                    + (f"\nOpenSSL s_server/s_time: {json.dumps(tls)}\n" if tls else ""))
    (out / "results.json").write_text(json.dumps({
        "machine": info, "args": {k: str(v) for k, v in vars(args).items()}, "results": results, "floor": floor,
        "tls_floor": tls,
        "profiles": [{k: v for k, v in p.items() if k != "summary"} | {"top_own": p["summary"]["own"][:25],
                     "top_total": p["summary"]["total"][:25], "by_area": p["summary"]["areas"],
                     "threads": p["summary"]["threads"]} for p in profiles],
        "database": db}, indent=2))
    shutil.copy(server.log, out / "serve.log")
    if args.keep:
        log(f"server folder kept: {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    print("\n" + table)
    if floor:
        print("floor (same stack, no kipuka work):\n" + markdown(floor))
    print(f"database: {db['certificates_rows']} certificate rows for {ok_total} 200 responses "
          f"({'consistent' if db['consistent'] else 'INCONSISTENT'}); files {db['files']}")
    print(f"results in {out}")
    return 0 if db["consistent"] else 1


if __name__ == "__main__":
    sys.exit(main())

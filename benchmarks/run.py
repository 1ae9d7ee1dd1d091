#!/usr/bin/env python3
"""Benchmark POST /.well-known/est/simpleenroll against kipuka deployments on this machine.

    .venv/bin/python benchmarks/run.py                     # issue #17's cells on SQLite, py-spy profiles
    .venv/bin/python benchmarks/run.py --quick             # smoke test: 3 s cells, no profile
    .venv/bin/python benchmarks/run.py --database sqlite,postgresql --repeat 3 --compare main

A cell is MODE:CONNECTIONS. Modes:
  otp         /simpleenroll with HTTP Basic entity:OTP (60 entities' OTPs rotated), keep-alive, wrk
  otp-close   the same with `Connection: close`: a new TLS connection per request, wrk
  keepalive   /simpleenroll over mTLS with the certificate kipuka issued, keep-alive, estload
  handshake   the same with a full mutual-TLS handshake per request, estload

Every run of a cell gets a deployment of its own, made the way an operator makes one:
`kipuka init` (free loopback ports for its listeners), `[server] workers` set (default 0: one
per core), on SQLite or a fresh PostgreSQL database (--database), with one or more nodes
(--nodes), the iot-fleet CA's key in software or in a SoftHSM2 token (--ca). A run: deploy
and start; for OTP cells a --warmup s wrk run, for mTLS cells --devices OTP enrollments and
estload's own warm-up; the measured --duration s; on the first repetition of this checkout,
py-spy profiles of one worker (modules: otpwrk, mtls, profiling); then stop and check the
database (dbcheck). With --compare REF the same runs go against REF's code, interleaved
(A B, then B A, ...), and the report gives medians over --repeat runs and ratios.

Results go to benchmarks/results/<timestamp>/ (git-ignored): results.json, results.md,
the load generators' outputs, profiles.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from dbcheck import check_database, describe  # noqa: E402
from deploy import Code, Database, Deployment, Setup  # noqa: E402
from machine import cpu_seconds, log, machine_info, wait_quiet  # noqa: E402,F401  (re-exported for ra_chain.py)
from mtls import LOADGEN, build_loadgen, enroll_devices, estload_cmd, parse_estload, run_estload  # noqa: E402,F401
from otpwrk import Credentials, csr_file, need_wrk, parse_wrk, run_wrk, slices, wrk_cmd, wrk_env  # noqa: E402
from profiling import profile  # noqa: E402
from report import markdown, summarize_runs  # noqa: E402

Server = Deployment  # the former name, for ra_chain.py
MODES = ("otp", "otp-close", "keepalive", "handshake")
ISSUE_CELLS = "otp:32,otp-close:8,keepalive:32,handshake:32"


@dataclass(frozen=True)
class Cell:
    mode: str
    connections: int

    @property
    def name(self) -> str:
        return f"{self.mode}:{self.connections}"


def parse_cells(args: argparse.Namespace) -> list[Cell]:
    if args.modes or args.clients:  # the former matrix: every mode with every client count
        modes = (args.modes or "keepalive,handshake").split(",")
        clients = [int(c) for c in (args.clients or "8,32,64").split(",")]
        specs = [f"{m}:{c}" for m in modes for c in clients]
    else:
        specs = args.cells.split(",")
    cells = []
    for spec in specs:
        mode, _, n = spec.partition(":")
        if mode not in MODES or not n.isdigit():
            sys.exit(f"cell {spec!r}: expected MODE:CONNECTIONS with MODE one of {', '.join(MODES)}")
        cells.append(Cell(mode, int(n)))
    return cells


def parse_nodes(spec: str, workers: int) -> list[tuple[int, int]]:
    """`1,2` or `1x2,2x1`: (nodes, workers per node); a bare N takes --workers."""
    out = []
    for item in spec.split(","):
        n, _, w = item.partition("x")
        out.append((int(n), int(w) if w else workers))
    return out


# --- one run ----------------------------------------------------------------------------

@dataclass
class Measured:
    """What a run measured, and what the database must hold afterwards."""
    result: dict
    ok_total: int  # 200s counted by every load generator and the setup
    in_flight: int  # requests the server may have answered without a load generator counting them
    profiles: dict


def run_one(setup: Setup, cell: Cell, args: argparse.Namespace, out: Path, tag: str, scratch: Path,
            with_profile: bool) -> dict:
    """Deploy, load, (profile,) stop, check the database, clean up: one run of one cell."""
    root = Path(tempfile.mkdtemp(prefix="run-", dir=scratch))
    dep = setup.deploy(root)
    try:
        try:
            dep.start()
            log(f"{tag}: kipuka serve on ports {[n.port for n in dep.nodes]}, workers {dep.workers()}")
            measure = run_otp if cell.mode.startswith("otp") else run_mtls
            m = measure(dep, setup, cell, args, out, tag, with_profile, root)
        finally:
            dep.stop()
        db = check_database(dep, m.ok_total, m.in_flight)
        cas = tomllib.loads(dep.config.read_text()).get("ca", {})
        tail = dep.log.read_text(errors="replace").splitlines()[-200:]
        (out / f"{tag}.serve-tail.log").write_text("\n".join(tail) + "\n")
    finally:
        setup.database.drop(dep.database_url)
        if args.keep:
            log(f"{tag}: deployment kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    r = m.result
    log(f"{tag}: database: {describe(db)}")
    log(f"{tag}: {r['rps']:.0f} enrollments/s, p99 {r['p99_ms']:.1f} ms, errors {r['errors']}, server CPU "
        f"{r['server_cpu_ms_per_req']:.2f} ms/req (+ database backends {r['db_cpu_ms_per_req']:.2f}), "
        f"other processes {r['other_cpu_pct']:.0f}% of a core")
    return {**r, "database_check": db, "ca_types": {k: v.get("type") for k, v in cas.items()},
            "profiles": {v: {k: x for k, x in p.items() if k != "load_output"} for v, p in m.profiles.items()}}


def run_otp(dep: Deployment, setup: Setup, cell: Cell, args: argparse.Namespace, out: Path, tag: str,
            with_profile: bool, root: Path) -> Measured:
    """wrk: a warm-up on the last CSRs, the measured run, then the profile runs; fresh OTPs for each."""
    files, warm = slices(csr_file(args.csrs), len(dep.nodes), args.warmup_csrs, root)
    creds = Credentials(dep, root, setup.label)
    ok_total = in_flight = 0
    if args.warmup > 0:
        warmup = run_wrk(dep, warm, creds.renew(), cell.mode, cell.connections, args.warmup,
                         out / f"{tag}.warmup.txt", setup.label)
        ok_total, in_flight = warmup["total_ok"], unanswered(warmup, cell)
    quiet(args)
    result = run_wrk(dep, files, creds.renew(), cell.mode, cell.connections, args.duration, out / f"{tag}.txt",
                     setup.label)
    ok_total, in_flight = ok_total + result["total_ok"], in_flight + unanswered(result, cell)
    if result["completed"] > sum(1 for _ in files[0].open()) * len(files):
        log("WARNING: wrk went past the end of the CSR file (re-deliveries, not enrollments): raise --csrs")
    profiles: dict = {}
    if with_profile:
        def start(seconds: float) -> subprocess.Popen:
            return subprocess.Popen(wrk_cmd(dep.url(dep.nodes[0], setup.label), cell.connections, seconds),
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    env=wrk_env(files[0], creds.renew(), cell.mode == "otp-close"))
        profiles = profile(dep.nodes[0].workers()[0], start, args.profile_seconds, out, tag,
                           tuple(args.profile_views.split(",")))
        for p in profiles.values():
            load = parse_wrk(p["load_output"])
            ok_total, in_flight = ok_total + load["total_ok"], in_flight + unanswered(load, cell)
    return Measured(result, ok_total, in_flight, profiles)


def run_mtls(dep: Deployment, setup: Setup, cell: Cell, args: argparse.Namespace, out: Path, tag: str,
             with_profile: bool, root: Path) -> Measured:
    """estload: device enrollment, the measured run with its own warm-up, the profile runs, the floors."""
    manifest = enroll_devices(dep, root / "devices", args.devices, dep.ca_file, setup.label)
    ok_total = args.devices + 1  # the OTP enrollments and the Python mTLS check
    quiet(args)
    result = run_estload(dep, manifest, cell.mode, cell.connections, args.duration, args.warmup,
                         out / f"{tag}.txt", args.threads, args.verify, label=setup.label)
    ok_total += result["total_ok"]
    profiles: dict = {}
    if with_profile:
        def start(seconds: float) -> subprocess.Popen:
            return subprocess.Popen(estload_cmd(dep.nodes[0], manifest, dep.ca_file, cell.mode, cell.connections,
                                                seconds, 1, args.threads, args.verify, label=setup.label),
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        profiles = profile(dep.nodes[0].workers()[0], start, args.profile_seconds, out, tag,
                           tuple(args.profile_views.split(",")))
        for p in profiles.values():
            ok_total += (parse_estload(p["load_output"]) or {}).get("total_ok", 0)
    if args.floor and not args.floor_done:
        args.floor_done = run_floors(dep, manifest, args, out, root)
    return Measured(result, ok_total, 0, profiles)


def unanswered(wrk: dict, cell: Cell) -> int:
    """Requests of a wrk run the server may have completed without wrk counting the 200: those in flight
    when it stopped (one per connection at most) and those it gave up on (timeouts, read errors)."""
    return cell.connections + sum(wrk["socket_errors"].values())


def quiet(args: argparse.Namespace) -> None:
    if args.quiet_wait > 0:
        waited, busy = wait_quiet(args.quiet_wait)
        if waited > 3:
            log(f"waited {waited:.0f} s for a quiet machine (last {busy:.0f}% busy)")


def run_floors(dep: Deployment, manifest: Path, args: argparse.Namespace, out: Path, root: Path) -> dict:
    """The floor server on this deployment's files (kipuka stopped first), then OpenSSL's handshakes."""
    from floors import FloorServer, tls_floor
    workers = len(dep.workers())
    dep.stop()
    fs = FloorServer(dep, workers)
    floor = []
    try:
        fs.start()
        for mode in ("keepalive", "handshake"):
            log(f"floor server, {mode}, 32 clients")
            floor.append(run_estload(fs, manifest, mode, 32, args.duration, args.warmup, out / f"floor-{mode}.txt",
                                     args.threads, args.verify))
    finally:
        fs.stop()
    log("OpenSSL s_server/s_time mutual-TLS handshakes")
    return {"floor": floor, "tls": tls_floor(dep, root / "devices", 5)}


# --- the plan ---------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", default=ISSUE_CELLS, help=f"MODE:CONNECTIONS,... (default {ISSUE_CELLS})")
    ap.add_argument("--modes", help="with --clients: every mode with every client count (the former matrix)")
    ap.add_argument("--clients", help="client counts for --modes (default 8,32,64)")
    ap.add_argument("--database", default="sqlite",
                    help="sqlite, postgresql[=URL] (default URL postgresql://127.0.0.1:5432/test, a fresh database "
                         "per run), or both: sqlite,postgresql")
    ap.add_argument("--workers", type=int, default=0, help="[server] workers (default 0: one per core)")
    ap.add_argument("--nodes", default="1", help="nodes sharing the database: N or NxWORKERS, comma-separated "
                                                 "(e.g. 1x1,2x1); a bare N takes --workers")
    ap.add_argument("--ca", default="", help="software,pkcs11: OTP and mTLS on /iot-fleet with its CA key in "
                                             "software or in a SoftHSM2 token (`kipuka init --hsm`)")
    ap.add_argument("--compare", metavar="REF", help="also run every cell against REF: a worktree or checkout "
                                                     "folder, or a git ref (exported to a temporary folder)")
    ap.add_argument("--repeat", type=int, default=1, help="runs of every cell and variant; medians reported")
    ap.add_argument("--duration", type=float, default=10.0, help="measured seconds per run (default 10)")
    ap.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each run (default 2)")
    ap.add_argument("--devices", type=int, default=128, help="device identities for mTLS cells (default 128)")
    ap.add_argument("--csrs", type=int, default=48000, help="CSRs for OTP cells (default 48000, cached)")
    ap.add_argument("--warmup-csrs", type=int, default=6000, help="the last N CSRs are the warm-up's")
    ap.add_argument("--threads", type=int, default=1, help="estload threads (default 1)")
    ap.add_argument("--verify", action="store_true", help="estload verifies the server certificate")
    ap.add_argument("--quiet-wait", type=float, default=180.0,
                    help="before each measured run, wait up to this many seconds for the machine to be idle "
                         "(default 180; 0: no)")
    ap.add_argument("--profile-seconds", type=float, default=10.0)
    ap.add_argument("--profile-views", default="gil,threads", help="py-spy views: gil, threads (default both)")
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--floor", action="store_true", help="also the floor server and OpenSSL's handshakes "
                                                         "(on the first mTLS run's deployment)")
    ap.add_argument("--nice", type=int, default=0, help="run everything at this nice value (negative: root)")
    ap.add_argument("--quick", action="store_true",
                    help="3 s runs, 1 s warm-up, 64 devices, 12,000 CSRs, no profile, no waiting")
    ap.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results/<time>)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary deployments")
    args = ap.parse_args(argv)
    if args.quick:
        args.duration, args.warmup, args.no_profile, args.quiet_wait = 3.0, 1.0, True, 0
        args.devices = min(args.devices, 64)
        args.csrs, args.warmup_csrs = min(args.csrs, 12000), min(args.warmup_csrs, 3000)
    args.floor_done = None
    cells = parse_cells(args)
    databases = [Database.parse(d) for d in args.database.split(",")]
    layouts = parse_nodes(args.nodes, args.workers)
    cas: list[str | None] = [c for c in args.ca.split(",") if c] or [None]
    if any(c not in ("software", "pkcs11") for c in cas if c):
        sys.exit("--ca takes software and/or pkcs11")
    out = args.out or HERE / "results" / dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    if args.nice:
        os.nice(args.nice)  # inherited by kipuka serve, its workers and the load generators
    if any(c.mode.startswith("otp") for c in cells):
        need_wrk()
    if any(not c.mode.startswith("otp") for c in cells) or args.floor:
        build_loadgen()
    info = machine_info()
    info["nice"] = os.nice(0)
    log(f"machine: {info['nproc']} cores, {info['cpu']}, {info['ram_gib']} GiB, Python {info['python']}, "
        f"{info['python_ssl']}, {info['wrk']}; kipuka {info['git']}")
    scratch = Path(tempfile.mkdtemp(prefix="kipuka-bench-"))
    variants = [Code.current()] + ([Code.resolve(args.compare, scratch)] if args.compare else [])
    for code in variants:
        code.verify()
    if len(variants) > 1:
        log(f"A = {variants[0].src} ({variants[0].rev}), B = {variants[1].src} ({variants[1].rev})")
    runs: list[dict] = []
    try:
        for rep in range(args.repeat):
            for (db, (nodes, workers), ca, cell) in itertools.product(databases, layouts, cas, cells):
                # A B, then B A: neither variant always runs first (the box drifts during a session)
                order = list(enumerate(variants)) if rep % 2 == 0 else list(reversed(list(enumerate(variants))))
                for v, code in order:
                    setup = Setup(code, db, workers, nodes, ca)
                    key = {"variant": "AB"[v], "code": code.rev, "database": db.kind, "nodes": nodes,
                           "workers": workers, "ca": ca or "-", "cell": cell.name, "repeat": rep + 1}
                    tag = "-".join(str(x) for x in (key["variant"], db.kind, f"{nodes}x{workers}", ca or "default",
                                                    cell.mode, cell.connections, f"r{rep + 1}"))
                    log(f"--- {tag}")
                    prof = not args.no_profile and v == 0 and rep == 0
                    runs.append({**key, "result": run_one(setup, cell, args, out, tag, scratch, prof)})
                    table = write_results(out, info, args, variants, runs)  # after every run: a crash keeps them
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print("\n" + table)
    consistent = all(r["result"]["database_check"]["consistent"] for r in runs)
    print(f"database checks: {'all consistent' if consistent else 'INCONSISTENT (see results.json)'}")
    print(f"results in {out}")
    return 0 if consistent else 1


def write_results(out: Path, info: dict, args: argparse.Namespace, variants: list[Code], runs: list[dict]) -> str:
    summary = summarize_runs(runs)
    table = markdown(runs, summary, variants, info)
    if args.floor_done:
        rows = [f"- {r['mode']}: {r['rps']:,.0f}/s, p99 {r['p99_ms']:.1f} ms, server CPU "
                f"{r['server_cpu_ms_per_req']:.2f} ms/req" for r in args.floor_done["floor"]]
        table += ("\nFloor (floor_server.py, 32 clients), estload:\n\n" + "\n".join(rows)
                  + f"\n\nOpenSSL s_server/s_time: {json.dumps(args.floor_done['tls'])}\n")
    (out / "results.md").write_text(table)
    (out / "results.json").write_text(json.dumps({
        "machine": info, "args": {k: str(v) for k, v in vars(args).items() if k != "floor_done"},
        "variants": [{"name": c.name, "src": str(c.src), "rev": c.rev} for c in variants],
        "runs": runs, "summary": summary, "floors": args.floor_done}, indent=2, default=str))
    return table


if __name__ == "__main__":
    sys.exit(main())
